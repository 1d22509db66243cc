//! Serving one config listener poll at the edge (rules L3, L4 and L6 in [`super`]): compare
//! with the md5 table, park until a listened key changes or the hold ends, fetch what the
//! table lacks, and pass the poll to a node whenever the table cannot be trusted.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use nacre_ring::configs::listen::{self, Listened};
use nacre_ring::configs::{ConfigKey, ParamError};
use nacre_ring::wire::{
    Md5Query, Md5Reply, ASSERTED_BY_HEADER, CLIENT_ADDR_HEADER, CONFIG_LISTENER_PATH,
    CONFIG_MD5_PATH,
};
use tokio::time::Instant;

use super::table::Lookup;
use crate::metrics::Held;
use crate::upstreams::Upstream;
use crate::Shared;
use nacre_ring::configs::watch::Interest;

/// How long a node may take over a fetch or an immediate answer.
const NODE_ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// Fetches one poll may make before it stops trusting the table (resets kept voiding them).
const MAX_FETCHES: usize = 3;
/// How much longer than the rest of the hold a node that holds a passed poll may take.
const PASS_GRACE: Duration = Duration::from_secs(1);
/// A pass-through with less hold left than this is answered empty at once.
const MIN_PASS_HOLD: Duration = Duration::from_millis(50);
/// The content type of every listener answer the gateway writes.
const TEXT: &str = nacre_ring::configs::LISTENER_CONTENT_TYPE;

/// A parsed listener poll, with what a node needs to answer it instead.
#[derive(Debug, Clone)]
pub struct PollRequest {
    /// The request as a node would be sent it (rule L4).
    origin: Origin,
    listened: Vec<Listened>,
    hold: Option<Duration>,
    /// It carries `Vipserver-Tag` (rule L8).
    tagged: bool,
    /// The client's address, asserted to a node the poll is passed to (beta membership is
    /// decided by it).
    client: Option<std::net::IpAddr>,
}

/// Where a poll's query, body and headers come from.
#[derive(Debug, Clone)]
enum Origin {
    /// pingora's path: the parts, headers already cut to what a node may see (boxed: a parked
    /// poll holds the other kind).
    Parts(Box<Forwarded>),
    /// The edge's: the request's own bytes (its head, then from `head` its body), read again
    /// only if the poll goes to a node, so that a parked poll holds one buffer.
    Raw { bytes: Bytes, head: usize },
}

/// What a node is sent of a client's poll.
#[derive(Debug, Clone)]
struct Forwarded {
    query: String,
    headers: HeaderMap,
    body: Bytes,
}

/// How a poll was answered (the `result` label of `nacre_gateway_config_polls_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// At the edge: a listened key had changed (at once or while parked).
    Changed,
    /// At the edge: nothing changed within the hold.
    Unchanged,
    /// By a node (rules L4, L6).
    Node,
    /// No node could answer.
    Unavailable,
    /// A bad `Listening-Configs`: the nodes' 400.
    Refused,
}

impl How {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Changed => "changed",
            Self::Unchanged => "unchanged",
            Self::Node => "node",
            Self::Unavailable => "unavailable",
            Self::Refused => "refused",
        }
    }
}

/// A complete answer to a poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: HeaderValue,
    /// Body.
    pub body: Bytes,
    /// How it was reached.
    pub how: How,
}

impl Answer {
    /// The headers written besides the content type and length: a poll's answer must not be
    /// cached; a refusal is a plain error.
    pub fn headers(&self) -> &'static [(&'static str, &'static str)] {
        match self.how {
            How::Refused => &[],
            _ => &nacre_ring::configs::NO_CACHE,
        }
    }

    fn edge(changed: &[&Listened]) -> Self {
        Self {
            status: 200,
            content_type: HeaderValue::from_static(TEXT),
            body: Bytes::from(listen::reply(changed.iter().copied())),
            how: if changed.is_empty() {
                How::Unchanged
            } else {
                How::Changed
            },
        }
    }

    fn unavailable() -> Self {
        Self {
            status: 503,
            content_type: HeaderValue::from_static(TEXT),
            body: Bytes::from_static(b"no registry node is ready"),
            how: How::Unavailable,
        }
    }
}

