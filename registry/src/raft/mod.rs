//! The Raft-replicated (CP) persistent store of a node: openraft over SQLite and HTTP.
//!
//! [`PersistentStore`] is the one handle the rest of the node uses: it proposes
//! [`Command`]s on the leader ([`PersistentStore::write`]), answers reads from the local,
//! already-applied state without touching disk ([`PersistentStore::read`]), reports readiness and
//! status, and serves the internal Raft routes ([`PersistentStore::router`]). Storage lives in
//! [`store`], transport in [`network`], openraft's type configuration in [`types`].

pub mod cluster;
pub mod network;
mod peer_applied;
pub mod propose;
pub mod store;
mod tail;
pub mod types;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, Fatal, InitializeError, RaftError};
use openraft::{BasicNode, ServerState, SnapshotPolicy};
use parking_lot::RwLock;

use crate::naming::persistent::{Command, CommandResult, PersistentState};
use store::{CommitIndex, DbError, DB_FILE};
use types::{NodeId, Raft};

pub use store::ChangeCallback;

/// How long [`PersistentStore::write`] waits for a commit before answering `Unavailable`.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Default number of applied entries between two snapshots.
pub const DEFAULT_SNAPSHOT_LOGS_SINCE_LAST: u64 = 5000;

/// Default number of log entries kept behind a snapshot, so a briefly lagging follower catches
/// up from the log instead of receiving a whole snapshot.
pub const DEFAULT_LOGS_KEPT_AFTER_SNAPSHOT: u64 = 200;

/// Default shortest election timeout (ms): failover in about a second (see [`election_timers`]).
pub const DEFAULT_ELECTION_TIMEOUT_MS: u64 = 400;

/// openraft's `(heartbeat_interval, election_timeout_min, election_timeout_max)` for a shortest
/// election timeout of `min` ms.
///
/// openraft ties four things to these values, and the ratios balance them:
/// - a follower that knows a leader starts an election only after the leader's lease
///   (`election_timeout_max`) **plus** its own timeout, drawn once per process from
///   `[min, max]`, checked on a tick of 1.5 heartbeats;
/// - a vote request times out after `min`;
/// - an append-entries request (heartbeats and replication alike) times out after one
///   heartbeat interval.
///
/// With heartbeats every `min / 4` and `max = 3/2 min`, a dead leader is replaced after
/// `2.5 … 3 × min` plus one tick and a vote round trip: 1.0–1.35 s for the default 400 ms,
/// inside the 1.5 s failover goal, while a vote may take 400 ms and an append 100 ms before
/// openraft gives up on it. Shorter values were tried under the fault suite's load (debug
/// build, five processes on two cores): at 250 ms, votes timing out after 250 ms made some
/// elections take several rounds (1.9 s failovers), and 41 ms append timeouts would cut
/// replication short under load. A false election needs a follower to miss every heartbeat
/// for ten intervals, and the other voters still refuse it while their own lease runs.
pub fn election_timers(min: u64) -> (u64, u64, u64) {
    let min = min.max(60);
    (min / 4, min, min * 3 / 2)
}

/// How a node runs its Raft store.
#[derive(Debug, Clone)]
pub struct RaftSettings {
    /// Directory holding `nacre.db` and `node-id`; created when missing.
    pub data_dir: PathBuf,
    /// `host:port` of this node's HTTP listener, as peers reach it.
    pub advertise: String,
    /// Shared secret that internal Raft calls must carry.
    pub cluster_secret: String,
    /// A single-node cluster: initializes itself as the only voter on first start.
    pub standalone: bool,
    /// Observes the latency of committed writes, from `write` start to result, in seconds.
    pub apply_latency: Option<prometheus::Histogram>,
    /// Applied entries between two snapshots (log compaction); must be at least 1.
    pub snapshot_logs_since_last: u64,
    /// Log entries kept behind the latest snapshot when the log is purged.
    pub logs_kept_after_snapshot: u64,
    /// Shortest election timeout (ms); see [`election_timers`].
    pub election_timeout_ms: u64,
    /// Where the other members answer now (a member that moved keeps its id); by default
    /// nobody is located and the addresses Raft stores are used.
    pub locator: network::Locator,
    /// Whether every member reads packed entries (rule B7 of [`propose`]); open by default.
    pub batch_gate: propose::BatchGate,
}

