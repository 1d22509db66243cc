//! Overload: how late this node's workers run, and which requests it turns away because of it.
//!
//! A node offered more than its CPU can serve must keep its instances alive first. It measures
//! how far behind it runs, and while behind it judges no silence it has not caught up with
//! (rule E6 in [`crate::distro`]). Its reads wait their turns in their sockets while beats go
//! first (rule G3 in [`nacre_ring::turns`]). An operator may also have it answer a growing share of
//! client reads at once with Nacos's 503 instead of queueing them, so that what it does serve
//! (beats and writes first of all) is served within a lag target.
//!
//! - **G1 — lag.** A thread outside the runtime sends a timestamped datagram every
//!   [`PROBE_EVERY`] to a probe task inside it; how long the datagram waited before the task
//!   read it is the node's lag: how long a request that arrives now waits to be read. The probe
//!   is woken by the same I/O driver as the clients' sockets, behind the readiness events
//!   already pending, so it sees the backlog a timer would jump (tokio runs a just-woken timer
//!   task ahead of the queue). The node keeps the latest lag and the peak since the expiry
//!   sweep last read it; the sweep judges silence only up to `now − peak` (rule E6 in
//!   [`crate::distro`]), since beats sent within that window may still wait in its queues.
//!   A backlog still building counts too: while the probe runs, the time since it last read a
//!   stamp (less one interval) is a lag already under way, even before a stamp shows it (the
//!   sweep's own timer can run ahead of the unread stamps). *Tests:*
//!   `tests::g1_the_peak_lag_is_kept_until_the_sweep_reads_it`,
//!   `tests::g1_a_backlog_not_yet_read_counts`, `tests::g1_the_probe_sees_a_stalled_runtime`;
//!   `tests/overload.rs`.
//! - **G2 — shed reads, never beats.** While the lag is above the target (`overload_lag_ms`;
//!   0, the default, turns shedding off), every late probe raises the share of client reads
//!   turned away, the more the later it was ([`STEP_UP`] per target of excess, at least half
//!   of that, at most [`MAX_STEP_UP`]); every probe at most half the target lowers it by
//!   [`STEP_DOWN`] (all the way down in 20 such probes, about a second); in between it holds.
//!   Reads are the `GET`s of the Nacos naming and config APIs ([`sheddable`]); one turned away
//!   is answered before authentication, parsing or rendering with 503, body [`SHED_BODY`] and
//!   `Retry-After: 1`, which the legacy clients treat as "try another server" (they keep the
//!   list they have; a subscribed list turned away renews no push subscription, which the
//!   client's next list does). Beats, registrations, deregistrations, config publishes and
//!   listener long-polls (`POST`), internal peer and gateway traffic, health and metrics are
//!   never turned away: they keep instances alive, the cluster together and the operator
//!   informed. A read costs about as much to refuse as to serve from the list cache: measured
//!   at twice a CPU-limited node's capacity, shedding lowered the lists served and slowed the
//!   recovery without sparing a beat (`docs/benchmarks.md`, "Graceful overload"), so it is off
//!   unless an operator whose reads are costly (large, often-changing services) turns it on.
//!   *Tests:* `tests::g2_*`; `tests/overload.rs`.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::Method;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// How often the probe thread stamps a datagram (rule G1). Expiry cares about lags of
/// hundreds of milliseconds; a finer grain only adds wake-ups to a node that is short of CPU.
pub const PROBE_EVERY: Duration = Duration::from_millis(50);
/// Share of reads turned away, in thousandths.
const ALL: u32 = 1_000;
/// Rule G2: a late probe raises the share by this many thousandths per target of excess
/// lag (a probe 2× the target late: +10 %)…
pub const STEP_UP: u32 = 100;
/// …but by no more than this at once.
pub const MAX_STEP_UP: u32 = 250;
/// Rule G2: an on-time probe lowers the share by this many thousandths (from everything to
/// nothing in 20 probes, about a second).
pub const STEP_DOWN: u32 = 50;
/// Body of a turned-away read.
pub const SHED_BODY: &str = "server is overloaded, please try again later";