/// The keys a poll listens to, from `Listening-Configs` and `tenant` in its query or form body
/// (query values first, as nodes read them).
fn parse_listened(query: &str, body: &[u8]) -> Result<Vec<Listened>, ParamError> {
    let (mut value, mut tenant) = (None, None);
    for part in [query.as_bytes(), body] {
        for (k, v) in form_urlencoded::parse(part) {
            match k.as_ref() {
                "Listening-Configs" if value.is_none() => value = Some(v),
                "tenant" if tenant.is_none() => tenant = Some(v),
                _ => {}
            }
        }
    }
    listen::parse_request(value.as_deref(), tenant.as_deref())
}

/// Whether a node may see the header `name` of a client's poll: only the ones a node reads
/// from a poll (`listen::READ_HEADERS`); never a hop-by-hop one, one the forward sets itself,
/// or an `x-nacre-*` header (only nacre's tiers set those).
pub fn is_forwarded(name: &HeaderName) -> bool {
    listen::is_read_header(name.as_str())
}

/// The headers of a client's poll a node may see ([`is_forwarded`]).
fn forwarded(headers: &HeaderMap) -> HeaderMap {
    let mut forwarded = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        if is_forwarded(name) {
            forwarded.append(name.clone(), value.clone());
        }
    }
    forwarded
}

/// A listener request as a parked poll keeps it ([`PollRequest::parse_raw`]): a request line
/// naming only the query, the headers a node may see, then the body; and the offset where the
/// body starts.
pub fn kept_request(query: &str, headers: &HeaderMap, body: &[u8]) -> (Bytes, usize) {
    let mut kept = Vec::with_capacity(64 + query.len() + body.len() + 40 * headers.len());
    kept.extend_from_slice(b"POST /?");
    kept.extend_from_slice(query.as_bytes());
    kept.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        if is_forwarded(name) {
            kept.extend_from_slice(name.as_str().as_bytes());
            kept.extend_from_slice(b": ");
            kept.extend_from_slice(value.as_bytes());
            kept.extend_from_slice(b"\r\n");
        }
    }
    kept.extend_from_slice(b"\r\n");
    let head = kept.len();
    kept.extend_from_slice(body);
    // Copied: exactly its length, where the vector may have room to spare.
    (Bytes::copy_from_slice(&kept), head)
}

/// A kept request's head ([`kept_request`]) read again. The edge parsed it once, so it parses;
/// anything unreadable is left out rather than sent.
fn reread<'h, 'b>(
    head: &'b [u8],
    slots: &'h mut [httparse::Header<'b>],
) -> httparse::Request<'h, 'b> {
    let mut req = httparse::Request::new(slots);
    let _ = req.parse(head);
    req
}

/// The query of a request read with httparse (empty when it has none).
fn query_of(req: &httparse::Request<'_, '_>) -> String {
    req.path
        .and_then(|path| path.split_once('?'))
        .map(|(_, q)| q.to_string())
        .unwrap_or_default()
}

impl PollRequest {
    /// Reads a poll from its query string, form body and headers (query values first, as
    /// nodes read them). A bad `Listening-Configs` is the same 400 a node gives.
    pub fn parse(
        query: &str,
        body: Bytes,
        headers: &HeaderMap,
        client: Option<std::net::IpAddr>,
    ) -> Result<Self, ParamError> {
        let origin = Origin::Parts(Box::new(Forwarded {
            query: query.to_string(),
            body: body.clone(),
            headers: forwarded(headers),
        }));
        Self::read(origin, query, &body, headers, client)
    }

    /// [`PollRequest::parse`] for a request whose bytes are `bytes` (its head is the first
    /// `head` of them, its body the rest), given the query and headers parsed from that head;
    /// it keeps only `bytes`.
    pub fn parse_raw(
        bytes: Bytes,
        head: usize,
        query: &str,
        headers: &HeaderMap,
        client: Option<std::net::IpAddr>,
    ) -> Result<Self, ParamError> {
        let body = bytes.slice(head.min(bytes.len())..);
        Self::read(Origin::Raw { bytes, head }, query, &body, headers, client)
    }