impl RaftSettings {
    /// Settings with the default snapshot policy and no latency histogram.
    pub fn new(
        data_dir: impl Into<PathBuf>,
        advertise: impl Into<String>,
        cluster_secret: impl Into<String>,
        standalone: bool,
    ) -> Self {
        Self {
            data_dir: data_dir.into(),
            advertise: advertise.into(),
            cluster_secret: cluster_secret.into(),
            standalone,
            apply_latency: None,
            snapshot_logs_since_last: DEFAULT_SNAPSHOT_LOGS_SINCE_LAST,
            logs_kept_after_snapshot: DEFAULT_LOGS_KEPT_AFTER_SNAPSHOT,
            election_timeout_ms: DEFAULT_ELECTION_TIMEOUT_MS,
            locator: network::Locator::default(),
            batch_gate: propose::BatchGate::default(),
        }
    }
}

/// Why the store could not start. Every variant is fatal for the node.
#[derive(Debug, thiserror::Error)]
pub enum RaftStartError {
    /// The data dir or its node-id file is unusable.
    #[error("data dir {path}: {source}")]
    DataDir {
        /// The offending path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The SQLite database could not be opened or read.
    #[error("database {path}: {source}")]
    Storage {
        /// The database file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: DbError,
    },
    /// The derived openraft configuration is invalid (e.g. a zero snapshot interval).
    #[error("invalid raft settings: {0}")]
    Config(String),
    /// The HTTP client for peers could not be built.
    #[error("raft network: {0}")]
    Network(String),
    /// openraft failed to start or initialize.
    #[error("raft: {0}")]
    Raft(String),
}

/// Why a write was not applied; each variant says what the caller should do next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum WriteError {
    /// This node is not the leader: forward to `leader` (`host:port`) when known, else retry.
    #[error("not the raft leader (leader: {leader:?})")]
    NotLeader {
        /// The leader's advertised address, when known.
        leader: Option<String>,
    },
    /// No quorum or the commit timed out: retry later. A timed-out write may still commit.
    #[error("raft unavailable: {0}")]
    Unavailable(String),
    /// The Raft node is broken (storage failure); the node must be restarted.
    #[error("raft fatal error: {0}")]
    Fatal(String),
}

/// A point-in-time view of the Raft node, for metrics and the cluster API.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RaftStatus {
    /// This node's Raft id.
    pub node_id: u64,
    /// Current term.
    pub term: u64,
    /// "Leader", "Follower", "Candidate", "Learner" or "Shutdown".
    pub role: String,
    /// The leader's advertised address, when known.
    pub leader: Option<String>,
    /// Highest committed log index known to this node.
    pub commit_index: Option<u64>,
    /// Highest log index applied to the local state.
    pub last_applied: Option<u64>,
    /// Highest log index in the local log.
    pub last_log_index: Option<u64>,
    /// Last log index covered by the latest snapshot.
    pub snapshot_index: Option<u64>,
    /// Highest purged (compacted away) log index.
    pub purged_index: Option<u64>,
    /// Current members (voters and learners): id → advertised address.
    pub members: BTreeMap<u64, String>,
    /// Snapshots built here since start.
    pub snapshots_built: u64,
    /// Snapshots received from a leader and installed since start.
    pub snapshots_installed: u64,
}

/// Route on which the leader accepts commands forwarded by followers.
pub const WRITE_PATH: &str = "/nacre/internal/raft/write";
/// Route on which the leader answers its read index (a commit index confirmed by a quorum).
pub const READ_INDEX_PATH: &str = "/nacre/internal/raft/read-index";
/// Route on which a node answers once it has applied a log index (or a short wait passed).
pub const APPLIED_PATH: &str = "/nacre/internal/raft/applied";
/// How long a write waits for the other members to apply it (read-your-writes from any node;
/// a slow or dead member costs this much latency, never the write).
const PEER_APPLY_WAIT: Duration = Duration::from_millis(500);

/// A committed write as the leader reports it to a forwarding follower.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Committed {
    /// The command's own outcome.
    pub result: CommandResult,
    /// Log index of the entry, so the follower can wait until it has applied it too.
    pub index: u64,
}

