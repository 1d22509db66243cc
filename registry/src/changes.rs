//! Per-service change generations: one counter bumped after every visible change of a service,
//! whatever its origin (a client write here, a peer's record, a Raft apply, a health flip).
//!
//! Caches of derived data (rendered list answers) compare the generation they were built at
//! with the current one instead of being told about each kind of change separately. The
//! counter is global, so generations also order changes across services (a cursor for a
//! future change feed).
//!
//! Entries of services that no longer exist are pruned now and then, so the map does not grow
//! with every name ever used. A pruned (or never seen) service reports the *floor*: a value
//! raised above every generation handed out before the prune, so nothing cached under an old
//! generation can match it again.
//!
//! The same counter is the cursor of the *change feed* that gateways follow to invalidate
//! their caches: a bounded log of recent (generation, service) events. A reader whose cursor
//! fell out of the log, or that comes from another incarnation of this node (`epoch`), is told
//! to reset (drop everything it derived) instead of being handed a silent gap. The log is kept
//! only once a reader has come: a node nobody follows pays nothing for it on the write path,
//! and a first reader is told to reset anyway.
//!
//! Config changes share the feed (with their new md5 and Raft revision, see
//! [`nacre_ring::wire::ConfigChange`]): a gateway holding config listeners learns of them in the
//! same read that invalidates its list cache. They take a feed position but no service
//! generation.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use nacre_ring::wire::ConfigChange;
use nacre_ring::ServiceKey;
use parking_lot::RwLock;

/// Events kept for feed readers; a reader further behind than this resets.
pub const FEED_CAPACITY: usize = 65_536;
/// Most keys handed out by one feed read.
pub const FEED_BATCH: usize = 4096;

/// Change generations of every service that has changed since the node started.
#[derive(Debug)]
pub struct Changes {
    seq: AtomicU64,
    generations: RwLock<Generations>,
    /// Identifies this incarnation: generations restart from zero with the process.
    epoch: u64,
    /// The newest generation, for feed readers waiting on the next change.
    newest: tokio::sync::watch::Sender<u64>,
    /// Set by the first feed read; until then no event is logged.
    followed: AtomicBool,
}

impl Default for Changes {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, Default)]
struct Generations {
    by_key: HashMap<ServiceKey, u64>,
    floor: u64,
    /// Recent events in generation order.
    log: VecDeque<Event>,
    /// The newest generation that fell out of `log` (readers at or below it reset).
    evicted_through: u64,
}

#[derive(Debug)]
struct Event {
    generation: u64,
    what: What,
    at_ms: u64,
}

#[derive(Debug)]
enum What {
    Service(ServiceKey),
    Config(ConfigChange),
}

pub use nacre_ring::wire::FeedPage;

impl Changes {
    /// No changes yet.
    pub fn new() -> Self {
        Self {
            seq: AtomicU64::new(0),
            generations: RwLock::new(Generations::default()),
            epoch: rand::random::<u64>() | 1,
            newest: tokio::sync::watch::Sender::new(0),
            followed: AtomicBool::new(false),
        }
    }

    /// Records a change of `key`; call it after the change is visible to readers.
    pub fn bump(&self, key: &ServiceKey) -> u64 {
        let mut gens = self.generations.write();
        // Taken under the lock so a concurrent prune cannot set the floor above it, and so
        // the log stays in generation order.
        let g = self.seq.fetch_add(1, Ordering::AcqRel) + 1;
        match gens.by_key.get_mut(key) {
            Some(v) => *v = g,
            None => {
                gens.by_key.insert(key.clone(), g);
            }
        }
        self.log(gens, g, || What::Service(key.clone()));
        g
    }

    /// Records config changes for feed readers (configs have no cached generation here);
    /// call it after the changes are visible to readers. One lock and one wake-up for the
    /// whole batch (an import can change thousands).
    pub fn configs_changed(&self, changes: &[ConfigChange]) {
        let mut gens = self.generations.write();
        let mut logged = None;
        for c in changes {
            let g = self.seq.fetch_add(1, Ordering::AcqRel) + 1;
            if self.push_event(&mut gens, g, || What::Config(c.clone())) {
                logged = Some(g);
            }
        }
        drop(gens);
        if let Some(g) = logged {
            self.newest.send_replace(g);
        }
    }

    /// Appends event `g` to the log (if a reader follows) and wakes waiting readers.
    fn log(
        &self,
        mut gens: parking_lot::RwLockWriteGuard<'_, Generations>,
        g: u64,
        what: impl FnOnce() -> What,
    ) {
        let logged = self.push_event(&mut gens, g, what);
        drop(gens);
        if logged {
            self.newest.send_replace(g);
        }
    }

