//! Runs one phase: `concurrency` senders, each owning one keep-alive connection, pull tickets
//! from the shared [`Schedule`], turn them into requests through the scenario's [`Plan`], and
//! record outcomes in their own [`Stats`]. The phase owns every task it starts (senders,
//! progress bar, RSS watch) and awaits them all before returning.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::client::{ClientError, Conn, Request};
use crate::error::LoadtestError;
use crate::nacos::{self, Check};
use crate::procstat::{self, RssWatch};
use crate::push::{Change, PushTracker};
use crate::rate::{latency_start, Schedule, StreamSpec};
use crate::stats::{ErrorKind, Stats};

/// The server under test.
#[derive(Clone, Debug)]
pub struct Target {
    /// As given on the command line (and sent as `Host`).
    pub name: String,
    pub addr: SocketAddr,
    pub user_agent: String,
    pub timeout: Duration,
    pub pid: Option<u32>,
    /// The target's other processes, whose CPU counts as the server's.
    pub also_pids: Vec<u32>,
    /// `accessToken=…` (encoded) sent on every request, for a target with auth on.
    pub access: Option<String>,
}

impl Target {
    /// A new keep-alive connection that sends this target's `Host`, `User-Agent` and token.
    pub async fn connect(&self, timeout: Duration) -> Result<Conn, ClientError> {
        self.connect_from(None, timeout).await
    }

    /// [`Target::connect`] from a chosen local address (many connections to one loopback
    /// target need several source addresses: one has only ~28,000 ephemeral ports).
    pub async fn connect_from(
        &self,
        source: Option<std::net::IpAddr>,
        timeout: Duration,
    ) -> Result<Conn, ClientError> {
        let conn =
            Conn::connect_from(self.addr, source, &self.name, &self.user_agent, timeout).await?;
        Ok(match &self.access {
            Some(a) => conn.with_query(a),
            None => conn,
        })
    }
}

/// One request a ticket turned into.
#[derive(Clone, Debug)]
pub struct Planned {
    /// Report row name.
    pub op: &'static str,
    pub request: Request,
    pub check: Check,
    /// Set when subscribers should be told about this request.
    pub change: Option<Change>,
}

/// Maps tickets to requests; one per scenario phase.
pub trait Plan: Send + Sync {
    fn plan(&self, stream: usize, index: u64) -> Planned;
}

/// What a phase runs.
#[derive(Clone, Debug)]
pub struct PhaseSpec {
    pub streams: Vec<StreamSpec>,
    pub concurrency: usize,
    /// Measured time (after the warm-up).
    pub duration: Duration,
    pub warmup: Duration,
    /// Label of the progress bar; `None` draws nothing.
    pub progress: Option<String>,
    /// `--push-clients`: the shared pool's connections come from this many loopback
    /// addresses in turn ([`crate::nacos::loopback_source`]), so a server that records a
    /// subscriber at the address its list came from sees that many clients.
    pub sources: Option<u8>,
}

/// CPU use of one process over the measured window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CpuUse {
    pub cpu_seconds: f64,
    pub peak_rss_bytes: u64,
}

/// How far open-loop sends trailed their schedule: a sender takes a ticket late when every
/// sender was busy (waiting on the target, or the harness short of CPU).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Lateness {
    /// Open-loop requests due in the measured window (sent, or abandoned past the timeout).
    pub scheduled: u64,
    /// Of those, sent more than [`LATE`] after their scheduled time.
    pub late: u64,
    /// The largest delay, ms.
    pub worst_ms: f64,
}

impl Lateness {
    fn note(&mut self, delay: Duration) {
        self.scheduled += 1;
        if delay > LATE {
            self.late += 1;
        }
        self.worst_ms = self.worst_ms.max(delay.as_secs_f64() * 1e3);
    }

    /// Both phases' figures together.
    pub fn merge(&mut self, o: &Lateness) {
        self.scheduled += o.scheduled;
        self.late += o.late;
        self.worst_ms = self.worst_ms.max(o.worst_ms);
    }
}

