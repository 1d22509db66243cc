//! Raft node-to-node transport over the node's HTTP port.
//!
//! The client side POSTs JSON to `http://<addr>/nacre/internal/raft/{append,vote,snapshot}`
//! with the cluster secret header; the server side ([`raft_router`]) checks the secret and hands
//! the request to the local [`Raft`]. A reply body is the JSON of openraft's
//! `Result<Response, RaftError>`, so a remote Raft error travels back typed, while transport
//! failures are classified for openraft's retry logic: a refused connection is `Unreachable`
//! (back off), a deadline is `Timeout`, anything else is a `NetworkError` (retry).
//!
//! A member is reached at the address its own ping answers place it ([`Locator`]), and only
//! then at the address Raft's membership stores: a member that came back at another
//! address keeps its id, and until the leader rewrites the stored address (or while no leader
//! can be elected because of it) its RPCs must still find it. Every request names its target
//! id and a node refuses one meant for another member (421), so a stale address can delay an
//! RPC but never deliver it to the wrong node.

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RPCTypes};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::types::{NodeId, Raft, TypeConfig};

/// The header that carries the cluster secret on internal calls.
pub use nacre_ring::wire::SECRET_HEADER;

/// The header naming the Raft member a request is meant for.
pub const TARGET_HEADER: &str = "x-nacre-raft-target";

/// Path prefix of the Raft routes.
pub const RAFT_PATH: &str = "/nacre/internal/raft";

/// Largest accepted request body. Snapshot chunks are sent as JSON arrays of numbers (about
/// 3.6 bytes per byte), so this must stay well above 4 × the configured chunk size.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Time allowed to establish a TCP connection to a peer; a dead peer must fail fast so the
/// leader backs off instead of stalling its replication stream.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A non-success HTTP status from a peer.
#[derive(Debug, thiserror::Error)]
#[error("peer answered HTTP {status}: {body}")]
pub struct HttpStatusError {
    /// The status code.
    pub status: u16,
    /// The (truncated) body text.
    pub body: String,
}

/// Where a Raft member answers now, by id, as its own ping answers report it (the node's
/// membership view); `None` for a member that has not answered its last probe.
#[derive(Clone)]
pub struct Locator(Arc<dyn Fn(NodeId) -> Option<String> + Send + Sync>);

impl Locator {
    /// A locator asking `find`.
    pub fn new(find: impl Fn(NodeId) -> Option<String> + Send + Sync + 'static) -> Self {
        Self(Arc::new(find))
    }

    /// Where member `id` answered its last probe, if it did.
    pub fn locate(&self, id: NodeId) -> Option<String> {
        (self.0)(id)
    }
}

impl Default for Locator {
    /// Locates nobody: every member is reached at its stored address (a standalone node).
    fn default() -> Self {
        Self::new(|_| None)
    }
}

impl std::fmt::Debug for Locator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Locator")
    }
}

/// Creates one [`HttpNetwork`] per peer; all share one connection pool.
#[derive(Clone)]
pub struct HttpNetworkFactory {
    client: reqwest::Client,
    secret: Arc<str>,
    self_id: NodeId,
    locator: Locator,
}

impl HttpNetworkFactory {
    /// A factory for the node `self_id` that authenticates with `secret` and finds members
    /// with `locator` first.
    pub fn new(self_id: NodeId, secret: &str, locator: Locator) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(crate::peer::POOL_IDLE)
            // Peers are addressed directly; an HTTP(S)_PROXY meant for egress must not capture
            // cluster-internal traffic (or see the secret).
            .no_proxy()
            .build()?;
        Ok(Self {
            client,
            secret: Arc::from(secret),
            self_id,
            locator,
        })
    }
}

impl RaftNetworkFactory<TypeConfig> for HttpNetworkFactory {
    type Network = HttpNetwork;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        HttpNetwork {
            client: self.client.clone(),
            secret: self.secret.clone(),
            self_id: self.self_id,
            target,
            target_header: target.to_string(),
            target_node: node.clone(),
            locator: self.locator.clone(),
        }
    }
}