    /// Appends event `g` under the write lock, if a reader follows; whether it did.
    fn push_event(&self, gens: &mut Generations, g: u64, what: impl FnOnce() -> What) -> bool {
        // Checked under the write lock, which the first reader takes to set it: a change is
        // either logged or at most the first reader's starting point.
        if !self.followed.load(Ordering::Acquire) {
            return false;
        }
        if gens.log.len() >= FEED_CAPACITY {
            if let Some(old) = gens.log.pop_front() {
                gens.evicted_through = old.generation;
            }
        }
        gens.log.push_back(Event {
            generation: g,
            what: what(),
            at_ms: now_ms(),
        });
        true
    }

    /// This incarnation's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The changes after `cursor` (of `epoch`), without waiting.
    pub fn read(&self, epoch: u64, cursor: u64) -> FeedPage {
        if !self.followed.load(Ordering::Acquire) {
            // First reader: logging starts now, and everything before counts as evicted (a
            // cursor from before can only be answered with a reset).
            let mut gens = self.generations.write();
            gens.evicted_through = gens.evicted_through.max(self.seq.load(Ordering::Acquire));
            self.followed.store(true, Ordering::Release);
        }
        let gens = self.generations.read();
        let current = self.seq.load(Ordering::Acquire);
        let reset = epoch != self.epoch || cursor > current || cursor < gens.evicted_through;
        if reset {
            // Start the reader at "now": everything before is covered by its reset.
            return FeedPage {
                epoch: self.epoch,
                cursor: current,
                reset: true,
                keys: Vec::new(),
                newest_ms: 0,
                configs: Vec::new(),
            };
        }
        // The log is in generation order: skip what the reader has seen.
        let start = gens.log.partition_point(|e| e.generation <= cursor);
        let (mut keys, mut configs) = (Vec::new(), Vec::new());
        let mut next = current;
        let mut newest_ms = 0;
        for (n, e) in gens.log.range(start..).enumerate() {
            if n == FEED_BATCH {
                next = e.generation - 1;
                break;
            }
            match &e.what {
                What::Service(k) => keys.push(k.clone()),
                What::Config(c) => configs.push(c.clone()),
            }
            newest_ms = e.at_ms;
        }
        FeedPage {
            epoch: self.epoch,
            cursor: next,
            reset: false,
            keys,
            newest_ms,
            configs,
        }
    }

    /// Like [`Changes::read`], but waits up to `wait` for a change when there is none yet.
    pub async fn wait_read(&self, epoch: u64, cursor: u64, wait: Duration) -> FeedPage {
        let mut rx = self.newest.subscribe();
        let page = self.read(epoch, cursor);
        if page.reset || !page.keys.is_empty() || !page.configs.is_empty() {
            return page;
        }
        let after = page.cursor;
        // Generations handed out by a prune never enter the log: wait for a logged one.
        let _ = tokio::time::timeout(wait, rx.wait_for(|g| *g > after)).await;
        self.read(epoch, cursor)
    }

    /// The generation of `key`'s last change (the floor when unknown or pruned).
    pub fn generation(&self, key: &ServiceKey) -> u64 {
        let gens = self.generations.read();
        gens.by_key.get(key).copied().unwrap_or(gens.floor)
    }

