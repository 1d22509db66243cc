//! Raft cluster formation and membership changes, driven by the discovered member list.
//!
//! **Bootstrap.** openraft's `initialize` is safe on several nodes only with the *identical*
//! member set; anything else risks two clusters. A node therefore initializes only when (1) its
//! own Raft state is empty, (2) the configured member list has reached the expected size, (3)
//! no peer says it is already initialized (then this node waits to be added by that cluster's
//! leader), and (4) every configured member answered with its id: ids are random per data dir,
//! so a founder can only propose members it has heard from, and with everyone heard from
//! every founder proposes the same full set. A lone node cut off from an existing cluster
//! cannot found its own.
//!
//! **Changes.** The leader compares the Raft membership with the configured list every tick:
//! a new member is added as a learner (which waits for it to catch up) and then promoted to
//! voter; a member no longer configured is removed. One change per tick, so a flapping list
//! can never drop a majority at once.
//!
//! **Ids and addresses.** A member's id is drawn at random and pinned in its data dir, so a
//! member found at a new address is the same member, and a member whose data was wiped is a
//! new one (an empty log never acts as the voter it replaces). Raft's RPCs find a member where
//! its pings place it ([`Membership::locate`], through the store's
//! [`Locator`](super::network::Locator)), before (or without) a leader rewriting its stored
//! address. The leader adds or re-addresses a member only under the id the member itself
//! reported. A configured member that does not answer keeps the ids Raft holds at its address
//! (it is down, not gone); one that answers with a new id (wiped data) is added as a learner,
//! promoted once caught up, and only then is the old id at its address removed, so the voter
//! count never drops below what it was.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InitializeError, RaftError};
use openraft::{BasicNode, ChangeMembers, ServerState};
use tokio_util::sync::CancellationToken;

use super::types::NodeId;
use super::PersistentStore;
use crate::membership::Membership;

/// How long adding a learner may wait for it to catch up before the next tick retries.
const LEARNER_CATCH_UP: Duration = Duration::from_secs(10);

/// The configured members by Raft id.
struct Desired {
    members: BTreeMap<NodeId, BasicNode>,
    /// Ids the members reported themselves (this node's included); the others in `members`
    /// are guesses from the address, for members that have not answered.
    reported: BTreeSet<NodeId>,
}

/// The members the list asks for, by id. `known` is Raft's current membership: a configured
/// member that has not answered keeps the ids Raft holds at its address.
fn desired_members(
    self_id: NodeId,
    membership: &Membership,
    known: &BTreeMap<NodeId, BasicNode>,
) -> Desired {
    let mut members = BTreeMap::new();
    let mut silent = Vec::new();
    let configured = membership.configured();
    for addr in configured.iter() {
        let reported = if addr == membership.self_addr() {
            Some(self_id)
        } else {
            membership.peer_status(addr).and_then(|s| s.node_id)
        };
        match reported {
            Some(id) => {
                members.insert(id, BasicNode::new(addr));
            }
            None => silent.push(addr.clone()),
        }
    }
    let reported = members.keys().copied().collect();
    // A silent member's stored ids never displace a reported one: after a move, another
    // member may answer at an address Raft still records for someone else.
    for addr in silent {
        for (id, node) in known.iter().filter(|(_, n)| n.addr == addr) {
            members.entry(*id).or_insert_with(|| node.clone());
        }
    }
    Desired { members, reported }
}

/// Whether a fresh cluster may be founded now (see the module docs).
fn may_bootstrap(membership: &Membership, expect: usize) -> bool {
    let configured = membership.configured();
    if configured.len() < expect.max(1) || !configured.contains(membership.self_addr()) {
        return false;
    }
    for p in membership.peers() {
        match membership.peer_status(&p) {
            Some(st) if st.failures == 0 && st.node_id.is_some() => {
                if st.raft_initialized {
                    return false;
                }
            }
            _ => return false,
        }
    }
    true
}

/// Forms the cluster and follows member-list changes until `shutdown`.
pub async fn run(
    store: PersistentStore,
    membership: Arc<Membership>,
    bootstrap_expect: usize,
    tick: Duration,
    shutdown: CancellationToken,
) {
    let mut every = tokio::time::interval(tick);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        if !store.is_initialized() {
            if may_bootstrap(&membership, bootstrap_expect) {
                bootstrap(&store, &membership).await;
            }
            continue;
        }
        if store.raft().metrics().borrow().state == ServerState::Leader {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = reconcile(&store, &membership) => {}
            }
        }
    }
}

async fn bootstrap(store: &PersistentStore, membership: &Membership) {
    // Every member answered (see `may_bootstrap`): nothing is left to look up.
    let members = desired_members(store.node_id(), membership, &BTreeMap::new()).members;
    match store.raft().initialize(members.clone()).await {
        Ok(()) => {
            let addrs: Vec<&str> = members.values().map(|n| n.addr.as_str()).collect();
            tracing::info!(members = ?addrs, "initialized the raft cluster");
        }
        Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
        Err(e) => tracing::warn!(error = %e, "raft initialize failed; will retry"),
    }
}

