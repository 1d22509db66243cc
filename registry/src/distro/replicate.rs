//! Pushing local changes of ephemeral services to every peer (Distro sync).
//!
//! A change only marks its service *pending* for each peer; a worker per peer drains the
//! pending set in batches. A change to one instance (a registration, a beat that revived it, a
//! patch, a removal, an expiry) marks that instance, and the peer gets a delta of the marked
//! instances; any other change marks the whole service (rule V2 in [`crate::distro`]). Marking
//! instead of queueing each change means a burst of changes to one instance costs one
//! transfer, and a peer's backlog is bounded by the number of distinct services (and at most
//! [`DELTA_LIMIT`] instances in each), never by the change rate. The set is also capped: when a
//! dead peer's backlog passes the cap it is dropped and the periodic verify repairs the peer
//! once it is back, so memory never grows without limit.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nacre_ring::ServiceKey;
use parking_lot::{Mutex, RwLock};
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::store::{EphemeralStore, ServiceRecord};
use super::wire::{SyncBatch, SyncReply, SYNC_PATH};
use crate::naming::model::InstanceKey;
use crate::peer::PeerClient;

/// Most instances of one service a peer is owed as a delta; past it the whole record goes,
/// which is then no dearer than the delta.
pub const DELTA_LIMIT: usize = 512;

/// What a peer is owed of one service.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pending {
    /// The whole record.
    Whole,
    /// A delta of these instances.
    Instances(HashSet<InstanceKey>),
}

impl Pending {
    fn of(id: Option<&InstanceKey>) -> Self {
        match id {
            Some(id) => Self::Instances(HashSet::from([id.clone()])),
            None => Self::Whole,
        }
    }

    /// Adds what `other` owes; whole wins, and so does a delta grown past [`DELTA_LIMIT`].
    fn absorb(&mut self, other: Pending) {
        match (&mut *self, other) {
            (Self::Whole, _) => {}
            (_, Self::Whole) => *self = Self::Whole,
            (Self::Instances(mine), Self::Instances(theirs)) => {
                mine.extend(theirs);
                self.cap();
            }
        }
    }

    fn add(&mut self, id: Option<&InstanceKey>) {
        match (&mut *self, id) {
            (Self::Whole, _) => {}
            (_, None) => *self = Self::Whole,
            (Self::Instances(ids), Some(id)) => {
                if !ids.contains(id) {
                    ids.insert(id.clone());
                    self.cap();
                }
            }
        }
    }

    fn cap(&mut self) {
        if matches!(self, Self::Instances(ids) if ids.len() > DELTA_LIMIT) {
            *self = Self::Whole;
        }
    }

    fn instances(&self) -> Option<&HashSet<InstanceKey>> {
        match self {
            Self::Whole => None,
            Self::Instances(ids) => Some(ids),
        }
    }
}

/// Tuning of the sync workers.
#[derive(Debug, Clone, Copy)]
pub struct SyncSettings {
    /// How long a worker waits after the first change before sending, to batch a burst.
    pub batch_window: Duration,
    /// Most services in one request.
    pub max_batch: usize,
    /// Most dirty services remembered per peer before the backlog is dropped.
    pub queue_capacity: usize,
    /// Time allowed for one sync request.
    pub timeout: Duration,
}

impl Default for SyncSettings {
    fn default() -> Self {
        Self {
            // No deliberate delay: changes made while a request is in flight already form the
            // next batch, and writers wait for the acknowledgement.
            batch_window: Duration::ZERO,
            max_batch: 1000,
            queue_capacity: 100_000,
            timeout: Duration::from_secs(3),
        }
    }
}

#[derive(Default)]
struct Backlog {
    dirty: HashMap<ServiceKey, Pending>,
    /// Counts marks; a writer waits until the peer has acknowledged its mark's number.
    seq: u64,
    /// When the oldest unsent change was marked (the peer's replication lag).
    oldest: Option<Instant>,
}

struct PeerQueue {
    backlog: Mutex<Backlog>,
    /// Highest mark number whose change the peer has acknowledged.
    acked: tokio::sync::watch::Sender<u64>,
    wake: Notify,
    stop: CancellationToken,
}