/// The node's lag and its read-shedding share (rules G1, G2). Domain state only: the probe
/// task feeds it, the HTTP layer asks it.
#[derive(Debug)]
pub struct Overload {
    /// Lag above which reads are shed (µs); 0 = never shed.
    target_us: u64,
    lag_us: AtomicU64,
    peak_lag_us: AtomicU64,
    shed_permille: AtomicU32,
    seq: AtomicU64,
    /// What `last_read_us` counts from.
    base: Instant,
    /// When the probe last read a stamp (µs after `base`); [`NOT_PROBING`] while no probe
    /// runs, so a stopped probe never holds expiry back.
    last_read_us: AtomicU64,
}

/// `last_read_us` while no probe runs.
const NOT_PROBING: u64 = u64::MAX;

impl Overload {
    /// A node that sheds reads once its lag passes `target` (never, when zero).
    pub fn new(target: Duration) -> Self {
        Self {
            target_us: target.as_micros() as u64,
            lag_us: AtomicU64::new(0),
            peak_lag_us: AtomicU64::new(0),
            shed_permille: AtomicU32::new(0),
            seq: AtomicU64::new(0),
            base: Instant::now(),
            last_read_us: AtomicU64::new(NOT_PROBING),
        }
    }

    /// Whether this node sheds reads at all (rule G2: a zero target turns it off).
    pub fn sheds(&self) -> bool {
        self.target_us > 0
    }

    /// Marks the probe running (reading its first stamp now) or stopped.
    fn set_probing(&self, running: bool) {
        let at = if running {
            self.base.elapsed().as_micros() as u64
        } else {
            NOT_PROBING
        };
        self.last_read_us.store(at, Ordering::Relaxed);
    }

    /// Records one probe's lateness (rule G1) and moves the shed share (rule G2). Called by
    /// one probe task; readers only load.
    pub fn observe(&self, lag: Duration) {
        self.observe_at(lag, Instant::now());
    }

    /// [`observe`](Self::observe), read at `at`.
    fn observe_at(&self, lag: Duration, at: Instant) {
        if self.last_read_us.load(Ordering::Relaxed) != NOT_PROBING {
            let read = at.saturating_duration_since(self.base).as_micros() as u64;
            self.last_read_us.store(read, Ordering::Relaxed);
        }
        let lag_us = lag.as_micros() as u64;
        self.lag_us.store(lag_us, Ordering::Relaxed);
        self.peak_lag_us.fetch_max(lag_us, Ordering::Relaxed);
        if !self.sheds() {
            return;
        }
        let share = self.shed_permille.load(Ordering::Relaxed);
        let next = if lag_us > self.target_us {
            let excess =
                (lag_us - self.target_us) as u128 * STEP_UP as u128 / self.target_us as u128;
            let up = (excess as u32).clamp(STEP_UP / 2, MAX_STEP_UP);
            (share + up).min(ALL)
        } else if lag_us <= self.target_us / 2 {
            share.saturating_sub(STEP_DOWN)
        } else {
            share
        };
        self.shed_permille.store(next, Ordering::Relaxed);
    }

    /// The latest measured lag.
    pub fn lag(&self) -> Duration {
        Duration::from_micros(self.lag_us.load(Ordering::Relaxed))
    }

    /// The largest lag since the previous call (rule G1; read by the expiry sweep, rule E6),
    /// or the backlog still unread if larger. The window restarts at the latest lag, so a lag
    /// still going on is never forgotten.
    pub fn take_peak_lag(&self) -> Duration {
        self.take_peak_lag_at(Instant::now())
    }

    /// [`take_peak_lag`](Self::take_peak_lag) at `now`.
    fn take_peak_lag_at(&self, now: Instant) -> Duration {
        let latest = self.lag_us.load(Ordering::Relaxed);
        let peak = self.peak_lag_us.swap(latest, Ordering::Relaxed).max(latest);
        let unread = match self.last_read_us.load(Ordering::Relaxed) {
            NOT_PROBING => 0,
            read => (now.saturating_duration_since(self.base).as_micros() as u64)
                .saturating_sub(read)
                .saturating_sub(PROBE_EVERY.as_micros() as u64),
        };
        Duration::from_micros(peak.max(unread))
    }

    /// Share of reads turned away now, 0.0–1.0.
    pub fn shed_share(&self) -> f64 {
        f64::from(self.shed_permille.load(Ordering::Relaxed)) / f64::from(ALL)
    }