pub(crate) async fn reconcile(store: &PersistentStore, membership: &Membership) {
    let (voters, nodes): (BTreeSet<NodeId>, BTreeMap<NodeId, BasicNode>) = {
        let m = store.raft().metrics();
        let m = m.borrow();
        let mem = m.membership_config.membership();
        (
            mem.voter_ids().collect(),
            mem.nodes().map(|(id, n)| (*id, n.clone())).collect(),
        )
    };
    let Desired {
        members: desired,
        reported,
    } = desired_members(store.node_id(), membership, &nodes);
    let raft = store.raft();

    // A known member that now answers at another address (a rescheduled pod with a new IP
    // keeps its pinned id): point Raft at the new address. Safe because the id, and with it
    // the log and votes, is the same node's.
    if let Some((id, node)) = desired.iter().find(|(id, n)| {
        reported.contains(id) && nodes.get(id).is_some_and(|old| old.addr != n.addr)
    }) {
        tracing::info!(id, member = %node.addr, "raft member moved to a new address");
        let change = ChangeMembers::SetNodes(BTreeMap::from([(*id, node.clone())]));
        if let Err(e) = raft.change_membership(change, false).await {
            tracing::warn!(error = %e, "updating a raft member's address failed");
        }
        return;
    }

    // Additions first: a new member becomes a learner, then a voter once caught up.
    if let Some((id, node)) = desired
        .iter()
        .find(|(id, _)| reported.contains(id) && !nodes.contains_key(id))
    {
        tracing::info!(member = %node.addr, id, "adding raft learner");
        match tokio::time::timeout(LEARNER_CATCH_UP, raft.add_learner(*id, node.clone(), true))
            .await
        {
            Ok(Ok(_)) => tracing::info!(member = %node.addr, "raft learner caught up"),
            Ok(Err(e)) => {
                tracing::warn!(member = %node.addr, error = %e, "adding raft learner failed")
            }
            Err(_) => tracing::info!(member = %node.addr, "raft learner still catching up"),
        }
        return;
    }
    if let Some(id) = desired
        .keys()
        .find(|id| nodes.contains_key(id) && !voters.contains(id))
    {
        let mut next = voters.clone();
        next.insert(*id);
        tracing::info!(id, "promoting raft learner to voter");
        if let Err(e) = raft.change_membership(next, false).await {
            tracing::warn!(error = %e, "promoting raft learner failed");
        }
        return;
    }
    // Removals: one member per tick, never the last voter.
    if let Some(id) = nodes.keys().find(|id| !desired.contains_key(id)) {
        let change = if voters.contains(id) {
            if voters.len() <= 1 {
                return;
            }
            let next: BTreeSet<NodeId> = voters.iter().copied().filter(|v| v != id).collect();
            ChangeMembers::ReplaceAllVoters(next)
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([*id]))
        };
        tracing::info!(id, "removing raft member no longer configured");
        if let Err(e) = raft.change_membership(change, false).await {
            tracing::warn!(error = %e, "removing raft member failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::PingReply;
    use crate::raft::types::node_id_for;
    use prometheus::Registry;

    fn ping(addr: &str, initialized: bool) -> Option<PingReply> {
        Some(PingReply {
            address: addr.into(),
            node_id: node_id_for(addr),
            ready: false,
            raft_initialized: initialized,
            standing: true,
            ring: Vec::new(),
            down: Vec::new(),
            members_digest: 0,
            auth: false,
            raft_batches: true,
            relays_beats: true,
            relays_writes: true,
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_member_back_at_a_new_address_is_followed_by_raft() {
        use crate::raft::tests::{create, key, start_node, wait_for, READY};
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = start_node(da.path()).await;
        let b = start_node(db.path()).await;
        let members = BTreeMap::from([
            (a.store.node_id(), BasicNode::new(&a.addr)),
            (b.store.node_id(), BasicNode::new(&b.addr)),
        ]);
        a.store.raft().initialize(members).await.unwrap();
        assert!(a.store.wait_ready(READY).await && b.store.wait_ready(READY).await);
        let ((leader, _leader_dir), (mover, mover_dir)) = if a.store.status().role == "Leader" {
            ((a, da), (b, db))
        } else {
            ((b, db), (a, da))
        };
        let leader = &leader;
        let mover_id = mover.store.node_id();

        // The follower comes back on another port with its data dir (same pinned id).
        mover.store.shutdown().await;
        mover.server.abort();
        let moved = start_node(mover_dir.path()).await;
        assert_eq!(moved.store.node_id(), mover_id);
        assert_ne!(moved.addr, mover.addr);

        let view = Membership::clustered(
            leader.addr.clone(),
            &[leader.addr.clone(), moved.addr.clone()],
            &Registry::new(),
        )
        .unwrap();
        view.record_probe(
            &moved.addr,
            Some(PingReply {
                address: moved.addr.clone(),
                node_id: mover_id,
                ready: false,
                raft_initialized: true,
                standing: true,
                ring: Vec::new(),
                down: Vec::new(),
                members_digest: 0,
                auth: false,
                raft_batches: true,
                relays_beats: true,
                relays_writes: true,
            }),
            3,
        );
        reconcile(&leader.store, &view).await;
        assert_eq!(
            leader.store.status().members.get(&mover_id),
            Some(&moved.addr),
            "raft still points at the old address"
        );
        // Replication reaches the node at its new address.
        leader
            .store
            .write(create("after-move"))
            .await
            .unwrap()
            .unwrap();
        wait_for("the moved node applies new writes", || {
            moved
                .store
                .read(|st| st.service(&key("after-move")).is_some())
        })
        .await;
        for n in [leader, &moved] {
            n.store.shutdown().await;
            n.server.abort();
        }
    }

    /// a's view of a three-member list, and a Raft membership holding a as 7, b as 20 and c
    /// as 30.
    fn a_b_c() -> (Membership, BTreeMap<NodeId, BasicNode>) {
        let all = vec!["a:1".to_string(), "b:1".into(), "c:1".into()];
        let m = Membership::clustered("a:1", &all, &Registry::new()).unwrap();
        let known = BTreeMap::from([
            (7, BasicNode::new("a:1")),
            (20, BasicNode::new("b:1")),
            (30, BasicNode::new("c:1")),
        ]);
        (m, known)
    }

    #[test]
    fn reported_ids_win_and_silent_members_keep_their_raft_ids() {
        // After a move, b answers with c's id, and c is silent: c's stored id must not take
        // b's place, and b is where it answers.
        let (m, known) = a_b_c();
        let moved = PingReply {
            node_id: 30,
            ..ping("b:1", true).unwrap()
        };
        m.record_probe("b:1", Some(moved), 3);
        let d = desired_members(7, &m, &known);
        assert_eq!(d.reported, BTreeSet::from([7, 30]));
        assert_eq!(
            d.members,
            BTreeMap::from([(7, BasicNode::new("a:1")), (30, BasicNode::new("b:1"))]),
            "c is silent and Raft records only b's old id at c's address"
        );
        assert_eq!(m.locate(30), Some("b:1".to_string()));
        assert_eq!(m.locate(20), None, "located by reported id, not by address");
        // A peer whose last probe failed is no longer located by its old answer.
        m.record_probe("b:1", None, 3);
        assert_eq!(m.locate(30), None);
        // Silent at their own addresses, b and c keep the ids Raft holds for them: a member
        // that is down is not a member that left.
        let (quiet, _) = a_b_c();
        let d = desired_members(7, &quiet, &known);
        assert_eq!(d.members, known);
        assert_eq!(d.reported, BTreeSet::from([7]));
    }

    #[test]
    fn a_wiped_member_is_a_new_member_and_its_old_id_goes() {
        let (m, known) = a_b_c();
        m.record_probe(
            "b:1",
            Some(PingReply {
                node_id: 20,
                ..ping("b:1", true).unwrap()
            }),
            3,
        );
        // c's data dir was wiped: it answers at the same address with a new id, uninitialized.
        m.record_probe(
            "c:1",
            Some(PingReply {
                node_id: 31,
                ..ping("c:1", false).unwrap()
            }),
            3,
        );
        let d = desired_members(7, &m, &known);
        assert_eq!(d.reported, BTreeSet::from([7, 20, 31]));
        assert!(d.members.contains_key(&31), "the new identity is added");
        assert!(
            !d.members.contains_key(&30),
            "the old voter's id goes once replaced"
        );
    }

    #[test]
    fn bootstrap_needs_the_expected_list_every_member_and_no_existing_cluster() {
        let reg = Registry::new();
        let all = vec!["a:1".to_string(), "b:1".into(), "c:1".into()];
        let m = Membership::clustered("a:1", &all, &reg).unwrap();
        assert!(!may_bootstrap(&m, 3), "nobody answered yet");
        m.record_probe("b:1", ping("b:1", false), 3);
        assert!(
            !may_bootstrap(&m, 3),
            "c's id is unknown: founders could propose different sets"
        );
        m.record_probe("c:1", ping("c:1", false), 3);
        assert!(may_bootstrap(&m, 3), "every member answered");
        assert!(!may_bootstrap(&m, 4), "fewer members than expected");
        m.record_probe("c:1", ping("c:1", true), 3);
        assert!(
            !may_bootstrap(&m, 3),
            "c belongs to a cluster: wait to be added"
        );

        let lonely = Membership::clustered("z:1", &all, &Registry::new()).unwrap();
        assert!(!may_bootstrap(&lonely, 3), "not in its own member list");
    }
}
