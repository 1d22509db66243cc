//! Node-to-node routes under `/nacre/internal/…` (besides Raft's own): member probes, Distro
//! sync, verify and snapshot, owners' health results, the change feed gateways follow, and
//! the push subscribers a gateway answered from its cache. Every route requires the secret.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::{HeaderName, CONTENT_TYPE};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use nacre_ring::wire::{
    Md5Query, Md5Reply, SubscriberNote, CONFIG_MD5_PATH, PUSH_SUBSCRIBERS_PATH,
};

use super::App;
use crate::distro::wire::{
    SnapshotWriter, SyncBatch, SyncReply, VerifyReply, VerifyRequest, SNAPSHOT_LINES_HEADER,
    SNAPSHOT_PATH, SYNC_PATH, VERIFY_PATH,
};
use crate::membership::{PingReply, PING_PATH};
use crate::peer::{require_secret, MAX_INTERNAL_BODY};

async fn ping(State(app): State<Arc<App>>) -> Json<PingReply> {
    let node = &app.node;
    Json(PingReply {
        address: node.membership().self_addr().to_string(),
        node_id: node.persistent().node_id(),
        ready: node.is_ready(),
        raft_initialized: node.persistent().is_initialized(),
        standing: node.has_standing(),
        ring: node.membership().ring().members().to_vec(),
        down: node.membership().down_peers(),
        members_digest: node.membership().configured().digest(),
        auth: node.settings().auth.enabled,
        raft_batches: true,
        relays_beats: true,
        relays_writes: true,
    })
}

/// Parsed with plain `serde_json`: axum's `Json` tracks the path of every field for its error
/// message, which on the busiest internal route cost more than the merge itself.
async fn sync(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let batch: SyncBatch = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return (StatusCode::BAD_REQUEST, format!("bad sync batch: {e}")).into_response();
        }
    };
    let received = app.node.apply_remote(batch.records);
    Json(SyncReply {
        applied: received.changed.len(),
        want: received.want,
    })
    .into_response()
}

async fn verify(State(app): State<Arc<App>>, Json(req): Json<VerifyRequest>) -> Json<VerifyReply> {
    let (reply, removed) = app.node.distro().handle_verify(&req, app.node.now_ms());
    for k in &removed {
        app.node.changed(k);
    }
    Json(reply)
}

async fn health(
    State(app): State<Arc<App>>,
    Json(results): Json<Vec<crate::health::HealthResult>>,
) -> Json<usize> {
    let changed = crate::health::accept(&app.node, results);
    for k in &changed {
        app.node.changed(k);
    }
    Json(changed.len())
}

/// Push subscribers a gateway answered from its cache, registered as if their polls had come
/// here.
async fn push_subscribers(
    State(app): State<Arc<App>>,
    Json(notes): Json<Vec<SubscriberNote>>,
) -> Json<usize> {
    Json(super::instance::subscribe_noted(&app, notes))
}

/// 503 while this node is still loading: a starting peer then asks the next one. Copying and
/// serializing every record is O(instances): it runs off the async workers, and the body goes
/// out a piece at a time (rule S3 in [`crate::distro`]), so the receiver decodes and merges the
/// first records while the last are still being written.
async fn snapshot(State(app): State<Arc<App>>) -> Response {
    if !app.node.distro().is_loaded() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let node = app.node.clone();
    // Ends when the last piece is out or when the receiver hangs up (a send then fails).
    tokio::task::spawn_blocking(move || {
        let Some(records) = node.distro().snapshot() else {
            return;
        };
        let mut writer = SnapshotWriter::default();
        for chunk in records.chunks(SNAPSHOT_PIECE) {
            let piece = writer.piece(chunk).map(Bytes::from).map_err(|e| {
                tracing::warn!(error = %e, "snapshot serialization failed");
                std::io::Error::other(e)
            });
            // A failed piece ends the body short: the receiver sees no closing line.
            let failed = piece.is_err();
            if tx.blocking_send(piece).is_err() || failed {
                return;
            }
        }
        let _ = tx.blocking_send(Ok(Bytes::from(writer.finish())));
    });
    let pieces = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|piece| (piece, rx))
    });
    (
        [
            (CONTENT_TYPE, "application/json"),
            (HeaderName::from_static(SNAPSHOT_LINES_HEADER), "1"),
        ],
        axum::body::Body::from_stream(pieces),
    )
        .into_response()
}

/// Records per piece of a snapshot body (about a megabyte with ten instances each).
const SNAPSHOT_PIECE: usize = 1_000;

/// Path of the change feed that gateways follow.
pub use nacre_ring::wire::CHANGES_PATH;
/// Longest a feed read may be held open.
const MAX_FEED_WAIT_MS: u64 = 30_000;

#[derive(Debug, serde::Deserialize)]
struct FeedQuery {
    #[serde(default)]
    epoch: u64,
    #[serde(default)]
    cursor: u64,
    #[serde(default)]
    wait_ms: u64,
}

/// Changed service keys after a cursor, held open up to `wait_ms` until there is one.
async fn changes(
    State(app): State<Arc<App>>,
    axum::extract::Query(q): axum::extract::Query<FeedQuery>,
) -> Json<crate::changes::FeedPage> {
    let wait = Duration::from_millis(q.wait_ms.min(MAX_FEED_WAIT_MS));
    let page = tokio::select! {
        p = app.node.changes().wait_read(q.epoch, q.cursor, wait) => p,
        // A held read must not keep a stopping node alive.
        _ = app.shutdown.cancelled() => app.node.changes().read(q.epoch, q.cursor),
    };
    Json(page)
}

/// The md5s of the configs a gateway asks for (it parks listeners on keys it has not heard of
/// on its feed yet), with the revision they are current as of.
async fn config_md5s(
    State(app): State<Arc<App>>,
    Json(q): Json<Md5Query>,
) -> Result<Json<Md5Reply>, super::error::ApiError> {
    if !app.node.is_ready() {
        return Err(super::error::ApiError::unavailable(
            "node is starting: its configs may be behind",
        ));
    }
    if q.keys.len() > crate::configs::MAX_LISTENED {
        return Err(super::error::ApiError::bad_request(format!(
            "at most {} keys",
            crate::configs::MAX_LISTENED
        )));
    }
    let (revision, (md5s, betas)) = app.node.persistent().read_at(|st| {
        q.keys
            .iter()
            .map(|k| (st.configs().md5(k).to_string(), st.configs().has_beta(k)))
            .unzip()
    });
    Ok(Json(Md5Reply {
        revision,
        md5s,
        betas,
    }))
}

/// The internal routes of the node, guarded by the cluster secret.
pub fn routes(app: Arc<App>) -> Router {
    let secret: Arc<str> = Arc::from(app.secret.as_str());
    Router::new()
        .route(PING_PATH, get(ping))
        .route(SYNC_PATH, post(sync))
        .route(VERIFY_PATH, post(verify))
        .route(SNAPSHOT_PATH, get(snapshot))
        .route(CHANGES_PATH, get(changes))
        .route(CONFIG_MD5_PATH, post(config_md5s))
        .route(crate::health::SYNC_PATH, post(health))
        .route(PUSH_SUBSCRIBERS_PATH, post(push_subscribers))
        .layer(DefaultBodyLimit::max(MAX_INTERNAL_BODY))
        .layer(axum::middleware::from_fn_with_state(secret, require_secret))
        .with_state(app)
}
