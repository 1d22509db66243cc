//! `nacre-loadtest`: a load generator for Nacos 1.x compatible registries, run as
//! `nacre loadtest --target HOST:PORT --scenario …`.
//!
//! A run resolves its target(s), builds the scenario's workload, and for each round runs the
//! setup (closed-loop registration, not measured) and the measured phase. With `--compare`
//! the two targets alternate (A B, B A, …) so drift on a shared machine hits both. The load
//! generator runs on its own runtime (`--threads`, default one thread) so its CPU cost per
//! request can be reported beside the server's.

pub mod chart;
pub mod cli;
pub mod client;
pub mod engine;
pub mod error;
pub mod listen;
pub mod nacos;
pub mod procstat;
pub mod push;
pub mod rate;
pub mod report;
pub mod scenario;
pub mod stats;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

pub use cli::LoadtestArgs;
pub use error::LoadtestError;
pub use report::{CompareReport, Report};
pub use scenario::ScenarioKind;

use crate::engine::{run_phase, PhaseSpec, Target};
use crate::nacos::{Names, PushAddr};
use crate::push::PushTracker;
use crate::rate::StreamSpec;
use crate::report::{Measured, MemoryReport, RoundRow, RunConfig};
use crate::scenario::{Shape, Workload};
use crate::stats::Stats;

/// What a run produced.
#[derive(Debug, Clone)]
pub enum Outcome {
    Single(Box<Report>),
    Compare(Box<CompareReport>),
}

/// Runs the load test described by `args` on a dedicated load-generator thread and runtime,
/// prints the table to stdout and writes the requested files.
pub async fn run(args: LoadtestArgs) -> Result<Outcome, LoadtestError> {
    args.validate()?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let threads = args.threads;
    let thread = std::thread::Builder::new()
        .name("loadtest".into())
        .spawn(move || {
            let rt = if threads == 1 {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
            } else {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(threads)
                    .enable_all()
                    .build()
            };
            let result = match rt {
                Ok(rt) => rt.block_on(execute(args)),
                Err(e) => Err(LoadtestError::Runtime(e.to_string())),
            };
            let _ = tx.send(result);
        })
        .map_err(|e| LoadtestError::Runtime(e.to_string()))?;
    let result = rx.await.map_err(|_| {
        LoadtestError::Runtime("the load generator thread stopped without a result".into())
    })?;
    // The thread has sent its result and is ending; join it off the async workers.
    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    result
}

/// Per-target state across rounds.
struct TargetRun {
    target: Target,
    push: Option<PushSide>,
    stats: Stats,
    measured_s: f64,
    server_cpu_s: f64,
    server_peak: u64,
    harness_cpu_s: f64,
    harness_peak: u64,
    memory: Option<MemoryReport>,
    lateness: engine::Lateness,
}

