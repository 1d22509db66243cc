//! Builds the pingora server (proxy service plus the monitor as a background service) and
//! runs it until a stop is requested. pingora owns its runtimes and threads; `run` blocks the
//! calling thread, which must not be inside a tokio runtime.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use nacre_config::members::Discovery;
use nacre_config::{ConfigError, GatewaySettings};
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::Stream as TcpStream;
use pingora::protocols::Stream;
use pingora::proxy::HttpProxy;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use tokio_util::sync::CancellationToken;

use crate::edge;
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

/// The proxy behind the per-client connection cap: pingora hands each accepted connection to
/// `process_new`, which serves every request of an HTTP/1 keep-alive connection before it
/// returns, so the connection holds its place exactly as long as it is open.
struct Admission {
    proxy: Arc<HttpProxy<Gateway>>,
    shared: Arc<Shared>,
}

/// Counts a connection in the open-connections gauge while it lives.
struct Counted<'a>(&'a prometheus::IntGauge);

impl<'a> Counted<'a> {
    fn new(g: &'a prometheus::IntGauge) -> Self {
        g.inc();
        Self(g)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[async_trait]
impl ServerApp for Admission {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let _counted = Counted::new(&self.shared.metrics.client_connections);
        let client = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let _admitted = match (&self.shared.caps, client) {
            // No cap, or not an IP peer (a Unix socket): nothing to key a cap on.
            (None, _) | (_, None) => None,
            (Some(caps), Some(ip)) => match caps.admit(ip) {
                Some(admitted) => Some(admitted),
                None => {
                    self.shared.metrics.connections_refused.inc();
                    tracing::debug!(client = %ip, cap = caps.per_client(), "connection over the per-client cap closed");
                    return None;
                }
            },
        };
        self.keep_alive(stream, client, shutdown).await;
        None
    }

    async fn cleanup(&self) {
        self.proxy.cleanup().await;
    }
}

impl Admission {
    /// Serves the connection's requests until it closes: the keep-alive loop pingora would
    /// run, with the wait between requests and held config listeners moved out of pingora's
    /// request future (see [`crate::edge`]).
    async fn keep_alive(
        &self,
        stream: Stream,
        client: Option<std::net::IpAddr>,
        shutdown: &ShutdownWatch,
    ) {
        // Only a plain TCP stream can take back bytes read ahead; the gateway accepts nothing
        // else, but should it ever, pingora's own loop serves it.
        if !stream.as_any().is::<TcpStream>() {
            self.proxy.process_new(stream, shutdown).await;
            return;
        }
        let Some(mut stream) = tcp(stream) else {
            return;
        };
        let mut carried: Option<HttpPersistentSettings> = None;
        let mut first = [0u8; edge::FIRST_READ];
        loop {
            let Some(n) = edge::first_bytes(&mut stream, shutdown, &mut first).await else {
                return;
            };
            let first = &first[..n];
            let taken = if edge::may_take(&self.shared, first) {
                // Boxed: the loop's own future, alive for the connection's whole life, stays as
                // small as its idle wait.
                Box::pin(edge::take(&self.shared, &mut stream, first, client)).await
            } else {
                stream.rewind(first);
                None
            };
            match taken {
                Some(edge::Taken::Listener(listener)) => {
                    let served = edge::serve(&self.shared, &mut stream, listener, client, shutdown);
                    if Box::pin(served).await {
                        continue;
                    }
                    return;
                }
                Some(edge::Taken::Beat(beat)) => {
                    let served =
                        edge::serve_beat(&self.shared, &mut stream, beat, client, shutdown);
                    match Box::pin(served).await {
                        edge::Served::Answered(true) => continue,
                        edge::Served::Answered(false) => return,
                        // Put back into the stream: pingora serves it below.
                        edge::Served::Proxy => {}
                    }
                }
                Some(edge::Taken::List(list)) => {
                    match edge::serve_list(&self.shared, &mut stream, list, client, shutdown).await
                    {
                        edge::Served::Answered(true) => continue,
                        edge::Served::Answered(false) => return,
                        edge::Served::Proxy => {}
                    }
                }
                None => {}
            }
            let mut session = ServerSession::new_http1(stream);
            match carried.take() {
                Some(settings) => settings.apply_to_session(&mut session),
                None => session.set_keepalive(Some(edge::KEEPALIVE.as_secs())),
            }
            if *shutdown.borrow() {
                session.set_keepalive(None);
            }
            let Some(reused) = self.proxy.process_new_http(session, shutdown).await else {
                return;
            };
            let (next, settings) = reused.consume();
            stream = match tcp(next) {
                Some(s) => s,
                None => return,
            };
            carried = settings;
        }
    }
}

/// The TCP stream inside pingora's boxed one; `None` (the stream is dropped) when it is not
/// one, which callers check first.
fn tcp(stream: Stream) -> Option<Box<TcpStream>> {
    stream.into_any().downcast::<TcpStream>().ok()
}

/// Client-side write buffer. pingora's default (one MSS) sends a response header in a write of
/// its own, and the body in a second one whenever the body is larger than that; with room for
/// a typical list answer, header and body leave in one write. Only the bytes written are ever
/// touched, so a connection holds at most this much.
const DOWNSTREAM_WRITE_BUFFER: usize = 32 * 1024;
/// Client-side read buffer. pingora's default (64 KiB, sized for TLS records) is allocated
/// zeroed per connection, so every open connection costs its full size in memory: with
/// thousands of config listeners parked at the gateway that was most of its memory. Client
/// requests are small (a large publish body is read in several calls), and nothing here
/// speaks TLS.
const DOWNSTREAM_READ_BUFFER: usize = 0;

/// Runs the gateway until `stop`; blocks the calling thread.
pub fn run(settings: GatewaySettings, stop: Stop) -> Result<(), GatewayError> {
    settings.validate()?;
    // pingora exits the process when it cannot bind; check first so the caller gets an error.
    std::net::TcpListener::bind(settings.listen).map_err(|source| GatewayError::Listen {
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
    let mut proxy = pingora::services::listening::Service::new(
        "nacre gateway".to_string(),
        Admission {
            proxy: Arc::new(pingora::proxy::http_proxy(
                &server.configuration,
                Gateway::new(shared.clone()),
            )),
            shared: shared.clone(),
        },
    );
    proxy.add_listener(ListenerConfig::tcp(settings.listen.to_string()).l4_buffer(
        L4BufferSettings::new(DOWNSTREAM_READ_BUFFER, DOWNSTREAM_WRITE_BUFFER),
    ));
    server.add_service(proxy);
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
