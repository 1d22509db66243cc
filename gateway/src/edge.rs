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
use nacre_ring::wire::CONFIG_LISTENER_PATH;
use pingora::protocols::l4::stream::Stream;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::configs::poll::{Answer, How, PollRequest};
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

/// How a listener request's line starts, and its length.
const METHOD: &[u8] = b"POST ";
const LINE_START: usize = METHOD.len() + CONFIG_LISTENER_PATH.len();

/// Whether `bytes` agrees with the start of a listener request's line, as far as both go.
fn agrees(bytes: &[u8]) -> bool {
    let line = METHOD.iter().chain(CONFIG_LISTENER_PATH.as_bytes());
    let decided = bytes.len() <= LINE_START || matches!(bytes[LINE_START], b'?' | b' ');
    decided && bytes.iter().zip(line).all(|(a, b)| a == b)
}

/// A listener request's head, as this module serves it.
struct Head {
    /// Bytes up to and including the blank line.
    len: usize,
    query: String,
    headers: HeaderMap,
    /// `Content-Length`.
    body_len: usize,
    close: bool,
    http10: bool,
}

/// Parses the head at the start of `buf`: `Some(None)` while it is incomplete, `None` when it
/// is not one this module serves (rule E2).
fn parse_head(buf: &[u8]) -> Option<Option<Head>> {
    if !agrees(buf) {
        return None;
    }
    // httparse decides where the head ends (it also takes bare LF line ends); more headers
    // than it has room for is not ours.
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut slots);
    let len = match req.parse(buf).ok()? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Some(None),
    };
    let path = req.path?;
    let (route, query) = path.split_once('?').unwrap_or((path, ""));
    if req.method != Some("POST") || route != CONFIG_LISTENER_PATH {
        return None;
    }
    let http10 = req.version == Some(0);
    let mut close = req.version != Some(1);
    let mut headers = HeaderMap::with_capacity(req.headers.len());
    let mut body_len = None;
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        let value = HeaderValue::from_bytes(h.value).ok()?;
        if name == http::header::TRANSFER_ENCODING || name == http::header::EXPECT {
            return None;
        }
        if name == http::header::CONTENT_LENGTH {
            let digits = value.to_str().ok()?.trim();
            if body_len.is_some()
                || digits.is_empty()
                || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            body_len = Some(digits.parse::<usize>().ok()?);
        }
        if name == http::header::CONNECTION {
            for token in value.to_str().ok()?.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") && http10 {
                    close = false;
                }
            }
        }
        headers.append(name, value);
    }
    let body_len = body_len.filter(|n| *n <= MAX_BODY)?;
    Some(Some(Head {
        len,
        query: query.to_string(),
        headers,
        body_len,
        close,
        http10,
    }))
}

/// Reads into `buf` until it holds a whole listener request, or it is clear it is not one.
async fn read_listener(stream: &mut Stream, buf: &mut BytesMut) -> Option<Listener> {
    let head = loop {
        if let Some(head) = parse_head(buf)? {
            break head;
        }
        if buf.len() >= MAX_HEAD || !read_more(stream, buf).await {
            return None;
        }
    };
    let end = head.len + head.body_len;
    while buf.len() < end {
        if !read_more(stream, buf).await {
            return None;
        }
    }
    // Copies, so a listener parked for 30 s does not keep the whole read buffer alive.
    let body = Bytes::copy_from_slice(&buf[head.len..end]);
    let rest = Bytes::copy_from_slice(&buf[end..]);
    buf.clear();
    Some(Listener {
        query: head.query,
        headers: head.headers,
        body,
        keep_alive: !head.close,
        http10: head.http10,
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
    let answer = answer(shared, &query, headers, body, client).await;
    let extra = answer.headers();
    let Answer {
        status,
        content_type,
        body,
        ..
    } = answer;
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

/// The answer to a listener request: a 429 over the client's rate, else the poll's answer.
async fn answer(
    shared: &Shared,
    query: &str,
    headers: HeaderMap,
    body: Bytes,
    client: Option<IpAddr>,
) -> Answer {
    if let Some(refusal) = client.and_then(|ip| shared.over_rate(ip)) {
        // Not a poll (nothing counted); `Refused` gives it the plain headers of an error.
        return Answer {
            status: 429,
            content_type: HeaderValue::from_static(crate::proxy::TEXT),
            body: Bytes::from(refusal),
            how: How::Refused,
        };
    }
    let parsed = PollRequest::parse(query, body, &headers, client);
    // The poll keeps what it needs; the request's own copies are not held while it parks.
    drop(headers);
    crate::configs::poll::answer(shared, parsed).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Option<Option<(usize, usize, bool)>> {
        parse_head(text.as_bytes()).map(|h| h.map(|h| (h.len, h.body_len, h.close)))
    }

    #[test]
    fn e2_only_whole_listener_heads_with_a_plain_length_are_taken() {
        let ok = "POST /nacos/v1/cs/configs/listener?x=1 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
        assert_eq!(head(ok), Some(Some((ok.len() - 3, 3, false))));
        assert_eq!(head("PO"), Some(None), "too early to tell");
        assert_eq!(
            head("POST /nacos/v1/cs/configs/listener HTTP/1.1\r\n"),
            Some(None)
        );
        assert_eq!(
            head("GET /nacos/v1/cs/configs/listener HTTP/1.1\r\n\r\n"),
            None
        );
        assert_eq!(
            head("POST /nacos/v1/cs/configs/listenerX HTTP/1.1\r\n\r\n"),
            None
        );
        let no_length = "POST /nacos/v1/cs/configs/listener HTTP/1.1\r\n\r\n";
        assert_eq!(head(no_length), None);
        let signed = "POST /nacos/v1/cs/configs/listener HTTP/1.1\r\nContent-Length: +5\r\n\r\n";
        assert_eq!(head(signed), None);
        let chunked =
            "POST /nacos/v1/cs/configs/listener HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(head(chunked), None);
        let bare_lf = "POST /nacos/v1/cs/configs/listener HTTP/1.0\nContent-Length: 0\n\n";
        assert_eq!(head(bare_lf), Some(Some((bare_lf.len(), 0, true))));
    }
}