struct Inner {
    raft: Raft,
    /// Packs concurrent proposals into shared entries (see [`propose`]).
    proposer: propose::Proposer,
    /// One "applied yet?" ask per member for all concurrent writes (see [`peer_applied`]).
    peer_applied: peer_applied::PeerApplied,
    node_id: NodeId,
    advertise: String,
    peer: crate::peer::PeerClient,
    state: Arc<RwLock<PersistentState>>,
    commit_index: Arc<CommitIndex>,
    snapshots: Arc<store::SnapshotCounts>,
    secret: String,
    apply_latency: Option<prometheus::Histogram>,
    /// Set once this node has applied everything committed when it started: see
    /// [`PersistentStore::catch_up`].
    caught_up: std::sync::atomic::AtomicBool,
    locator: network::Locator,
}

/// The node's persistent store handle. Cheap to clone.
#[derive(Clone)]
pub struct PersistentStore {
    inner: Arc<Inner>,
}

fn role_name(s: ServerState) -> &'static str {
    match s {
        ServerState::Leader => "Leader",
        ServerState::Follower => "Follower",
        ServerState::Candidate => "Candidate",
        ServerState::Learner => "Learner",
        ServerState::Shutdown => "Shutdown",
    }
}

impl PersistentStore {
    /// Opens `<data_dir>/nacre.db`, starts openraft and, in standalone mode, makes this node
    /// the single voter of a fresh cluster (a no-op once initialized, e.g. after a restart).
    pub async fn start(
        settings: RaftSettings,
        on_change: ChangeCallback,
    ) -> Result<Self, RaftStartError> {
        let data_dir = settings.data_dir.clone();
        let node_id = tokio::task::spawn_blocking(move || types::load_or_create_node_id(&data_dir))
            .await
            .map_err(|e| RaftStartError::Raft(format!("node id task: {e}")))?
            .map_err(|source| RaftStartError::DataDir {
                path: settings.data_dir.clone(),
                source,
            })?;

        let (heartbeat_interval, election_timeout_min, election_timeout_max) =
            election_timers(settings.election_timeout_ms);
        let config = openraft::Config {
            cluster_name: "nacre".into(),
            heartbeat_interval,
            election_timeout_min,
            election_timeout_max,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(settings.snapshot_logs_since_last),
            max_in_snapshot_log_to_keep: settings.logs_kept_after_snapshot,
            // JSON inflates the chunk about 3.6×; stays well inside network::MAX_BODY_BYTES.
            snapshot_max_chunk_size: 1024 * 1024,
            ..Default::default()
        };
        if settings.snapshot_logs_since_last == 0 {
            return Err(RaftStartError::Config(
                "snapshot_logs_since_last must be at least 1".into(),
            ));
        }
        let config = Arc::new(
            config
                .validate()
                .map_err(|e| RaftStartError::Config(e.to_string()))?,
        );

        let db_path = settings.data_dir.join(DB_FILE);
        let store =
            store::open(&db_path, on_change)
                .await
                .map_err(|source| RaftStartError::Storage {
                    path: db_path.clone(),
                    source,
                })?;
        let peer = crate::peer::PeerClient::new(&settings.cluster_secret)
            .map_err(RaftStartError::Network)?;
        let network = network::HttpNetworkFactory::new(
            node_id,
            &settings.cluster_secret,
            settings.locator.clone(),
        )
        .map_err(|e| RaftStartError::Network(e.to_string()))?;
        let raft = Raft::new(node_id, config, network, store.log, store.state_machine)
            .await
            .map_err(|e| RaftStartError::Raft(e.to_string()))?;

        if settings.standalone {
            let members = BTreeMap::from([(node_id, BasicNode::new(&settings.advertise))]);
            match raft.initialize(members).await {
                Ok(()) => tracing::info!(node_id, "initialized a standalone raft cluster"),
                // Already initialized (a restart): the stored membership stands.
                Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(e) => {
                    let _ = raft.shutdown().await;
                    return Err(RaftStartError::Raft(format!("initialize: {e}")));
                }
            }
        }

        Ok(Self {
            inner: Arc::new(Inner {
                proposer: propose::Proposer::start(raft.clone(), settings.batch_gate.clone()),
                peer_applied: peer_applied::PeerApplied::default(),
                raft,
                node_id,
                advertise: settings.advertise,
                peer,
                state: store.state,
                commit_index: store.commit_index,
                snapshots: store.snapshots,
                secret: settings.cluster_secret,
                apply_latency: settings.apply_latency,
                caught_up: std::sync::atomic::AtomicBool::new(false),
                locator: settings.locator,
            }),
        })
    }