    /// Whether to turn the next read away (rule G2). Successive reads are spread over the
    /// share by a scrambled sequence number, so no client is singled out.
    pub fn shed_next(&self) -> bool {
        let share = self.shed_permille.load(Ordering::Relaxed);
        if share == 0 {
            return false;
        }
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        // Fibonacci hashing: consecutive numbers land far apart in 0..1000.
        let slot = (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % u64::from(ALL);
        slot < u64::from(share)
    }
}

/// Whether a request is a client read rule G2 may turn away: a `GET` of the Nacos naming or
/// config API, other than the health and metrics endpoints ([`nacre_ring::turns::is_client_read`],
/// the reads rule G3 queues too; its tests list them).
pub fn sheddable(method: &Method, path: &str) -> bool {
    nacre_ring::turns::is_client_read(method.as_str(), path)
}

/// The probe of rule G1 until `stop`: a sender thread stamps a datagram every
/// [`PROBE_EVERY`]; this task reads each one, feeds how long it waited to `overload` and the
/// gauges. The thread is joined before the task returns.
pub async fn probe(overload: Arc<Overload>, metrics: Metrics, stop: CancellationToken) {
    let (tx, rx) = match probe_sockets() {
        Ok(pair) => pair,
        Err(e) => {
            tracing::warn!(error = %e, "overload probe unavailable: this node will not measure its lag or shed reads");
            return;
        }
    };
    let base = std::time::Instant::now();
    let sender = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("nacre-lag-probe".into())
            .spawn(move || {
                while !stop.is_cancelled() {
                    std::thread::sleep(PROBE_EVERY);
                    let sent = base.elapsed().as_nanos() as u64;
                    match tx.send(&sent.to_le_bytes()) {
                        Ok(_) => {}
                        // A full buffer means the reader is far behind already: the stamps
                        // queued show that; this one can go.
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        // The reading end is gone (its task was dropped): nothing to probe for.
                        Err(_) => break,
                    }
                }
            })
    };
    let sender = match sender {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "overload probe thread did not start");
            return;
        }
    };
    // Also when this task is dropped rather than stopped: a probe not running must never
    // look like a backlog.
    let probing = Probing::start(&overload);
    let mut buf = [0u8; 8];
    loop {
        let n = tokio::select! {
            _ = stop.cancelled() => break,
            r = rx.recv(&mut buf) => r,
        };
        let Ok(8) = n else { continue };
        let sent = std::time::Duration::from_nanos(u64::from_le_bytes(buf));
        let lag = base.elapsed().saturating_sub(sent);
        overload.observe(lag);
        metrics.overload_lag.set(lag.as_secs_f64());
        metrics.overload_shed_share.set(overload.shed_share());
    }
    drop(probing);
    // The thread sees the cancellation within one probe interval.
    let _ = tokio::task::spawn_blocking(move || sender.join()).await;
}

/// Marks the probe running while it lives.
struct Probing<'a>(&'a Overload);

impl<'a> Probing<'a> {
    fn start(o: &'a Overload) -> Self {
        o.set_probing(true);
        Self(o)
    }
}

impl Drop for Probing<'_> {
    fn drop(&mut self) {
        self.0.set_probing(false);
    }
}

