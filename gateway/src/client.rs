//! A client connection as the gateway holds it: the socket, bytes put back for the next read,
//! and a write buffer that exists only while an answer is being written.
//!
//! pingora's own stream allocates its buffers when the connection is accepted and keeps them
//! (and ~400 bytes of digests and timings) for the connection's whole life, which for a parked
//! config listener or an idle keep-alive connection is most of what it costs. This stream
//! holds, between requests, the socket and two empty fields:
//!
//! - **C1 (put back, read first).** Bytes given to [`ClientStream::rewind`] are read before
//!   anything from the socket, in the order they were read first; pingora reads a request the
//!   edge looked at and handed over as if nobody had read it.
//! - **C2 (one write per answer).** Writes gather in a buffer (up to [`WRITE_BUFFER`] bytes; a
//!   larger write goes straight to the socket after what is gathered) that a flush sends and
//!   frees, so a head and body written separately leave in one system call, and a connection
//!   between answers holds no buffer. An answer given in parts ([`ClientStream::send_parts`])
//!   goes from them to the socket in vectored writes, copied by nobody but the kernel.
//! - **C3 (resting).** A connection whose request waits a long time without reading or writing
//!   (a parked config listener) can rest ([`ClientStream::rest`]): its socket leaves the
//!   runtime's I/O driver, which keeps a cache-line-aligned record per registered socket, until
//!   [`ClientStream::wake`]. Reading or writing a resting stream is an error.
//! - **C4 (what pingora asks of a stream).** It is a pingora `IO`: its id is the socket's
//!   descriptor, its socket digest (client address) is made on first use, and it has no TLS,
//!   proxy or timing digests.

use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};

use async_trait::async_trait;
use bytes::{Buf, Bytes, BytesMut};
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// The most a write buffer gathers before it is sent (rule C2): room for a typical list answer
/// and its head.
pub const WRITE_BUFFER: usize = 32 * 1024;

/// A connection's socket in each of its states (rule C3).
#[derive(Debug)]
enum Socket {
    /// Registered with the runtime's I/O driver.
    Live(TcpStream),
    /// Out of the driver while its request waits.
    Resting(std::net::TcpStream),
    /// Lost moving between the two: every read and write fails.
    Lost,
}

/// A client connection (see the module doc).
#[derive(Debug)]
pub struct ClientStream {
    socket: Socket,
    /// Put back, read before the socket (rule C1).
    rewound: Bytes,
    /// Gathered writes (rule C2); empty, with no allocation, between answers.
    out: Vec<u8>,
    /// How much of `out` the socket has taken (`out` never holds more than [`WRITE_BUFFER`]).
    sent: u32,
    /// Made when pingora first asks (rule C4).
    digest: OnceLock<Arc<SocketDigest>>,
}

impl ClientStream {
    /// Wraps an accepted socket.
    pub fn new(tcp: TcpStream) -> Self {
        Self {
            socket: Socket::Live(tcp),
            rewound: Bytes::new(),
            out: Vec::new(),
            sent: 0,
            digest: OnceLock::new(),
        }
    }

    /// Puts `bytes` back, to be read before anything already put back and before the socket
    /// (rule C1).
    pub fn rewind(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        self.rewound = if self.rewound.is_empty() {
            bytes
        } else {
            let mut joined = BytesMut::with_capacity(bytes.len() + self.rewound.len());
            joined.extend_from_slice(&bytes);
            joined.extend_from_slice(&self.rewound);
            joined.freeze()
        };
    }

    /// Whether bytes put back are waiting to be read.
    pub fn has_rewound(&self) -> bool {
        !self.rewound.is_empty()
    }

    /// Takes the socket out of the runtime's I/O driver (rule C3). A socket that cannot be
    /// taken out is closed: the next read or write fails.
    pub fn rest(&mut self) {
        self.socket = match std::mem::replace(&mut self.socket, Socket::Lost) {
            Socket::Live(tcp) => tcp.into_std().map_or(Socket::Lost, Socket::Resting),
            other => other,
        };
    }

    /// Registers a resting socket again (rule C3); if that fails, the next read or write fails.
    pub fn wake(&mut self) {
        self.socket = match std::mem::replace(&mut self.socket, Socket::Lost) {
            Socket::Resting(std) => TcpStream::from_std(std).map_or(Socket::Lost, Socket::Live),
            other => other,
        };
    }

