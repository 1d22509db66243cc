//! Property tests of what peers and UDP clients send a node: Distro sync records (applied to a
//! real store), the wire documents of every internal route, and UDP datagrams. A peer holding
//! the cluster secret is still not trusted to send well-formed data: nothing it sends may
//! panic the node, and re-applying what was applied changes nothing.
//!
//! Case counts are modest so CI stays fast; failures are printed, not persisted.

use nacre_registry::distro::store::{EphemeralStore, ServiceRecord};
use nacre_registry::distro::wire::{SyncBatch, VerifyRequest};
use nacre_registry::naming::model::{Instance, InstanceKey, Metadata};
use nacre_registry::push::packet::{decode_incoming, maybe_gunzip};
use nacre_ring::wire::{FeedPage, PingReply};
use nacre_ring::ServiceKey;
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Short names drawn from a small alphabet, so records collide on keys and instances.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[ab]{1,2}",
        1 => ".{0,8}",
    ]
}

fn instance() -> impl Strategy<Value = Instance> {
    (
        name(),
        0u16..4,
        name(),
        any::<bool>(),
        any::<f64>(),
        any::<u64>(),
    )
        .prop_map(|(ip, port, cluster, healthy, weight, beat)| Instance {
            ip: ip.into(),
            port,
            cluster: cluster.into(),
            weight,
            healthy,
            enabled: true,
            ephemeral: true,
            metadata: Metadata::new().into(),
            instance_id: Default::default(),
            app: "DEFAULT".into(),
            last_beat_ms: beat,
            marked: false,
        })
}

/// Records as a buggy or hostile peer could send them: stamps that do not line up with the
/// instances, duplicate instances, removals of unknown instances, any versions.
fn record() -> impl Strategy<Value = ServiceRecord> {
    (
        name(),
        any::<u64>(),
        prop::option::of(prop::collection::vec(instance(), 0..5)),
        prop::collection::vec(any::<u64>(), 0..7),
        prop::collection::vec(((name(), 0u16..4, name()), any::<u64>()), 0..4),
        prop_oneof![3 => Just(0u64), 1 => any::<u64>()],
        any::<bool>(),
    )
        .prop_map(
            |(svc, version, instances, stamps, removed, floor, partial)| ServiceRecord {
                key: ServiceKey::new("public", "DEFAULT_GROUP", &svc),
                version,
                instances,
                stamps,
                removed: removed
                    .into_iter()
                    .map(|((ip, port, cluster), v)| {
                        (
                            InstanceKey {
                                ip: ip.into(),
                                port,
                                cluster: cluster.into(),
                            },
                            v,
                        )
                    })
                    .collect(),
                floor,
                partial,
            },
        )
}

proptest! {
    #![proptest_config(config())]

    /// Any sequence of records merges without a panic, and merging the same sequence again
    /// leaves the store as it was (records are idempotent by version).
    #[test]
    fn sync_records_merge_without_panic_and_idempotently(
        records in prop::collection::vec(record(), 0..12),
        now in any::<u64>(),
    ) {
        let (store, once, twice) = merged_twice(&records, now);
        prop_assert_eq!(twice, once);
        let (services, instances) = store.counts();
        prop_assert_eq!((services, instances), (once.0, once.1));
    }

    /// Arbitrary bytes on every internal route's body decode to an error, never a panic.
    #[test]
    fn peer_documents_never_panic(raw in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = serde_json::from_slice::<SyncBatch>(&raw);
        let _ = serde_json::from_slice::<VerifyRequest>(&raw);
        let _ = serde_json::from_slice::<PingReply>(&raw);
        let _ = serde_json::from_slice::<FeedPage>(&raw);
        let _ = serde_json::from_slice::<Vec<ServiceRecord>>(&raw);
    }

    /// JSON-shaped noise, which gets further into the decoders than random bytes.
    #[test]
    fn peer_documents_never_panic_on_json_like_text(raw in r#"[{}\[\]":,0-9a-z_ -]{0,80}"#) {
        let _ = serde_json::from_str::<SyncBatch>(&raw);
        let _ = serde_json::from_str::<VerifyRequest>(&raw);
        let _ = serde_json::from_str::<PingReply>(&raw);
    }

    /// Any datagram on the push socket decodes (to an ack, another packet or garbage).
    #[test]
    fn udp_datagrams_never_panic(raw in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = decode_incoming(&raw);
        let mut gz = vec![0x1f, 0x8b];
        gz.extend_from_slice(&raw);
        let _ = decode_incoming(&gz);
        let _ = maybe_gunzip(&gz);
    }
}

