//! Fault schedules against a [`TestCluster`]: what to break, where, for how long, in an order
//! drawn from a seed so that a failing run can be replayed exactly.
//!
//! Each [`Step`] applies one fault to one target node, holds it, then heals it. Targets can be
//! chosen at run time by role (the Raft leader, the Distro owner of a hot service) through the
//! `resolve` callback of [`Step::target`]. The runner that drives a schedule and checks the
//! cluster around it lives in `tests/nemesis.rs`.

use std::time::Duration;

use anyhow::Result;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::cluster::TestCluster;

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// `kill -9`, then a restart on the same data once healed.
    Kill,
    /// `kill -9` of the Raft leader, then a restart on the same data.
    KillLeader,
    /// `kill -9`, then a restart with the data dir wiped (a replaced disk).
    Wipe,
    /// SIGSTOP for the hold, then SIGCONT.
    Pause,
    /// SIGSTOP of the Distro owner of the hot service.
    PauseOwner,
    /// Cut off from every peer both ways (a minority of one; the others are the majority).
    Isolate,
    /// Peers cannot reach the node; it can still reach them (one-way).
    CutInbound,
    /// The target sees both halves, which do not see each other (a "bridge").
    Bridge,
    /// Every link slowed by 150 ms each way.
    Delay,
    /// The node leaves the membership (`cluster.conf` rewritten, process killed); once
    /// healed, a new empty node joins in its place. Needs a cluster with a members file.
    Replace,
}

impl FaultKind {
    /// Every kind, in a fixed order.
    pub const ALL: [FaultKind; 10] = [
        FaultKind::Kill,
        FaultKind::KillLeader,
        FaultKind::Wipe,
        FaultKind::Pause,
        FaultKind::PauseOwner,
        FaultKind::Isolate,
        FaultKind::CutInbound,
        FaultKind::Bridge,
        FaultKind::Delay,
        FaultKind::Replace,
    ];

    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill -9 + restart",
            FaultKind::KillLeader => "kill -9 raft leader + restart",
            FaultKind::Wipe => "kill -9 + restart with data wiped",
            FaultKind::Pause => "SIGSTOP / SIGCONT",
            FaultKind::PauseOwner => "SIGSTOP hot-service owner",
            FaultKind::Isolate => "isolate (minority | majority)",
            FaultKind::CutInbound => "one-way cut (inbound)",
            FaultKind::Bridge => "bridge partition",
            FaultKind::Delay => "delay 150 ms all links",
            FaultKind::Replace => "remove member, add a new one",
        }
    }
}

/// Who a step targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A position among the current members, drawn from the seed (see [`member_at`]).
    Node(usize),
    /// The Raft leader at the time the step starts.
    Leader,
    /// The Distro owner of the hot service at the time the step starts.
    Owner,
}

/// One fault of a schedule.
#[derive(Debug, Clone)]
pub struct Step {
    /// What to break.
    pub kind: FaultKind,
    /// Where.
    pub target: Target,
    /// How long the fault holds before it is healed.
    pub hold: Duration,
}

/// A schedule drawn from `seed`: every kind once in a seeded order (`every_kind`), then random
/// kinds until the holds add up to `budget`. Holds are 5–12 s: some shorter and some longer than
/// the nemesis fleet's 8 s delete timeout.
pub fn schedule(seed: u64, nodes: usize, every_kind: bool, budget: Duration) -> Vec<Step> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut kinds: Vec<FaultKind> = Vec::new();
    if every_kind {
        kinds.extend(FaultKind::ALL);
        kinds.shuffle(&mut rng);
    }
    let mut steps: Vec<Step> = Vec::new();
    let mut used = Duration::ZERO;
    let mut next = 0;
    loop {
        let kind = match kinds.get(next) {
            Some(k) => *k,
            None if used < budget => FaultKind::ALL[rng.gen_range(0..FaultKind::ALL.len())],
            None => break,
        };
        next += 1;
        let target = match kind {
            FaultKind::KillLeader => Target::Leader,
            FaultKind::PauseOwner => Target::Owner,
            _ => Target::Node(rng.gen_range(0..nodes)),
        };
        let hold = Duration::from_millis(rng.gen_range(5_000..=12_000));
        used += hold;
        steps.push(Step { kind, target, hold });
    }
    steps
}

/// The node at position `k` among the current members (members come and go with
/// [`FaultKind::Replace`], so positions drawn by the schedule are taken modulo their number).
pub fn member_at(c: &TestCluster, k: usize) -> usize {
    let members = c.member_indices();
    members.get(k % members.len().max(1)).copied().unwrap_or(0)
}

/// Breaks `kind` at node `i`.
pub fn apply(c: &mut TestCluster, kind: FaultKind, i: usize) -> Result<()> {
    match kind {
        FaultKind::Kill | FaultKind::KillLeader | FaultKind::Wipe => c.kill9(i),
        FaultKind::Pause | FaultKind::PauseOwner => c.pause(i),
        FaultKind::Isolate => c.isolate(i),
        FaultKind::CutInbound => {
            c.proxy(i).cut();
            Ok(())
        }
        FaultKind::Bridge => {
            let others: Vec<usize> = c.member_indices().into_iter().filter(|&j| j != i).collect();
            let (left, right) = others.split_at(others.len() / 2);
            c.partition(&[left.to_vec(), right.to_vec()])
        }
        FaultKind::Delay => {
            for j in c.member_indices() {
                c.proxy(j).set_delay(Duration::from_millis(150));
            }
            Ok(())
        }
        FaultKind::Replace => c.remove_node(i),
    }
}

/// Undoes `kind` at node `i` (a killed node is restarted on its data, or on an empty data dir
/// for [`FaultKind::Wipe`]; readiness is the caller's to wait for). Returns the index of the
/// node that joined for [`FaultKind::Replace`].
pub fn heal(c: &mut TestCluster, kind: FaultKind, i: usize) -> Result<Option<usize>> {
    match kind {
        FaultKind::Kill | FaultKind::KillLeader => c.restart(i)?,
        FaultKind::Wipe => c.wipe_and_restart(i)?,
        FaultKind::Pause | FaultKind::PauseOwner => c.resume(i)?,
        FaultKind::Isolate | FaultKind::CutInbound | FaultKind::Bridge => c.heal()?,
        FaultKind::Delay => {
            for j in c.member_indices() {
                c.proxy(j).set_delay(Duration::ZERO);
            }
        }
        FaultKind::Replace => return c.add_node().map(Some),
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_replay_from_their_seed_and_cover_every_kind() {
        let a = schedule(7, 3, true, Duration::from_secs(60));
        let b = schedule(7, 3, true, Duration::from_secs(60));
        let names = |s: &[Step]| {
            s.iter()
                .map(|x| (x.kind, format!("{:?}", x.target), x.hold))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&a), names(&b));
        assert_ne!(
            names(&a),
            names(&schedule(8, 3, true, Duration::from_secs(60)))
        );
        for k in FaultKind::ALL {
            assert!(a.iter().any(|s| s.kind == k), "{k:?} missing");
        }
        let held: Duration = a.iter().map(|s| s.hold).sum();
        assert!(held >= Duration::from_secs(60));
        assert!(a.iter().all(|s| (5..=12).contains(&s.hold.as_secs())));
        // Without the every-kind pass, a zero budget is an empty schedule.
        assert!(schedule(1, 3, false, Duration::ZERO).is_empty());
    }
}