    /// The registered socket, or the error of a resting or lost one.
    fn live(&self) -> io::Result<&TcpStream> {
        match &self.socket {
            Socket::Live(tcp) => Ok(tcp),
            _ => Err(not_live()),
        }
    }

    /// `op` on the registered socket, or the error of a resting or lost one.
    fn on_live<T>(
        &mut self,
        op: impl FnOnce(Pin<&mut TcpStream>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match &mut self.socket {
            Socket::Live(tcp) => op(Pin::new(tcp)),
            _ => Poll::Ready(Err(not_live())),
        }
    }

    /// Waits until the socket has something to read (or is closed or broken).
    pub async fn readable(&self) -> io::Result<()> {
        self.live()?.readable().await
    }

    /// The next bytes of the connection, at most `max` of them read from the socket (what was
    /// put back comes whole): waits for them; `None` at end of stream or on an error.
    pub async fn read_some(&mut self, max: usize) -> Option<Bytes> {
        if !self.rewound.is_empty() {
            return Some(std::mem::take(&mut self.rewound));
        }
        let tcp = self.live().ok()?;
        let mut buf = BytesMut::with_capacity(max);
        loop {
            match tcp.try_read_buf(&mut buf) {
                Ok(0) => return None,
                Ok(_) => return Some(buf.freeze()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    tcp.readable().await.ok()?;
                }
                Err(_) => return None,
            }
        }
    }

    /// Writes `parts` in order, after anything gathered (rule C2), without copying them: one
    /// vectored write when the socket takes it all.
    pub async fn send_parts(&mut self, mut parts: &mut [io::IoSlice<'_>]) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_send(cx)).await?;
        // Skips leading empty parts, so an answer made only of them writes nothing.
        io::IoSlice::advance_slices(&mut parts, 0);
        while !parts.is_empty() {
            let tcp = self.live()?;
            match tcp.try_write_vectored(parts) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => io::IoSlice::advance_slices(&mut parts, n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => tcp.writable().await?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Sends what is gathered, then frees the buffer (rule C2).
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while (self.sent as usize) < self.out.len() {
            let n = match &mut self.socket {
                Socket::Live(tcp) => {
                    ready!(Pin::new(tcp).poll_write(cx, &self.out[self.sent as usize..]))?
                }
                _ => return Poll::Ready(Err(not_live())),
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            // At most what `out` holds, which is at most WRITE_BUFFER.
            self.sent += n as u32;
        }
        self.out = Vec::new();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.rewound.is_empty() {
            let n = buf.remaining().min(this.rewound.len());
            buf.put_slice(&this.rewound[..n]);
            this.rewound.advance(n);
            return Poll::Ready(Ok(()));
        }
        this.on_live(|tcp| tcp.poll_read(cx, buf))
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.out.len() + data.len() > WRITE_BUFFER {
            ready!(this.poll_send(cx))?;
        }
        if data.len() >= WRITE_BUFFER {
            return this.on_live(|tcp| tcp.poll_write(cx, data));
        }
        this.out.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        this.on_live(|tcp| tcp.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        this.on_live(|tcp| tcp.poll_shutdown(cx))
    }
}

#[async_trait]
impl Shutdown for ClientStream {
    async fn shutdown(&mut self) {
        if let Err(e) = AsyncWriteExt::shutdown(self).await {
            tracing::debug!(error = %e, "closing a client connection");
        }
    }
}

impl ClientStream {
    /// The socket's descriptor (`-1` for a socket lost on waking).
    fn fd(&self) -> std::os::fd::RawFd {
        match &self.socket {
            Socket::Live(tcp) => tcp.as_raw_fd(),
            Socket::Resting(std) => std.as_raw_fd(),
            Socket::Lost => -1,
        }
    }
}

/// The error of reading or writing a resting (or lost) socket.
fn not_live() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the connection is resting")
}

impl UniqueID for ClientStream {
    fn id(&self) -> UniqueIDType {
        self.fd()
    }
}

impl Ssl for ClientStream {}

impl Peek for ClientStream {}

impl GetTimingDigest for ClientStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        Vec::new()
    }
}

impl GetProxyDigest for ClientStream {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        None
    }
}

impl GetSocketDigest for ClientStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        let fd = self.fd();
        Some(
            self.digest
                .get_or_init(|| Arc::new(SocketDigest::from_raw_fd(fd)))
                .clone(),
        )
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    async fn pair() -> (ClientStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (ours, _) = listener.accept().await.unwrap();
        (ClientStream::new(ours), peer)
    }

    #[tokio::test]
    async fn c1_put_back_bytes_come_first_and_in_their_order() {
        let (mut ours, mut peer) = pair().await;
        peer.write_all(b"socket").await.unwrap();
        ours.rewind(Bytes::from_static(b"second "));
        ours.rewind(Bytes::from_static(b"first "));
        assert!(ours.has_rewound());
        let mut got = vec![0; 19];
        ours.read_exact(&mut got).await.unwrap();
        assert_eq!(got, b"first second socket");
        assert!(!ours.has_rewound());
    }

    #[tokio::test]
    async fn c1_read_some_returns_what_was_put_back_whole_then_the_socket() {
        let (mut ours, mut peer) = pair().await;
        ours.rewind(Bytes::from_static(b"again"));
        assert_eq!(ours.read_some(2).await.unwrap(), &b"again"[..]);
        peer.write_all(b"abcdef").await.unwrap();
        assert_eq!(ours.read_some(4).await.unwrap(), &b"abcd"[..]);
        drop(peer);
        assert_eq!(ours.read_some(4).await.unwrap(), &b"ef"[..]);
        assert!(ours.read_some(4).await.is_none());
    }

    #[tokio::test]
    async fn c2_writes_gather_until_a_flush_and_the_buffer_is_freed() {
        let (mut ours, mut peer) = pair().await;
        ours.write_all(b"head ").await.unwrap();
        ours.write_all(b"body").await.unwrap();
        assert_eq!(ours.out, b"head body");
        ours.flush().await.unwrap();
        assert_eq!(ours.out.capacity(), 0);
        // Larger than the buffer: what is gathered goes first, then the rest.
        ours.write_all(b"<").await.unwrap();
        let big = vec![b'x'; WRITE_BUFFER + 10];
        ours.write_all(&big).await.unwrap();
        ours.flush().await.unwrap();
        drop(ours);
        let mut got = Vec::new();
        peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(&got[..10], b"head body<");
        assert_eq!(got.len(), 10 + WRITE_BUFFER + 10);
    }

    #[tokio::test]
    async fn c2_parts_go_out_whole_and_in_order_after_what_is_gathered() {
        let (mut ours, mut peer) = pair().await;
        ours.write_all(b"gathered ").await.unwrap();
        // Larger than a socket takes at once, so the vectored write resumes mid-part.
        let big = vec![b'y'; 4 << 20];
        let parts: [&[u8]; 5] = [b"", b"head ", b"", &big, b" tail"];
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            peer.read_to_end(&mut got).await.unwrap();
            got
        });
        let mut slices = parts.map(io::IoSlice::new);
        ours.send_parts(&mut slices).await.unwrap();
        assert_eq!(ours.out.capacity(), 0, "nothing was copied into the buffer");
        drop(ours);
        let got = reader.await.unwrap();
        assert_eq!(&got[..14], b"gathered head ");
        assert_eq!(got.len(), 14 + big.len() + 5);
        assert!(got.ends_with(b"y tail"));
    }

    #[tokio::test]
    async fn c3_a_resting_stream_neither_reads_nor_writes_and_wakes_whole() {
        let (mut ours, mut peer) = pair().await;
        ours.rest();
        peer.write_all(b"sent while resting").await.unwrap();
        assert!(ours.write_all(b"x").await.is_ok(), "gathered, not sent");
        assert_eq!(
            ours.flush().await.unwrap_err().kind(),
            io::ErrorKind::NotConnected
        );
        assert!(ours.read_some(64).await.is_none());
        ours.out.clear();
        ours.wake();
        assert_eq!(
            ours.read_some(64).await.unwrap(),
            &b"sent while resting"[..]
        );
        ours.write_all(b"answer").await.unwrap();
        ours.flush().await.unwrap();
        let mut got = [0; 6];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"answer");
    }

    #[tokio::test]
    async fn c4_the_socket_digest_names_the_client() {
        let (ours, peer) = pair().await;
        let digest = ours.get_socket_digest().unwrap();
        let seen = digest.peer_addr().and_then(|a| a.as_inet()).copied();
        assert_eq!(seen, Some(peer.local_addr().unwrap()));
        assert!(Arc::ptr_eq(&digest, &ours.get_socket_digest().unwrap()));
    }
}
