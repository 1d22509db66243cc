//! Typed, validated settings for nacre's tiers.
//!
//! Settings come from defaults, then an optional TOML file, then `NACRE_*` environment
//! variables, then command-line flags (applied by the binary). `validate()` runs before anything
//! binds: a bad value stops start-up with the key and the value named, never a silent fallback.
//!
//! Unknown keys in a file the operator passed are refused (a typo there is the operator's own).
//! An unknown `NACRE_*` variable is only reported ([`Loaded::unknown_env`]): the environment is
//! ambient, and a user's own `NACRE_HOME` or a script's `NACRE_BIN` must not stop every node.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub mod gateway;
pub mod members;
pub mod serverlist;

pub use gateway::GatewaySettings;

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The settings file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// File path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The settings file is not valid TOML for these settings.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// File path.
        path: PathBuf,
        /// Parser message (names the key).
        message: String,
    },
    /// A value is out of range or malformed.
    #[error("invalid setting {key} = {value:?}: {reason}")]
    Invalid {
        /// Setting name as written in the file (or env var).
        key: String,
        /// Offending value.
        value: String,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(key: &str, value: impl ToString, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// Settings, with what loading them noticed without refusing it.
#[derive(Debug, Clone)]
pub struct Loaded<T> {
    /// The settings.
    pub settings: T,
    /// `NACRE_*` variables of this tier that no setting reads, sorted; the binary warns about
    /// each, naming it.
    pub unknown_env: Vec<String>,
}

/// A number from the environment variable `key`.
fn env_num<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, ConfigError> {
    v.trim()
        .parse()
        .map_err(|_| invalid(key, v, "not a number"))
}

/// A boolean variable: `true`/`1` or `false`/`0`.
fn env_bool(key: &str, v: &str) -> Result<bool, ConfigError> {
    match v.trim() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(invalid(key, v, "expected true or false")),
    }
}

/// The TOML file at `file` over the defaults (unknown keys are refused by the type), or the
/// defaults without a file.
fn load_toml<T: serde::de::DeserializeOwned + Default>(
    file: Option<&Path>,
) -> Result<T, ConfigError> {
    let Some(path) = file else {
        return Ok(T::default());
    };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// UDP push to legacy (1.x) subscribers.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushSettings {
    /// Send UDP pushes at all (Nacos switch `pushEnabled`).
    pub enabled: bool,
    /// Local address of the push socket; port 0 picks a free one.
    pub bind: SocketAddr,
    /// Push debounce window (ms): a change after two quiet windows is pushed at once; other
    /// changes are pushed one window later, merged with those that follow.
    pub debounce_ms: u64,
    /// A subscriber that has not re-queried for this long is dropped (ms).
    pub subscriber_ttl_ms: u64,
    /// Resend a push not acknowledged within this time (ms).
    pub resend_after_ms: u64,
    /// Total sends of one push before it counts as failed.
    pub max_sends: u32,
    /// Upper bound on remembered subscribers.
    pub max_subscribers: usize,
    /// Push to a `clientIP` that differs from the request's verified source (the TCP peer, or
    /// the client address an authenticated gateway asserts). Off: any client could otherwise
    /// aim pushes at any host.
    pub trust_client_ip: bool,
}

impl Default for PushSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            bind: SocketAddr::from(([0, 0, 0, 0], 0)),
            debounce_ms: 50,
            subscriber_ttl_ms: 10_000,
            resend_after_ms: 10_000,
            max_sends: 2,
            max_subscribers: 100_000,
            trust_client_ip: false,
        }
    }
}

