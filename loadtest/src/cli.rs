//! The `nacre loadtest` flags and their validation (a bad value stops the run before any
//! traffic and names the flag).

use std::path::PathBuf;
use std::time::Duration;

use crate::error::LoadtestError;
use crate::scenario::ScenarioKind;

/// Load-test a Nacos 1.x compatible registry (nacre, r-nacos, Java Nacos) over its HTTP Open
/// API.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadtestArgs {
    /// Server to load, HOST:PORT.
    #[arg(long)]
    pub target: String,
    /// What to send.
    #[arg(long, value_enum, default_value_t = ScenarioKind::Mixed)]
    pub scenario: ScenarioKind,
    /// Measured time per round (e.g. 10s, 500ms, 2m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Traffic sent before measuring starts, not recorded.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Connections (one sender each).
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Open loop at this many requests per second, latency measured from each request's
    /// intended send time; without it, closed loop (as fast as answers come back).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Services the scenario spreads over.
    #[arg(long, default_value_t = 10)]
    pub services: usize,
    /// Instances registered per service.
    #[arg(long, default_value_t = 10)]
    pub instances_per_service: u64,
    /// Size of each instance's metadata JSON (0: none).
    #[arg(long, default_value_t = 0)]
    pub metadata_bytes: usize,
    /// Beats carry the whole `beat` JSON (address, weight, cluster, metadata), as the Python
    /// and Node clients send on every beat and Java until the server allows light beats;
    /// without it, light beats (query parameters only).
    #[arg(long)]
    pub full_beats: bool,
    /// Instances carry day-long `preserved.*` timeouts in their metadata, so scenarios that
    /// send no beats (list, register) can hold a large fleet longer than the 15 s / 30 s
    /// default timeouts; always on for `memory`.
    #[arg(long)]
    pub keep_alive: bool,
    /// config-listen: config listeners holding long-polls (each on its own connection).
    #[arg(long, default_value_t = 100)]
    pub listeners: usize,
    /// config-publish / config-get / config-listen: size of each config's content.
    #[arg(long, default_value_t = 256)]
    pub config_bytes: usize,
    /// Nacos namespace id.
    #[arg(long, default_value = "public")]
    pub namespace: String,
    /// Seed of every generated name: same seed, same services and instances.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// mixed: services each fleet client lists.
    #[arg(long, default_value_t = 3)]
    pub dependencies: usize,
    /// mixed: each fleet client sends its own `clientIP` (127.x.y.z) when it lists, as real
    /// clients on their own hosts do, instead of the push listener's address. Pushes still go
    /// where a server sends them; a server that trusts `clientIP` sends them nowhere the
    /// harness listens.
    #[arg(long)]
    pub distinct_clients: bool,
    /// Register persistent instances (ephemeral=false) instead of ephemeral ones.
    #[arg(long)]
    pub persistent: bool,
    /// Per-request timeout.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Load-generator threads (1 = a single-threaded runtime on one core).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// User-Agent sent; a Java client agent is what makes Nacos push to subscribers.
    #[arg(long, default_value = "Nacos-Java-Client:v1.4.1")]
    pub user_agent: String,
    /// Write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write a latency-by-percentile SVG chart here.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Second target, HOST:PORT: run the same scenario against both in alternating rounds and
    /// print B / A ratios.
    #[arg(long)]
    pub compare: Option<String>,
    /// Rounds per target (default 1, or 3 with --compare).
    #[arg(long)]
    pub rounds: Option<u32>,
    /// PID of the target server: report its CPU-seconds, requests per CPU-second, peak RSS.
    #[arg(long)]
    pub target_pid: Option<u32>,
    /// Further processes of the target (the other nodes of a cluster): their CPU-seconds are
    /// added to the server's (the peak RSS stays `--target-pid`'s). Repeatable.
    #[arg(long = "also-pid", requires = "target_pid")]
    pub also_pids: Vec<u32>,
    /// PID of the --compare server.
    #[arg(long)]
    pub compare_pid: Option<u32>,
    /// memory: wait this long after registering before reading the RSS.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub settle: Duration,
    /// overload: how long lists come at `--rate` (from the start of the measured window)
    /// before they back off to `--backoff-rate`.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub overload_for: Duration,
    /// overload: the list rate after the back-off (default: a quarter of `--rate`).
    #[arg(long)]
    pub backoff_rate: Option<f64>,
    /// overload: pushes compete with the flood. Every list also subscribes to pushes, from one
    /// of N client addresses (127.0.0.1 … 127.0.0.N, each with a UDP socket of its own on one
    /// port), and one marker instance per service appears and vanishes once a second, so each
    /// change is pushed to N subscribers of its service. Loopback targets only.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=250))]
    pub push_clients: Option<u8>,
    /// USER:PASSWORD for a target with auth on: the harness logs in once before the run and
    /// sends the token as `accessToken` on every request, as the Java and Python clients do.
    #[arg(long, value_name = "USER:PASSWORD")]
    pub auth: Option<String>,
    /// USER:PASSWORD for the --compare target.
    #[arg(long, value_name = "USER:PASSWORD")]
    pub compare_auth: Option<String>,
}