/// Metrics of Distro sync and verify.
#[derive(Clone)]
pub struct DistroMetrics {
    /// Dirty services waiting per peer.
    pub queue_depth: IntGaugeVec,
    /// Age of the oldest unsent change per peer (ms).
    pub lag_ms: IntGaugeVec,
    /// Sync requests by peer and result.
    pub syncs: IntCounterVec,
    /// Backlogs dropped because a peer fell too far behind.
    pub dropped: IntCounterVec,
    /// Records received from peers, by outcome: `applied`, `stale`, or `merged` (this node
    /// held something the sender lacked and sent its copy back).
    pub received: IntCounterVec,
    /// Verify mismatches found, by how they were repaired.
    pub verify_repairs: IntCounterVec,
    /// Client writes forwarded to the owner, by result.
    pub forwards: IntCounterVec,
    /// Client writes applied here, by when they were answered (rule V3): `peers` after the
    /// live peers acknowledged them, `applied` at once (a gateway routed them by owner).
    pub write_acks: IntCounterVec,
}

impl DistroMetrics {
    /// Creates and registers the metrics.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let queue_depth = IntGaugeVec::new(
            Opts::new(
                "nacre_distro_queue_depth",
                "Services waiting to be synced, per peer",
            ),
            &["peer"],
        )?;
        let lag_ms = IntGaugeVec::new(
            Opts::new(
                "nacre_distro_lag_ms",
                "Age of the oldest change not yet synced to a peer (ms)",
            ),
            &["peer"],
        )?;
        let syncs = IntCounterVec::new(
            Opts::new(
                "nacre_distro_syncs_total",
                "Distro sync requests, by peer and result",
            ),
            &["peer", "result"],
        )?;
        let dropped = IntCounterVec::new(
            Opts::new(
                "nacre_distro_backlog_dropped_total",
                "Peer backlogs dropped at the queue cap (verify repairs the peer)",
            ),
            &["peer"],
        )?;
        let received = IntCounterVec::new(
            Opts::new(
                "nacre_distro_records_received_total",
                "Service records received from peers, by outcome",
            ),
            &["outcome"],
        )?;
        let verify_repairs = IntCounterVec::new(
            Opts::new(
                "nacre_distro_verify_repairs_total",
                "Divergent services found by verify, by repair",
            ),
            &["repair"],
        )?;
        let forwards = IntCounterVec::new(
            Opts::new(
                "nacre_forwards_total",
                "Client writes for services owned elsewhere, by result",
            ),
            &["result"],
        )?;
        let write_acks = IntCounterVec::new(
            Opts::new(
                "nacre_distro_write_acks_total",
                "Client instance writes applied here, by what their answer waited for",
            ),
            &["ack"],
        )?;
        for m in [&queue_depth, &lag_ms] {
            registry.register(Box::new(m.clone()))?;
        }
        for m in [
            &syncs,
            &dropped,
            &received,
            &verify_repairs,
            &forwards,
            &write_acks,
        ] {
            registry.register(Box::new(m.clone()))?;
        }
        Ok(Self {
            queue_depth,
            lag_ms,
            syncs,
            dropped,
            received,
            verify_repairs,
            forwards,
            write_acks,
        })
    }
}

/// One peer's replication backlog (see [`Replicator::backlogs`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerBacklog {
    /// The peer's address.
    pub peer: String,
    /// Services changed here and not yet acknowledged by the peer.
    pub depth: usize,
    /// Age of the oldest of those changes, in ms (0 when there is none).
    pub oldest_ms: u64,
}