/// How a clustered node finds and watches its peers.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSettings {
    /// Static member list (`host:port`; a bare host means port 8848).
    pub members: Vec<String>,
    /// A Nacos `cluster.conf`, re-read when it changes.
    pub members_file: Option<PathBuf>,
    /// An address-server URL answering the member list, polled.
    pub members_endpoint: Option<String>,
    /// `NAME:PORT` of a DNS name (a Kubernetes headless Service) whose A records are the members.
    pub members_dns: Option<String>,
    /// Members that must be known before a fresh cluster forms. Defaults to the size of the
    /// static list or file; required for endpoint and DNS discovery.
    pub bootstrap_expect: Option<usize>,
    /// How often file, endpoint and DNS sources are re-read (ms).
    pub discovery_interval_ms: u64,
    /// How often peers are probed (ms).
    pub probe_interval_ms: u64,
    /// Time allowed for one probe (ms).
    pub probe_timeout_ms: u64,
    /// Failed probes in a row after which a peer is DOWN and loses its services.
    pub down_after: u32,
    /// How long a sync worker gathers changes before sending them (ms).
    pub sync_batch_ms: u64,
    /// Most services remembered per peer before its backlog is dropped (verify repairs it).
    pub sync_queue_capacity: usize,
    /// Time between Distro verify rounds (ms).
    pub verify_interval_ms: u64,
    /// How often the Raft leader reconciles membership with the member list (ms).
    pub raft_membership_interval_ms: u64,
    /// Raft's shortest election timeout (ms), also how long a vote request may take. Heartbeats
    /// go every quarter of it, and a follower that stops hearing from a known leader starts an
    /// election after 2.5 to 3 times it (the leader's lease, then a randomized timeout): about
    /// 1.2 s by default.
    pub raft_election_timeout_ms: u64,
    /// Applied Raft entries between two snapshots (log compaction).
    pub raft_snapshot_logs: u64,
    /// Raft entries kept behind the latest snapshot; a member further behind gets the snapshot.
    pub raft_logs_kept: u64,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            members: Vec::new(),
            members_file: None,
            members_endpoint: None,
            members_dns: None,
            bootstrap_expect: None,
            discovery_interval_ms: 1_000,
            probe_interval_ms: 1_000,
            probe_timeout_ms: 800,
            down_after: 3,
            sync_batch_ms: 0,
            sync_queue_capacity: 100_000,
            verify_interval_ms: 5_000,
            raft_membership_interval_ms: 1_000,
            raft_election_timeout_ms: 400,
            raft_snapshot_logs: 5_000,
            raft_logs_kept: 200,
        }
    }
}

impl ClusterSettings {
    /// The one configured discovery source, if any.
    pub fn source(&self) -> Result<Option<members::MemberSource>, ConfigError> {
        members::SourceKeys {
            names: [
                "cluster.members",
                "cluster.members_file",
                "cluster.members_endpoint",
                "cluster.members_dns",
            ],
            list: &self.members,
            file: self.members_file.as_deref(),
            endpoint: self.members_endpoint.as_deref(),
            dns: self.members_dns.as_deref(),
        }
        .resolve()
    }
}

/// Authentication and authorization (Nacos 1.x style: login, access tokens, users, roles and
/// permissions).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Require a user for every API call (off by default, as in Nacos).
    pub enabled: bool,
    /// The first administrator's (`nacos`) password, used once when the cluster first starts
    /// with auth on; generated and logged once when unset.
    pub admin_password: Option<String>,
    /// Lifetime of an access token (s; Nacos's default 18000).
    pub token_ttl_s: u64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            admin_password: None,
            token_ttl_s: 18_000,
        }
    }
}

