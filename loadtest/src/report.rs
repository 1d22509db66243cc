//! The run report: built from merged [`Stats`], written as a human-readable table and as JSON
//! (`--json`). The JSON field names are a contract for scripts (`bench/vs-rnacos.sh`, the smoke
//! test); add fields, do not rename them.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::engine::{Lateness, LATE};
use crate::error::LoadtestError;
use crate::push::{PushCounts, PushStats};
use crate::stats::{quantile_ms, ErrorKind, OpStats, Second, Stats};

/// Latency summary in milliseconds (successful requests only).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        Latency {
            p50_ms: quantile_ms(h, 0.50),
            p90_ms: quantile_ms(h, 0.90),
            p99_ms: quantile_ms(h, 0.99),
            p999_ms: quantile_ms(h, 0.999),
            max_ms: if h.is_empty() {
                0.0
            } else {
                h.max() as f64 / 1000.0
            },
            mean_ms: if h.is_empty() { 0.0 } else { h.mean() / 1000.0 },
        }
    }
}

/// One point of the latency-by-percentile curve (the chart's data).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    pub percentile: f64,
    pub ms: f64,
}

/// Percentiles the curve is sampled at; dense in the tail, where the interest is.
pub const CURVE_PERCENTILES: &[f64] = &[
    0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.999, 100.0,
];

pub fn curve(h: &Histogram<u64>) -> Vec<CurvePoint> {
    if h.is_empty() {
        return Vec::new();
    }
    CURVE_PERCENTILES
        .iter()
        .map(|&p| CurvePoint {
            percentile: p,
            ms: h.value_at_percentile(p) as f64 / 1000.0,
        })
        .collect()
}

/// One operation's row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpReport {
    pub op: String,
    pub requests: u64,
    pub errors: u64,
    pub throughput_rps: f64,
    #[serde(flatten)]
    pub latency: Latency,
    pub errors_by_kind: BTreeMap<String, u64>,
}

/// CPU and memory of one process over the measured window(s).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProcReport {
    pub pid: Option<u32>,
    pub cpu_seconds: f64,
    /// Requests answered per CPU-second this process used (0 if it used none measurably).
    pub requests_per_cpu_second: f64,
    pub peak_rss_bytes: u64,
}

/// The push side (scenarios that subscribe).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PushReport {
    /// Packets, decode errors, and changes made / seen / superseded.
    #[serde(flatten)]
    pub counts: PushCounts,
    /// Push latency (change sent → packet received) of observed changes.
    #[serde(flatten)]
    pub latency: Latency,
}

impl PushReport {
    pub fn of(p: &PushStats) -> PushReport {
        PushReport {
            counts: p.counts.clone(),
            latency: Latency::of(&p.latency),
        }
    }
}

/// The memory mode's result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemoryReport {
    pub instances: u64,
    /// Instances the target listed back after registration.
    pub verified_instances: u64,
    pub rss_before_bytes: u64,
    pub rss_after_bytes: u64,
    pub bytes_per_instance: f64,
}

/// How the run was configured (echoed so a JSON file is self-describing).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    pub target: String,
    pub seed: u64,
    pub concurrency: usize,
    pub rate_rps: Option<f64>,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub rounds: u32,
    pub services: usize,
    pub instances_per_service: u64,
    pub metadata_bytes: usize,
    /// Beats carried the whole `beat` JSON (`--full-beats`).
    #[serde(default)]
    pub full_beats: bool,
    pub namespace: String,
    pub threads: usize,
    /// overload: seconds of the measured window lists came at `rate_rps`.
    #[serde(default)]
    pub overload_for_s: Option<f64>,
    /// overload: the list rate after the back-off.
    #[serde(default)]
    pub backoff_rate_rps: Option<f64>,
    /// overload: `--push-clients`, the client addresses lists subscribed from.
    #[serde(default)]
    pub push_clients: Option<u8>,
}