/// The UDP listener of one target, owned by the run.
struct PushSide {
    addr: PushAddr,
    tracker: Arc<PushTracker>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// Runs the load test on the current runtime and returns the report (also printed and
/// written, as `run` does).
pub async fn execute(args: LoadtestArgs) -> Result<Outcome, LoadtestError> {
    args.validate()?;
    let kind = args.scenario;
    let mut runs = vec![
        new_run(
            &args,
            &args.target,
            args.target_pid,
            &args.also_pids,
            args.auth.as_deref(),
        )
        .await?,
    ];
    if let Some(c) = &args.compare {
        runs.push(
            new_run(
                &args,
                c,
                args.compare_pid,
                &[],
                args.compare_auth.as_deref(),
            )
            .await?,
        );
    }
    let rounds = args
        .rounds
        .unwrap_or(if args.compare.is_some() { 3 } else { 1 });
    let names = Arc::new(
        Names::new(
            args.seed,
            &args.namespace,
            args.services,
            args.metadata_bytes,
            !args.persistent,
        )
        .with_config_bytes(args.config_bytes)
        .with_full_beats(args.full_beats)
        .with_kept_alive(args.keep_alive || kind == ScenarioKind::Memory),
    );
    // Scenarios that consume a finite set of instances would spend it warming up.
    // config-listen's listeners time every publish, so there is nothing to warm up.
    let warmup = if matches!(
        kind,
        ScenarioKind::Memory | ScenarioKind::Deregister | ScenarioKind::ConfigListen
    ) {
        Duration::ZERO
    } else {
        args.warmup
    };
    let mut round_rows = Vec::new();
    for round in 0..rounds {
        let order: Vec<usize> = if round % 2 == 0 {
            (0..runs.len()).collect()
        } else {
            (0..runs.len()).rev().collect()
        };
        for i in order {
            let run = &mut runs[i];
            let shape = Shape {
                services: args.services,
                instances: args.instances_per_service,
                dependencies: args.dependencies,
                rate: args.rate,
                push: run.push.as_ref().map(|p| p.addr),
                distinct_clients: args.distinct_clients,
                backoff: args.rate.map(|r| {
                    (
                        warmup + args.overload_for,
                        args.backoff_rate.unwrap_or(r / 4.0),
                    )
                }),
            };
            let workload = scenario::build(kind, names.clone(), &shape)?;
            let row = run_round(&args, run, workload, &names, warmup, round + 1).await?;
            round_rows.push(row);
        }
    }

    let mut reports = Vec::new();
    for run in runs {
        let push = match run.push {
            Some(p) => {
                p.stop.cancel();
                let _ = p.task.await;
                Some(p.tracker.snapshot())
            }
            None => None,
        };
        let config = RunConfig {
            target: run.target.name.clone(),
            seed: args.seed,
            concurrency: args.concurrency,
            rate_rps: args.rate,
            duration_s: args.duration.as_secs_f64(),
            warmup_s: warmup.as_secs_f64(),
            rounds,
            services: args.services,
            instances_per_service: args.instances_per_service,
            metadata_bytes: args.metadata_bytes,
            full_beats: args.full_beats,
            namespace: args.namespace.clone(),
            threads: args.threads,
            overload_for_s: (kind == scenario::ScenarioKind::Overload)
                .then_some(args.overload_for.as_secs_f64()),
            backoff_rate_rps: (kind == scenario::ScenarioKind::Overload)
                .then(|| args.backoff_rate.or(args.rate.map(|r| r / 4.0)))
                .flatten(),
            push_clients: args.push_clients,
        };
        let report = Report::build(
            kind.name(),
            Measured {
                stats: &run.stats,
                measured_s: run.measured_s,
                server: run
                    .target
                    .pid
                    .map(|pid| (Some(pid), run.server_cpu_s, run.server_peak)),
                harness_cpu_s: run.harness_cpu_s,
                harness_peak_rss: run.harness_peak,
                lateness: run.lateness,
                push,
                memory: run.memory.clone(),
            },
            config,
        )?;
        reports.push((report, run.stats));
    }

    let outcome = if reports.len() == 2 {
        let (b, _) = reports.remove(1);
        let (a, _) = reports.remove(0);
        Outcome::Compare(Box::new(CompareReport::new(a, b, round_rows)))
    } else {
        match reports.pop() {
            Some((r, stats)) => {
                if let Some(path) = &args.svg {
                    let mut series = Vec::new();
                    for (op, s) in &stats.ops {
                        series.push((op.to_string(), report::curve(&s.latency)));
                    }
                    write_file(
                        path,
                        &chart::latency_svg(
                            &format!("{} against {}", r.scenario, r.config.target),
                            &series,
                        ),
                    )?;
                }
                Outcome::Single(Box::new(r))
            }
            None => return Err(LoadtestError::Runtime("no target ran".into())),
        }
    };
    match &outcome {
        Outcome::Single(r) => {
            print!("{}", report::render(r));
            if let Some(path) = &args.json {
                write_file(path, &serde_json::to_string_pretty(r)?)?;
            }
        }
        Outcome::Compare(c) => {
            print!("{}", report::render_compare(c));
            if let Some(path) = &args.json {
                write_file(path, &serde_json::to_string_pretty(c)?)?;
            }
            if let Some(path) = &args.svg {
                let series = vec![
                    (
                        format!("A {}", c.a.config.target),
                        c.a.latency_curve.clone(),
                    ),
                    (
                        format!("B {}", c.b.config.target),
                        c.b.latency_curve.clone(),
                    ),
                ];
                write_file(
                    path,
                    &chart::latency_svg(&format!("{}: A vs B", c.scenario), &series),
                )?;
            }
        }
    }
    Ok(outcome)
}

fn write_file(path: &std::path::Path, text: &str) -> Result<(), LoadtestError> {
    std::fs::write(path, text).map_err(|source| LoadtestError::Output {
        path: path.to_path_buf(),
        source,
    })
}

async fn new_run(
    args: &LoadtestArgs,
    name: &str,
    pid: Option<u32>,
    also_pids: &[u32],
    auth: Option<&str>,
) -> Result<TargetRun, LoadtestError> {
    let also_pids = also_pids.to_vec();
    let name = name
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let addr = tokio::net::lookup_host(name.as_str())
        .await
        .map_err(|e| LoadtestError::Resolve {
            target: name.clone(),
            reason: e.to_string(),
        })?
        .next()
        .ok_or_else(|| LoadtestError::Resolve {
            target: name.clone(),
            reason: "no address".into(),
        })?;
    if let Some(pid) = pid {
        // Fail before any traffic if a PID cannot be read.
        procstat::sample_with(pid, &also_pids).await?;
    }
    let push = if args.scenario.uses_push() || args.push_clients.is_some() {
        Some(start_push(addr, args.push_clients.unwrap_or(1)).await?)
    } else {
        None
    };
    let mut target = Target {
        name,
        addr,
        user_agent: args.user_agent.clone(),
        timeout: args.timeout,
        pid,
        also_pids,
        access: None,
    };
    if let Some((user, password)) = auth.and_then(cli::credentials) {
        target.access = Some(login(&target, user, password).await?);
    }
    Ok(TargetRun {
        target,
        push,
        stats: Stats::new()?,
        measured_s: 0.0,
        server_cpu_s: 0.0,
        server_peak: 0,
        harness_cpu_s: 0.0,
        harness_peak: 0,
        memory: None,
        lateness: engine::Lateness::default(),
    })
}

/// Logs in to `target` once and returns the `accessToken=…` query pair its requests carry.
/// Tokens live for hours (Nacos's default is 5 h); a run is minutes.
async fn login(target: &Target, user: &str, password: &str) -> Result<String, LoadtestError> {
    let failed = |detail: String| LoadtestError::Setup {
        target: target.name.clone(),
        detail: format!("login as {user}: {detail}"),
    };
    let mut conn = target
        .connect(target.timeout)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let req = client::Request {
        method: client::Method::Post,
        target: format!(
            "/nacos/v1/auth/login?username={}&password={}",
            nacos::encode(user),
            nacos::encode(password)
        ),
    };
    let resp = tokio::time::timeout(target.timeout, conn.send(&req))
        .await
        .map_err(|_| failed("timed out".into()))?
        .map_err(|e| failed(e.to_string()))?;
    if resp.status != 200 {
        return Err(failed(format!(
            "answered {}: {}",
            resp.status,
            String::from_utf8_lossy(resp.body)
        )));
    }
    let token = nacos::access_token(resp.body).ok_or_else(|| failed("no accessToken".into()))?;
    Ok(format!("accessToken={}", nacos::encode(&token)))
}

/// Binds the push socket on the local address that routes to the target (loopback for a
/// local target) and starts its listener. With `clients` > 1 (`--push-clients`), it binds one
/// socket per client address, 127.0.0.1 to 127.0.0.`clients`, all on the first one's port, so a
/// server pushing to the address a subscriber's list came from (the connection's source, as
/// nacre does unless it trusts `clientIP`) reaches one of them, and the ack comes back from the
/// address the push went to. A server that pushes to `clientIP` sees one client: every list
/// names 127.0.0.1.
async fn start_push(target: SocketAddr, clients: u8) -> Result<PushSide, LoadtestError> {
    let probe = UdpSocket::bind(unspecified(target))
        .await
        .map_err(LoadtestError::Udp)?;
    probe.connect(target).await.map_err(LoadtestError::Udp)?;
    let ip = probe.local_addr().map_err(LoadtestError::Udp)?.ip();
    if clients > 1 && ip != IpAddr::V4(std::net::Ipv4Addr::LOCALHOST) {
        return Err(LoadtestError::InvalidArg {
            flag: "--push-clients",
            reason: format!("client addresses are 127.0.0.x: the target must be on IPv4 loopback, not reached from {ip}"),
        });
    }
    let first = UdpSocket::bind(SocketAddr::new(ip, 0))
        .await
        .map_err(LoadtestError::Udp)?;
    let port = first.local_addr().map_err(LoadtestError::Udp)?.port();
    let mut sockets = vec![Arc::new(first)];
    for i in 1..clients {
        let addr = SocketAddr::from((nacos::loopback_source(i), port));
        sockets.push(Arc::new(
            UdpSocket::bind(addr).await.map_err(LoadtestError::Udp)?,
        ));
    }
    let tracker = Arc::new(PushTracker::new()?);
    let stop = CancellationToken::new();
    let mut listeners = tokio::task::JoinSet::new();
    for socket in sockets {
        listeners.spawn(push::listen(socket, tracker.clone(), stop.clone()));
    }
    let task = tokio::spawn(async move { while listeners.join_next().await.is_some() {} });
    Ok(PushSide {
        addr: PushAddr { ip, port },
        tracker,
        stop,
        task,
    })
}

fn unspecified(target: SocketAddr) -> SocketAddr {
    match target.ip() {
        IpAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        IpAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
    }
}

/// Setup and measured phase of one round against one target.
async fn run_round(
    args: &LoadtestArgs,
    run: &mut TargetRun,
    workload: Workload,
    names: &Arc<Names>,
    warmup: Duration,
    round: u32,
) -> Result<RoundRow, LoadtestError> {
    let label = |what: &str| format!("{} {what}", run.target.name);
    for step in &workload.setup {
        let spec = PhaseSpec {
            streams: vec![StreamSpec::closed().limited(step.count)],
            concurrency: args.concurrency,
            duration: SETUP_CAP,
            warmup: Duration::ZERO,
            progress: Some(label(step.label)),
            sources: None,
        };
        let done = run_phase(&run.target, step.plan.clone(), &spec, None).await?;
        let errors = done.stats.errors();
        if errors > 0 || done.stats.requests() < step.count {
            let total = done.stats.total()?;
            let kinds: Vec<String> = total
                .errors
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            return Err(LoadtestError::Setup {
                target: run.target.name.clone(),
                detail: format!(
                    "{}: {} of {} requests failed ({}), {} answered",
                    step.label,
                    errors,
                    step.count,
                    kinds.join(", "),
                    done.stats.requests()
                ),
            });
        }
    }

    let rss_before = match (args.scenario, run.target.pid) {
        (ScenarioKind::Memory, Some(pid)) => Some(procstat::sample(pid).await?.rss_bytes),
        _ => None,
    };
    let spec = PhaseSpec {
        streams: workload.streams.clone(),
        concurrency: args.concurrency,
        // Memory registers every instance once, however long that takes: its stream ends at
        // its limit, and the duration only caps a target that stops answering.
        duration: if args.scenario == ScenarioKind::Memory {
            args.duration.max(MEMORY_CAP)
        } else {
            args.duration
        },
        warmup,
        progress: Some(label(args.scenario.name())),
        sources: args.push_clients,
    };
    let tracker = run.push.as_ref().map(|p| p.tracker.clone());
    let listeners = workload.listen.as_ref().map(|log| {
        listen::Listeners::start(&run.target, names.clone(), log.clone(), args.listeners)
    });
    if listeners.is_some() {
        // Listeners read their configs and park before the first publish.
        tokio::time::sleep(LISTENERS_SETTLE).await;
    }
    let mut phase = run_phase(&run.target, workload.plan.clone(), &spec, tracker).await?;
    if let Some(l) = listeners {
        phase.stats.merge(&l.finish(LISTENERS_GRACE).await?)?;
    }

    if let (Some(before), Some(pid)) = (rss_before, run.target.pid) {
        tokio::time::sleep(args.settle).await;
        let after = procstat::sample(pid).await?.rss_bytes;
        // What the target accepted: the figure per instance must not count registrations
        // that failed or were never sent.
        let instances = phase.stats.total()?.ok;
        let verified = count_instances(&run.target, names).await?;
        run.memory = Some(MemoryReport {
            instances,
            verified_instances: verified,
            rss_before_bytes: before,
            rss_after_bytes: after,
            bytes_per_instance: (after as f64 - before as f64) / instances.max(1) as f64,
        });
    }

    let total = phase.stats.total()?;
    let secs = phase.measured.as_secs_f64();
    run.stats.merge(&phase.stats)?;
    run.lateness.merge(&phase.lateness);
    run.measured_s += secs;
    if let Some(s) = phase.server {
        run.server_cpu_s += s.cpu_seconds;
        run.server_peak = run.server_peak.max(s.peak_rss_bytes);
    }
    run.harness_cpu_s += phase.harness.cpu_seconds;
    run.harness_peak = run.harness_peak.max(phase.harness.peak_rss_bytes);
    Ok(RoundRow {
        round,
        target: run.target.name.clone(),
        requests: total.requests(),
        errors: total.error_count(),
        throughput_rps: if secs > 0.0 {
            total.requests() as f64 / secs
        } else {
            0.0
        },
        p50_ms: stats::quantile_ms(&total.latency, 0.5),
        p99_ms: stats::quantile_ms(&total.latency, 0.99),
    })
}

/// The longest the memory scenario's registration may take.
const MEMORY_CAP: Duration = Duration::from_secs(600);

/// Time config listeners get to read their configs and park before publishes start.
const LISTENERS_SETTLE: Duration = Duration::from_secs(2);
/// Time the last publishes get to reach their listeners before the listeners stop; a listener
/// still behind a publish sent before this wait counts as missed.
const LISTENERS_GRACE: Duration = Duration::from_secs(3);

/// Upper bound on a setup step; it normally ends when its last registration is answered.
const SETUP_CAP: Duration = Duration::from_secs(600);

/// Lists every service once and counts the instances the target returns.
async fn count_instances(target: &Target, names: &Names) -> Result<u64, LoadtestError> {
    let timeout = target.timeout.max(Duration::from_secs(30));
    let setup_err = |detail: String| LoadtestError::Setup {
        target: target.name.clone(),
        detail,
    };
    let mut conn = target
        .connect(timeout)
        .await
        .map_err(|e| setup_err(format!("verification connect: {e}")))?;
    let mut total = 0u64;
    for s in 0..names.service_count() {
        let resp = tokio::time::timeout(timeout, conn.send(&names.list(s, None)))
            .await
            .map_err(|_| setup_err("verification list timed out".into()))?
            .map_err(|e| setup_err(format!("verification list: {e}")))?;
        if resp.status != 200 {
            return Err(setup_err(format!(
                "verification list answered {}",
                resp.status
            )));
        }
        total += nacos::count_hosts(resp.body).unwrap_or(0) as u64;
        if !conn.reusable() {
            conn = target
                .connect(timeout)
                .await
                .map_err(|e| setup_err(format!("verification connect: {e}")))?;
        }
    }
    Ok(total)
}