    fn read(
        origin: Origin,
        query: &str,
        body: &[u8],
        headers: &HeaderMap,
        client: Option<std::net::IpAddr>,
    ) -> Result<Self, ParamError> {
        let listened = parse_listened(query, body)?;
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let hold = listen::hold(
            header(listen::TIMEOUT_HEADER),
            header(listen::NO_HANGUP_HEADER),
        );
        let tagged = header(listen::TAG_HEADER).is_some_and(|t| !t.trim().is_empty());
        Ok(Self {
            origin,
            listened,
            hold,
            tagged,
            client,
        })
    }

    /// Drops the parsed keys of a poll about to wait: [`PollRequest::restore`] reads them again
    /// from the request, so that a parked poll holds its request once.
    fn shed(&mut self) {
        self.listened = Vec::new();
    }

    /// The parsed keys again, after [`PollRequest::shed`].
    fn restore(&mut self) {
        if self.listened.is_empty() {
            let (query, body) = self.query_and_body();
            // These bytes were read once already: they read the same again.
            self.listened = parse_listened(&query, &body).unwrap_or_default();
        }
    }

    /// The query and body, which the keys are read from.
    fn query_and_body(&self) -> (String, Bytes) {
        match &self.origin {
            Origin::Parts(f) => (f.query.clone(), f.body.clone()),
            Origin::Raw { bytes, head } => {
                let head = (*head).min(bytes.len());
                let mut slots = [httparse::EMPTY_HEADER; 64];
                let query = query_of(&reread(&bytes[..head], &mut slots));
                (query, bytes.slice(head..))
            }
        }
    }

    /// The query, headers (cut to what a node may see) and body a node is sent.
    fn forwarded(&self) -> Forwarded {
        let (bytes, head) = match &self.origin {
            Origin::Parts(f) => return (**f).clone(),
            Origin::Raw { bytes, head } => (bytes, (*head).min(bytes.len())),
        };
        let mut slots = [httparse::EMPTY_HEADER; 64];
        let req = reread(&bytes[..head], &mut slots);
        let mut headers = HeaderMap::with_capacity(req.headers.len());
        for h in req.headers.iter() {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(h.name.as_bytes()),
                HeaderValue::from_bytes(h.value),
            ) {
                headers.append(name, value);
            }
        }
        Forwarded {
            query: query_of(&req),
            headers: forwarded(&headers),
            body: bytes.slice(head..),
        }
    }

    /// How long the poll may be held (`None`: answer at once).
    pub fn hold(&self) -> Option<Duration> {
        self.hold
    }
}

/// Answers a listener request given its parsed poll (see [`PollRequest::parse`]): a 400 for a
/// bad `Listening-Configs`, else at the edge or by a node (rule L4). Counted in the poll
/// metrics, and in the listeners-parked gauge while it waits. pingora's path answers through
/// here; the connection loop in `edge` takes the same steps ([`begin`], [`Parked::wait`],
/// [`Parked::resume`]) with the wait in its own, smaller future.
pub async fn answer(shared: &Shared, parsed: Result<PollRequest, ParamError>) -> Answer {
    let mut begun = begin(shared, parsed).await;
    let answer = loop {
        match begun {
            Begun::Answer(a) => break a,
            Begun::Parked(p) => {
                let changed = p.wait(shared).await;
                begun = p.resume(shared, changed).await;
            }
        }
    };
    finish(shared, answer)
}

/// The 400 of a bad `Listening-Configs` (what a node answers).
fn refused(e: ParamError) -> Answer {
    Answer {
        status: 400,
        content_type: HeaderValue::from_static(crate::proxy::TEXT),
        body: Bytes::from(e.to_string()),
        how: How::Refused,
    }
}

/// Counts an answer about to be written in the poll metrics.
pub fn finish(shared: &Shared, answer: Answer) -> Answer {
    shared.metrics.config_poll(answer.how.label());
    answer
}