/// `USER:PASSWORD` split at the first colon (a password may contain colons).
pub fn credentials(s: &str) -> Option<(&str, &str)> {
    s.split_once(':')
        .filter(|(u, p)| !u.is_empty() && !p.is_empty())
}

/// Parses `250ms`, `10s`, `1.5s`, `2m`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("not a duration: {s:?} (use e.g. 500ms, 10s, 2m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("unknown unit {unit:?} in {s:?} (ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("bad duration {s:?}: {e}"))
}

impl LoadtestArgs {
    /// Arguments with every default, for `target` and `scenario` (library and test use).
    pub fn new(target: &str, scenario: ScenarioKind) -> LoadtestArgs {
        LoadtestArgs {
            target: target.to_string(),
            scenario,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            concurrency: 16,
            rate: None,
            services: 10,
            instances_per_service: 10,
            metadata_bytes: 0,
            full_beats: false,
            keep_alive: false,
            config_bytes: 256,
            listeners: 100,
            namespace: "public".into(),
            seed: 1,
            dependencies: 3,
            distinct_clients: false,
            persistent: false,
            timeout: Duration::from_secs(5),
            threads: 1,
            user_agent: "Nacos-Java-Client:v1.4.1".into(),
            json: None,
            svg: None,
            compare: None,
            rounds: None,
            target_pid: None,
            also_pids: Vec::new(),
            compare_pid: None,
            settle: Duration::from_secs(2),
            overload_for: Duration::from_secs(60),
            backoff_rate: None,
            push_clients: None,
            auth: None,
            compare_auth: None,
        }
    }