/// Sends this node's ephemeral changes to its peers.
pub struct Replicator {
    self_addr: String,
    store: Arc<EphemeralStore>,
    client: PeerClient,
    settings: SyncSettings,
    metrics: DistroMetrics,
    peers: RwLock<HashMap<String, Arc<PeerQueue>>>,
    stop: CancellationToken,
    workers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Replicator {
    /// A replicator with no peers yet; `stop` ends every worker.
    pub fn new(
        self_addr: String,
        store: Arc<EphemeralStore>,
        client: PeerClient,
        settings: SyncSettings,
        metrics: DistroMetrics,
        stop: CancellationToken,
    ) -> Self {
        Self {
            self_addr,
            store,
            client,
            settings,
            metrics,
            peers: RwLock::new(HashMap::new()),
            stop,
            workers: Mutex::new(Vec::new()),
        }
    }

    /// The metrics (shared with verify and forwarding).
    pub fn metrics(&self) -> &DistroMetrics {
        &self.metrics
    }

    /// Each peer's replication backlog now: services waiting to be sent and the age of the
    /// oldest unsent change, sorted by peer (for operators; the same figures as the
    /// `nacre_distro_queue_depth` and `nacre_distro_lag_ms` gauges, read at this instant).
    pub fn backlogs(&self) -> Vec<PeerBacklog> {
        let mut out: Vec<PeerBacklog> = self
            .peers
            .read()
            .iter()
            .map(|(addr, q)| {
                let b = q.backlog.lock();
                PeerBacklog {
                    peer: addr.clone(),
                    depth: b.dirty.len(),
                    oldest_ms: b.oldest.map_or(0, |t| {
                        u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)
                    }),
                }
            })
            .collect();
        out.sort_by(|a, b| a.peer.cmp(&b.peer));
        out
    }

    /// Makes the worker set match `peers`: new peers get a worker, removed ones are stopped.
    pub fn set_peers(self: &Arc<Self>, peers: &[String]) {
        let mut map = self.peers.write();
        map.retain(|addr, q| {
            let keep = peers.contains(addr);
            if !keep {
                q.stop.cancel();
                let _ = self.metrics.queue_depth.remove_label_values(&[addr]);
                let _ = self.metrics.lag_ms.remove_label_values(&[addr]);
            }
            keep
        });
        for addr in peers {
            if *addr == self.self_addr || map.contains_key(addr) {
                continue;
            }
            let q = Arc::new(PeerQueue {
                backlog: Mutex::new(Backlog::default()),
                acked: tokio::sync::watch::channel(0).0,
                wake: Notify::new(),
                stop: self.stop.child_token(),
            });
            map.insert(addr.clone(), q.clone());
            let me = self.clone();
            let addr = addr.clone();
            let handle = tokio::spawn(tracing::Instrument::in_current_span(async move {
                me.worker(addr, q).await
            }));
            let mut workers = self.workers.lock();
            workers.retain(|h| !h.is_finished());
            workers.push(handle);
        }
    }

    /// Marks `key` changed for every peer: the whole service, or only instance `id`.
    pub fn changed(&self, key: &ServiceKey, id: Option<&InstanceKey>) {
        // Under the read lock: this runs on every write, and copying the peer list each time
        // would cost an allocation per peer. `mark` only takes the peer's own backlog lock.
        for (addr, q) in self.peers.read().iter() {
            self.mark(addr, q, key, id);
        }
    }

    /// Marks `key` changed for every peer and waits (at most `timeout`) until each peer for
    /// which `wait_for` holds has acknowledged it. A client that writes through one node and
    /// reads through another — legacy clients pick a server per request — then reads its own
    /// write. Peers that are slow or down only delay the answer up to `timeout`:
    /// availability first.
    pub async fn changed_and_wait(
        &self,
        key: &ServiceKey,
        id: Option<&InstanceKey>,
        wait_for: impl Fn(&str) -> bool,
        timeout: Duration,
    ) {
        let mut waits = Vec::new();
        for (addr, q) in self.peers.read().iter() {
            let n = self.mark(addr, q, key, id);
            if wait_for(addr) {
                waits.push((q.acked.subscribe(), n));
            }
        }
        let all = futures::future::join_all(waits.into_iter().map(|(mut rx, n)| async move {
            let _ = rx.wait_for(|acked| *acked >= n).await;
        }));
        let _ = tokio::time::timeout(timeout, all).await;
    }

