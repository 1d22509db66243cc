//! Each client connection's keep-alive loop, and config long-polls held outside pingora's
//! proxy session.
//!
//! pingora serves a request inside one future as large as its largest state (the whole proxy
//! path: upstream sessions, retries, cache), next to a session with its header buffers, and it
//! waits for a keep-alive connection's next request inside that future too. Measured at the
//! gateway: ~27 KiB per idle keep-alive connection, and ~35 KiB per parked config listener
//! (which holds its connection for up to 30 s). So the gateway runs the loop itself:
//!
//! - **E1 (idle is small).** Between requests a connection waits here holding only its socket,
//!   until its next request arrives, the keep-alive timeout passes ([`KEEPALIVE`]) or shutdown
//!   begins (then it closes; a request already received is served first).
//! - **E2 (only what it fully understands).** A request is served here only if it is a `POST`
//!   to the config listener path, holding listeners at the edge is on, its head parses within
//!   [`MAX_HEAD`] bytes, and its body has a `Content-Length` of at most [`MAX_BODY`] bytes (no
//!   `Transfer-Encoding`, no `Expect`). Anything else, including a head or body that does not
//!   arrive within [`READ_TIMEOUT`], is put back byte for byte and handed to pingora, which
//!   serves it exactly as before. Nothing has been written to the client at that point.
//! - **E3 (same answers).** The poll is rate-limited, parsed, counted and answered by the same
//!   code as pingora's path ([`crate::configs::serve`]); only the writing of the answer differs.
//! - **E4 (connection rules).** An answer keeps the connection open unless the client asked
//!   to close it (`Connection: close`, or HTTP/1.0 without `keep-alive`) or shutdown has
//!   begun; bytes sent after the body (a pipelined request) stay for the next request.

use std::net::IpAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use nacre_ring::configs::NO_CACHE;
use nacre_ring::wire::CONFIG_LISTENER_PATH;
use pingora::protocols::l4::stream::Stream;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::configs::poll::PollRequest;
use crate::metrics::RouteLabel;
use crate::Shared;

/// How long an idle connection waits for its next request before the gateway closes it.
/// pingora itself would keep an HTTP/1.1 connection open as long as the client does; a bound
/// keeps abandoned connections from holding descriptors, and a minute is longer than the
/// legacy clients keep idle connections in their pools.
pub const KEEPALIVE: Duration = Duration::from_secs(60);

/// The longest request head served here; a longer one goes to pingora.
pub const MAX_HEAD: usize = 16 * 1024;

/// The largest body served here; a larger one goes to pingora (which takes up to 8 MiB).
pub const MAX_BODY: usize = 64 * 1024;

/// How long the rest of a head and its body may take to arrive once the first byte has.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

const TEXT: &str = "text/plain; charset=utf-8";

/// How much of a request the wait between requests reads at once. Most request heads fit, so
/// pingora then reads them from memory instead of making a second read call; a longer one is
/// finished from the socket.
pub const FIRST_READ: usize = 1024;

/// Waits for the connection's next request (rule E1) and reads what has arrived of it, up to
/// `buf`'s size. `None`: close the connection (the client closed it, it stayed idle for
/// [`KEEPALIVE`], or shutdown began).
pub async fn first_bytes(
    stream: &mut Stream,
    shutdown: &ShutdownWatch,
    buf: &mut [u8; FIRST_READ],
) -> Option<usize> {
    let mut shutdown = shutdown.clone();
    tokio::select! {
        // Read first: a request already here (a pipelined one put back) is served even when
        // shutdown has begun, as pingora does.
        biased;
        read = stream.read(buf) => match read {
            Ok(n) if n > 0 => Some(n),
            _ => None,
        },
        () = tokio::time::sleep(KEEPALIVE) => None,
        _ = shutdown.wait_for(|stopping| *stopping) => None,
    }
}

/// A listener request this module serves (rule E2).
pub struct Listener {
    query: String,
    headers: HeaderMap,
    body: Bytes,
    /// The client asked to keep the connection open.
    keep_alive: bool,
    /// An HTTP/1.0 request (it closes unless it says otherwise).
    http10: bool,
    /// Bytes after the body: the start of the next request.
    rest: Bytes,
}

/// Whether the request that starts with `first` may be one this module serves (rule E2): a
/// check of its first bytes only, so every other request goes to pingora without more work.
pub fn may_take(shared: &Shared, first: &[u8]) -> bool {
    shared.settings.hold_config_listeners && agrees(first)
}

/// Reads the rest of the head and the body of a request that [`may_take`] accepted, if it is
/// one this module serves (rule E2). When it is not, every byte read (`first` included) is put
/// back into `stream`, for pingora to read.
pub async fn take(stream: &mut Stream, first: &[u8]) -> Option<Listener> {
    let mut buf = BytesMut::from(first);
    let taken = tokio::time::timeout(READ_TIMEOUT, read_listener(stream, &mut buf)).await;
    match taken {
        Ok(Some(listener)) => Some(listener),
        _ => {
            stream.rewind(&buf);
            None
        }
    }
}

/// How a listener request's head starts.
fn listener_line() -> [&'static [u8]; 2] {
    [b"POST ", CONFIG_LISTENER_PATH.as_bytes()]
}

/// Whether `bytes` agrees with the start of a listener request's line, as far as both go.
fn agrees(bytes: &[u8]) -> bool {
    let [method, path] = listener_line();
    let m = bytes.len().min(method.len());
    if bytes[..m] != method[..m] {
        return false;
    }
    let rest = &bytes[m..];
    let p = rest.len().min(path.len());
    rest[..p] == path[..p]
}

