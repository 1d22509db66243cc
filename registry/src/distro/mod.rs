//! Ephemeral (AP) instance data and its Distro-style replication.
//!
//! [`store`] holds the data with versions; [`replicate`] pushes local changes to peers within
//! milliseconds; [`verify`] compares digests periodically and repairs what pushes missed; the
//! wire messages live in [`wire`]; [`expiry`] decides when this node may act on silence;
//! [`startup`] loads the peers' data before a starting node reports ready. [`Distro`] ties
//! them to the membership view.
//!
//! # The rules (each enforced in one place, each with its test)
//!
//! **Ownership and writes**
//! - **O1 — owner.** A service's owner is its owner on this node's ring: this node plus every
//!   peer that answers probes and is ready (`membership`). Only the owner judges its
//!   instances' silence. *Test:* `membership::tests::ring_follows_probe_results`.
//! - **O2 — forwarding.** A client's write for a service another node owns is replayed on the
//!   owner once (never re-forwarded). It is applied here instead only when the owner gave no
//!   answer at all (refused, or closed before a response: a dead process) or left this node's
//!   ring while the request waited (frozen, cut off); an owner that holds the request past the
//!   timeout gets the client a 503 to retry (`api::forward`). *Tests:*
//!   `tests/cluster.rs` `writes_on_any_node_are_listed_by_every_node`; `tests/faults.rs`
//!   `registrations_acknowledged_while_the_owner_is_frozen_survive_its_return`.
//! - **O3 — writes need standing.** A clustered node takes client instance writes
//!   (registrations, beats, updates) only while it is ready and a majority of the expected
//!   members (itself included) answer its probes without holding it DOWN (peers send the
//!   members they hold down in every ping answer). Otherwise (cut off, or declared down by
//!   peers it still reaches: a one-way cut) it answers them 503 so that
//!   clients fail over, and says so in its ping answer so that gateways route around it; it
//!   still serves reads. A beat taken by such a node reaches no owner the cluster agrees on,
//!   and the majority would expire the instance for want of it. *Tests:* `tests/faults.rs`
//!   `a_node_cut_off_from_the_majority_sends_writes_elsewhere`;
//!   `expiry::tests::e1_o3_a_node_its_peers_do_not_count_neither_serves_nor_judges`.
//! - **V1 — versions and merge.** Every visible change gets a hybrid-logical-clock version
//!   above every version this node has seen; each instance carries the version of its own
//!   last change and a removed one leaves a stamped tombstone. A peer merges a record instance
//!   by instance (higher stamp wins, a tombstone beats an instance no newer than it, an
//!   instance only one side knows is kept) and sends its copy back when it holds something the
//!   sender lacked: delivery is idempotent and order-free, and two registrations accepted on
//!   two nodes at once both survive (`store`). *Tests:*
//!   `store::tests::versions_grow_and_order_across_nodes`,
//!   `store::tests::concurrent_registrations_on_two_nodes_both_survive`,
//!   `store::tests::a_removal_beats_an_older_copy_and_loses_to_a_newer_registration`,
//!   `store::tests::deletion_replicates_and_stale_records_do_not_resurrect`;
//!   `tests/faults.rs` `registrations_acknowledged_while_the_owner_is_frozen_survive_its_return`.
//! - **V2 — deltas.** A change to one instance (a client's registration, update, patch or
//!   removal, a beat that revives it, an expiry) is owed to each peer as that instance only:
//!   a *partial* record carrying the service's version and floor, the named instances with
//!   their stamps and the removals among them. The receiver merges it by V1 but reads nothing
//!   into what it leaves out, so only a named instance can make its copy diverge. A delta that
//!   creates the service at the receiver (it missed earlier changes) is answered with a
//!   request for the whole record. Per peer, the instances owed for one service accumulate
//!   until a batch takes them; past `replicate::DELTA_LIMIT` instances, or on any change to
//!   the service as a whole (deletion, batch metadata, a repair), the whole record goes
//!   instead. A write therefore costs the instances it touched, not the size of its service.
//!   *Tests:* `tests/prop_deltas.rs` `deltas_converge_like_whole_records`,
//!   `store::tests::v2_a_delta_carries_only_the_named_instances_and_says_nothing_of_the_rest`,
//!   `store::tests::v2_a_delta_that_creates_the_service_asks_for_the_whole_record`,
//!   `store::tests::v2_a_receiver_newer_on_a_named_instance_sends_its_copy_back`,
//!   `replicate::tests::v2_pending_instances_accumulate_until_the_whole_record_is_cheaper`.
//! - **V3 — read-your-writes.** A client's instance write is answered once the live peers
//!   acknowledged it (at most `WRITE_ACK_TIMEOUT`): legacy clients pick a server per request,
//!   and the next one may read from another node. The one exception is a write a gateway
//!   routed here by owner (`x-nacre-owner-routed`, believed only with the cluster secret's
//!   proof) that this node owns and no peer forwarded: the gateway sends that client's reads
//!   of the service to the node it picks by the same rule, so the write is answered once
//!   applied here and reaches the peers in the next batch. A node forwarding a write drops the
//!   mark, so the owner waits for the forwarding node, where the gateway reads. Several
//!   gateways give read-your-writes across one another while their views of the nodes agree.
//!   *Tests:* `tests/gateway.rs`
//!   `owners_answer_gateway_writes_at_once_and_every_other_write_after_its_peers`,
//!   `writes_reach_the_owner_and_reads_right_after_see_them`; `tests/cluster.rs`
//!   `writes_on_any_node_are_listed_by_every_node`.
//!
//! **Expiry** (`expiry::ExpiryGate`, applied by [`Distro::sweep`]): a node must never act on a
//! silence it could not have observed.
//! - **E1 — standing.** A node judges silence only while it may serve (rule O3) and a majority
//!   of the expected members it can reach (itself included) report the same ring as its own
//!   (peers send their ring in every ping answer). A starting, lagging or cut-off node holds
//!   every deadline: the beats went to the nodes that can see them, and its removals would
//!   carry fresh versions that win everywhere; while rings disagree (a bridge partition, a
//!   change still spreading) nobody judges, since two nodes could each believe they own a
//!   service. `bootstrap_expect` is a floor under the member count, so an empty first lookup
//!   cannot make one node a majority. *Tests:*
//!   `expiry::tests::e1_only_a_ready_node_in_contact_with_a_majority_judges`,
//!   `expiry::tests::e1_o3_a_node_its_peers_do_not_count_neither_serves_nor_judges`;
//!   `tests/faults.rs` `an_isolated_node_coming_back_never_removes_live_instances`;
//!   `tests/nemesis.rs` (one-way cut and bridge partition with a gateway in front).
//! - **E2 — continuity.** A sweep tick that comes more than one interval (at least 1 s) late
//!   means the node was paused or starved: every deadline moves later by the time it could not
//!   observe, before anything is judged. *Tests:*
//!   `expiry::tests::e2_time_the_node_could_not_observe_moves_every_deadline`;
//!   `tests/faults.rs` `a_paused_node_resuming_never_removes_live_instances`.
//! - **E3 — regained standing.** When a node (re)gains the standing of E1, every deadline
//!   restarts from now: it saw no beats while it had none. *Test:*
//!   `expiry::tests::e3_regaining_the_standing_restarts_every_deadline`.
//! - **E4 — takeover grace.** Services this node owns under the current ring but did not own
//!   under the ring of its previous sweep get one full timeout of grace, granted in the same
//!   call that sweeps, so no expiry ever runs under a new ring before its grace. *Tests:*
//!   `expiry::tests::e4_a_ring_change_is_reported_with_the_ring_it_replaces`,
//!   `tests::e4_takeover_grace_comes_before_any_expiry_under_the_new_ring`.
//! - **E5 — check times.** Each service records the earliest moment one of its instances can
//!   pass a timeout; a sweep tick walks only the services whose moment has come, and
//!   recomputes it then. Beats only move deadlines later, so they leave it early and never
//!   late; any other change to a service (registration, patch, health change, a peer's record)
//!   resets it, so a nearer deadline is never skipped. The per-second cost is one comparison
//!   per service plus the instances actually near a timeout, not a walk over every instance.
//!   *Tests:* `store::tests::e5_the_sweep_leaves_a_service_alone_until_its_first_deadline`,
//!   `store::tests::e5_any_change_but_a_beat_brings_the_check_forward`.
//!
//! - **E6 — overload horizon.** A node that runs late (rule G1 in [`crate::overload`]: the
//!   largest scheduling lag it measured since the previous tick) judges silence only up to
//!   `now − lag`: beats sent after that may still wait in its own queues. Empty services are
//!   judged against the same horizon; nothing moves, so the instances of clients that really
//!   stopped expire as soon as the node catches up. *Tests:*
//!   `expiry::tests::e6_silence_is_judged_only_up_to_the_time_the_node_has_caught_up_with`,
//!   `store::tests::e6_an_instance_silent_only_within_the_lag_is_kept`; `tests/overload.rs`.
//!
//! **Deletion**
//! - **D1 — the owner's word.** Only a service's owner drops it once it has stayed empty for
//!   `EMPTY_SERVICE_TTL_MS`; the others follow the deletion record it replicates. Every
//!   deletion leaves a tombstone for `TOMBSTONE_TTL_MS`: an older copy of the service (a record
//!   in flight, a peer's verify digest) meets the tombstone and learns the deletion instead of
//!   re-creating the service, so nodes stop disagreeing about removed services within one
//!   verify round. A service re-created above its deletion keeps the deletion's version as its
//!   *floor* (and ships it in its records): instances stamped at or below it stay deleted
//!   after the tombstone is gone, and a deletion below it is older news. A tombstone also keeps
//!   the instance removals an empty copy of the service brought, and those newer than the
//!   deletion that the deleted service held, and hands them to the service if it is created
//!   again. Merging any records, however malformed (duplicate
//!   instances, stamps that do not line up), is idempotent.
//!   *Tests:*
//!   `store::tests::d1_only_the_owner_drops_an_empty_service_and_peers_follow_its_deletion`,
//!   `store::tests::d1_a_stale_copy_never_revives_instances_deleted_with_the_service`,
//!   `tests/prop_peer_input.rs` `sync_records_merge_without_panic_and_idempotently` and
//!   `a_removal_carried_by_an_absent_empty_service_is_not_forgotten`,
//!   `a_removal_newer_than_a_deletion_outlives_the_deleted_service`,
//!   `store::tests::deletion_replicates_and_stale_records_do_not_resurrect`,
//!   `verify::tests::a_deleted_service_is_sent_back_as_a_deletion_not_wanted_again`;
//!   `tests/faults.rs` `a_stopped_fleet_converges_within_two_verify_rounds`.
//!
//! **Start-up**
//! - **S1 — loaded before ready.** A clustered node reports ready only after it applied the
//!   snapshot of a loaded peer, or after a majority of the expected members answered that they
//!   are all starting (then nobody holds data). Timeouts, errors and an empty peer list settle
//!   nothing: it retries, out of every ring. *Test:*
//!   `startup::tests::s1_ready_only_with_the_peers_data_or_a_majority_starting_together`;
//!   `tests/cluster.rs` `restarted_and_new_nodes_load_everything_before_ready`.
//! - **S2 — no forwarded writes before the load.** Peers keep a restarted node in their rings
//!   while it is gone for less than the DOWN threshold, so their forwarded writes reach the new
//!   process under the same name before it has loaded anything. Until its load is done it
//!   answers them 503 marked `x-nacre-not-loaded`, and the forwarding node applies the write
//!   itself, as when the owner gave no answer: applied against an empty store, a beat would be
//!   answered 20404 (an instance forgotten) and the client would re-register. *Tests:*
//!   `tests/cluster.rs` `a_node_still_loading_refuses_forwarded_writes_with_a_marked_503`;
//!   `tests/rolling.rs`
//!   `a_rolling_restart_of_nodes_and_gateways_loses_nothing_a_client_sees`.
//! - **S3 — snapshots stream.** A peer writes its snapshot one record per line inside a JSON
//!   array (`wire::SnapshotWriter`, marked `x-nacre-snapshot-lines`), a piece at a time from a
//!   blocking task; the starting node cuts what arrives into batches of whole lines, decodes
//!   each off the async workers and merges one batch while the next is decoded, so writing,
//!   decoding and merging overlap. The load counts only once the closing line arrived: a body
//!   cut short is retried from the next peer (what was merged stays, as every record merges
//!   idempotently, V1). A body without the mark (an older peer) is read whole. While a node
//!   is loading, verify asks it for nothing (see [`verify`]). *Tests:*
//!   `wire::tests::a_snapshot_written_in_pieces_reads_line_by_line_and_as_one_array`;
//!   `tests/cluster.rs` `restarted_and_new_nodes_load_everything_before_ready`.
//!
//! **Repair** — the verify rules (missing / older / newer / conflicting copies, orphans) are
//! stated in [`verify`], each with its test there.

