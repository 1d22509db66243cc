//! Who is in the cluster, who is alive, and who owns which service.
//!
//! The configured member list comes from a discovery source (static list, `cluster.conf`,
//! address server, DNS; see `nacre_config::members`). This module probes every other member
//! periodically over the internal ping route and keeps a state per member: **UP** (answered),
//! **SUSPICIOUS** (missed a few probes: keeps its services so one lost probe moves nothing),
//! **DOWN** (missed `down_after` probes in a row). The consistent-hash ring is rebuilt from this
//! node plus every live, ready peer whenever that set changes; subscribers (the node, for
//! ownership grace) are told through a watch channel. A standalone node has a ring of itself.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use nacre_ring::{MemberState, Members, Ring, ServiceKey};
use parking_lot::RwLock;
use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::peer::PeerClient;

pub use nacre_ring::wire::{PingReply, PING_PATH};

/// This node's ownership on one ring (see [`Membership::ownership`]).
pub struct Ownership<'a> {
    ring: Arc<Ring>,
    me: &'a str,
    standalone: bool,
}

impl Ownership<'_> {
    /// Whether this node owns `key` on this ring.
    pub fn owns(&self, key: &ServiceKey) -> bool {
        self.standalone || self.ring.owner(key) == Some(self.me)
    }

    /// Whether this node owned `key` on `ring` (an earlier ring than this one).
    pub fn owned_on(&self, ring: &Ring, key: &ServiceKey) -> bool {
        self.standalone || ring.owner(key) == Some(self.me)
    }

    /// The ring this ownership was taken from.
    pub fn ring(&self) -> &Arc<Ring> {
        &self.ring
    }
}

/// What the members this node can reach say about it (see [`Membership::vouchers`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vouchers {
    /// Reachable members that do not hold this node DOWN, itself included.
    pub holding_me: usize,
    /// Reachable members whose ring equals this node's, itself included.
    pub same_ring: usize,
    /// Configured members, itself included.
    pub configured: usize,
}

/// Probe timing.
#[derive(Debug, Clone, Copy)]
pub struct ProbeSettings {
    /// Time between probe rounds.
    pub interval: Duration,
    /// Time allowed for one probe.
    pub timeout: Duration,
    /// Consecutive failed probes after which a member is DOWN.
    pub down_after: u32,
}

/// A peer as last probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    /// Liveness.
    pub state: MemberState,
    /// Whether the peer said it serves clients.
    pub ready: bool,
    /// Whether the peer's Raft is initialized.
    pub raft_initialized: bool,
    /// The peer's Raft id, once it answered.
    pub node_id: Option<u64>,
    /// Failed probes in a row.
    pub failures: u32,
    /// The peer's ownership ring as it last reported it (`None` until it answers).
    pub ring: Option<Members>,
    /// Whether its last answer held this node DOWN.
    pub holds_me_down: bool,
    /// Whether its last answer said it reads packed Raft entries (`PingReply::raft_batches`).
    pub raft_batches: bool,
}

impl PeerStatus {
    fn unknown() -> Self {
        // A member nobody has probed yet is given the benefit of the doubt for routing only
        // after its first answer; until then it is suspicious and not ready.
        Self {
            state: MemberState::Suspicious,
            ready: false,
            raft_initialized: false,
            node_id: None,
            failures: 0,
            ring: None,
            holds_me_down: false,
            raft_batches: false,
        }
    }

    /// Whether this peer should own services: answering and ready.
    pub fn in_ring(&self) -> bool {
        self.state.is_live() && self.ready
    }
}

/// One member as the cluster API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberView {
    /// Advertised address.
    pub address: String,
    /// UP / SUSPICIOUS / DOWN.
    pub state: MemberState,
    /// Serving clients.
    pub ready: bool,
    /// Owns services on the ring.
    pub in_ring: bool,
    /// This node.
    #[serde(rename = "self")]
    pub is_self: bool,
}

struct View {
    configured: Members,
    peers: BTreeMap<String, PeerStatus>,
    ring: Arc<Ring>,
}