    /// Marks the whole of `key` changed for one peer (verify found it behind, or the peer
    /// asked for it).
    pub fn changed_for(&self, peer: &str, key: &ServiceKey) {
        let q = self.peers.read().get(peer).cloned();
        if let Some(q) = q {
            self.mark(peer, &q, key, None);
        }
    }

    fn mark(&self, addr: &str, q: &PeerQueue, key: &ServiceKey, id: Option<&InstanceKey>) -> u64 {
        let mut b = q.backlog.lock();
        b.seq += 1;
        let n = b.seq;
        if let Some(pending) = b.dirty.get_mut(key) {
            pending.add(id);
        } else {
            if b.dirty.len() >= self.settings.queue_capacity {
                tracing::warn!(peer = %addr, dropped = b.dirty.len(), "distro backlog for peer is full; dropping it, verify will repair the peer");
                self.metrics.dropped.with_label_values(&[addr]).inc();
                b.dirty.clear();
                b.oldest = None;
            }
            b.dirty.insert(key.clone(), Pending::of(id));
            if b.oldest.is_none() {
                b.oldest = Some(Instant::now());
            }
        }
        self.metrics
            .queue_depth
            .with_label_values(&[addr])
            .set(b.dirty.len() as i64);
        drop(b);
        q.wake.notify_one();
        n
    }

    /// Sends the current records of `keys` to `peer` right away, bypassing the backlog: verify
    /// repairs must not be lost to the very cap whose overflow they repair.
    pub async fn send_now(&self, peer: &str, keys: &[ServiceKey]) -> Result<(), String> {
        for chunk in keys.chunks(self.settings.max_batch.max(1)) {
            let records = self.store.export_changes(chunk.iter().map(|k| (k, None)));
            let result = self.send(peer, records).await;
            let outcome = if result.is_ok() { "ok" } else { "error" };
            self.metrics.syncs.with_label_values(&[peer, outcome]).inc();
            result?;
        }
        Ok(())
    }

    /// Waits for every worker to end (after `stop` was cancelled).
    pub async fn stopped(&self) {
        let handles: Vec<_> = std::mem::take(&mut *self.workers.lock());
        let aborts: Vec<_> = handles.iter().map(|h| h.abort_handle()).collect();
        let all = futures::future::join_all(handles);
        if tokio::time::timeout(Duration::from_secs(3), all)
            .await
            .is_err()
        {
            tracing::warn!("distro sync workers did not stop in time; aborting them");
            aborts.iter().for_each(|a| a.abort());
        }
    }

    async fn worker(self: Arc<Self>, addr: String, q: Arc<PeerQueue>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            tokio::select! {
                _ = q.stop.cancelled() => return,
                _ = q.wake.notified() => {}
            }
            if !self.settings.batch_window.is_zero() {
                // Let a burst of changes accumulate into one request.
                tokio::select! {
                    _ = q.stop.cancelled() => return,
                    _ = tokio::time::sleep(self.settings.batch_window) => {}
                }
            }
            loop {
                let (items, since, covers) = {
                    let mut b = q.backlog.lock();
                    let items: Vec<(ServiceKey, Pending)> =
                        if b.dirty.len() <= self.settings.max_batch {
                            b.dirty.drain().collect()
                        } else {
                            let keys: Vec<ServiceKey> = b
                                .dirty
                                .keys()
                                .take(self.settings.max_batch)
                                .cloned()
                                .collect();
                            keys.into_iter()
                                .filter_map(|k| b.dirty.remove_entry(&k))
                                .collect()
                        };
                    let since = b.oldest;
                    b.oldest = if b.dirty.is_empty() { None } else { since };
                    // Once this batch lands, every mark so far has reached the peer, unless
                    // keys are still waiting for a later batch.
                    let covers = b.dirty.is_empty().then_some(b.seq);
                    (items, since, covers)
                };
                if items.is_empty() {
                    self.metrics.lag_ms.with_label_values(&[&addr]).set(0);
                    self.metrics.queue_depth.with_label_values(&[&addr]).set(0);
                    break;
                }
                let records = self
                    .store
                    .export_changes(items.iter().map(|(k, p)| (k, p.instances())));
                match self.send(&addr, records).await {
                    Ok(want) => {
                        // Deltas that created the service there: it wants the whole record.
                        for k in &want {
                            self.mark(&addr, &q, k, None);
                        }
                        backoff = Duration::from_millis(100);
                        self.metrics.syncs.with_label_values(&[&addr, "ok"]).inc();
                        if let Some(n) = covers {
                            q.acked.send_if_modified(|a| {
                                let newer = n > *a;
                                *a = (*a).max(n);
                                newer
                            });
                        }
                    }
                    Err(e) => {
                        self.metrics
                            .syncs
                            .with_label_values(&[&addr, "error"])
                            .inc();
                        tracing::debug!(peer = %addr, error = %e, "distro sync failed; will retry");
                        self.requeue(&addr, &q, items, since);
                        tokio::select! {
                            _ = q.stop.cancelled() => return,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                        continue;
                    }
                }
                if let Some(t) = since {
                    self.metrics
                        .lag_ms
                        .with_label_values(&[&addr])
                        .set(t.elapsed().as_millis() as i64);
                }
            }
        }
    }

