//! Debounced push scheduling: one push per service per window.
//!
//! The first change to a service schedules its push `debounce` later; further changes while it
//! is pending merge into it (Nacos: 1000 ms, the deadline is not extended). Pure: time injected.

use std::collections::{BTreeSet, HashMap};
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
        }
    }

    /// Schedules a push of `key` at `now + delay` unless one is already pending. True if newly
    /// scheduled.
    pub fn schedule(&mut self, key: &ServiceKey, now: Instant) -> bool {
        if self.pending.contains_key(key) {
            return false;
        }
        let deadline = now + self.delay;
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

    /// Removes and returns every service whose push is due at `now`, earliest first.
    pub fn take_due(&mut self, now: Instant) -> Vec<ServiceKey> {
        let mut out = Vec::new();
        while let Some(&(deadline, ticket)) = self.queue.first() {
            if deadline > now {
                break;
            }
            self.queue.pop_first();
            if let Some(key) = self.by_ticket.remove(&ticket) {
                self.pending.remove(&key);
                out.push(key);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> ServiceKey {
        ServiceKey::new("public", "DEFAULT_GROUP", s)
    }

    #[test]
    fn changes_merge_within_the_window() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut d = Debouncer::new(ms(1000));
        assert!(d.schedule(&key("a"), t0));
        assert!(!d.schedule(&key("a"), t0 + ms(500)));
        assert!(d.schedule(&key("b"), t0 + ms(300)));
        assert_eq!(d.len(), 2);
        // The deadline is not extended by the merged change.
        assert_eq!(d.next_deadline(), Some(t0 + ms(1000)));
        assert!(d.take_due(t0 + ms(999)).is_empty());
        assert_eq!(d.take_due(t0 + ms(1000)), vec![key("a")]);
        // After firing, a new change schedules a new push.
        assert!(d.schedule(&key("a"), t0 + ms(1100)));
        assert_eq!(d.take_due(t0 + ms(5000)), vec![key("b"), key("a")]);
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
