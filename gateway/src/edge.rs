//! The requests of a client connection that the gateway serves itself, outside pingora's proxy
//! session: config long-polls held, beats relayed, cached lists answered.
//!
//! pingora serves a request inside one future as large as its largest state (the whole proxy
//! path: upstream sessions, retries, cache), next to a session with its header buffers, and it
//! waits for a keep-alive connection's next request inside that future too. Measured at the
//! gateway: ~27 KiB per idle keep-alive connection, and ~35 KiB per parked config listener
//! (which holds its connection for up to 30 s). So the gateway runs each connection's loop
//! itself ([`crate::accept`]) and serves these requests here:
//!
//! - **E1 (idle is small).** Between requests a connection waits ([`next_request`]) holding only
//!   its socket, reading nothing, until its next request arrives, the keep-alive timeout passes
//!   ([`KEEPALIVE`]) or shutdown begins (then it closes; a request already received is served
//!   first).
//! - **E2 (only what it fully understands).** A request is served here only if it is a `POST`
//!   to the config listener path while holding listeners at the edge is on, or a `PUT` beat,
//!   `POST` register or `DELETE` deregister naming its service while relaying is on (see
//!   [`crate::beats`]); its head parses within [`MAX_HEAD`] bytes, and its body has a
//!   `Content-Length` of at most [`MAX_BODY`] bytes (a beat or write may have none; never
//!   `Transfer-Encoding` or `Expect`). Anything else, including a head or body that does not
//!   arrive within [`READ_TIMEOUT`], is put back byte for byte and handed to pingora, which
//!   serves it exactly as before; so is a beat or write whose node does not take it in
//!   batches. Nothing has been written to the client at that point.
//! - **E3 (same answers).** The poll is rate-limited, parsed, counted and answered by the same
//!   code as pingora's path ([`crate::configs::poll`]); a relayed beat or write gets its node's
//!   own answer (rule R3 of [`crate::beats`]) after the same rate limit. Only the writing
//!   differs, and where a parked poll waits: in its connection's own loop ([`Waiting`]), so a
//!   parked listener holds no request future.
//! - **E4 (connection rules).** An answer keeps the connection open unless the client asked
//!   to close it (`Connection: close`, or HTTP/1.0 without `keep-alive`) or shutdown has
//!   begun; bytes sent after the body (a pipelined request) stay for the next request.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use nacre_ring::turns::ReadTurns;
use nacre_ring::wire::{RelayedOp, RelayedRequest, CONFIG_LISTENER_PATH};
use nacre_ring::ServiceKey;
use pingora::server::ShutdownWatch;
use tokio::io::AsyncReadExt;

use crate::beats::Encoded;
use crate::client::ClientStream as Stream;
use crate::configs::poll::{Begun, PollRequest};
use crate::lists::{ListPlan, Lookup, Plan};
use crate::metrics::RouteLabel;
use crate::route::{Params, LIST_PATH};
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

/// How much of a request is read at once when its first bytes arrive. Most request heads fit,
/// so pingora then reads them from memory instead of making a second read call; a longer one is
/// finished from the socket.
pub const FIRST_READ: usize = 1024;

/// Waits for the connection's next request (rule E1): `true` once it has bytes to read (bytes
/// put back count), `false` to close the connection (the client closed it, it stayed idle for
/// [`KEEPALIVE`], or the gateway is stopping). Nothing is read here, so no buffer is held while
/// waiting.
pub async fn next_request(shared: &Shared, stream: &Stream) -> bool {
    if stream.has_rewound() {
        return true;
    }
    tokio::select! {
        // Readable first: a request already here is served even when shutdown has begun, as
        // pingora does.
        biased;
        ready = stream.readable() => ready.is_ok(),
        () = tokio::time::sleep(KEEPALIVE) => false,
        () = shared.stopping.cancelled() => false,
    }
}

/// Rule G3 (in [`nacre_ring::turns`]) for a request whose first bytes are `first`: the
/// turns it must wait on before anything else of it is done, if any. Once the round's turns on
/// this thread are gone, a client read waits ([`ReadTurns::wait`]); anything else, and every
/// request while turns are left, goes ahead at once. Asked once bytes are in hand, so an idle
/// connection whose readiness outlived its last request spends no turn.
pub fn turn_to_wait(shared: &Shared, first: &[u8]) -> Option<Arc<ReadTurns>> {
    let turns = shared.read_turns.as_ref()?.here()?;
    (!turns.go_ahead() && nacre_ring::turns::is_read(first)).then_some(turns)
}