/// Metrics of membership.
#[derive(Clone)]
struct MembershipMetrics {
    state: IntGaugeVec,
    changes: IntCounterVec,
    ring_members: IntGauge,
}

impl MembershipMetrics {
    fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let state = IntGaugeVec::new(
            Opts::new(
                "nacre_member_state",
                "1 for each member's current state (UP / SUSPICIOUS / DOWN)",
            ),
            &["member", "state"],
        )?;
        let changes = IntCounterVec::new(
            Opts::new(
                "nacre_member_state_changes_total",
                "Member state changes seen by this node, by new state",
            ),
            &["state"],
        )?;
        let ring_members = IntGauge::new("nacre_ring_members", "Members on the ownership ring")?;
        registry.register(Box::new(state.clone()))?;
        registry.register(Box::new(changes.clone()))?;
        registry.register(Box::new(ring_members.clone()))?;
        Ok(Self {
            state,
            changes,
            ring_members,
        })
    }
}

/// The node's membership view. Cheap to query on every request.
pub struct Membership {
    self_addr: String,
    standalone: bool,
    view: RwLock<View>,
    ring_tx: watch::Sender<Arc<Ring>>,
    metrics: Option<MembershipMetrics>,
}

impl Membership {
    /// A single-node view: this node owns everything and has no peers.
    pub fn standalone(self_addr: impl Into<String>) -> Self {
        let self_addr = self_addr.into();
        let ring = Arc::new(Ring::new(&Members::new([self_addr.clone()])));
        let (ring_tx, _) = watch::channel(ring.clone());
        Self {
            view: RwLock::new(View {
                configured: Members::new([self_addr.clone()]),
                peers: BTreeMap::new(),
                ring,
            }),
            self_addr,
            standalone: true,
            ring_tx,
            metrics: None,
        }
    }

    /// A cluster member starting from the configured `members`. Until peers answer probes
    /// the ring holds only this node.
    pub fn clustered(
        self_addr: impl Into<String>,
        members: &[String],
        registry: &Registry,
    ) -> Result<Self, prometheus::Error> {
        let mut m = Self::standalone(self_addr);
        m.standalone = false;
        m.metrics = Some(MembershipMetrics::new(registry)?);
        m.set_configured(members);
        Ok(m)
    }

    /// Whether this node runs alone.
    pub fn is_standalone(&self) -> bool {
        self.standalone
    }

    /// This node's advertised address.
    pub fn self_addr(&self) -> &str {
        &self.self_addr
    }

    /// The current ring.
    pub fn ring(&self) -> Arc<Ring> {
        self.view.read().ring.clone()
    }