/// Settings of a registry node.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrySettings {
    /// HTTP listen address (public API and internal traffic).
    pub listen: SocketAddr,
    /// Address peers and clients should use for this node; defaults to `listen`.
    pub advertise: Option<String>,
    /// Directory for the SQLite file and node identity.
    pub data_dir: PathBuf,
    /// Run as a single-node cluster.
    pub standalone: bool,
    /// Shared secret for `/nacre/internal/…`; generated into the data dir when unset.
    pub cluster_secret: Option<String>,
    /// Largest accepted request body (bytes); larger bodies get 413.
    pub max_body_bytes: usize,
    /// Upper bound on concurrently served client connections.
    pub max_connections: usize,
    /// Further connections kept for peers (nodes, the gateway's monitor) once clients hold
    /// `max_connections`, so a flood of client sockets cannot cut a node off from its cluster.
    pub peer_connections: usize,
    /// A connection with nothing read or written for this long is closed (ms).
    pub idle_timeout_ms: u64,
    /// How often the expiry sweep runs (ms).
    pub expiry_interval_ms: u64,
    /// How long an ephemeral service may stay empty before its owner drops it (ms; Nacos's
    /// `nacos.naming.clean.empty-service.expired-time`).
    pub empty_service_ttl_ms: u64,
    /// How often persistent instances are health-checked (ms).
    pub health_check_interval_ms: u64,
    /// Connect / response timeout of one health check (ms).
    pub health_check_timeout_ms: u64,
    /// `cacheMillis` returned to polling clients (Nacos `defaultCacheMillis`).
    pub default_cache_millis: u64,
    /// `cacheMillis` returned to push subscribers (Nacos `defaultPushCacheMillis`).
    pub push_cache_millis: u64,
    /// Grace period for in-flight requests on shutdown (ms).
    pub shutdown_grace_ms: u64,
    /// Most bytes of rendered `instance/list` answers kept for reuse.
    pub list_cache_bytes: usize,
    /// Scheduling lag (ms) past which the node turns away a growing share of client reads
    /// with 503 so beats and writes keep being served. 0 (the default) never turns reads away:
    /// measured, refusing a cached list costs about as much as serving it, so shedding lowered
    /// what an overloaded node served (`docs/benchmarks.md`). The lag is measured either way
    /// and always holds expiry back.
    pub overload_lag_ms: u64,
    /// Client reads a node starts per scheduler round once it has more to do than it can
    /// (rule G3 in `nacre_ring::turns`): past them, reads wait in their sockets while beats,
    /// writes and peer traffic go first. 0 turns the gate off.
    pub read_turns_per_round: usize,
    /// Open client connections up to which reads take no turns: fewer connections keep a
    /// beat's wait short without them (rule G3).
    pub read_turns_crowd: usize,
    /// UDP push.
    pub push: PushSettings,
    /// Authentication and authorization.
    pub auth: AuthSettings,
    /// Clustering (ignored when standalone).
    pub cluster: ClusterSettings,
}

impl Default for RegistrySettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8848)),
            advertise: None,
            data_dir: PathBuf::from("./data"),
            standalone: true,
            cluster_secret: None,
            max_body_bytes: 1024 * 1024,
            max_connections: 10_000,
            peer_connections: 256,
            idle_timeout_ms: 60_000,
            expiry_interval_ms: 1_000,
            empty_service_ttl_ms: 60_000,
            health_check_interval_ms: 5_000,
            health_check_timeout_ms: 2_000,
            default_cache_millis: 3_000,
            push_cache_millis: 10_000,
            shutdown_grace_ms: 5_000,
            list_cache_bytes: 64 * 1024 * 1024,
            overload_lag_ms: 0,
            read_turns_per_round: 16,
            read_turns_crowd: 256,
            push: PushSettings::default(),
            auth: AuthSettings::default(),
            cluster: ClusterSettings::default(),
        }
    }
}