/// A poll answered, or parked until a listened key changes or its hold ends.
pub enum Begun {
    /// The answer to write.
    Answer(Answer),
    /// Nothing to answer yet: wait ([`Parked::wait`]), then look again ([`Parked::resume`]).
    Parked(Box<Parked>),
}

/// A poll waiting for a change: what looking again needs, registered with the md5 table, and
/// counted in the listeners-parked gauge while it lives. Held up to 30 s per listener, so it
/// keeps no future of its own.
pub struct Parked {
    req: PollRequest,
    interest: Interest,
    deadline: Instant,
    /// Fetches made for it (at most [`MAX_FETCHES`]).
    fetches: usize,
    _counted: Held,
}

/// Answers a parsed poll at once when it can (a bad one with its 400), else parks it (rules
/// L3, L4, L6).
pub async fn begin(shared: &Shared, parsed: Result<PollRequest, ParamError>) -> Begun {
    let req = match parsed {
        Ok(req) => req,
        Err(e) => return Begun::Answer(refused(e)),
    };
    let counted = Held::new(&shared.metrics.config_listeners);
    // The node round trips are boxed: the futures that wait in them are short-lived, and a
    // future is as large as its largest state.
    let deadline = Instant::now() + req.hold.unwrap_or_default();
    if shared.auth_required() {
        // Rule L6: the node checks the credential (and answers a change at once).
        if let Some(answer) = Box::pin(ask_node(shared, &req, Ask::Now)).await {
            if answer.status != 200 || !answer.body.is_empty() {
                return Begun::Answer(answer);
            }
        } else {
            return Begun::Answer(Answer::unavailable());
        }
    }
    if req.tagged {
        // Rule L8: a `Vipserver-Tag` poll compares tag md5s, which only nodes keep.
        return Begun::Answer(Box::pin(pass(shared, &req, deadline)).await);
    }
    // Registered before the first lookup: a change learned in between still wakes it.
    let client = req.client.map(|ip| ip.to_string()).unwrap_or_default();
    let interest = shared.config_md5s.interest_from(
        &client,
        req.listened.iter().map(|l| (l.key.clone(), l.md5.clone())),
    );
    let parked = Box::new(Parked {
        req,
        interest,
        deadline,
        fetches: 0,
        _counted: counted,
    });
    Box::pin(parked.look(shared)).await
}

impl Parked {
    /// Waits until a listened key may have changed (`true`), or until the hold ends or the
    /// gateway stops (`false`: a stopping gateway answers "no change" rather than cut the
    /// connection, and the client polls again at once, elsewhere).
    pub async fn wait(&self, shared: &Shared) -> bool {
        tokio::select! {
            _ = self.interest.changed() => true,
            _ = tokio::time::sleep_until(self.deadline) => false,
            _ = shared.stopping.cancelled() => false,
        }
    }

    /// After [`Parked::wait`]: "no change" once the hold is over, else a new look at the table.
    pub async fn resume(self: Box<Self>, shared: &Shared, changed: bool) -> Begun {
        if !changed {
            return Begun::Answer(Answer::edge(&[]));
        }
        Box::pin(self.look(shared)).await
    }

    /// Compares with the table, fetching what it lacks; passes the poll to a node when the
    /// table cannot be trusted (rule L4).
    async fn look(mut self: Box<Self>, shared: &Shared) -> Begun {
        let table = &shared.config_md5s;
        self.req.restore();
        loop {
            if !shared.upstreams.view().feeds_ok() {
                return Begun::Answer(self.pass(shared).await);
            }
            let (epoch, keys) = match table.lookup(&self.req.listened) {
                Lookup::Known(changed) if !changed.is_empty() || self.req.hold.is_none() => {
                    return Begun::Answer(Answer::edge(&changed))
                }
                Lookup::Known(_) => break,
                Lookup::Node => return Begun::Answer(self.pass(shared).await),
                Lookup::Missing { epoch, keys } => (epoch, keys),
            };
            // A fetch voided by a reset is tried again, a few times; no node answering means
            // the table cannot be completed.
            self.fetches += 1;
            if self.fetches > MAX_FETCHES || fetch(shared, epoch, &keys).await.is_none() {
                return Begun::Answer(self.pass(shared).await);
            }
        }
        self.req.shed();
        Begun::Parked(self)
    }