/// Reads into `buf` until it holds a whole listener request, or it is clear it is not one.
async fn read_listener(stream: &mut Stream, buf: &mut BytesMut) -> Option<Listener> {
    let line = listener_line().concat().len();
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let head_len = loop {
        // Decide as soon as the request line's start is in.
        if !agrees(buf) || (buf.len() > line && !matches!(buf[line], b'?' | b' ')) {
            return None;
        }
        // httparse decides where the head ends (it also takes bare LF line ends); more headers
        // than it has room for is not ours either.
        let mut scratch = [httparse::EMPTY_HEADER; 64];
        match httparse::Request::new(&mut scratch).parse(buf) {
            Ok(httparse::Status::Complete(n)) => break n,
            Ok(httparse::Status::Partial) => {}
            Err(_) => return None,
        }
        if buf.len() >= MAX_HEAD || !read_more(stream, buf).await {
            return None;
        }
    };
    let mut req = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(_) = req.parse(&buf[..head_len]).ok()? else {
        return None;
    };
    let path = req.path?;
    let (route, query) = path.split_once('?').unwrap_or((path, ""));
    if req.method != Some("POST") || route != CONFIG_LISTENER_PATH {
        return None;
    }
    let mut map = HeaderMap::with_capacity(req.headers.len());
    let mut length = None;
    let http10 = req.version == Some(0);
    let mut close = req.version != Some(1);
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        let value = HeaderValue::from_bytes(h.value).ok()?;
        if name == http::header::TRANSFER_ENCODING || name == http::header::EXPECT {
            return None;
        }
        if name == http::header::CONTENT_LENGTH {
            if length.is_some() {
                return None;
            }
            let digits = value.to_str().ok()?.trim();
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            length = Some(digits.parse::<usize>().ok()?);
        }
        if name == http::header::CONNECTION {
            let v = value.to_str().ok()?;
            for token in v.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") && req.version == Some(0) {
                    close = false;
                }
            }
        }
        map.append(name, value);
    }
    let length = length?;
    if length > MAX_BODY {
        return None;
    }
    let query = query.to_string();
    while buf.len() < head_len + length {
        if !read_more(stream, buf).await {
            return None;
        }
    }
    // Copies, so a listener parked for 30 s does not keep the whole read buffer alive.
    let end = head_len + length;
    let body = Bytes::copy_from_slice(&buf[head_len..end]);
    let rest = Bytes::copy_from_slice(&buf[end..]);
    buf.clear();
    Some(Listener {
        query,
        headers: map,
        body,
        keep_alive: !close,
        http10,
        rest,
    })
}

/// Reads what has arrived into `buf`; `false` at end of stream or on an error.
async fn read_more(stream: &mut Stream, buf: &mut BytesMut) -> bool {
    buf.reserve(4096);
    matches!(stream.read_buf(buf).await, Ok(n) if n > 0)
}

/// Serves a listener request (rules E3, E4); `true` when the connection may carry another
/// request.
pub async fn serve(
    shared: &Shared,
    stream: &mut Stream,
    req: Listener,
    client: Option<IpAddr>,
    shutdown: &ShutdownWatch,
) -> bool {
    let Listener {
        query,
        headers,
        body,
        keep_alive,
        http10,
        rest,
    } = req;
    let (status, content_type, body, extra) = answer(shared, &query, headers, body, client).await;
    let keep = keep_alive && !*shutdown.borrow();
    let mut out = Vec::with_capacity(256 + body.len());
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    out.extend_from_slice(format!("HTTP/1.1 {status} {reason}\r\n").as_bytes());
    out.extend_from_slice(b"Content-Type: ");
    out.extend_from_slice(content_type.as_bytes());
    out.extend_from_slice(b"\r\nContent-Length: ");
    out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in extra {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    if !keep {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if http10 {
        // HTTP/1.0 closes by default: a client that asked to keep the connection is told yes.
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    shared.metrics.request(RouteLabel::Edge, status);
    let written = stream.write_all(&out).await.is_ok() && stream.flush().await.is_ok();
    if written && keep {
        stream.rewind(&rest);
    }
    written && keep
}

/// The status, content type, body and extra headers of the answer to a listener request.
async fn answer(
    shared: &Shared,
    query: &str,
    headers: HeaderMap,
    body: Bytes,
    client: Option<IpAddr>,
) -> (
    u16,
    HeaderValue,
    Bytes,
    &'static [(&'static str, &'static str)],
) {
    let text = HeaderValue::from_static(TEXT);
    if let (Some(limiter), Some(ip)) = (shared.limiter.as_ref(), client) {
        if !limiter.allow(ip) {
            shared.metrics.rate_limited.inc();
            let msg = format!(
                "too many requests from {ip}: the limit is {} per second",
                limiter.per_second()
            );
            return (429, text, Bytes::from(msg), &[]);
        }
    }
    let parsed = PollRequest::parse(query, body, &headers, client);
    // The poll keeps what it needs; the request's own copies are not held while it parks.
    drop(headers);
    let poll = match parsed {
        Ok(poll) => poll,
        Err(e) => {
            shared.metrics.config_poll("refused");
            return (400, text, Bytes::from(e.to_string()), &[]);
        }
    };
    shared.metrics.config_listeners.inc();
    let answer = crate::configs::serve(shared, &poll).await;
    shared.metrics.config_listeners.dec();
    shared.metrics.config_poll(answer.how.label());
    (answer.status, answer.content_type, answer.body, &NO_CACHE)
}
