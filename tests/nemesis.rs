//! The nemesis: seeded fault schedules against a 3-node cluster under load, with checkers
//! around every fault, and a report.
//!
//! One command runs it (`scripts/nemesis.sh`; CI runs the short schedule below through the test
//! suite): a gateway stands in front of the nodes; a fleet of ephemeral instances beats through
//! the gateway and every node with fail-over, a ledger writes persistent instances the same
//! way, and the checkers watch throughout:
//! - *live never absent*: no fleet instance is missing or unhealthy in any list the gateway
//!   or a node answers (the gateway's cached answers included);
//! - *no instance forgotten*: no beat answered 20404;
//! - *convergence*: after each heal, every node's ephemeral fingerprint is equal within two
//!   verify rounds (plus failure detection), timed;
//! - *expiry on time*: an instance that stops beating before the first fault is unhealthy
//!   everywhere at its beat timeout and gone everywhere at its delete timeout (± 2 s); one that
//!   stops as a fault begins is gone everywhere eventually, and how late is reported;
//! - *no empty push*: a UDP subscriber (one socket, as a 1.x client has) subscribed at every
//!   entry point gets every change of every fleet service pushed (a marker instance churns to
//!   make changes); no push may leave out a live instance or show it unhealthy, let alone be
//!   empty (`nacre_testkit::subscriber`);
//! - *persistent writes* against the ledger's model (`nacre_testkit::ledger`): no acknowledged
//!   write lost, none half-visible, and per node no read going back in time, no phantom and
//!   none out of log order (read per node: through the gateway a read may reach a node cut off
//!   a moment before).
//!
//! Knobs (environment): `NACRE_NEMESIS_SEED` (default 1), `NACRE_NEMESIS_SECS` (extra random
//! faults after one of every kind; default 0), `NACRE_NEMESIS_OUT` (report directory; default
//! a temporary one). The report (`report.json`, `report.md`) holds the schedule, the operations,
//! violations per checker and per fault, and recovery and convergence times; on failure the
//! nodes' data dirs and logs are copied next to it, so the run can be examined and replayed
//! with the same seed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nacre_testkit::addr_server::AddressServer;
use nacre_testkit::cluster::{write_cluster_conf, ClusterOptions, TestCluster};
use nacre_testkit::fleet::{self, ExpiryWatch, Fleet, FleetSpec, LiveChecker, Targets};
use nacre_testkit::gateway::GatewayProcess;
use nacre_testkit::http::Api;
use nacre_testkit::ledger::Ledger;
use nacre_testkit::nemesis::{self, FaultKind, Step, Target};
use nacre_testkit::subscriber::PushChecker;