/// A listener request this module serves (rule E2).
pub struct Listener {
    /// The request as the parked poll keeps it (`configs::poll::kept_request`).
    bytes: Bytes,
    /// Where its body starts.
    head: usize,
    query: String,
    headers: HeaderMap,
    conn: Conn,
}

/// A beat, register or deregister this module relays (rule E2; see [`crate::beats`]).
pub struct Relay {
    key: ServiceKey,
    relayed: Encoded,
    conn: Conn,
    /// Every byte read for the request (and any after it): what goes back to the stream when
    /// the beat is handed to pingora after all.
    raw: Bytes,
}

/// What a request says about its connection.
struct Conn {
    /// The client asked to keep the connection open.
    keep_alive: bool,
    /// An HTTP/1.0 request (it closes unless it says otherwise).
    http10: bool,
    /// Bytes after the body: the start of the next request.
    rest: Bytes,
}

/// A list read this module answers when the cache can (see [`crate::lists::lookup`]).
pub struct List {
    key: ServiceKey,
    plan: ListPlan,
    conn: Conn,
    /// Every byte read, as for a [`Relay`].
    raw: Bytes,
}

/// A request this module serves.
pub enum Taken {
    /// A config listener poll.
    Listener(Listener),
    /// A naming beat, or an ephemeral register or deregister: relayed alike.
    Relay(Relay),
    /// A list read.
    List(List),
}

/// Whether the request that starts with `first` may be one this module serves (rule E2): a
/// check of its first bytes only, so every other request goes to pingora without more work.
pub fn may_take(shared: &Shared, first: &[u8]) -> bool {
    Kind::ALL.into_iter().any(|kind| {
        let on = match kind {
            Kind::Listener => shared.settings.hold_config_listeners,
            Kind::Relayed(_) => shared.settings.beat_linger_ms > 0,
            Kind::List => shared.cache.enabled(),
        };
        on && agrees(first, kind)
    })
}

/// Reads the rest of the head and the body of a request that [`may_take`] accepted, if it is
/// one this module serves (rule E2). When it is not, every byte read (`first` included) is put
/// back into `stream`, for pingora to read.
pub async fn take(
    shared: &Shared,
    stream: &mut Stream,
    first: Bytes,
    client: Option<IpAddr>,
) -> Option<Taken> {
    let mut buf = BytesMut::from(first);
    let read = tokio::time::timeout(READ_TIMEOUT, read_request(stream, &mut buf)).await;
    // Frozen once: a beat or list keeps slices of it (and all of it, to put back) without
    // copying.
    let buf = buf.freeze();
    let taken = match read {
        Ok(Some((head, end))) => taken_of(head, &buf, end, client, shared),
        _ => None,
    };
    if taken.is_none() {
        stream.rewind(buf);
    }
    taken
}

/// The kinds of request this module serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Listener,
    /// A beat or an instance write, relayed (see [`crate::beats`]).
    Relayed(RelayedOp),
    List,
}

impl Kind {
    /// Every kind.
    const ALL: [Kind; 5] = [
        Kind::Listener,
        Kind::Relayed(RelayedOp::Beat),
        Kind::Relayed(RelayedOp::Register),
        Kind::Relayed(RelayedOp::Deregister),
        Kind::List,
    ];

    /// Its request's method and path.
    fn line(self) -> (&'static str, &'static str) {
        match self {
            Kind::Listener => ("POST", CONFIG_LISTENER_PATH),
            Kind::Relayed(op) => (op.method(), op.path()),
            Kind::List => ("GET", LIST_PATH),
        }
    }
}

/// Whether `bytes` agrees with the start of a `kind` request's line, as far as both go.
fn agrees(bytes: &[u8], kind: Kind) -> bool {
    let (method, path) = kind.line();
    let start = method.len() + 1 + path.len();
    let line = method.as_bytes().iter().chain(b" ").chain(path.as_bytes());
    let decided = bytes.len() <= start || matches!(bytes[start], b'?' | b' ');
    decided && bytes.iter().zip(line).all(|(a, b)| a == b)
}

