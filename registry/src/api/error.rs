//! The one place where errors become Nacos-style HTTP answers.
//!
//! Nacos answers validation failures with 400 and the message as plain text, missing things on
//! read paths with 404, store trouble with 503 (retry elsewhere), internal failures with 500
//! `caused: <msg>;`, and unknown APIs with 501 and a JSON error document.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::naming::NamingError;
use crate::node::NodeError;

/// An HTTP error answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// Status code.
    pub status: StatusCode,
    /// Plain-text body.
    pub body: String,
}

impl ApiError {
    /// 400 with a message.
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            body: msg.into(),
        }
    }

    /// 404 with a message.
    pub fn not_found(msg: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            body: msg.into(),
        }
    }

    /// 403 with a message (Nacos's auth refusals: `unknown user!`, `token invalid!`, …).
    pub fn forbidden(msg: impl Into<String>) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            body: msg.into(),
        }
    }

    /// 413 for a body over the limit.
    pub fn too_large(limit: usize) -> Self {
        Self {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            body: format!("request body exceeds the limit of {limit} bytes"),
        }
    }

    /// 500 in Nacos's `caused: <msg>;` form.
    pub fn internal(msg: impl std::fmt::Display) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            body: format!("caused: {msg};"),
        }
    }

    /// 503: the node cannot serve this now; clients retry another server.
    pub fn unavailable(msg: impl Into<String>) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            body: msg.into(),
        }
    }
}

impl From<NamingError> for ApiError {
    fn from(e: NamingError) -> Self {
        match e {
            NamingError::BadRequest(m) => Self::bad_request(m),
            NamingError::NotFound(m) => Self::not_found(m),
            NamingError::Conflict(m) => Self {
                status: StatusCode::CONFLICT,
                body: m,
            },
        }
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        match e {
            NodeError::Naming(n) => n.into(),
            NodeError::Unavailable(m) => Self::unavailable(m),
            NodeError::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                Self::internal(m)
            }
        }
    }
}

impl From<nacre_ring::configs::ParamError> for ApiError {
    fn from(e: nacre_ring::configs::ParamError) -> Self {
        Self::bad_request(e.0)
    }
}

impl From<nacre_ring::KeyError> for ApiError {
    fn from(e: nacre_ring::KeyError) -> Self {
        Self::bad_request(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            self.body,
        )
            .into_response();
        if self.status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the oversized body is never read, so the connection cannot carry
            // another request; say so, or the client may reuse it and fail.
            resp.headers_mut().insert(
                header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        resp
    }
}

/// Spring Boot's JSON error document, used for unknown APIs (501) like Nacos's DistroFilter.
pub fn error_document(status: StatusCode, message: &str, path: &str, now_ms: u64) -> Response {
    let body = serde_json::json!({
        "timestamp": now_ms,
        "status": status.as_u16(),
        "error": status.canonical_reason().unwrap_or(""),
        "message": message,
        "path": path,
    });
    (status, axum::Json(body)).into_response()
}
