//! Latency histograms and error tallies per operation. Each load-generating task owns its own
//! [`Stats`] (no shared counters on the hot path); they are merged once the phase ends.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::error::LoadtestError;

/// Highest latency the histograms track exactly (60 s, in µs); slower answers are clamped, and a
/// request timeout is normally far below this.
pub const MAX_LATENCY_US: u64 = 60_000_000;

/// What went wrong with one request, coarse enough to be a report row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorKind {
    /// TCP connect failed or was refused.
    Connect,
    /// No complete answer within the request timeout.
    Timeout,
    /// The connection broke mid-request (reset, early EOF).
    Io,
    /// The answer was not parseable HTTP/1.1.
    Protocol,
    /// An HTTP status outside 2xx.
    HttpStatus(u16),
    /// HTTP 200 but a Nacos `code` other than success (e.g. 20404 for a beat of an unknown
    /// instance).
    NacosCode(i64),
    /// HTTP 200 with a body the Nacos contract does not allow (e.g. not `ok` after a write).
    UnexpectedBody,
    /// A config listener never learned of a publish made well before the run ended.
    Missed,
    /// A list lacked instances that were registered and kept alive.
    MissingInstances,
    /// Never sent: the harness could not send it within the request timeout of its scheduled
    /// time (every connection was busy), and dropped it as a client would.
    Abandoned,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Connect => f.write_str("connect"),
            ErrorKind::Timeout => f.write_str("timeout"),
            ErrorKind::Io => f.write_str("io"),
            ErrorKind::Protocol => f.write_str("protocol"),
            ErrorKind::HttpStatus(s) => write!(f, "http_{s}"),
            ErrorKind::NacosCode(c) => write!(f, "nacos_{c}"),
            ErrorKind::UnexpectedBody => f.write_str("unexpected_body"),
            ErrorKind::Missed => f.write_str("missed"),
            ErrorKind::MissingInstances => f.write_str("missing_instances"),
            ErrorKind::Abandoned => f.write_str("abandoned"),
        }
    }
}

/// An empty latency histogram (µs, 1 µs .. 60 s, 3 significant digits).
pub fn new_histogram() -> Result<Histogram<u64>, LoadtestError> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
        .map_err(|e| LoadtestError::Histogram(format!("{e:?}")))
}

/// Records `latency` in µs, clamped into the histogram's range so a pathological answer is
/// counted as "at least 60 s" rather than dropped.
pub fn record_latency(h: &mut Histogram<u64>, latency: Duration) {
    let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    h.saturating_record(us.clamp(1, MAX_LATENCY_US));
}

/// Milliseconds at quantile `q` (0.0..=1.0); 0 for an empty histogram.
pub fn quantile_ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        return 0.0;
    }
    h.value_at_quantile(q) as f64 / 1000.0
}

/// One operation's outcome counts and success latencies.
#[derive(Clone, Debug)]
pub struct OpStats {
    /// Latencies of successful requests only: an error answered in 1 µs must not make the
    /// server look fast.
    pub latency: Histogram<u64>,
    pub ok: u64,
    pub errors: BTreeMap<ErrorKind, u64>,
}

impl OpStats {
    fn new_from(proto: &Histogram<u64>) -> OpStats {
        OpStats {
            latency: Histogram::new_from(proto),
            ok: 0,
            errors: BTreeMap::new(),
        }
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn requests(&self) -> u64 {
        self.ok + self.error_count()
    }

    /// Adds `other`'s counts into `self`.
    pub fn merge(&mut self, other: &OpStats) -> Result<(), LoadtestError> {
        self.latency
            .add(&other.latency)
            .map_err(|e| LoadtestError::Histogram(format!("{e:?}")))?;
        self.ok += other.ok;
        for (k, n) in &other.errors {
            *self.errors.entry(*k).or_insert(0) += n;
        }
        Ok(())
    }
}

/// Upper bounds (ms) of the latency buckets one second of a [`Timeline`] keeps: coarse, so a
/// long run costs a few hundred bytes per second per sender.
pub const SECOND_BUCKETS_MS: [f64; 13] = [
    1.0,
    2.0,
    5.0,
    10.0,
    20.0,
    50.0,
    100.0,
    200.0,
    500.0,
    1_000.0,
    2_000.0,
    5_000.0,
    f64::INFINITY,
];

/// One operation's outcomes in one second of the measured window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Second {
    pub ok: u64,
    /// Answered 503: the target turned the request away (overload, not ready).
    pub unavailable: u64,
    /// Every other failure.
    pub errors: u64,
    buckets: [u64; SECOND_BUCKETS_MS.len()],
}

