//! Sends a client's write for a service owned by another node to that owner (rule O2 in
//! [`crate::distro`]).
//!
//! The owner applies writes to its services. A node that receives one for a service it does
//! not own replays the request on the owner once, marked as forwarded (with the cluster secret,
//! so the mark cannot be forged by a client), and relays the owner's answer. A forwarded
//! request is never forwarded again, even if the rings disagree for a moment. The write is
//! applied here instead only when the owner gave no answer at all (connection refused, or
//! closed before a response: a dead process), refused it because its own start-up load is
//! not done (a restarted process under the same name, rule S2), or left this node's ring
//! while the request waited (frozen or cut off: the service is no longer its). An owner that holds the request
//! without answering may still apply it, so on a timeout the client gets a 503 and retries
//! (every 1.x client does). Either way instance-level merging (rule V1) keeps a write that
//! lands twice, or two writes that land on two nodes, from erasing one another.

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use nacre_ring::wire::{ASSERTED_BY_HEADER, OWNER_ROUTED_HEADER};
use nacre_ring::ServiceKey;

use super::error::ApiError;
use super::params::Params;
use super::App;
use crate::distro::Ack;
use crate::peer::{header_matches, secret_matches, FORWARDED_HEADER};

/// Time the owner has to answer a forwarded write before this node applies it itself.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(3);

/// Whether the request was forwarded by a peer (marked and authenticated).
pub fn is_forwarded(app: &App, p: &Params) -> bool {
    p.headers.contains_key(FORWARDED_HEADER) && secret_matches(&p.headers, &app.secret)
}

/// How a write this node applies to `key` is acknowledged (rule V3 in [`crate::distro`]):
/// without waiting for peers only when a gateway routed it here by owner (proved with the
/// cluster secret), this node owns `key`, and no peer forwarded it.
pub fn ack(app: &App, key: &ServiceKey, p: &Params) -> Ack {
    let owner_routed = p.headers.contains_key(OWNER_ROUTED_HEADER)
        && header_matches(&p.headers, ASSERTED_BY_HEADER, &app.secret);
    if owner_routed && !is_forwarded(app, p) {
        let membership = app.node.membership();
        if membership.owner(key) == membership.self_addr() {
            return Ack::Applied;
        }
    }
    Ack::Peers
}

/// The owner's answer when `key` belongs to another reachable node; `None` means "apply here".
pub async fn to_owner(app: &App, key: &ServiceKey, p: &Params) -> Option<Response> {
    // A standalone node has no cluster parts, and owns everything.
    let cluster = app.node.distro().cluster()?;
    if is_forwarded(app, p) {
        return None;
    }
    let membership = app.node.membership();
    let owner = membership.owner(key);
    if owner == membership.self_addr() {
        return None;
    }
    let uri = &p.raw.uri;
    let path = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
    // The owner must see the client's verified address, not this node's.
    let mut headers = p.headers.clone();
    // The gateway routes the client's reads to this node, not to the owner: the owner must
    // wait for its peers, this one among them.
    headers.remove(OWNER_ROUTED_HEADER);
    if let Some(source) = super::source::verified_source(app, p) {
        super::source::assert_source(&mut headers, source, &app.secret);
    }
    let forwards = &cluster.replicator.metrics().forwards;
    // Subscribe before sending: a ring change during the wait must not be missed.
    let mut rings = membership.subscribe();
    let forward = cluster.client.forward(
        &owner,
        p.raw.method.clone(),
        path,
        &headers,
        p.raw.body.clone(),
        FORWARD_TIMEOUT,
    );
    let answered = tokio::select! {
        r = forward => Some(r),
        () = owner_leaves(&mut rings, key, &owner) => None,
    };
    match answered {
        Some(Ok(relayed)) if relayed.not_loaded => {
            // Rule S2: the owner restarted and is still loading; this node holds the data.
            forwards.with_label_values(&["applied_locally"]).inc();
            tracing::info!(service = %key, owner = %owner, "owner still loading its start-up data; applying the write here");
            None
        }
        Some(Ok(relayed)) => {
            forwards.with_label_values(&["forwarded"]).inc();
            Some(relayed.into_response())
        }
        Some(Err(e)) if e.gave_no_answer() => {
            forwards.with_label_values(&["applied_locally"]).inc();
            tracing::info!(service = %key, owner = %owner, error = %e, "owner unreachable; applying the write here");
            None
        }
        Some(Err(e)) => {
            forwards.with_label_values(&["owner_silent"]).inc();
            tracing::info!(service = %key, owner = %owner, error = %e, "owner took the write but did not answer; the client retries");
            Some(
                ApiError::unavailable(format!(
                    "the node owning {} did not answer in time; retry",
                    key.grouped()
                ))
                .into_response(),
            )
        }
        None => {
            forwards.with_label_values(&["owner_left"]).inc();
            let now = membership.owner(key);
            tracing::info!(service = %key, owner = %owner, new_owner = %now, "owner left the ring while the write waited");
            if now == membership.self_addr() {
                None
            } else {
                Some(
                    ApiError::unavailable(format!(
                        "the owner of {} changed while the write waited; retry",
                        key.grouped()
                    ))
                    .into_response(),
                )
            }
        }
    }
}

/// Resolves once `key` is no longer owned by `owner` on this node's ring.
async fn owner_leaves(
    rings: &mut tokio::sync::watch::Receiver<std::sync::Arc<nacre_ring::Ring>>,
    key: &ServiceKey,
    owner: &str,
) {
    loop {
        if rings.changed().await.is_err() {
            // The membership is gone (shutdown): never resolve; the forward decides.
            std::future::pending::<()>().await;
        }
        if rings.borrow_and_update().owner(key) != Some(owner) {
            return;
        }
    }
}