/// The probe's datagram pair: a blocking-free sending end for the thread, the receiving end
/// registered with the runtime's I/O driver.
fn probe_sockets() -> std::io::Result<(std::os::unix::net::UnixDatagram, tokio::net::UnixDatagram)>
{
    let (tx, rx) = std::os::unix::net::UnixDatagram::pair()?;
    tx.set_nonblocking(true)?;
    rx.set_nonblocking(true)?;
    Ok((tx, tokio::net::UnixDatagram::from_std(rx)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn shed_of(o: &Overload, reads: u32) -> u32 {
        (0..reads).filter(|_| o.shed_next()).count() as u32
    }

    #[test]
    fn g1_the_peak_lag_is_kept_until_the_sweep_reads_it() {
        let o = Overload::new(ms(100));
        o.observe(ms(3));
        o.observe(ms(900));
        o.observe(ms(2));
        assert_eq!(o.lag(), ms(2));
        assert_eq!(o.take_peak_lag(), ms(900));
        // The next window starts at the latest lag, not at zero.
        assert_eq!(o.take_peak_lag(), ms(2));
        o.observe(ms(400));
        assert_eq!(o.take_peak_lag(), ms(400));
    }

    #[test]
    fn g1_a_backlog_not_yet_read_counts() {
        let o = Overload::new(ms(100));
        let t0 = o.base;
        assert_eq!(
            o.take_peak_lag_at(t0 + ms(5_000)),
            ms(0),
            "no probe: no backlog"
        );
        o.set_probing(true);
        o.observe_at(ms(1), t0 + ms(1_000));
        // Nothing read for 700 ms: a lag of at least 650 ms (less one interval) is under way.
        assert_eq!(o.take_peak_lag_at(t0 + ms(1_700)), ms(650));
        o.observe_at(ms(2), t0 + ms(1_710));
        assert_eq!(o.take_peak_lag_at(t0 + ms(1_715)), ms(2));
        o.set_probing(false);
        assert_eq!(
            o.take_peak_lag_at(t0 + ms(9_000)),
            ms(2),
            "a stopped probe holds nothing"
        );
    }

    #[test]
    fn g2_late_probes_raise_the_share_and_on_time_ones_lower_it() {
        let o = Overload::new(ms(100));
        assert_eq!(shed_of(&o, 1_000), 0, "no lag: nothing shed");
        o.observe(ms(60));
        assert_eq!(o.shed_share(), 0.0, "under the target");
        o.observe(ms(200));
        assert_eq!(o.shed_share(), 0.1, "one target of excess: +10 %");
        o.observe(ms(101));
        assert_eq!(o.shed_share(), 0.15, "barely late still raises it");
        o.observe(ms(75));
        assert_eq!(o.shed_share(), 0.15, "between half and the target it holds");
        o.observe(ms(50));
        assert_eq!(o.shed_share(), 0.1, "on time lowers it");
        for _ in 0..10 {
            o.observe(ms(5_000));
        }
        assert_eq!(o.shed_share(), 1.0, "capped at everything");
        assert_eq!(shed_of(&o, 1_000), 1_000);
        for _ in 0..20 {
            o.observe(ms(1));
        }
        assert_eq!(
            o.shed_share(),
            0.0,
            "a second on time serves every read again"
        );
    }

    #[test]
    fn g2_the_share_is_spread_over_successive_reads() {
        let o = Overload::new(ms(100));
        for _ in 0..3 {
            o.observe(ms(200));
        }
        assert_eq!(o.shed_share(), 0.3);
        let shed = shed_of(&o, 10_000);
        assert!((2_900..=3_100).contains(&shed), "{shed} of 10000");
        // No long run of one answer: every 100 reads see some of each.
        for _ in 0..50 {
            let s = shed_of(&o, 100);
            assert!((10..=50).contains(&s), "{s} of 100");
        }
    }

    #[test]
    fn g2_a_zero_target_never_sheds() {
        let o = Overload::new(Duration::ZERO);
        o.observe(ms(10_000));
        assert_eq!(o.shed_share(), 0.0);
        assert!(!o.shed_next());
        assert_eq!(o.take_peak_lag(), ms(10_000), "the lag is still measured");
    }

    #[tokio::test]
    async fn g1_the_probe_sees_a_stalled_runtime() {
        let overload = Arc::new(Overload::new(ms(100)));
        let metrics = Metrics::new().expect("metrics");
        let stop = CancellationToken::new();
        let probe = tokio::spawn(probe(overload.clone(), metrics.clone(), stop.clone()));
        tokio::time::sleep(ms(100)).await;
        assert!(
            overload.take_peak_lag() < ms(100),
            "an idle runtime is on time"
        );
        // Block this (single-threaded) runtime, as a CPU-bound stretch of work would.
        std::thread::sleep(ms(400));
        tokio::time::sleep(ms(50)).await;
        let peak = overload.take_peak_lag();
        assert!(peak >= ms(300), "a 400 ms stall measured as {peak:?}");
        assert!(overload.shed_share() > 0.0, "a stall past the target sheds");
        assert!(metrics.overload_lag.get() >= 0.0);
        stop.cancel();
        probe.await.expect("the probe stops on cancellation");
    }
}