pub mod expiry;
pub mod replicate;
pub mod startup;
pub mod store;
pub mod verify;
pub mod wire;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nacre_ring::ServiceKey;

pub use expiry::{ExpiryGate, Plan, Standing};
pub use replicate::{DistroMetrics, Replicator, SyncSettings};
pub use store::{BeatOutcome, Digest, EphemeralStore, Expiry, ExpiryKind, ServiceRecord, Swept};

use crate::membership::Membership;
use crate::naming::model::InstanceKey;
use crate::peer::PeerClient;

/// Longest a client write waits for live peers to acknowledge it.
pub const WRITE_ACK_TIMEOUT: Duration = Duration::from_millis(500);

/// Timing of the cluster side of Distro.
#[derive(Debug, Clone, Copy)]
pub struct DistroSettings {
    /// Sync batching and queue bounds.
    pub sync: SyncSettings,
    /// Time between two verify rounds.
    pub verify_interval: Duration,
    /// Time allowed to fetch a snapshot from one peer at start-up.
    pub snapshot_timeout: Duration,
    /// Members the cluster should have (`bootstrap_expect`, else the configured list at
    /// start): a floor under the member count, so a failed first lookup cannot make one node
    /// look like a majority.
    pub expected_members: usize,
}

impl Default for DistroSettings {
    fn default() -> Self {
        Self {
            sync: SyncSettings::default(),
            verify_interval: Duration::from_secs(5),
            snapshot_timeout: Duration::from_secs(30),
            expected_members: 1,
        }
    }
}