/// A send this much past its scheduled time counts as late.
pub const LATE: Duration = Duration::from_millis(10);

/// Outcome of a phase.
#[derive(Debug)]
pub struct PhaseResult {
    pub stats: Stats,
    /// Open-loop sends against their schedule.
    pub lateness: Lateness,
    /// The time the recorded requests span (the measured duration, or less if every stream
    /// reached its limit first).
    pub measured: Duration,
    pub server: Option<CpuUse>,
    pub harness: CpuUse,
}

/// Counters the progress bar reads while senders run.
#[derive(Debug, Default)]
struct Live {
    done: AtomicU64,
    errors: AtomicU64,
}

/// Wake this long before an open-loop tick: tokio's timer has millisecond granularity and
/// rounds up, and an early send is measured from the actual send time, so waking early costs
/// nothing in accuracy while waking late would bill the harness's lateness to the server.
const EARLY_WAKE: Duration = Duration::from_millis(1);
/// Pause after a failed connect so a dead target is not hammered in a tight loop.
const CONNECT_BACKOFF: Duration = Duration::from_millis(50);

/// Runs one phase against `target`.
pub async fn run_phase(
    target: &Target,
    plan: Arc<dyn Plan>,
    spec: &PhaseSpec,
    tracker: Option<Arc<PushTracker>>,
) -> Result<PhaseResult, LoadtestError> {
    let ticks = procstat::clock_ticks().await as f64;
    let start = Instant::now();
    let measure_from = start + spec.warmup;
    let end = measure_from + spec.duration;
    let schedule = Arc::new(Schedule::new(start, end, &spec.streams));
    let live = Arc::new(Live::default());

    let rss_watch = target
        .pid
        .map(|pid| RssWatch::start(pid, Duration::from_millis(100)));
    let self_rss = RssWatch::start(std::process::id(), Duration::from_millis(250));
    let progress_stop = CancellationToken::new();
    let progress = spec.progress.as_ref().map(|label| {
        tokio::spawn(draw_progress(
            label.clone(),
            spec.warmup + spec.duration,
            live.clone(),
            progress_stop.clone(),
        ))
    });

    let mut senders = JoinSet::new();
    // Streams with senders of their own first, then the shared pool.
    let owned = spec
        .streams
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.own_senders.map(|n| (Some(i), n)));
    for (only, n) in owned.chain([(None, spec.concurrency.max(1))]) {
        for i in 0..n {
            let source = match (only, spec.sources) {
                (None, Some(k)) if k > 1 => Some(std::net::IpAddr::V4(
                    crate::nacos::loopback_source((i % usize::from(k)) as u8),
                )),
                _ => None,
            };
            senders.spawn(sender(
                target.clone(),
                plan.clone(),
                Lane {
                    schedule: schedule.clone(),
                    only,
                    source,
                },
                measure_from,
                tracker.clone(),
                live.clone(),
            ));
        }
    }

    // CPU is read at the start of the measured window; a phase that ends during its warm-up
    // (a small limit) is measured from its start.
    let mut server_cpu0 = None;
    let mut self_cpu0 = None;
    let mut results = Vec::new();
    let warm = tokio::time::sleep_until(measure_from.into());
    tokio::pin!(warm);
    let mut warm_done = false;
    loop {
        tokio::select! {
            _ = &mut warm, if !warm_done => {
                warm_done = true;
                self_cpu0 = procstat::sample(std::process::id()).await.ok();
                if let Some(pid) = target.pid {
                    server_cpu0 = Some(procstat::sample_with(pid, &target.also_pids).await?);
                }
            }
            r = senders.join_next() => match r {
                Some(joined) => results.push(joined),
                None => break,
            },
        }
    }
    if !warm_done {
        // Nothing was recorded anyway (everything started before `measure_from`).
        self_cpu0 = procstat::sample(std::process::id()).await.ok();
        if let Some(pid) = target.pid {
            server_cpu0 = Some(procstat::sample_with(pid, &target.also_pids).await?);
        }
    }
    let self_cpu1 = procstat::sample(std::process::id()).await.ok();
    let server_cpu1 = match target.pid {
        Some(pid) => Some(procstat::sample_with(pid, &target.also_pids).await?),
        None => None,
    };
    progress_stop.cancel();
    if let Some(p) = progress {
        let _ = p.await;
    }
    let server_peak = match rss_watch {
        Some(w) => Some(w.finish().await),
        None => None,
    };
    let self_peak = self_rss.finish().await;

    let mut stats = Stats::new()?;
    let mut lateness = Lateness::default();
    let mut last_done = measure_from;
    for joined in results {
        let (s, late, last) = joined.map_err(|e| LoadtestError::Runtime(e.to_string()))??;
        stats.merge(&s)?;
        lateness.merge(&late);
        last_done = last_done.max(last);
    }
    let measured = if schedule.hit_limit() {
        last_done.saturating_duration_since(measure_from)
    } else {
        spec.duration
    };
    let cpu = |a: Option<procstat::ProcSample>, b: Option<procstat::ProcSample>| match (a, b) {
        (Some(a), Some(b)) => b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64 / ticks,
        _ => 0.0,
    };
    let server = match (server_cpu0, server_cpu1, server_peak) {
        (a @ Some(_), b @ Some(_), Some(peak)) => Some(CpuUse {
            cpu_seconds: cpu(a, b),
            peak_rss_bytes: peak.max(b.map_or(0, |s| s.rss_bytes)),
        }),
        _ => None,
    };
    Ok(PhaseResult {
        stats,
        lateness,
        measured,
        server,
        harness: CpuUse {
            cpu_seconds: cpu(self_cpu0, self_cpu1),
            peak_rss_bytes: self_peak,
        },
    })
}

