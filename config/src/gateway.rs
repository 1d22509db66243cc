//! Settings of the gateway tier (`nacre gateway`): where it listens, which registry nodes it
//! fronts and how it finds them, its cache and its shutdown.
//!
//! Same layering as the registry: defaults, then an optional TOML file, then
//! `NACRE_GATEWAY_<KEY>` environment variables (the TOML key in capitals; an unknown one is
//! reported for a warning, as the registry's are), then flags applied by the binary. `validate()` names the key of
//! any bad value before anything binds. The cluster secret is the nodes' own
//! `NACRE_CLUSTER_SECRET`, read by the binary.

use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;

use crate::members::{self, MemberSource};
use crate::{invalid, ConfigError, Loaded};

/// Everything `nacre gateway` needs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewaySettings {
    /// Address the gateway listens on.
    pub listen: SocketAddr,
    /// Addresses `/nacos/serverlist` answers (default: the listen address). Replicas behind a
    /// load balancer advertise the balancer.
    pub advertise: Vec<String>,
    /// Worker threads of the proxy.
    pub threads: usize,
    /// Shared secret of the registry cluster (the change feed and probes are internal).
    pub cluster_secret: Option<String>,
    /// Static list of registry nodes.
    pub upstreams: Vec<String>,
    /// Address-server URL answering the registry nodes, polled.
    pub upstreams_endpoint: Option<String>,
    /// `NAME:PORT` whose A records are the registry nodes.
    pub upstreams_dns: Option<String>,
    /// How often file, endpoint and DNS sources are re-read (ms).
    pub discovery_interval_ms: u64,
    /// How often every node's readiness is probed (ms).
    pub probe_interval_ms: u64,
    /// Time allowed for one probe (ms).
    pub probe_timeout_ms: u64,
    /// Time allowed to connect to a node before the next one is tried (ms).
    pub connect_timeout_ms: u64,
    /// Time allowed for a node's answer (ms).
    pub read_timeout_ms: u64,
    /// Memory for cached list answers (bytes); 0 turns the cache off.
    pub cache_bytes: u64,
    /// Backstop lifetime of a cached answer (ms); the change feed invalidates far sooner.
    pub cache_ttl_ms: u64,
    /// A subscriber's query (`udpPort` > 0) reaches its node at least this often, so the
    /// node keeps pushing to it (ms; under the node's subscriber TTL).
    pub push_refresh_ms: u64,
    /// How long one change-feed read is held open by a node (ms).
    pub feed_wait_ms: u64,
    /// After SIGTERM, time the gateway keeps serving before it stops accepting (s).
    pub grace_period_seconds: u64,
    /// Time in-flight requests get to finish once the gateway stops (s).
    pub shutdown_timeout_seconds: u64,
    /// Requests per second one client address may send; 0 turns the limit off. Past it (and
    /// its burst) the gateway answers 429 without involving a node.
    pub client_rate_limit: u32,
    /// Requests a client may send at once above its rate (0: the rate itself).
    pub client_rate_burst: u32,
    /// Open connections one client address may hold; 0 turns the cap off. A connection past
    /// it is closed as it is accepted.
    pub client_max_connections: usize,
    /// Memory for cached config reads (bytes); 0 turns that cache off.
    pub config_cache_bytes: u64,
    /// Hold config listener long-polls at the gateway (answered from the nodes' change
    /// feeds); off, they are passed to a node, which holds them.
    pub hold_config_listeners: bool,
    /// How long the gateway holds a client's beat to send it to its node together with the
    /// other beats for that node (ms; see the gateway's `beats`); 0 proxies each beat, and each
    /// register and deregister (otherwise relayed in batches without this wait), on its own. A
    /// beat is answered after its node served it, this much later at most.
    pub beat_linger_ms: u64,
    /// Client reads the gateway starts per scheduler round once it has more to do than it can
    /// (rule G3 in `nacre_ring::turns`): past them, reads wait in their sockets while beats,
    /// registrations and other requests are read first. 0 turns the gate off.
    pub read_turns_per_round: usize,
    /// Open client connections up to which reads take no turns: fewer connections keep a
    /// beat's wait short without them (rule G3).
    pub read_turns_crowd: usize,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8848)),
            advertise: Vec::new(),
            threads: 2,
            cluster_secret: None,
            upstreams: Vec::new(),
            upstreams_endpoint: None,
            upstreams_dns: None,
            discovery_interval_ms: 1_000,
            probe_interval_ms: 500,
            probe_timeout_ms: 400,
            connect_timeout_ms: 500,
            read_timeout_ms: 10_000,
            cache_bytes: 64 * 1024 * 1024,
            cache_ttl_ms: 5_000,
            push_refresh_ms: 5_000,
            feed_wait_ms: 10_000,
            grace_period_seconds: 1,
            shutdown_timeout_seconds: 5,
            client_rate_limit: 0,
            client_rate_burst: 0,
            client_max_connections: 0,
            config_cache_bytes: 16 * 1024 * 1024,
            hold_config_listeners: true,
            beat_linger_ms: 5,
            read_turns_per_round: 16,
            read_turns_crowd: 256,
        }
    }
}