    /// Proposes `cmd` and waits (up to [`WRITE_TIMEOUT`]) until it is committed and applied
    /// here. A follower forwards the command to the leader and then waits until it has applied
    /// the entry itself, so a client reads its own write from any node. While no leader is
    /// known (an election), it retries until the deadline. `Ok` carries the command's own
    /// outcome, which may be a replicated rejection.
    pub async fn write(&self, cmd: Command) -> Result<CommandResult, WriteError> {
        let deadline = tokio::time::Instant::now() + WRITE_TIMEOUT;
        let started = Instant::now();
        let mut last_err;
        loop {
            let attempt = tokio::time::timeout_at(deadline, self.write_once(cmd.clone())).await;
            match attempt {
                Err(_) => {
                    return Err(WriteError::Unavailable(format!(
                        "no commit within {WRITE_TIMEOUT:?}"
                    )))
                }
                Ok(Ok(committed)) => {
                    // Legacy clients send each request to any server: the next read may go to
                    // another member, so it must have applied the write too.
                    self.wait_peers_applied(committed.index).await;
                    // Only committed writes are observed: fast refusals would otherwise drag
                    // the latency distribution towards zero.
                    if let Some(h) = &self.inner.apply_latency {
                        h.observe(started.elapsed().as_secs_f64());
                    }
                    return Ok(committed.result);
                }
                Ok(Err(e @ WriteError::Fatal(_))) => return Err(e),
                Ok(Err(e)) => last_err = e,
            }
            if tokio::time::Instant::now() + Duration::from_millis(100) >= deadline {
                return Err(last_err);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn write_once(&self, cmd: Command) -> Result<Committed, WriteError> {
        match self.write_local(cmd.clone()).await {
            Err(WriteError::NotLeader {
                leader: Some(leader),
            }) if leader != self.inner.advertise => {
                let committed: Result<Committed, WriteError> = self
                    .inner
                    .peer
                    .post_json(&leader, WRITE_PATH, &cmd, WRITE_TIMEOUT)
                    .await
                    .map_err(|e| WriteError::Unavailable(format!("forwarding to leader: {e}")))?;
                let committed = committed?;
                self.wait_applied(committed.index).await;
                Ok(committed)
            }
            other => other,
        }
    }

    /// Asks every other member to confirm it has applied `index`, each waiting at most
    /// [`PEER_APPLY_WAIT`]; failures are ignored (the member catches up on its own).
    async fn wait_peers_applied(&self, index: u64) {
        let peers: Vec<String> = {
            let m = self.inner.raft.metrics();
            let m = m.borrow();
            m.membership_config
                .membership()
                .nodes()
                .filter(|(id, _)| **id != self.inner.node_id)
                .filter_map(|(id, n)| self.address_of(*id, Some(n)))
                .collect()
        };
        let wait = PEER_APPLY_WAIT + Duration::from_millis(100);
        let deadline = tokio::time::Instant::now() + wait;
        let asks = peers.iter().map(|addr| {
            let ask = move |i: u64| {
                let path = format!("{APPLIED_PATH}?index={i}");
                async move {
                    let peer = &self.inner.peer;
                    peer.get_json::<bool>(addr, &path, wait)
                        .await
                        .unwrap_or(false)
                }
            };
            self.inner.peer_applied.wait(addr, index, deadline, ask)
        });
        futures::future::join_all(asks).await;
    }

    /// Proposes `cmd` on this node only: `NotLeader` when it is not the leader. Concurrent
    /// proposals may share one entry ([`propose`]); the answer is this command's own.
    pub async fn write_local(&self, cmd: Command) -> Result<Committed, WriteError> {
        match self.inner.proposer.propose(cmd).await {
            Ok((result, index)) => Ok(Committed { result, index }),
            Err(propose::ProposeError::Raft(e)) => Err(self.write_error(&e)),
            Err(propose::ProposeError::Stopped) => {
                Err(WriteError::Unavailable("raft is shutting down".into()))
            }
            Err(e @ propose::ProposeError::Unanswered(_)) => {
                Err(WriteError::Fatal(format!("{e:?}")))
            }
        }
    }

    /// What a failed `client_write` means for the caller.
    fn write_error(
        &self,
        e: &RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>,
    ) -> WriteError {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => WriteError::NotLeader {
                leader: f
                    .leader_id
                    .and_then(|id| self.address_of(id, f.leader_node.as_ref())),
            },
            RaftError::APIError(e) => WriteError::Unavailable(e.to_string()),
            RaftError::Fatal(Fatal::Stopped) => {
                WriteError::Unavailable("raft is shutting down".into())
            }
            RaftError::Fatal(e) => WriteError::Fatal(e.to_string()),
        }
    }

    /// Waits until the local state machine has applied `index` (the caller's deadline bounds
    /// the wait).
    async fn wait_applied(&self, index: u64) {
        let mut rx = self.inner.raft.metrics();
        loop {
            if rx
                .borrow_and_update()
                .last_applied
                .is_some_and(|l| l.index >= index)
            {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Whether this node's Raft state belongs to an initialized cluster.
    pub fn is_initialized(&self) -> bool {
        let rx = self.inner.raft.metrics();
        let initialized = rx
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .next()
            .is_some();
        initialized
    }

    /// Reads the applied state. Never touches SQLite; do not block inside `f`.
    pub fn read<R>(&self, f: impl FnOnce(&PersistentState) -> R) -> R {
        f(&self.inner.state.read())
    }

    /// Reads the applied state with a log index it is at least as new as. The index is taken
    /// before the state is read, so it may be older than the state, never newer: whoever
    /// merges the answer with later changes by index (a gateway's config md5s) never lets it
    /// hide one.
    pub fn read_at<R>(&self, f: impl FnOnce(&PersistentState) -> R) -> (u64, R) {
        let index = self
            .inner
            .raft
            .metrics()
            .borrow()
            .last_applied
            .map_or(0, |l| l.index);
        (index, self.read(f))
    }

    /// Whether local reads are current enough to serve: this node has passed the read-index
    /// barrier of [`PersistentStore::catch_up`] once.
    ///
    /// It stays ready afterwards. A later Raft election (the leader died) must not turn the
    /// whole node away: ephemeral reads and writes are AP and go on, and only persistent writes
    /// wait for the new leader. (When readiness followed the current leader, killing the leader
    /// made every survivor answer 503 to everything for the election's duration.)
    pub fn is_ready(&self) -> bool {
        self.inner.caught_up.load(Ordering::Acquire)
    }

    /// A leader is known **and** this node has applied an entry of the current term. Every
    /// leader's first entry of its term is a blank entry committed only after everything
    /// earlier, so this already covers a node that followed an election. It misses a node
    /// restarted within one term (its old entries are of the current term, yet entries
    /// committed while it was down are missing), hence the barrier on top.
    fn has_current_leader(&self) -> bool {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        m.current_leader.is_some()
            && m.last_applied
                .is_some_and(|l| l.leader_id.term >= m.current_term)
    }

    /// Read-index barrier, run once after start: asks the leader for a commit index confirmed
    /// by a quorum *now* and waits until this node has applied it. Returns whether it is done
    /// (it keeps failing while no leader is known).
    pub async fn catch_up(&self, timeout: Duration) -> bool {
        if self.inner.caught_up.load(Ordering::Acquire) {
            return true;
        }
        if !self.has_current_leader() {
            return false;
        }
        let leader = self.inner.raft.metrics().borrow().current_leader;
        let index = if leader == Some(self.inner.node_id) {
            match self.inner.raft.get_read_log_id().await {
                Ok((read, _)) => read.map_or(0, |l| l.index),
                Err(_) => return false,
            }
        } else {
            let Some(addr) = self.leader_addr() else {
                return false;
            };
            match self
                .inner
                .peer
                .get_json::<Option<u64>>(&addr, READ_INDEX_PATH, timeout)
                .await
            {
                Ok(Some(i)) => i,
                _ => return false,
            }
        };
        if tokio::time::timeout(timeout, self.wait_applied(index))
            .await
            .is_err()
        {
            return false;
        }
        self.inner.caught_up.store(true, Ordering::Release);
        true
    }

    fn leader_addr(&self) -> Option<String> {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        let leader = m.current_leader?;
        self.address_of(leader, m.membership_config.membership().get_node(&leader))
    }

    /// Where member `id` answers: where its pings place it, else the address Raft stores
    /// (`stored`). The two differ while a member that moved has not been rewritten yet.
    fn address_of(&self, id: NodeId, stored: Option<&BasicNode>) -> Option<String> {
        self.inner
            .locator
            .locate(id)
            .or_else(|| stored.map(|n| n.addr.clone()))
    }

    /// Waits until [`is_ready`](Self::is_ready) holds or `timeout` passes; returns readiness.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let mut rx = self.inner.raft.metrics();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.is_ready() {
                return true;
            }
            if self.has_current_leader() {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if self.catch_up(left).await {
                    continue;
                }
                if tokio::time::Instant::now() >= deadline {
                    return false;
                }
                // The leader may not have confirmed a quorum yet: ask again shortly.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                // Deadline passed or Raft stopped.
                _ => return self.is_ready(),
            }
        }
    }

    /// The current Raft status.
    pub fn status(&self) -> RaftStatus {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        let membership = m.membership_config.membership();
        RaftStatus {
            node_id: self.inner.node_id,
            term: m.current_term,
            role: role_name(m.state).to_owned(),
            leader: m
                .current_leader
                .and_then(|id| self.address_of(id, membership.get_node(&id))),
            commit_index: self.inner.commit_index.get(),
            last_applied: m.last_applied.map(|l| l.index),
            last_log_index: m.last_log_index,
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
            members: membership
                .nodes()
                .map(|(id, n)| (*id, n.addr.clone()))
                .collect(),
            snapshots_built: self.inner.snapshots.built.load(Ordering::Relaxed),
            snapshots_installed: self.inner.snapshots.installed.load(Ordering::Relaxed),
        }
    }

    /// This node's Raft id.
    pub fn node_id(&self) -> u64 {
        self.inner.node_id
    }

    /// The underlying openraft handle, for membership management.
    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    /// The internal Raft routes (`/nacre/internal/raft/…`), guarded by the cluster secret:
    /// openraft's RPCs plus the leader's write route for forwarding followers.
    pub fn router(&self) -> axum::Router {
        let write = axum::Router::new()
            .route(WRITE_PATH, axum::routing::post(forwarded_write))
            .route(READ_INDEX_PATH, axum::routing::get(read_index))
            .route(APPLIED_PATH, axum::routing::get(applied))
            .with_state(self.clone())
            .layer(axum::middleware::from_fn_with_state(
                Arc::<str>::from(self.inner.secret.as_str()),
                crate::peer::require_secret,
            ));
        network::raft_router(
            self.inner.raft.clone(),
            self.inner.secret.clone(),
            self.inner.node_id,
        )
        .merge(write)
    }

    /// Stops openraft; later writes answer `Unavailable`. Idempotent.
    pub async fn shutdown(&self) {
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!(error = %e, "raft core ended abnormally");
        }
        self.inner.proposer.shutdown();
    }
}

/// The leader's read index for a catching-up follower: `None` when this node is not the
/// leader (or cannot confirm it with a quorum).
async fn read_index(
    axum::extract::State(store): axum::extract::State<PersistentStore>,
) -> axum::Json<Option<u64>> {
    let read = tokio::time::timeout(WRITE_TIMEOUT, store.inner.raft.get_read_log_id()).await;
    axum::Json(match read {
        Ok(Ok((read, _))) => Some(read.map_or(0, |l| l.index)),
        _ => None,
    })
}

#[derive(Debug, serde::Deserialize)]
struct AppliedQuery {
    index: u64,
}

/// Answers `true` once this node has applied `index`, `false` after [`PEER_APPLY_WAIT`].
async fn applied(
    axum::extract::State(store): axum::extract::State<PersistentStore>,
    axum::extract::Query(q): axum::extract::Query<AppliedQuery>,
) -> axum::Json<bool> {
    let done = tokio::time::timeout(PEER_APPLY_WAIT, store.wait_applied(q.index))
        .await
        .is_ok();
    axum::Json(done)
}

/// The leader's side of write forwarding: proposes locally, never forwards again.
async fn forwarded_write(
    axum::extract::State(store): axum::extract::State<PersistentStore>,
    axum::Json(cmd): axum::Json<Command>,
) -> axum::Json<Result<Committed, WriteError>> {
    let res = tokio::time::timeout(WRITE_TIMEOUT, store.write_local(cmd))
        .await
        .unwrap_or_else(|_| {
            Err(WriteError::Unavailable(format!(
                "no commit within {WRITE_TIMEOUT:?}"
            )))
        });
    axum::Json(res)
}

#[cfg(test)]
mod tests;