/// The cluster parts of Distro: present only when the node has peers.
pub struct DistroCluster {
    /// Pushes local changes.
    pub replicator: Arc<Replicator>,
    /// The shared peer client.
    pub client: PeerClient,
    /// Timing.
    pub settings: DistroSettings,
}

/// When a client's ephemeral write is answered (rule V3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// Once live peers acknowledged it (bounded): the client may read from any node next.
    Peers,
    /// Once applied here: a gateway sends the client's reads of the service to this node, its
    /// owner.
    Applied,
}

/// What merging a peer's records did here.
#[derive(Debug, Default)]
pub struct Received {
    /// Services whose copy here changed (subscribers must hear of it).
    pub changed: Vec<ServiceKey>,
    /// Services a delta created here: the sender is asked for their whole records.
    pub want: Vec<ServiceKey>,
}

/// What one sweep tick decided and did.
#[derive(Debug)]
pub struct SweepReport {
    /// The gate's decision (held or not, deadlines moved).
    pub plan: Plan,
    /// Services given takeover grace (rule E4).
    pub granted: usize,
    /// Instances marked unhealthy or removed.
    pub expired: Vec<Expiry>,
    /// Empty services dropped as their owner (rule D1).
    pub dropped: Vec<ServiceKey>,
}

/// The ephemeral side of a node.
pub struct Distro {
    store: Arc<EphemeralStore>,
    membership: Arc<Membership>,
    cluster: Option<DistroCluster>,
    loaded: AtomicBool,
    gate: parking_lot::Mutex<ExpiryGate>,
}

