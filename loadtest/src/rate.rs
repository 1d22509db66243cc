//! The request schedule. A phase has one or more streams; each is either closed-loop (send as
//! fast as answers come back) or open-loop at a fixed rate. Open-loop tickets carry the time
//! they were *meant* to be sent (`start + k / rate`), never shifted when the target falls
//! behind, so latency measured from that time includes the queueing a slow server causes
//! (no coordinated omission, as in wrk2).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One stream of a phase.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StreamSpec {
    /// Requests per second (open loop); `None` = closed loop.
    pub rate: Option<f64>,
    /// At most this many tickets (e.g. "delete each registered instance once").
    pub limit: Option<u64>,
    /// Open loop: this long after the phase starts, the rate becomes the second value (an
    /// overload that backs off).
    pub then: Option<(Duration, f64)>,
    /// Senders of this stream alone (each on its own connection), as a client's beat thread
    /// has its own: its requests never wait for a connection behind another stream's.
    pub own_senders: Option<usize>,
}

impl StreamSpec {
    pub fn closed() -> StreamSpec {
        StreamSpec {
            rate: None,
            limit: None,
            then: None,
            own_senders: None,
        }
    }

    pub fn at(rate: Option<f64>) -> StreamSpec {
        StreamSpec {
            rate,
            limit: None,
            then: None,
            own_senders: None,
        }
    }

    /// The same stream, sent by `n` senders of its own.
    pub fn with_own_senders(mut self, n: usize) -> StreamSpec {
        self.own_senders = Some(n.max(1));
        self
    }

    /// The same stream, at `rate` once `after` has passed since the phase started.
    pub fn then_at(mut self, after: Duration, rate: f64) -> StreamSpec {
        self.then = Some((after, rate));
        self
    }

    pub fn limited(mut self, limit: u64) -> StreamSpec {
        self.limit = Some(limit);
        self
    }
}

/// Permission to send one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    pub stream: usize,
    /// 0, 1, 2, … within the stream; scenarios map it to a service / instance.
    pub index: u64,
    /// Open loop: when the request should go out. Closed loop: `None`.
    pub intended: Option<Instant>,
}

/// Where latency is measured from: the intended time when the sender is late (the wait is the
/// server's fault, it is part of the latency), the actual send time when early (the load
/// generator wakes a little ahead of the tick, and that slack is not the server's).
pub fn latency_start(intended: Option<Instant>, sent: Instant) -> Instant {
    intended.map_or(sent, |i| i.min(sent))
}

#[derive(Debug)]
struct StreamState {
    spec: StreamSpec,
    issued: u64,
}

impl StreamState {
    fn exhausted(&self) -> bool {
        self.spec.limit.is_some_and(|l| self.issued >= l)
    }

    fn intended(&self, start: Instant) -> Option<Instant> {
        let rate = self.spec.rate?;
        let k = self.issued as f64;
        // Tickets before the change keep the first rate's grid; the rest start at the change
        // on the second rate's grid. (The epsilon keeps 0.3 s × 10/s at 3 tickets, not 4.)
        let before = self
            .spec
            .then
            .map(|(after, _)| (after.as_secs_f64() * rate - 1e-9).ceil().max(0.0));
        Some(match (self.spec.then, before) {
            (Some((after, then)), Some(before)) if k >= before => {
                start + after + Duration::from_secs_f64((k - before) / then.max(1e-9))
            }
            _ => start + Duration::from_secs_f64(k / rate),
        })
    }
}

/// Hands out tickets to every sender of a phase. Senders share it behind a mutex held only for
/// a few arithmetic steps.
#[derive(Debug)]
pub struct Schedule {
    start: Instant,
    end: Instant,
    streams: Mutex<Vec<StreamState>>,
}

impl Schedule {
    pub fn new(start: Instant, end: Instant, specs: &[StreamSpec]) -> Schedule {
        Schedule {
            start,
            end,
            streams: Mutex::new(
                specs
                    .iter()
                    .map(|&spec| StreamState { spec, issued: 0 })
                    .collect(),
            ),
        }
    }

    /// The next ticket at time `now`, or `None` when the phase is over (its end passed, or
    /// every stream reached its limit). An open-loop ticket that is already due wins over a
    /// closed-loop one, so a fixed-rate stream (e.g. the changes a subscriber should see) keeps
    /// its rate beside a stream that saturates the target.
    pub fn next(&self, now: Instant) -> Option<Ticket> {
        self.next_of(now, None)
    }

    /// [`next`](Self::next) for a sender of `only` (a stream with its own senders), or, with
    /// `None`, for a shared sender (which never takes such a stream's tickets).
    pub fn next_of(&self, now: Instant, only: Option<usize>) -> Option<Ticket> {
        let mut streams = match self.streams.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut earliest: Option<(usize, Instant)> = None;
        let mut closed: Option<usize> = None;
        for (i, s) in streams.iter().enumerate() {
            let mine = match only {
                Some(o) => o == i,
                None => s.spec.own_senders.is_none(),
            };
            if !mine || s.exhausted() {
                continue;
            }
            match s.intended(self.start) {
                Some(t) if t < self.end && earliest.is_none_or(|(_, e)| t < e) => {
                    earliest = Some((i, t));
                }
                // Round-robin between closed streams is not needed: scenarios have at most
                // one; the lowest index wins.
                None if now < self.end && closed.is_none() => closed = Some(i),
                _ => {}
            }
        }
        let (stream, intended) = match (earliest, closed) {
            (Some((i, t)), _) if t <= now => (i, Some(t)),
            (_, Some(c)) => (c, None),
            (Some((i, t)), None) => (i, Some(t)),
            (None, None) => return None,
        };
        let s = &mut streams[stream];
        let index = s.issued;
        s.issued += 1;
        Some(Ticket {
            stream,
            index,
            intended,
        })
    }

