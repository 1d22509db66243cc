//! Request parameters as Nacos reads them: the union of the query string and an
//! `application/x-www-form-urlencoded` body, for every method, first value wins.
//!
//! Decoding is strict: invalid percent-encoded UTF-8 is a 400, not a silently mangled name, and
//! bodies over the configured limit are a 413.

use std::sync::Arc;

use axum::extract::FromRequest;
use axum::http::{header, HeaderMap, Method, Uri};
use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::LengthLimitError;

use super::error::ApiError;
use super::App;

/// Merged request parameters plus the headers handlers need.
#[derive(Debug, Default, Clone)]
pub struct Params {
    pairs: Vec<(String, String)>,
    /// Request headers (User-Agent, X-Forwarded-For…).
    pub headers: HeaderMap,
    /// The TCP peer, when the server records it.
    pub peer: Option<std::net::SocketAddr>,
    /// The request as received, kept so a write can be replayed on the service's owner.
    pub raw: RawRequest,
}

/// A request's method, target and body as received (cheap clones).
#[derive(Debug, Default, Clone)]
pub struct RawRequest {
    /// Method.
    pub method: Method,
    /// Path and query.
    pub uri: Uri,
    /// Body bytes.
    pub body: Bytes,
}

impl Params {
    /// Builds parameters from raw pairs (tests and internal callers).
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Self {
        Self {
            pairs,
            headers: HeaderMap::new(),
            peer: None,
            raw: RawRequest::default(),
        }
    }

    /// The first value of `name`, trimmed; `None` when missing.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
    }

    /// The first value of `name` exactly as sent (config content keeps its whitespace).
    pub fn untrimmed(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first value of `name` unless missing or blank (Nacos "optional").
    pub fn opt(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|v| !v.is_empty())
    }

    /// The value of `name`, or 400 `Param '<name>' is required.` when missing or blank.
    pub fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.opt(name)
            .ok_or_else(|| ApiError::bad_request(format!("Param '{name}' is required.")))
    }

    /// The `User-Agent` (or `Client-Version` when the UA is empty), as Nacos classifies clients.
    pub fn user_agent(&self) -> &str {
        let ua = self
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !ua.is_empty() {
            return ua;
        }
        self.headers
            .get("Client-Version")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// Decodes `application/x-www-form-urlencoded` text strictly into pairs.
pub fn decode_form(raw: &[u8], out: &mut Vec<(String, String)>) -> Result<(), ApiError> {
    for part in raw.split(|b| *b == b'&') {
        if part.is_empty() {
            continue;
        }
        let (k, v) = match part.iter().position(|b| *b == b'=') {
            Some(i) => (&part[..i], &part[i + 1..]),
            None => (part, &b""[..]),
        };
        out.push((decode_component(k)?, decode_component(v)?));
    }
    Ok(())
}

fn decode_component(raw: &[u8]) -> Result<String, ApiError> {
    let mut bytes = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => bytes.push(b' '),
            b'%' => {
                // Both digits must be hex: `u8::from_str_radix` alone would accept "+1".
                let hex = raw
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        bytes.push(b);
                        i += 2;
                    }
                    None => {
                        return Err(ApiError::bad_request(
                            "malformed percent-encoding in request parameters",
                        ))
                    }
                }
            }
            b => bytes.push(b),
        }
        i += 1;
    }
    String::from_utf8(bytes)
        .map_err(|_| ApiError::bad_request("request parameters are not valid UTF-8"))
}

/// Whether a body with these headers is read as a form (no content type counts as one, as
/// servlet containers read it).
pub(crate) fn is_form(headers: &HeaderMap) -> bool {
    match headers.get(header::CONTENT_TYPE) {
        None => true,
        Some(ct) => {
            const FORM: &[u8] = b"application/x-www-form-urlencoded";
            ct.as_bytes()
                .get(..FORM.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(FORM))
        }
    }
}

impl FromRequest<Arc<App>> for Params {
    type Rejection = ApiError;

    async fn from_request(
        req: axum::extract::Request,
        state: &Arc<App>,
    ) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let limit = body_limit(state, parts.uri.path());
        // A malformed query is a 400 before a body too large is a 413.
        let pairs = query_pairs(&parts.uri)?;
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(ApiError::too_large(limit));
        }
        let limited = http_body_util::Limited::new(body, limit);
        let bytes = match limited.collect().await {
            Ok(c) => c.to_bytes(),
            Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
                return Err(ApiError::too_large(limit))
            }
            Err(e) => {
                return Err(ApiError::bad_request(format!(
                    "failed to read request body: {e}"
                )))
            }
        };
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<crate::listener::PeerAddr>>()
            .map(|c| c.0.addr);
        // Nested routers strip their prefix from `uri`; a replay needs the full path.
        let uri = parts
            .extensions
            .get::<axum::extract::OriginalUri>()
            .map_or(parts.uri, |o| o.0.clone());
        Params::with_body(
            pairs,
            RawRequest {
                method: parts.method,
                uri,
                body: bytes,
            },
            parts.headers,
            peer,
        )
    }
}

/// The pairs of `uri`'s query.
fn query_pairs(uri: &Uri) -> Result<Vec<(String, String)>, ApiError> {
    let mut pairs = Vec::new();
    if let Some(q) = uri.query() {
        decode_form(q.as_bytes(), &mut pairs)?;
    }
    Ok(pairs)
}

/// The most body bytes a request to `path` may carry.
pub fn body_limit(app: &App, path: &str) -> usize {
    let limit = app.node.settings().max_body_bytes;
    if path == super::configs::CONFIGS_PATH {
        // A config publish carries up to 10 MB of content, percent-encoded.
        limit.max(super::configs::PUBLISH_BODY_LIMIT)
    } else {
        limit
    }
}

impl Params {
    /// The parameters of a request whose body has been read (and found within
    /// [`body_limit`]): the query's pairs, then a form body's.
    pub fn assemble(
        raw: RawRequest,
        headers: HeaderMap,
        peer: Option<std::net::SocketAddr>,
    ) -> Result<Self, ApiError> {
        Self::with_body(query_pairs(&raw.uri)?, raw, headers, peer)
    }

    /// [`Params::assemble`] with the query's pairs already decoded.
    fn with_body(
        mut pairs: Vec<(String, String)>,
        raw: RawRequest,
        headers: HeaderMap,
        peer: Option<std::net::SocketAddr>,
    ) -> Result<Self, ApiError> {
        if !raw.body.is_empty() && is_form(&headers) {
            decode_form(&raw.body, &mut pairs)?;
        }
        Ok(Self {
            pairs,
            headers,
            peer,
            raw,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(s: &[u8]) -> Result<Vec<(String, String)>, ApiError> {
        let mut v = Vec::new();
        decode_form(s, &mut v).map(|_| v)
    }

    #[test]
    fn decodes_and_first_value_wins() {
        let v = decode(b"a=1&b=x+y%21&a=2&flag&=e").unwrap();
        let p = Params::from_pairs(v);
        assert_eq!(p.get("a"), Some("1"));
        assert_eq!(p.get("b"), Some("x y!"));
        assert_eq!(p.get("flag"), Some(""));
        assert_eq!(p.opt("flag"), None);
        assert!(p.required("flag").is_err());
    }

    #[test]
    fn rejects_bad_encoding() {
        assert!(decode(b"a=%zz").is_err());
        assert!(decode(b"a=%").is_err());
        assert!(decode(b"a=%ff%fe").is_err());
        assert_eq!(decode("a=%E4%B8%AD".as_bytes()).unwrap()[0].1, "中");
    }
}
