//! When this node may act on an instance's silence: the expiry gate.
//!
//! The rules themselves are stated in the [`crate::distro`] module doc (rules E1–E4, E6); this
//! module enforces them, from facts the caller gathers each sweep tick (time, readiness, how
//! many members this node can reach, the ring). It holds no I/O: the decision is a value, the
//! caller applies it to the store under one sweep.

use std::sync::Arc;

use nacre_ring::Ring;

/// What this node knows of its own position at one sweep tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// The node is ready (start-up snapshot loaded, persistent state caught up).
    pub ready: bool,
    /// Members it can reach that do not hold it DOWN, itself included.
    pub holding_me: usize,
    /// Members it can reach whose ring equals its own, itself included.
    pub same_ring: usize,
    /// Members the cluster should have: the configured list, at least `bootstrap_expect`.
    pub expected: usize,
    /// A standalone node answers to nobody.
    pub standalone: bool,
}

impl Standing {
    fn majority(&self, n: usize) -> bool {
        self.standalone || n * 2 > self.expected.max(1)
    }

    /// Rule O3: a node takes client writes only while ready and a majority of the cluster
    /// (itself included) answers it without holding it DOWN. A node cut off, or one its peers
    /// have declared down while it still reaches them (a one-way cut), has no standing.
    pub fn may_serve(&self) -> bool {
        self.ready && self.majority(self.holding_me)
    }

    /// Rule E1: a node judges silence only while it may serve and a majority it can reach
    /// (itself included) has the same ring, so that every judge agrees who owns what. While
    /// rings disagree (a bridge partition, a change still spreading), nobody judges.
    pub fn may_judge(&self) -> bool {
        self.may_serve() && self.majority(self.same_ring)
    }

    /// Why the node may not judge, for logs and metrics.
    pub fn hold_reason(&self) -> Option<&'static str> {
        if !self.ready {
            Some("not_ready")
        } else if !self.may_serve() {
            Some("no_majority")
        } else if !self.may_judge() {
            Some("rings_disagree")
        } else {
            None
        }
    }
}

/// What to do at one sweep tick.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Whether to expire at all this tick (rule E1); `false` holds every deadline.
    pub sweep: bool,
    /// Rule E2: milliseconds the node could not observe (a pause or stall between ticks);
    /// every deadline moves later by this much. 0 when the tick was on time.
    pub unobserved_ms: u64,
    /// Rule E6: silence is judged up to this moment, not `now`: beats sent after it may still
    /// wait in the node's own queues (`now` less the peak lag since the last tick).
    pub horizon_ms: u64,
    /// Rule E3: the node has just (re)gained the standing to judge; every deadline restarts
    /// from now, since it saw no beats while it had none.
    pub restart_all: bool,
    /// Rule E4: the ring changed since the last sweep; services owned now but not under this
    /// ring get a full timeout of grace before anything of theirs can expire.
    pub took_over_from: Option<Arc<Ring>>,
    /// Why the sweep is held, when it is.
    pub held: Option<&'static str>,
    /// This tick is the first held one after judging (for a single log line).
    pub lost_standing: bool,
}

/// The clock facts of one sweep tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    /// Now.
    pub now_ms: u64,
    /// The sweep interval.
    pub interval_ms: u64,
    /// The largest scheduling lag measured since the previous tick (rule G1 in
    /// [`crate::overload`]).
    pub lag_ms: u64,
}

impl Tick {
    /// A tick at `now_ms` of a node that ran on time.
    pub fn on_time(now_ms: u64, interval_ms: u64) -> Self {
        Self {
            now_ms,
            interval_ms,
            lag_ms: 0,
        }
    }
}

/// The gate's memory between ticks.
#[derive(Debug, Default)]
pub struct ExpiryGate {
    last_tick_ms: Option<u64>,
    judging: bool,
    last_ring: Option<Arc<Ring>>,
}

/// How late a tick may be before the time in between counts as unobserved: one tick interval
/// of slack, and at least a second (a busy scheduler is not a pause).
pub fn gap_tolerance_ms(interval_ms: u64) -> u64 {
    interval_ms.max(1_000)
}

impl ExpiryGate {
    /// A gate that has not ticked yet (its first judging tick restarts every deadline).
    pub fn new() -> Self {
        Self::default()
    }

