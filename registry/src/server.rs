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
use crate::metrics::Metrics;
use crate::node::Node;
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
}

fn data_err(path: &Path, source: std::io::Error) -> ServeError {
    ServeError::DataDir {
        path: path.display().to_string(),
        source,
    }
}

/// The cluster secret from settings, or one generated once into `<data>/cluster-secret`.
fn cluster_secret(settings: &RegistrySettings) -> Result<String, ServeError> {
    if let Some(s) = &settings.cluster_secret {
        return Ok(s.clone());
    }
    let path = settings.data_dir.join("cluster-secret");
    match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().len() >= 16 => return Ok(s.trim().to_string()),
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
    let dir = settings.data_dir.clone();
    tokio::task::spawn_blocking(move || std::fs::create_dir_all(&dir))
        .await
        .map_err(|e| data_err(&settings.data_dir, std::io::Error::other(e)))?
        .map_err(|e| data_err(&settings.data_dir, e))?;
    let secret = {
        let s = settings.clone();
        tokio::task::spawn_blocking(move || cluster_secret(&s))
            .await
            .map_err(|e| data_err(&settings.data_dir, std::io::Error::other(e)))??
    };

    let metrics = Metrics::new()?;
    let push = if settings.push.enabled {
        let pm = PushMetrics::new(metrics.registry())?;
        let hub = PushHub::bind(push_settings(&settings), pm)
            .await
            .map_err(|source| ServeError::Push {
                addr: settings.push.bind,
                source,
            })?;
        Some(hub)
    } else {
        None
    };

    let mut raft_settings = RaftSettings::new(
        settings.data_dir.clone(),
        settings.advertised(),
        secret,
        settings.standalone,
    );
    raft_settings.apply_latency = Some(metrics.raft_apply.clone());
    let hub_for_changes = push.clone();
    let on_change: crate::raft::ChangeCallback = Arc::new(move |keys| {
        if let Some(h) = &hub_for_changes {
            for k in keys {
                h.service_changed(k);
            }
        }
    });
    let persistent = PersistentStore::start(raft_settings, on_change).await?;

    let node = Arc::new(Node::new(
        settings.clone(),
        persistent.clone(),
        push.clone(),
        metrics,
        Clock::new(),
    ));
    let tasks = CancellationToken::new();
    let mut handles = Vec::new();

    let sweeper = node.clone();
    let stop = tasks.clone();
    let every = Duration::from_millis(settings.expiry_interval_ms);
    handles.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => sweeper.sweep(),
            }
        }
    }));

    handles.push(tokio::spawn(crate::health::run(
        node.clone(),
        Duration::from_millis(settings.health_check_interval_ms),
        Duration::from_millis(settings.health_check_timeout_ms),
        tasks.clone(),
    )));

    if let Some(hub) = &push {
        let weak = Arc::downgrade(&node);
        let cache_millis = settings.push_cache_millis;
        let renderer: Renderer = Arc::new(move |sub| {
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
        });
        handles.push(tokio::spawn(hub.clone().run(renderer, tasks.clone())));
    }

    let app = Arc::new(App { node: node.clone() });
    let router = api::router(app, persistent.router());
    tracing::info!(listen = %local, advertise = %settings.advertised(), data = %settings.data_dir.display(), "registry node serving");

    let grace = Duration::from_millis(settings.shutdown_grace_ms);
    let drain = shutdown.clone();
    let server = axum::serve(
        crate::listener::BoundedListener::new(listener, settings.max_connections),
        router.into_make_service_with_connect_info::<crate::listener::PeerAddr>(),
    )
    .with_graceful_shutdown(async move { drain.cancelled().await });
    let served = tokio::spawn(async move { server.await });
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

    tasks.cancel();
    for h in handles {
        if tokio::time::timeout(Duration::from_secs(2), h)
            .await
            .is_err()
        {
            tracing::warn!("background task did not stop in time");
        }
    }
    persistent.shutdown().await;
    tracing::info!("registry node stopped");
    result
}