/// A single-target report (`--json FILE`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub scenario: String,
    pub requests: u64,
    pub errors: u64,
    pub throughput_rps: f64,
    #[serde(flatten)]
    pub latency: Latency,
    /// Seconds the recorded requests span (summed over rounds).
    pub measured_s: f64,
    pub errors_by_kind: BTreeMap<String, u64>,
    pub operations: Vec<OpReport>,
    pub server: Option<ProcReport>,
    pub harness: ProcReport,
    pub push: Option<PushReport>,
    pub memory: Option<MemoryReport>,
    /// Instances the target lost while they were kept alive.
    #[serde(default)]
    pub lost: Lost,
    /// Open-loop sends against their schedule (`None` for a closed loop).
    #[serde(default)]
    pub schedule: Option<Lateness>,
    pub latency_curve: Vec<CurvePoint>,
    /// Per operation, second by second of the measured window.
    #[serde(default)]
    pub timeline: BTreeMap<String, Vec<SecondReport>>,
    /// The overload scenario's headline figures.
    #[serde(default)]
    pub overload: Option<OverloadReport>,
    pub config: RunConfig,
}

/// One operation in one second.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SecondReport {
    pub ok: u64,
    /// Answered 503 (turned away).
    pub unavailable: u64,
    pub errors: u64,
    /// Bucket bound under which 99 % of the successes were answered; `None` without any, or
    /// beyond the last bound.
    pub p99_ms: Option<f64>,
}

impl SecondReport {
    fn of(s: &Second) -> SecondReport {
        let p99 = s.p99_ms();
        SecondReport {
            ok: s.ok,
            unavailable: s.unavailable,
            errors: s.errors,
            p99_ms: (s.ok > 0 && p99.is_finite()).then_some(p99),
        }
    }

    fn clean(&self) -> bool {
        self.unavailable == 0 && self.errors == 0
    }
}

/// How a target fared when offered more lists than it serves, and after the back-off.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OverloadReport {
    /// Second of the measured window at which the lists backed off.
    pub backoff_at_s: u64,
    /// Lists asked for per second during the overload.
    pub offered_list_rps: f64,
    /// Lists answered in full per second during the overload.
    pub served_list_rps: f64,
    /// Lists answered 503 during the overload.
    pub shed_lists: u64,
    /// Lists that failed otherwise (timeouts, wrong answers) during the overload.
    pub failed_lists: u64,
    /// Beats sent over the whole run, and those not answered `ok`.
    pub beats: u64,
    pub beats_failed: u64,
    /// Seconds after the back-off from which every list was served (`None`: not by the end,
    /// or no second after the back-off was measured).
    pub recovered_after_s: Option<u64>,
    /// Seconds measured after the back-off.
    #[serde(default)]
    pub measured_after_s: u64,
}

impl OverloadReport {
    fn of(timeline: &BTreeMap<String, Vec<SecondReport>>, c: &RunConfig) -> Option<Self> {
        let backoff_at_s = c.overload_for_s? as u64;
        let lists = timeline.get("list")?;
        let during = &lists[..lists.len().min(backoff_at_s as usize)];
        let sum = |f: fn(&SecondReport) -> u64, v: &[SecondReport]| v.iter().map(f).sum::<u64>();
        let after = lists.get(backoff_at_s as usize..).unwrap_or_default();
        // The first second from which every later one is clean.
        let dirty_tail = after.iter().rev().take_while(|s| s.clean()).count();
        let recovered_after_s = (dirty_tail > 0).then(|| (after.len() - dirty_tail) as u64);
        let beats = timeline.get("beat").map(Vec::as_slice).unwrap_or_default();
        Some(OverloadReport {
            backoff_at_s,
            offered_list_rps: c.rate_rps.unwrap_or(0.0),
            served_list_rps: per_sec(sum(|s| s.ok, during), backoff_at_s as f64),
            shed_lists: sum(|s| s.unavailable, during),
            failed_lists: sum(|s| s.errors, during),
            beats: sum(|s| s.ok + s.unavailable + s.errors, beats),
            beats_failed: sum(|s| s.unavailable + s.errors, beats),
            recovered_after_s,
            measured_after_s: after.len() as u64,
        })
    }
}

/// Instances a target lost while their clients kept them alive: the headline next to errors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Lost {
    /// Beats answered 20404: the target no longer knew a beating instance.
    pub beats_unknown: u64,
    /// List answers showing fewer healthy instances than were registered and kept alive.
    pub lists_short: u64,
}