    fn requeue(
        &self,
        addr: &str,
        q: &PeerQueue,
        items: Vec<(ServiceKey, Pending)>,
        since: Option<Instant>,
    ) {
        let mut b = q.backlog.lock();
        if b.dirty.len() + items.len() > self.settings.queue_capacity {
            self.metrics.dropped.with_label_values(&[addr]).inc();
            b.dirty.clear();
            b.oldest = None;
            return;
        }
        for (k, p) in items {
            match b.dirty.entry(k) {
                std::collections::hash_map::Entry::Occupied(mut e) => e.get_mut().absorb(p),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(p);
                }
            }
        }
        b.oldest = match (b.oldest, since) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.metrics
            .queue_depth
            .with_label_values(&[addr])
            .set(b.dirty.len() as i64);
        if let Some(t) = b.oldest {
            self.metrics
                .lag_ms
                .with_label_values(&[addr])
                .set(t.elapsed().as_millis() as i64);
        }
    }

    /// Sends `records`; returns the services the peer asked to get whole.
    async fn send(
        &self,
        addr: &str,
        records: Vec<ServiceRecord>,
    ) -> Result<Vec<ServiceKey>, String> {
        let batch = SyncBatch {
            from: self.self_addr.clone(),
            records,
        };
        self.client
            .post_json::<_, SyncReply>(addr, SYNC_PATH, &batch, self.settings.timeout)
            .await
            .map(|reply| reply.want)
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: usize) -> InstanceKey {
        InstanceKey {
            ip: format!("10.0.{}.{}", n / 256, n % 256).into(),
            port: 80,
            cluster: "DEFAULT".into(),
        }
    }

    #[test]
    fn v2_pending_instances_accumulate_until_the_whole_record_is_cheaper() {
        let mut p = Pending::of(Some(&id(0)));
        p.add(Some(&id(0)));
        p.add(Some(&id(1)));
        assert_eq!(p, Pending::Instances(HashSet::from([id(0), id(1)])));
        // A failed batch comes back and joins what was marked meanwhile.
        p.absorb(Pending::Instances(HashSet::from([id(2)])));
        assert_eq!(p.instances().map(HashSet::len), Some(3));
        for n in 3..DELTA_LIMIT {
            p.add(Some(&id(n)));
        }
        assert_eq!(p.instances().map(HashSet::len), Some(DELTA_LIMIT));
        p.add(Some(&id(DELTA_LIMIT)));
        assert_eq!(p, Pending::Whole);
        // Whole stays whole; a service-level change makes a delta whole.
        p.add(Some(&id(0)));
        assert_eq!(p, Pending::Whole);
        let mut q = Pending::of(Some(&id(0)));
        q.add(None);
        assert_eq!(q, Pending::Whole);
        let mut r = Pending::of(Some(&id(0)));
        r.absorb(Pending::Whole);
        assert_eq!(r, Pending::Whole);
    }
}