/// The verify interval of `ClusterOptions::fast`.
const VERIFY: Duration = Duration::from_secs(1);
/// Convergence bound after a heal: two verify rounds, plus failure detection and hand-back.
const CONVERGE: Duration = Duration::from_secs(4);
/// Quiet time before the first fault: the checkers' control run (long enough for the
/// instance silenced at its start to be gone: the 8 s delete timeout and some).
const CONTROL: Duration = Duration::from_secs(11);
/// The fleet's silence timeouts (unhealthy, removed).
const BEAT_TIMEOUT: Duration = Duration::from_secs(4);
const DELETE_TIMEOUT: Duration = Duration::from_secs(8);
/// How far from its timeout an expiry may land without a fault (sweep every 200 ms, a 200 ms
/// watch, a beat period of 500 ms before the silence).
const ON_TIME: f64 = 2.0;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// The index of the node `GET /nacre/v1/cluster` names as Raft leader.
async fn leader(c: &TestCluster) -> Option<usize> {
    for i in 0..c.len() {
        let r = Api::new(c.node(i).addr())
            .with_timeout(Duration::from_secs(1))
            .call("GET", "/nacre/v1/cluster", &[])
            .await;
        if r.status != 200 {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
        if let Some(l) = v["leader"].as_str() {
            return (0..c.len()).find(|&j| c.advertised(j) == l);
        }
    }
    None
}

/// The index of the Distro owner of `service`.
async fn owner(c: &TestCluster, service: &str) -> Option<usize> {
    for i in 0..c.len() {
        let r = Api::new(c.node(i).addr())
            .with_timeout(Duration::from_secs(1))
            .call(
                "GET",
                "/nacos/v1/ns/operator/distro/server",
                &[("serviceName", service)],
            )
            .await;
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
        if let Some(o) = v["responsibleServer"].as_str() {
            return (0..c.len()).find(|&j| c.advertised(j) == o);
        }
    }
    None
}

/// What happened around one fault.
#[derive(Debug, Default, serde::Serialize)]
struct StepReport {
    kind: &'static str,
    target: usize,
    hold_ms: u128,
    start_s: f64,
    /// Kills: time from the restart to ready.
    recovery_ms: Option<u128>,
    /// Time from the heal (or ready) until every node's fingerprint was equal.
    convergence_ms: Option<u128>,
    /// Raft leader kills: time from the kill to the first persistent write acknowledged.
    failover_ms: Option<u128>,
    /// Raft snapshots the target installed from the leader during the step.
    snapshots_installed: Option<u64>,
    live_violations: usize,
    /// Pushes that left out a live instance or showed it unhealthy.
    push_violations: usize,
    forgotten: u64,
    /// The instance that stopped beating as this fault began: seconds from its last beat to
    /// unhealthy everywhere, and to gone everywhere.
    expiry_unhealthy_s: Option<f64>,
    expiry_gone_s: Option<f64>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nemesis_schedule_keeps_every_promise() -> Result<()> {
    let seed = env_u64("NACRE_NEMESIS_SEED", 1);
    let extra = Duration::from_secs(env_u64("NACRE_NEMESIS_SECS", 0));
    let out: PathBuf = std::env::var_os("NACRE_NEMESIS_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join(format!("nacre-nemesis-{seed}")));
    std::fs::create_dir_all(&out)?;
    let steps = nemesis::schedule(seed, 3, true, extra);

    let root = tempfile::Builder::new()
        .prefix("nacre-nemesis-")
        .tempdir()?;
    let bin = Path::new(env!("CARGO_BIN_EXE_nacre"));
    // Snapshots every 20 entries, 5 kept behind: the ledger's 4 writes a second leave a node
    // that misses a few seconds behind the leader's log, so it is sent a snapshot.
    // A members file, so that members can be removed and added (`FaultKind::Replace`).
    let opts = ClusterOptions::new(3)
        .fast()
        .with_members_file()
        .with_env("NACRE_RAFT_SNAPSHOT_LOGS", "20")
        .with_env("NACRE_RAFT_LOGS_KEPT", "5");
    let mut c = TestCluster::start(bin, root.path(), opts)?;
    c.wait_ready(Duration::from_secs(60))?;
    c.wait_rings_complete(Duration::from_secs(60))?;
    let nodes: Vec<SocketAddr> = (0..3).map(|i| c.node(i).addr()).collect();
    // The gateway finds the nodes through an address server, which the runner keeps current
    // as members are replaced.
    let upstreams_file = root.path().join("gateway-upstreams.conf");
    write_cluster_conf(&upstreams_file, &addrs(&nodes))?;
    let upstreams_server = AddressServer::start(&upstreams_file)?;
    let mut gateway = GatewayProcess::start(
        bin,
        &root.path().join("gateway"),
        nacre_testkit::free_loopback_addr()?,
        c.secret(),
        &["--upstreams-endpoint".to_string(), upstreams_server.url()],
    )?;
    gateway.wait_ready(3, Duration::from_secs(60))?;
    // Clients use the gateway and the nodes alike; the checkers read from all of them.
    let entry = Entry {
        gateway: gateway.addr(),
        nodes: Targets::new(nodes.clone()),
        all: Targets::new(Vec::new()),
        upstreams_file,
    };
    entry.refresh(&c)?;
    let all = entry.all.clone();

    // Silence timeouts well below production's (15 s / 30 s) so that faults outlast them, yet
    // above the stalls a debug build on two cores shows while Raft re-elects under this load.
    let spec = FleetSpec::new("nem", 20, 2).with_timeouts(BEAT_TIMEOUT, DELETE_TIMEOUT);
    let fleet = Fleet::register(spec, &nodes).await?;
    // Instances that die, one as the control run starts and one as each fault begins: the
    // *expiry on time* checker follows them.
    let dying_spec =
        FleetSpec::new("die", steps.len() + 1, 2).with_timeouts(BEAT_TIMEOUT, DELETE_TIMEOUT);
    let dying = Fleet::register(dying_spec, &nodes).await?;
    let dying_beats = dying.start_beating(all.clone());
    let expiry = ExpiryWatch::start(all.clone());
    let hot = fleet.services()[0].clone();
    let origin = Instant::now();
    let beating = fleet.start_beating(all.clone());
    let checker = LiveChecker::start(&fleet, all.clone(), Duration::from_millis(250));
    let pushes = PushChecker::start(&fleet, all.clone(), all.clone()).await?;
    let push_counts = pushes.counts.clone();
    // Reads going back in time are checked per node: the gateway routes a read to whichever
    // node owns the service at the moment, and a node cut off a moment ago may be behind.
    let mut ledger = Ledger::start(
        "nemesis-ledger",
        all.clone(),
        entry.nodes.clone(),
        Duration::from_millis(250),
    );

    let die = |dying: &Fleet, expiry: &ExpiryWatch| {
        if let Some((m, at)) = dying.silence_next() {
            expiry.watch(m, at);
        }
    };
    die(&dying, &expiry);
    tokio::time::sleep(CONTROL).await;
    let mut reports = Vec::new();
    for step in &steps {
        die(&dying, &expiry);
        reports.push(run_step(&mut c, step, &entry, &hot, &fleet, &ledger, origin).await?);
    }

    // The live checkers stop before the fleet does: once it stops beating, its instances
    // expire as they should.
    let (reads, unanswered) = (checker.reads.clone(), checker.unanswered.clone());
    let violations = checker.finish().await;
    let push_violations = pushes.finish().await;
    let pushes_received = push_counts.received.load(Ordering::Relaxed);
    let empty_pushes = push_violations.iter().filter(|v| v.empty).count();
    fleet.stop();
    let _ = beating.await;
    dying.stop();
    let _ = dying_beats.await;
    // Every silenced instance must be gone everywhere eventually (2 delete timeouts and
    // some after the last one stopped beating).
    let expired = expiry
        .finish(2 * DELETE_TIMEOUT + Duration::from_secs(10))
        .await;
    for (r, e) in reports.iter_mut().zip(expired.iter().skip(1)) {
        r.expiry_unhealthy_s = e.unhealthy_after_s;
        r.expiry_gone_s = e.gone_after_s;
    }
    let never_expired: Vec<String> = expired
        .iter()
        .filter(|e| e.gone_after_s.is_none())
        .map(|e| format!("{} {}", e.member.service, e.member.ip))
        .collect();
    let on_time = |got: Option<f64>, want: Duration| {
        got.is_some_and(|g| (g - want.as_secs_f64()).abs() <= ON_TIME)
    };
    let control_expiry = expired.first();
    let control_late = !control_expiry.is_some_and(|e| {
        on_time(e.unhealthy_after_s, BEAT_TIMEOUT) && on_time(e.gone_after_s, DELETE_TIMEOUT)
    });
    ledger.stop().await;
    // Members may have been replaced: the final checks read the current ones.
    let nodes = entry.nodes.get();
    let final_convergence = fleet::converged(&nodes, None, Duration::from_secs(15)).await;
    let mut ledger_missing = Vec::new();
    for n in &nodes {
        ledger_missing.push(ledger.missing_on(*n).await.unwrap_or_default());
    }
    let writes = ledger.writes();
    let regressions = ledger.regressions();
    let anomalies = ledger.anomalies();
    let half_visible = ledger.half_visible(&nodes).await;

    // Attribute live violations to the control run or to the fault whose window they fell
    // in (from its start to the next one's).
    let control_violations = violations
        .iter()
        .filter(|v| v.at_s < CONTROL.as_secs_f64())
        .count();
    let starts: Vec<f64> = reports.iter().map(|r| r.start_s).collect();
    for (k, r) in reports.iter_mut().enumerate() {
        let end = starts.get(k + 1).copied().unwrap_or(f64::INFINITY);
        r.live_violations = violations
            .iter()
            .filter(|v| v.at_s >= r.start_s && v.at_s < end)
            .count();
        r.push_violations = push_violations
            .iter()
            .filter(|v| v.seen.at_s >= r.start_s && v.seen.at_s < end)
            .count();
    }
    let forgotten = fleet.beats.lost.load(Ordering::Relaxed);
    let slow: Vec<&StepReport> = reports
        .iter()
        .filter(|r| r.convergence_ms.is_none_or(|ms| ms > CONVERGE.as_millis()))
        .collect();
    let lost_writes: usize = ledger_missing.iter().map(Vec::len).sum();
    let report = serde_json::json!({
        "seed": seed,
        "steps": reports,
        "ops": {
            "beats_ok": fleet.beats.ok.load(Ordering::Relaxed),
            "beat_attempts_failed": fleet.beats.failed.load(Ordering::Relaxed),
            "list_reads": reads.load(Ordering::Relaxed),
            "list_reads_unanswered": unanswered.load(Ordering::Relaxed),
            "persistent_writes": writes.len(),
            "persistent_acked": writes.iter().filter(|w| w.acked).count(),
            "persistent_unknown": writes.iter().filter(|w| !w.acked).count(),
            "pushes_checked": pushes_received,
            "push_subscriptions_renewed": push_counts.subscribed.load(Ordering::Relaxed),
            "push_marker_changes": push_counts.churned.load(Ordering::Relaxed),
            "push_packets_ignored": push_counts.ignored.load(Ordering::Relaxed),
        },
        "violations": {
            "live_never_absent": violations.len(),
            "live_never_absent_in_control": control_violations,
            "forgotten_20404": forgotten,
            "push_live_absent": push_violations.len(),
            "push_empty": empty_pushes,
            "push_violations_in_control": push_violations
                .iter()
                .filter(|v| v.seen.at_s < CONTROL.as_secs_f64())
                .count(),
            "no_push_received": u8::from(pushes_received == 0),
            "convergence_over_bound": slow.len(),
            "acked_persistent_writes_lost": lost_writes,
            "reads_back_in_time": regressions.len(),
            "reads_phantom_or_out_of_log_order": anomalies.len(),
            "writes_half_visible": half_visible.as_ref().map_or(-1, |h| h.len() as i64),
            "expiry_late_in_control": u8::from(control_late),
            "never_expired": never_expired.len(),
        },
        "control_expiry_s": control_expiry.map(|e| (e.unhealthy_after_s, e.gone_after_s)),
        "never_expired": never_expired,
        "final_convergence_ms": final_convergence.map(|d| d.as_millis()),
        "first_violations": violations.iter().take(10).map(|v| format!("{v:?}")).collect::<Vec<_>>(),
        "first_forgotten": fleet.lost_examples(),
        "first_push_violations": push_violations.iter().take(10).map(|v| format!("{v:?}")).collect::<Vec<_>>(),
        "missing_writes": ledger_missing,
        "regressions": regressions.iter().take(10).map(|r| format!("{r:?}")).collect::<Vec<_>>(),
        "anomalies": anomalies.iter().take(10).map(|a| format!("{a:?}")).collect::<Vec<_>>(),
        "half_visible": half_visible,
    });
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    let md = markdown(seed, &reports, &report);
    std::fs::write(out.join("report.md"), &md)?;
    println!("{md}\nreport in {}", out.display());

    let failed = !violations.is_empty()
        || !push_violations.is_empty()
        || pushes_received == 0
        || forgotten > 0
        || !slow.is_empty()
        || lost_writes > 0
        || !regressions.is_empty()
        || !anomalies.is_empty()
        || half_visible.as_ref().is_none_or(|h| !h.is_empty())
        || final_convergence.is_none()
        || control_late
        || !never_expired.is_empty();
    if failed {
        copy_dir(root.path(), &out.join("cluster")).context("keeping the data dirs and logs")?;
        anyhow::bail!(
            "nemesis seed {seed}: promises broken (see {}):\n{}",
            out.display(),
            serde_json::to_string_pretty(&report["violations"])?
        );
    }
    Ok(())
}

/// Where clients and checkers go: the gateway and the current members (real addresses), and
/// the gateway's upstream list, kept in step as members are replaced.
struct Entry {
    gateway: SocketAddr,
    /// The current members.
    nodes: Targets,
    /// The gateway, then the current members.
    all: Targets,
    upstreams_file: PathBuf,
}

impl Entry {
    /// Points everything at `c`'s current members.
    fn refresh(&self, c: &TestCluster) -> Result<()> {
        let nodes: Vec<SocketAddr> = c
            .member_indices()
            .iter()
            .map(|&i| c.node(i).addr())
            .collect();
        write_cluster_conf(&self.upstreams_file, &addrs(&nodes))?;
        let mut all = vec![self.gateway];
        all.extend(&nodes);
        self.nodes.set(nodes);
        self.all.set(all);
        Ok(())
    }
}

fn addrs(nodes: &[SocketAddr]) -> Vec<String> {
    nodes.iter().map(ToString::to_string).collect()
}

/// Runs one step: resolve the target, break, hold, heal, wait for recovery and convergence.
async fn run_step(
    c: &mut TestCluster,
    step: &Step,
    entry: &Entry,
    hot: &str,
    fleet: &Fleet,
    ledger: &Ledger,
    origin: Instant,
) -> Result<StepReport> {
    let target = match step.target {
        Target::Node(k) => nemesis::member_at(c, k),
        Target::Leader => leader(c).await.unwrap_or_else(|| nemesis::member_at(c, 0)),
        Target::Owner => owner(c, hot)
            .await
            .unwrap_or_else(|| nemesis::member_at(c, 0)),
    };
    let lost_before = fleet.beats.lost.load(Ordering::Relaxed);
    let installed_before = snapshots_installed(c.node(target).addr()).await;
    let start = origin.elapsed();
    nemesis::apply(c, step.kind, target)?;
    if step.kind == FaultKind::Replace {
        entry.refresh(c)?;
    }
    tokio::time::sleep(step.hold).await;
    let joined = nemesis::heal(c, step.kind, target)?;
    let mut r = StepReport {
        kind: step.kind.name(),
        target,
        hold_ms: step.hold.as_millis(),
        start_s: start.as_secs_f64(),
        ..StepReport::default()
    };
    let healed = Instant::now();
    // The node that comes back: the target after a restart, the newcomer after a replace.
    let restarted = match joined {
        Some(j) => Some(j),
        None if matches!(
            step.kind,
            FaultKind::Kill | FaultKind::KillLeader | FaultKind::Wipe
        ) =>
        {
            Some(target)
        }
        None => None,
    };
    if let Some(n) = restarted {
        c.node_mut(n).wait_ready(Duration::from_secs(60))?;
        r.recovery_ms = Some(healed.elapsed().as_millis());
        entry.refresh(c)?;
    }
    let back = Instant::now();
    r.convergence_ms = fleet::converged(&entry.nodes.get(), None, Duration::from_secs(15))
        .await
        .map(|_| back.elapsed().as_millis());
    if step.kind == FaultKind::KillLeader {
        let from = start.as_secs_f64();
        r.failover_ms = ledger
            .writes()
            .iter()
            .filter(|w| w.acked && w.call_s >= from)
            .map(|w| ((w.return_s - from) * 1000.0) as u128)
            .min();
    }
    // Let the effects of the heal play out before the next fault.
    tokio::time::sleep(2 * VERIFY).await;
    let back_node = c.node(restarted.unwrap_or(target)).addr();
    r.snapshots_installed = match (installed_before, snapshots_installed(back_node).await) {
        // A restarted or new node counts from its start.
        (_, Some(after)) if restarted.is_some() => Some(after),
        (Some(before), Some(after)) => Some(after.saturating_sub(before)),
        _ => None,
    };
    r.forgotten = fleet.beats.lost.load(Ordering::Relaxed) - lost_before;
    Ok(r)
}

/// Snapshots `node` has installed since it started, from `GET /nacre/v1/cluster`.
async fn snapshots_installed(node: SocketAddr) -> Option<u64> {
    let r = Api::new(node).call("GET", "/nacre/v1/cluster", &[]).await;
    let v: serde_json::Value = serde_json::from_str(&r.body).ok()?;
    v["snapshots"]["installed"].as_u64()
}

fn markdown(seed: u64, steps: &[StepReport], report: &serde_json::Value) -> String {
    let mut s = format!("# nemesis run, seed {seed}\n\n| fault | target | hold | recovery | convergence | raft failover | snapshots installed | live violations | push violations | forgotten | dying instance unhealthy / gone after |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
    let ms = |v: Option<u128>| v.map_or("—".to_string(), |m| format!("{m} ms"));
    let secs = |v: Option<f64>| v.map_or("never".to_string(), |s| format!("{s:.1} s"));
    for r in steps {
        s += &format!(
            "| {} | node {} | {} ms | {} | {} | {} | {} | {} | {} | {} | {} / {} |\n",
            r.kind,
            r.target,
            r.hold_ms,
            ms(r.recovery_ms),
            ms(r.convergence_ms),
            ms(r.failover_ms),
            r.snapshots_installed
                .map_or("—".to_string(), |n| n.to_string()),
            r.live_violations,
            r.push_violations,
            r.forgotten,
            secs(r.expiry_unhealthy_s),
            secs(r.expiry_gone_s)
        );
    }
    s += &format!(
        "\nops: {}\n\nviolations: {}\n",
        report["ops"], report["violations"]
    );
    s
}

/// Copies `from` into `to` (data dirs and logs of a failed run).
fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let dest = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &dest)?;
        } else {
            std::fs::copy(e.path(), dest)?;
        }
    }
    Ok(())
}
