//! Builds the pingora server (the gateway's own accepting service, [`crate::accept`], with
//! pingora's HTTP proxy behind it, plus the monitor as a background service) and runs it until
//! a stop is requested. pingora owns its runtimes and threads; `run` blocks the
//! calling thread, which must not be inside a tokio runtime.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use nacre_config::members::Discovery;
use nacre_config::{ConfigError, GatewaySettings};
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use tokio_util::sync::CancellationToken;

use crate::accept::Accept;
use crate::proxy::Gateway;
use crate::Shared;

/// Why the gateway could not run.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Bad settings.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The listen address is taken or not local.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// Address.
        addr: std::net::SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// Metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// What stops the gateway.
#[derive(Debug, Clone)]
pub enum Stop {
    /// SIGTERM drains (grace period, then in-flight requests finish), SIGINT stops at once.
    Signals,
    /// Cancelling the token drains as SIGTERM does (`nacre up`, tests in-process).
    Token(CancellationToken),
}

struct StopWatch(Stop);

#[async_trait]
impl ShutdownSignalWatch for StopWatch {
    async fn recv(&self) -> ShutdownSignal {
        match &self.0 {
            Stop::Signals => pingora::server::UnixShutdownSignalWatch.recv().await,
            Stop::Token(t) => {
                t.cancelled().await;
                ShutdownSignal::GracefulTerminate
            }
        }
    }
}

/// The monitor, run by pingora as a background service (it also owns the rate limiter's
/// housekeeping and the push subscriber relay).
struct Monitor {
    shared: Arc<Shared>,
}

#[async_trait]
impl BackgroundService for Monitor {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let token = CancellationToken::new();
        let watcher = {
            let token = token.clone();
            let stopping = self.shared.stopping.clone();
            tokio::spawn(async move {
                // Fires on the shutdown signal, or when the server is dropped.
                let _ = shutdown.changed().await;
                stopping.cancel();
                token.cancel();
            })
        };
        let settings = &self.shared.settings;
        let interval = Duration::from_millis(settings.discovery_interval_ms);
        let discovery = match settings.source() {
            Ok(source) => Discovery::start(source, interval, token.clone()).await,
            Err(e) => Err(e),
        };
        let housekeeping = tokio::spawn(forget_idle_clients(self.shared.clone(), token.clone()));
        let relay = tokio::spawn(crate::subscribe::run(self.shared.clone(), token.clone()));
        match discovery {
            Ok(d) => crate::monitor::run(self.shared.clone(), d, token.clone()).await,
            Err(e) => {
                tracing::error!(error = %e, "node discovery failed; the gateway has no nodes")
            }
        }
        token.cancel();
        let _ = watcher.await;
        let _ = housekeeping.await;
        let _ = relay.await;
    }
}

/// How often the rate limiter forgets clients whose bucket is full again.
const FORGET_IDLE_CLIENTS: Duration = Duration::from_secs(10);

/// Keeps the per-client rate limiter bounded by the clients seen recently, until `stop`. The
/// walk over every tracked client runs on the blocking pool.
async fn forget_idle_clients(shared: Arc<Shared>, stop: CancellationToken) {
    if shared.limiter.is_none() {
        return;
    }
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(FORGET_IDLE_CLIENTS) => {}
        }
        let shared = shared.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(l) = &shared.limiter {
                l.forget_idle();
            }
        })
        .await;
    }
}

/// How many connections may wait to be accepted (pingora's own listener's figure): thousands of
/// clients reconnecting at once after a restart must not be refused by the kernel.
const BACKLOG: i32 = 65_535;

/// Binds the gateway's client socket (address reuse on, as pingora's listener has it), ready
/// for [`Accept`].
fn bind(addr: std::net::SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Runs the gateway until `stop`; blocks the calling thread.
pub fn run(settings: GatewaySettings, stop: Stop) -> Result<(), GatewayError> {
    settings.validate()?;
    // Bound here, before pingora starts, so that a taken address is the caller's error.
    let listener = bind(settings.listen).map_err(|source| GatewayError::Listen {
        addr: settings.listen,
        source,
    })?;
    let shared = Arc::new(Shared::new(settings.clone())?);
    let conf = ServerConf {
        threads: settings.threads,
        grace_period_seconds: Some(settings.grace_period_seconds),
        graceful_shutdown_timeout_seconds: Some(settings.shutdown_timeout_seconds),
        // One attempt per node is enough; more only repeats a failure.
        max_retries: 3,
        work_stealing: false,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let proxy = pingora::proxy::http_proxy(&server.configuration, Gateway::new(shared.clone()));
    server.add_service(Accept::new(listener, proxy, shared.clone()));
    server.add_service(background_service(
        "nacre gateway monitor",
        Monitor { shared },
    ));
    tracing::info!(listen = %settings.listen, threads = settings.threads, advertise = ?settings.advertised(), "gateway serving");
    server.run(RunArgs {
        shutdown_signal: Box::new(StopWatch(stop)),
    });
    tracing::info!("gateway stopped");
    Ok(())
}