/// Where a sender takes its tickets: the phase's schedule, for one stream with senders of its
/// own or (`None`) for the shared pool.
struct Lane {
    schedule: Arc<Schedule>,
    only: Option<usize>,
    /// The local address its connections come from (any port); `None`: the system's choice.
    source: Option<std::net::IpAddr>,
}

/// One sender: owns a connection, returns its stats, its lateness and the time of its last
/// recorded answer.
async fn sender(
    target: Target,
    plan: Arc<dyn Plan>,
    lane: Lane,
    measure_from: Instant,
    tracker: Option<Arc<PushTracker>>,
    live: Arc<Live>,
) -> Result<(Stats, Lateness, Instant), LoadtestError> {
    let mut stats = Stats::new()?;
    let mut lateness = Lateness::default();
    let mut conn: Option<Conn> = None;
    let mut last_done = measure_from;
    let mut dropped = 0u64;
    while let Some(ticket) = lane.schedule.next_of(Instant::now(), lane.only) {
        if let Some(intended) = ticket.intended {
            let wake = intended.checked_sub(EARLY_WAKE).unwrap_or(intended);
            if wake > Instant::now() {
                tokio::time::sleep_until(wake.into()).await;
            }
        }
        if let Some(intended) = ticket.intended {
            // A client gives up on a request it could not send within its timeout; the
            // harness does too, instead of sending a backlog no client would.
            if intended + target.timeout < Instant::now() {
                abandon(
                    &mut stats,
                    &mut lateness,
                    &live,
                    &*plan,
                    ticket,
                    measure_from,
                );
                dropped += 1;
                if dropped.is_multiple_of(ABANDON_YIELD_EVERY) {
                    // A backlog of drops never awaits: let the other senders run.
                    tokio::task::yield_now().await;
                }
                continue;
            }
        }
        let planned = plan.plan(ticket.stream, ticket.index);
        let sent = Instant::now();
        if let (Some(t), Some(c)) = (&tracker, &planned.change) {
            t.note_change(c.clone(), sent);
        }
        let outcome = exchange(&mut conn, &target, lane.source, &planned).await;
        let done = Instant::now();
        let begun = latency_start(ticket.intended, sent);
        if let Err(ErrorKind::Connect) = outcome {
            tokio::time::sleep(CONNECT_BACKOFF).await;
        }
        live.done.fetch_add(1, Ordering::Relaxed);
        if outcome.is_err() {
            live.errors.fetch_add(1, Ordering::Relaxed);
        }
        if begun < measure_from {
            continue;
        }
        if let Some(intended) = ticket.intended {
            lateness.note(sent.saturating_duration_since(intended));
        }
        last_done = last_done.max(done);
        let second = begun.saturating_duration_since(measure_from).as_secs() as usize;
        stats
            .timeline
            .record(planned.op, second, outcome.map(|()| done - begun));
        match outcome {
            Ok(()) => stats.record_ok(planned.op, done - begun),
            Err(kind) => stats.record_error(planned.op, kind),
        }
    }
    Ok((stats, lateness, last_done))
}

