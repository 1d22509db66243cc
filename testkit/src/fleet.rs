//! A fleet of ephemeral instances that beat as 1.x clients do, and the "live never absent"
//! checker the fault tests run against it.
//!
//! The fleet registers `services × per_service` instances with short `preserved.*` timeouts
//! (so faults longer than the delete timeout fit in a test), then beats each one every
//! `beat_every` through the current target nodes, without a body (the light beat of the Java
//! client), moving on to the next node when one does not answer (as clients configured with a
//! server list do). A 20404 answer means the node forgot a live instance: the fleet counts it
//! as a loss and re-registers, as the client would. The checker lists every service on every
//! watched node and records each time a fleet instance is missing or unhealthy; an answer that
//! does not come (a frozen node) is unavailability, not a violation.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::http::{eventually, Api, Clients};

/// What the fleet looks like.
#[derive(Debug, Clone)]
pub struct FleetSpec {
    /// Service name prefix (`{prefix}-{n}`).
    pub prefix: String,
    /// Number of services.
    pub services: usize,
    /// Instances per service.
    pub per_service: usize,
    /// Beat period.
    pub beat_every: Duration,
    /// `preserved.heart.beat.timeout` (unhealthy after this much silence).
    pub beat_timeout: Duration,
    /// `preserved.ip.delete.timeout` (removed after this much silence).
    pub delete_timeout: Duration,
}

impl FleetSpec {
    /// The same fleet with other silence timeouts (unhealthy after `beat`, removed after
    /// `delete`).
    pub fn with_timeouts(mut self, beat: Duration, delete: Duration) -> Self {
        self.beat_timeout = beat;
        self.delete_timeout = delete;
        self
    }

    /// `services × per_service` instances beating every 500 ms, unhealthy after 3 s and
    /// removed after 6 s of silence.
    pub fn new(prefix: &str, services: usize, per_service: usize) -> Self {
        Self {
            prefix: prefix.to_string(),
            services,
            per_service,
            beat_every: Duration::from_millis(500),
            beat_timeout: Duration::from_secs(3),
            delete_timeout: Duration::from_secs(6),
        }
    }
}

/// One instance of the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Service name.
    pub service: String,
    /// Instance IP.
    pub ip: String,
    /// Instance port.
    pub port: u16,
}

/// Addresses a workload or checker talks to; tests swap them as nodes pause or die.
#[derive(Debug, Clone, Default)]
pub struct Targets(Arc<Mutex<Vec<SocketAddr>>>);

impl Targets {
    /// Starts with `addrs`.
    pub fn new(addrs: Vec<SocketAddr>) -> Self {
        Self(Arc::new(Mutex::new(addrs)))
    }

    /// Replaces the addresses.
    pub fn set(&self, addrs: Vec<SocketAddr>) {
        if let Ok(mut g) = self.0.lock() {
            *g = addrs;
        }
    }

    /// The current addresses.
    pub fn get(&self) -> Vec<SocketAddr> {
        self.0.lock().map(|g| g.clone()).unwrap_or_default()
    }
}

/// Counters of the fleet's beats.
#[derive(Debug, Default)]
pub struct BeatCounts {
    /// Beats answered 200.
    pub ok: AtomicU64,
    /// Beats answered 20404: a live instance the node had forgotten.
    pub lost: AtomicU64,
    /// Beat attempts that got no answer or an error (a frozen or dead node); the beat then
    /// moves on to the next node.
    pub failed: AtomicU64,
    /// Beats no node answered at all: what the client itself sees fail.
    pub unanswered: AtomicU64,
}

/// A registered fleet.
#[derive(Debug)]
pub struct Fleet {
    spec: FleetSpec,
    members: Vec<Member>,
    stop: Arc<AtomicBool>,
    /// Beat outcomes so far.
    pub beats: Arc<BeatCounts>,
    /// The first few 20404s (service ip, node, time since start) for the failure message.
    lost_log: Arc<Mutex<Vec<String>>>,
    started: Instant,
    /// Members that stopped beating ([`Fleet::silence_next`]), and when.
    silenced: Arc<Mutex<Vec<(usize, Instant)>>>,
}

