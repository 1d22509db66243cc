//! Sends a client's write for a service owned by another node to that owner.
//!
//! Distro's rule: the owner applies writes to its services. A node that receives one for a
//! service it does not own replays the request on the owner once, marked as forwarded (with the
//! cluster secret, so the mark cannot be forged by a client), and relays the owner's answer. A
//! forwarded request is never forwarded again, even if the rings disagree for a moment. When
//! the owner cannot be reached the write is applied here: availability first; replication and
//! verify reconcile later.

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use nacre_ring::ServiceKey;

use super::params::Params;
use super::App;
use crate::peer::{secret_matches, FORWARDED_HEADER};

/// Time the owner has to answer a forwarded write before this node applies it itself.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(3);

/// Whether the request was forwarded by a peer (marked and authenticated).
pub fn is_forwarded(app: &App, p: &Params) -> bool {
    p.headers.contains_key(FORWARDED_HEADER) && secret_matches(&p.headers, &app.secret)
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
    // Behind a proxy or another node the real client address must survive, so UDP pushes
    // and client IPs stay right.
    let mut headers = p.headers.clone();
    if !headers.contains_key("x-forwarded-for") {
        if let Some(peer) = p.peer {
            if let Ok(v) = axum::http::HeaderValue::from_str(&peer.ip().to_string()) {
                headers.insert("x-forwarded-for", v);
            }
        }
    }
    let forwards = &cluster.replicator.metrics().forwards;
    match cluster
        .client
        .forward(
            &owner,
            p.raw.method.clone(),
            path,
            &headers,
            p.raw.body.clone(),
            FORWARD_TIMEOUT,
        )
        .await
    {
        Ok(relayed) => {
            forwards.with_label_values(&["forwarded"]).inc();
            Some(relayed.into_response())
        }
        Err(e) => {
            forwards.with_label_values(&["applied_locally"]).inc();
            tracing::info!(service = %key, owner = %owner, error = %e, "owner unreachable; applying the write here");
            None
        }
    }
}