    /// True if some stream stopped at its limit (the phase may have ended before its end time,
    /// so throughput must be computed over the time actually used).
    pub fn hit_limit(&self) -> bool {
        let streams = match self.streams.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        streams.iter().any(StreamState::exhausted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_loop_ticks_are_evenly_spaced_and_never_shift_when_late() {
        let t0 = Instant::now();
        let s = Schedule::new(
            t0,
            t0 + Duration::from_secs(1),
            &[StreamSpec::at(Some(100.0))],
        );
        // The sender is 300 ms late for everything: the intended times stay on the original
        // 10 ms grid, so the wait shows up as latency.
        let late = t0 + Duration::from_millis(300);
        let ticks: Vec<Ticket> = (0..5).filter_map(|_| s.next(late)).collect();
        assert_eq!(ticks.len(), 5);
        for (k, t) in ticks.iter().enumerate() {
            assert_eq!(t.index, k as u64);
            assert_eq!(t.intended, Some(t0 + Duration::from_millis(10 * k as u64)));
            let start = latency_start(t.intended, late);
            assert_eq!(late - start, Duration::from_millis(300 - 10 * k as u64));
        }
    }

    #[test]
    fn open_loop_issues_exactly_rate_times_duration() {
        let t0 = Instant::now();
        let s = Schedule::new(
            t0,
            t0 + Duration::from_secs(2),
            &[StreamSpec::at(Some(250.0))],
        );
        let mut n = 0;
        while s.next(t0).is_some() {
            n += 1;
        }
        assert_eq!(n, 500);
        assert!(!s.hit_limit());
    }

    #[test]
    fn a_stream_changes_rate_at_its_change_time() {
        let t0 = Instant::now();
        let s = Schedule::new(
            t0,
            t0 + Duration::from_secs(3),
            &[StreamSpec::at(Some(100.0)).then_at(Duration::from_secs(2), 10.0)],
        );
        let ticks: Vec<Ticket> = std::iter::from_fn(|| s.next(t0)).collect();
        assert_eq!(ticks.len(), 200 + 10, "2 s at 100/s, then 1 s at 10/s");
        assert_eq!(ticks[199].intended, Some(t0 + Duration::from_millis(1_990)));
        assert_eq!(ticks[200].intended, Some(t0 + Duration::from_secs(2)));
        assert_eq!(ticks[201].intended, Some(t0 + Duration::from_millis(2_100)));
    }

    #[test]
    fn a_stream_with_its_own_senders_is_not_served_by_the_shared_ones() {
        let t0 = Instant::now();
        let s = Schedule::new(
            t0,
            t0 + Duration::from_secs(1),
            &[
                StreamSpec::at(Some(4.0)).with_own_senders(2),
                StreamSpec::at(Some(2.0)),
            ],
        );
        let shared: Vec<usize> = std::iter::from_fn(|| s.next(t0))
            .map(|t| t.stream)
            .collect();
        assert_eq!(shared, vec![1, 1]);
        let own: Vec<usize> = std::iter::from_fn(|| s.next_of(t0, Some(0)))
            .map(|t| t.stream)
            .collect();
        assert_eq!(own, vec![0; 4]);
    }

    #[test]
    fn early_senders_measure_from_the_actual_send() {
        let t0 = Instant::now();
        let intended = t0 + Duration::from_millis(5);
        assert_eq!(latency_start(Some(intended), t0), t0);
        assert_eq!(latency_start(None, t0), t0);
    }

    #[test]
    fn closed_loop_stops_at_end_or_limit() {
        let t0 = Instant::now();
        let end = t0 + Duration::from_secs(1);
        let s = Schedule::new(t0, end, &[StreamSpec::closed().limited(3)]);
        assert_eq!(s.next(t0).map(|t| (t.index, t.intended)), Some((0, None)));
        assert!(s.next(t0).is_some());
        assert!(s.next(t0).is_some());
        assert_eq!(s.next(t0), None);
        assert!(s.hit_limit());

        let s = Schedule::new(t0, end, &[StreamSpec::closed()]);
        assert!(s.next(t0).is_some());
        assert_eq!(s.next(end), None);
    }

    #[test]
    fn a_due_open_loop_tick_preempts_the_closed_stream() {
        let t0 = Instant::now();
        let s = Schedule::new(
            t0,
            t0 + Duration::from_secs(10),
            &[StreamSpec::closed(), StreamSpec::at(Some(1.0))],
        );
        // At t0 the periodic tick #0 is due.
        assert_eq!(s.next(t0).map(|t| t.stream), Some(1));
        // Tick #1 is due at t0+1s: until then the closed stream gets everything.
        let half = t0 + Duration::from_millis(500);
        assert_eq!(s.next(half).map(|t| t.stream), Some(0));
        assert_eq!(s.next(half).map(|t| t.stream), Some(0));
        let later = t0 + Duration::from_millis(1000);
        let t = s.next(later);
        assert_eq!(t.map(|t| (t.stream, t.index)), Some((1, 1)));
    }

    #[test]
    fn two_open_loop_streams_interleave_by_intended_time() {
        let t0 = Instant::now();
        let s = Schedule::new(
            t0,
            t0 + Duration::from_secs(1),
            &[StreamSpec::at(Some(2.0)), StreamSpec::at(Some(4.0))],
        );
        let order: Vec<(usize, u64)> = std::iter::from_fn(|| s.next(t0))
            .map(|t| (t.stream, t.index))
            .collect();
        // 0 s: both (stream 0 first), 0.25 s: s1, 0.5 s: both, 0.75 s: s1.
        assert_eq!(order, vec![(0, 0), (1, 0), (1, 1), (0, 1), (1, 2), (1, 3)]);
    }
}
