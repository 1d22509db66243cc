//! Push scheduling: a quiet service's change is pushed at once; a busy service's changes are
//! debounced exactly as before.
//!
//! - A change to a service that had no change in the last two windows (`2 × debounce`), with no
//!   push pending, is pushed at once: sparse changes reach subscribers without waiting.
//! - Any other change schedules a push `debounce` later unless one is pending, and changes
//!   while it is pending merge into it (the deadline is not extended), as Nacos's trailing
//!   debounce does.
//!
//! So under continuous churn (changes closer than two windows apart) pushes go out exactly as
//! with the trailing debounce alone; only the first change after a quiet spell leaves at once,
//! which costs at most one extra packet per quiet spell. (An earlier version measured windows
//! from the last push; with changes one window apart it pushed every change, twice the
//! packets of the trailing debounce.) Pure: time injected.

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
    /// When each service last changed, for services changed within the last two windows.
    last_change: HashMap<ServiceKey, Instant>,
    /// The same, in time order, to forget entries older than two windows cheaply.
    changed: VecDeque<(Instant, ServiceKey)>,
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
            last_change: HashMap::new(),
            changed: VecDeque::new(),
        }
    }

    /// Records a change of `key` and schedules its push unless one is already pending: at
    /// `now` when `key` had no change in the last two windows, else one window later. True if
    /// newly scheduled.
    pub fn schedule(&mut self, key: &ServiceKey, now: Instant) -> bool {
        self.forget_before(now);
        let quiet = self
            .last_change
            .get(key)
            .is_none_or(|&at| now >= at + 2 * self.delay);
        self.last_change.insert(key.clone(), now);
        self.changed.push_back((now, key.clone()));
        if self.pending.contains_key(key) {
            return false;
        }
        let deadline = if quiet { now } else { now + self.delay };
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
        self.forget_before(now);
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

    /// Forgets changes older than two windows (they no longer make a change wait).
    fn forget_before(&mut self, now: Instant) {
        while let Some((at, _)) = self.changed.front() {
            if *at + 2 * self.delay > now {
                break;
            }
            if let Some((at, key)) = self.changed.pop_front() {
                // A later change of the same service has its own entry further back.
                if self.last_change.get(&key) == Some(&at) {
                    self.last_change.remove(&key);
                }
            }
        }
    }

    /// Services remembered as recently changed (bounded by the changes of two windows).
    pub fn remembered(&self) -> usize {
        self.last_change.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> ServiceKey {
        ServiceKey::new("public", "DEFAULT_GROUP", s)
    }

    #[test]
    fn a_quiet_service_is_pushed_at_once_and_a_busy_one_as_the_trailing_debounce_does() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut d = Debouncer::new(ms(1000));
        // First change after silence: due at once.
        assert!(d.schedule(&key("a"), t0));
        assert_eq!(d.next_deadline(), Some(t0));
        assert_eq!(d.take_due(t0), vec![key("a")]);
        // The next changes are not after two quiet windows: trailing debounce, merged.
        assert!(d.schedule(&key("a"), t0 + ms(300)));
        assert!(!d.schedule(&key("a"), t0 + ms(500)));
        assert!(
            d.schedule(&key("b"), t0 + ms(400)),
            "another service is not held back"
        );
        assert_eq!(d.take_due(t0 + ms(400)), vec![key("b")]);
        assert_eq!(
            d.next_deadline(),
            Some(t0 + ms(1300)),
            "not extended by the merge"
        );
        assert!(d.take_due(t0 + ms(1299)).is_empty());
        assert_eq!(d.take_due(t0 + ms(1300)), vec![key("a")]);
        // Changes one window apart keep the trailing schedule (no push per change).
        assert!(d.schedule(&key("a"), t0 + ms(1500)));
        assert_eq!(d.next_deadline(), Some(t0 + ms(2500)));
        assert_eq!(d.take_due(t0 + ms(2500)), vec![key("a")]);
        // Quiet for two windows: at once again, and old changes are forgotten.
        assert!(d.schedule(&key("a"), t0 + ms(3500)));
        assert_eq!(d.take_due(t0 + ms(3500)), vec![key("a")]);
        assert!(d.take_due(t0 + ms(10_000)).is_empty());
        assert_eq!(d.remembered(), 0);
        assert!(d.is_empty());
        assert_eq!(d.next_deadline(), None);
    }

    /// Under churn the push count is the trailing debounce's: changes every 50 ms for 10 s with
    /// a 50 ms window give the same pushes as a pure trailing schedule, plus the first.
    #[test]
    fn churn_sends_no_more_pushes_than_the_trailing_debounce() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let count = |leading: bool| {
            let mut d = Debouncer::new(ms(50));
            let mut pushes = 0;
            for i in 0..=2000u64 {
                let now = t0 + ms(i * 5);
                if i % 10 == 0 {
                    if leading {
                        d.schedule(&key("a"), now);
                    } else if !d.pending.contains_key(&key("a")) {
                        // The old rule: always a window later.
                        let deadline = now + d.delay;
                        d.pending.insert(key("a"), (deadline, 0));
                        d.queue.insert((deadline, 0));
                        d.by_ticket.insert(0, key("a"));
                    }
                }
                pushes += d.take_due(now).len();
            }
            pushes
        };
        let (new, old) = (count(true), count(false));
        assert!(new <= old + 1, "{new} pushes, trailing debounce {old}");
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