fn register_query(spec: &FleetSpec, m: &Member) -> Vec<(String, String)> {
    let metadata = serde_json::json!({
        "preserved.heart.beat.interval": spec.beat_every.as_millis().to_string(),
        "preserved.heart.beat.timeout": spec.beat_timeout.as_millis().to_string(),
        "preserved.ip.delete.timeout": spec.delete_timeout.as_millis().to_string(),
    });
    vec![
        ("serviceName".into(), m.service.clone()),
        ("ip".into(), m.ip.clone()),
        ("port".into(), m.port.to_string()),
        ("metadata".into(), metadata.to_string()),
    ]
}

async fn register_one(api: &Api, spec: &FleetSpec, m: &Member) -> bool {
    let q = register_query(spec, m);
    let q: Vec<(&str, &str)> = q.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    api.instance("POST", &q).await.body == "ok"
}

impl Fleet {
    /// Registers every instance through `via` (round robin) and returns the fleet, not yet
    /// beating.
    pub async fn register(spec: FleetSpec, via: &[SocketAddr]) -> anyhow::Result<Fleet> {
        anyhow::ensure!(!via.is_empty(), "no node to register through");
        let apis: Vec<Api> = via.iter().map(|a| Api::new(*a)).collect();
        let mut members = Vec::new();
        for s in 0..spec.services {
            for i in 0..spec.per_service {
                members.push(Member {
                    service: format!("{}-{s}", spec.prefix),
                    ip: format!("10.{}.{}.{}", 100 + s / 250, s % 250, i + 1),
                    port: 8080,
                });
            }
        }
        for (n, m) in members.iter().enumerate() {
            let api = &apis[n % apis.len()];
            anyhow::ensure!(
                register_one(api, &spec, m).await,
                "registering {m:?} failed"
            );
        }
        Ok(Fleet {
            spec,
            members,
            stop: Arc::new(AtomicBool::new(false)),
            beats: Arc::new(BeatCounts::default()),
            lost_log: Arc::new(Mutex::new(Vec::new())),
            started: Instant::now(),
            silenced: Arc::new(Mutex::new(Vec::new())),
        })
    }

    /// Stops beating the first instance of the next service (a client that died), and returns
    /// it with the moment its beats stopped; `None` once every service has lost one. The
    /// other instances of its service keep beating: a service whose every instance is
    /// unhealthy is shown healthy under Nacos's protect threshold, so a death shows only in a
    /// service that still has a live instance.
    pub fn silence_next(&self) -> Option<(Member, Instant)> {
        let mut silenced = self.silenced.lock().ok()?;
        let n = silenced.len() * self.spec.per_service.max(1);
        let m = self.members.get(n)?.clone();
        let at = Instant::now();
        silenced.push((n, at));
        Some((m, at))
    }

    /// Every instance.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The service names.
    pub fn services(&self) -> Vec<String> {
        (0..self.spec.services)
            .map(|s| format!("{}-{s}", self.spec.prefix))
            .collect()
    }

