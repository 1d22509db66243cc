//! Ephemeral (AP) instance data and its Distro-style replication.
//!
//! [`store`] holds the data with versions; [`replicate`] pushes local changes to peers within
//! milliseconds; [`verify`] compares digests periodically and repairs what pushes missed; the
//! wire messages live in [`wire`]. [`Distro`] ties them to the membership view: it decides
//! which services this node owns (and so expires), applies what peers send, and loads a full
//! snapshot from peers before a starting node reports ready.

pub mod replicate;
pub mod store;
pub mod verify;
pub mod wire;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nacre_ring::{Ring, ServiceKey};

pub use replicate::{DistroMetrics, Replicator, SyncSettings};
pub use store::{BeatOutcome, Digest, EphemeralStore, Expiry, ExpiryKind, ServiceRecord};

use crate::membership::Membership;
use crate::peer::PeerClient;

/// Longest a client write waits for live peers to acknowledge it.
pub const WRITE_ACK_TIMEOUT: Duration = Duration::from_millis(500);

/// Timing of the cluster side of Distro.
#[derive(Debug, Clone, Copy)]
pub struct DistroSettings {
    /// Sync batching and queue bounds.
    pub sync: SyncSettings,
    /// Time between two verify rounds.
    pub verify_interval: Duration,
    /// Time allowed to fetch a snapshot from one peer at start-up.
    pub snapshot_timeout: Duration,
}

impl Default for DistroSettings {
    fn default() -> Self {
        Self {
            sync: SyncSettings::default(),
            verify_interval: Duration::from_secs(5),
            snapshot_timeout: Duration::from_secs(30),
        }
    }
}

/// The cluster parts of Distro: present only when the node has peers.
pub struct DistroCluster {
    /// Pushes local changes.
    pub replicator: Arc<Replicator>,
    /// The shared peer client.
    pub client: PeerClient,
    /// Timing.
    pub settings: DistroSettings,
}

/// The ephemeral side of a node.
pub struct Distro {
    store: Arc<EphemeralStore>,
    membership: Arc<Membership>,
    cluster: Option<DistroCluster>,
    loaded: AtomicBool,
}

impl Distro {
    /// A standalone node's Distro: a store and nothing to replicate to.
    pub fn standalone(membership: Arc<Membership>) -> Self {
        Self {
            store: Arc::new(EphemeralStore::new()),
            membership,
            cluster: None,
            loaded: AtomicBool::new(true),
        }
    }

    /// A cluster member's Distro; [`Distro::load_snapshot`] must run before it is ready.
    pub fn clustered(
        store: Arc<EphemeralStore>,
        membership: Arc<Membership>,
        cluster: DistroCluster,
    ) -> Self {
        Self {
            store,
            membership,
            cluster: Some(cluster),
            loaded: AtomicBool::new(false),
        }
    }

    /// The local store.
    pub fn store(&self) -> &EphemeralStore {
        &self.store
    }

    /// The membership view.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The cluster parts, when clustered.
    pub fn cluster(&self) -> Option<&DistroCluster> {
        self.cluster.as_ref()
    }

    /// Whether the start-up snapshot has been loaded (always true when standalone).
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Every record held, for a starting peer; `None` while this node is loading its own
    /// snapshot (what it holds may be incomplete).
    pub fn snapshot(&self) -> Option<Vec<ServiceRecord>> {
        self.is_loaded().then(|| self.store.export_all())
    }

    /// Records a local change of `key` for replication.
    pub fn local_change(&self, key: &ServiceKey) {
        if let Some(c) = &self.cluster {
            c.replicator.changed(key);
        }
    }

    /// Records a client's write of `key` and waits until live peers have it (bounded), so the
    /// client can read it from any node next.
    pub async fn local_change_acked(&self, key: &ServiceKey) {
        if let Some(c) = &self.cluster {
            let membership = &self.membership;
            c.replicator
                .changed_and_wait(key, |peer| membership.is_live(peer), WRITE_ACK_TIMEOUT)
                .await;
        }
    }

    /// Applies records from a peer; returns the keys that changed here.
    pub fn apply_remote(&self, records: Vec<ServiceRecord>, now_ms: u64) -> Vec<ServiceKey> {
        let mut changed = Vec::new();
        for r in records {
            let key = r.key.clone();
            let applied = self.store.apply_remote(r, now_ms);
            if let Some(c) = &self.cluster {
                let outcome = if applied { "applied" } else { "stale" };
                c.replicator
                    .metrics()
                    .received
                    .with_label_values(&[outcome])
                    .inc();
            }
            if applied {
                changed.push(key);
            }
        }
        changed
    }

    /// Runs one expiry sweep over the services this node owns.
    pub fn sweep(&self, now_ms: u64) -> Vec<Expiry> {
        let ring = self.membership.ring();
        let me = self.membership.self_addr();
        let standalone = self.membership.is_standalone();
        self.store
            .sweep_owned(now_ms, |k| standalone || ring.owner(k) == Some(me))
    }

    /// Grants grace to services this node owns under `new` but did not under `old`.
    pub fn ownership_moved(&self, old: &Ring, new: &Ring, now_ms: u64) -> usize {
        let me = self.membership.self_addr();
        self.store.grant_grace(now_ms, |k| {
            new.owner(k) == Some(me) && old.owner(k) != Some(me)
        })
    }

    /// Loads the snapshot of the first peer that has one to give, then marks the store loaded.
    /// A peer that is itself still loading refuses (see [`Distro::snapshot`]), so one full
    /// transfer from a loaded peer suffices; when no peer has one (the whole cluster starting
    /// together) there is nothing to load, and verify repairs any difference later.
    pub async fn load_snapshot(&self, now_ms: impl Fn() -> u64) -> usize {
        let Some(c) = &self.cluster else {
            self.loaded.store(true, Ordering::Release);
            return 0;
        };
        let mut total = 0;
        for peer in self.membership.peers() {
            match c
                .client
                .get_json::<Vec<ServiceRecord>>(
                    &peer,
                    wire::SNAPSHOT_PATH,
                    c.settings.snapshot_timeout,
                )
                .await
            {
                Ok(records) => {
                    let n = records.len();
                    total = self.apply_remote(records, now_ms()).len();
                    tracing::info!(peer = %peer, services = n, applied = total, "loaded distro snapshot");
                    break;
                }
                Err(e) => {
                    tracing::info!(peer = %peer, error = %e, "no distro snapshot from peer");
                }
            }
        }
        self.loaded.store(true, Ordering::Release);
        total
    }
}