impl Second {
    /// The bucket bound under which 99 % of this second's successes were answered (ms; 0
    /// without any).
    pub fn p99_ms(&self) -> f64 {
        if self.ok == 0 {
            return 0.0;
        }
        let want = (self.ok as f64 * 0.99).ceil() as u64;
        let mut seen = 0;
        for (n, bound) in self.buckets.iter().zip(SECOND_BUCKETS_MS) {
            seen += n;
            if seen >= want {
                return bound;
            }
        }
        f64::INFINITY
    }

    fn merge(&mut self, o: &Second) {
        self.ok += o.ok;
        self.unavailable += o.unavailable;
        self.errors += o.errors;
        for (a, b) in self.buckets.iter_mut().zip(o.buckets) {
            *a += b;
        }
    }
}

/// Outcomes per operation per second of the measured window: how a target behaved over time
/// (an overload and its recovery), which the whole-run figures average away.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Timeline {
    pub ops: BTreeMap<&'static str, Vec<Second>>,
}

/// Seconds a timeline keeps at most (a request recorded later falls into the last one).
const TIMELINE_SECONDS: usize = 3_600;

impl Timeline {
    /// Records one request of `op` begun `second` seconds into the measured window.
    pub fn record(
        &mut self,
        op: &'static str,
        second: usize,
        outcome: Result<Duration, ErrorKind>,
    ) {
        let seconds = self.ops.entry(op).or_default();
        let at = second.min(TIMELINE_SECONDS - 1);
        if seconds.len() <= at {
            seconds.resize(at + 1, Second::default());
        }
        let s = &mut seconds[at];
        match outcome {
            Ok(latency) => {
                s.ok += 1;
                let ms = latency.as_secs_f64() * 1e3;
                let b = SECOND_BUCKETS_MS
                    .iter()
                    .position(|bound| ms <= *bound)
                    .unwrap_or(SECOND_BUCKETS_MS.len() - 1);
                s.buckets[b] += 1;
            }
            Err(ErrorKind::HttpStatus(503)) => s.unavailable += 1,
            Err(_) => s.errors += 1,
        }
    }

    fn merge(&mut self, other: &Timeline) {
        for (op, seconds) in &other.ops {
            let mine = self.ops.entry(op).or_default();
            if mine.len() < seconds.len() {
                mine.resize(seconds.len(), Second::default());
            }
            for (a, b) in mine.iter_mut().zip(seconds) {
                a.merge(b);
            }
        }
    }
}

/// Per-operation stats keyed by operation name, in name order.
#[derive(Clone, Debug)]
pub struct Stats {
    proto: Histogram<u64>,
    pub ops: BTreeMap<&'static str, OpStats>,
    /// The same outcomes second by second.
    pub timeline: Timeline,
}

impl Stats {
    pub fn new() -> Result<Stats, LoadtestError> {
        Ok(Stats {
            proto: new_histogram()?,
            ops: BTreeMap::new(),
            timeline: Timeline::default(),
        })
    }

    fn op_mut(&mut self, op: &'static str) -> &mut OpStats {
        let proto = &self.proto;
        self.ops
            .entry(op)
            .or_insert_with(|| OpStats::new_from(proto))
    }

    pub fn record_ok(&mut self, op: &'static str, latency: Duration) {
        let s = self.op_mut(op);
        s.ok += 1;
        record_latency(&mut s.latency, latency);
    }

    pub fn record_error(&mut self, op: &'static str, kind: ErrorKind) {
        *self.op_mut(op).errors.entry(kind).or_insert(0) += 1;
    }

