//! The node's TCP listener: a connection budget for clients, a reserve that only peers may use,
//! and an idle timeout for every connection.
//!
//! Peers (other nodes, the gateway's monitor and feed) share the public port with clients. If
//! clients could take every connection slot — ten thousand idle keep-alive sockets are enough —
//! a node would stop answering its peers' probes, be marked DOWN and lose its services while
//! perfectly healthy. So the listener admits connections in two tiers:
//!
//! - **Client budget** (`max_connections`): any connection, until the budget is used up.
//! - **Peer reserve** (`peer_connections`): connections accepted while the client budget is
//!   full. They are tagged [`Admission::Reserve`]; [`admit_reserve`] answers every request on
//!   such a connection that does not carry the cluster secret with 503 and closes it, so only
//!   peers are ever served from the reserve. Until a request with the secret has vouched for
//!   it, a reserve connection is closed after [`UNVOUCHED_IDLE`] of silence, so sockets that
//!   never say anything cannot sit on the reserve either.
//!
//! When both are full the listener stops accepting and the kernel backlog absorbs the flood.
//!
//! **Idle timeout** (`idle_timeout_ms`): a connection on which nothing was read or written for
//! that long is closed, so idle client sockets give their slot back. Peers' own connection pools
//! idle out before it (30 s), so a peer never sends on a connection the node is closing.
//!
//! **Read turns**: every read of a connection's socket first asks the node's [`ReadTurns`]
//! (rule G3 in [`nacre_ring::turns`]), so that when the node is behind, client reads wait in their
//! sockets and beats go first.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::PollSemaphore;

use nacre_ring::turns::ReadTurns;

/// How long a reserve connection may stay silent before a peer has vouched for it (sent a
/// request with the cluster secret): a peer sends its request right after connecting, while
/// idle sockets must give the slot back quickly.
pub const UNVOUCHED_IDLE: Duration = Duration::from_secs(2);

/// Which budget a connection was admitted from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The client budget: any caller.
    Client,
    /// The peer reserve: only requests carrying the cluster secret are served.
    Reserve,
}

/// Connection limits of a [`BoundedListener`].
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections any caller may hold.
    pub clients: usize,
    /// Further connections kept for peers once `clients` are taken.
    pub peer_reserve: usize,
    /// A connection idle this long is closed.
    pub idle: Duration,
}

/// A listener admitting at most `clients + peer_reserve` open connections.
pub struct BoundedListener {
    inner: TcpListener,
    clients: ClientSlots,
    reserve: Arc<Semaphore>,
    idle: Duration,
    turns: Option<Arc<ReadTurns>>,
}

/// The client budget's slots: how many client connections are open is how many are taken.
#[derive(Clone)]
struct ClientSlots {
    free: Arc<Semaphore>,
    size: usize,
}

impl ClientSlots {
    /// Client connections open now (and an accept waiting on its slot).
    fn taken(&self) -> usize {
        self.size.saturating_sub(self.free.available_permits())
    }
}

impl BoundedListener {
    /// Wraps `inner` with `limits`.
    pub fn new(inner: TcpListener, limits: Limits) -> Self {
        Self {
            inner,
            clients: ClientSlots {
                free: Arc::new(Semaphore::new(limits.clients)),
                size: limits.clients,
            },
            reserve: Arc::new(Semaphore::new(limits.peer_reserve)),
            idle: limits.idle,
            turns: None,
        }
    }

    /// Has every connection's reads take their turns from `turns` (rule G3); `None` reads at
    /// once.
    pub fn with_read_turns(mut self, turns: Option<Arc<ReadTurns>>) -> Self {
        self.turns = turns;
        self
    }

    /// How many client connections are open now: the count the node's read turns judge a
    /// crowd by (rule G3).
    pub fn open_clients(&self) -> nacre_ring::turns::OpenCount {
        let clients = self.clients.clone();
        Box::new(move || clients.taken())
    }

