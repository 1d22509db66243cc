//! Cached config reads (rule L7 in [`super`]): a node's answer to `GET /nacos/v1/cs/configs`
//! kept with the md5 it carries and the Raft revision the node read it at, and served only
//! while the md5 table says that is still the config's current state.
//!
//! Unlike the list cache, nothing here needs invalidating per key: the md5 table, fed by the
//! change feeds, is the judge. An answer is served only when the table knows the key with the
//! same md5 at a revision no newer than the answer's (a re-publish of the same content with
//! another type moves the revision, so it is not mistaken for the old answer). What the table
//! cannot know in time is a write that passed through this very gateway and whose feed event
//! has not arrived yet: a client must read its own write, so every config write through the
//! gateway drops the cached reads, and a read fetched before such a write is not stored.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use nacre_ring::configs::ConfigKey;

use super::table::Md5Table;

/// Largest answer kept (configs may be up to 10 MB; big ones are rare and read rarely).
pub const MAX_CACHED_READ: usize = 1024 * 1024;
/// Accounting overhead per entry besides the body (key, headers).
const ENTRY_OVERHEAD: u32 = 512;

/// A node's answer to a config read.
#[derive(Debug, Clone)]
pub struct Read {
    /// 200 or 404.
    pub status: u16,
    /// The headers to replay (content type, `Config-Type`, `Content-MD5`, `Last-Modified`…).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The body.
    pub body: Bytes,
    /// The md5 the answer shows (`""` for a 404).
    pub md5: String,
    /// The revision the node read it at.
    pub revision: u64,
}

/// A read being fetched: stored only if no config write went through since it began.
#[derive(Debug, Clone, Copy)]
pub struct Ticket(u64);

/// Cached config reads.
#[derive(Debug)]
pub struct ConfigReads {
    cache: moka::sync::Cache<ConfigKey, Arc<Read>>,
    /// Config writes seen through this gateway.
    writes: AtomicU64,
}

impl ConfigReads {
    /// A cache of up to `bytes`; `None` when 0 (off).
    pub fn new(bytes: u64) -> Option<Self> {
        (bytes > 0).then(|| Self {
            cache: moka::sync::Cache::builder()
                .max_capacity(bytes)
                .weigher(|_, r: &Arc<Read>| {
                    u32::try_from(r.body.len())
                        .unwrap_or(u32::MAX)
                        .saturating_add(ENTRY_OVERHEAD)
                })
                .build(),
            writes: AtomicU64::new(0),
        })
    }

    /// The cached answer for `key` if the table says it is current.
    pub fn get(&self, key: &ConfigKey, table: &Md5Table) -> Option<Arc<Read>> {
        let read = self.cache.get(key)?;
        table
            .is_current(key, &read.md5, read.revision)
            .then_some(read)
    }

    /// Call before fetching a read to store.
    pub fn begin(&self) -> Ticket {
        Ticket(self.writes.load(Ordering::Acquire))
    }

    /// Stores `read` fetched under `ticket`; false when a write came through meanwhile (or it
    /// is too big).
    pub fn store(&self, ticket: Ticket, key: ConfigKey, read: Read) -> bool {
        if read.body.len() > MAX_CACHED_READ || self.writes.load(Ordering::Acquire) != ticket.0 {
            return false;
        }
        self.cache.insert(key, Arc::new(read));
        // A write that landed during the insert must still win.
        if self.writes.load(Ordering::Acquire) != ticket.0 {
            self.cache.invalidate_all();
            return false;
        }
        true
    }

    /// A config write is passing through: drop every cached read (before its client hears
    /// the answer) and refuse reads fetched before it.
    pub fn written(&self) {
        self.writes.fetch_add(1, Ordering::AcqRel);
        self.cache.invalidate_all();
    }

    /// Drops every cached read.
    pub fn clear(&self) {
        self.cache.invalidate_all();
    }

    /// Entries cached (after pending maintenance).
    pub fn len(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use nacre_ring::wire::ConfigChange;

    use super::*;

    fn key(d: &str) -> ConfigKey {
        ConfigKey::new(d, "G", None).unwrap()
    }

    fn read(md5: &str, revision: u64) -> Read {
        Read {
            status: 200,
            headers: Vec::new(),
            body: Bytes::from_static(b"x"),
            md5: md5.into(),
            revision,
        }
    }

    fn learn(t: &Md5Table, d: &str, md5: &str, revision: u64) {
        t.learn(&[ConfigChange {
            key: key(d),
            md5: md5.into(),
            revision,
            beta: false,
        }]);
    }

    #[test]
    fn l7_a_read_is_served_only_while_the_table_says_it_is_current() {
        let (t, r) = (Md5Table::new(), ConfigReads::new(1 << 20).unwrap());
        assert!(r.store(r.begin(), key("a"), read("m1", 5)));
        assert!(
            r.get(&key("a"), &t).is_none(),
            "the table does not know the key"
        );
        learn(&t, "a", "m1", 4);
        assert!(r.get(&key("a"), &t).is_some());
        // The same content published again (another type, say): a newer revision.
        learn(&t, "a", "m1", 9);
        assert!(r.get(&key("a"), &t).is_none());
        assert!(r.store(r.begin(), key("a"), read("m1", 9)));
        assert!(r.get(&key("a"), &t).is_some());
        learn(&t, "a", "m2", 10);
        assert!(r.get(&key("a"), &t).is_none(), "changed content");
        t.reset();
        assert!(r.get(&key("a"), &t).is_none());
    }

    #[test]
    fn l7_a_write_through_the_gateway_drops_reads_and_voids_fetches_in_flight() {
        let (t, r) = (Md5Table::new(), ConfigReads::new(1 << 20).unwrap());
        learn(&t, "a", "m1", 1);
        assert!(r.store(r.begin(), key("a"), read("m1", 1)));
        let in_flight = r.begin();
        r.written();
        assert!(
            r.get(&key("a"), &t).is_none(),
            "the writer must read its write"
        );
        assert!(!r.store(in_flight, key("a"), read("m1", 1)));
        assert!(r.store(r.begin(), key("a"), read("m1", 1)));
        let big = Read {
            body: Bytes::from(vec![b'x'; MAX_CACHED_READ + 1]),
            ..read("m1", 1)
        };
        assert!(!r.store(r.begin(), key("b"), big));
        assert!(ConfigReads::new(0).is_none());
    }
}