    /// Adds every operation of `other` into `self`.
    pub fn merge(&mut self, other: &Stats) -> Result<(), LoadtestError> {
        for (op, s) in &other.ops {
            self.op_mut(op).merge(s)?;
        }
        self.timeline.merge(&other.timeline);
        Ok(())
    }

    /// All operations folded into one.
    pub fn total(&self) -> Result<OpStats, LoadtestError> {
        let mut t = OpStats::new_from(&self.proto);
        for s in self.ops.values() {
            t.merge(s)?;
        }
        Ok(t)
    }

    pub fn requests(&self) -> u64 {
        self.ops.values().map(OpStats::requests).sum()
    }

    pub fn errors(&self) -> u64 {
        self.ops.values().map(OpStats::error_count).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn merge_adds_counts_and_keeps_the_union_of_latencies() {
        let mut a = Stats::new().unwrap();
        let mut b = Stats::new().unwrap();
        for i in 1..=100 {
            a.record_ok("list", ms(i));
        }
        for _ in 0..100 {
            b.record_ok("list", ms(1000));
        }
        b.record_ok("beat", ms(2));
        b.record_error("beat", ErrorKind::NacosCode(20404));
        a.record_error("list", ErrorKind::Timeout);
        a.merge(&b).unwrap();

        let list = &a.ops["list"];
        assert_eq!(list.ok, 200);
        assert_eq!(list.errors[&ErrorKind::Timeout], 1);
        // Half the samples are 1..100 ms, half are 1 s: the median sits at the top of the
        // first half, p99 in the second.
        let p50 = quantile_ms(&list.latency, 0.5);
        assert!((99.0..=101.0).contains(&p50), "p50 {p50}");
        let p99 = quantile_ms(&list.latency, 0.99);
        assert!((999.0..=1001.0).contains(&p99), "p99 {p99}");
        assert_eq!(a.ops["beat"].ok, 1);
        assert_eq!(a.requests(), 200 + 1 + 2);
        assert_eq!(a.errors(), 2);

        let total = a.total().unwrap();
        assert_eq!(total.ok, 201);
        assert_eq!(total.latency.len(), 201);
        assert_eq!(total.error_count(), 2);
    }

    #[test]
    fn latencies_outside_the_range_are_clamped_not_dropped() {
        let mut s = Stats::new().unwrap();
        s.record_ok("x", Duration::from_nanos(10));
        s.record_ok("x", Duration::from_secs(3600));
        let h = &s.ops["x"].latency;
        assert_eq!(h.len(), 2);
        assert!(h.max() >= MAX_LATENCY_US - MAX_LATENCY_US / 1000);
        assert_eq!(h.min(), 1);
    }

    #[test]
    fn a_timeline_keeps_each_second_apart_and_merges_by_second() {
        let mut a = Timeline::default();
        let mut b = Timeline::default();
        for i in 0..99 {
            a.record("list", 0, Ok(ms(1 + i % 2)));
        }
        a.record("list", 0, Ok(ms(300)));
        a.record("list", 2, Err(ErrorKind::HttpStatus(503)));
        b.record("list", 2, Err(ErrorKind::Timeout));
        b.record("list", 2, Ok(ms(40)));
        b.record("beat", 5, Ok(ms(1)));
        a.merge(&b);
        let list = &a.ops["list"];
        assert_eq!(list.len(), 3);
        assert_eq!((list[0].ok, list[0].p99_ms()), (100, 2.0));
        assert_eq!(
            list[1],
            Second::default(),
            "a second without requests stays empty"
        );
        assert_eq!(
            (
                list[2].ok,
                list[2].unavailable,
                list[2].errors,
                list[2].p99_ms()
            ),
            (1, 1, 1, 50.0)
        );
        assert_eq!(a.ops["beat"].len(), 6);
    }

    #[test]
    fn error_kinds_have_stable_report_keys() {
        assert_eq!(ErrorKind::HttpStatus(503).to_string(), "http_503");
        assert_eq!(ErrorKind::NacosCode(20404).to_string(), "nacos_20404");
        assert_eq!(ErrorKind::Connect.to_string(), "connect");
        assert_eq!(quantile_ms(&new_histogram().unwrap(), 0.99), 0.0);
    }
}