impl Distro {
    /// A standalone node's Distro: a store and nothing to replicate to.
    pub fn standalone(store: Arc<EphemeralStore>, membership: Arc<Membership>) -> Self {
        Self {
            store,
            membership,
            cluster: None,
            loaded: AtomicBool::new(true),
            gate: parking_lot::Mutex::new(ExpiryGate::new()),
        }
    }

    /// A cluster member's Distro; [`Distro::load_snapshot`] must run before it is ready.
    pub fn clustered(
        store: Arc<EphemeralStore>,
        membership: Arc<Membership>,
        cluster: DistroCluster,
    ) -> Self {
        Self {
            store,
            membership,
            cluster: Some(cluster),
            loaded: AtomicBool::new(false),
            gate: parking_lot::Mutex::new(ExpiryGate::new()),
        }
    }

    /// The local store.
    pub fn store(&self) -> &EphemeralStore {
        &self.store
    }

    /// The membership view.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The cluster parts, when clustered.
    pub fn cluster(&self) -> Option<&DistroCluster> {
        self.cluster.as_ref()
    }

    /// Whether the start-up snapshot has been loaded (always true when standalone).
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Every record held, for a starting peer; `None` while this node is loading its own
    /// snapshot (what it holds may be incomplete).
    pub fn snapshot(&self) -> Option<Vec<ServiceRecord>> {
        self.is_loaded().then(|| self.store.export_all())
    }

    /// Records a local change of `key` for replication: of instance `id` only, or (`None`) of
    /// the service as a whole.
    pub fn local_change(&self, key: &ServiceKey, id: Option<&InstanceKey>) {
        if let Some(c) = &self.cluster {
            c.replicator.changed(key, id);
        }
    }

