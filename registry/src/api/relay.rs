//! Beat and write batches a gateway relays (`nacre_ring::wire::BEATS_PATH`, `WRITES_PATH`).
//!
//! A gateway holds each client's beat (and register or deregister) for a moment and hands a
//! node all it holds for it in one internal request (rules R1–R4 in the gateway's `beats`).
//! The node serves each relayed request, as the method and path its `RelayedOp` names, by
//! passing it through its own public router, in memory: the same gate, auth guard,
//! overload rules, parsing, metrics and answer as the request arriving on its own connection,
//! with the batch's TCP peer as the request's (the gateway asserts each client's address, as
//! it does on a proxied request). The batch itself needs the cluster secret; its beats are
//! served concurrently, and the answers come back in the batch's order.
//!
//! - **B1 (direct when nothing else would act).** Passing a beat through the router costs more
//!   than the beat itself (measured: over half of a node's CPU on relayed beats went to
//!   building requests and running middleware, 2 % to the store). So a beat is handed straight
//!   to the beat handler, with the parameters the router would extract, when no middleware
//!   could answer it or change it: auth is off, the status gate would pass it (asked of the
//!   gate's own `gate_refusal`), its body is within the node's limit, and rule G2 never sheds
//!   beats. It is counted as the
//!   router counts it. Any other beat goes through the router. Either way the client gets the
//!   same answer (`b1_a_beat_in_a_batch_is_answered_as_the_same_beat_alone` in
//!   `tests/gateway.rs` compares the two paths; with auth on, `tests/auth.rs` checks that a
//!   relayed beat needs a credential).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use nacre_ring::wire::{
    RelayedAnswerRef, RelayedOp, RelayedRequest, TextPair, ASSERTED_BY_HEADER, BEATS_PATH,
    BEAT_PATH, CLIENT_ADDR_HEADER, OWNER_ROUTED_HEADER, WRITES_PATH,
};
use tower::ServiceExt;

use super::params::{Params, RawRequest};
use super::App;
use crate::listener::PeerAddr;
use crate::peer::require_secret;

/// How the router's metrics name a beat (rule B1 counts a direct beat the same way).
const BEAT_API: &str = "PUT /nacos/v1/ns/instance/beat";

/// The largest batch body a node reads (a gateway sends far less: at most a few hundred beats
/// of at most 64 KiB each). The handler reads the body itself, so this is its only limit.
const MAX_BATCH_BODY: usize = 64 * 1024 * 1024;

/// The largest answer to one beat kept for the batch's reply (a beat answer is a short JSON
/// document).
const MAX_ANSWER: usize = 1024 * 1024;

/// Answer headers that belong to the node's own connection, not to the relayed answer.
const PER_CONNECTION: [HeaderName; 4] = [
    header::CONTENT_LENGTH,
    header::DATE,
    header::CONNECTION,
    header::TRANSFER_ENCODING,
];

/// The batch routes (beats, writes), serving each request directly (rule B1) or through
/// `public` (the node's public router).
pub fn routes(app: Arc<App>, public: Router) -> Router {
    let secret: Arc<str> = Arc::from(app.secret.as_str());
    Router::new()
        .route(BEATS_PATH, post(batch))
        .route(WRITES_PATH, post(batch))
        .layer(axum::middleware::from_fn_with_state(secret, require_secret))
        .with_state((app, public))
}

async fn batch(State((app, public)): State<(Arc<App>, Router)>, req: Request) -> Response {
    let peer = req.extensions().get::<ConnectInfo<PeerAddr>>().cloned();
    let body = match axum::body::to_bytes(req.into_body(), MAX_BATCH_BODY).await {
        Ok(b) => b,
        Err(e) => {
            return (StatusCode::BAD_REQUEST, format!("bad batch: {e}")).into_response();
        }
    };
    // The requests borrow their strings from `body` (only escaped ones are copied out), and
    // the headers and bodies made from them share its bytes.
    let relayed: Vec<RelayedRequest<'_>> = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return (StatusCode::BAD_REQUEST, format!("bad batch: {e}")).into_response();
        }
    };
    let made = futures::future::join_all(
        relayed
            .into_iter()
            .map(|one| serve(&app, &public, &body, one, peer.as_ref())),
    )
    .await;
    reply(&made)
}

/// The batch's reply: one [`RelayedAnswerRef`] per answer made, in order, written straight
/// from the answers.
fn reply(made: &[Made]) -> Response {
    let texts: Vec<Cow<'_, str>> = made.iter().map(Made::text).collect();
    let headers: Vec<Vec<(&str, &str)>> = made.iter().map(Made::header_pairs).collect();
    let answers: Vec<RelayedAnswerRef<'_>> = made
        .iter()
        .zip(&texts)
        .zip(&headers)
        .map(|((m, text), headers)| RelayedAnswerRef {
            status: m.status.as_u16(),
            headers,
            body: text,
        })
        .collect();
    axum::Json(answers).into_response()
}

/// Serves one relayed request: straight to the beat handler when rule B1 allows, else through
/// the public router. `batch` is the bytes `relayed` was read from.
async fn serve(
    app: &Arc<App>,
    public: &Router,
    batch: &Bytes,
    relayed: RelayedRequest<'_>,
    peer: Option<&ConnectInfo<PeerAddr>>,
) -> Made {
    let headers = match header_map(batch, &relayed.headers) {
        Ok(h) => h,
        Err(why) => return Made::of(bad_batch_entry(why)).await,
    };
    let direct = takes_direct(app, &relayed, &headers);
    let via = if direct { "direct" } else { "router" };
    app.node.metrics().relayed.with_label_values(&[via]).inc();
    let resp = if direct {
        serve_direct(app, batch, relayed, headers, peer.map(|p| p.0.addr)).await
    } else {
        through_router(public.clone(), batch, relayed, headers, peer.cloned()).await
    };
    Made::of(resp).await
}