/// The connection to one peer.
pub struct HttpNetwork {
    client: reqwest::Client,
    secret: Arc<str>,
    self_id: NodeId,
    target: NodeId,
    target_header: String,
    /// The member as Raft's membership stores it.
    target_node: BasicNode,
    locator: Locator,
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl HttpNetwork {
    async fn send<Req, Resp, E>(
        &self,
        route: &str,
        action: RPCTypes,
        req: &Req,
        ttl: Duration,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: StdError + DeserializeOwned,
    {
        let url = match self.locator.locate(self.target) {
            Some(addr) => format!("http://{addr}{RAFT_PATH}/{route}"),
            None => format!("http://{}{RAFT_PATH}/{route}", self.target_node.addr),
        };
        let res = self
            .client
            .post(&url)
            .header(SECRET_HEADER, &*self.secret)
            .header(TARGET_HEADER, &self.target_header)
            .timeout(ttl)
            .json(req)
            .send()
            .await
            .map_err(|e| self.transport_error(&e, action, ttl))?;
        let status = res.status();
        if !status.is_success() {
            let body = res.text().await.unwrap_or_default();
            let err = HttpStatusError {
                status: status.as_u16(),
                body: body.chars().take(512).collect(),
            };
            // A peer that refuses our secret (or lacks the route, or is another member than
            // the one meant) will keep refusing: back off rather than hammering it.
            return Err(match status {
                StatusCode::FORBIDDEN | StatusCode::NOT_FOUND | StatusCode::MISDIRECTED_REQUEST => {
                    RPCError::Unreachable(Unreachable::new(&err))
                }
                _ => RPCError::Network(NetworkError::new(&err)),
            });
        }
        let reply: Result<Resp, RaftError<NodeId, E>> = res
            .json()
            .await
            .map_err(|e| self.transport_error(&e, action, ttl))?;
        reply.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.target_node.clone(),
                e,
            ))
        })
    }

    fn transport_error<E: StdError>(
        &self,
        e: &reqwest::Error,
        action: RPCTypes,
        ttl: Duration,
    ) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
        if e.is_timeout() {
            RPCError::Timeout(Timeout {
                action,
                id: self.self_id,
                target: self.target,
                timeout: ttl,
            })
        } else if e.is_connect() {
            RPCError::Unreachable(Unreachable::new(e))
        } else {
            RPCError::Network(NetworkError::new(e))
        }
    }
}

impl RaftNetwork<TypeConfig> for HttpNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        self.send("append", RPCTypes::AppendEntries, &rpc, option.hard_ttl())
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.send(
            "snapshot",
            RPCTypes::InstallSnapshot,
            &rpc,
            option.hard_ttl(),
        )
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, openraft::error::Infallible> {
        self.send("vote", RPCTypes::Vote, &rpc, option.hard_ttl())
            .await
    }
}

struct RouterState {
    raft: Raft,
    secret: String,
    self_id: NodeId,
}

impl RouterState {
    fn authorized(&self, headers: &HeaderMap) -> bool {
        crate::peer::secret_matches(headers, &self.secret)
    }
}

/// Checks the secret before reading the body, so an unauthenticated caller cannot make the
/// node buffer a large request.
async fn parse<T: DeserializeOwned>(
    st: &RouterState,
    headers: &HeaderMap,
    body: Body,
) -> Result<T, Response> {
    if !st.authorized(headers) {
        return Err((StatusCode::FORBIDDEN, "missing or wrong cluster secret").into_response());
    }
    // One naming another member reached the wrong node (a stale address) and must not touch
    // this log. A request without the header is let through: nodes from before the header
    // existed send none, and a rolling upgrade must keep them in the cluster.
    if let Some(target) = headers.get(TARGET_HEADER) {
        let target = target.to_str().ok().and_then(|t| t.parse::<NodeId>().ok());
        if target != Some(st.self_id) {
            let msg = format!(
                "this node is raft member {}, not {}",
                st.self_id,
                target.map_or_else(|| "an unreadable id".to_string(), |t| t.to_string())
            );
            return Err((StatusCode::MISDIRECTED_REQUEST, msg).into_response());
        }
    }
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|e| {
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("unreadable raft request: {e}"),
            )
                .into_response()
        })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("bad raft request: {e}")).into_response())
}

async fn append(State(st): State<Arc<RouterState>>, headers: HeaderMap, body: Body) -> Response {
    match parse::<AppendEntriesRequest<TypeConfig>>(&st, &headers, body).await {
        Ok(req) => Json(st.raft.append_entries(req).await).into_response(),
        Err(r) => r,
    }
}

async fn vote(State(st): State<Arc<RouterState>>, headers: HeaderMap, body: Body) -> Response {
    match parse::<VoteRequest<NodeId>>(&st, &headers, body).await {
        Ok(req) => Json(st.raft.vote(req).await).into_response(),
        Err(r) => r,
    }
}

async fn snapshot(State(st): State<Arc<RouterState>>, headers: HeaderMap, body: Body) -> Response {
    match parse::<InstallSnapshotRequest<TypeConfig>>(&st, &headers, body).await {
        Ok(req) => Json(st.raft.install_snapshot(req).await).into_response(),
        Err(r) => r,
    }
}

/// The internal Raft routes of member `self_id`, guarded by `secret` (403 when missing or
/// wrong, 421 when meant for another member, 400 for an undecodable body).
pub fn raft_router(raft: Raft, secret: impl Into<String>, self_id: NodeId) -> Router {
    let state = Arc::new(RouterState {
        raft,
        secret: secret.into(),
        self_id,
    });
    Router::new()
        .route(&format!("{RAFT_PATH}/append"), post(append))
        .route(&format!("{RAFT_PATH}/vote"), post(vote))
        .route(&format!("{RAFT_PATH}/snapshot"), post(snapshot))
        .with_state(state)
}