    /// Decides the tick at `now_ms`, `interval_ms` after the previous one was due, on a node
    /// that ran up to `lag_ms` late since the previous tick.
    pub fn decide(&mut self, tick: Tick, standing: &Standing, ring: &Arc<Ring>) -> Plan {
        let Tick {
            now_ms,
            interval_ms,
            lag_ms,
        } = tick;
        let horizon_ms = now_ms.saturating_sub(lag_ms);
        let gap = self.last_tick_ms.map_or(0, |t| now_ms.saturating_sub(t));
        self.last_tick_ms = Some(now_ms);
        let unobserved_ms = if gap > interval_ms + gap_tolerance_ms(interval_ms) {
            gap - interval_ms
        } else {
            0
        };
        if let Some(reason) = standing.hold_reason() {
            let lost_standing = self.judging;
            self.judging = false;
            return Plan {
                sweep: false,
                unobserved_ms,
                horizon_ms,
                restart_all: false,
                took_over_from: None,
                held: Some(reason),
                lost_standing,
            };
        }
        let restart_all = !self.judging;
        self.judging = true;
        let took_over_from = match self.last_ring.replace(ring.clone()) {
            Some(old) if old.members() != ring.members() => Some(old),
            _ => None,
        };
        Plan {
            sweep: true,
            unobserved_ms,
            horizon_ms,
            restart_all,
            took_over_from,
            held: None,
            lost_standing: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use nacre_ring::Members;

    use super::*;

    fn ring(members: &[&str]) -> Arc<Ring> {
        Arc::new(Ring::new(&Members::new(
            members.iter().map(|m| m.to_string()),
        )))
    }

    fn standing(ready: bool, reachable: usize, expected: usize) -> Standing {
        Standing {
            ready,
            holding_me: reachable,
            same_ring: reachable,
            expected,
            standalone: false,
        }
    }

    #[test]
    fn e1_only_a_ready_node_in_contact_with_a_majority_judges() {
        assert!(!standing(false, 3, 3).may_judge(), "not ready");
        assert!(standing(true, 2, 3).may_judge());
        assert!(!standing(true, 1, 3).may_judge(), "cut off from both peers");
        assert!(!standing(true, 2, 4).may_judge(), "half is not a majority");
        assert!(standing(true, 3, 5).may_judge());
        assert!(
            !standing(true, 1, 2).may_judge(),
            "two members: a partition looks like a crash"
        );
        let alone = Standing {
            ready: true,
            holding_me: 1,
            same_ring: 1,
            expected: 1,
            standalone: true,
        };
        assert!(alone.may_judge());
        // An empty member list (a failed first lookup) must not make one node a majority:
        // `expected` carries bootstrap_expect then.
        assert!(!standing(true, 1, 3).may_judge());

        let mut gate = ExpiryGate::new();
        let r = ring(&["a:1", "b:1", "c:1"]);
        let held = gate.decide(Tick::on_time(1_000, 1_000), &standing(true, 1, 3), &r);
        assert!(!held.sweep);
        assert_eq!(held.held, Some("no_majority"));
        let held = gate.decide(Tick::on_time(2_000, 1_000), &standing(false, 3, 3), &r);
        assert_eq!(held.held, Some("not_ready"));
    }

    #[test]
    fn e1_o3_a_node_its_peers_do_not_count_neither_serves_nor_judges() {
        // One-way cut: it reaches both peers, but they hold it DOWN.
        let cut = Standing {
            ready: true,
            holding_me: 1,
            same_ring: 1,
            expected: 3,
            standalone: false,
        };
        assert!(!cut.may_serve() && !cut.may_judge());
        assert_eq!(cut.hold_reason(), Some("no_majority"));
        // Bridge: the node in the middle is held by both sides, but neither side's ring is
        // its own: it serves writes, and judges nothing.
        let bridge = Standing {
            ready: true,
            holding_me: 3,
            same_ring: 1,
            expected: 3,
            standalone: false,
        };
        assert!(bridge.may_serve() && !bridge.may_judge());
        assert_eq!(bridge.hold_reason(), Some("rings_disagree"));
        let mut gate = ExpiryGate::new();
        assert!(
            !gate
                .decide(Tick::on_time(0, 1_000), &bridge, &ring(&["a:1"]))
                .sweep
        );
    }

    #[test]
    fn e2_time_the_node_could_not_observe_moves_every_deadline() {
        let mut gate = ExpiryGate::new();
        let r = ring(&["a:1"]);
        let s = standing(true, 1, 1);
        gate.decide(Tick::on_time(0, 1_000), &s, &r);
        assert_eq!(
            gate.decide(Tick::on_time(1_000, 1_000), &s, &r)
                .unobserved_ms,
            0
        );
        assert_eq!(
            gate.decide(Tick::on_time(2_900, 1_000), &s, &r)
                .unobserved_ms,
            0,
            "a late tick within tolerance is not a pause"
        );
        // 40 s between two ticks: everything but one normal interval went unseen.
        assert_eq!(
            gate.decide(Tick::on_time(42_900, 1_000), &s, &r)
                .unobserved_ms,
            39_000
        );
        assert_eq!(
            gate.decide(Tick::on_time(43_900, 1_000), &s, &r)
                .unobserved_ms,
            0
        );
        // Also while holding: the gap is reported so the caller can account for it.
        let held = gate.decide(Tick::on_time(60_000, 1_000), &standing(false, 1, 1), &r);
        assert_eq!((held.sweep, held.unobserved_ms), (false, 15_100));
    }

    #[test]
    fn e6_silence_is_judged_only_up_to_the_time_the_node_has_caught_up_with() {
        let mut gate = ExpiryGate::new();
        let r = ring(&["a:1"]);
        let s = standing(true, 1, 1);
        assert_eq!(
            gate.decide(Tick::on_time(10_000, 1_000), &s, &r).horizon_ms,
            10_000
        );
        let late = Tick {
            now_ms: 11_000,
            interval_ms: 1_000,
            lag_ms: 2_500,
        };
        let plan = gate.decide(late, &s, &r);
        assert_eq!((plan.sweep, plan.horizon_ms), (true, 8_500));
        assert_eq!(plan.unobserved_ms, 0, "a lag is not a pause: nothing moves");
    }

    #[test]
    fn e3_regaining_the_standing_restarts_every_deadline() {
        let mut gate = ExpiryGate::new();
        let r = ring(&["a:1", "b:1", "c:1"]);
        let first = gate.decide(Tick::on_time(0, 1_000), &standing(true, 3, 3), &r);
        assert!(
            first.restart_all,
            "the first judging tick restarts deadlines"
        );
        assert!(
            !gate
                .decide(Tick::on_time(1_000, 1_000), &standing(true, 3, 3), &r)
                .restart_all
        );
        assert!(
            gate.decide(Tick::on_time(2_000, 1_000), &standing(true, 1, 3), &r)
                .lost_standing
        );
        assert!(
            !gate
                .decide(Tick::on_time(3_000, 1_000), &standing(true, 1, 3), &r)
                .lost_standing
        );
        let back = gate.decide(Tick::on_time(4_000, 1_000), &standing(true, 2, 3), &r);
        assert!(back.sweep && back.restart_all, "{back:?}");
        assert!(
            !gate
                .decide(Tick::on_time(5_000, 1_000), &standing(true, 2, 3), &r)
                .restart_all
        );
    }

    #[test]
    fn e4_a_ring_change_is_reported_with_the_ring_it_replaces() {
        let mut gate = ExpiryGate::new();
        let s = standing(true, 3, 3);
        let three = ring(&["a:1", "b:1", "c:1"]);
        let two = ring(&["a:1", "b:1"]);
        assert!(gate
            .decide(Tick::on_time(0, 1_000), &s, &three)
            .took_over_from
            .is_none());
        assert!(gate
            .decide(Tick::on_time(1_000, 1_000), &s, &three.clone())
            .took_over_from
            .is_none());
        let moved = gate.decide(Tick::on_time(2_000, 1_000), &s, &two);
        assert_eq!(
            moved.took_over_from.map(|r| r.members().to_vec()),
            Some(three.members().to_vec())
        );
        // An equal ring rebuilt as a new value is no change.
        assert!(gate
            .decide(Tick::on_time(3_000, 1_000), &s, &ring(&["b:1", "a:1"]))
            .took_over_from
            .is_none());
    }
}