impl Lost {
    fn of(stats: &Stats) -> Lost {
        let count = |op: &str, kind: ErrorKind| {
            stats
                .ops
                .get(op)
                .and_then(|s| s.errors.get(&kind))
                .copied()
                .unwrap_or(0)
        };
        Lost {
            beats_unknown: count("beat", ErrorKind::NacosCode(20404)),
            lists_short: count("list", ErrorKind::MissingInstances),
        }
    }

    /// Whether anything was lost.
    pub fn any(&self) -> bool {
        self.beats_unknown + self.lists_short > 0
    }
}

/// What a run accumulated for one target, before it becomes a [`Report`].
pub struct Measured<'a> {
    pub stats: &'a Stats,
    pub measured_s: f64,
    pub server: Option<(Option<u32>, f64, u64)>,
    pub harness_cpu_s: f64,
    pub harness_peak_rss: u64,
    pub lateness: Lateness,
    pub push: Option<PushStats>,
    pub memory: Option<MemoryReport>,
}

fn per_sec(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

fn kinds(s: &OpStats) -> BTreeMap<String, u64> {
    s.errors.iter().map(|(k, n)| (k.to_string(), *n)).collect()
}

impl Report {
    pub fn build(
        scenario: &str,
        m: Measured<'_>,
        config: RunConfig,
    ) -> Result<Report, LoadtestError> {
        let total = m.stats.total()?;
        let requests = total.requests();
        let operations = m
            .stats
            .ops
            .iter()
            .map(|(op, s)| OpReport {
                op: op.to_string(),
                requests: s.requests(),
                errors: s.error_count(),
                throughput_rps: per_sec(s.requests(), m.measured_s),
                latency: Latency::of(&s.latency),
                errors_by_kind: kinds(s),
            })
            .collect();
        let push_errors = m.push.as_ref().map_or(0, |p| p.counts.decode_errors);
        let mut errors_by_kind = kinds(&total);
        if push_errors > 0 {
            errors_by_kind.insert("push_decode".into(), push_errors);
        }
        let timeline: BTreeMap<String, Vec<SecondReport>> = m
            .stats
            .timeline
            .ops
            .iter()
            .map(|(op, seconds)| {
                (
                    op.to_string(),
                    seconds.iter().map(SecondReport::of).collect(),
                )
            })
            .collect();
        let overload = (scenario == "overload")
            .then(|| OverloadReport::of(&timeline, &config))
            .flatten();
        Ok(Report {
            scenario: scenario.to_string(),
            requests,
            errors: total.error_count() + push_errors,
            throughput_rps: per_sec(requests, m.measured_s),
            latency: Latency::of(&total.latency),
            measured_s: m.measured_s,
            errors_by_kind,
            operations,
            server: m.server.map(|(pid, cpu, peak)| ProcReport {
                pid,
                cpu_seconds: cpu,
                requests_per_cpu_second: if cpu > 0.0 {
                    requests as f64 / cpu
                } else {
                    0.0
                },
                peak_rss_bytes: peak,
            }),
            harness: ProcReport {
                pid: Some(std::process::id()),
                cpu_seconds: m.harness_cpu_s,
                requests_per_cpu_second: if m.harness_cpu_s > 0.0 {
                    requests as f64 / m.harness_cpu_s
                } else {
                    0.0
                },
                peak_rss_bytes: m.harness_peak_rss,
            },
            push: m.push.as_ref().map(PushReport::of),
            memory: m.memory,
            lost: Lost::of(m.stats),
            schedule: (m.lateness.scheduled > 0).then_some(m.lateness),
            latency_curve: curve(&total.latency),
            timeline,
            overload,
            config,
        })
    }
}

/// `b / a` for the compare mode (above 1: B is higher).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ratios {
    pub throughput: f64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub server_requests_per_cpu_second: Option<f64>,
}

/// One target's figures in one round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundRow {
    pub round: u32,
    pub target: String,
    pub requests: u64,
    pub errors: u64,
    pub throughput_rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// The `--compare` report: both targets over all rounds, and B relative to A.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompareReport {
    pub scenario: String,
    pub a: Report,
    pub b: Report,
    pub ratios: Ratios,
    pub rounds: Vec<RoundRow>,
}

fn ratio(b: f64, a: f64) -> f64 {
    if a > 0.0 {
        b / a
    } else {
        0.0
    }
}

