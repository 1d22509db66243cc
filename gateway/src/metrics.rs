//! The gateway's Prometheus metrics. Handles with fixed labels are resolved once, so the
//! request path only bumps atomics.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric the gateway exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// `nacre_gateway_requests_total`, resolved per (route, status class) once.
    requests: [[IntCounter; 5]; 5],
    /// Requests answered from the cache.
    pub cache_hits: IntCounter,
    /// Cacheable requests sent to a node.
    pub cache_misses: IntCounter,
    /// Cacheable requests sent to a node because a feed was not following (cache bypassed).
    pub cache_bypassed: IntCounter,
    /// Answers stored.
    pub cache_stores: IntCounter,
    /// Answers not stored because their service changed while they were fetched.
    pub cache_stale_skips: IntCounter,
    /// Invalidations caused by a write through the gateway.
    pub invalidations_write: IntCounter,
    /// Invalidations caused by a change feed.
    pub invalidations_feed: IntCounter,
    /// Whole-cache resets (a feed restarted or was cut, the node set changed).
    pub cache_resets: IntCounter,
    /// Services with cached answers.
    pub cache_services: IntGauge,
    /// Retries on another node after a connect failure or a dropped reused connection.
    pub retries: IntCounter,
    /// Requests refused with 429 by the per-client rate limit.
    pub rate_limited: IntCounter,
    /// Connections closed at accept by the per-client connection cap.
    pub connections_refused: IntCounter,
    /// Client connections open now.
    pub client_connections: IntGauge,
    upstream_seconds: HistogramVec,
    upstream_up: IntGaugeVec,
    feed_lag_ms: IntGaugeVec,
    /// Nodes in the routing ring.
    pub ring_members: IntGauge,
    /// Config md5 fetches from a node (keys no feed had mentioned).
    pub config_fetches: IntCounter,
    config_polls: IntCounterVec,
    /// Config listeners parked at the gateway now.
    pub config_listeners: IntGauge,
    /// Listener polls held at the gateway through pingora's proxy path: requests the
    /// connection loop does not take itself (see `edge`, rule E2).
    pub config_listeners_proxied: IntCounter,
    /// Config md5s known.
    pub config_keys: IntGauge,
    /// Client beats relayed to their nodes in batches (see `beats`).
    pub beats_relayed: IntCounter,
    /// Client reads that waited for a turn (rule G3 in `nacre_ring::turns`).
    pub read_turns_waited: IntCounter,
    /// Beat batches sent to nodes.
    pub beat_batches: IntCounter,
    /// Beat and write batches that failed (no answer, or not one per request); their
    /// requests were tried on the next node.
    pub beat_batches_failed: IntCounter,
    /// Client registers and deregisters relayed to their nodes in batches.
    pub writes_relayed: IntCounter,
    /// Write batches sent to nodes.
    pub write_batches: IntCounter,
    /// Config reads answered from the cache.
    pub config_read_hits: IntCounter,
    /// Cacheable config reads sent to a node.
    pub config_read_misses: IntCounter,
    /// Config reads stored.
    pub config_read_stores: IntCounter,
    /// Push subscriber notes a node accepted (subscriptions kept alive without proxying).
    pub subscriber_notes: IntCounter,
    /// Notes not delivered (their subscribers' next polls go to the node).
    pub subscriber_notes_failed: IntCounter,
}

/// Route labels of `nacre_gateway_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteLabel {
    /// To the owner of the named service.
    Owner,
    /// To any ready node.
    Any,
    /// From the cache.
    Cache,
    /// Answered by the gateway itself.
    Local,
    /// A config listener held at the gateway (answered by it, or by a node it passed it to).
    Edge,
}

const ROUTES: [RouteLabel; 5] = [
    RouteLabel::Owner,
    RouteLabel::Any,
    RouteLabel::Cache,
    RouteLabel::Local,
    RouteLabel::Edge,
];
const CLASSES: [&str; 5] = ["2xx", "3xx", "4xx", "5xx", "other"];

impl RouteLabel {
    fn index(self) -> usize {
        match self {
            Self::Owner => 0,
            Self::Any => 1,
            Self::Cache => 2,
            Self::Local => 3,
            Self::Edge => 4,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Any => "any",
            Self::Cache => "cache",
            Self::Local => "local",
            Self::Edge => "edge",
        }
    }
}