    /// Passes the poll to a node for the rest of its hold, no longer registered here.
    async fn pass(self: Box<Self>, shared: &Shared) -> Answer {
        let Parked {
            req,
            interest,
            deadline,
            _counted,
            ..
        } = *self;
        drop(interest);
        pass(shared, &req, deadline).await
    }
}

/// Fetches `keys`' md5s from a node into the table (rule L3): whether the answer was kept (not
/// when a reset came first), `None` when no node answered.
async fn fetch(shared: &Shared, epoch: u64, keys: &[ConfigKey]) -> Option<bool> {
    shared.metrics.config_fetches.inc();
    let query = Md5Query {
        keys: keys.to_vec(),
    };
    for up in candidates(shared) {
        let sent = shared
            .post_internal(&up, CONFIG_MD5_PATH, &query, NODE_ANSWER_TIMEOUT)
            .await;
        let reply = match sent {
            Ok(r) if r.status().is_success() => r.json::<Md5Reply>().await,
            Ok(r) => {
                tracing::debug!(upstream = %up.name, status = %r.status(), "config md5 fetch refused");
                continue;
            }
            Err(e) => Err(e),
        };
        match reply {
            Ok(reply) => return Some(shared.config_md5s.learn_fetched(epoch, keys, &reply)),
            Err(e) => tracing::debug!(upstream = %up.name, error = %e, "config md5 fetch failed"),
        }
    }
    None
}

/// Passes `req` to a node for the rest of its hold and relays the answer (rule L4).
async fn pass(shared: &Shared, req: &PollRequest, deadline: Instant) -> Answer {
    if req.hold.is_some() && deadline.saturating_duration_since(Instant::now()) < MIN_PASS_HOLD {
        return Answer::edge(&[]);
    }
    match ask_node(shared, req, Ask::Rest(deadline)).await {
        Some(answer) => answer,
        None => Answer::unavailable(),
    }
}

/// What a node is asked.
#[derive(Debug, Clone, Copy)]
enum Ask {
    /// Compare now (`Long-Pulling-Timeout-No-Hangup`); with auth on, the node also checks
    /// the credential.
    Now,
    /// Hold the poll until the deadline.
    Rest(Instant),
}

/// The outcome of sending a poll to one node.
enum Sent {
    Answer(Answer),
    /// The node did not answer in time.
    TimedOut,
    Failed,
    /// The gateway is stopping.
    Stopping,
}

/// Ready nodes, those whose feed is followed first (a node whose feed broke may be hung),
/// starting at a rotating offset to spread passed polls.
fn candidates(shared: &Shared) -> Vec<Arc<Upstream>> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let view = shared.upstreams.view();
    let all = view.upstreams();
    if all.is_empty() {
        return Vec::new();
    }
    let start = NEXT.fetch_add(1, Ordering::Relaxed) % all.len();
    let mut order: Vec<Arc<Upstream>> = all[start..].iter().chain(&all[..start]).cloned().collect();
    order.sort_by_key(|u| (!(u.is_usable() && u.feed_ok()), !u.is_usable()));
    order
}

/// Sends the poll to the nodes in turn until one answers; `None` when none did. A poll held
/// on a node that does not answer by the deadline is asked once more, at once, of another
/// node before the gateway says "no change": the silent node may be the one that hung.
async fn ask_node(shared: &Shared, req: &PollRequest, ask: Ask) -> Option<Answer> {
    let nodes = candidates(shared);
    for (i, up) in nodes.iter().enumerate() {
        match send(shared, up, req, ask).await {
            Sent::Answer(a) => return Some(a),
            Sent::Stopping => return Some(Answer::edge(&[])),
            Sent::TimedOut if matches!(ask, Ask::Rest(_)) && req.hold.is_some() => {
                for other in nodes[i + 1..].iter().chain(&nodes[..i]) {
                    if let Sent::Answer(a) = send(shared, other, req, Ask::Now).await {
                        return Some(a);
                    }
                }
                return Some(Answer {
                    how: How::Node,
                    ..Answer::edge(&[])
                });
            }
            Sent::TimedOut | Sent::Failed => {}
        }
    }
    None
}

