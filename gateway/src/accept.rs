//! The gateway's listening socket and each client connection's life, run as a pingora service
//! of its own instead of pingora's listening service.
//!
//! pingora's listening service wraps every accepted socket in its own stream (buffers, digests)
//! and runs it inside a task whose future holds pingora's per-connection state, for as long as
//! the connection is open. A gateway holding thousands of parked config listeners or idle
//! keep-alive connections paid that on each (~10 KB measured per idle connection). Here:
//!
//! - **A1 (admission).** A connection over its client's cap is closed at once and counted
//!   (`nacre_gateway_connections_refused_total`); one admitted holds its place, and counts in
//!   `nacre_gateway_client_connections`, exactly as long as it is open.
//! - **A2 (small between requests).** Between requests a connection's task holds its
//!   [`ClientStream`] and the wait for its next request ([`crate::edge::next_request`]); all
//!   the work of one request, and pingora's session when a request goes to pingora, is in a
//!   future made for that request and freed after it. A parked config listener is held the
//!   same way: its task holds the connection (resting, out of the I/O driver), the parked poll
//!   ([`crate::edge::Waiting`]) and the wait for a change, and the request's future is gone
//!   until the poll is looked at again.
//! - **A3 (pingora serves the rest).** A request the edge does not serve ([`crate::edge`] rule
//!   E2) is served by pingora's HTTP proxy on the same connection, with the keep-alive
//!   settings pingora carried from the connection's previous request, and the connection comes
//!   back here after it.
//! - **A4 (shutdown).** Once shutdown begins the socket accepts no more connections; idle
//!   connections close, and a request already received is served and answered with
//!   `Connection: close` (rule E4).

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::{HttpPersistentSettings, HttpServerApp};
use pingora::protocols::http::ServerSession;
use pingora::proxy::HttpProxy;
use pingora::server::ListenFds;
use pingora::server::ShutdownWatch;
use pingora::services::Service;

use crate::client::ClientStream;
use crate::edge;
use crate::metrics::Held;
use crate::proxy::Gateway;
use crate::Shared;

/// The gateway's client-facing service: its socket, bound before pingora starts so that a
/// taken address is the caller's error, and what serves each connection.
pub struct Accept {
    listener: Option<std::net::TcpListener>,
    conns: Arc<Connections>,
}

impl Accept {
    /// A service accepting on `listener` (bound, listening, non-blocking).
    pub fn new(
        listener: std::net::TcpListener,
        proxy: HttpProxy<Gateway>,
        shared: Arc<Shared>,
    ) -> Self {
        Self {
            listener: Some(listener),
            conns: Arc::new(Connections {
                proxy: Arc::new(proxy),
                shared,
            }),
        }
    }
}

#[async_trait]
impl Service for Accept {
    async fn start_service(
        &mut self,
        _fds: Option<ListenFds>,
        mut shutdown: ShutdownWatch,
        _listeners_per_fd: usize,
    ) {
        let Some(listener) = self.listener.take() else {
            return;
        };
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "the gateway's socket cannot be used");
                return;
            }
        };
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = shutdown.wait_for(|stopping| *stopping) => break,
            };
            match accepted {
                Ok((tcp, peer)) => {
                    // Answers are written whole (rule C2 of `client`): nothing gains from Nagle.
                    let _ = tcp.set_nodelay(true);
                    let conns = self.conns.clone();
                    let shutdown = shutdown.clone();
                    // Boxed here: the task keeps a pointer, not the socket and address it was
                    // made from (rule A2).
                    let stream = Box::new(ClientStream::new(tcp));
                    let client = peer.ip();
                    // Spread over the service's threads as pingora spreads its connections.
                    pingora_runtime::current_handle().spawn(async move {
                        conns.serve(stream, client, &shutdown).await;
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    // Out of descriptors: accept() fails at once until one is freed.
                    if e.raw_os_error() == Some(24) || e.raw_os_error() == Some(23) {
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                }
            }
        }
        tracing::info!("gateway stopped accepting connections");
    }

    fn name(&self) -> &str {
        "nacre gateway"
    }
}

/// What serves each connection (rules A1–A4). A connection is boxed once for its life: the
/// futures holding it hold a pointer, and pingora takes it as its boxed stream without copying.
struct Connections {
    proxy: Arc<HttpProxy<Gateway>>,
    shared: Arc<Shared>,
}

/// pingora's keep-alive settings from a connection's previous request, boxed: they exist only
/// after a request pingora served, and every future holding the connection holds this.
type Carried = Option<Box<HttpPersistentSettings>>;

/// What became of one request.
enum Next {
    /// The connection waits for its next request; pingora's keep-alive settings, if pingora
    /// served this one.
    Again(Box<ClientStream>, Carried),
    /// The connection is closed.
    Close,
    /// A listener poll waits for a change (rule A2).
    Wait(Box<ClientStream>, Carried, edge::Waiting),
}