/// Whether rule B1 lets `relayed` (with its `headers`) skip the router: a beat, auth off, the
/// status gate passing it, its body within the limit (rule G2 never sheds beats).
fn takes_direct(app: &App, relayed: &RelayedRequest<'_>, headers: &HeaderMap) -> bool {
    relayed.op == RelayedOp::Beat
        && !app.node.settings().auth.enabled
        && super::gate_refusal(app, &Method::PUT, BEAT_PATH, headers).is_none()
        && relayed.body.len() <= super::params::body_limit(app, BEAT_PATH)
}

/// Rule B1: the beat handler's answer, with the parameters the router's extractor would make
/// (or its rejection), counted as the router counts it.
async fn serve_direct(
    app: &Arc<App>,
    batch: &Bytes,
    relayed: RelayedRequest<'_>,
    headers: HeaderMap,
    peer: Option<std::net::SocketAddr>,
) -> Response {
    let start = Instant::now();
    let uri = match uri_of(&relayed).parse::<Uri>() {
        Ok(u) => u,
        Err(e) => return bad_batch_entry(e.to_string()),
    };
    let raw = RawRequest {
        method: method_of(relayed.op),
        uri,
        body: share(batch, &relayed.body),
    };
    let resp = match Params::assemble(raw, headers, peer) {
        Ok(params) => super::instance::beat(State(app.clone()), params)
            .await
            .into_response(),
        Err(rejected) => rejected.into_response(),
    };
    super::record(app, BEAT_API, resp.status(), start, false);
    resp
}

/// Serves one relayed request through the public router.
async fn through_router(
    public: Router,
    batch: &Bytes,
    relayed: RelayedRequest<'_>,
    headers: HeaderMap,
    peer: Option<ConnectInfo<PeerAddr>>,
) -> Response {
    let mut req = match request(batch, relayed, headers) {
        Ok(req) => req,
        Err(why) => return bad_batch_entry(why),
    };
    if let Some(peer) = peer {
        req.extensions_mut().insert(peer);
    }
    match public.oneshot(req).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    }
}

/// The answer to a batch entry that cannot be a request (a gateway relays only what it parsed
/// as HTTP, so this is a bug or a forged batch).
fn bad_batch_entry(why: String) -> Response {
    (StatusCode::BAD_REQUEST, why).into_response()
}

/// The method of a relayed request.
fn method_of(op: RelayedOp) -> Method {
    match op {
        RelayedOp::Beat => Method::PUT,
        RelayedOp::Register => Method::POST,
        RelayedOp::Deregister => Method::DELETE,
    }
}

/// The path and query a relayed request was sent to.
fn uri_of(relayed: &RelayedRequest<'_>) -> String {
    let path = relayed.op.path();
    if relayed.query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", relayed.query)
    }
}

/// `text`'s bytes: a view of `batch` when `text` was borrowed from it, else a copy.
fn share(batch: &Bytes, text: &str) -> Bytes {
    let (start, end) = (
        batch.as_ptr() as usize,
        batch.as_ptr() as usize + batch.len(),
    );
    let at = text.as_ptr() as usize;
    if at >= start && at + text.len() <= end {
        batch.slice_ref(text.as_bytes())
    } else {
        Bytes::copy_from_slice(text.as_bytes())
    }
}

/// The names a gateway adds to every relayed request, made once rather than copied from the
/// batch per request.
static KNOWN_NAMES: [HeaderName; 4] = [
    HeaderName::from_static(CLIENT_ADDR_HEADER),
    HeaderName::from_static(ASSERTED_BY_HEADER),
    HeaderName::from_static(OWNER_ROUTED_HEADER),
    HeaderName::from_static("x-forwarded-for"),
];

/// A relayed request's headers as a map, their values sharing `batch`'s bytes; `Err` when one
/// cannot be a header.
fn header_map(batch: &Bytes, headers: &[TextPair<'_>]) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let name = match KNOWN_NAMES.iter().find(|k| k.as_str() == name) {
            Some(known) => known.clone(),
            None => HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?,
        };
        let value =
            HeaderValue::from_maybe_shared(share(batch, value)).map_err(|e| e.to_string())?;
        map.append(name, value);
    }
    Ok(map)
}

/// The request a relayed request with `headers` stands for; `Err` with the reason when it
/// cannot be one.
fn request(
    batch: &Bytes,
    relayed: RelayedRequest<'_>,
    headers: HeaderMap,
) -> Result<Request, String> {
    let mut req = Request::builder()
        .method(method_of(relayed.op))
        .uri(uri_of(&relayed))
        .body(Body::from(share(batch, &relayed.body)))
        .map_err(|e| e.to_string())?;
    *req.headers_mut() = headers;
    Ok(req)
}

/// A relayed request's answer, kept as made until the batch's reply is written from it.
struct Made {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Made {
    /// The answer `resp` makes.
    async fn of(resp: Response) -> Made {
        let (parts, body) = resp.into_parts();
        match axum::body::to_bytes(body, MAX_ANSWER).await {
            Ok(body) => Made {
                status: parts.status,
                headers: parts.headers,
                body,
            },
            Err(e) => Made {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                headers: HeaderMap::new(),
                body: Bytes::from(format!("cannot read the beat's answer: {e}")),
            },
        }
    }

    /// Its body as text (an answer is always UTF-8; anything else is replaced, not dropped).
    fn text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }

    /// Its headers, without the per-connection ones and any that are not text.
    fn header_pairs(&self) -> Vec<(&str, &str)> {
        self.headers
            .iter()
            .filter(|(name, _)| !PER_CONNECTION.contains(name))
            .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)))
            .collect()
    }
}
