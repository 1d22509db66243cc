//! Rule V2 (in `nacre_registry::distro`): replicating changes to single instances as deltas
//! converges exactly as whole records do. Two stores take interleaved registrations and
//! removals of the same instances, as two nodes accepting writes at once would; each change
//! is owed to the other store as a delta, deliveries happen at random points, and a receiver
//! answers as the real one does (a merged copy that diverged is sent back whole; a delta that
//! created the service asks for the whole record). Once everything owed is delivered, both
//! stores hold the same data.

use std::collections::{HashMap, HashSet};

use nacre_registry::distro::store::EphemeralStore;
use nacre_registry::naming::model::{Instance, InstanceKey, Metadata};
use nacre_ring::ServiceKey;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Register { ip: u8, weight: u8 },
    Remove { ip: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..6, 0u8..3).prop_map(|(ip, weight)| Op::Register { ip, weight }),
        1 => (0u8..6).prop_map(|ip| Op::Remove { ip }),
    ]
}

fn key(svc: u8) -> ServiceKey {
    ServiceKey::new("public", "DEFAULT_GROUP", format!("s{svc}"))
}

fn id(ip: u8) -> InstanceKey {
    InstanceKey {
        ip: format!("10.0.0.{ip}").into(),
        port: 8080,
        cluster: "DEFAULT".into(),
    }
}

fn instance(ip: u8, weight: u8, now_ms: u64) -> Instance {
    Instance {
        ip: format!("10.0.0.{ip}").into(),
        port: 8080,
        cluster: "DEFAULT".into(),
        weight: f64::from(weight),
        healthy: true,
        enabled: true,
        ephemeral: true,
        metadata: Metadata::new().into(),
        instance_id: Default::default(),
        app: "DEFAULT".into(),
        last_beat_ms: now_ms,
        marked: false,
    }
}

/// What one store owes the other, per service: `None` is the whole record.
type Owed = HashMap<ServiceKey, Option<HashSet<InstanceKey>>>;

fn owe(owed: &mut Owed, key: ServiceKey, id: Option<InstanceKey>) {
    let entry = owed.entry(key).or_insert_with(|| Some(HashSet::new()));
    match (entry.as_mut(), id) {
        (Some(ids), Some(id)) => {
            ids.insert(id);
        }
        (_, None) => *entry = None,
        (None, Some(_)) => {}
    }
}

/// Delivers everything `owed` from `from` to `to`; what the receiver answers goes into the
/// debts of either side.
fn deliver(from: &EphemeralStore, to: &EphemeralStore, owed: &mut Owed, back: &mut Owed, now: u64) {
    let items = std::mem::take(owed);
    let records = from.export_changes(items.iter().map(|(k, ids)| (k, ids.as_ref())));
    for r in records {
        let k = r.key.clone();
        let merged = to.apply_remote(r, now);
        if merged.diverged {
            owe(back, k.clone(), None);
        }
        if merged.incomplete {
            owe(owed, k, None);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn deltas_converge_like_whole_records(
        steps in prop::collection::vec((0u8..2, 0u8..2, op(), any::<bool>()), 1..40),
    ) {
        let stores = [EphemeralStore::new(), EphemeralStore::new()];
        // owed[n]: what store n owes the other.
        let mut owed: [Owed; 2] = [Owed::new(), Owed::new()];
        let mut now = 1_000u64;
        for (node, svc, op, flush) in steps {
            now += 7;
            let n = usize::from(node);
            let k = key(svc);
            match op {
                Op::Register { ip, weight } => {
                    stores[n].register(&k, instance(ip, weight, now), now);
                    owe(&mut owed[n], k, Some(id(ip)));
                }
                Op::Remove { ip } => {
                    if stores[n].remove(&k, &id(ip), now) {
                        owe(&mut owed[n], k, Some(id(ip)));
                    }
                }
            }
            if flush {
                let (a, b) = owed.split_at_mut(1);
                let (mine, theirs) = if n == 0 { (&mut a[0], &mut b[0]) } else { (&mut b[0], &mut a[0]) };
                deliver(&stores[n], &stores[1 - n], mine, theirs, now);
            }
        }
        for _ in 0..8 {
            if owed.iter().all(HashMap::is_empty) {
                break;
            }
            now += 7;
            let (a, b) = owed.split_at_mut(1);
            deliver(&stores[0], &stores[1], &mut a[0], &mut b[0], now);
            deliver(&stores[1], &stores[0], &mut b[0], &mut a[0], now);
        }
        prop_assert!(owed.iter().all(HashMap::is_empty), "still owed: {:?}", owed);
        prop_assert_eq!(stores[0].fingerprint(), stores[1].fingerprint());
    }
}