impl Next {
    /// What follows a listener poll served on `stream`.
    fn of(polled: edge::Polled, stream: Box<ClientStream>, carried: Carried) -> Self {
        match polled {
            edge::Polled::Answered(true) => Next::Again(stream, carried),
            edge::Polled::Answered(false) => Next::Close,
            edge::Polled::Waiting(w) => Next::Wait(stream, carried, w),
        }
    }
}

impl Connections {
    /// Serves `stream` until it closes (rule A1 first).
    async fn serve(&self, mut stream: Box<ClientStream>, client: IpAddr, shutdown: &ShutdownWatch) {
        let _counted = Held::new(&self.shared.metrics.client_connections);
        let _admitted = match &self.shared.caps {
            None => None,
            Some(caps) => match caps.admit(client) {
                Some(admitted) => Some(admitted),
                None => {
                    self.shared.metrics.connections_refused.inc();
                    tracing::debug!(%client, cap = caps.per_client(), "connection over the per-client cap closed");
                    return;
                }
            },
        };
        let mut carried = None;
        loop {
            if !edge::next_request(&self.shared, &stream).await {
                return;
            }
            // Boxed (rule A2): the connection's own future stays as small as its idle wait.
            let mut next = Box::pin(self.one(stream, carried, client, shutdown)).await;
            loop {
                match next {
                    Next::Again(s, settings) => {
                        stream = s;
                        carried = settings;
                        break;
                    }
                    Next::Close => return,
                    // Rule A2 for a parked listener: only its wait is held here.
                    Next::Wait(mut s, settings, waiting) => {
                        // Nothing is read or written while it waits (rule C3 of `client`).
                        s.rest();
                        let changed = waiting.wait(&self.shared).await;
                        s.wake();
                        let resumed =
                            edge::resume(&self.shared, &mut s, waiting, changed, shutdown);
                        next = Next::of(Box::pin(resumed).await, s, settings);
                    }
                }
            }
        }
    }

    /// Serves one request: at the edge when it is one the edge serves (rule E2), else through
    /// pingora (rule A3).
    async fn one(
        &self,
        mut stream: Box<ClientStream>,
        carried: Carried,
        client: IpAddr,
        shutdown: &ShutdownWatch,
    ) -> Next {
        // Every step below that waits is boxed: this future lives while its request is served
        // (a parked listener: up to 30 s), and is as large as its largest state.
        let Some(first) = stream.read_some(edge::FIRST_READ).await else {
            return Next::Close;
        };
        // Rule G3: a client read past the round's turns waits here, its first bytes in hand.
        if let Some(turns) = edge::turn_to_wait(&self.shared, &first) {
            turns.wait().await;
        }
        let client = Some(client);
        let taken = if edge::may_take(&self.shared, &first) {
            Box::pin(edge::take(&self.shared, &mut stream, first, client)).await
        } else {
            stream.rewind(first);
            None
        };
        let served = match taken {
            Some(edge::Taken::Listener(listener)) => {
                let polled = Box::pin(edge::serve(
                    &self.shared,
                    &mut stream,
                    listener,
                    client,
                    shutdown,
                ))
                .await;
                return Next::of(polled, stream, carried);
            }
            Some(edge::Taken::Relay(beat)) => {
                Box::pin(edge::serve_relayed(
                    &self.shared,
                    &mut stream,
                    beat,
                    client,
                    shutdown,
                ))
                .await
            }
            Some(edge::Taken::List(list)) => {
                Box::pin(edge::serve_list(
                    &self.shared,
                    &mut stream,
                    list,
                    client,
                    shutdown,
                ))
                .await
            }
            None => edge::Served::Proxy,
        };
        match served {
            edge::Served::Answered(true) => return Next::Again(stream, carried),
            edge::Served::Answered(false) => return Next::Close,
            // Put back into the stream: pingora serves it.
            edge::Served::Proxy => {}
        }
        let session = session(stream, carried, shutdown);
        let Some(reused) = self.proxy.process_new_http(session, shutdown).await else {
            return Next::Close;
        };
        let (next, settings) = reused.consume();
        match next.into_any().downcast::<ClientStream>() {
            Ok(stream) => Next::Again(stream, settings.map(Box::new)),
            // pingora gives back the stream it was given; anything else cannot be served here.
            Err(_) => Next::Close,
        }
    }
}

/// pingora's session for a request on `stream`, with the keep-alive settings carried from the
/// connection's previous request. Made outside [`Connections::one`] so that the session, which
/// is large, takes no room in that future once handed to pingora.
fn session(stream: Box<ClientStream>, carried: Carried, shutdown: &ShutdownWatch) -> ServerSession {
    let mut session = ServerSession::new_http1(stream);
    match carried {
        Some(settings) => settings.apply_to_session(&mut session),
        None => session.set_keepalive(Some(edge::KEEPALIVE.as_secs())),
    }
    if *shutdown.borrow() {
        session.set_keepalive(None);
    }
    session
}
