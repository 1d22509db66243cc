//! Cached `instance/list` answers, invalidated by writes through the gateway and by the nodes'
//! change feeds, with a short TTL as a backstop.
//!
//! Answers are grouped per service, so invalidating a service is one removal whatever the
//! number of variants (clusters, healthyOnly, client kind) cached for it.
//!
//! The rule that keeps a stale answer out: an answer fetched from a node is stored only if no
//! invalidation of its service (and no reset) happened since the fetch began. Fetch start and
//! invalidations are ordered by one counter, and the check and the store happen under the lock
//! invalidations take, so an invalidation can never slip between them. Without it, a list
//! fetched just before a write and answered just after the write's invalidation would be cached
//! with the pre-write content until the TTL.
//!
//! Only services with a fetch in flight need their last invalidation remembered, so that is all
//! that is kept: a [`Ticket`] registers its service while it lives. An invalidation of a
//! service nobody is fetching costs a map lookup, which matters because every node's feed
//! reports every change (three invalidations per write in a 3-node cluster). Remembering every
//! invalidated service instead took 30 % of the gateway's CPU under a register load.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use nacre_ring::ServiceKey;
use parking_lot::Mutex;

use crate::route::Variant;

/// The field whose value is the answer time; it is rewritten on every hit.
const REF_TIME_FIELD: &[u8] = b"\"lastRefTime\":";

/// A cached answer.
#[derive(Debug)]
struct Answer {
    variant: Variant,
    /// Text up to and including `"lastRefTime":` (or the whole body).
    head: Bytes,
    /// Text after the time's digits; `None` when the body has no such field.
    tail: Option<Bytes>,
    stored: Instant,
}

/// A cache hit: the stored answer with `lastRefTime` set to the time of the hit, in three
/// parts (text, time, text). The connection loop writes the parts as they are, so a hit copies
/// no part of the answer (25 KiB for a 66-instance service); [`Hit::to_bytes`] joins them for
/// pingora's path.
#[derive(Debug, Clone)]
pub struct Hit {
    head: Bytes,
    time: [u8; 20],
    time_len: u8,
    tail: Bytes,
}

impl Hit {
    /// The answer's parts, in order (the last two may be empty).
    pub fn parts(&self) -> [&[u8]; 3] {
        [
            &self.head,
            &self.time[..usize::from(self.time_len)],
            &self.tail,
        ]
    }

    /// The answer's length.
    fn len(&self) -> usize {
        self.parts().iter().map(|p| p.len()).sum()
    }

    /// The answer in one piece: a copy, unless the body has no time to set.
    pub fn to_bytes(&self) -> Bytes {
        if self.time_len == 0 && self.tail.is_empty() {
            return self.head.clone();
        }
        let mut out = BytesMut::with_capacity(self.len());
        for part in self.parts() {
            out.put_slice(part);
        }
        out.freeze()
    }
}

impl Answer {
    fn new(variant: Variant, body: Bytes) -> Self {
        let split = find(&body, REF_TIME_FIELD).map(|at| {
            let value = at + REF_TIME_FIELD.len();
            let digits = body[value..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            (value, value + digits)
        });
        match split {
            Some((value, end)) => Self {
                variant,
                head: body.slice(..value),
                tail: Some(body.slice(end..)),
                stored: Instant::now(),
            },
            None => Self {
                variant,
                head: body,
                tail: None,
                stored: Instant::now(),
            },
        }
    }

    fn len(&self) -> usize {
        self.head.len() + self.tail.as_ref().map_or(0, Bytes::len)
    }

    fn render(&self, now_ms: u64) -> Hit {
        let mut hit = Hit {
            head: self.head.clone(),
            time: [0; 20],
            time_len: 0,
            tail: Bytes::new(),
        };
        if let Some(tail) = &self.tail {
            let mut buf = itoa::Buffer::new();
            let time = buf.format(now_ms).as_bytes();
            // A u64 has at most 20 digits.
            hit.time[..time.len()].copy_from_slice(time);
            hit.time_len = time.len() as u8;
            hit.tail = tail.clone();
        }
        hit
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The cached answers of one service.
#[derive(Debug, Default)]
struct Slot {
    answers: Vec<Arc<Answer>>,
}

/// A fetch in flight: when it began, for [`ListCache::store`]. Dropping it (the fetch failed
/// or was not cacheable) forgets the fetch.
#[derive(Debug)]
pub struct Ticket {
    state: Arc<State>,
    key: Option<ServiceKey>,
    began: u64,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.state.fetches.lock().finish(&key);
        }
    }
}

/// Services being fetched: how many fetches, and the sequence number of the service's last
/// invalidation since the first of them began.
#[derive(Debug, Default)]
struct Fetches {
    by_key: HashMap<ServiceKey, (u32, u64)>,
}

impl Fetches {
    fn finish(&mut self, key: &ServiceKey) -> u64 {
        let Some(entry) = self.by_key.get_mut(key) else {
            return 0;
        };
        let last = entry.1;
        entry.0 -= 1;
        if entry.0 == 0 {
            self.by_key.remove(key);
        }
        last
    }
}

/// The ordering state shared with tickets.
#[derive(Debug)]
struct State {
    seq: AtomicU64,
    reset_at: AtomicU64,
    /// Held by invalidations, by fetch registration and by the check-then-store of an answer.
    fetches: Mutex<Fetches>,
}

/// What [`ListCache::store`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// The answer is cached.
    Yes,
    /// Its service was invalidated (or the cache reset) while it was fetched.
    Stale,
}