    /// A slot from the client budget if one is free, else from the reserve; waits for
    /// whichever frees first when both are full.
    async fn slot(&self) -> (OwnedSemaphorePermit, Admission) {
        loop {
            if let Ok(p) = self.clients.free.clone().try_acquire_owned() {
                return (p, Admission::Client);
            }
            if let Ok(p) = self.reserve.clone().try_acquire_owned() {
                return (p, Admission::Reserve);
            }
            let acquired = tokio::select! {
                p = self.clients.free.clone().acquire_owned() => p.map(|p| (p, Admission::Client)),
                p = self.reserve.clone().acquire_owned() => p.map(|p| (p, Admission::Reserve)),
            };
            match acquired {
                Ok(slot) => return slot,
                // The semaphores are never closed; if they were, stop admitting for a moment.
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

/// What a handler knows about its connection, recorded as axum `ConnectInfo`.
#[derive(Debug, Clone)]
pub struct PeerAddr {
    /// The TCP peer.
    pub addr: SocketAddr,
    /// The budget the connection came from.
    pub admission: Admission,
    /// Set once a request on the connection carried the cluster secret.
    vouched: Arc<AtomicBool>,
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, BoundedListener>>
    for PeerAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, BoundedListener>) -> Self {
        PeerAddr {
            addr: *stream.remote_addr(),
            admission: stream.io().admission,
            vouched: stream.io().vouched.clone(),
        }
    }
}

/// Middleware for every route: on a reserve connection, only requests carrying the cluster
/// secret are served; anyone else gets 503 and the connection is closed, freeing the slot.
pub async fn admit_reserve(State(secret): State<Arc<str>>, req: Request, next: Next) -> Response {
    let Some(conn) = req
        .extensions()
        .get::<axum::extract::ConnectInfo<PeerAddr>>()
        .filter(|c| c.0.admission == Admission::Reserve)
    else {
        return next.run(req).await;
    };
    if crate::peer::secret_matches(req.headers(), &secret) {
        conn.0.vouched.store(true, Ordering::Relaxed);
    } else {
        tracing::debug!("client request on a reserve connection refused");
        let mut r = (
            StatusCode::SERVICE_UNAVAILABLE,
            "server is at its connection limit, retry later",
        )
            .into_response();
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return r;
    }
    next.run(req).await
}

/// A TCP stream that returns its connection slot when dropped and fails once idle too long.
pub struct BoundedStream {
    stream: TcpStream,
    admission: Admission,
    vouched: Arc<AtomicBool>,
    idle: Duration,
    /// Fires `idle` after the last byte read or written.
    deadline: Pin<Box<Sleep>>,
    /// Rule G3: where this connection's reads take their turns.
    turn: Option<Turn>,
    _permit: OwnedSemaphorePermit,
}

/// A connection's standing with the node's [`ReadTurns`].
struct Turn {
    turns: Arc<ReadTurns>,
    /// The next read of the socket may go ahead.
    granted: bool,
    /// Queued for a turn: the input opens a client read and the round's turns were gone.
    queued: bool,
    /// Where it queues, kept once made: its acquire future is reused, not reallocated.
    queue: Option<PollSemaphore>,
}

impl Turn {
    /// Rule G3: ready once the next read of `stream` may go ahead. Pending while the socket
    /// has nothing to read (no turn is taken for that) or while its client read waits for a
    /// turn; `queued` tells the two apart.
    fn poll(&mut self, stream: &TcpStream, cx: &mut Context<'_>) -> Poll<()> {
        if self.granted {
            return Poll::Ready(());
        }
        if self.queued {
            let queue = self
                .queue
                .get_or_insert_with(|| PollSemaphore::new(self.turns.queue()));
            // None: the rounds have ended (the node is stopping) and the queue is closed.
            if let Some(turn) = std::task::ready!(queue.poll_acquire(cx)) {
                self.turns.use_queued_turn(turn);
            }
            self.queued = false;
            return self.grant();
        }
        // An error is the read's to report.
        if let Ok(()) = std::task::ready!(stream.poll_read_ready(cx)) {
            if !self.turns.go_ahead() && std::task::ready!(self.peek_read(stream, cx)) {
                self.turns.enqueue();
                self.queued = true;
                return self.poll(stream, cx);
            }
        }
        self.grant()
    }

    /// Whether the unread input opens a client read; pending if it has gone meanwhile.
    fn peek_read(&self, stream: &TcpStream, cx: &mut Context<'_>) -> Poll<bool> {
        let mut head = [0u8; nacre_ring::turns::PEEK_BYTES];
        let mut buf = ReadBuf::new(&mut head);
        match std::task::ready!(stream.poll_peek(cx, &mut buf)) {
            Ok(_) => Poll::Ready(nacre_ring::turns::is_read(buf.filled())),
            Err(_) => Poll::Ready(false),
        }
    }

    fn grant(&mut self) -> Poll<()> {
        self.granted = true;
        Poll::Ready(())
    }
}

impl BoundedStream {
    fn new(
        stream: TcpStream,
        admission: Admission,
        idle: Duration,
        turns: Option<Arc<ReadTurns>>,
        permit: OwnedSemaphorePermit,
    ) -> Self {
        let mut s = Self {
            stream,
            admission,
            vouched: Arc::new(AtomicBool::new(false)),
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
            turn: turns.map(|turns| Turn {
                turns,
                granted: false,
                queued: false,
                queue: None,
            }),
            _permit: permit,
        };
        s.touched();
        s
    }

    /// How long the connection may stay silent now.
    fn idle_limit(&self) -> Duration {
        match self.admission {
            Admission::Reserve if !self.vouched.load(Ordering::Relaxed) => {
                self.idle.min(UNVOUCHED_IDLE)
            }
            _ => self.idle,
        }
    }

    /// Moves the idle deadline after activity.
    fn touched(&mut self) {
        let next = Instant::now() + self.idle_limit();
        self.deadline.as_mut().reset(next);
    }

    /// While the stream has nothing to offer: an error once the idle deadline has passed.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection idle too long",
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl axum::serve::Listener for BoundedListener {
    type Io = BoundedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (permit, admission) = self.slot().await;
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    if admission == Admission::Reserve {
                        tracing::debug!(%addr, "client budget full, connection admitted from the peer reserve");
                    }
                    return (
                        BoundedStream::new(
                            stream,
                            admission,
                            self.idle,
                            self.turns.clone(),
                            permit,
                        ),
                        addr,
                    );
                }
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

impl AsyncRead for BoundedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(turn) = this.turn.as_mut() {
            if turn.poll(&this.stream, cx).is_pending() {
                // Waiting for a turn is the node's delay, not the client's silence.
                return if turn.queued {
                    Poll::Pending
                } else {
                    this.poll_idle(cx).map(Err)
                };
            }
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        // Each read of the socket takes a turn of its own; one granted on readiness that
        // turned out stale is spent too, so a later request never goes ahead on it.
        if let Some(turn) = this.turn.as_mut() {
            turn.granted = false;
        }
        match read {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.touched();
                }
                Poll::Ready(r)
            }
            Poll::Pending => this.poll_idle(cx).map(Err),
        }
    }
}

impl AsyncWrite for BoundedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touched();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touched();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::serve::Listener;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn limits(clients: usize, peer_reserve: usize) -> Limits {
        Limits {
            clients,
            peer_reserve,
            idle: Duration::from_secs(60),
        }
    }