    /// Ring changes, for ownership hand-over.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Ring>> {
        self.ring_tx.subscribe()
    }

    /// The owner of `key` (this node when alone).
    pub fn owner(&self, key: &ServiceKey) -> String {
        let ring = self.ring();
        ring.owner(key).unwrap_or(&self.self_addr).to_string()
    }

    /// Whether this node owns `key`.
    pub fn is_owner(&self, key: &ServiceKey) -> bool {
        self.ownership().owns(key)
    }

    /// Which services this node owns, on one snapshot of the ring: a walk over many services
    /// asks this once, so a ring change midway cannot count a service twice or not at all.
    pub fn ownership(&self) -> Ownership<'_> {
        Ownership {
            ring: self.ring(),
            me: &self.self_addr,
            standalone: self.standalone,
        }
    }

    /// The configured members (including this node when configured).
    pub fn configured(&self) -> Members {
        self.view.read().configured.clone()
    }

    /// Every configured member except this node, whatever its state.
    pub fn peers(&self) -> Vec<String> {
        self.view.read().peers.keys().cloned().collect()
    }

    /// Peers that answered their last probe.
    pub fn live_peers(&self) -> Vec<String> {
        self.view
            .read()
            .peers
            .iter()
            .filter(|(_, s)| s.state == MemberState::Up)
            .map(|(a, _)| a.clone())
            .collect()
    }

    /// How many members vouch for this node, itself included: (those it can reach that do not
    /// hold it DOWN, those it can reach whose ring equals its own), and how many members are
    /// configured (itself counted even when missing from the list). Reachable peers are UP or
    /// SUSPICIOUS, the states that keep a peer on the ring; a peer that has not answered yet
    /// vouches for nothing.
    pub fn vouchers(&self) -> Vouchers {
        let view = self.view.read();
        let mine = view.ring.members();
        let (mut holding_me, mut same_ring) = (1, 1);
        for st in view.peers.values().filter(|s| s.state.is_live()) {
            let Some(ring) = &st.ring else { continue };
            holding_me += usize::from(!st.holds_me_down);
            same_ring += usize::from(ring == mine);
        }
        Vouchers {
            holding_me,
            same_ring,
            configured: view.configured.len()
                + usize::from(!view.configured.contains(&self.self_addr)),
        }
    }

    /// The peers this node holds DOWN (sent in its ping answer, rule O3).
    pub fn down_peers(&self) -> Vec<String> {
        self.view
            .read()
            .peers
            .iter()
            .filter(|(_, s)| s.state == MemberState::Down)
            .map(|(a, _)| a.clone())
            .collect()
    }

    /// Whether `addr` answered its last probe (see [`Membership::live_peers`]).
    pub fn is_live(&self, addr: &str) -> bool {
        self.view
            .read()
            .peers
            .get(addr)
            .is_some_and(|s| s.state == MemberState::Up)
    }

    /// A peer's last probe status.
    pub fn peer_status(&self, addr: &str) -> Option<PeerStatus> {
        self.view.read().peers.get(addr).cloned()
    }

    /// The configured address of the peer whose last probe answered with Raft id `id`.
    pub fn locate(&self, id: u64) -> Option<String> {
        self.view
            .read()
            .peers
            .iter()
            .find(|(_, st)| st.node_id == Some(id) && st.failures == 0)
            .map(|(addr, _)| addr.clone())
    }

    /// Every member for the cluster API, this node first.
    pub fn members(&self, self_ready: bool) -> Vec<MemberView> {
        let view = self.view.read();
        let mut out = vec![MemberView {
            address: self.self_addr.clone(),
            state: MemberState::Up,
            ready: self_ready,
            in_ring: view.ring.members().contains(&self.self_addr),
            is_self: true,
        }];
        out.extend(view.peers.iter().map(|(a, s)| MemberView {
            address: a.clone(),
            state: s.state,
            ready: s.ready,
            in_ring: view.ring.members().contains(a),
            is_self: false,
        }));
        out
    }

    /// Replaces the configured member list (discovery found a change).
    pub fn set_configured(&self, members: &[String]) {
        let mut view = self.view.write();
        let configured = Members::new(members.iter().cloned());
        if !configured.contains(&self.self_addr) && !self.standalone {
            tracing::warn!(self_addr = %self.self_addr, "this node is not in its own member list; it still serves, but peers will not route to it");
        }
        let old: Vec<String> = view.peers.keys().cloned().collect();
        view.peers
            .retain(|addr, _| configured.contains(addr) && *addr != self.self_addr);
        for addr in configured.iter() {
            if *addr != self.self_addr && !view.peers.contains_key(addr) {
                view.peers.insert(addr.clone(), PeerStatus::unknown());
            }
        }
        let new: Vec<String> = view.peers.keys().cloned().collect();
        if old != new {
            tracing::info!(members = ?configured.to_vec(), "member list changed");
        }
        if let Some(m) = &self.metrics {
            for addr in old.iter().filter(|a| !view.peers.contains_key(*a)) {
                for s in ["UP", "SUSPICIOUS", "DOWN"] {
                    let _ = m.state.remove_label_values(&[addr, s]);
                }
            }
        }
        view.configured = configured;
        self.rebuild(&mut view);
    }

    /// Whether every configured peer has said it reads packed Raft entries (true alone): the
    /// leader's proposer packs concurrent writes only then (see `raft::propose`, rule B7).
    pub fn peers_read_batches(&self) -> bool {
        self.view.read().peers.values().all(|p| p.raft_batches)
    }

    /// Records the outcome of one probe of `addr`.
    pub fn record_probe(&self, addr: &str, reply: Option<PingReply>, down_after: u32) {
        let mut view = self.view.write();
        let Some(st) = view.peers.get_mut(addr) else {
            return;
        };
        let before = st.state;
        match reply {
            Some(r) => {
                st.failures = 0;
                st.state = MemberState::Up;
                st.ready = r.ready;
                st.raft_initialized = r.raft_initialized;
                st.node_id = Some(r.node_id);
                st.holds_me_down = r.down.contains(&self.self_addr);
                st.ring = Some(Members::new(r.ring));
                st.raft_batches = r.raft_batches;
            }
            None => {
                st.failures = st.failures.saturating_add(1);
                st.state = if st.failures >= down_after {
                    MemberState::Down
                } else {
                    MemberState::Suspicious
                };
                if st.state == MemberState::Down {
                    st.ready = false;
                }
            }
        }
        let after = st.state;
        if before != after {
            tracing::info!(member = %addr, from = %before, to = %after, "member state changed");
            if let Some(m) = &self.metrics {
                m.changes.with_label_values(&[after.as_str()]).inc();
            }
        }
        if let Some(m) = &self.metrics {
            for s in [MemberState::Up, MemberState::Suspicious, MemberState::Down] {
                m.state
                    .with_label_values(&[addr, s.as_str()])
                    .set(i64::from(s == after));
            }
        }
        self.rebuild(&mut view);
    }

    fn rebuild(&self, view: &mut View) {
        let live = std::iter::once(self.self_addr.clone()).chain(
            view.peers
                .iter()
                .filter(|(_, s)| s.in_ring())
                .map(|(a, _)| a.clone()),
        );
        let members = Members::new(live);
        if members == *view.ring.members() {
            return;
        }
        tracing::info!(ring = ?members.to_vec(), "ownership ring changed");
        if let Some(m) = &self.metrics {
            m.ring_members.set(members.len() as i64);
        }
        let ring = Arc::new(Ring::new(&members));
        view.ring = ring.clone();
        self.ring_tx.send_replace(ring);
    }
}