impl RegistrySettings {
    /// Defaults, overlaid with `file` (if any) and then with `NACRE_*` variables from `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Loaded<Self>, ConfigError> {
        let mut settings: Self = load_toml(file)?;
        let mut unknown_env = Vec::new();
        for (k, v) in env {
            if !settings.apply_env(&k, &v)? && k.starts_with("NACRE_") && is_registry_env(&k) {
                unknown_env.push(k);
            }
        }
        unknown_env.sort();
        Ok(Loaded {
            settings,
            unknown_env,
        })
    }

    /// Applies one variable; `Ok(false)` when no setting reads it.
    fn apply_env(&mut self, key: &str, v: &str) -> Result<bool, ConfigError> {
        use env_num as num;
        match key {
            "NACRE_LISTEN" => {
                self.listen = v
                    .parse()
                    .map_err(|_| invalid(key, v, "expected host:port"))?
            }
            "NACRE_ADVERTISE" => self.advertise = Some(v.to_string()),
            "NACRE_DATA" => self.data_dir = PathBuf::from(v),
            "NACRE_CLUSTER_SECRET" => self.cluster_secret = Some(v.to_string()),
            "NACRE_MAX_BODY_BYTES" => self.max_body_bytes = num(key, v)?,
            "NACRE_MAX_CONNECTIONS" => self.max_connections = num(key, v)?,
            "NACRE_PEER_CONNECTIONS" => self.peer_connections = num(key, v)?,
            "NACRE_IDLE_TIMEOUT_MS" => self.idle_timeout_ms = num(key, v)?,
            "NACRE_LIST_CACHE_BYTES" => self.list_cache_bytes = num(key, v)?,
            "NACRE_OVERLOAD_LAG_MS" => self.overload_lag_ms = num(key, v)?,
            "NACRE_READ_TURNS_PER_ROUND" => self.read_turns_per_round = num(key, v)?,
            "NACRE_READ_TURNS_CROWD" => self.read_turns_crowd = num(key, v)?,
            "NACRE_EXPIRY_INTERVAL_MS" => self.expiry_interval_ms = num(key, v)?,
            "NACRE_EMPTY_SERVICE_TTL_MS" => self.empty_service_ttl_ms = num(key, v)?,
            "NACRE_HEALTH_CHECK_INTERVAL_MS" => self.health_check_interval_ms = num(key, v)?,
            "NACRE_HEALTH_CHECK_TIMEOUT_MS" => self.health_check_timeout_ms = num(key, v)?,
            "NACRE_PUSH_ENABLED" => self.push.enabled = env_bool(key, v)?,
            "NACRE_PUSH_TRUST_CLIENT_IP" => self.push.trust_client_ip = env_bool(key, v)?,
            "NACRE_PUSH_SUBSCRIBER_TTL_MS" => self.push.subscriber_ttl_ms = num(key, v)?,
            "NACRE_AUTH_ENABLED" => self.auth.enabled = env_bool(key, v)?,
            "NACRE_AUTH_ADMIN_PASSWORD" => self.auth.admin_password = Some(v.to_string()),
            "NACRE_AUTH_TOKEN_TTL_S" => self.auth.token_ttl_s = num(key, v)?,
            "NACRE_MEMBERS" => {
                self.cluster.members = members::parse_members_flag(v)?;
            }
            "NACRE_MEMBERS_FILE" => self.cluster.members_file = Some(PathBuf::from(v)),
            "NACRE_MEMBERS_ENDPOINT" => self.cluster.members_endpoint = Some(v.to_string()),
            "NACRE_MEMBERS_DNS" => self.cluster.members_dns = Some(v.to_string()),
            "NACRE_BOOTSTRAP_EXPECT" => self.cluster.bootstrap_expect = Some(num(key, v)?),
            "NACRE_DISCOVERY_INTERVAL_MS" => self.cluster.discovery_interval_ms = num(key, v)?,
            "NACRE_PROBE_INTERVAL_MS" => self.cluster.probe_interval_ms = num(key, v)?,
            "NACRE_PROBE_TIMEOUT_MS" => self.cluster.probe_timeout_ms = num(key, v)?,
            "NACRE_DOWN_AFTER" => self.cluster.down_after = num(key, v)?,
            "NACRE_SYNC_BATCH_MS" => self.cluster.sync_batch_ms = num(key, v)?,
            "NACRE_SYNC_QUEUE_CAPACITY" => self.cluster.sync_queue_capacity = num(key, v)?,
            "NACRE_VERIFY_INTERVAL_MS" => self.cluster.verify_interval_ms = num(key, v)?,
            "NACRE_RAFT_MEMBERSHIP_INTERVAL_MS" => {
                self.cluster.raft_membership_interval_ms = num(key, v)?
            }
            "NACRE_RAFT_ELECTION_TIMEOUT_MS" => {
                self.cluster.raft_election_timeout_ms = num(key, v)?
            }
            "NACRE_RAFT_SNAPSHOT_LOGS" => self.cluster.raft_snapshot_logs = num(key, v)?,
            "NACRE_RAFT_LOGS_KEPT" => self.cluster.raft_logs_kept = num(key, v)?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The address this node is known by.
    pub fn advertised(&self) -> String {
        self.advertise
            .clone()
            .unwrap_or_else(|| self.listen.to_string())
    }

    /// Checks every value; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_body_bytes < 1024 || self.max_body_bytes > 64 * 1024 * 1024 {
            return Err(invalid(
                "max_body_bytes",
                self.max_body_bytes,
                "must be between 1 KiB and 64 MiB",
            ));
        }
        if self.max_connections == 0 {
            return Err(invalid("max_connections", 0, "must be positive"));
        }
        // Short lifetimes are the operator's choice (clients then log in more often); the
        // floor only keeps a token usable for the requests right after its login.
        if !(5..=31_536_000).contains(&self.auth.token_ttl_s) {
            return Err(invalid(
                "auth.token_ttl_s",
                self.auth.token_ttl_s,
                "must be between 5 and 31536000",
            ));
        }
        if self
            .auth
            .admin_password
            .as_ref()
            .is_some_and(|p| p.len() < 8)
        {
            return Err(invalid(
                "auth.admin_password",
                "(hidden)",
                "must be at least 8 characters",
            ));
        }
        if self.peer_connections == 0 {
            return Err(invalid("peer_connections", 0, "must be positive"));
        }
        if !(1_000..=3_600_000).contains(&self.idle_timeout_ms) {
            return Err(invalid(
                "idle_timeout_ms",
                self.idle_timeout_ms,
                "must be between 1000 and 3600000",
            ));
        }
        if !(10..=60_000).contains(&self.expiry_interval_ms) {
            return Err(invalid(
                "expiry_interval_ms",
                self.expiry_interval_ms,
                "must be between 10 and 60000",
            ));
        }
        if !(1_000..=86_400_000).contains(&self.empty_service_ttl_ms) {
            return Err(invalid(
                "empty_service_ttl_ms",
                self.empty_service_ttl_ms,
                "must be between 1000 and 86400000",
            ));
        }
        if !(100..=600_000).contains(&self.health_check_interval_ms) {
            return Err(invalid(
                "health_check_interval_ms",
                self.health_check_interval_ms,
                "must be between 100 and 600000",
            ));
        }
        if self.health_check_timeout_ms == 0
            || self.health_check_timeout_ms > self.health_check_interval_ms.max(1_000)
        {
            return Err(invalid(
                "health_check_timeout_ms",
                self.health_check_timeout_ms,
                "must be positive and at most the check interval",
            ));
        }
        if self.default_cache_millis == 0 || self.push_cache_millis == 0 {
            return Err(invalid(
                "default_cache_millis",
                self.default_cache_millis,
                "cache times must be positive",
            ));
        }
        if let Some(a) = &self.advertise {
            let ok = a
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            if !ok {
                return Err(invalid("advertise", a, "expected host:port"));
            }
        }
        if let Some(s) = &self.cluster_secret {
            if s.len() < 16 {
                return Err(invalid(
                    "cluster_secret",
                    "<hidden>",
                    "must be at least 16 characters",
                ));
            }
        }
        if !self.standalone {
            self.validate_cluster()?;
        }
        if self.push.max_sends == 0 {
            return Err(invalid("push.max_sends", 0, "must be at least 1"));
        }
        if self.push.max_subscribers == 0 {
            return Err(invalid("push.max_subscribers", 0, "must be positive"));
        }
        if self.push.subscriber_ttl_ms < 1_000 {
            return Err(invalid(
                "push.subscriber_ttl_ms",
                self.push.subscriber_ttl_ms,
                "must be at least 1000",
            ));
        }
        Ok(())
    }
}

