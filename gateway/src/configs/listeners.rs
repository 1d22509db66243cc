//! `GET /nacos/v1/cs/configs/listener` at the gateway: Nacos's listener query, "who listens to
//! this config, holding which md5". The answer is the union of the long-polls parked here
//! and what every node answers for its own (polls a gateway passed to it, clients that talk
//! to nodes directly). Each node judges the caller's credential as for any request; the
//! gateway's own listeners are shown only with a node's 200, and one refusal is the answer.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use nacre_ring::configs::listen;
use nacre_ring::wire::CONFIG_LISTENER_PATH;

use crate::Shared;

/// Time each node has to answer.
const NODE_ANSWER_TIMEOUT: Duration = Duration::from_secs(3);

/// An answer for the client.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: HeaderValue,
    /// Body.
    pub body: Bytes,
}

/// Answers the query (its query string and the client's headers).
pub async fn query(shared: &Shared, query: &str, headers: &HeaderMap) -> Answer {
    let mut forwarded = HeaderMap::new();
    for name in [header::AUTHORIZATION, header::USER_AGENT] {
        if let Some(v) = headers.get(&name) {
            forwarded.insert(name, v.clone());
        }
    }
    let view = shared.upstreams.view();
    let asks = view.upstreams().iter().filter(|u| u.is_usable()).map(|up| {
        let url = format!("http://{}{CONFIG_LISTENER_PATH}?{query}", up.addr);
        let request = shared.http.get(url).headers(forwarded.clone());
        async move {
            let resp = tokio::time::timeout(NODE_ANSWER_TIMEOUT, request.send())
                .await
                .ok()?
                .ok()?;
            let status = resp.status().as_u16();
            let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
            let body = resp.bytes().await.ok()?;
            Some((status, content_type, body))
        }
    });
    let answers: Vec<_> = futures::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .collect();
    // A refusal (bad key, no permission) is the answer, as the node gave it.
    if let Some((status, content_type, body)) = answers.iter().find(|(s, _, _)| *s != 200) {
        return Answer {
            status: *status,
            content_type: content_type
                .clone()
                .unwrap_or_else(|| HeaderValue::from_static("text/plain; charset=utf-8")),
            body: body.clone(),
        };
    }
    let (Some(key), false) = (crate::route::config_key(query), answers.is_empty()) else {
        return Answer {
            status: 503,
            content_type: HeaderValue::from_static("text/plain; charset=utf-8"),
            body: Bytes::from_static(b"no registry node answered the listener query"),
        };
    };
    let own = listen::listeners_document(&shared.config_md5s.listeners(&key));
    let docs = answers
        .iter()
        .filter_map(|(_, _, body)| std::str::from_utf8(body).ok())
        .chain([own.as_str()]);
    match listen::merge_listeners_documents(docs) {
        Some(all) => Answer {
            status: 200,
            content_type: HeaderValue::from_static("application/json;charset=UTF-8"),
            body: Bytes::from(listen::listeners_document(&all)),
        },
        None => Answer {
            status: 502,
            content_type: HeaderValue::from_static("text/plain; charset=utf-8"),
            body: Bytes::from_static(b"a node gave a malformed listener document"),
        },
    }
}
