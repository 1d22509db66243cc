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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use nacre_ring::ServiceKey;
use parking_lot::Mutex;

use crate::route::Variant;

/// How long an invalidation is remembered for fetches that began before it. Longer than any
/// fetch can take (the read timeout is validated to be far below).
const TOMBSTONE_TTL: Duration = Duration::from_secs(120);
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

    fn render(&self, now_ms: u64) -> Bytes {
        let Some(tail) = &self.tail else {
            return self.head.clone();
        };
        let mut buf = itoa::Buffer::new();
        let time = buf.format(now_ms).as_bytes();
        let mut out = BytesMut::with_capacity(self.head.len() + time.len() + tail.len());
        out.put_slice(&self.head);
        out.put_slice(time);
        out.put_slice(tail);
        out.freeze()
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

/// Proof of when a fetch began, for [`ListCache::store`].
#[derive(Debug, Clone, Copy)]
pub struct Ticket(u64);

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
    /// Services invalidated recently, with the sequence number of their last invalidation.
    tombstones: moka::sync::Cache<ServiceKey, u64>,
    seq: AtomicU64,
    reset_at: AtomicU64,
    /// Held by invalidations and by the check-then-store of an answer.
    lock: Mutex<()>,
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
            tombstones: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(TOMBSTONE_TTL)
                .build(),
            seq: AtomicU64::new(1),
            reset_at: AtomicU64::new(0),
            lock: Mutex::new(()),
            ttl,
            enabled: bytes > 0,
        }
    }

    /// Whether caching is on at all.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The cached answer of `key` for `variant`, with `lastRefTime` set to `now_ms`.
    pub fn get(&self, key: &ServiceKey, variant: &Variant, now_ms: u64) -> Option<Bytes> {
        let slot = self.slots.get(key)?;
        let answer = slot.answers.iter().find(|a| a.variant == *variant)?;
        if answer.stored.elapsed() >= self.ttl {
            return None;
        }
        Some(answer.render(now_ms))
    }

    /// Call before fetching an answer that may be stored.
    pub fn begin(&self) -> Ticket {
        Ticket(self.seq.load(Ordering::Acquire))
    }

    /// Stores `body` as the answer of `key` for `variant`, unless `key` was invalidated (or the
    /// cache reset) since `ticket` was taken.
    pub fn store(&self, key: &ServiceKey, variant: Variant, ticket: Ticket, body: Bytes) -> Stored {
        if !self.enabled {
            return Stored::Stale;
        }
        let _guard = self.lock.lock();
        let invalidated_since = |at: u64| at >= ticket.0;
        if invalidated_since(self.reset_at.load(Ordering::Acquire))
            || self.tombstones.get(key).is_some_and(invalidated_since)
        {
            return Stored::Stale;
        }
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
        Stored::Yes
    }

    /// Drops every answer of `key`; fetches of it in flight will not be stored.
    pub fn invalidate(&self, key: &ServiceKey) {
        let _guard = self.lock.lock();
        let at = self.seq.fetch_add(1, Ordering::AcqRel);
        self.tombstones.insert(key.clone(), at);
        self.slots.invalidate(key);
    }

    /// Drops everything; fetches in flight will not be stored. Used when a change feed may
    /// have missed events (a node restarted, a feed was cut, the node set changed).
    pub fn reset(&self) {
        let _guard = self.lock.lock();
        let at = self.seq.fetch_add(1, Ordering::AcqRel);
        self.reset_at.store(at, Ordering::Release);
        self.slots.invalidate_all();
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
        let t = c.begin();
        assert_eq!(c.store(&key("a"), variant("java"), t, body(1)), Stored::Yes);
        let hit = c.get(&key("a"), &variant("java"), 42).unwrap();
        assert_eq!(
            &hit[..],
            b"{\"hosts\":[1],\"lastRefTime\":42,\"checksum\":\"x\"}"
        );
        assert!(c.get(&key("a"), &variant("python"), 42).is_none());
        let t = c.begin();
        c.store(&key("a"), variant("python"), t, body(2));
        assert!(
            c.get(&key("a"), &variant("java"), 1).is_some(),
            "variants coexist"
        );
        assert!(c.get(&key("a"), &variant("python"), 1).is_some());
    }

    #[test]
    fn an_invalidation_during_a_fetch_keeps_its_answer_out() {
        let c = ListCache::new(1 << 20, Duration::from_secs(60));
        let before = c.begin();
        c.invalidate(&key("a"));
        assert_eq!(
            c.store(&key("a"), variant("j"), before, body(1)),
            Stored::Stale
        );
        assert!(c.get(&key("a"), &variant("j"), 1).is_none());
        // Another service is not affected, and a fetch begun after is stored.
        assert_eq!(
            c.store(&key("b"), variant("j"), before, body(1)),
            Stored::Yes
        );
        let after = c.begin();
        assert_eq!(
            c.store(&key("a"), variant("j"), after, body(2)),
            Stored::Yes
        );
    }

    #[test]
    fn invalidate_and_reset_drop_answers() {
        let c = ListCache::new(1 << 20, Duration::from_secs(60));
        let t = c.begin();
        c.store(&key("a"), variant("j"), t, body(1));
        c.store(&key("b"), variant("j"), t, body(1));
        c.invalidate(&key("a"));
        assert!(c.get(&key("a"), &variant("j"), 1).is_none());
        assert!(c.get(&key("b"), &variant("j"), 1).is_some());
        let t2 = c.begin();
        c.reset();
        assert!(c.get(&key("b"), &variant("j"), 1).is_none());
        assert_eq!(c.store(&key("b"), variant("j"), t2, body(1)), Stored::Stale);
    }

    #[test]
    fn answers_expire_after_the_ttl() {
        let c = ListCache::new(1 << 20, Duration::from_millis(30));
        let t = c.begin();
        c.store(&key("a"), variant("j"), t, body(1));
        assert!(c.get(&key("a"), &variant("j"), 1).is_some());
        std::thread::sleep(Duration::from_millis(40));
        assert!(c.get(&key("a"), &variant("j"), 1).is_none());
    }

    #[test]
    fn bodies_without_a_time_are_served_as_they_are() {
        let c = ListCache::new(1 << 20, Duration::from_secs(60));
        let t = c.begin();
        c.store(&key("a"), variant("j"), t, Bytes::from_static(b"{}"));
        assert_eq!(&c.get(&key("a"), &variant("j"), 5).unwrap()[..], b"{}");
    }

    #[test]
    fn a_disabled_cache_stores_nothing() {
        let c = ListCache::new(0, Duration::from_secs(60));
        let t = c.begin();
        assert_eq!(c.store(&key("a"), variant("j"), t, body(1)), Stored::Stale);
        assert!(!c.enabled());
    }
}
