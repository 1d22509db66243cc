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

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use nacre_ring::wire::{
    RelayedAnswer, RelayedOp, RelayedRequest, BEATS_PATH, BEAT_PATH, WRITES_PATH,
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
    let relayed: Vec<RelayedRequest> = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return (StatusCode::BAD_REQUEST, format!("bad batch: {e}")).into_response();
        }
    };
    let answers = futures::future::join_all(
        relayed
            .into_iter()
            .map(|one| serve(&app, &public, one, peer.as_ref())),
    )
    .await;
    axum::Json(answers).into_response()
}

/// Serves one relayed request: straight to the beat handler when rule B1 allows, else through
/// the public router.
async fn serve(
    app: &Arc<App>,
    public: &Router,
    relayed: RelayedRequest,
    peer: Option<&ConnectInfo<PeerAddr>>,
) -> RelayedAnswer {
    let headers = match header_map(&relayed.headers) {
        Ok(h) => h,
        Err(why) => return answer(bad_batch_entry(why)).await,
    };
    let direct = takes_direct(app, &relayed, &headers);
    let via = if direct { "direct" } else { "router" };
    app.node.metrics().relayed.with_label_values(&[via]).inc();
    let resp = if direct {
        serve_direct(app, relayed, headers, peer.map(|p| p.0.addr)).await
    } else {
        through_router(public.clone(), relayed, headers, peer.cloned()).await
    };
    answer(resp).await
}

/// Whether rule B1 lets `relayed` (with its `headers`) skip the router: a beat, auth off, the
/// status gate passing it, its body within the limit (rule G2 never sheds beats).
fn takes_direct(app: &App, relayed: &RelayedRequest, headers: &HeaderMap) -> bool {
    relayed.op == RelayedOp::Beat
        && !app.node.settings().auth.enabled
        && super::gate_refusal(app, &Method::PUT, BEAT_PATH, headers).is_none()
        && relayed.body.len() <= super::params::body_limit(app, BEAT_PATH)
}

/// Rule B1: the beat handler's answer, with the parameters the router's extractor would make
/// (or its rejection), counted as the router counts it.
async fn serve_direct(
    app: &Arc<App>,
    relayed: RelayedRequest,
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
        body: bytes::Bytes::from(relayed.body),
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
    relayed: RelayedRequest,
    headers: HeaderMap,
    peer: Option<ConnectInfo<PeerAddr>>,
) -> Response {
    let mut req = match request(relayed, headers) {
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
fn uri_of(relayed: &RelayedRequest) -> String {
    let path = relayed.op.path();
    if relayed.query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", relayed.query)
    }
}

/// A relayed request's headers as a map; `Err` when one cannot be a header.
fn header_map(headers: &[(String, String)]) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
        let value = HeaderValue::from_str(value).map_err(|e| e.to_string())?;
        map.append(name, value);
    }
    Ok(map)
}

/// The request a relayed request with `headers` stands for; `Err` with the reason when it
/// cannot be one.
fn request(relayed: RelayedRequest, headers: HeaderMap) -> Result<Request, String> {
    let mut req = Request::builder()
        .method(method_of(relayed.op))
        .uri(uri_of(&relayed))
        .body(Body::from(relayed.body))
        .map_err(|e| e.to_string())?;
    *req.headers_mut() = headers;
    Ok(req)
}

/// The relayed form of the router's answer.
async fn answer(resp: Response) -> RelayedAnswer {
    let (parts, body) = resp.into_parts();
    let headers = parts
        .headers
        .iter()
        .filter(|(name, _)| !PER_CONNECTION.contains(name))
        .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.to_string())))
        .collect();
    let body = match axum::body::to_bytes(body, MAX_ANSWER).await {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => {
            return RelayedAnswer {
                status: 500,
                headers: Vec::new(),
                body: format!("cannot read the beat's answer: {e}"),
            }
        }
    };
    RelayedAnswer {
        status: parts.status.as_u16(),
        headers,
        body,
    }
}
