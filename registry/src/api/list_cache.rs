//! Rendered `instance/list` answers, kept until their service changes.
//!
//! Rendering a list (selection, protect threshold, MD5 checksum, JSON of every host) costs tens
//! of microseconds per hundred instances, and clients poll the same few lists over and over.
//! An answer is cached per service and per everything in the request that shapes it (clusters,
//! healthyOnly, dom format, cacheMillis, env), tagged with the service's change generation
//! (see [`crate::changes`]); a newer generation makes it stale. `lastRefTime` is the one
//! per-request value: the cache keeps the text around it and writes the current time in on
//! every hit, so a cached answer is byte-for-byte what a fresh render would give.

use std::collections::HashMap;

use nacre_ring::ServiceKey;
use parking_lot::RwLock;

/// The `lastRefTime` value rendered into a cached answer and replaced on each hit.
pub const SENTINEL_TIME: u64 = u64::MAX;
const SENTINEL_FIELD: &str = "\"lastRefTime\":18446744073709551615";
const FIELD: &str = "\"lastRefTime\":";

/// Everything in a list request that changes the answer (not `udpPort` / `clientIP`),
/// borrowed from the request so that a cache hit allocates nothing for the lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variant<'a> {
    /// The `clusters` parameter as given.
    pub clusters: &'a str,
    /// `healthyOnly`.
    pub healthy_only: bool,
    /// Grouped `dom` (modern Java clients).
    pub grouped_dom: bool,
    /// `cacheMillis` told to the client.
    pub cache_millis: u64,
    /// The `env` parameter.
    pub env: &'a str,
}

/// A [`Variant`] as stored with its answer.
#[derive(Debug)]
struct Shape {
    clusters: String,
    healthy_only: bool,
    grouped_dom: bool,
    cache_millis: u64,
    env: String,
}

impl Shape {
    fn of(v: Variant<'_>) -> Self {
        Self {
            clusters: v.clusters.to_string(),
            healthy_only: v.healthy_only,
            grouped_dom: v.grouped_dom,
            cache_millis: v.cache_millis,
            env: v.env.to_string(),
        }
    }

    fn matches(&self, v: Variant<'_>) -> bool {
        self.clusters == v.clusters
            && self.healthy_only == v.healthy_only
            && self.grouped_dom == v.grouped_dom
            && self.cache_millis == v.cache_millis
            && self.env == v.env
    }
}

#[derive(Debug)]
struct Rendered {
    generation: u64,
    /// Text before and after the `lastRefTime` value; `tail` is `None` when the answer has
    /// no such field (a missing service).
    head: String,
    tail: Option<String>,
}

impl Rendered {
    fn size(&self) -> usize {
        self.head.len() + self.tail.as_ref().map_or(0, String::len)
    }
}

/// The cache. Bounded by total bytes: when full it starts over, which costs one render per
/// hot list and never serves anything stale.
#[derive(Debug)]
pub struct ListCache {
    inner: RwLock<Inner>,
    max_bytes: usize,
}

/// Answers per service, then per request shape (a service has only a few shapes in use).
#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<ServiceKey, Vec<(Shape, Rendered)>>,
    bytes: usize,
}

impl ListCache {
    /// A cache holding at most about `max_bytes` of rendered text.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            inner: RwLock::new(Inner::default()),
            max_bytes,
        }
    }

    /// The cached answer for `key`/`variant` if it was rendered at `generation`, with
    /// `now_ms` as its `lastRefTime`.
    pub fn get(
        &self,
        key: &ServiceKey,
        variant: Variant<'_>,
        generation: u64,
        now_ms: u64,
    ) -> Option<String> {
        let inner = self.inner.read();
        let (_, r) = inner
            .entries
            .get(key)?
            .iter()
            .find(|(shape, _)| shape.matches(variant))?;
        (r.generation == generation).then(|| splice(&r.head, r.tail.as_deref(), now_ms))
    }

    /// Stores `body`, rendered with [`SENTINEL_TIME`] as `lastRefTime` at `generation`, and
    /// returns it with `now_ms` written in.
    pub fn put(
        &self,
        key: ServiceKey,
        variant: Variant<'_>,
        generation: u64,
        body: String,
        now_ms: u64,
    ) -> String {
        let rendered = match body.find(SENTINEL_FIELD) {
            Some(i) => {
                let cut = i + FIELD.len();
                let after = i + SENTINEL_FIELD.len();
                Rendered {
                    generation,
                    head: body[..cut].to_string(),
                    tail: Some(body[after..].to_string()),
                }
            }
            None => Rendered {
                generation,
                head: body,
                tail: None,
            },
        };
        let out = splice(&rendered.head, rendered.tail.as_deref(), now_ms);
        let size = rendered.size();
        let mut inner = self.inner.write();
        if inner.bytes + size > self.max_bytes {
            inner.entries.clear();
            inner.bytes = 0;
        }
        let shapes = inner.entries.entry(key).or_default();
        let freed = match shapes.iter_mut().find(|(shape, _)| shape.matches(variant)) {
            Some((_, old)) => std::mem::replace(old, rendered).size(),
            None => {
                shapes.push((Shape::of(variant), rendered));
                0
            }
        };
        inner.bytes = inner.bytes + size - freed;
        out
    }

    /// Answers held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.inner.read().entries.values().map(Vec::len).sum()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn splice(head: &str, tail: Option<&str>, now_ms: u64) -> String {
    match tail {
        None => head.to_string(),
        Some(tail) => {
            let mut buf = itoa::Buffer::new();
            let t = buf.format(now_ms);
            let mut s = String::with_capacity(head.len() + t.len() + tail.len());
            s.push_str(head);
            s.push_str(t);
            s.push_str(tail);
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variant() -> Variant<'static> {
        Variant {
            clusters: "",
            healthy_only: false,
            grouped_dom: false,
            cache_millis: 3000,
            env: "",
        }
    }

    #[test]
    fn hits_write_the_current_time_and_generations_invalidate() {
        let c = ListCache::new(1 << 20);
        let k = ServiceKey::new("public", "G", "s");
        let body = format!("{{\"hosts\":[],{SENTINEL_FIELD},\"checksum\":\"x\"}}");
        let first = c.put(k.clone(), variant(), 7, body, 100);
        assert_eq!(
            first,
            "{\"hosts\":[],\"lastRefTime\":100,\"checksum\":\"x\"}"
        );
        assert_eq!(
            c.get(&k, variant(), 7, 250).as_deref(),
            Some("{\"hosts\":[],\"lastRefTime\":250,\"checksum\":\"x\"}")
        );
        assert_eq!(
            c.get(&k, variant(), 8, 250),
            None,
            "a newer generation is a miss"
        );
        let other = Variant {
            healthy_only: true,
            ..variant()
        };
        assert_eq!(c.get(&k, other, 7, 250), None);
    }

    #[test]
    fn answers_without_the_field_are_kept_whole_and_size_is_bounded() {
        let c = ListCache::new(40);
        let k = ServiceKey::new("public", "G", "missing");
        let body = "{\"name\":\"G@@missing\",\"hosts\":[]}".to_string();
        assert_eq!(c.put(k.clone(), variant(), 1, body.clone(), 5), body);
        assert_eq!(c.get(&k, variant(), 1, 9).as_deref(), Some(body.as_str()));
        let k2 = ServiceKey::new("public", "G", "other");
        c.put(k2.clone(), variant(), 1, body.clone(), 5);
        assert_eq!(c.len(), 1, "over the byte bound the cache starts over");
        assert!(c.get(&k2, variant(), 1, 9).is_some());
    }
}