/// Follows discovery and probes peers until `shutdown`.
pub async fn run(
    membership: Arc<Membership>,
    mut discovered: watch::Receiver<Vec<String>>,
    client: PeerClient,
    probe: ProbeSettings,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(probe.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = discovered.changed() => {
                if changed.is_err() {
                    // Discovery stopped (shutdown in progress); keep probing the last list.
                    discovered.mark_unchanged();
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tick.tick() => probe_all(&membership, &client, probe).await,
                    }
                    continue;
                }
                let list = discovered.borrow_and_update().clone();
                membership.set_configured(&list);
            }
            _ = tick.tick() => probe_all(&membership, &client, probe).await,
        }
    }
}

async fn probe_all(membership: &Membership, client: &PeerClient, probe: ProbeSettings) {
    let peers = membership.peers();
    let probes = peers.iter().map(|addr| async move {
        let reply = client
            .get_json::<PingReply>(addr, PING_PATH, probe.timeout)
            .await
            .map_err(|e| tracing::debug!(peer = %addr, error = %e, "probe failed"))
            .ok();
        (addr, reply)
    });
    for (addr, reply) in futures::future::join_all(probes).await {
        membership.record_probe(addr, reply, probe.down_after);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(addr: &str, ready: bool) -> Option<PingReply> {
        Some(PingReply {
            address: addr.into(),
            node_id: 1,
            ready,
            raft_initialized: true,
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

    #[test]
    fn ring_follows_probe_results() {
        let reg = Registry::new();
        let members = vec!["a:1".to_string(), "b:1".into(), "c:1".into()];
        let m = Membership::clustered("a:1", &members, &reg).unwrap();
        assert_eq!(
            m.ring().len(),
            1,
            "peers join the ring only once they answer"
        );
        m.record_probe("b:1", reply("b:1", true), 3);
        m.record_probe("c:1", reply("c:1", false), 3);
        assert_eq!(m.ring().members().to_vec(), vec!["a:1", "b:1"]);
        m.record_probe("c:1", reply("c:1", true), 3);
        assert_eq!(m.ring().len(), 3);

        // One or two missed probes: suspicious, still owning its services.
        m.record_probe("b:1", None, 3);
        m.record_probe("b:1", None, 3);
        assert_eq!(m.peer_status("b:1").unwrap().state, MemberState::Suspicious);
        assert_eq!(m.ring().len(), 3);
        m.record_probe("b:1", None, 3);
        assert_eq!(m.peer_status("b:1").unwrap().state, MemberState::Down);
        assert_eq!(m.ring().members().to_vec(), vec!["a:1", "c:1"]);
    }

    /// Rule B7 of `raft::propose`: packed entries only once every peer said it reads them.
    #[test]
    fn batches_wait_for_every_peer_to_read_them() {
        let reg = Registry::new();
        let all = ["a:1".into(), "b:1".into(), "c:1".into()];
        let m = Membership::clustered("a:1", &all, &reg).unwrap();
        assert!(!m.peers_read_batches(), "nobody answered yet");
        m.record_probe("b:1", reply("b:1", true), 3);
        let older = PingReply {
            raft_batches: false,
            ..reply("c:1", true).unwrap()
        };
        m.record_probe("c:1", Some(older), 3);
        assert!(!m.peers_read_batches(), "c runs an older version");
        m.record_probe("c:1", reply("c:1", true), 3);
        assert!(m.peers_read_batches());
        m.record_probe("c:1", None, 3);
        assert!(m.peers_read_batches(), "a missed probe changes no version");
        assert!(Membership::standalone("a:1").peers_read_batches());
    }

    #[test]
    fn removed_members_leave_and_new_ones_start_unknown() {
        let reg = Registry::new();
        let m = Membership::clustered("a:1", &["a:1".into(), "b:1".into()], &reg).unwrap();
        m.record_probe("b:1", reply("b:1", true), 3);
        let rx = m.subscribe();
        m.set_configured(&["a:1".into(), "c:1".into()]);
        assert!(rx.has_changed().unwrap());
        assert_eq!(m.peers(), vec!["c:1"]);
        assert_eq!(m.ring().len(), 1);
        assert!(m.is_owner(&ServiceKey::new("public", "G", "s")));
    }

    #[test]
    fn peers_vouch_unless_they_hold_this_node_down_and_rings_are_compared() {
        let reg = Registry::new();
        let all = vec!["a:1".to_string(), "b:1".into(), "c:1".into()];
        let m = Membership::clustered("a:1", &all, &reg).unwrap();
        let nobody = m.vouchers();
        assert_eq!(
            (nobody.holding_me, nobody.same_ring, nobody.configured),
            (1, 1, 3),
            "peers that never answered vouch for nothing"
        );
        let answer = |ring: &[&str], down: &[&str]| PingReply {
            ring: ring.iter().map(|s| s.to_string()).collect(),
            down: down.iter().map(|s| s.to_string()).collect(),
            ..reply("x", true).unwrap()
        };
        m.record_probe("b:1", Some(answer(&["a:1", "b:1", "c:1"], &[])), 3);
        m.record_probe("c:1", Some(answer(&["a:1", "b:1", "c:1"], &[])), 3);
        let v = m.vouchers();
        assert_eq!((v.holding_me, v.same_ring), (3, 3));
        // A one-way cut: both answer, and both hold a DOWN.
        m.record_probe("b:1", Some(answer(&["b:1", "c:1"], &["a:1"])), 3);
        m.record_probe("c:1", Some(answer(&["b:1", "c:1"], &["a:1"])), 3);
        let v = m.vouchers();
        assert_eq!((v.holding_me, v.same_ring), (1, 1));
        // A peer that has not seen a ready yet (not in its ring, not DOWN) still vouches.
        m.record_probe("b:1", Some(answer(&["b:1", "c:1"], &[])), 3);
        assert_eq!(m.vouchers().holding_me, 2);
    }

    #[test]
    fn standalone_owns_everything() {
        let m = Membership::standalone("a:1");
        let k = ServiceKey::new("public", "G", "s");
        assert!(m.is_owner(&k));
        assert_eq!(m.owner(&k), "a:1");
        assert!(m.peers().is_empty());
    }
}