/// The list cache.
pub struct ListCache {
    slots: moka::sync::Cache<ServiceKey, Arc<Slot>>,
    state: Arc<State>,
    ttl: Duration,
    enabled: bool,
}

impl std::fmt::Debug for ListCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListCache")
            .field("entries", &self.slots.entry_count())
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl ListCache {
    /// A cache of at most about `bytes` of answers, each kept at most `ttl`; `bytes == 0`
    /// turns caching off.
    pub fn new(bytes: u64, ttl: Duration) -> Self {
        let slots = moka::sync::Cache::builder()
            .max_capacity(bytes.max(1))
            .weigher(|k: &ServiceKey, s: &Arc<Slot>| {
                let size = s.answers.iter().map(|a| a.len() + 64).sum::<usize>()
                    + k.namespace.len()
                    + k.group.len()
                    + k.service.len();
                u32::try_from(size).unwrap_or(u32::MAX)
            })
            .time_to_live(ttl)
            .build();
        Self {
            slots,
            state: Arc::new(State {
                seq: AtomicU64::new(1),
                reset_at: AtomicU64::new(0),
                fetches: Mutex::new(Fetches::default()),
            }),
            ttl,
            enabled: bytes > 0,
        }
    }

    /// Whether caching is on at all.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The cached answer of `key` for `variant`, with `lastRefTime` set to `now_ms`.
    pub fn get(&self, key: &ServiceKey, variant: &Variant, now_ms: u64) -> Option<Hit> {
        let slot = self.slots.get(key)?;
        let answer = slot.answers.iter().find(|a| a.variant == *variant)?;
        if answer.stored.elapsed() >= self.ttl {
            return None;
        }
        Some(answer.render(now_ms))
    }

    /// Call before fetching an answer of `key` that may be stored.
    pub fn begin(&self, key: &ServiceKey) -> Ticket {
        let mut fetches = self.state.fetches.lock();
        fetches.by_key.entry(key.clone()).or_insert((0, 0)).0 += 1;
        Ticket {
            state: self.state.clone(),
            key: Some(key.clone()),
            began: self.state.seq.load(Ordering::Acquire),
        }
    }

    /// Stores `body` as the answer of the ticket's service for `variant`, unless the service
    /// was invalidated (or the cache reset) since the ticket was taken.
    pub fn store(&self, mut ticket: Ticket, variant: Variant, body: Bytes) -> Stored {
        let Some(key) = ticket.key.take() else {
            return Stored::Stale;
        };
        let mut fetches = self.state.fetches.lock();
        let last_invalidated = fetches.finish(&key);
        if !self.enabled
            || last_invalidated >= ticket.began
            || self.state.reset_at.load(Ordering::Acquire) >= ticket.began
        {
            return Stored::Stale;
        }
        let key = &key;
        let answer = Arc::new(Answer::new(variant, body));
        let mut answers: Vec<Arc<Answer>> = self
            .slots
            .get(key)
            .map(|s| {
                s.answers
                    .iter()
                    .filter(|a| a.variant != answer.variant && a.stored.elapsed() < self.ttl)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        answers.push(answer);
        self.slots.insert(key.clone(), Arc::new(Slot { answers }));
        drop(fetches);
        Stored::Yes
    }

    /// Drops every answer of `key`; fetches of it in flight will not be stored. Returns false
    /// (and does nothing) when caching is off.
    pub fn invalidate(&self, key: &ServiceKey) -> bool {
        if !self.enabled {
            return false;
        }
        let mut fetches = self.state.fetches.lock();
        let at = self.state.seq.fetch_add(1, Ordering::AcqRel);
        if let Some(entry) = fetches.by_key.get_mut(key) {
            entry.1 = at;
        }
        if self.slots.contains_key(key) {
            self.slots.invalidate(key);
        }
        true
    }

    /// Drops everything; fetches in flight will not be stored. Used when a change feed may
    /// have missed events (a node restarted, a feed was cut, the node set changed).
    pub fn reset(&self) {
        let _fetches = self.state.fetches.lock();
        let at = self.state.seq.fetch_add(1, Ordering::AcqRel);
        self.state.reset_at.store(at, Ordering::Release);
        self.slots.invalidate_all();
    }

    /// Services with a fetch in flight (tests).
    pub fn fetching(&self) -> usize {
        self.state.fetches.lock().by_key.len()
    }

    /// Services with cached answers (approximate until pending maintenance has run).
    pub fn services(&self) -> u64 {
        self.slots.entry_count()
    }

    /// Runs moka's pending maintenance (tests and metrics scrapes).
    pub fn sync(&self) {
        self.slots.run_pending_tasks();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> ServiceKey {
        ServiceKey::new("public", "DEFAULT_GROUP", s)
    }

    fn variant(agent: &str) -> Variant {
        Variant {
            clusters: String::new(),
            healthy_only: "false".into(),
            env: String::new(),
            agent: agent.into(),
            subscribes: false,
        }
    }

    fn body(n: u32) -> Bytes {
        Bytes::from(format!(
            "{{\"hosts\":[{n}],\"lastRefTime\":1700000000000,\"checksum\":\"x\"}}"
        ))
    }

    #[test]
    fn hits_rewrite_the_answer_time_and_keep_variants_apart() {
        let c = ListCache::new(1 << 20, Duration::from_secs(60));
        assert_eq!(
            c.store(c.begin(&key("a")), variant("java"), body(1)),
            Stored::Yes
        );
        let hit = c.get(&key("a"), &variant("java"), 42).unwrap();
        assert_eq!(
            &hit.to_bytes()[..],
            b"{\"hosts\":[1],\"lastRefTime\":42,\"checksum\":\"x\"}"
        );
        assert!(c.get(&key("a"), &variant("python"), 42).is_none());
        c.store(c.begin(&key("a")), variant("python"), body(2));
        assert!(
            c.get(&key("a"), &variant("java"), 1).is_some(),
            "variants coexist"
        );
        assert!(c.get(&key("a"), &variant("python"), 1).is_some());
    }

    #[test]
    fn an_invalidation_during_a_fetch_keeps_its_answer_out() {
        let c = ListCache::new(1 << 20, Duration::from_secs(60));
        let before = c.begin(&key("a"));
        let other = c.begin(&key("b"));
        c.invalidate(&key("a"));
        assert_eq!(c.store(before, variant("j"), body(1)), Stored::Stale);
        assert!(c.get(&key("a"), &variant("j"), 1).is_none());
        // Another service is not affected, and a fetch begun after is stored.
        assert_eq!(c.store(other, variant("j"), body(1)), Stored::Yes);
        let after = c.begin(&key("a"));
        assert_eq!(c.store(after, variant("j"), body(2)), Stored::Yes);
        assert_eq!(c.fetching(), 0, "finished fetches are forgotten");
    }

    #[test]
    fn overlapping_fetches_of_one_service_each_see_invalidations_after_their_start() {
        let c = ListCache::new(1 << 20, Duration::from_secs(60));
        let first = c.begin(&key("a"));
        c.invalidate(&key("a"));
        let second = c.begin(&key("a"));
        assert_eq!(c.store(second, variant("j"), body(2)), Stored::Yes);
        assert_eq!(c.store(first, variant("j"), body(1)), Stored::Stale);
        let hit = c.get(&key("a"), &variant("j"), 7).unwrap();
        assert!(hit.to_bytes().starts_with(b"{\"hosts\":[2]"));
    }

    #[test]
    fn abandoned_fetches_are_forgotten() {
        let c = ListCache::new(1 << 20, Duration::from_secs(60));
        let t = c.begin(&key("a"));
        assert_eq!(c.fetching(), 1);
        drop(t);
        assert_eq!(c.fetching(), 0);
    }

    #[test]
    fn invalidate_and_reset_drop_answers() {
        let c = ListCache::new(1 << 20, Duration::from_secs(60));
        c.store(c.begin(&key("a")), variant("j"), body(1));
        c.store(c.begin(&key("b")), variant("j"), body(1));
        c.invalidate(&key("a"));
        assert!(c.get(&key("a"), &variant("j"), 1).is_none());
        assert!(c.get(&key("b"), &variant("j"), 1).is_some());
        let t2 = c.begin(&key("b"));
        c.reset();
        assert!(c.get(&key("b"), &variant("j"), 1).is_none());
        assert_eq!(c.store(t2, variant("j"), body(1)), Stored::Stale);
    }

    #[test]
    fn answers_expire_after_the_ttl() {
        let c = ListCache::new(1 << 20, Duration::from_millis(30));
        c.store(c.begin(&key("a")), variant("j"), body(1));
        assert!(c.get(&key("a"), &variant("j"), 1).is_some());
        std::thread::sleep(Duration::from_millis(40));
        assert!(c.get(&key("a"), &variant("j"), 1).is_none());
    }

    #[test]
    fn bodies_without_a_time_are_served_as_they_are() {
        let c = ListCache::new(1 << 20, Duration::from_secs(60));
        c.store(c.begin(&key("a")), variant("j"), Bytes::from_static(b"{}"));
        assert_eq!(
            &c.get(&key("a"), &variant("j"), 5).unwrap().to_bytes()[..],
            b"{}"
        );
    }

    #[test]
    fn a_disabled_cache_stores_nothing() {
        let c = ListCache::new(0, Duration::from_secs(60));
        assert_eq!(
            c.store(c.begin(&key("a")), variant("j"), body(1)),
            Stored::Stale
        );
        assert!(!c.enabled());
    }
}
