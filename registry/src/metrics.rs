//! Prometheus metrics of a registry node, served at `GET /metrics`.
//!
//! One registry per node (not the process-global default) so tests can run several nodes in one
//! process without their counters mixing.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// All metrics of one node.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Requests by API route and HTTP status.
    pub requests: IntCounterVec,
    /// Request latency by API route.
    pub latency: HistogramVec,
    /// Instances held, by kind (`ephemeral` / `persistent`).
    pub instances: IntGaugeVec,
    /// Services held.
    pub services: IntGauge,
    /// Beats received.
    pub beats: IntCounter,
    /// Instances expired by the health sweep, by kind (`unhealthy` / `removed`).
    pub expirations: IntCounterVec,
    /// Expiry ticks held, by reason (`not_ready` / `no_majority`): the node did not judge.
    pub expiry_held: IntCounterVec,
    /// Times every deadline (or a taken-over service's) moved later, by cause
    /// (`unobserved` / `regained` / `takeover`).
    pub deadline_moves: IntCounterVec,
    /// Health-check flips of persistent instances, by result.
    pub health_flips: IntCounterVec,
    /// Health probes sent by this node (only the owner of a service probes it).
    pub health_probes: IntCounter,
    /// Time from a persistent write's proposal to its applied result.
    pub raft_apply: Histogram,
    /// Raft state: `term`, `commit_index`, `last_applied`, `apply_lag` (commit − applied),
    /// `is_leader`.
    pub raft: IntGaugeVec,
    /// Config center: `configs` stored, `parked_listeners` held now, `listened_keys`.
    pub config: IntGaugeVec,
    /// Config writes accepted through this node, by `op` (`publish`, `delete`).
    pub config_writes: IntCounterVec,
    /// 1 while the node serves clients (loaded, Raft caught up).
    pub ready: IntGauge,
    /// 1 while the node reaches a majority that counts it a member (Distro rule O3): without
    /// standing it refuses instance writes and does not expire.
    pub standing: IntGauge,
    /// How late the overload probe last woke (rule G1 in [`crate::overload`]).
    pub overload_lag: Gauge,
    /// Share of client reads turned away now (rule G2).
    pub overload_shed_share: Gauge,
    /// Client reads turned away with 503 (rule G2).
    pub overload_shed: IntCounter,
    /// Client reads that waited for a turn (rule G3 in [`nacre_ring::turns`]).
    pub read_turns_waited: IntCounter,
    /// Requests relayed by a gateway in batches, by how they were served: `direct` (rule B1
    /// in [`crate::api::relay`]) or `router`.
    pub relayed: IntCounterVec,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "nacre_http_requests_total",
                "HTTP requests by route and status",
            ),
            &["api", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "nacre_http_request_duration_seconds",
                "HTTP request latency",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0,
            ]),
            &["api"],
        )?;
        let instances = IntGaugeVec::new(
            Opts::new("nacre_instances", "Instances held by kind"),
            &["kind"],
        )?;
        let services = IntGauge::new("nacre_services", "Services held")?;
        let beats = IntCounter::new("nacre_beats_total", "Heartbeats received")?;
        let expirations = IntCounterVec::new(
            Opts::new(
                "nacre_expirations_total",
                "Instances expired by the health sweep",
            ),
            &["kind"],
        )?;
        let expiry_held = IntCounterVec::new(
            Opts::new(
                "nacre_expiry_held_total",
                "Expiry ticks on which this node did not judge silence, by reason",
            ),
            &["reason"],
        )?;
        let deadline_moves = IntCounterVec::new(
            Opts::new(
                "nacre_expiry_deadline_moves_total",
                "Times instance deadlines moved later (stall, regained standing, takeover)",
            ),
            &["cause"],
        )?;
        registry.register(Box::new(expiry_held.clone()))?;
        registry.register(Box::new(deadline_moves.clone()))?;
        let health_flips = IntCounterVec::new(
            Opts::new(
                "nacre_health_check_flips_total",
                "Persistent instances flipped by server-side health checks",
            ),
            &["result"],
        )?;
        let raft_apply = Histogram::with_opts(
            HistogramOpts::new(
                "nacre_raft_apply_duration_seconds",
                "Persistent write latency from proposal to applied result",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
        )?;
        let health_probes = IntCounter::new(
            "nacre_health_probes_total",
            "Health probes of persistent instances sent by this node",
        )?;
        registry.register(Box::new(health_probes.clone()))?;
        let raft = IntGaugeVec::new(
            Opts::new(
                "nacre_raft",
                "Raft state of this node: term, commit_index, last_applied, apply_lag, is_leader, snapshots_built and snapshots_installed (since start)",
            ),
            &["field"],
        )?;
        registry.register(Box::new(raft.clone()))?;
        let config = IntGaugeVec::new(
            Opts::new(
                "nacre_config",
                "Config center: configs stored, parked_listeners held now, listened_keys",
            ),
            &["field"],
        )?;
        registry.register(Box::new(config.clone()))?;
        let config_writes = IntCounterVec::new(
            Opts::new(
                "nacre_config_writes_total",
                "Config writes committed through this node, by op (publish, delete)",
            ),
            &["op"],
        )?;
        registry.register(Box::new(config_writes.clone()))?;
        let ready = IntGauge::new(
            "nacre_ready",
            "1 while the node serves clients (loaded, Raft caught up)",
        )?;
        registry.register(Box::new(ready.clone()))?;
        let standing = IntGauge::new(
            "nacre_standing",
            "1 while the node reaches a majority that counts it a member",
        )?;
        registry.register(Box::new(standing.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        let overload_lag = Gauge::new(
            "nacre_overload_lag_seconds",
            "How late this node's workers run: the last probe's wake-up delay",
        )?;
        let overload_shed_share = Gauge::new(
            "nacre_overload_shed_share",
            "Share of client reads turned away with 503 because the node runs late (0-1)",
        )?;
        let overload_shed = IntCounter::new(
            "nacre_overload_shed_total",
            "Client reads turned away with 503 because the node ran late",
        )?;
        let read_turns_waited = IntCounter::new(
            "nacre_read_turns_waited_total",
            "Client reads that waited in their sockets for a turn (rule G3) while the node was behind",
        )?;
        registry.register(Box::new(read_turns_waited.clone()))?;
        let relayed = IntCounterVec::new(
            Opts::new(
                "nacre_relayed_requests_total",
                "Requests a gateway relayed in batches, by how they were served (direct, router)",
            ),
            &["via"],
        )?;
        registry.register(Box::new(relayed.clone()))?;
        registry.register(Box::new(overload_lag.clone()))?;
        registry.register(Box::new(overload_shed_share.clone()))?;
        registry.register(Box::new(overload_shed.clone()))?;
        registry.register(Box::new(instances.clone()))?;
        registry.register(Box::new(services.clone()))?;
        registry.register(Box::new(beats.clone()))?;
        registry.register(Box::new(expirations.clone()))?;
        registry.register(Box::new(raft_apply.clone()))?;
        registry.register(Box::new(health_flips.clone()))?;
        Ok(Self {
            registry,
            requests,
            latency,
            instances,
            services,
            beats,
            expirations,
            expiry_held,
            deadline_moves,
            raft_apply,
            health_flips,
            health_probes,
            raft,
            config,
            config_writes,
            ready,
            standing,
            overload_lag,
            overload_shed_share,
            overload_shed,
            read_turns_waited,
            relayed,
        })
    }

    /// The registry, for components that register their own instruments.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