/// Sends the poll to `up`: held until the deadline (plus a grace for the node's own answer)
/// or answered at once.
async fn send(shared: &Shared, up: &Upstream, req: &PollRequest, ask: Ask) -> Sent {
    let Forwarded {
        query,
        mut headers,
        body,
    } = req.forwarded();
    if let (Some(ip), Some(secret)) = (req.client, shared.settings.cluster_secret.as_deref()) {
        // As for every proxied request: the node believes the address with the secret.
        if let (Ok(addr), Ok(proof)) = (
            HeaderValue::from_str(&ip.to_string()),
            HeaderValue::from_str(secret),
        ) {
            headers.insert(CLIENT_ADDR_HEADER, addr);
            headers.insert(ASSERTED_BY_HEADER, proof);
        }
    }
    let limit = match ask {
        Ask::Now => {
            headers.insert(
                HeaderName::from_static("long-pulling-timeout-no-hangup"),
                HeaderValue::from_static("true"),
            );
            NODE_ANSWER_TIMEOUT
        }
        Ask::Rest(_) if req.hold.is_none() => NODE_ANSWER_TIMEOUT,
        Ask::Rest(deadline) => {
            // The node holds what is left of the hold (its own floor may make it longer:
            // the limit below cuts it), and answers just before the gateway would.
            let left = deadline.saturating_duration_since(Instant::now());
            let asked = left + listen::HOLD_MARGIN;
            if let Ok(v) = HeaderValue::from_str(&asked.as_millis().to_string()) {
                headers.insert(HeaderName::from_static("long-pulling-timeout"), v);
            }
            left + PASS_GRACE
        }
    };
    let url = if query.is_empty() {
        format!("http://{}{CONFIG_LISTENER_PATH}", up.addr)
    } else {
        format!("http://{}{CONFIG_LISTENER_PATH}?{query}", up.addr)
    };
    let answered = async {
        let resp = shared
            .http
            .post(url)
            .headers(headers)
            .body(body)
            .send()
            .await?;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .cloned()
            .unwrap_or_else(|| HeaderValue::from_static(TEXT));
        let body = resp.bytes().await?;
        Ok::<_, reqwest::Error>(Answer {
            status,
            content_type,
            body,
            how: How::Node,
        })
    };
    let result = tokio::select! {
        r = tokio::time::timeout(limit, answered) => r,
        _ = shared.stopping.cancelled() => return Sent::Stopping,
    };
    match result {
        Ok(Ok(answer)) => Sent::Answer(answer),
        Ok(Err(e)) => {
            tracing::debug!(upstream = %up.name, error = %e, "config listener: node failed");
            Sent::Failed
        }
        Err(_) => {
            tracing::debug!(upstream = %up.name, "config listener: node did not answer in time");
            Sent::TimedOut
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn a_poll_reads_its_keys_from_the_query_or_the_form_body_and_its_hold_from_headers() {
        let body = Bytes::from("Listening-Configs=a%02G%02m%01b%02G%02%02ns%01&tenant=t");
        let h = headers(&[
            ("long-pulling-timeout", "30000"),
            ("host", "gw"),
            ("content-length", "55"),
            ("authorization", "Bearer x"),
        ]);
        let req = PollRequest::parse("accessToken=k", body, &h, None).unwrap();
        assert_eq!(req.listened.len(), 2);
        assert_eq!(
            req.listened[0].key.tenant, "t",
            "the form's tenant fills in"
        );
        assert_eq!(req.listened[1].key.tenant, "ns");
        assert_eq!(req.hold(), Some(Duration::from_millis(29_500)));
        let sent = req.forwarded().headers;
        assert!(sent.get("host").is_none() && sent.get("content-length").is_none());
        assert!(sent.get("authorization").is_some(), "credentials go on");
        // Query values come first.
        let q = PollRequest::parse(
            "Listening-Configs=q%02G%02m%01",
            Bytes::from("Listening-Configs=b%02G%02m%01"),
            &headers(&[
                ("vipserver-tag", "blue"),
                ("x-nacre-client-addr", "10.9.9.9"),
            ]),
            None,
        )
        .unwrap();
        assert_eq!(q.listened[0].key.data_id, "q");
        assert!(q.tagged, "a tagged poll is a node's");
        assert!(
            q.forwarded().headers.get("x-nacre-client-addr").is_none(),
            "client-sent nacre headers go"
        );
        assert_eq!(q.hold(), None, "no timeout header: answered at once");
    }

    #[test]
    fn a_poll_kept_as_its_bytes_is_read_and_forwarded_as_its_parts_would_be() {
        let pairs = [
            ("host", "gw"),
            ("long-pulling-timeout", "30000"),
            ("content-length", "30"),
            ("x-nacre-client-addr", "10.9.9.9"),
            ("authorization", "Bearer x"),
            ("client-version", "1.4.1"),
        ];
        let body = "Listening-Configs=a%02G%02m%01";
        let mut raw = String::from("POST /nacos/v1/cs/configs/listener?accessToken=k HTTP/1.1\r\n");
        for (k, v) in pairs {
            raw.push_str(&format!("{k}: {v}\r\n"));
        }
        raw.push_str("\r\n");
        let head = raw.len();
        raw.push_str(body);
        let h = headers(&pairs);
        let parts = PollRequest::parse("accessToken=k", Bytes::from(body), &h, None).unwrap();
        let bytes =
            PollRequest::parse_raw(Bytes::from(raw), head, "accessToken=k", &h, None).unwrap();
        let (kept, kept_head) = kept_request("accessToken=k", &h, body.as_bytes());
        assert!(
            kept.len() < head + body.len(),
            "hop-by-hop, nacre and unread headers are left out"
        );
        let kept = PollRequest::parse_raw(kept, kept_head, "accessToken=k", &h, None).unwrap();
        let (k, b0) = (kept.forwarded(), bytes.forwarded());
        assert_eq!(
            (k.query, k.headers, k.body),
            (b0.query, b0.headers, b0.body)
        );
        assert_eq!(parts.listened, bytes.listened);
        assert_eq!((parts.hold, parts.tagged), (bytes.hold, bytes.tagged));
        let (a, b) = (parts.forwarded(), bytes.forwarded());
        assert_eq!((a.query.as_str(), &a.body), (b.query.as_str(), &b.body));
        assert_eq!(a.headers, b.headers);
        assert_eq!(b.body, body.as_bytes());
        // A parked poll drops its parsed keys and reads the same ones again.
        for mut req in [parts, bytes] {
            let listened = req.listened.clone();
            req.shed();
            assert!(req.listened.is_empty());
            req.restore();
            assert_eq!(req.listened, listened);
        }
        assert!(b.headers.get("x-nacre-client-addr").is_none());
        // Only the headers a node reads from a poll go on: not the client's version.
        let mut names: Vec<&str> = b.headers.keys().map(|n| n.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["authorization", "long-pulling-timeout"]);
    }

    #[test]
    fn a_bad_poll_is_the_400_a_node_gives() {
        for (query, body) in [
            ("", ""),
            ("", "Listening-Configs="),
            ("", "Listening-Configs=a%02G%01"),
            ("", "Listening-Configs=a%20b%02G%02m%01"),
        ] {
            let err = PollRequest::parse(query, Bytes::from(body), &HeaderMap::new(), None);
            assert!(err.is_err(), "{body:?}");
        }
    }

    #[test]
    fn edge_answers_are_nacos_shaped() {
        let req = PollRequest::parse(
            "",
            Bytes::from("Listening-Configs=a%02G%02m%02ns%01"),
            &HeaderMap::new(),
            None,
        )
        .unwrap();
        let changed: Vec<&Listened> = req.listened.iter().collect();
        let a = Answer::edge(&changed);
        assert_eq!((a.status, a.how), (200, How::Changed));
        assert_eq!(&a.body[..], b"a%02G%02ns%01\n");
        let none = Answer::edge(&[]);
        assert_eq!((none.body.len(), none.how), (0, How::Unchanged));
    }
}