    /// Starts beating every instance every `beat_every` through `targets` (each instance picks
    /// the next target on each beat), until [`Fleet::stop`].
    pub fn start_beating(&self, targets: Targets) -> tokio::task::JoinHandle<()> {
        let spec = self.spec.clone();
        let members = self.members.clone();
        let stop = self.stop.clone();
        let counts = self.beats.clone();
        let lost_log = self.lost_log.clone();
        let started = self.started;
        let silenced = self.silenced.clone();
        tokio::spawn(async move {
            let mut turn = 0usize;
            let mut tick = tokio::time::interval(spec.beat_every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut clients = Clients::new(spec.beat_every);
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let nodes = targets.get();
                if nodes.is_empty() {
                    continue;
                }
                let apis: Vec<Api> = nodes.iter().map(|n| clients.get(*n)).collect();
                // Members silenced so far beat no more.
                let quiet: Vec<usize> = silenced
                    .lock()
                    .map(|s| s.iter().map(|(n, _)| *n).collect())
                    .unwrap_or_default();
                let beats = members
                    .iter()
                    .enumerate()
                    .filter(|(n, _)| !quiet.contains(n))
                    .map(|(_, m)| {
                        turn = turn.wrapping_add(1);
                        let first = turn % nodes.len();
                        let (spec, counts, lost_log, nodes, apis) =
                            (&spec, &counts, &lost_log, &nodes, &apis);
                        async move {
                            let port = m.port.to_string();
                            // Fail over across the nodes, at most once around, within one period.
                            for k in 0..nodes.len() {
                                let at = (first + k) % nodes.len();
                                let (addr, api) = (nodes[at], &apis[at]);
                                let r = api
                                    .call(
                                        "PUT",
                                        "/nacos/v1/ns/instance/beat",
                                        &[
                                            ("serviceName", m.service.as_str()),
                                            ("ip", m.ip.as_str()),
                                            ("port", port.as_str()),
                                        ],
                                    )
                                    .await;
                                let code = serde_json::from_str::<serde_json::Value>(&r.body)
                                    .ok()
                                    .and_then(|j| j["code"].as_i64());
                                match (r.status, code) {
                                    (200, Some(20404)) => {
                                        counts.lost.fetch_add(1, Ordering::Relaxed);
                                        if let Ok(mut log) = lost_log.lock() {
                                            if log.len() < 20 {
                                                log.push(format!(
                                                    "{} {} at {addr} after {:.1}s",
                                                    m.service,
                                                    m.ip,
                                                    started.elapsed().as_secs_f64()
                                                ));
                                            }
                                        }
                                        register_one(api, spec, m).await;
                                        return;
                                    }
                                    (200, _) => {
                                        counts.ok.fetch_add(1, Ordering::Relaxed);
                                        return;
                                    }
                                    _ => {
                                        counts.failed.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                            }
                            counts.unanswered.fetch_add(1, Ordering::Relaxed);
                        }
                    });
                futures::future::join_all(beats).await;
            }
        })
    }

    /// Stops beating (the task ends after its current round).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// The first recorded 20404s, for failure messages.
    pub fn lost_examples(&self) -> Vec<String> {
        self.lost_log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

/// How a list answer shows one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shown {
    Healthy,
    Unhealthy,
    Missing,
}

/// How `hosts` (a list answer's) shows the instance at `ip`.
pub(crate) fn shown(hosts: &[serde_json::Value], ip: &str) -> Shown {
    match hosts.iter().find(|h| h["ip"] == ip) {
        None => Shown::Missing,
        Some(h) if h["healthy"] != true => Shown::Unhealthy,
        Some(_) => Shown::Healthy,
    }
}

/// One moment a live instance was not listed as live.
#[derive(Debug, Clone)]
pub struct Violation {
    /// Seconds since the checker started.
    pub at_s: f64,
    /// The node that answered.
    pub node: SocketAddr,
    /// The service.
    pub service: String,
    /// Fleet instances absent from the answer.
    pub missing: Vec<String>,
    /// Fleet instances listed unhealthy.
    pub unhealthy: Vec<String>,
}

/// The "live never absent" checker: lists every fleet service on every watched node, again
/// and again, until stopped.
#[derive(Debug)]
pub struct LiveChecker {
    stop: Arc<AtomicBool>,
    violations: Arc<Mutex<Vec<Violation>>>,
    /// Lists answered.
    pub reads: Arc<AtomicU64>,
    /// Lists that got no answer in time.
    pub unanswered: Arc<AtomicU64>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl LiveChecker {
    /// Starts checking `fleet` on `watched` every `every`.
    pub fn start(fleet: &Fleet, watched: Targets, every: Duration) -> LiveChecker {
        let stop = Arc::new(AtomicBool::new(false));
        let violations = Arc::new(Mutex::new(Vec::new()));
        let reads = Arc::new(AtomicU64::new(0));
        let unanswered = Arc::new(AtomicU64::new(0));
        let members = fleet.members().to_vec();
        let services = fleet.services();
        let started = Instant::now();
        let task = {
            let (stop, violations, reads, unanswered) = (
                stop.clone(),
                violations.clone(),
                reads.clone(),
                unanswered.clone(),
            );
            tokio::spawn(async move {
                let mut clients = Clients::new(Duration::from_secs(1));
                while !stop.load(Ordering::Relaxed) {
                    for node in watched.get() {
                        let api = clients.get(node);
                        for service in &services {
                            // Down or frozen (or an answer cut short): no use asking it
                            // about the other services in this pass.
                            let Some(hosts) = api.listed(service).await else {
                                unanswered.fetch_add(1, Ordering::Relaxed);
                                break;
                            };
                            reads.fetch_add(1, Ordering::Relaxed);
                            let mut v = Violation {
                                at_s: started.elapsed().as_secs_f64(),
                                node,
                                service: service.clone(),
                                missing: Vec::new(),
                                unhealthy: Vec::new(),
                            };
                            for m in members.iter().filter(|m| &m.service == service) {
                                match shown(&hosts, &m.ip) {
                                    Shown::Missing => v.missing.push(m.ip.clone()),
                                    Shown::Unhealthy => v.unhealthy.push(m.ip.clone()),
                                    Shown::Healthy => {}
                                }
                            }
                            if !v.missing.is_empty() || !v.unhealthy.is_empty() {
                                if let Ok(mut all) = violations.lock() {
                                    all.push(v);
                                }
                            }
                        }
                    }
                    tokio::time::sleep(every).await;
                }
            })
        };
        LiveChecker {
            stop,
            violations,
            reads,
            unanswered,
            task: Some(task),
        }
    }

    /// Stops checking and returns every violation seen.
    pub async fn finish(mut self) -> Vec<Violation> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        self.violations
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }
}

/// When a silenced instance was seen expired: the first moment every node that answered
/// listed it unhealthy (or no more), and the first moment every one listed it no more.
#[derive(Debug, Clone)]
pub struct Expired {
    /// The instance.
    pub member: Member,
    /// Seconds from its last beat to "unhealthy everywhere", if seen.
    pub unhealthy_after_s: Option<f64>,
    /// Seconds from its last beat to "gone everywhere", if seen.
    pub gone_after_s: Option<f64>,
}

/// The *expiry on time* checker: watches instances that stopped beating until every entry
/// point lists them unhealthy and then no more.
#[derive(Debug)]
pub struct ExpiryWatch {
    stop: Arc<AtomicBool>,
    watched: Arc<Mutex<Vec<(Member, Instant)>>>,
    seen: Arc<Mutex<Vec<Expired>>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ExpiryWatch {
    /// Starts watching, through `entry_points`, every instance later passed to
    /// [`ExpiryWatch::watch`].
    pub fn start(entry_points: Targets) -> ExpiryWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let watched: Arc<Mutex<Vec<(Member, Instant)>>> = Arc::new(Mutex::new(Vec::new()));
        let seen: Arc<Mutex<Vec<Expired>>> = Arc::new(Mutex::new(Vec::new()));
        let task = {
            let (stop, watched, seen) = (stop.clone(), watched.clone(), seen.clone());
            tokio::spawn(async move {
                let mut clients = Clients::new(Duration::from_secs(1));
                while !stop.load(Ordering::Relaxed) {
                    let pending: Vec<(usize, Member, Instant)> = {
                        let w = watched.lock().map(|w| w.clone()).unwrap_or_default();
                        let s = seen.lock().map(|s| s.clone()).unwrap_or_default();
                        w.into_iter()
                            .enumerate()
                            .filter(|(i, _)| s.get(*i).is_none_or(|e| e.gone_after_s.is_none()))
                            .map(|(i, (m, at))| (i, m, at))
                            .collect()
                    };
                    for (i, m, at) in pending {
                        let (mut answered, mut unhealthy, mut gone) = (0, 0, 0);
                        for node in entry_points.get() {
                            let api = clients.get(node);
                            let Some(hosts) = api.listed(&m.service).await else {
                                continue;
                            };
                            answered += 1;
                            match shown(&hosts, &m.ip) {
                                Shown::Missing => gone += 1,
                                Shown::Unhealthy => unhealthy += 1,
                                Shown::Healthy => {}
                            }
                        }
                        let now = at.elapsed().as_secs_f64();
                        if let Ok(mut s) = seen.lock() {
                            while s.len() <= i {
                                s.push(Expired {
                                    member: m.clone(),
                                    unhealthy_after_s: None,
                                    gone_after_s: None,
                                });
                            }
                            let e = &mut s[i];
                            e.member = m.clone();
                            if answered > 0 && unhealthy + gone == answered {
                                e.unhealthy_after_s.get_or_insert(now);
                            }
                            if answered > 0 && gone == answered {
                                e.gone_after_s.get_or_insert(now);
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        };
        ExpiryWatch {
            stop,
            watched,
            seen,
            task: Some(task),
        }
    }

    /// Watches `member`, silent since `since`.
    pub fn watch(&self, member: Member, since: Instant) {
        if let Ok(mut w) = self.watched.lock() {
            w.push((member, since));
        }
    }

    /// What was seen of the instance watched `n`-th, so far.
    pub fn get(&self, n: usize) -> Option<Expired> {
        self.seen.lock().ok()?.get(n).cloned()
    }

    /// Waits (at most `limit`) until every watched instance is gone everywhere, stops, and
    /// returns what was seen, in the order they were watched.
    pub async fn finish(mut self, limit: Duration) -> Vec<Expired> {
        let deadline = Instant::now() + limit;
        loop {
            let watched = self.watched.lock().map(|w| w.len()).unwrap_or(0);
            let done = self
                .seen
                .lock()
                .map(|s| s.len() == watched && s.iter().all(|e| e.gone_after_s.is_some()))
                .unwrap_or(false);
            if done || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        let mut seen = self.seen.lock().map(|s| s.clone()).unwrap_or_default();
        // Watched but never answered for: still report it, as never seen expired.
        let watched = self.watched.lock().map(|w| w.clone()).unwrap_or_default();
        for (m, _) in watched.into_iter().skip(seen.len()) {
            seen.push(Expired {
                member: m,
                unhealthy_after_s: None,
                gone_after_s: None,
            });
        }
        seen
    }
}

/// Each node's ephemeral (services, fingerprint); `None` for a node that does not answer.
pub async fn fingerprints(nodes: &[SocketAddr]) -> Vec<Option<(u64, String)>> {
    let mut clients = Clients::new(Duration::from_secs(1));
    let mut out = Vec::with_capacity(nodes.len());
    for n in nodes {
        out.push(clients.get(*n).ephemeral_fingerprint().await);
    }
    out
}

/// Waits (at most `within`) until every node answers with the same ephemeral fingerprint
/// (and, given `services`, that many services); how long it took, `None` if not in time.
pub async fn converged(
    nodes: &[SocketAddr],
    services: Option<u64>,
    within: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    eventually(
        within,
        "every node's ephemeral fingerprint equal",
        || async {
            let all: Vec<(u64, String)> = fingerprints(nodes)
                .await
                .into_iter()
                .collect::<Option<_>>()?;
            let same = all.windows(2).all(|w| w[0] == w[1]);
            let count = services.is_none_or(|n| all.first().is_some_and(|f| f.0 == n));
            (same && count).then_some(())
        },
    )
    .await
    .ok()
    .map(|()| started.elapsed())
}