    #[tokio::test]
    async fn a_connection_beyond_both_budgets_waits_for_a_free_slot() {
        let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = inner.local_addr().unwrap();
        let mut l = BoundedListener::new(inner, limits(2, 0));
        let _c1 = TcpStream::connect(addr).await.unwrap();
        let _c2 = TcpStream::connect(addr).await.unwrap();
        let _c3 = TcpStream::connect(addr).await.unwrap();
        let (s1, _) = l.accept().await;
        let (_s2, _) = l.accept().await;
        assert!(
            tokio::time::timeout(Duration::from_millis(200), l.accept())
                .await
                .is_err(),
            "a third connection was admitted"
        );
        drop(s1);
        assert!(tokio::time::timeout(Duration::from_secs(2), l.accept())
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn connections_past_the_client_budget_come_from_the_reserve() {
        let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = inner.local_addr().unwrap();
        let mut l = BoundedListener::new(inner, limits(1, 1));
        let _c1 = TcpStream::connect(addr).await.unwrap();
        let _c2 = TcpStream::connect(addr).await.unwrap();
        let (first, _) = l.accept().await;
        let (second, _) = l.accept().await;
        assert_eq!(first.admission, Admission::Client);
        assert_eq!(second.admission, Admission::Reserve);
        // A freed client slot is used before the reserve again.
        drop(first);
        let _c3 = TcpStream::connect(addr).await.unwrap();
        let (third, _) = tokio::time::timeout(Duration::from_secs(2), l.accept())
            .await
            .unwrap();
        assert_eq!(third.admission, Admission::Client);
    }

    #[tokio::test]
    async fn an_idle_connection_fails_after_the_idle_timeout_and_activity_postpones_it() {
        let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = inner.local_addr().unwrap();
        let mut l = BoundedListener::new(
            inner,
            Limits {
                clients: 4,
                peer_reserve: 0,
                idle: Duration::from_millis(300),
            },
        );
        let mut c = TcpStream::connect(addr).await.unwrap();
        let (mut s, _) = l.accept().await;
        let started = Instant::now();
        // Bytes every 100 ms keep it open past the timeout.
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            c.write_all(b"x").await.unwrap();
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await.unwrap();
        }
        assert!(started.elapsed() >= Duration::from_millis(500));
        let mut b = [0u8; 1];
        let err = tokio::time::timeout(Duration::from_secs(2), s.read(&mut b))
            .await
            .expect("idle read never ended")
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    /// What one read of `stream` into `buf` got, within `d`.
    async fn read_within(d: Duration, stream: &mut BoundedStream, buf: &mut [u8]) -> usize {
        tokio::time::timeout(d, stream.read(buf))
            .await
            .expect("read in time")
            .unwrap()
    }

    #[tokio::test]
    async fn g3_past_a_round_s_turns_a_read_waits_in_its_socket_and_a_beat_goes_ahead() {
        let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = inner.local_addr().unwrap();
        let waited = prometheus::IntCounter::new("waited", "waited").unwrap();
        let w = waited.clone();
        // No crowd needed: two connections take turns here.
        let l = BoundedListener::new(inner, limits(4, 0));
        let turns = ReadTurns::new(1, 0, l.open_clients(), Box::new(move || w.inc())).unwrap();
        let mut l = l.with_read_turns(Some(turns.clone()));
        let mut lister = TcpStream::connect(addr).await.unwrap();
        let mut beater = TcpStream::connect(addr).await.unwrap();
        let (mut lists, _) = l.accept().await;
        let (mut beats, _) = l.accept().await;
        let list = b"GET /nacos/v1/ns/instance/list?serviceName=a HTTP/1.1\r\n\r\n";
        let beat = b"PUT /nacos/v1/ns/instance/beat?serviceName=a HTTP/1.1\r\n\r\n";
        let mut buf = [0u8; 256];
        let soon = Duration::from_millis(300);

        // The round's one turn goes to the first list.
        lister.write_all(list).await.unwrap();
        let n = read_within(soon, &mut lists, &mut buf).await;
        assert_eq!(&buf[..n], list);
        // The next list finds no turn: it stays in its socket…
        lister.write_all(list).await.unwrap();
        assert!(
            tokio::time::timeout(soon, lists.read(&mut buf))
                .await
                .is_err(),
            "a read past the round's turns went ahead"
        );
        assert_eq!(waited.get(), 1);
        // …while a beat is read at once, without a turn.
        beater.write_all(beat).await.unwrap();
        let n = read_within(soon, &mut beats, &mut buf).await;
        assert_eq!(&buf[..n], beat);
        // The next round serves the queued list.
        let stop = tokio_util::sync::CancellationToken::new();
        let rounds = tokio::spawn(turns.run(stop.clone()));
        let n = read_within(Duration::from_secs(2), &mut lists, &mut buf).await;
        assert_eq!(&buf[..n], list);
        stop.cancel();
        rounds.await.unwrap();
    }

    #[tokio::test]
    async fn reserve_connections_idle_out_sooner_until_a_peer_vouches_for_them() {
        let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = inner.local_addr().unwrap();
        let mut l = BoundedListener::new(inner, limits(1, 1));
        let _c1 = TcpStream::connect(addr).await.unwrap();
        let _c2 = TcpStream::connect(addr).await.unwrap();
        let (client, _) = l.accept().await;
        let (reserve, _) = l.accept().await;
        assert_eq!(client.idle_limit(), Duration::from_secs(60));
        assert_eq!(reserve.idle_limit(), UNVOUCHED_IDLE);
        reserve.vouched.store(true, Ordering::Relaxed);
        assert_eq!(reserve.idle_limit(), Duration::from_secs(60));
    }
}
