//! The gateway tier: one stateless address in front of the registry nodes, on pingora.
//!
//! - [`route`]: what a request is (pure): local endpoint, owner-routed, cacheable.
//! - [`upstreams`]: the nodes in rotation and the routing ring.
//! - [`monitor`]: discovery, readiness probes, view rebuilds, feed followers.
//! - [`feed`]: following one node's change feed into cache invalidations.
//! - [`cache`]: cached list answers and the rule that keeps stale ones out.
//! - [`configs`]: config listener long-polls held at the edge, from the feeds' md5s.
//! - [`beats`]: client beats relayed to their nodes in batches.
//! - [`authmemo`]: which credentials nodes accepted for which service (cached answers with auth on).
//! - [`lists`]: a naming request's plan, and list answers from the cache.
//! - [`limits`]: per-client request-rate limits and connection caps.
//! - [`accept`]: the client socket and each connection's life (edge first, then pingora).
//! - [`client`]: a client connection as held between and during requests.
//! - [`edge`]: the requests served outside pingora's proxy session.
//! - [`proxy`]: the pingora `ProxyHttp` glue (thin).
//! - [`server`]: building and running the pingora server.
//! - [`metrics`]: Prometheus metrics.

pub mod accept;
pub mod authmemo;
pub mod beats;
pub mod cache;
pub mod client;
pub mod configs;
pub mod edge;
pub mod feed;
pub mod limits;
pub mod lists;
pub mod metrics;
pub mod monitor;
pub mod proxy;
pub mod route;
pub mod server;
pub mod status;
pub mod subscribe;
pub mod turns;
pub mod upstreams;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use nacre_config::GatewaySettings;

pub use server::{run, GatewayError, Stop};

/// State shared by the proxy threads and the background tasks.
#[derive(Debug)]
pub struct Shared {
    /// Validated settings.
    pub settings: GatewaySettings,
    /// Nodes in rotation.
    pub upstreams: upstreams::Upstreams,
    /// Cached list answers.
    pub cache: cache::ListCache,
    /// Metrics.
    pub metrics: metrics::Metrics,
    /// Push subscribers seen, and the notes that keep them alive on their nodes (see
    /// [`subscribe`]).
    pub relay: subscribe::Relay,
    /// The `/nacos/serverlist` body.
    pub server_list: Bytes,
    /// Its digest (rule E1 of `nacre_config::serverlist`).
    pub server_list_digest: String,
    /// Per-client rate limits, when configured.
    pub limiter: Option<limits::ClientLimiter>,
    /// Per-client connection caps, when configured.
    pub caps: Option<Arc<limits::ConnectionCaps>>,
    /// Some node requires credentials: a cached answer is served only to a credential a node
    /// accepted for that service a moment ago (see [`authmemo`]).
    auth_required: std::sync::atomic::AtomicBool,
    /// Every ready node requires credentials: only then does a node's 200 prove a credential
    /// (during a rollout of auth, a node without it accepts anything).
    auth_everywhere: std::sync::atomic::AtomicBool,
    /// Credentials nodes accepted recently, per service.
    pub auth_memo: authmemo::AuthMemo,
    /// Config md5s learned from the feeds, and the listeners parked on them.
    pub config_md5s: configs::Md5Table,
    /// Cached config reads, when configured.
    pub config_reads: Option<configs::ConfigReads>,
    /// Calls the gateway makes itself (config md5 fetches, listener polls passed to a node).
    pub http: reqwest::Client,
    /// Beat batches being filled (see [`beats`]).
    pub relay_batches: beats::RelayBatches,
    /// Cancelled when the gateway stops: parked listeners answer then.
    pub stopping: tokio_util::sync::CancellationToken,
    /// Client reads take their turns here, per thread (rule G3, see [`turns`]); `None` when
    /// off.
    pub read_turns: Option<turns::ThreadTurns>,
}

impl Shared {
    /// The refusal for `client` when it is over its request rate (counted in the metrics);
    /// `None` when it may go on, or when no limit is set.
    pub fn over_rate(&self, client: std::net::IpAddr) -> Option<String> {
        let limiter = self.limiter.as_ref()?;
        if limiter.allow(client) {
            return None;
        }
        self.metrics.rate_limited.inc();
        Some(format!(
            "too many requests from {client}: the limit is {} per second",
            limiter.per_second()
        ))
    }

    /// POSTs `body` as JSON to the internal route `path` of node `up`, with the cluster
    /// secret, waiting at most `timeout`.
    pub async fn post_internal<T: serde::Serialize + ?Sized>(
        &self,
        up: &upstreams::Upstream,
        path: &str,
        body: &T,
        timeout: Duration,
    ) -> reqwest::Result<reqwest::Response> {
        self.post_internal_with(&self.http, up, path, body, timeout)
            .await
    }

    /// [`Shared::post_internal`] through `client`.
    pub async fn post_internal_with<T: serde::Serialize + ?Sized>(
        &self,
        client: &reqwest::Client,
        up: &upstreams::Upstream,
        path: &str,
        body: &T,
        timeout: Duration,
    ) -> reqwest::Result<reqwest::Response> {
        self.post_internal_to(client, format!("http://{}{path}", up.addr), body, timeout)
            .await
    }