/// Drops used per yield to the runtime while working through a backlog of them.
const ABANDON_YIELD_EVERY: u64 = 64;

/// Records `ticket` as abandoned: not sent, since its time is further back than the request
/// timeout.
fn abandon(
    stats: &mut Stats,
    lateness: &mut Lateness,
    live: &Live,
    plan: &dyn Plan,
    ticket: crate::rate::Ticket,
    measure_from: Instant,
) {
    live.done.fetch_add(1, Ordering::Relaxed);
    live.errors.fetch_add(1, Ordering::Relaxed);
    let Some(intended) = ticket.intended.filter(|i| *i >= measure_from) else {
        return;
    };
    let op = plan.plan(ticket.stream, ticket.index).op;
    lateness.note(Instant::now().saturating_duration_since(intended));
    let second = intended.saturating_duration_since(measure_from).as_secs();
    stats
        .timeline
        .record(op, second as usize, Err(ErrorKind::Abandoned));
    stats.record_error(op, ErrorKind::Abandoned);
}

/// One request on `conn` (opened if needed, dropped after any failure since its state is
/// unknown).
async fn exchange(
    conn: &mut Option<Conn>,
    target: &Target,
    source: Option<std::net::IpAddr>,
    planned: &Planned,
) -> Result<(), ErrorKind> {
    let c = match conn {
        Some(c) => c,
        None => conn.insert(target.connect_from(source, target.timeout).await.map_err(
            |e| match e {
                ClientError::Timeout => ErrorKind::Timeout,
                _ => ErrorKind::Connect,
            },
        )?),
    };
    let result = match tokio::time::timeout(target.timeout, c.send(&planned.request)).await {
        Err(_) => Err(ErrorKind::Timeout),
        Ok(Err(ClientError::Timeout)) => Err(ErrorKind::Timeout),
        Ok(Err(ClientError::Protocol(_))) => Err(ErrorKind::Protocol),
        Ok(Err(_)) => Err(ErrorKind::Io),
        Ok(Ok(resp)) => Ok(nacos::check(planned.check, resp.status, resp.body)),
    };
    match result {
        Ok(judged) => {
            if !c.reusable() {
                *conn = None;
            }
            judged
        }
        Err(kind) => {
            *conn = None;
            Err(kind)
        }
    }
}

/// The live progress bar; hidden when stderr is not a terminal.
async fn draw_progress(label: String, total: Duration, live: Arc<Live>, stop: CancellationToken) {
    let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ProgressBar::with_draw_target(Some(total.as_millis() as u64), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    if let Ok(style) =
        ProgressStyle::with_template("{prefix} [{bar:30}] {elapsed}/{duration} {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(label);
    let started = Instant::now();
    let mut prev = (started, 0u64);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let now = Instant::now();
        let done = live.done.load(Ordering::Relaxed);
        let rate = (done - prev.1) as f64 / now.duration_since(prev.0).as_secs_f64().max(1e-3);
        prev = (now, done);
        bar.set_position(now.duration_since(started).as_millis() as u64);
        bar.set_message(format!(
            "{rate:>9.0} req/s  {done} done  {} errors",
            live.errors.load(Ordering::Relaxed)
        ));
    }
    bar.finish_and_clear();
}
