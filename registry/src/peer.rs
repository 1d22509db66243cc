//! Node-to-node HTTP: the client every internal caller shares and the secret check every
//! internal route applies.
//!
//! Internal calls (Distro sync and verify, member probes, forwarded writes, Raft write
//! forwarding) all travel over the peers' public HTTP port under `/nacre/internal/…` and carry
//! the cluster secret in [`SECRET_HEADER`]. Nothing else — not a User-Agent, not a marker
//! header — makes a request trusted.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use crate::raft::network::SECRET_HEADER;

/// Header marking a request one node forwarded to another; such a request is never forwarded
/// again (it only counts together with a valid secret).
pub const FORWARDED_HEADER: &str = "x-nacre-forwarded";
/// Set on the 503 a node answers a forwarded write with while its start-up load is not done
/// (rule S2 in [`crate::distro`]): the forwarding node applies the write itself.
pub const NOT_LOADED_HEADER: &str = "x-nacre-not-loaded";

/// How long a pooled connection to a peer may idle: below the nodes' default idle timeout
/// (`idle_timeout_ms`, 60 s), so a pooled connection is normally dropped here before the peer
/// closes it. Every node-to-node client (Distro, forwarding, Raft) uses it.
pub const POOL_IDLE: Duration = Duration::from_secs(30);

/// Time allowed to open a TCP connection to a peer: a dead peer must fail fast so callers fall
/// back (forwarding applies locally, probes mark it suspicious).
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Largest internal body a node accepts (a full Distro snapshot of a large cluster).
pub const MAX_INTERNAL_BODY: usize = 256 * 1024 * 1024;

/// Why a call to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The peer could not be reached (refused, unroutable, connect timeout).
    #[error("peer {addr} unreachable: {message}")]
    Unreachable {
        /// Peer address.
        addr: String,
        /// Cause.
        message: String,
    },
    /// The peer did not answer in time.
    #[error("peer {addr} timed out")]
    Timeout {
        /// Peer address.
        addr: String,
    },
    /// The peer answered with a non-success status.
    #[error("peer {addr} answered {status}: {body}")]
    Status {
        /// Peer address.
        addr: String,
        /// HTTP status.
        status: u16,
        /// Start of the body.
        body: String,
    },
    /// The answer could not be read or decoded.
    #[error("peer {addr}: {message}")]
    Protocol {
        /// Peer address.
        addr: String,
        /// Cause.
        message: String,
    },
}

impl PeerError {
    /// True when the peer never saw the request (safe to apply the write elsewhere).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, PeerError::Unreachable { .. })
    }

    /// True when the peer gave no answer at all: unreachable, or the connection closed or
    /// reset before a response (a killed process). A timeout is not this: the peer may still
    /// be working on the request.
    pub fn gave_no_answer(&self) -> bool {
        matches!(
            self,
            PeerError::Unreachable { .. } | PeerError::Protocol { .. }
        )
    }
}

/// A forwarded request's answer, passed back to the client as is.
#[derive(Debug)]
pub struct Relayed {
    /// Status.
    pub status: StatusCode,
    /// The owner refused the write because its start-up load is not done (rule S2).
    pub not_loaded: bool,
    /// Content type, if any.
    pub content_type: Option<HeaderValue>,
    /// Body.
    pub body: Bytes,
}

impl IntoResponse for Relayed {
    fn into_response(self) -> Response {
        let mut r = (self.status, self.body).into_response();
        if let Some(ct) = self.content_type {
            r.headers_mut().insert(axum::http::header::CONTENT_TYPE, ct);
        }
        r
    }
}

/// The HTTP client for peers, authenticated with the cluster secret. Cheap to clone.
#[derive(Clone)]
pub struct PeerClient {
    client: reqwest::Client,
    secret: HeaderValue,
}

impl PeerClient {
    /// A client that sends `secret` on every call.
    pub fn new(secret: &str) -> Result<Self, String> {
        let secret = HeaderValue::from_str(secret).map_err(|e| format!("cluster secret: {e}"))?;
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(POOL_IDLE)
            // Peers are addressed directly; an egress proxy must never see the secret.
            .no_proxy()
            .build()
            .map_err(|e| format!("peer client: {e}"))?;
        Ok(Self { client, secret })
    }

    fn classify(addr: &str, e: reqwest::Error) -> PeerError {
        if e.is_connect() {
            PeerError::Unreachable {
                addr: addr.to_string(),
                message: e.to_string(),
            }
        } else if e.is_timeout() {
            PeerError::Timeout {
                addr: addr.to_string(),
            }
        } else {
            PeerError::Protocol {
                addr: addr.to_string(),
                message: e.to_string(),
            }
        }
    }