/// Prefix of the gateway's environment variables.
pub const ENV_PREFIX: &str = "NACRE_GATEWAY_";

/// The keys naming a source of registry nodes: one given in the environment replaces the
/// file's, as one given on the command line does.
const SOURCE_KEYS: [&str; 3] = ["upstreams", "upstreams_endpoint", "upstreams_dns"];

impl GatewaySettings {
    /// Defaults overlaid with the TOML file at `file`, if any, then with the
    /// `NACRE_GATEWAY_*` variables of `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Loaded<Self>, ConfigError> {
        let mut s: Self = crate::load_toml(file)?;
        let ours: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        let key = |var: &str| var[ENV_PREFIX.len()..].to_ascii_lowercase();
        if ours
            .iter()
            .any(|(k, _)| SOURCE_KEYS.contains(&key(k).as_str()))
        {
            s.upstreams.clear();
            s.upstreams_endpoint = None;
            s.upstreams_dns = None;
        }
        let mut unknown_env = Vec::new();
        for (var, v) in ours {
            if !s.apply_env(&var, &key(&var), &v)? {
                unknown_env.push(var);
            }
        }
        unknown_env.sort();
        Ok(Loaded {
            settings: s,
            unknown_env,
        })
    }

    /// Applies one variable; `Ok(false)` when no setting reads it.
    fn apply_env(&mut self, var: &str, key: &str, v: &str) -> Result<bool, ConfigError> {
        use crate::env_num as num;
        // Address-list errors name the generic `members` key; name the variable instead.
        let addresses = |v: &str| {
            members::parse_members_flag(v).map_err(|e| match e {
                ConfigError::Invalid { value, reason, .. } => invalid(var, value, &reason),
                other => other,
            })
        };
        match key {
            "listen" => {
                self.listen = v
                    .trim()
                    .parse()
                    .map_err(|_| invalid(var, v, "expected host:port"))?
            }
            "advertise" => self.advertise = addresses(v)?,
            "threads" => self.threads = num(var, v)?,
            "upstreams" => self.upstreams = addresses(v)?,
            "upstreams_endpoint" => self.upstreams_endpoint = Some(v.trim().to_string()),
            "upstreams_dns" => self.upstreams_dns = Some(v.trim().to_string()),
            "discovery_interval_ms" => self.discovery_interval_ms = num(var, v)?,
            "probe_interval_ms" => self.probe_interval_ms = num(var, v)?,
            "probe_timeout_ms" => self.probe_timeout_ms = num(var, v)?,
            "connect_timeout_ms" => self.connect_timeout_ms = num(var, v)?,
            "read_timeout_ms" => self.read_timeout_ms = num(var, v)?,
            "cache_bytes" => self.cache_bytes = num(var, v)?,
            "cache_ttl_ms" => self.cache_ttl_ms = num(var, v)?,
            "push_refresh_ms" => self.push_refresh_ms = num(var, v)?,
            "feed_wait_ms" => self.feed_wait_ms = num(var, v)?,
            "grace_period_seconds" => self.grace_period_seconds = num(var, v)?,
            "shutdown_timeout_seconds" => self.shutdown_timeout_seconds = num(var, v)?,
            "client_rate_limit" => self.client_rate_limit = num(var, v)?,
            "client_rate_burst" => self.client_rate_burst = num(var, v)?,
            "client_max_connections" => self.client_max_connections = num(var, v)?,
            "config_cache_bytes" => self.config_cache_bytes = num(var, v)?,
            "beat_linger_ms" => self.beat_linger_ms = num(var, v)?,
            "read_turns_per_round" => self.read_turns_per_round = num(var, v)?,
            "read_turns_crowd" => self.read_turns_crowd = num(var, v)?,
            "hold_config_listeners" => {
                self.hold_config_listeners = match v.trim() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => return Err(invalid(var, v, "expected true or false")),
                }
            }
            "cluster_secret" => {
                return Err(invalid(
                    var,
                    "(hidden)",
                    "the secret is the nodes' own NACRE_CLUSTER_SECRET",
                ))
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The one configured source of registry nodes.
    pub fn source(&self) -> Result<MemberSource, ConfigError> {
        members::SourceKeys {
            names: ["upstreams", "", "upstreams_endpoint", "upstreams_dns"],
            list: &self.upstreams,
            file: None,
            endpoint: self.upstreams_endpoint.as_deref(),
            dns: self.upstreams_dns.as_deref(),
        }
        .resolve()?
        .ok_or_else(|| {
            invalid(
                "upstreams",
                "none",
                "give upstreams, upstreams_endpoint or upstreams_dns",
            )
        })
    }

    /// What `/nacos/serverlist` answers: `advertise`, or the listen address.
    pub fn advertised(&self) -> Vec<String> {
        if self.advertise.is_empty() {
            vec![self.listen.to_string()]
        } else {
            self.advertise.clone()
        }
    }

    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.source()?;
        match &self.cluster_secret {
            Some(s) if s.len() >= 16 => {}
            _ => {
                return Err(invalid(
                    "cluster_secret",
                    "(hidden)",
                    "the registry cluster's secret (16+ characters) is required",
                ))
            }
        }
        for a in &self.advertise {
            members::parse_address(a)?;
        }
        if self.threads == 0 || self.threads > 256 {
            return Err(invalid("threads", self.threads, "must be 1-256"));
        }
        if self.beat_linger_ms > 1_000 {
            return Err(invalid(
                "beat_linger_ms",
                self.beat_linger_ms,
                "must be 0 (off) to 1000 ms",
            ));
        }
        for (key, v) in [
            ("discovery_interval_ms", self.discovery_interval_ms),
            ("probe_interval_ms", self.probe_interval_ms),
            ("probe_timeout_ms", self.probe_timeout_ms),
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("read_timeout_ms", self.read_timeout_ms),
            ("cache_ttl_ms", self.cache_ttl_ms),
            ("push_refresh_ms", self.push_refresh_ms),
            ("feed_wait_ms", self.feed_wait_ms),
        ] {
            if v == 0 || v > 3_600_000 {
                return Err(invalid(key, v, "must be 1 ms to 1 hour"));
            }
        }
        if self.feed_wait_ms > 30_000 {
            return Err(invalid(
                "feed_wait_ms",
                self.feed_wait_ms,
                "nodes hold a feed read at most 30000 ms",
            ));
        }
        if self.shutdown_timeout_seconds == 0 || self.shutdown_timeout_seconds > 600 {
            return Err(invalid(
                "shutdown_timeout_seconds",
                self.shutdown_timeout_seconds,
                "must be 1-600",
            ));
        }
        if self.grace_period_seconds > 600 {
            return Err(invalid(
                "grace_period_seconds",
                self.grace_period_seconds,
                "must be 0-600",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> GatewaySettings {
        GatewaySettings {
            upstreams: vec!["127.0.0.1:9001".into()],
            cluster_secret: Some("0123456789abcdef".into()),
            ..GatewaySettings::default()
        }
    }

    #[test]
    fn a_source_and_a_secret_are_required() {
        assert!(valid().validate().is_ok());
        let mut s = valid();
        s.upstreams.clear();
        assert!(s.validate().unwrap_err().to_string().contains("upstreams"));
        let mut s = valid();
        s.upstreams_dns = Some("nacre.default.svc:8848".into());
        assert!(s.validate().is_err(), "two sources");
        let mut s = valid();
        s.cluster_secret = Some("short".into());
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("cluster_secret"));
    }

    #[test]
    fn bad_values_name_their_key() {
        let mut s = valid();
        s.threads = 0;
        assert!(s.validate().unwrap_err().to_string().contains("threads"));
        let mut s = valid();
        s.beat_linger_ms = 1_001;
        let why = s.validate().unwrap_err().to_string();
        assert!(why.contains("beat_linger_ms"), "{why}");
        let mut s = valid();
        s.feed_wait_ms = 60_000;
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("feed_wait_ms"));
        let mut s = valid();
        s.upstreams_endpoint = Some("ftp://x".into());
        s.upstreams.clear();
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("upstreams_endpoint"));
    }

    #[test]
    fn advertised_defaults_to_the_listen_address() {
        let s = valid();
        assert_eq!(s.advertised(), vec!["127.0.0.1:8848".to_string()]);
    }

    #[test]
    fn a_file_overrides_defaults_and_rejects_typos() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.toml");
        std::fs::write(&p, "threads = 4\nupstreams = [\"127.0.0.1:1\"]\n").unwrap();
        let s = GatewaySettings::load(Some(&p), []).unwrap().settings;
        assert_eq!(s.threads, 4);
        std::fs::write(&p, "thread = 4\n").unwrap();
        assert!(GatewaySettings::load(Some(&p), []).is_err());
    }

    fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
        vars.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_environment_overrides_the_file_and_bad_values_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.toml");
        std::fs::write(
            &p,
            "threads = 4\ncache_bytes = 10\nupstreams = [\"127.0.0.1:1\"]\n",
        )
        .unwrap();
        let s = GatewaySettings::load(
            Some(&p),
            env(&[
                ("NACRE_GATEWAY_THREADS", "8"),
                ("NACRE_GATEWAY_LISTEN", "127.0.0.1:9848"),
                ("NACRE_GATEWAY_UPSTREAMS_DNS", "nacre.default.svc:8848"),
                ("NACRE_GATEWAY_ADVERTISE", "10.0.0.1:8848,10.0.0.2:8848"),
                ("NACRE_LOG", "debug"),
                ("NACRE_MEMBERS", "ignored:1"),
                ("NACRE_GATEWAY_THREADZ", "3"),
                ("NACRE_GATEWAY_HOLD_CONFIG_LISTENERS", "false"),
                ("NACRE_GATEWAY_BEAT_LINGER_MS", "0"),
            ]),
        )
        .unwrap();
        // A typo in the environment is named for a warning, and changes nothing.
        assert_eq!(s.unknown_env, vec!["NACRE_GATEWAY_THREADZ"]);
        let s = s.settings;
        assert_eq!(s.threads, 8);
        assert!(!s.hold_config_listeners);
        assert_eq!(s.beat_linger_ms, 0);
        assert_eq!(
            s.cache_bytes, 10,
            "the file's value stays where no variable is set"
        );
        assert_eq!(s.listen, "127.0.0.1:9848".parse().unwrap());
        assert_eq!(s.advertise, vec!["10.0.0.1:8848", "10.0.0.2:8848"]);
        // A source from the environment replaces the file's instead of adding a second one.
        assert!(s.upstreams.is_empty());
        assert_eq!(s.upstreams_dns.as_deref(), Some("nacre.default.svc:8848"));

        for (var, value, named) in [
            ("NACRE_GATEWAY_THREADS", "two", "NACRE_GATEWAY_THREADS"),
            (
                "NACRE_GATEWAY_HOLD_CONFIG_LISTENERS",
                "maybe",
                "NACRE_GATEWAY_HOLD_CONFIG_LISTENERS",
            ),
            (
                "NACRE_GATEWAY_UPSTREAMS",
                "http://x",
                "NACRE_GATEWAY_UPSTREAMS",
            ),
            (
                "NACRE_GATEWAY_CLUSTER_SECRET",
                "0123456789abcdef",
                "NACRE_CLUSTER_SECRET",
            ),
        ] {
            let e = GatewaySettings::load(None, env(&[(var, value)]))
                .unwrap_err()
                .to_string();
            assert!(e.contains(named), "{var}: {e}");
            assert!(!e.contains("0123456789abcdef"), "a secret was echoed: {e}");
        }
        // Two sources, one from the environment and one from the file, are not silently merged.
        let both = GatewaySettings::load(
            None,
            env(&[
                ("NACRE_GATEWAY_UPSTREAMS", "127.0.0.1:1"),
                ("NACRE_GATEWAY_UPSTREAMS_DNS", "n:1"),
            ]),
        )
        .unwrap()
        .settings;
        assert!(both.source().is_err());
    }
}