impl RegistrySettings {
    fn validate_cluster(&self) -> Result<(), ConfigError> {
        let c = &self.cluster;
        let source = c.source()?.ok_or_else(|| {
            invalid(
                "cluster",
                "no member source",
                "a clustered node needs members, members_file, members_endpoint or members_dns (or run standalone)",
            )
        })?;
        if self.cluster_secret.is_none() {
            return Err(invalid(
                "cluster_secret",
                "<unset>",
                "a clustered node needs the secret shared by all members (--cluster-secret or NACRE_CLUSTER_SECRET)",
            ));
        }
        let dynamic = matches!(
            source,
            members::MemberSource::Endpoint(_) | members::MemberSource::Dns { .. }
        );
        if dynamic && c.bootstrap_expect.is_none() {
            return Err(invalid(
                "cluster.bootstrap_expect",
                "<unset>",
                "endpoint and DNS discovery need the number of members that found the cluster",
            ));
        }
        if c.bootstrap_expect == Some(0) {
            return Err(invalid("cluster.bootstrap_expect", 0, "must be at least 1"));
        }
        for (key, v, lo, hi) in [
            (
                "cluster.discovery_interval_ms",
                c.discovery_interval_ms,
                50,
                600_000,
            ),
            ("cluster.probe_interval_ms", c.probe_interval_ms, 50, 60_000),
            ("cluster.probe_timeout_ms", c.probe_timeout_ms, 10, 60_000),
            ("cluster.sync_batch_ms", c.sync_batch_ms, 0, 1_000),
            (
                "cluster.verify_interval_ms",
                c.verify_interval_ms,
                100,
                600_000,
            ),
            (
                "cluster.raft_membership_interval_ms",
                c.raft_membership_interval_ms,
                100,
                600_000,
            ),
            (
                "cluster.raft_election_timeout_ms",
                c.raft_election_timeout_ms,
                60,
                60_000,
            ),
            (
                "cluster.raft_snapshot_logs",
                c.raft_snapshot_logs,
                1,
                100_000_000,
            ),
            ("cluster.raft_logs_kept", c.raft_logs_kept, 0, 100_000_000),
        ] {
            if !(lo..=hi).contains(&v) {
                return Err(invalid(key, v, &format!("must be between {lo} and {hi}")));
            }
        }
        if c.down_after == 0 {
            return Err(invalid("cluster.down_after", 0, "must be at least 1"));
        }
        if c.sync_queue_capacity == 0 {
            return Err(invalid(
                "cluster.sync_queue_capacity",
                0,
                "must be positive",
            ));
        }
        Ok(())
    }
}

