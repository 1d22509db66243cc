//! The bounded subscriber table: who gets pushed what, and when they turn into zombies.
//!
//! A subscriber is refreshed every time it repeats its list query; one not refreshed for the
//! TTL (Nacos `pushCacheMillis`, 10 s) is a zombie and is dropped before each push of its service
//! and by the periodic sweep. Pure data structure: time is injected, no I/O.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use nacre_ring::ServiceKey;

use super::Subscriber;

/// What [`SubscriberTable::subscribe`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeOutcome {
    /// A new subscriber was stored.
    Added,
    /// A known subscriber's refresh time was updated.
    Refreshed,
    /// The table is full of live subscribers; the new one was not stored.
    Rejected,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    last_seen: Instant,
    /// `lastRefTime` of the most recent packet pushed to this subscriber, if any.
    last_seq: Option<u64>,
}

/// Subscribers grouped by service, bounded by `max` entries in total.
#[derive(Debug)]
pub struct SubscriberTable {
    by_key: HashMap<ServiceKey, HashMap<Subscriber, Slot>>,
    len: usize,
    max: usize,
    ttl: Duration,
    /// Last time a full table was swept to make room; limits that O(n) work to once a second.
    last_full_sweep: Option<Instant>,
}

impl SubscriberTable {
    /// An empty table holding at most `max` subscribers that expire `ttl` after their refresh.
    pub fn new(max: usize, ttl: Duration) -> Self {
        Self {
            by_key: HashMap::new(),
            len: 0,
            max,
            ttl,
            last_full_sweep: None,
        }
    }

    /// Number of stored subscribers (zombies included until dropped).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether any subscriber (live or not yet dropped) is stored for `key`.
    pub fn has_key(&self, key: &ServiceKey) -> bool {
        self.by_key.contains_key(key)
    }

    fn alive(&self, slot: &Slot, now: Instant) -> bool {
        now.saturating_duration_since(slot.last_seen) <= self.ttl
    }

