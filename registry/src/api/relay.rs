//! Beat batches a gateway relays (`nacre_ring::wire::BEATS_PATH`).
//!
//! A gateway holds each client's beat for a moment and hands a node all it holds for it in
//! one internal request (rules R1–R5 in the gateway's `beats`). The node serves each relayed
//! beat by passing it through its own public router, in memory: the same gate, auth guard,
//! overload rules, parsing, metrics and answer as the request arriving on its own connection,
//! with the batch's TCP peer as the request's (the gateway asserts each client's address, as
//! it does on a proxied request). The batch itself needs the cluster secret; its beats are
//! served concurrently, and the answers come back in the batch's order.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use nacre_ring::wire::{RelayedAnswer, RelayedRequest, BEATS_PATH, BEAT_PATH};
use tower::ServiceExt;

use crate::listener::PeerAddr;
use crate::peer::require_secret;

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

/// The batch route, serving each beat through `public` (the node's public router).
pub fn routes(secret: Arc<str>, public: Router) -> Router {
    Router::new()
        .route(BEATS_PATH, post(batch))
        .layer(axum::middleware::from_fn_with_state(secret, require_secret))
        .with_state(public)
}

async fn batch(State(public): State<Router>, req: Request) -> Response {
    let peer = req.extensions().get::<ConnectInfo<PeerAddr>>().cloned();
    let body = match axum::body::to_bytes(req.into_body(), MAX_BATCH_BODY).await {
        Ok(b) => b,
        Err(e) => {
            return (StatusCode::BAD_REQUEST, format!("bad beat batch: {e}")).into_response();
        }
    };
    let beats: Vec<RelayedRequest> = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return (StatusCode::BAD_REQUEST, format!("bad beat batch: {e}")).into_response();
        }
    };
    let answers = futures::future::join_all(
        beats
            .into_iter()
            .map(|beat| serve(public.clone(), beat, peer.clone())),
    )
    .await;
    axum::Json(answers).into_response()
}

/// Serves one relayed beat through the public router.
async fn serve(
    public: Router,
    beat: RelayedRequest,
    peer: Option<ConnectInfo<PeerAddr>>,
) -> RelayedAnswer {
    let req = match request(beat) {
        Ok(mut req) => {
            if let Some(peer) = peer {
                req.extensions_mut().insert(peer);
            }
            req
        }
        Err(why) => {
            return RelayedAnswer {
                status: 400,
                headers: vec![(
                    header::CONTENT_TYPE.to_string(),
                    "text/plain; charset=utf-8".to_string(),
                )],
                body: why,
            }
        }
    };
    let resp = match public.oneshot(req).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    };
    answer(resp).await
}

/// The request a relayed beat stands for; `Err` with the reason when it cannot be one (a
/// gateway relays only what it parsed as HTTP, so this is a bug or a forged batch).
fn request(beat: RelayedRequest) -> Result<Request, String> {
    let uri = if beat.query.is_empty() {
        BEAT_PATH.to_string()
    } else {
        format!("{BEAT_PATH}?{}", beat.query)
    };
    let mut builder = Request::builder().method(Method::PUT).uri(uri);
    for (name, value) in &beat.headers {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
        let value = HeaderValue::from_str(value).map_err(|e| e.to_string())?;
        builder = builder.header(name, value);
    }
    builder
        .body(Body::from(beat.body))
        .map_err(|e| e.to_string())
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