    /// [`Shared::post_internal_with`] to `url`, already made (a caller posting often to the
    /// same place keeps it rather than parse it each time).
    pub async fn post_internal_to<T: serde::Serialize + ?Sized>(
        &self,
        client: &reqwest::Client,
        url: impl reqwest::IntoUrl,
        body: &T,
        timeout: Duration,
    ) -> reqwest::Result<reqwest::Response> {
        let secret = self.settings.cluster_secret.as_deref().unwrap_or_default();
        client
            .post(url)
            .header(nacre_ring::wire::SECRET_HEADER, secret)
            .json(body)
            .timeout(timeout)
            .send()
            .await
    }

    /// Shared state for `settings` (already validated).
    pub fn new(settings: GatewaySettings) -> Result<Self, prometheus::Error> {
        let cache = cache::ListCache::new(
            settings.cache_bytes,
            Duration::from_millis(settings.cache_ttl_ms),
        );
        let relay = subscribe::Relay::new(Duration::from_millis(settings.push_refresh_ms));
        let body = nacre_config::serverlist::body(&settings.advertised());
        let server_list_digest = nacre_config::serverlist::digest(&body);
        let server_list = Bytes::from(body);
        let metrics = metrics::Metrics::new()?;
        let stopping = tokio_util::sync::CancellationToken::new();
        let read_turns = turns::ThreadTurns::new(
            settings.read_turns_per_round,
            settings.read_turns_crowd,
            metrics.client_connections.clone(),
            metrics.read_turns_waited.clone(),
            stopping.clone(),
        );
        Ok(Self {
            upstreams: upstreams::Upstreams::new(),
            cache,
            metrics,
            read_turns,
            relay,
            server_list,
            server_list_digest,
            auth_required: std::sync::atomic::AtomicBool::new(false),
            auth_everywhere: std::sync::atomic::AtomicBool::new(false),
            auth_memo: authmemo::AuthMemo::default(),
            config_md5s: configs::Md5Table::new(),
            config_reads: configs::ConfigReads::new(settings.config_cache_bytes),
            http: reqwest::Client::builder()
                .pool_idle_timeout(Duration::from_secs(30))
                .build()
                .map_err(|e| prometheus::Error::Msg(format!("http client: {e}")))?,
            relay_batches: beats::RelayBatches::default(),
            stopping,
            limiter: limits::ClientLimiter::new(
                settings.client_rate_limit,
                settings.client_rate_burst,
            ),
            caps: limits::ConnectionCaps::new(settings.client_max_connections),
            settings,
        })
    }

    /// Whether some node requires credentials (see [`Shared::set_auth_required`]).
    pub fn auth_required(&self) -> bool {
        self.auth_required
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records whether some node requires credentials; turning it on drops every cached
    /// answer.
    pub fn set_auth_required(&self, on: bool) {
        let was = self
            .auth_required
            .swap(on, std::sync::atomic::Ordering::Relaxed);
        if on && !was {
            self.reset_cache();
        }
    }

    /// Whether every ready node requires credentials.
    pub fn auth_everywhere(&self) -> bool {
        self.auth_everywhere
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records whether every ready node requires credentials.
    pub fn set_auth_everywhere(&self, on: bool) {
        self.auth_everywhere
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Drops everything learned from the nodes' feeds: every cached answer and every config
    /// md5 (and counts it).
    pub fn reset_cache(&self) {
        self.cache.reset();
        self.config_md5s.reset();
        if let Some(reads) = &self.config_reads {
            reads.clear();
        }
        self.metrics.cache_resets.inc();
    }
}

/// Wall-clock milliseconds (the clock `lastRefTime` and feed timestamps use).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Helpers for the crate's unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;

    use crate::upstreams::{PeerTimeouts, Upstream, View};
    use crate::Shared;

    /// Settings for a test gateway.
    pub fn settings() -> nacre_config::GatewaySettings {
        nacre_config::GatewaySettings {
            cluster_secret: Some("0123456789abcdef".into()),
            read_timeout_ms: 1_000,
            ..Default::default()
        }
    }

    /// A gateway whose view holds one node per `(port, relays beats)` on loopback, named after
    /// its port.
    pub fn shared(nodes: &[(u16, bool)]) -> Shared {
        shared_with(settings(), nodes)
    }

    /// [`shared`] with `settings`.
    pub fn shared_with(settings: nacre_config::GatewaySettings, nodes: &[(u16, bool)]) -> Shared {
        let shared = Shared::new(settings).unwrap();
        let ups = nodes
            .iter()
            .map(|&(port, relays)| {
                let latency =
                    prometheus::Histogram::with_opts(prometheus::HistogramOpts::new("t", "t"))
                        .unwrap();
                let up = Arc::new(Upstream::new(
                    format!("127.0.0.1:{port}"),
                    SocketAddr::from(([127, 0, 0, 1], port)),
                    PeerTimeouts {
                        connect: Duration::from_millis(300),
                        read: Duration::from_secs(1),
                    },
                    latency,
                ));
                up.set_relays(relays, relays);
                up
            })
            .collect();
        shared.upstreams.replace(View::new(ups));
        shared
    }
}