/// A case the property above once found: the first record names a service this node does not
/// hold, empty but with an instance removal newer than its deletion; the second brings that
/// instance back with an older stamp. The removal was dropped with the absent service, so a
/// second pass (where the service existed) removed the instance the first pass had kept.
#[test]
fn a_removal_carried_by_an_absent_empty_service_is_not_forgotten() {
    let key = ServiceKey::new("public", "DEFAULT_GROUP", "bb");
    let inst = |cluster: &str| bare_instance("a", 0, cluster);
    let records = [
        ServiceRecord {
            key: key.clone(),
            version: 0,
            instances: Some(Vec::new()),
            stamps: Vec::new(),
            removed: vec![(
                InstanceKey {
                    ip: "a".into(),
                    port: 0,
                    cluster: "b".into(),
                },
                11_822_935_350_341_780_633,
            )],
            floor: 1,
            partial: false,
        },
        ServiceRecord {
            key,
            version: 0,
            instances: Some(vec![inst("a"), inst("a"), inst("b")]),
            stamps: vec![0, 0, 1_298_947_601_655_231_887],
            removed: Vec::new(),
            floor: 0,
            partial: false,
        },
    ];
    let (_, once, twice) = merged_twice(&records, 0);
    assert_eq!(twice, once);
    assert_eq!(once.1, 0, "the removal is newer than the instance's stamp");
}

/// Found by `sync_records_merge_without_panic_and_idempotently`: a service holding a removal
/// newer than a deletion record it then met was dropped with that removal, so an instance
/// stamped between the two came back when the service was created again, and a second pass
/// (where the removal was applied to the existing service) removed it.
#[test]
fn a_removal_newer_than_a_deletion_outlives_the_deleted_service() {
    let key = ServiceKey::new("public", "DEFAULT_GROUP", "a");
    let inst = bare_instance;
    let b = InstanceKey {
        ip: "b".into(),
        port: 3,
        cluster: "b".into(),
    };
    let records = [
        // A service with one instance and a removal of `b` far in the future.
        ServiceRecord {
            key: key.clone(),
            version: 0,
            instances: Some(vec![inst("a", 0, "a"), inst("a", 0, "a")]),
            stamps: Vec::new(),
            removed: vec![(b, 14_435_153_394_828_403_703)],
            floor: 0,
            partial: false,
        },
        // Its deletion, at version 0.
        ServiceRecord {
            key: key.clone(),
            version: 0,
            instances: None,
            stamps: Vec::new(),
            removed: Vec::new(),
            floor: 0,
            partial: false,
        },
        // `b` again, stamped below the removal.
        ServiceRecord {
            key,
            version: 13_365_699_800_585_998_551,
            instances: Some(vec![inst("b", 3, "b")]),
            stamps: vec![0, 0],
            removed: Vec::new(),
            floor: 1,
            partial: false,
        },
    ];
    let (_, once, twice) = merged_twice(&records, 0);
    assert_eq!(twice, once);
    assert_eq!(once.1, 0, "the removal is newer than b's stamp");
}

/// A store that merged `records` at `now` twice over, with its fingerprint after the first
/// pass and after the second (equal when merging is idempotent).
fn merged_twice(
    records: &[ServiceRecord],
    now: u64,
) -> (EphemeralStore, (usize, usize, u64), (usize, usize, u64)) {
    let store = EphemeralStore::new();
    for r in records {
        store.apply_remote(r.clone(), now);
    }
    let once = store.fingerprint();
    for r in records {
        store.apply_remote(r.clone(), now);
    }
    let twice = store.fingerprint();
    (store, once, twice)
}

/// An ephemeral instance with nothing but its identity, as the regression tests' records carry.
fn bare_instance(ip: &str, port: u16, cluster: &str) -> Instance {
    Instance {
        ip: ip.into(),
        port,
        cluster: cluster.into(),
        weight: 0.0,
        healthy: false,
        enabled: true,
        ephemeral: true,
        metadata: Metadata::new().into(),
        instance_id: Default::default(),
        app: "DEFAULT".into(),
        last_beat_ms: 0,
        marked: false,
    }
}
