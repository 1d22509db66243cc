//! The gateway's state for operators (`GET /nacre/gateway/status`, shown by the console's
//! cluster page): the nodes in rotation with their feeds, the list cache and the config
//! listeners it holds, read from the same counters and gauges as `/metrics` (node addresses
//! and counts only, as open as `/metrics`); and each node's own view, asked with the caller's
//! credential (so with auth on, only a user sees them).

use serde::Serialize;

use crate::Shared;

/// The status document.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// Nodes the gateway knows, in its rotation order.
    pub nodes: Vec<NodeStatus>,
    /// Members of the gateway's ring.
    pub ring_members: i64,
    /// The list cache.
    pub cache: CacheStatus,
    /// Config listeners and md5s.
    pub configs: ConfigStatus,
    /// Each node's own view (`/nacre/v1/cluster`), so one page shows every node's Raft role,
    /// term and indexes; `{"self": name, "error": why}` for a node that did not answer.
    pub node_views: Vec<serde_json::Value>,
}

/// One node as the gateway sees it.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// The node's name for itself (its ring member name).
    pub name: String,
    /// Where the gateway reaches it.
    pub address: String,
    /// Answering probes and ready: requests go to it.
    pub usable: bool,
    /// Its change feed is being followed.
    pub feed_followed: bool,
    /// How far behind its feed the gateway last was, in ms.
    pub feed_lag_ms: i64,
}

/// The list cache's figures since the gateway started.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CacheStatus {
    /// Whether lists are cached at all.
    pub enabled: bool,
    /// Lists answered from the cache.
    pub hits: u64,
    /// Lists that went to a node.
    pub misses: u64,
    /// Lists passed through because a feed was not followed.
    pub bypassed: u64,
    /// `hits / (hits + misses)`, 0 before any list.
    pub hit_rate: f64,
    /// Services with an answer cached now.
    pub services: u64,
}

/// Config listeners held here.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConfigStatus {
    /// Whether the gateway holds listener long-polls itself.
    pub holds_listeners: bool,
    /// Listener long-polls parked here now.
    pub listeners: i64,
    /// Config md5s known.
    pub keys: usize,
}

/// Time each node has to give its view.
const VIEW_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// The status now, with every node's view asked with the caller's `Authorization` (each node
/// judges it, as for any request).
pub async fn status(shared: &Shared, authorization: Option<&http::HeaderValue>) -> Status {
    let view = shared.upstreams.view();
    let asks = view.upstreams().iter().map(|u| {
        let mut req = shared
            .http
            .get(format!("http://{}/nacre/v1/cluster", u.addr))
            .timeout(VIEW_TIMEOUT);
        if let Some(a) = authorization {
            req = req.header(http::header::AUTHORIZATION, a.clone());
        }
        let name = u.name.clone();
        async move {
            let answer = async {
                let r = req.send().await.map_err(|e| e.to_string())?;
                if !r.status().is_success() {
                    return Err(format!("answered {}", r.status()));
                }
                r.json::<serde_json::Value>()
                    .await
                    .map_err(|e| e.to_string())
            };
            answer
                .await
                .unwrap_or_else(|e| serde_json::json!({ "self": name, "error": e }))
        }
    });
    let node_views = futures::future::join_all(asks).await;
    Status {
        node_views,
        ..local_status(shared)
    }
}

/// The gateway's own part of the status.
fn local_status(shared: &Shared) -> Status {
    let view = shared.upstreams.view();
    let nodes = view
        .upstreams()
        .iter()
        .map(|u| NodeStatus {
            name: u.name.clone(),
            address: u.addr.to_string(),
            usable: u.is_usable(),
            feed_followed: u.feed_ok(),
            feed_lag_ms: shared.metrics.feed_lag(&u.name),
        })
        .collect();
    shared.cache.sync();
    let m = &shared.metrics;
    let (hits, misses) = (m.cache_hits.get(), m.cache_misses.get());
    Status {
        nodes,
        ring_members: m.ring_members.get(),
        cache: CacheStatus {
            enabled: shared.cache.enabled(),
            hits,
            misses,
            bypassed: m.cache_bypassed.get(),
            hit_rate: hit_rate(hits, misses),
            services: shared.cache.services(),
        },
        configs: ConfigStatus {
            holds_listeners: shared.settings.hold_config_listeners,
            listeners: m.config_listeners.get(),
            keys: shared.config_md5s.len(),
        },
        node_views: Vec::new(),
    }
}

fn hit_rate(hits: u64, misses: u64) -> f64 {
    let total = hits.saturating_add(misses);
    if total == 0 {
        0.0
    } else {
        hits as f64 / total as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hit_rate_is_hits_over_lookups_and_zero_before_any() {
        assert_eq!(hit_rate(0, 0), 0.0);
        assert_eq!(hit_rate(3, 1), 0.75);
        assert_eq!(hit_rate(0, 5), 0.0);
    }
}