/// A request's head, as this module serves it.
struct Head {
    kind: Kind,
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
    let kind = Kind::ALL.into_iter().find(|k| agrees(buf, *k))?;
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
    let (method, want) = kind.line();
    if req.method != Some(method) || route != want {
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
    // A listener always has a body; a beat or write without a length has none; a list read
    // none.
    let body_len = match kind {
        Kind::Listener => body_len,
        Kind::Relayed(_) => Some(body_len.unwrap_or(0)),
        Kind::List => Some(body_len.unwrap_or(0)).filter(|n| *n == 0),
    };
    let body_len = body_len.filter(|n| *n <= MAX_BODY)?;
    Some(Some(Head {
        kind,
        len,
        query: query.to_string(),
        headers,
        body_len,
        close,
        http10,
    }))
}

/// Reads into `buf` until it holds a whole request this module serves (its head, and where its
/// body ends), or it is clear it is not one.
async fn read_request(stream: &mut Stream, buf: &mut BytesMut) -> Option<(Head, usize)> {
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
    Some((head, end))
}

/// The request `head` starts, with its body ending at `end` of `buf`; `None` when it is not
/// one this module serves after all (see [`relayed_of`], and a list the cache cannot plan).
fn taken_of(
    head: Head,
    buf: &Bytes,
    end: usize,
    client: Option<IpAddr>,
    shared: &Shared,
) -> Option<Taken> {
    let (keep_alive, http10) = (!head.close, head.http10);
    let conn = |rest: Bytes| Conn {
        keep_alive,
        http10,
        rest,
    };
    match head.kind {
        // Copies, so a listener parked for 30 s does not keep the whole read buffer alive.
        Kind::Listener => {
            let (bytes, kept_head) =
                crate::configs::poll::kept_request(&head.query, &head.headers, &buf[head.len..end]);
            Some(Taken::Listener(Listener {
                conn: conn(Bytes::copy_from_slice(&buf[end..])),
                bytes,
                head: kept_head,
                query: head.query,
                headers: head.headers,
            }))
        }
        Kind::List => {
            let params = Params::parse(head.query.as_bytes(), None);
            let plan = Plan::of(
                &params,
                &http::Method::GET,
                LIST_PATH,
                &head.headers,
                client,
                shared.auth_required(),
            );
            Some(Taken::List(List {
                key: plan.key?,
                plan: plan.list?,
                conn: conn(buf.slice(end..)),
                raw: buf.clone(),
            }))
        }
        Kind::Relayed(op) => {
            relayed_of(op, head, buf, end, client, shared).map(|(key, relayed)| {
                Taken::Relay(Relay {
                    key,
                    relayed,
                    conn: conn(buf.slice(end..)),
                    raw: buf.clone(),
                })
            })
        }
    }
}

/// The relayed form of a beat or write of kind `op` (rules R1, R3 of [`crate::beats`]), with
/// its service; `None` when it is not relayed after all: no service named, a persistent
/// instance's write (it goes through Raft), or text that is not UTF-8.
fn relayed_of(
    op: RelayedOp,
    head: Head,
    buf: &Bytes,
    end: usize,
    client: Option<IpAddr>,
    shared: &Shared,
) -> Option<(ServiceKey, Encoded)> {
    let form = crate::route::is_form(
        head.headers
            .get(http::header::CONTENT_TYPE)
            .map(|v| v.as_bytes()),
    );
    let body = &buf[head.len..end];
    let params = Params::parse(head.query.as_bytes(), form.then_some(body));
    let key = params.service_key()?;
    if op.is_write() && !params.surely_ephemeral() {
        return None;
    }
    let mut client_headers = Vec::with_capacity(head.headers.len());
    for (name, value) in &head.headers {
        client_headers.push((name.as_str(), value.to_str().ok()?));
    }
    let secret = shared.settings.cluster_secret.as_deref();
    let relayed = RelayedRequest {
        op,
        headers: crate::beats::relayed_headers(client_headers.into_iter(), client, secret, op),
        body: std::str::from_utf8(body).ok()?.into(),
        query: head.query.as_str().into(),
    };
    Some((key, Encoded::of(&relayed)?))
}

/// Reads what has arrived into `buf`; `false` at end of stream or on an error.
async fn read_more(stream: &mut Stream, buf: &mut BytesMut) -> bool {
    buf.reserve(4096);
    matches!(stream.read_buf(buf).await, Ok(n) if n > 0)
}

/// What became of a listener request handed to [`serve`].
pub enum Polled {
    /// Answered; `true` when the connection may carry another request.
    Answered(bool),
    /// Waiting for a change: the connection waits on [`Waiting::wait`], then hands it to
    /// [`resume`].
    Waiting(Waiting),
}

/// A listener poll parked at the edge, with what its answer needs to know of its connection.
pub struct Waiting {
    poll: Box<crate::configs::poll::Parked>,
    conn: Conn,
}

impl Waiting {
    /// Waits for a change or the end of the hold (see [`crate::configs::poll::Parked::wait`]).
    pub async fn wait(&self, shared: &Shared) -> bool {
        self.poll.wait(shared).await
    }
}

/// Serves a listener request (rules E3, E4): answered, or parked.
pub async fn serve(
    shared: &Shared,
    stream: &mut Stream,
    req: Listener,
    client: Option<IpAddr>,
    shutdown: &ShutdownWatch,
) -> Polled {
    let Listener {
        bytes,
        head,
        query,
        headers,
        conn,
    } = req;
    if let Some(refusal) = client.and_then(|ip| shared.over_rate(ip)) {
        return Polled::Answered(refuse(shared, stream, conn, shutdown, &refusal).await);
    }
    let parsed = PollRequest::parse_raw(bytes, head, &query, &headers, client);
    // The poll keeps what it needs; the request's own copies are not held while it parks.
    drop((query, headers));
    let begun = crate::configs::poll::begin(shared, parsed).await;
    polled(shared, stream, begun, conn, shutdown).await
}

/// Looks again at a poll after [`Waiting::wait`] (`changed`: what it returned), and answers it
/// or parks it again.
pub async fn resume(
    shared: &Shared,
    stream: &mut Stream,
    waiting: Waiting,
    changed: bool,
    shutdown: &ShutdownWatch,
) -> Polled {
    let Waiting { poll, conn } = waiting;
    let begun = poll.resume(shared, changed).await;
    polled(shared, stream, begun, conn, shutdown).await
}

/// A body in one piece, as [`write`] takes bodies (in up to three parts).
fn whole(body: &[u8]) -> [&[u8]; 3] {
    [body, &[], &[]]
}

/// Writes `begun`'s answer, or keeps it waiting.
async fn polled(
    shared: &Shared,
    stream: &mut Stream,
    begun: Begun,
    conn: Conn,
    shutdown: &ShutdownWatch,
) -> Polled {
    let answer = match begun {
        Begun::Answer(answer) => crate::configs::poll::finish(shared, answer),
        Begun::Parked(poll) => return Polled::Waiting(Waiting { poll, conn }),
    };
    let extra = answer.headers();
    let content_type = answer.content_type.to_str().unwrap_or(crate::proxy::TEXT);
    let headers = std::iter::once(("content-type", content_type)).chain(extra.iter().copied());
    shared.metrics.request(RouteLabel::Edge, answer.status);
    let body = whole(&answer.body);
    Polled::Answered(write(stream, conn, shutdown, answer.status, headers, body).await)
}

/// What became of a beat or write handed to [`serve_relayed`] or a list read to [`serve_list`].
pub enum Served {
    /// Answered; `true` when the connection may carry another request.
    Answered(bool),
    /// Not served here: the request is back in the stream, for pingora.
    Proxy,
}

/// Answers a list read from the cache (rule E3: the same lookup as pingora's path), or puts it
/// back for pingora when the cache cannot answer it.
pub async fn serve_list(
    shared: &Shared,
    stream: &mut Stream,
    list: List,
    client: Option<IpAddr>,
    shutdown: &ShutdownWatch,
) -> Served {
    let List {
        key,
        plan,
        conn,
        raw,
    } = list;
    // Only a request answered here is charged to the client's rate: one put back for pingora
    // is charged there.
    let view = shared.upstreams.view();
    let Ok(found) = crate::lists::find(shared, &key, &plan, &view) else {
        stream.rewind(raw);
        return Served::Proxy;
    };
    if let Some(refusal) = client.and_then(|ip| shared.over_rate(ip)) {
        return Served::Answered(refuse(shared, stream, conn, shutdown, &refusal).await);
    }
    // A note that cannot be queued sends the poll to the node (rule P3); pingora's path then
    // charges it again, which happens only with the note queue full.
    let Lookup::Hit(answer) = found.commit(shared) else {
        stream.rewind(raw);
        return Served::Proxy;
    };
    shared.metrics.cache_hits.inc();
    shared.metrics.request(RouteLabel::Cache, 200);
    let headers = [("content-type", crate::proxy::JSON)];
    let keep = write(
        stream,
        conn,
        shutdown,
        200,
        headers.into_iter(),
        answer.parts(),
    );
    Served::Answered(keep.await)
}

/// Relays a beat or write to its node (see [`crate::beats`]) and writes the node's answer
/// (rule E4).
pub async fn serve_relayed(
    shared: &Shared,
    stream: &mut Stream,
    relay: Relay,
    client: Option<IpAddr>,
    shutdown: &ShutdownWatch,
) -> Served {
    let Relay {
        key,
        relayed,
        conn,
        raw,
    } = relay;
    // As for lists: a request handed to pingora is charged there, not here too.
    let op = relayed.op();
    let Some(route) = crate::beats::route(shared, &key, op) else {
        stream.rewind(raw);
        return Served::Proxy;
    };
    if let Some(refusal) = client.and_then(|ip| shared.over_rate(ip)) {
        return Served::Answered(refuse(shared, stream, conn, shutdown, &refusal).await);
    }
    let answer = match crate::beats::relay(shared, &key, route, relayed).await {
        crate::beats::Relayed::Answer(a) => a,
        // Its node stopped taking batches (a rolling upgrade) after the check above.
        crate::beats::Relayed::Proxy => {
            stream.rewind(raw);
            return Served::Proxy;
        }
    };
    if op.is_write() {
        // As on the proxy path (rule R3).
        crate::lists::written(shared, &key);
    }
    shared.metrics.request(RouteLabel::Owner, answer.status);
    let headers = answer.headers.iter().map(|(n, v)| (n.as_str(), v.as_str()));
    let keep = write(
        stream,
        conn,
        shutdown,
        answer.status,
        headers,
        whole(answer.body.as_bytes()),
    );
    Served::Answered(keep.await)
}

/// The 429 of a client over its rate limit (the text pingora's path answers), counted as
/// pingora's path counts it.
async fn refuse(
    shared: &Shared,
    stream: &mut Stream,
    conn: Conn,
    shutdown: &ShutdownWatch,
    why: &str,
) -> bool {
    shared.metrics.request(RouteLabel::Local, 429);
    let headers = [("content-type", crate::proxy::TEXT)];
    write(
        stream,
        conn,
        shutdown,
        429,
        headers.into_iter(),
        whole(why.as_bytes()),
    )
    .await
}

/// Writes an answer with `headers` (a `Content-Length` is added) and `body`, keeping the
/// connection when its request and shutdown allow (rule E4); `true` when the connection may
/// carry another request.
async fn write<'a>(
    stream: &mut Stream,
    conn: Conn,
    shutdown: &ShutdownWatch,
    status: u16,
    headers: impl Iterator<Item = (&'a str, &'a str)>,
    body: [&[u8]; 3],
) -> bool {
    let keep = conn.keep_alive && !*shutdown.borrow();
    let mut head = Vec::with_capacity(256);
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
    head.push(b' ');
    head.extend_from_slice(reason.as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        head.extend_from_slice(name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    let len: usize = body.iter().map(|b| b.len()).sum();
    head.extend_from_slice(b"Content-Length: ");
    head.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
    head.extend_from_slice(b"\r\n");
    if !keep {
        head.extend_from_slice(b"Connection: close\r\n");
    } else if conn.http10 {
        // HTTP/1.0 closes by default: a client that asked to keep the connection is told yes.
        head.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    head.extend_from_slice(b"\r\n");
    // The body is written from where it lies (a cached list answer is not copied).
    let [a, b, c] = body.map(std::io::IoSlice::new);
    let mut parts = [std::io::IoSlice::new(&head), a, b, c];
    let written = stream.send_parts(&mut parts).await.is_ok();
    if written && keep {
        stream.rewind(conn.rest);
    }
    written && keep
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Option<Option<(usize, usize, bool)>> {
        parse_head(text.as_bytes()).map(|h| h.map(|h| (h.len, h.body_len, h.close)))
    }

    #[tokio::test]
    async fn g3_past_a_round_s_turns_a_list_waits_for_one_and_a_beat_goes_ahead() {
        use futures::FutureExt;
        let shared = crate::testing::shared_with(
            nacre_config::GatewaySettings {
                read_turns_per_round: 1,
                // Turns from the first connection on.
                read_turns_crowd: 0,
                ..crate::testing::settings()
            },
            &[],
        );
        // One client connection open: more than the crowd of 0.
        shared.metrics.client_connections.set(1);
        let list = b"GET /nacos/v1/ns/instance/list?serviceName=a HTTP/1.1\r\n\r\n";
        let beat = b"PUT /nacos/v1/ns/instance/beat?serviceName=a HTTP/1.1\r\n\r\n";
        // The round's one turn goes to the first list.
        assert!(turn_to_wait(&shared, list).is_none());
        // The next list finds none: it waits for the round task (not yet run)…
        let turns = turn_to_wait(&shared, list).expect("a read went ahead");
        let mut waiting = Box::pin(turns.wait());
        assert!((&mut waiting).now_or_never().is_none(), "a read went ahead");
        assert_eq!(shared.metrics.read_turns_waited.get(), 1);
        // …while a beat goes ahead without a turn.
        assert!(turn_to_wait(&shared, beat).is_none());
        // The next round serves the list.
        tokio::time::timeout(Duration::from_secs(2), waiting)
            .await
            .expect("a round served the waiting list");
        shared.stopping.cancel();
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

    #[test]
    fn e2_beats_are_taken_with_or_without_a_body_and_nothing_else_under_their_path() {
        let bare = "PUT /nacos/v1/ns/instance/beat?serviceName=s HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(head(bare), Some(Some((bare.len(), 0, false))));
        let form =
            "PUT /nacos/v1/ns/instance/beat HTTP/1.1\r\nContent-Length: 13\r\n\r\nserviceName=s";
        assert_eq!(head(form), Some(Some((form.len() - 13, 13, false))));
        for other in [
            "POST /nacos/v1/ns/instance/beat HTTP/1.1\r\n\r\n",
            "PUT /nacos/v1/ns/instance/beats HTTP/1.1\r\n\r\n",
            "PUT /nacos/v1/ns/instance/beat HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "PUT /nacos/v1/ns/instance/beat HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
        ] {
            assert_eq!(head(other), None, "{other}");
        }
        let big = format!(
            "PUT /nacos/v1/ns/instance/beat HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert_eq!(head(&big), None, "over the edge's body limit");
    }

    #[test]
    fn e2_registers_and_deregisters_are_taken_and_updates_are_not() {
        let kind = |text: &str| parse_head(text.as_bytes()).and_then(|h| h.map(|h| h.kind));
        let register = "POST /nacos/v1/ns/instance?serviceName=s HTTP/1.1\r\n\r\n";
        assert_eq!(kind(register), Some(Kind::Relayed(RelayedOp::Register)));
        let form = "POST /nacos/v1/ns/instance HTTP/1.1\r\nContent-Length: 13\r\n\r\nserviceName=s";
        assert_eq!(head(form), Some(Some((form.len() - 13, 13, false))));
        let deregister = "DELETE /nacos/v1/ns/instance?serviceName=s HTTP/1.1\r\n\r\n";
        assert_eq!(kind(deregister), Some(Kind::Relayed(RelayedOp::Deregister)));
        for other in [
            "PUT /nacos/v1/ns/instance?serviceName=s HTTP/1.1\r\n\r\n",
            "PATCH /nacos/v1/ns/instance?serviceName=s HTTP/1.1\r\n\r\n",
            "POST /nacos/v1/ns/instances HTTP/1.1\r\n\r\n",
            "POST /nacos/v1/ns/instance/list HTTP/1.1\r\n\r\n",
            "DELETE /nacos/v1/ns/instance/beat HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(kind(other), None, "{other}");
        }
        let mut shared = crate::testing::settings();
        shared.beat_linger_ms = 0;
        let off = crate::testing::shared_with(shared, &[]);
        assert!(
            !may_take(&off, register.as_bytes()),
            "relaying off: proxied"
        );
    }
}