    async fn send(
        &self,
        addr: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, PeerError> {
        let res = req
            .header(SECRET_HEADER, self.secret.clone())
            .send()
            .await
            .map_err(|e| Self::classify(addr, e))?;
        let status = res.status();
        if !status.is_success() {
            let body = res.text().await.unwrap_or_default();
            return Err(PeerError::Status {
                addr: addr.to_string(),
                status: status.as_u16(),
                body: body.chars().take(300).collect(),
            });
        }
        Ok(res)
    }

    /// POSTs `body` as JSON to `http://{addr}{path}` and decodes a JSON answer.
    pub async fn post_json<B: Serialize, R: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<R, PeerError> {
        let req = self
            .client
            .post(format!("http://{addr}{path}"))
            .timeout(timeout)
            .json(body);
        let res = self.send(addr, req).await?;
        res.json().await.map_err(|e| Self::classify(addr, e))
    }

    /// GETs `http://{addr}{path}` and returns the answer as it starts to arrive, its body to be
    /// read a piece at a time with [`PeerClient::next_piece`] (a body too large to hold and
    /// decode at once).
    pub async fn get_streamed(
        &self,
        addr: &str,
        path: &str,
        timeout: Duration,
    ) -> Result<reqwest::Response, PeerError> {
        let req = self
            .client
            .get(format!("http://{addr}{path}"))
            .timeout(timeout);
        self.send(addr, req).await
    }

    /// The next piece of a body from [`PeerClient::get_streamed`]; `None` at its end.
    pub async fn next_piece(
        addr: &str,
        res: &mut reqwest::Response,
    ) -> Result<Option<Bytes>, PeerError> {
        res.chunk().await.map_err(|e| Self::classify(addr, e))
    }

    /// GETs `http://{addr}{path}` and decodes a JSON answer.
    pub async fn get_json<R: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        timeout: Duration,
    ) -> Result<R, PeerError> {
        let req = self
            .client
            .get(format!("http://{addr}{path}"))
            .timeout(timeout);
        let res = self.send(addr, req).await?;
        res.json().await.map_err(|e| Self::classify(addr, e))
    }

    /// Replays a client request on a peer, marked as forwarded; any HTTP answer (also 4xx/5xx)
    /// is relayed, only transport failures are errors.
    pub async fn forward(
        &self,
        addr: &str,
        method: Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Relayed, PeerError> {
        let mut req = self
            .client
            .request(method, format!("http://{addr}{path_and_query}"))
            .timeout(timeout)
            .header(FORWARDED_HEADER, "1")
            .header(SECRET_HEADER, self.secret.clone())
            .body(body);
        // What the owner needs to answer as this node would have: the client kind decides
        // response shapes, the content type how the body is read, and the client address
        // where UDP pushes go.
        for name in [
            "user-agent",
            "client-version",
            "content-type",
            nacre_ring::wire::CLIENT_ADDR_HEADER,
            nacre_ring::wire::ASSERTED_BY_HEADER,
        ] {
            if let Some(v) = headers.get(name) {
                req = req.header(name, v.clone());
            }
        }
        let res = req.send().await.map_err(|e| Self::classify(addr, e))?;
        let status = res.status();
        let content_type = res.headers().get(axum::http::header::CONTENT_TYPE).cloned();
        let not_loaded = res.headers().contains_key(NOT_LOADED_HEADER);
        let body = res.bytes().await.map_err(|e| Self::classify(addr, e))?;
        Ok(Relayed {
            status,
            not_loaded,
            content_type,
            body,
        })
    }
}

/// Constant-time comparison of the secret a request carries with ours; an empty configured
/// secret accepts nobody.
pub fn secret_matches(headers: &HeaderMap, secret: &str) -> bool {
    header_matches(headers, SECRET_HEADER, secret)
}

/// Constant-time comparison of header `name` with `secret`; an empty secret matches nothing.
pub fn header_matches(headers: &HeaderMap, name: &str, secret: &str) -> bool {
    let Some(given) = headers.get(name) else {
        return false;
    };
    let (a, b) = (given.as_bytes(), secret.as_bytes());
    if b.is_empty() || a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Middleware for internal routes: 403 unless the request carries the cluster secret. Runs
/// before the body is read, so an unauthenticated caller cannot make the node buffer anything.
pub async fn require_secret(
    State(secret): State<std::sync::Arc<str>>,
    req: Request,
    next: Next,
) -> Response {
    if !secret_matches(req.headers(), &secret) {
        return (StatusCode::FORBIDDEN, "missing or wrong cluster secret").into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_must_match_exactly() {
        let mut h = HeaderMap::new();
        assert!(!secret_matches(&h, "s3cret"));
        h.insert(SECRET_HEADER, HeaderValue::from_static("s3cret"));
        assert!(secret_matches(&h, "s3cret"));
        assert!(!secret_matches(&h, "s3cret2"));
        assert!(!secret_matches(&h, ""));
        h.insert(SECRET_HEADER, HeaderValue::from_static("s3creT"));
        assert!(!secret_matches(&h, "s3cret"));
    }
}
