//! Start-up and shutdown of a registry node: `run(listener, settings, shutdown)`.
//!
//! The caller binds the listener (tests bind `127.0.0.1:0`) and owns the shutdown token. Every
//! task spawned here is owned by this function and stopped before it returns: the HTTP server
//! drains in-flight requests, then the expiry and push tasks stop, then Raft shuts down.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nacre_config::RegistrySettings;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{self, render, App};
use crate::clock::Clock;
use crate::distro::{
    Distro, DistroCluster, DistroMetrics, DistroSettings, Replicator, SyncSettings,
};
use crate::membership::{Membership, ProbeSettings};
use crate::metrics::Metrics;
use crate::node::Node;
use crate::peer::PeerClient;
use crate::push::{PushHub, PushMetrics, PushSettings, Renderer};
use crate::raft::{PersistentStore, RaftSettings};

/// Why a node could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A setting is invalid.
    #[error(transparent)]
    Config(#[from] nacre_config::ConfigError),
    /// The data directory or secret file could not be prepared.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// Path involved.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The persistent store failed to start.
    #[error("persistent store: {0}")]
    Raft(#[from] crate::raft::RaftStartError),
    /// Metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The UDP push socket could not be bound.
    #[error("push socket {addr}: {source}")]
    Push {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The HTTP server failed.
    #[error("http server: {0}")]
    Http(std::io::Error),
    /// The peer HTTP client could not be built.
    #[error("peer client: {0}")]
    Peer(String),
}

fn data_err(path: &Path, source: std::io::Error) -> ServeError {
    ServeError::DataDir {
        path: path.display().to_string(),
        source,
    }
}

/// The cluster secret from settings, or the one in the data dir (see
/// [`load_or_create_secret`]).
fn cluster_secret(settings: &RegistrySettings) -> Result<String, ServeError> {
    match &settings.cluster_secret {
        Some(s) => Ok(s.clone()),
        None => load_or_create_secret(&settings.data_dir),
    }
}

/// The secret in `<dir>/cluster-secret`, or a new random one written there (readable by its
/// owner only, synced) when the file is missing or too short. `nacre up` shares one between
/// its nodes this way.
pub fn load_or_create_secret(dir: &Path) -> Result<String, ServeError> {
    let path = dir.join("cluster-secret");
    match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().len() >= 16 => {
            warn_if_readable_by_others(&path);
            return Ok(s.trim().to_string());
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(data_err(&path, e)),
    }
    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&path).map_err(|e| data_err(&path, e))?;
    f.write_all(secret.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| data_err(&path, e))?;
    Ok(secret)
}

/// With auth on, makes sure the cluster has a token key and a first administrator (`nacos`),
/// once Raft takes writes. Every node tries; the first command applied wins, and only the
/// node whose generated password was used logs it (once).
async fn bootstrap_auth(node: Arc<Node>, admin_password: Option<String>, stop: CancellationToken) {
    use crate::auth::{password, token, AuthCommand};
    loop {
        let done = node
            .persistent()
            .read(|s| s.auth().key.is_some() && !s.auth().users.is_empty());
        if done {
            return;
        }
        // Until the node is ready, look again soon; after a failed proposal, less often.
        let mut pause = Duration::from_millis(100);
        if node.is_ready() {
            pause = Duration::from_secs(1);
            let (pass, generated) = match &admin_password {
                Some(p) => (p.clone(), false),
                None => (password::generate(), true),
            };
            let hashed = {
                let pass = pass.clone();
                tokio::task::spawn_blocking(move || password::hash(&pass))
                    .await
                    .ok()
                    .flatten()
            };
            if let Some(admin_hash) = hashed {
                let cmd = crate::naming::persistent::Command::Auth(AuthCommand::Bootstrap {
                    key: token::new_key(),
                    admin_hash,
                });
                match node.namespace_command(cmd).await {
                    Ok(()) if generated => tracing::warn!(
                        user = crate::auth::ADMIN_USER,
                        password = %pass,
                        "auth: the first administrator was created with this generated password; it is shown once, change it"
                    ),
                    Ok(()) => tracing::info!(
                        user = crate::auth::ADMIN_USER,
                        "auth: the first administrator was created with the configured password"
                    ),
                    Err(crate::node::NodeError::Naming(_)) => return,
                    Err(e) => {
                        tracing::debug!(error = %e, "auth bootstrap not applied yet; retrying")
                    }
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// Warns when a secret file can be read by anyone but its owner (the secret lets a process
/// act as a cluster member).
pub fn warn_if_readable_by_others(path: &Path) {
    if let Some(mode) = readable_by_others(path) {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{mode:o}"),
            "secret file is readable by group or others; run chmod 600 on it"
        );
    }
}

/// The file's permission bits when group or others may read or write it.
fn readable_by_others(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
        (mode & 0o066 != 0).then_some(mode)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

fn push_settings(s: &RegistrySettings) -> PushSettings {
    PushSettings {
        bind: s.push.bind,
        subscriber_ttl: Duration::from_millis(s.push.subscriber_ttl_ms),
        debounce: Duration::from_millis(s.push.debounce_ms),
        resend_after: Duration::from_millis(s.push.resend_after_ms),
        max_sends: s.push.max_sends,
        max_subscribers: s.push.max_subscribers,
    }
}

/// How often change generations of services that no longer exist are forgotten.
const CHANGES_PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// Spawns a node task inside the caller's span, so that with several nodes in one process
/// (`nacre up`) every log line still names its node.
fn spawn_in_span<F>(f: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(tracing::Instrument::in_current_span(f))
}

/// The cluster side of Distro: keeps the sync workers matched to the member list and runs
/// verify rounds. (Takeover grace is granted by the expiry sweep itself, rule E4.)
async fn distro_loop(node: Arc<Node>, verify_every: Duration, stop: CancellationToken) {
    let mut verify = tokio::time::interval(verify_every);
    verify.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut peers_tick = tokio::time::interval(Duration::from_millis(500));
    peers_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = peers_tick.tick() => {
                if let Some(c) = node.distro().cluster() {
                    c.replicator.set_peers(&node.membership().peers());
                }
            }
            _ = verify.tick() => {
                if node.distro().is_loaded() {
                    node.distro().verify_round(node.now_ms()).await;
                }
            }
        }
    }
}

/// Every background task of a node: one stop token, and the handles awaited at shutdown.
struct Tasks {
    stop: CancellationToken,
    handles: Vec<tokio::task::JoinHandle<()>>,
}

impl Tasks {
    fn new() -> Self {
        Self {
            stop: CancellationToken::new(),
            handles: Vec::new(),
        }
    }

    /// Spawns `f` in the caller's span and keeps its handle.
    fn spawn(&mut self, f: impl std::future::Future<Output = ()> + Send + 'static) {
        self.handles.push(spawn_in_span(f));
    }

    /// Cancels every task and waits up to 3 s for them, then aborts the rest.
    async fn stop(self) {
        self.stop.cancel();
        let aborts: Vec<_> = self.handles.iter().map(|h| h.abort_handle()).collect();
        if tokio::time::timeout(
            Duration::from_secs(3),
            futures::future::join_all(self.handles),
        )
        .await
        .is_err()
        {
            tracing::warn!("background tasks did not stop in time; aborting them");
            for a in aborts {
                a.abort();
            }
        }
        tracing::debug!("background tasks stopped");
    }
}

/// Runs a registry node on `listener` until `shutdown` fires.
pub async fn run(
    listener: TcpListener,
    mut settings: RegistrySettings,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    settings.validate()?;
    let local = listener.local_addr().map_err(ServeError::Http)?;
    // The listener may have been bound to port 0: advertise what was actually bound.
    settings.listen = local;
    let secret = prepare_data_dir(&settings).await?;
    let metrics = Metrics::new()?;
    let push = bind_push(&settings, &metrics).await?;
    let mut tasks = Tasks::new();
    let (membership, distro, discovery) =
        start_distro(&settings, &secret, &metrics, &tasks.stop).await?;
    let changes = Arc::new(crate::changes::Changes::new());
    let config_watch = crate::configs::watch::ConfigWatch::new();
    let persistent = start_raft(
        &settings,
        &secret,
        &metrics,
        &membership,
        on_change(changes.clone(), push.clone(), config_watch.clone()),
    )
    .await?;
    let node = Arc::new(Node::new(
        settings.clone(),
        distro,
        persistent.clone(),
        push.clone(),
        metrics,
        Clock::new(),
        changes,
    ));
    if let Some(discovery) = &discovery {
        spawn_cluster_tasks(&mut tasks, &node, &membership, discovery, &persistent);
    }
    let listener = bounded(listener, &settings);
    let turns = start_read_turns(&mut tasks, &settings, node.metrics(), &listener);
    let listener = listener.with_read_turns(turns.clone());
    spawn_node_tasks(&mut tasks, &node, &persistent, push.as_ref(), turns);
    let app = Arc::new(App {
        node: node.clone(),
        secret: secret.clone(),
        lists: api::list_cache::ListCache::new(settings.list_cache_bytes),
        shutdown: shutdown.clone(),
        login_throttle: crate::auth::throttle::LoginThrottle::default(),
        verified: crate::auth::password::Verified::default(),
        configs: config_watch,
    });
    let router = api::router(app, persistent.router());
    tracing::info!(listen = %local, advertise = %settings.advertised(), data = %settings.data_dir.display(), "registry node serving");
    let served = serve(listener, router, shutdown.clone());
    if discovery.is_some() {
        // Serve first (peers probe us and fetch our snapshot too), then load peers' data;
        // the node reports ready only once this is done.
        tasks.spawn(load_peer_snapshot(node.clone(), tasks.stop.clone()));
    }
    let grace = Duration::from_millis(settings.shutdown_grace_ms);
    let result = tokio::select! {
        r = served => r.map_err(|e| ServeError::Http(std::io::Error::other(e))).and_then(|r| r.map_err(ServeError::Http)),
        _ = async {
            shutdown.cancelled().await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!("shutdown grace period elapsed with requests still in flight");
            Ok(())
        }
    };
    tracing::info!("http server stopped; stopping background tasks");
    tasks.stop().await;
    stop_cluster_parts(&node, discovery).await;
    tracing::info!("stopping raft");
    persistent.shutdown().await;
    tracing::info!("registry node stopped");
    result
}

/// Creates the data directory and reads (or creates) the cluster secret, off the async
/// workers.
async fn prepare_data_dir(settings: &RegistrySettings) -> Result<String, ServeError> {
    let dir = settings.data_dir.clone();
    tokio::task::spawn_blocking(move || std::fs::create_dir_all(&dir))
        .await
        .map_err(|e| data_err(&settings.data_dir, std::io::Error::other(e)))?
        .map_err(|e| data_err(&settings.data_dir, e))?;
    let s = settings.clone();
    tokio::task::spawn_blocking(move || cluster_secret(&s))
        .await
        .map_err(|e| data_err(&settings.data_dir, std::io::Error::other(e)))?
}

/// The UDP push socket, when push is on.
async fn bind_push(
    settings: &RegistrySettings,
    metrics: &Metrics,
) -> Result<Option<Arc<PushHub>>, ServeError> {
    if !settings.push.enabled {
        return Ok(None);
    }
    let pm = PushMetrics::new(metrics.registry())?;
    PushHub::bind(push_settings(settings), pm)
        .await
        .map(Some)
        .map_err(|source| ServeError::Push {
            addr: settings.push.bind,
            source,
        })
}

/// Membership and Distro: trivial when standalone, discovery-driven otherwise.
async fn start_distro(
    settings: &RegistrySettings,
    secret: &str,
    metrics: &Metrics,
    stop: &CancellationToken,
) -> Result<
    (
        Arc<Membership>,
        Distro,
        Option<nacre_config::members::Discovery>,
    ),
    ServeError,
> {
    let advertised = settings.advertised();
    let store = Arc::new(crate::distro::EphemeralStore::with_empty_ttl(
        settings.empty_service_ttl_ms,
    ));
    if settings.standalone {
        let m = Arc::new(Membership::standalone(advertised));
        return Ok((m.clone(), Distro::standalone(store, m), None));
    }
    let c = &settings.cluster;
    let source = c.source()?.ok_or_else(|| {
        ServeError::Config(nacre_config::ConfigError::Invalid {
            key: "cluster".into(),
            value: "no member source".into(),
            reason: "a clustered node needs a member source".into(),
        })
    })?;
    let discovery = nacre_config::members::Discovery::start(
        source,
        Duration::from_millis(c.discovery_interval_ms),
        stop.clone(),
    )
    .await?;
    let m = Arc::new(Membership::clustered(
        advertised.clone(),
        &discovery.current(),
        metrics.registry(),
    )?);
    let client = PeerClient::new(secret).map_err(ServeError::Peer)?;
    let distro_settings = DistroSettings {
        sync: SyncSettings {
            batch_window: Duration::from_millis(c.sync_batch_ms),
            queue_capacity: c.sync_queue_capacity,
            ..SyncSettings::default()
        },
        verify_interval: Duration::from_millis(c.verify_interval_ms),
        expected_members: c
            .bootstrap_expect
            .unwrap_or_else(|| discovery.current().len())
            .max(1),
        ..DistroSettings::default()
    };
    let replicator = Arc::new(Replicator::new(
        advertised,
        store.clone(),
        client.clone(),
        distro_settings.sync,
        DistroMetrics::new(metrics.registry())?,
        stop.child_token(),
    ));
    replicator.set_peers(&m.peers());
    let distro = Distro::clustered(
        store,
        m.clone(),
        DistroCluster {
            replicator,
            client,
            settings: distro_settings,
        },
    );
    Ok((m, distro, Some(discovery)))
}

/// What every Raft apply notifies: the change generations (caches, the gateways' feed), push
/// subscribers of the changed services, and parked config listeners.
fn on_change(
    changes: Arc<crate::changes::Changes>,
    push: Option<Arc<PushHub>>,
    configs: crate::configs::watch::ConfigWatch,
) -> crate::raft::ChangeCallback {
    Arc::new(move |keys, changed_configs| {
        configs.changed(changed_configs.iter().map(|c| &c.key));
        changes.configs_changed(changed_configs);
        for k in keys {
            changes.bump(k);
            if let Some(h) = &push {
                h.service_changed(k);
            }
        }
    })
}

/// The Raft store, its timers and snapshot policy from the settings.
async fn start_raft(
    settings: &RegistrySettings,
    secret: &str,
    metrics: &Metrics,
    membership: &Arc<Membership>,
    on_change: crate::raft::ChangeCallback,
) -> Result<PersistentStore, ServeError> {
    let mut raft_settings = RaftSettings::new(
        settings.data_dir.clone(),
        settings.advertised(),
        secret.to_string(),
        settings.standalone,
    );
    raft_settings.apply_latency = Some(metrics.raft_apply.clone());
    raft_settings.election_timeout_ms = settings.cluster.raft_election_timeout_ms;
    raft_settings.snapshot_logs_since_last = settings.cluster.raft_snapshot_logs;
    raft_settings.logs_kept_after_snapshot = settings.cluster.raft_logs_kept;
    raft_settings.locator = {
        let membership = membership.clone();
        crate::raft::network::Locator::new(move |id| membership.locate(id))
    };
    raft_settings.batch_gate = {
        let membership = membership.clone();
        crate::raft::propose::BatchGate::new(move || membership.peers_read_batches())
    };
    Ok(PersistentStore::start(raft_settings, on_change).await?)
}

/// A clustered node's tasks: member probes, Raft membership reconciliation, Distro sync and
/// verify.
fn spawn_cluster_tasks(
    tasks: &mut Tasks,
    node: &Arc<Node>,
    membership: &Arc<Membership>,
    discovery: &nacre_config::members::Discovery,
    persistent: &PersistentStore,
) {
    let Some(distro) = node.distro().cluster() else {
        return;
    };
    let c = &node.settings().cluster;
    tasks.spawn(crate::membership::run(
        membership.clone(),
        discovery.subscribe(),
        distro.client.clone(),
        ProbeSettings {
            interval: Duration::from_millis(c.probe_interval_ms),
            timeout: Duration::from_millis(c.probe_timeout_ms),
            down_after: c.down_after,
        },
        tasks.stop.clone(),
    ));
    let expect = c
        .bootstrap_expect
        .unwrap_or_else(|| discovery.current().len());
    tasks.spawn(crate::raft::cluster::run(
        persistent.clone(),
        membership.clone(),
        expect,
        Duration::from_millis(c.raft_membership_interval_ms),
        tasks.stop.clone(),
    ));
    tasks.spawn(distro_loop(
        node.clone(),
        Duration::from_millis(c.verify_interval_ms),
        tasks.stop.clone(),
    ));
}

/// Every node's tasks: the read-index catch-up, the overload probe, the expiry sweep, health checks, pushes and
/// (with auth on) the first administrator.
fn spawn_node_tasks(
    tasks: &mut Tasks,
    node: &Arc<Node>,
    persistent: &PersistentStore,
    push: Option<&Arc<PushHub>>,
    turns: Option<Arc<nacre_ring::turns::ReadTurns>>,
) {
    let settings = node.settings();
    tasks.spawn(catch_up(persistent.clone(), tasks.stop.clone()));
    tasks.spawn(crate::overload::probe(
        node.overload().clone(),
        node.metrics().clone(),
        tasks.stop.clone(),
    ));
    tasks.spawn(sweep(
        node.clone(),
        Duration::from_millis(settings.expiry_interval_ms),
        tasks.stop.clone(),
    ));
    tasks.spawn(crate::health::run(
        node.clone(),
        Duration::from_millis(settings.health_check_interval_ms),
        Duration::from_millis(settings.health_check_timeout_ms),
        tasks.stop.clone(),
    ));
    if let Some(hub) = push {
        tasks.spawn(
            hub.clone()
                .run(push_renderer(node), turns, tasks.stop.clone()),
        );
    }
    if settings.auth.enabled {
        tasks.spawn(bootstrap_auth(
            node.clone(),
            settings.auth.admin_password.clone(),
            tasks.stop.clone(),
        ));
    }
}

/// Readiness waits for a read-index barrier (see `PersistentStore::catch_up`): a restarted
/// node must not serve persistent data from before its crash as current.
async fn catch_up(persistent: PersistentStore, stop: CancellationToken) {
    loop {
        if persistent.catch_up(Duration::from_secs(5)).await {
            tracing::info!("persistent state caught up with the leader");
            break;
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
}

/// The expiry sweep every `every`, and now and then the pruning of change generations.
async fn sweep(node: Arc<Node>, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut prune = tokio::time::interval(CHANGES_PRUNE_INTERVAL);
    prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {
                // A walk over every service: off the async workers.
                let node = node.clone();
                if let Err(e) = tokio::task::spawn_blocking(move || node.sweep()).await {
                    tracing::warn!(error = %e, "expiry sweep task failed");
                }
            }
            _ = prune.tick() => {
                let dropped = node.prune_changes();
                if dropped > 0 {
                    tracing::debug!(dropped, "forgot change generations of removed services");
                }
            }
        }
    }
}

/// Renders a subscriber's push packet from the node's current view (holds the node weakly:
/// the push task must not keep a stopped node alive).
fn push_renderer(node: &Arc<Node>) -> Renderer {
    let weak = Arc::downgrade(node);
    let cache_millis = node.settings().push_cache_millis;
    Arc::new(move |sub| {
        let node = weak.upgrade()?;
        let view = node.view(&sub.key)?;
        let agent = api::agent::ClientInfo::parse(&sub.agent);
        Some(render::list_json(
            &sub.key,
            Some(&view),
            render::ListOptions {
                clusters: &sub.clusters,
                healthy_only: false,
                grouped_dom: agent.is_modern_java(),
                cache_millis,
                env: "",
                now_ms: node.now_ms(),
            },
        ))
    })
}

/// The read turns of rule G3 (`None` when `read_turns_per_round` is 0), judging a crowd by
/// `listener`'s open client connections, and their round task.
fn start_read_turns(
    tasks: &mut Tasks,
    settings: &RegistrySettings,
    metrics: &Metrics,
    listener: &crate::listener::BoundedListener,
) -> Option<Arc<nacre_ring::turns::ReadTurns>> {
    let waited = metrics.read_turns_waited.clone();
    let turns = nacre_ring::turns::ReadTurns::new(
        settings.read_turns_per_round,
        settings.read_turns_crowd,
        listener.open_clients(),
        Box::new(move || waited.inc()),
    )?;
    tasks.spawn(turns.clone().run(tasks.stop.clone()));
    Some(turns)
}

/// The client listener: bounded, with the peer reserve.
fn bounded(listener: TcpListener, settings: &RegistrySettings) -> crate::listener::BoundedListener {
    crate::listener::BoundedListener::new(
        listener,
        crate::listener::Limits {
            clients: settings.max_connections,
            peer_reserve: settings.peer_connections,
            idle: Duration::from_millis(settings.idle_timeout_ms),
        },
    )
}

/// Serves `router` on `listener` until `shutdown`, then drains.
fn serve(
    listener: crate::listener::BoundedListener,
    router: axum::Router,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    let server = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<crate::listener::PeerAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.cancelled().await });
    spawn_in_span(async move { server.await })
}

/// The Distro start-up load: peers' ephemeral data, before the node reports ready.
async fn load_peer_snapshot(node: Arc<Node>, stop: CancellationToken) {
    let clock = node.clone();
    if let Some(n) = node
        .distro()
        .load_snapshot(move || clock.now_ms(), &stop)
        .await
    {
        tracing::info!(services = n, "distro start-up load done");
    }
}

/// After the tasks: the Distro sync workers and member discovery.
async fn stop_cluster_parts(node: &Node, discovery: Option<nacre_config::members::Discovery>) {
    if let Some(c) = node.distro().cluster() {
        c.replicator.stopped().await;
        tracing::debug!("distro sync workers stopped");
    }
    if let Some(d) = discovery {
        if tokio::time::timeout(Duration::from_secs(3), d.stopped())
            .await
            .is_err()
        {
            tracing::warn!("member discovery did not stop in time");
        }
        tracing::debug!("member discovery stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_generated_secret_is_owner_only_and_a_loose_one_is_noticed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let secret = load_or_create_secret(dir.path()).unwrap();
        let path = dir.path().join("cluster-secret");
        assert_eq!(readable_by_others(&path), None);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(readable_by_others(&path), Some(0o644));
        // Still loaded (a warning, not a refusal): the operator may share it on purpose.
        assert_eq!(load_or_create_secret(dir.path()).unwrap(), secret);
    }
}