    /// Records a client's write of instance `id` of `key` and, unless `ack` says the client
    /// reads from this node anyway, waits until live peers have it (bounded), so the client can
    /// read it from any node next (rule V3).
    pub async fn client_write(&self, key: &ServiceKey, id: &InstanceKey, ack: Ack) {
        let Some(c) = &self.cluster else {
            return;
        };
        let acks = &c.replicator.metrics().write_acks;
        match ack {
            Ack::Applied => {
                acks.with_label_values(&["applied"]).inc();
                c.replicator.changed(key, Some(id));
            }
            Ack::Peers => {
                acks.with_label_values(&["peers"]).inc();
                let membership = &self.membership;
                c.replicator
                    .changed_and_wait(
                        key,
                        Some(id),
                        |peer| membership.is_live(peer),
                        WRITE_ACK_TIMEOUT,
                    )
                    .await;
            }
        }
    }

    /// Merges records from a peer (rules V1, V2). A merged copy that holds something the
    /// sender lacked is replicated back, so both converge on the union.
    pub fn apply_remote(&self, records: Vec<ServiceRecord>, now_ms: u64) -> Received {
        let mut received = Received::default();
        for r in records {
            let key = r.key.clone();
            let merged = self.store.apply_remote(r, now_ms);
            if let Some(c) = &self.cluster {
                let outcome = match (merged.changed, merged.diverged) {
                    (_, true) => "merged",
                    (true, false) => "applied",
                    (false, false) => "stale",
                };
                c.replicator
                    .metrics()
                    .received
                    .with_label_values(&[outcome])
                    .inc();
                if merged.diverged {
                    c.replicator.changed(&key, None);
                }
            }
            if merged.incomplete {
                received.want.push(key.clone());
            }
            if merged.changed {
                received.changed.push(key);
            }
        }
        received
    }

    /// This node's standing to serve writes and judge silence (rules O3, E1), from its
    /// readiness and what the peers it reaches report.
    pub fn standing(&self, ready: bool) -> Standing {
        let expected = self
            .cluster
            .as_ref()
            .map_or(1, |c| c.settings.expected_members);
        let v = self.membership.vouchers();
        Standing {
            ready,
            holding_me: v.holding_me,
            same_ring: v.same_ring,
            expected: v.configured.max(expected),
            standalone: self.membership.is_standalone(),
        }
    }

    /// One expiry tick: the gate decides whether this node may judge and which deadlines to
    /// move first (rules E1–E4), then the services this node owns are swept. Deadlines move
    /// and instances expire in this one call, so no expiry ever runs under a new ring or after
    /// a gap before its grace is granted.
    pub fn sweep(&self, tick: expiry::Tick, ready: bool) -> SweepReport {
        let now_ms = tick.now_ms;
        let ownership = self.membership.ownership();
        let plan = self
            .gate
            .lock()
            .decide(tick, &self.standing(ready), ownership.ring());
        // Restarting every deadline below already covers any time the node could not observe.
        if plan.unobserved_ms > 0 && !plan.restart_all {
            self.store.extend_deadlines(plan.unobserved_ms, now_ms);
        }
        if !plan.sweep {
            return SweepReport {
                plan,
                granted: 0,
                expired: Vec::new(),
                dropped: Vec::new(),
            };
        }
        let owned = |k: &ServiceKey| ownership.owns(k);
        let granted = if plan.restart_all {
            self.store.grant_grace(now_ms, |_| true)
        } else if let Some(old) = &plan.took_over_from {
            self.store
                .grant_grace(now_ms, |k| owned(k) && !ownership.owned_on(old, k))
        } else {
            0
        };
        let swept = self.store.sweep_owned(now_ms, plan.horizon_ms, owned);
        SweepReport {
            plan,
            granted,
            expired: swept.expired,
            dropped: swept.dropped,
        }
    }