    /// Adds `sub` or refreshes it to `now`. When the table is full, zombies are swept first
    /// (at most once a second); if it is still full the subscriber is rejected.
    pub fn subscribe(&mut self, sub: Subscriber, now: Instant) -> SubscribeOutcome {
        if let Some(slot) = self.by_key.get_mut(&sub.key).and_then(|m| m.get_mut(&sub)) {
            // Never move the refresh time backwards (callers' clocks may race).
            slot.last_seen = slot.last_seen.max(now);
            return SubscribeOutcome::Refreshed;
        }
        if self.len >= self.max {
            let may_sweep = self
                .last_full_sweep
                .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1));
            if may_sweep {
                self.last_full_sweep = Some(now);
                self.sweep(now);
            }
            if self.len >= self.max {
                return SubscribeOutcome::Rejected;
            }
        }
        self.by_key.entry(sub.key.clone()).or_default().insert(
            sub,
            Slot {
                last_seen: now,
                last_seq: None,
            },
        );
        self.len += 1;
        SubscribeOutcome::Added
    }

    /// Drops the zombies of `key` and returns its live subscribers (the push targets).
    pub fn live_for_push(&mut self, key: &ServiceKey, now: Instant) -> Vec<Subscriber> {
        let ttl = self.ttl;
        let Some(subs) = self.by_key.get_mut(key) else {
            return Vec::new();
        };
        let before = subs.len();
        subs.retain(|_, slot| now.saturating_duration_since(slot.last_seen) <= ttl);
        let removed = before - subs.len();
        let live: Vec<Subscriber> = subs.keys().cloned().collect();
        if subs.is_empty() {
            self.by_key.remove(key);
        }
        self.len -= removed;
        live
    }

    /// The live subscribers of `key`, without modifying the table, in a stable order.
    pub fn list(&self, key: &ServiceKey, now: Instant) -> Vec<Subscriber> {
        let mut out: Vec<Subscriber> = self
            .by_key
            .get(key)
            .map(|subs| {
                subs.iter()
                    .filter(|(_, slot)| self.alive(slot, now))
                    .map(|(sub, _)| sub.clone())
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by(|a, b| {
            (a.addr, &a.clusters, &a.agent, &a.app).cmp(&(b.addr, &b.clusters, &b.agent, &b.app))
        });
        out
    }

    /// Drops every zombie; returns how many were dropped.
    pub fn sweep(&mut self, now: Instant) -> usize {
        let ttl = self.ttl;
        let mut removed = 0;
        self.by_key.retain(|_, subs| {
            let before = subs.len();
            subs.retain(|_, slot| now.saturating_duration_since(slot.last_seen) <= ttl);
            removed += before - subs.len();
            !subs.is_empty()
        });
        self.len -= removed;
        removed
    }

    /// Records that packet `seq` was pushed to `sub`; returns the previous packet's `seq`
    /// (now superseded). No-op (returns `None`) if `sub` is no longer stored.
    pub fn set_last_seq(&mut self, sub: &Subscriber, seq: u64) -> Option<u64> {
        let slot = self.by_key.get_mut(&sub.key)?.get_mut(sub)?;
        slot.last_seq.replace(seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(service: &str, port: u16) -> Subscriber {
        Subscriber {
            key: ServiceKey::new("public", "DEFAULT_GROUP", service),
            clusters: String::new(),
            addr: ([127, 0, 0, 1], port).into(),
            agent: "Nacos-Java-Client:v1.4.1".into(),
            app: "unknown".into(),
        }
    }

    const TTL: Duration = Duration::from_secs(10);

    #[test]
    fn add_refresh_and_expire() {
        let t0 = Instant::now();
        let mut t = SubscriberTable::new(10, TTL);
        assert_eq!(t.subscribe(sub("a", 1), t0), SubscribeOutcome::Added);
        assert_eq!(t.subscribe(sub("a", 2), t0), SubscribeOutcome::Added);
        assert_eq!(t.subscribe(sub("b", 1), t0), SubscribeOutcome::Added);
        assert_eq!(t.len(), 3);
        // Refresh "a":1 at 8 s; "a":2 is not refreshed.
        assert_eq!(
            t.subscribe(sub("a", 1), t0 + Duration::from_secs(8)),
            SubscribeOutcome::Refreshed
        );
        let key = sub("a", 1).key;
        // Exactly at the TTL a subscriber is still alive.
        assert_eq!(t.list(&key, t0 + TTL).len(), 2);
        let t11 = t0 + Duration::from_secs(11);
        assert_eq!(t.list(&key, t11), vec![sub("a", 1)]);
        // list() does not modify; live_for_push() drops the zombie.
        assert_eq!(t.len(), 3);
        assert_eq!(t.live_for_push(&key, t11), vec![sub("a", 1)]);
        assert_eq!(t.len(), 2);
        // The sweep drops "b".
        assert_eq!(t.sweep(t11), 1);
        assert_eq!(t.len(), 1);
        assert!(!t.has_key(&sub("b", 1).key));
        assert_eq!(t.sweep(t0 + Duration::from_secs(30)), 1);
        assert!(t.is_empty());
        assert!(!t.has_key(&key));
    }

    #[test]
    fn different_clusters_or_agents_are_different_subscribers() {
        let t0 = Instant::now();
        let mut t = SubscriberTable::new(10, TTL);
        let mut s2 = sub("a", 1);
        s2.clusters = "c1,c2".into();
        let mut s3 = sub("a", 1);
        s3.agent = "Nacos-Node-Client:v1.2".into();
        for s in [sub("a", 1), s2, s3] {
            assert_eq!(t.subscribe(s, t0), SubscribeOutcome::Added);
        }
        assert_eq!(t.list(&sub("a", 1).key, t0).len(), 3);
    }

    #[test]
    fn bounded_and_full_table_sweeps_zombies_once_a_second() {
        let t0 = Instant::now();
        let mut t = SubscriberTable::new(2, TTL);
        t.subscribe(sub("a", 1), t0);
        t.subscribe(sub("a", 2), t0 + Duration::from_secs(5));
        assert_eq!(
            t.subscribe(sub("a", 3), t0 + Duration::from_secs(6)),
            SubscribeOutcome::Rejected
        );
        // Refreshing an existing subscriber works while full.
        assert_eq!(
            t.subscribe(sub("a", 2), t0 + Duration::from_secs(6)),
            SubscribeOutcome::Refreshed
        );
        // At 11 s "a":1 is a zombie; the last make-room sweep (6 s) is old enough to rerun.
        assert_eq!(
            t.subscribe(sub("a", 3), t0 + Duration::from_secs(11)),
            SubscribeOutcome::Added
        );
        assert_eq!(t.len(), 2);
        // Full of live subscribers at 15.8 s: a sweep runs, finds nothing, rejects.
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(
            t.subscribe(sub("a", 4), at(15_800)),
            SubscribeOutcome::Rejected
        );
        // "a":2 turns zombie after 16 s, but make-room sweeps are rate-limited to 1/s.
        assert_eq!(
            t.subscribe(sub("a", 4), at(16_500)),
            SubscribeOutcome::Rejected
        );
        assert_eq!(
            t.subscribe(sub("a", 4), at(16_700)),
            SubscribeOutcome::Rejected
        );
        assert_eq!(
            t.subscribe(sub("a", 4), at(16_800)),
            SubscribeOutcome::Added
        );
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn last_seq_tracks_superseded_packets() {
        let t0 = Instant::now();
        let mut t = SubscriberTable::new(10, TTL);
        assert_eq!(t.set_last_seq(&sub("a", 1), 5), None);
        t.subscribe(sub("a", 1), t0);
        assert_eq!(t.set_last_seq(&sub("a", 1), 5), None);
        assert_eq!(t.set_last_seq(&sub("a", 1), 6), Some(5));
        // Refresh keeps the packet history.
        t.subscribe(sub("a", 1), t0 + Duration::from_secs(1));
        assert_eq!(t.set_last_seq(&sub("a", 1), 7), Some(6));
    }
}
