//! Periodic verify: owners send digests of their services, peers report what differs.
//!
//! Sync pushes can be lost (a cut link, a dropped backlog, a restart). Every
//! `verify_interval` each node sends every live peer the version and checksum of each service
//! it owns or the peer owns; the peer answers which of them it lacks or holds older copies of, and the owner
//! resends those through the normal sync path. The rules, decided by the receiver:
//!
//! - missing here, or older here → *want* it; but deleted here at or after the sender's version
//!   (a tombstone) → send the deletion back, so an old copy never revives a deleted service;
//! - newer here (a write accepted here while the owner was unreachable) → send ours back;
//! - same version, different checksum → *conflicting*: the owner restamps and resends;
//! - held here, owned by the sender (both rings agree), absent from its digests → it was
//!   deleted and the deletion missed us: drop it once it is older than a few verify rounds,
//!   otherwise send ours back (the owner may have missed a recent write).
//! - the receiver is still loading its start-up data (rule S1) → nothing at all: the load
//!   brings every service, asking for them again would send the same data twice while the
//!   snapshot is being made, and part of the data is no ground for judging orphans. *Test:*
//!   `distro::tests::a_loading_node_asks_verify_for_nothing_its_load_brings`.

use std::collections::HashSet;

use nacre_ring::{Ring, ServiceKey};

use super::store::{version_ms, EphemeralStore};
use super::wire::{VerifyReply, VerifyRequest, VERIFY_PATH};
use super::Distro;

/// What a receiver decided about one verify request.
#[derive(Debug, Default)]
pub struct VerifyOutcome {
    /// The answer to the sender.
    pub reply: VerifyReply,
    /// Services to send back to the sender (newer here).
    pub send_back: Vec<ServiceKey>,
    /// Services dropped here (deleted at their owner).
    pub removed: Vec<ServiceKey>,
}

/// Compares a sender's digests with the local store. `ring` is the receiver's ring; `stale_ms`
/// is how old a local copy must be before the owner's silence counts as a deletion.
pub fn compare(
    store: &EphemeralStore,
    req: &VerifyRequest,
    ring: &Ring,
    now_ms: u64,
    stale_ms: u64,
) -> VerifyOutcome {
    let mut out = VerifyOutcome::default();
    let mut listed = HashSet::with_capacity(req.digests.len());
    for d in &req.digests {
        listed.insert(&d.key);
        match store.digest(&d.key) {
            // Deleted here at or after the sender's version: the sender learns the deletion.
            None if store.tombstone(&d.key).is_some_and(|t| t >= d.version) => {
                out.send_back.push(d.key.clone())
            }
            None => out.reply.want.push(d.key.clone()),
            Some((v, _)) if v < d.version => out.reply.want.push(d.key.clone()),
            Some((v, _)) if v > d.version => out.send_back.push(d.key.clone()),
            Some((_, sum)) if sum != d.checksum => out.reply.conflicting.push(d.key.clone()),
            Some(_) => {}
        }
    }
    if ring.members().digest() != req.ring_digest {
        return out;
    }
    let orphans =
        store.digests(|k| ring.owner(k) == Some(req.from.as_str()) && !listed.contains(k));
    for d in orphans {
        if version_ms(d.version).saturating_add(stale_ms) < now_ms {
            if store.remove_service(&d.key, now_ms) {
                out.removed.push(d.key);
            }
        } else {
            out.send_back.push(d.key);
        }
    }
    out
}

impl Distro {
    /// Handles a peer's verify request: queues resends and drops orphans here, and answers
    /// what the sender should resend. Returns the keys removed locally (for push).
    pub fn handle_verify(
        &self,
        req: &VerifyRequest,
        now_ms: u64,
    ) -> (VerifyReply, Vec<ServiceKey>) {
        let Some(c) = self.cluster().filter(|_| self.is_loaded()) else {
            return (VerifyReply::default(), Vec::new());
        };
        let stale_ms = 3 * c.settings.verify_interval.as_millis() as u64;
        let ring = self.membership().ring();
        let out = compare(self.store(), req, &ring, now_ms, stale_ms);
        let m = c.replicator.metrics();
        for k in &out.send_back {
            c.replicator.changed_for(&req.from, k);
        }
        m.verify_repairs
            .with_label_values(&["sent_back"])
            .inc_by(out.send_back.len() as u64);
        m.verify_repairs
            .with_label_values(&["requested"])
            .inc_by(out.reply.want.len() as u64);
        m.verify_repairs
            .with_label_values(&["conflict"])
            .inc_by(out.reply.conflicting.len() as u64);
        m.verify_repairs
            .with_label_values(&["removed"])
            .inc_by(out.removed.len() as u64);
        if !out.reply.want.is_empty() || !out.removed.is_empty() || !out.send_back.is_empty() {
            tracing::info!(
                peer = %req.from,
                want = out.reply.want.len(),
                conflicting = out.reply.conflicting.len(),
                sent_back = out.send_back.len(),
                removed = out.removed.len(),
                "verify found divergent services"
            );
        }
        (out.reply, out.removed)
    }