impl CompareReport {
    pub fn new(a: Report, b: Report, rounds: Vec<RoundRow>) -> CompareReport {
        let rpc = match (&a.server, &b.server) {
            (Some(x), Some(y)) => Some(ratio(y.requests_per_cpu_second, x.requests_per_cpu_second)),
            _ => None,
        };
        CompareReport {
            scenario: a.scenario.clone(),
            ratios: Ratios {
                throughput: ratio(b.throughput_rps, a.throughput_rps),
                p50: ratio(b.latency.p50_ms, a.latency.p50_ms),
                p99: ratio(b.latency.p99_ms, a.latency.p99_ms),
                max: ratio(b.latency.max_ms, a.latency.max_ms),
                server_requests_per_cpu_second: rpc,
            },
            a,
            b,
            rounds,
        }
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn latency_cells(out: &mut String, l: &Latency) {
    let _ = write!(
        out,
        " {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>9.3}",
        l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
    );
}

/// Whether open-loop sends kept their schedule, and if not, whose limit that was: a harness
/// short of CPU must never pass for a slow server.
fn schedule_lines(out: &mut String, l: &Lateness, r: &Report) {
    let share = |n: u64| 100.0 * n as f64 / l.scheduled.max(1) as f64;
    let _ = writeln!(
        out,
        "schedule: {} of {} sends ({:.2}%) left more than {} ms after their time, worst {:.1} ms",
        l.late,
        l.scheduled,
        share(l.late),
        LATE.as_millis(),
        l.worst_ms
    );
    if share(l.late) < 1.0 {
        return;
    }
    let threads = r.config.threads.max(1) as f64;
    let busy = 100.0 * r.harness.cpu_seconds / (r.measured_s * threads).max(1e-9);
    if busy >= 90.0 {
        let _ = writeln!(
            out,
            "note: the harness fell behind its schedule using {busy:.0}% of its {threads} thread(s): the harness, not the target, set this pace (try more --threads)"
        );
    } else {
        let _ = writeln!(
            out,
            "note: sends fell behind their schedule with the harness at {busy:.0}% CPU: every connection was waiting on the target, and the latencies include that wait (more --concurrency lets the schedule keep up)"
        );
    }
}

/// The overload headline and its second-by-second table.
fn overload_lines(out: &mut String, o: &OverloadReport, r: &Report) {
    let _ = writeln!(
        out,
        "overload: lists offered at {:.0}/s for {} s: {:.0}/s served, {} turned away (503), {} failed otherwise; beats: {} sent, {} not answered ok",
        o.offered_list_rps, o.backoff_at_s, o.served_list_rps, o.shed_lists, o.failed_lists, o.beats, o.beats_failed
    );
    let _ = match o.recovered_after_s {
        Some(s) => writeln!(
            out,
            "recovery: every list served from {s} s after the back-off to {:.0}/s",
            r.config.backoff_rate_rps.unwrap_or(0.0)
        ),
        None if o.measured_after_s == 0 => {
            writeln!(out, "recovery: no second after the back-off was measured")
        }
        None => writeln!(
            out,
            "recovery: lists were still failing at the end of the run"
        ),
    };
    let _ = writeln!(
        out,
        "{:>4} | {:>7} {:>5} {:>5} {:>7} | {:>7} {:>7} {:>5} {:>7}",
        "s", "beat ok", "503", "err", "p99 ms", "list ok", "503", "err", "p99 ms"
    );
    let empty = Vec::new();
    let beats = r.timeline.get("beat").unwrap_or(&empty);
    let lists = r.timeline.get("list").unwrap_or(&empty);
    let p99 = |s: &SecondReport| {
        s.p99_ms
            .map_or_else(|| "-".to_string(), |v| format!("{v:.0}"))
    };
    let none = SecondReport {
        ok: 0,
        unavailable: 0,
        errors: 0,
        p99_ms: None,
    };
    for t in 0..beats.len().max(lists.len()) {
        let b = beats.get(t).unwrap_or(&none);
        let l = lists.get(t).unwrap_or(&none);
        let _ = writeln!(
            out,
            "{t:>4} | {:>7} {:>5} {:>5} {:>7} | {:>7} {:>7} {:>5} {:>7}",
            b.ok,
            b.unavailable,
            b.errors,
            p99(b),
            l.ok,
            l.unavailable,
            l.errors,
            p99(l)
        );
    }
}

/// The human-readable table.
pub fn render(r: &Report) -> String {
    let c = &r.config;
    let pace = match (c.rate_rps, &r.schedule) {
        (Some(rate), _) => format!("open loop at {rate} req/s"),
        (None, Some(_)) => "open loop at the scenario's own rate".to_string(),
        (None, None) => "closed loop".to_string(),
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "scenario {} against {}: {} services x {} instances, concurrency {}, {pace}, {:.1} s measured after {:.1} s warm-up, seed {}",
        r.scenario, c.target, c.services, c.instances_per_service, c.concurrency, r.measured_s, c.warmup_s, c.seed
    );
    let _ = writeln!(
        out,
        "{:<16} {:>10} {:>8} {:>11} {:>8} {:>8} {:>8} {:>8} {:>9}",
        "operation",
        "requests",
        "errors",
        "req/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms"
    );
    let mut row = |name: &str, requests: u64, errors: u64, rps: f64, l: &Latency| {
        let _ = write!(out, "{name:<16} {requests:>10} {errors:>8} {rps:>11.1}");
        latency_cells(&mut out, l);
        out.push('\n');
    };
    for op in &r.operations {
        row(
            &op.op,
            op.requests,
            op.errors,
            op.throughput_rps,
            &op.latency,
        );
    }
    if r.operations.len() > 1 {
        row("total", r.requests, r.errors, r.throughput_rps, &r.latency);
    }
    if matches!(r.scenario.as_str(), "beat" | "mixed" | "overload") || r.lost.any() {
        let _ = writeln!(
            out,
            "instances lost: {} (beats answered 20404: {}; list answers missing kept-alive instances: {})",
            r.lost.beats_unknown + r.lost.lists_short,
            r.lost.beats_unknown,
            r.lost.lists_short
        );
    }
    if !r.errors_by_kind.is_empty() {
        let kinds: Vec<String> = r
            .errors_by_kind
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let _ = writeln!(out, "errors: {}", kinds.join(", "));
    }
    if let Some(o) = &r.overload {
        overload_lines(&mut out, o, r);
    }
    if let Some(p) = &r.push {
        let c = &p.counts;
        let _ = writeln!(
            out,
            "push: {} packets ({} gzip, {} acked, {} undecodable); of {} changes {} seen, {} superseded before a push, {} never seen; latency p50 {:.1} ms p99 {:.1} ms max {:.1} ms",
            c.received, c.gzip, c.acked, c.decode_errors, c.changes, c.observed, c.superseded,
            c.changes.saturating_sub(c.observed + c.superseded),
            p.latency.p50_ms, p.latency.p99_ms, p.latency.max_ms
        );
    }
    if let Some(s) = &r.server {
        let _ = writeln!(
            out,
            "server pid {}: {:.2} CPU-s, {:.0} requests per CPU-s, peak RSS {:.1} MiB",
            s.pid.map_or_else(|| "?".to_string(), |p| p.to_string()),
            s.cpu_seconds,
            s.requests_per_cpu_second,
            mib(s.peak_rss_bytes)
        );
    }
    let _ = writeln!(
        out,
        "harness ({} thread{}): {:.2} CPU-s, {:.0} requests per CPU-s, peak RSS {:.1} MiB",
        c.threads,
        if c.threads == 1 { "" } else { "s" },
        r.harness.cpu_seconds,
        r.harness.requests_per_cpu_second,
        mib(r.harness.peak_rss_bytes)
    );
    if let Some(l) = &r.schedule {
        schedule_lines(&mut out, l, r);
    }
    if let Some(m) = &r.memory {
        let _ = writeln!(
            out,
            "memory: {} instances registered, {} listed back; RSS {:.1} MiB -> {:.1} MiB = {:.0} bytes per instance",
            m.instances,
            m.verified_instances,
            mib(m.rss_before_bytes),
            mib(m.rss_after_bytes),
            m.bytes_per_instance
        );
        if m.verified_instances < m.instances {
            let _ = writeln!(
                out,
                "note: {} instances were registered but not listed back; the figure per instance counts all {} registered",
                m.instances - m.verified_instances,
                m.instances
            );
        }
    }
    if let Some(rate) = c.rate_rps {
        let achieved = r.throughput_rps;
        if achieved < rate * 0.95 && r.memory.is_none() {
            let _ = writeln!(
                out,
                "note: achieved {achieved:.0} req/s of the {rate} req/s asked for; latencies include the queueing"
            );
        }
    }
    out
}

/// The compare table: per-round rows, totals, and ratios.
pub fn render_compare(c: &CompareReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "compare {} (B / A), alternating rounds", c.scenario);
    let _ = writeln!(
        out,
        "{:<6} {:<24} {:>10} {:>8} {:>11} {:>8} {:>8}",
        "round", "target", "requests", "errors", "req/s", "p50 ms", "p99 ms"
    );
    for r in &c.rounds {
        let _ = writeln!(
            out,
            "{:<6} {:<24} {:>10} {:>8} {:>11.1} {:>8.3} {:>8.3}",
            r.round, r.target, r.requests, r.errors, r.throughput_rps, r.p50_ms, r.p99_ms
        );
    }
    for (label, r) in [("A", &c.a), ("B", &c.b)] {
        let _ = writeln!(out, "\n{label}: {}", render(r));
    }
    let _ = write!(
        out,
        "B / A: throughput x{:.3}, p50 x{:.3}, p99 x{:.3}, max x{:.3}",
        c.ratios.throughput, c.ratios.p50, c.ratios.p99, c.ratios.max
    );
    if let Some(x) = c.ratios.server_requests_per_cpu_second {
        let _ = write!(out, ", server requests per CPU-s x{x:.3}");
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::ErrorKind;
    use std::time::Duration;

    fn config() -> RunConfig {
        RunConfig {
            target: "127.0.0.1:8848".into(),
            seed: 1,
            concurrency: 4,
            rate_rps: Some(100.0),
            duration_s: 2.0,
            warmup_s: 0.0,
            rounds: 1,
            services: 2,
            instances_per_service: 3,
            metadata_bytes: 0,
            full_beats: false,
            namespace: "public".into(),
            threads: 1,
            overload_for_s: None,
            backoff_rate_rps: None,
            push_clients: None,
        }
    }

    fn report() -> Report {
        report_with(|_| {}, Lateness::default(), 0.25)
    }

    #[test]
    fn overload_reports_what_was_shed_and_when_every_list_was_served_again() {
        let sec = |ok, unavailable, errors| SecondReport {
            ok,
            unavailable,
            errors,
            p99_ms: Some(5.0),
        };
        let mut timeline = BTreeMap::new();
        // Overloaded for 3 s, backed off at 3 s; still shedding in the back-off's first two
        // seconds, one failure in the first, then clean.
        timeline.insert(
            "list".to_string(),
            vec![
                sec(100, 50, 0),
                sec(90, 60, 1),
                sec(110, 40, 0),
                sec(40, 10, 1),
                sec(45, 5, 0),
                sec(50, 0, 0),
                sec(50, 0, 0),
            ],
        );
        timeline.insert("beat".to_string(), vec![sec(10, 0, 0); 7]);
        let mut c = config();
        c.rate_rps = Some(150.0);
        c.overload_for_s = Some(3.0);
        let o = OverloadReport::of(&timeline, &c).unwrap();
        assert_eq!(o.backoff_at_s, 3);
        assert_eq!(o.served_list_rps, 100.0);
        assert_eq!((o.shed_lists, o.failed_lists), (150, 1));
        assert_eq!((o.beats, o.beats_failed), (70, 0));
        assert_eq!((o.recovered_after_s, o.measured_after_s), (Some(2), 4));
        // Failing to the end: not recovered.
        timeline.get_mut("list").unwrap().push(sec(1, 1, 0));
        assert_eq!(
            OverloadReport::of(&timeline, &c).unwrap().recovered_after_s,
            None
        );
        // Not an overload run: no headline.
        c.overload_for_s = None;
        assert!(OverloadReport::of(&timeline, &c).is_none());
    }

    fn report_with(
        more: impl FnOnce(&mut Stats),
        lateness: Lateness,
        harness_cpu_s: f64,
    ) -> Report {
        let mut stats = Stats::new().unwrap();
        for i in 1..=200 {
            stats.record_ok("list", Duration::from_micros(i * 10));
        }
        stats.record_ok("beat", Duration::from_millis(1));
        stats.record_error("beat", ErrorKind::HttpStatus(503));
        more(&mut stats);
        Report::build(
            "mixed",
            Measured {
                stats: &stats,
                measured_s: 2.0,
                server: Some((Some(42), 0.5, 1 << 20)),
                harness_cpu_s,
                harness_peak_rss: 1 << 20,
                lateness,
                push: None,
                memory: None,
            },
            config(),
        )
        .unwrap()
    }

    #[test]
    fn json_has_the_documented_fields_and_types() {
        let r = report();
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(v["scenario"], "mixed");
        assert_eq!(v["requests"], 202);
        assert_eq!(v["errors"], 1);
        assert_eq!(v["throughput_rps"], 101.0);
        for key in ["p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "mean_ms"] {
            assert!(v[key].is_f64(), "{key}: {}", v[key]);
        }
        assert!((v["p50_ms"].as_f64().unwrap() - 1.0).abs() < 0.02);
        assert_eq!(v["errors_by_kind"]["http_503"], 1);
        assert_eq!(v["operations"][0]["op"], "beat");
        assert!(v["operations"][1]["p99_ms"].is_f64());
        assert_eq!(v["server"]["requests_per_cpu_second"], 404.0);
        assert_eq!(v["harness"]["requests_per_cpu_second"], 808.0);
        assert!(v["push"].is_null());
        assert_eq!(
            v["latency_curve"].as_array().unwrap().len(),
            CURVE_PERCENTILES.len()
        );
        assert_eq!(v["config"]["seed"], 1);
        // And it reads back unchanged.
        let back: Report = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn compare_ratios_are_b_over_a() {
        let a = report();
        let mut b = report();
        b.throughput_rps *= 2.0;
        b.latency.p99_ms *= 0.5;
        let c = CompareReport::new(a, b, Vec::new());
        assert_eq!(c.ratios.throughput, 2.0);
        assert_eq!(c.ratios.p99, 0.5);
        assert_eq!(c.ratios.server_requests_per_cpu_second, Some(1.0));
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["scenario"], "mixed");
        assert_eq!(v["a"]["scenario"], "mixed");
        assert!(render_compare(&c).contains("throughput x2.000"));
    }

    #[test]
    fn table_lists_each_operation_and_the_total() {
        let t = render(&report());
        assert!(t.contains("\nbeat "));
        assert!(t.contains("\nlist "));
        assert!(t.contains("\ntotal "));
        assert!(t.contains("errors: http_503 1"));
        assert!(t.contains("404 requests per CPU-s"));
        assert!(t.contains("instances lost: 0 "), "{t}");
        assert!(!t.contains("schedule:"), "closed loop: {t}");
    }

    #[test]
    fn lost_instances_are_the_headline_and_read_from_the_error_tallies() {
        let r = report_with(
            |s| {
                s.record_error("beat", ErrorKind::NacosCode(20404));
                s.record_error("beat", ErrorKind::NacosCode(20404));
                s.record_error("list", ErrorKind::MissingInstances);
            },
            Lateness::default(),
            0.25,
        );
        assert_eq!(
            r.lost,
            Lost {
                beats_unknown: 2,
                lists_short: 1
            }
        );
        let t = render(&r);
        assert!(
            t.contains("instances lost: 3 (beats answered 20404: 2; list answers missing kept-alive instances: 1)"),
            "{t}"
        );
    }

    #[test]
    fn a_late_schedule_says_whose_limit_it_was() {
        let late = Lateness {
            scheduled: 1_000,
            late: 100,
            worst_ms: 250.0,
        };
        // 2 s measured on one thread: 1.9 CPU-s is the harness at its limit.
        let t = render(&report_with(|_| {}, late, 1.9));
        assert!(t.contains("schedule: 100 of 1000 sends (10.00%)"), "{t}");
        assert!(
            t.contains("the harness, not the target, set this pace"),
            "{t}"
        );
        let t = render(&report_with(|_| {}, late, 0.2));
        assert!(
            t.contains("every connection was waiting on the target"),
            "{t}"
        );
        // On time: the figures, no note.
        let on_time = Lateness {
            scheduled: 1_000,
            late: 2,
            worst_ms: 12.0,
        };
        let t = render(&report_with(|_| {}, on_time, 1.9));
        assert!(t.contains("schedule: 2 of 1000"), "{t}");
        assert!(!t.contains("note:"), "{t}");
    }
}