/// `c`, registered in `registry`.
fn registered<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    c: C,
) -> prometheus::Result<C> {
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| registered(&registry, IntCounter::new(name, help)?);
        let gauge = |name: &str, help: &str| registered(&registry, IntGauge::new(name, help)?);
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            registered(
                &registry,
                IntCounterVec::new(Opts::new(name, help), labels)?,
            )
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            registered(&registry, IntGaugeVec::new(Opts::new(name, help), labels)?)
        };
        let requests = counter_vec(
            "nacre_gateway_requests_total",
            "Requests by route and status class",
            &["route", "status"],
        )?;
        let cache = counter_vec(
            "nacre_gateway_cache_total",
            "List lookups by result",
            &["result"],
        )?;
        let inval = counter_vec(
            "nacre_gateway_cache_invalidations_total",
            "Service invalidations by cause",
            &["cause"],
        )?;
        let upstream_seconds = registered(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "nacre_gateway_upstream_seconds",
                    "Time from choosing a node to the end of its answer",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ]),
                &["upstream"],
            )?,
        )?;
        let upstream_up = gauge_vec(
            "nacre_gateway_upstream_up",
            "1 when a node answers probes and is ready",
            &["upstream"],
        )?;
        let feed_lag_ms = gauge_vec(
            "nacre_gateway_feed_lag_ms",
            "Age of the newest change when its feed page arrived",
            &["upstream"],
        )?;
        let cache_services = gauge(
            "nacre_gateway_cache_services",
            "Services with cached list answers",
        )?;
        let ring_members = gauge(
            "nacre_gateway_ring_members",
            "Ready nodes in the routing ring",
        )?;
        let config_reads = counter_vec(
            "nacre_gateway_config_reads_total",
            "Cacheable config reads by result",
            &["result"],
        )?;
        let notes = counter_vec(
            "nacre_gateway_subscriber_notes_total",
            "Push subscribers noted to their nodes instead of proxying their polls, by result",
            &["result"],
        )?;
        let requests =
            ROUTES.map(|r| CLASSES.map(|c| requests.with_label_values(&[r.as_str(), c])));
        Ok(Self {
            requests,
            cache_hits: cache.with_label_values(&["hit"]),
            cache_misses: cache.with_label_values(&["miss"]),
            cache_bypassed: cache.with_label_values(&["bypass"]),
            cache_stores: cache.with_label_values(&["stored"]),
            cache_stale_skips: cache.with_label_values(&["stale_skipped"]),
            invalidations_write: inval.with_label_values(&["write"]),
            invalidations_feed: inval.with_label_values(&["feed"]),
            cache_resets: counter(
                "nacre_gateway_cache_resets_total",
                "Whole-cache resets (feed restart or cut, node set change)",
            )?,
            cache_services,
            retries: counter(
                "nacre_gateway_retries_total",
                "Requests retried on another node",
            )?,
            rate_limited: counter(
                "nacre_gateway_rate_limited_total",
                "Requests refused with 429 by the per-client rate limit",
            )?,
            connections_refused: counter(
                "nacre_gateway_connections_refused_total",
                "Client connections closed at accept by the per-client connection cap",
            )?,
            client_connections: gauge(
                "nacre_gateway_client_connections",
                "Client connections open now",
            )?,
            upstream_seconds,
            upstream_up,
            feed_lag_ms,
            ring_members,
            config_fetches: counter(
                "nacre_gateway_config_fetches_total",
                "Config md5 fetches from a node for keys no feed had mentioned",
            )?,
            config_polls: counter_vec(
                "nacre_gateway_config_polls_total",
                "Config listener polls by how they were answered",
                &["result"],
            )?,
            config_listeners: gauge(
                "nacre_gateway_config_listeners",
                "Config listeners parked at the gateway",
            )?,
            config_listeners_proxied: counter(
                "nacre_gateway_config_listeners_proxied_total",
                "Listener polls the connection loop left to the proxy path (e.g. chunked bodies)",
            )?,
            beats_relayed: counter(
                "nacre_gateway_beats_relayed_total",
                "Client beats relayed to their nodes in batches",
            )?,
            read_turns_waited: counter(
                "nacre_gateway_read_turns_waited_total",
                "Client reads that waited for a turn (rule G3) while the gateway was behind",
            )?,
            beat_batches: counter(
                "nacre_gateway_beat_batches_total",
                "Beat batches sent to nodes",
            )?,
            beat_batches_failed: counter(
                "nacre_gateway_beat_batches_failed_total",
                "Beat and write batches that failed; their requests were tried on the next node",
            )?,
            writes_relayed: counter(
                "nacre_gateway_writes_relayed_total",
                "Client registers and deregisters relayed to their nodes in batches",
            )?,
            write_batches: counter(
                "nacre_gateway_write_batches_total",
                "Write batches sent to nodes",
            )?,
            config_keys: gauge(
                "nacre_gateway_config_keys",
                "Config md5s the gateway knows from the feeds",
            )?,
            config_read_hits: config_reads.with_label_values(&["hit"]),
            config_read_misses: config_reads.with_label_values(&["miss"]),
            config_read_stores: config_reads.with_label_values(&["stored"]),
            subscriber_notes: notes.with_label_values(&["delivered"]),
            subscriber_notes_failed: notes.with_label_values(&["failed"]),
            registry,
        })
    }

    /// Counts one answered request.
    pub fn request(&self, route: RouteLabel, status: u16) {
        let class = match status {
            200..=299 => 0,
            300..=399 => 1,
            400..=499 => 2,
            500..=599 => 3,
            _ => 4,
        };
        self.requests[route.index()][class].inc();
    }

    /// Counts one config listener poll by how it was answered.
    pub fn config_poll(&self, how: &str) {
        self.config_polls.with_label_values(&[how]).inc();
    }

    /// The latency histogram of one node.
    pub fn upstream_latency(&self, upstream: &str) -> Histogram {
        self.upstream_seconds.with_label_values(&[upstream])
    }

    /// Records whether a node is up.
    pub fn set_upstream_up(&self, upstream: &str, up: bool) {
        self.upstream_up
            .with_label_values(&[upstream])
            .set(i64::from(up));
    }

    /// Records the lag of a node's feed.
    pub fn set_feed_lag(&self, upstream: &str, lag_ms: u64) {
        self.feed_lag_ms
            .with_label_values(&[upstream])
            .set(i64::try_from(lag_ms).unwrap_or(i64::MAX));
    }

    /// The last recorded lag of a node's feed, in ms.
    pub fn feed_lag(&self, upstream: &str) -> i64 {
        self.feed_lag_ms.with_label_values(&[upstream]).get()
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if encoder.encode(&self.registry.gather(), &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Counts something in a gauge while this lives: one up when made, one down when dropped
/// (open client connections, parked config listeners).
#[derive(Debug)]
pub struct Held(IntGauge);

impl Held {
    /// Counts one more in `gauge`.
    pub fn new(gauge: &IntGauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.dec();
    }
}
