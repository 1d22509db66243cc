//! Push scheduling: at most one push per service per window, the first one at once.
//!
//! A change to a service that was not pushed within the last `debounce` is pushed at once
//! (sparse changes reach subscribers without waiting out a window). A change within the window
//! of the last push is scheduled for the end of that window, and further changes while it is
//! pending merge into it (the deadline is not extended). So a service changing continuously
//! gets one push per window, as with Nacos's trailing 1000 ms debounce, and a quiet one gets
//! its push immediately. Pure: time injected.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use nacre_ring::ServiceKey;

/// Services with a scheduled push, by deadline.
#[derive(Debug)]
pub struct Debouncer {
    delay: Duration,
    pending: HashMap<ServiceKey, (Instant, u64)>,
    queue: BTreeSet<(Instant, u64)>,
    by_ticket: HashMap<u64, ServiceKey>,
    next_ticket: u64,
    /// When each service was last pushed, for services pushed within the last window.
    last_push: HashMap<ServiceKey, Instant>,
    /// The same, in time order, to forget entries older than the window cheaply.
    pushed: VecDeque<(Instant, ServiceKey)>,
}

impl Debouncer {
    /// An empty schedule with the given debounce window.
    pub fn new(delay: Duration) -> Self {
        Self {
            delay,
            pending: HashMap::new(),
            queue: BTreeSet::new(),
            by_ticket: HashMap::new(),
            next_ticket: 0,
            last_push: HashMap::new(),
            pushed: VecDeque::new(),
        }
    }

    /// Schedules a push of `key` unless one is already pending: at `now` when `key` was not
    /// pushed within the last window, else at the end of that window. True if newly scheduled.
    pub fn schedule(&mut self, key: &ServiceKey, now: Instant) -> bool {
        if self.pending.contains_key(key) {
            return false;
        }
        let deadline = match self.last_push.get(key) {
            Some(&at) if now < at + self.delay => at + self.delay,
            _ => now,
        };
        let ticket = self.next_ticket;
        self.next_ticket = self.next_ticket.wrapping_add(1);
        self.pending.insert(key.clone(), (deadline, ticket));
        self.queue.insert((deadline, ticket));
        self.by_ticket.insert(ticket, key.clone());
        true
    }

    /// Number of services with a pending push.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether nothing is scheduled.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The earliest scheduled push.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.queue.first().map(|&(d, _)| d)
    }

    /// Removes and returns every service whose push is due at `now`, earliest first; they
    /// count as pushed at `now`.
    pub fn take_due(&mut self, now: Instant) -> Vec<ServiceKey> {
        self.forget_before(now);
        let mut out = Vec::new();
        while let Some(&(deadline, ticket)) = self.queue.first() {
            if deadline > now {
                break;
            }
            self.queue.pop_first();
            if let Some(key) = self.by_ticket.remove(&ticket) {
                self.pending.remove(&key);
                self.last_push.insert(key.clone(), now);
                self.pushed.push_back((now, key.clone()));
                out.push(key);
            }
        }
        out
    }

    /// Forgets pushes older than the window (they no longer delay a change).
    fn forget_before(&mut self, now: Instant) {
        while let Some((at, _)) = self.pushed.front() {
            if *at + self.delay > now {
                break;
            }
            if let Some((at, key)) = self.pushed.pop_front() {
                // A later push of the same service has its own entry further back.
                if self.last_push.get(&key) == Some(&at) {
                    self.last_push.remove(&key);
                }
            }
        }
    }

    /// Services remembered as recently pushed (bounded by the pushes of one window).
    pub fn remembered(&self) -> usize {
        self.last_push.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> ServiceKey {
        ServiceKey::new("public", "DEFAULT_GROUP", s)
    }

    #[test]
    fn a_quiet_service_is_pushed_at_once_and_a_busy_one_once_per_window() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut d = Debouncer::new(ms(1000));
        // First change: due at once.
        assert!(d.schedule(&key("a"), t0));
        assert_eq!(d.next_deadline(), Some(t0));
        assert_eq!(d.take_due(t0), vec![key("a")]);
        // Changes within the window of that push merge into one push at its end.
        assert!(d.schedule(&key("a"), t0 + ms(300)));
        assert!(!d.schedule(&key("a"), t0 + ms(500)));
        assert!(
            d.schedule(&key("b"), t0 + ms(400)),
            "another service is not held back"
        );
        assert_eq!(d.take_due(t0 + ms(400)), vec![key("b")]);
        assert_eq!(
            d.next_deadline(),
            Some(t0 + ms(1000)),
            "not extended by the merge"
        );
        assert!(d.take_due(t0 + ms(999)).is_empty());
        assert_eq!(d.take_due(t0 + ms(1000)), vec![key("a")]);
        // Changing continuously: one push per window.
        assert!(d.schedule(&key("a"), t0 + ms(1001)));
        assert_eq!(d.next_deadline(), Some(t0 + ms(2000)));
        assert_eq!(d.take_due(t0 + ms(2000)), vec![key("a")]);
        // Quiet for a window: at once again, and old pushes are forgotten.
        assert!(d.schedule(&key("a"), t0 + ms(3500)));
        assert_eq!(d.take_due(t0 + ms(3500)), vec![key("a")]);
        assert!(d.take_due(t0 + ms(10_000)).is_empty());
        assert_eq!(d.remembered(), 0);
        assert!(d.is_empty());
        assert_eq!(d.next_deadline(), None);
    }

    #[test]
    fn same_deadline_keys_are_all_returned() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(Duration::ZERO);
        for s in ["a", "b", "c"] {
            d.schedule(&key(s), t0);
        }
        assert_eq!(d.take_due(t0), vec![key("a"), key("b"), key("c")]);
    }
}