/// `NACRE_*` name prefixes that belong to someone other than the registry: the other tiers,
/// the log filter, and the test harness (whose variables a spawned node inherits).
const FOREIGN_ENV_PREFIXES: [&str; 8] = [
    "NACRE_GATEWAY_",
    "NACRE_NEMESIS_",
    "NACRE_LOADTEST_",
    "NACRE_TEST_",
    "NACRE_COMPAT_",
    "NACRE_BENCH_",
    "NACRE_BIN",
    "NACRE_LOG",
];

/// Env names the registry would read; an unknown one of these is worth a warning.
fn is_registry_env(k: &str) -> bool {
    !FOREIGN_ENV_PREFIXES.iter().any(|p| k.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        RegistrySettings::default().validate().unwrap();
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn env_overrides_and_bad_values_are_refused() {
        let s = RegistrySettings::load(None, env(&[("NACRE_LISTEN", "127.0.0.1:9000")]))
            .unwrap()
            .settings;
        assert_eq!(s.listen, "127.0.0.1:9000".parse().unwrap());
        let e = RegistrySettings::load(None, env(&[("NACRE_LISTEN", "nowhere")])).unwrap_err();
        assert!(e.to_string().contains("NACRE_LISTEN"), "{e}");
        let e = RegistrySettings::load(
            None,
            vec![("NACRE_MAX_BODY_BYTES".to_string(), "lots".to_string())],
        )
        .unwrap_err();
        assert!(e.to_string().contains("lots"), "{e}");
    }

    #[test]
    fn unknown_ambient_variables_are_reported_not_refused() {
        let loaded = RegistrySettings::load(
            None,
            env(&[
                ("NACRE_LISTN", "x"),
                ("NACRE_HOME", "/home/me/nacre"),
                ("NACRE_LISTEN", "127.0.0.1:9001"),
                ("HOME", "/root"),
                // Variables of other tiers and of the test harness are not the registry's
                // business: not even a warning.
                ("NACRE_COMPAT_ONLY", "push"),
                ("NACRE_TEST_BIN", "/bin/x"),
                ("NACRE_GATEWAY_THREADS", "2"),
                ("NACRE_BIN", "/usr/bin/nacre"),
            ]),
        )
        .unwrap();
        assert_eq!(loaded.unknown_env, vec!["NACRE_HOME", "NACRE_LISTN"]);
        assert_eq!(loaded.settings.listen, "127.0.0.1:9001".parse().unwrap());
    }

    #[test]
    fn file_with_unknown_key_fails_loudly() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nacre.toml");
        std::fs::write(&p, "listen = \"127.0.0.1:1\"\nmax_body_byts = 3\n").unwrap();
        let e = RegistrySettings::load(Some(&p), vec![]).unwrap_err();
        assert!(e.to_string().contains("max_body_byts"), "{e}");
        std::fs::write(&p, "[push]\nmax_sends = 0\n").unwrap();
        let s = RegistrySettings::load(Some(&p), vec![]).unwrap().settings;
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("push.max_sends"));
    }

    #[test]
    fn bad_advertise_is_named() {
        let s = RegistrySettings {
            advertise: Some("nohost".into()),
            ..Default::default()
        };
        assert!(s.validate().unwrap_err().to_string().contains("advertise"));
    }
}