    pub fn validate(&self) -> Result<(), LoadtestError> {
        let bad = |flag: &'static str, reason: &str| {
            Err(LoadtestError::InvalidArg {
                flag,
                reason: reason.to_string(),
            })
        };
        if self.duration.is_zero() {
            return bad("--duration", "must be positive");
        }
        if self.timeout.is_zero() {
            return bad("--timeout", "must be positive");
        }
        if !(1..=100_000).contains(&self.concurrency) {
            return bad("--concurrency", "must be 1..=100000");
        }
        if !(1..=256).contains(&self.threads) {
            return bad("--threads", "must be 1..=256");
        }
        if let Some(r) = self.rate {
            if !(r.is_finite() && r > 0.0) {
                return bad("--rate", "must be a positive number of requests per second");
            }
        }
        if self.services == 0 || self.services > 1_000_000 {
            return bad("--services", "must be 1..=1000000");
        }
        // Instance addresses are 127.x.y.z; churn uses twice the per-service count.
        if self.instances_per_service == 0 || self.instances_per_service > 8_000_000 {
            return bad("--instances-per-service", "must be 1..=8000000");
        }
        if self.metadata_bytes > 64 * 1024 {
            return bad("--metadata-bytes", "at most 65536");
        }
        if !(1..=100_000).contains(&self.listeners) {
            return bad("--listeners", "must be 1..=100000");
        }
        // Content travels in the query string, as the Python client sends it.
        if !(1..=64 * 1024).contains(&self.config_bytes) {
            return bad("--config-bytes", "must be 1..=65536");
        }
        if self.namespace.is_empty() {
            return bad("--namespace", "must not be empty");
        }
        if self.rounds == Some(0) {
            return bad("--rounds", "must be at least 1");
        }
        if self.compare_pid.is_some() && self.compare.is_none() {
            return bad("--compare-pid", "only with --compare");
        }
        if self.compare_auth.is_some() && self.compare.is_none() {
            return bad("--compare-auth", "only with --compare");
        }
        for (flag, v) in [
            ("--auth", &self.auth),
            ("--compare-auth", &self.compare_auth),
        ] {
            if v.as_deref().is_some_and(|v| credentials(v).is_none()) {
                return bad(flag, "expected USER:PASSWORD");
            }
        }
        if let Some(r) = self.backoff_rate {
            if !(r.is_finite() && r > 0.0) {
                return bad(
                    "--backoff-rate",
                    "must be a positive number of requests per second",
                );
            }
        }
        if self.scenario == ScenarioKind::Overload {
            if self.rate.is_none() {
                return bad(
                    "--rate",
                    "the overload scenario needs the list rate to offer (e.g. twice what the target serves)",
                );
            }
            if self.overload_for >= self.duration {
                return bad(
                    "--overload-for",
                    "must be shorter than --duration, so the run sees the back-off",
                );
            }
            // The report counts whole seconds on either side of the back-off.
            if self.overload_for.subsec_nanos() != 0 || self.overload_for.is_zero() {
                return bad(
                    "--overload-for",
                    "must be a whole number of seconds, at least 1",
                );
            }
            // Rounds would add up second by second in one timeline.
            if self.rounds.is_some_and(|r| r > 1) || self.compare.is_some() {
                return bad(
                    "--rounds",
                    "the overload scenario runs one round against one target",
                );
            }
        }
        if let Some(n) = self.push_clients {
            if self.scenario != ScenarioKind::Overload {
                return bad("--push-clients", "only with the overload scenario");
            }
            if self.concurrency < usize::from(n) {
                return bad(
                    "--push-clients",
                    "needs at least as many connections (--concurrency) as client addresses",
                );
            }
        }
        if self.scenario == ScenarioKind::Memory {
            if self.target_pid.is_none() {
                return bad(
                    "--target-pid",
                    "the memory scenario reads the target's RSS: give its PID",
                );
            }
            if self.compare.is_some() && self.compare_pid.is_none() {
                return bad("--compare-pid", "the memory scenario needs both PIDs");
            }
            if self.rounds.is_some_and(|r| r > 1) {
                return bad(
                    "--rounds",
                    "the memory scenario registers once per target (a second round only re-registers)",
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_the_usual_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn credentials_split_at_the_first_colon() {
        assert_eq!(credentials("nacos:a:b"), Some(("nacos", "a:b")));
        assert_eq!(credentials(":pw"), None);
        assert_eq!(credentials("nacos:"), None);
        assert_eq!(credentials("nacos"), None);
    }

    #[test]
    fn validation_names_the_bad_flag() {
        let ok = LoadtestArgs::new("127.0.0.1:8848", ScenarioKind::List);
        assert!(ok.validate().is_ok());
        let mut a = ok.clone();
        a.rate = Some(0.0);
        assert!(a.validate().unwrap_err().to_string().contains("--rate"));
        let mut a = ok.clone();
        a.scenario = ScenarioKind::Memory;
        assert!(a
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--target-pid"));
        let mut a = ok.clone();
        a.auth = Some("nacos".into());
        assert!(a.validate().unwrap_err().to_string().contains("--auth"));
        let mut a = ok.clone();
        a.compare_auth = Some("nacos:pw".into());
        assert!(a
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--compare-auth"));
        // --push-clients: overload only, and no more addresses than connections.
        let pushes = |scenario, clients| {
            let mut a = ok.clone();
            (a.scenario, a.push_clients) = (scenario, Some(clients));
            (a.rate, a.duration) = (Some(100.0), Duration::from_secs(90));
            a.validate().map_err(|e| e.to_string())
        };
        assert!(pushes(ScenarioKind::List, 4)
            .unwrap_err()
            .contains("--push-clients"));
        assert!(pushes(ScenarioKind::Overload, 4).is_ok());
        assert!(pushes(ScenarioKind::Overload, 32)
            .unwrap_err()
            .contains("--push-clients"));
        let mut a = ok;
        a.concurrency = 0;
        assert!(a
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--concurrency"));
    }
}