    /// Marks the start-up load done (rule S1; see [`startup`]).
    fn mark_loaded(&self) {
        self.loaded.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use prometheus::Registry;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::membership::PingReply;
    use crate::naming::model::test_instance;

    /// `addr`'s ping answer, reporting `ring` as its ownership ring.
    fn ping(addr: &str, ring: &[&str]) -> Option<PingReply> {
        Some(PingReply {
            address: addr.into(),
            node_id: 1,
            ready: true,
            raft_initialized: true,
            standing: true,
            ring: ring.iter().map(|m| m.to_string()).collect(),
            down: Vec::new(),
            members_digest: 0,
            auth: false,
            raft_batches: true,
            relays_beats: true,
            relays_writes: true,
        })
    }

    /// A clustered Distro for `a:1` in a three-member cluster whose peers answered.
    fn distro_of_a(stop: &CancellationToken) -> Distro {
        let reg = Registry::new();
        let members = ["a:1", "b:1", "c:1"].map(String::from);
        let membership = Arc::new(Membership::clustered("a:1", &members, &reg).unwrap());
        let all = ["a:1", "b:1", "c:1"];
        membership.record_probe("b:1", ping("b:1", &all), 3);
        membership.record_probe("c:1", ping("c:1", &all), 3);
        let store = Arc::new(EphemeralStore::new());
        let client = PeerClient::new("0123456789abcdef").unwrap();
        let replicator = Arc::new(Replicator::new(
            "a:1".into(),
            store.clone(),
            client.clone(),
            SyncSettings::default(),
            DistroMetrics::new(&reg).unwrap(),
            stop.child_token(),
        ));
        Distro::clustered(
            store,
            membership,
            DistroCluster {
                replicator,
                client,
                settings: DistroSettings {
                    expected_members: 3,
                    ..DistroSettings::default()
                },
            },
        )
    }

    #[tokio::test]
    async fn a_loading_node_asks_verify_for_nothing_its_load_brings() {
        let stop = CancellationToken::new();
        let d = distro_of_a(&stop);
        let sender = EphemeralStore::new();
        let key = ServiceKey::new("public", "DEFAULT_GROUP", "orders");
        sender.register(&key, test_instance("10.0.0.1", 80, "DEFAULT", true), 1_000);
        let req = wire::VerifyRequest {
            from: "b:1".into(),
            ring_digest: d.membership().ring().members().digest(),
            digests: sender.digests(|_| true),
        };
        assert!(!d.is_loaded());
        let (reply, removed) = d.handle_verify(&req, 2_000);
        assert!(reply.want.is_empty() && reply.conflicting.is_empty() && removed.is_empty());
        d.mark_loaded();
        let (reply, _) = d.handle_verify(&req, 2_000);
        assert_eq!(reply.want, vec![key]);
        stop.cancel();
    }

    #[tokio::test]
    async fn e4_takeover_grace_comes_before_any_expiry_under_the_new_ring() {
        let stop = CancellationToken::new();
        let d = distro_of_a(&stop);
        // Services b owns: a holds replicas whose beats it never sees.
        let ring = d.membership().ring();
        let keys: Vec<ServiceKey> = (0..60)
            .map(|n| ServiceKey::new("public", "DEFAULT_GROUP", format!("s{n}")))
            .filter(|k| ring.owner(k) == Some("b:1"))
            .collect();
        assert!(!keys.is_empty());
        for k in &keys {
            d.store()
                .register(k, test_instance("10.0.0.1", 80, "DEFAULT", true), 0);
        }
        // On-time ticks for 20 s: nothing of b's is a's to judge.
        for t in (1..=20).map(|s| s * 1_000) {
            assert!(d
                .sweep(expiry::Tick::on_time(t, 1_000), true)
                .expired
                .is_empty());
        }
        // b goes down: its services move, and the very next sweep must grant grace first.
        for _ in 0..3 {
            d.membership().record_probe("b:1", None, 3);
        }
        // c saw it too: the rings agree again.
        d.membership()
            .record_probe("c:1", ping("c:1", &["a:1", "c:1"]), 3);
        let report = d.sweep(expiry::Tick::on_time(21_000, 1_000), true);
        assert!(report.expired.is_empty(), "{:?}", report.expired);
        let new_ring = d.membership().ring();
        let taken = keys
            .iter()
            .filter(|k| new_ring.owner(k) == Some("a:1"))
            .count();
        assert!(taken > 0);
        assert_eq!(report.granted, taken, "{report:?}");
        // The grace is one timeout, not forever: silent instances of the services a took
        // over turn unhealthy 15 s after the takeover, and only those.
        for t in (22..=36).map(|s| s * 1_000) {
            assert!(
                d.sweep(expiry::Tick::on_time(t, 1_000), true)
                    .expired
                    .is_empty(),
                "at {t}"
            );
        }
        let expired = d.sweep(expiry::Tick::on_time(37_000, 1_000), true).expired;
        assert!(!expired.is_empty());
        let ring = d.membership().ring();
        assert!(expired
            .iter()
            .all(|e| e.kind == ExpiryKind::Unhealthy && ring.owner(&e.key) == Some("a:1")));
        stop.cancel();
    }
}