    /// One verify round. Each live peer gets the digests of the services this node owns and
    /// of those the peer owns: the second half lets a node that rejoins (and owns services
    /// again at once) learn what it missed while away.
    pub async fn verify_round(&self, now_ms: u64) {
        let Some(c) = self.cluster() else {
            return;
        };
        let ring = self.membership().ring();
        let me = self.membership().self_addr().to_string();
        let mut held: Vec<(String, super::store::Digest)> = self
            .store()
            .digests(|_| true)
            .into_iter()
            .map(|d| (ring.owner(&d.key).unwrap_or(&me).to_string(), d))
            .collect();
        held.sort_by(|a, b| a.0.cmp(&b.0));
        for peer in self.membership().live_peers() {
            let digests = held
                .iter()
                .filter(|(owner, _)| *owner == me || *owner == peer)
                .map(|(_, d)| d.clone())
                .collect();
            let req = VerifyRequest {
                from: me.clone(),
                ring_digest: ring.members().digest(),
                digests,
            };
            let reply = c
                .client
                .post_json::<_, VerifyReply>(&peer, VERIFY_PATH, &req, c.settings.sync.timeout)
                .await;
            match reply {
                Ok(r) => {
                    if let Err(e) = c.replicator.send_now(&peer, &r.want).await {
                        tracing::debug!(peer = %peer, error = %e, "verify resend failed");
                    }
                    for k in &r.conflicting {
                        if self.store().restamp(k, now_ms) {
                            c.replicator.changed(k, None);
                        }
                    }
                }
                Err(e) => tracing::debug!(peer = %peer, error = %e, "verify failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use nacre_ring::Members;

    use super::*;
    use crate::distro::store::Digest;
    use crate::naming::model::{test_instance, Instance};

    fn key(n: &str) -> ServiceKey {
        ServiceKey::new("public", "DEFAULT_GROUP", n)
    }

    fn inst(ip: &str) -> Instance {
        test_instance(ip, 80, "DEFAULT", true)
    }

    fn req_from(owner: &EphemeralStore, from: &str, ring: &Ring) -> VerifyRequest {
        VerifyRequest {
            from: from.into(),
            ring_digest: ring.members().digest(),
            digests: owner.digests(|_| true),
        }
    }

    #[test]
    fn missing_older_newer_and_conflicting_copies() {
        let ring = Ring::new(&Members::new(["a:1".to_string()]));
        let owner = EphemeralStore::new();
        let peer = EphemeralStore::new();
        owner.register(&key("same"), inst("10.0.0.1"), 1_000);
        owner.register(&key("missing"), inst("10.0.0.1"), 1_000);
        owner.register(&key("older"), inst("10.0.0.1"), 1_000);
        owner.register(&key("newer"), inst("10.0.0.1"), 1_000);
        peer.apply_remote(owner.export(&[key("same")]).remove(0), 1_000);
        peer.apply_remote(owner.export(&[key("older")]).remove(0), 1_000);
        peer.apply_remote(owner.export(&[key("newer")]).remove(0), 1_000);
        owner.register(&key("older"), inst("10.0.0.2"), 2_000);
        peer.register(&key("newer"), inst("10.0.0.3"), 3_000);

        let out = compare(&peer, &req_from(&owner, "a:1", &ring), &ring, 4_000, 15_000);
        let mut want = out.reply.want.clone();
        want.sort();
        assert_eq!(want, vec![key("missing"), key("older")]);
        assert_eq!(out.send_back, vec![key("newer")]);
        assert!(out.reply.conflicting.is_empty());

        // Equal version, different content.
        let d = owner.digests(|k| *k == key("same")).remove(0);
        let forged = VerifyRequest {
            from: "a:1".into(),
            ring_digest: ring.members().digest(),
            digests: vec![Digest {
                checksum: d.checksum ^ 1,
                ..d
            }],
        };
        let out = compare(&peer, &forged, &ring, 4_000, 15_000);
        assert_eq!(out.reply.conflicting, vec![key("same")]);
    }

    #[test]
    fn a_deleted_service_is_sent_back_as_a_deletion_not_wanted_again() {
        let ring = Ring::new(&Members::new(["a:1".to_string()]));
        let sender = EphemeralStore::new();
        let here = EphemeralStore::new();
        sender.register(&key("gone"), inst("10.0.0.1"), 1_000);
        here.apply_remote(sender.export(&[key("gone")]).remove(0), 1_000);
        assert!(here.remove_service(&key("gone"), 2_000));
        let out = compare(
            &here,
            &req_from(&sender, "a:1", &ring),
            &ring,
            3_000,
            15_000,
        );
        assert!(out.reply.want.is_empty(), "{:?}", out.reply);
        assert_eq!(out.send_back, vec![key("gone")]);
        // Re-registered at the sender after the deletion: newer, so wanted.
        sender.register(&key("gone"), inst("10.0.0.2"), 4_000);
        let out = compare(
            &here,
            &req_from(&sender, "a:1", &ring),
            &ring,
            5_000,
            15_000,
        );
        assert_eq!(out.reply.want, vec![key("gone")]);
    }

    #[test]
    fn orphans_are_dropped_only_when_stale_and_rings_agree() {
        let ring = Ring::new(&Members::new(["a:1".to_string()]));
        let owner = EphemeralStore::new();
        let peer = EphemeralStore::new();
        peer.register(&key("gone"), inst("10.0.0.1"), 1_000);
        let req = req_from(&owner, "a:1", &ring);

        let out = compare(&peer, &req, &ring, 5_000, 15_000);
        assert_eq!(
            out.send_back,
            vec![key("gone")],
            "recent: the owner may have missed it"
        );
        assert!(peer.contains(&key("gone")));

        let other = Ring::new(&Members::new(["a:1".to_string(), "b:1".to_string()]));
        let out = compare(&peer, &req, &other, 60_000, 15_000);
        assert!(out.removed.is_empty(), "rings disagree: keep it");

        let out = compare(&peer, &req, &ring, 60_000, 15_000);
        assert_eq!(out.removed, vec![key("gone")]);
        assert!(!peer.contains(&key("gone")));
    }
}