    /// Forgets services for which `keep` is false; returns how many were dropped.
    pub fn prune(&self, keep: impl Fn(&ServiceKey) -> bool) -> usize {
        let mut gens = self.generations.write();
        gens.floor = self.seq.fetch_add(1, Ordering::AcqRel) + 1;
        let before = gens.by_key.len();
        gens.by_key.retain(|k, _| keep(k));
        before - gens.by_key.len()
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_grow_per_change() {
        let c = Changes::new();
        let a = ServiceKey::new("public", "G", "a");
        let b = ServiceKey::new("public", "G", "b");
        assert_eq!(c.generation(&a), 0);
        let g1 = c.bump(&a);
        let g2 = c.bump(&b);
        assert!(g2 > g1);
        assert_eq!(c.generation(&a), g1);
        c.bump(&a);
        assert!(c.generation(&a) > g2);
    }

    #[test]
    fn pruned_and_unknown_services_report_a_floor_above_every_old_generation() {
        let c = Changes::new();
        let a = ServiceKey::new("public", "G", "a");
        let b = ServiceKey::new("public", "G", "b");
        let never = ServiceKey::new("public", "G", "never");
        let old_never = c.generation(&never);
        let ga = c.bump(&a);
        let gb = c.bump(&b);
        assert_eq!(c.prune(|k| *k == b), 1);
        assert!(
            c.generation(&a) > ga,
            "a cached answer for `a` must not match again"
        );
        assert!(c.generation(&never) > old_never);
        assert_eq!(c.generation(&b), gb, "kept services keep their generation");
        assert!(c.bump(&a) > c.generation(&never));
    }

    #[test]
    fn the_feed_hands_out_changes_after_a_cursor_once() {
        let c = Changes::new();
        let a = ServiceKey::new("public", "G", "a");
        let b = ServiceKey::new("public", "G", "b");
        let first = c.read(c.epoch(), 0);
        assert!(!first.reset);
        assert!(first.keys.is_empty());
        c.bump(&a);
        c.bump(&b);
        let page = c.read(c.epoch(), first.cursor);
        assert_eq!(page.keys, vec![a.clone(), b.clone()]);
        assert!(page.newest_ms > 0);
        let again = c.read(c.epoch(), page.cursor);
        assert!(again.keys.is_empty() && !again.reset);
        // A prune takes a generation without an event: nothing is reported, nothing reset.
        c.prune(|_| true);
        let after_prune = c.read(c.epoch(), page.cursor);
        assert!(after_prune.keys.is_empty() && !after_prune.reset);
        c.bump(&a);
        assert_eq!(c.read(c.epoch(), after_prune.cursor).keys, vec![a]);
    }

    #[test]
    fn readers_from_another_epoch_or_too_far_behind_reset() {
        let c = Changes::new();
        let a = ServiceKey::new("public", "G", "a");
        c.bump(&a);
        let other = c.read(c.epoch() ^ 2, 0);
        assert!(other.reset);
        assert_eq!(other.epoch, c.epoch());
        let ahead = c.read(c.epoch(), 1_000);
        assert!(
            ahead.reset,
            "a cursor from the future is another incarnation's"
        );
        for _ in 0..FEED_CAPACITY {
            c.bump(&a);
        }
        assert!(
            c.read(c.epoch(), 0).reset,
            "the first event fell out of the log"
        );
        assert!(!c.read(c.epoch(), 2).reset);
    }

    #[test]
    fn config_changes_share_the_feed_in_order_without_touching_service_generations() {
        let c = Changes::new();
        let start = c.read(c.epoch(), 0).cursor;
        let a = ServiceKey::new("public", "G", "a");
        let cfg = |d: &str, rev| ConfigChange {
            key: nacre_ring::configs::ConfigKey::new(d, "G", None).unwrap(),
            md5: "m".into(),
            revision: rev,
            beta: false,
        };
        let before = c.generation(&a);
        c.configs_changed(&[cfg("x", 7), cfg("y", 7)]);
        assert_eq!(c.generation(&a), before);
        c.bump(&a);
        let page = c.read(c.epoch(), start);
        assert_eq!(page.keys, vec![a]);
        assert_eq!(page.configs, vec![cfg("x", 7), cfg("y", 7)]);
        assert!(c.read(c.epoch(), page.cursor).configs.is_empty());
    }

    #[tokio::test]
    async fn a_waiting_reader_wakes_on_a_config_change() {
        let c = std::sync::Arc::new(Changes::new());
        let start = c.read(c.epoch(), 0).cursor;
        let c2 = c.clone();
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            c2.configs_changed(&[ConfigChange {
                key: nacre_ring::configs::ConfigKey::new("x", "G", None).unwrap(),
                md5: String::new(),
                revision: 3,
                beta: false,
            }]);
        });
        let page = c.wait_read(c.epoch(), start, Duration::from_secs(10)).await;
        assert_eq!(page.configs.len(), 1);
        writer.await.unwrap();
    }

    #[test]
    fn a_long_backlog_comes_in_batches_without_loss() {
        let c = Changes::new();
        c.read(c.epoch(), 0); // a reader follows from the start
        let n = FEED_BATCH + 10;
        for i in 0..n {
            c.bump(&ServiceKey::new("public", "G", format!("s{i}")));
        }
        let p1 = c.read(c.epoch(), 0);
        assert_eq!(p1.keys.len(), FEED_BATCH);
        let p2 = c.read(c.epoch(), p1.cursor);
        assert_eq!(p2.keys.len(), 10);
        assert_eq!(p2.keys[9].service, format!("s{}", n - 1));
    }

    #[test]
    fn nothing_is_logged_until_a_reader_comes() {
        let c = Changes::new();
        let a = ServiceKey::new("public", "G", "a");
        c.bump(&a);
        assert!(c.generations.read().log.is_empty());
        let first = c.read(c.epoch(), 0);
        assert!(first.reset, "a first reader always resets");
        c.bump(&a);
        assert_eq!(c.read(c.epoch(), first.cursor).keys, vec![a]);
        assert!(
            c.read(c.epoch(), 0).reset,
            "a cursor from before the log started"
        );
    }

    #[tokio::test]
    async fn a_waiting_reader_wakes_on_the_next_change() {
        let c = std::sync::Arc::new(Changes::new());
        let start = c.read(c.epoch(), 0).cursor;
        let c2 = c.clone();
        let bumper = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            c2.bump(&ServiceKey::new("public", "G", "late"));
        });
        let page = c.wait_read(c.epoch(), start, Duration::from_secs(10)).await;
        assert_eq!(page.keys.len(), 1);
        bumper.await.unwrap();
        let idle = c
            .wait_read(c.epoch(), page.cursor, Duration::from_millis(20))
            .await;
        assert!(idle.keys.is_empty() && !idle.reset);
    }
}
