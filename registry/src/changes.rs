//! Per-service change generations: one counter bumped after every visible change of a service,
//! whatever its origin (a client write here, a peer's record, a Raft apply, a health flip).
//!
//! Caches of derived data (rendered list answers) compare the generation they were built at
//! with the current one instead of being told about each kind of change separately. The
//! counter is global, so generations also order changes across services (a cursor for a
//! future change feed).
//!
//! Entries of services that no longer exist are pruned now and then, so the map does not grow
//! with every name ever used. A pruned (or never seen) service reports the *floor*: a value
//! raised above every generation handed out before the prune, so nothing cached under an old
//! generation can match it again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use nacre_ring::ServiceKey;
use parking_lot::RwLock;

/// Change generations of every service that has changed since the node started.
#[derive(Debug, Default)]
pub struct Changes {
    seq: AtomicU64,
    generations: RwLock<Generations>,
}

#[derive(Debug, Default)]
struct Generations {
    by_key: HashMap<ServiceKey, u64>,
    floor: u64,
}

impl Changes {
    /// No changes yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a change of `key`; call it after the change is visible to readers.
    pub fn bump(&self, key: &ServiceKey) -> u64 {
        let mut gens = self.generations.write();
        // Taken under the lock so a concurrent prune cannot set the floor above it.
        let g = self.seq.fetch_add(1, Ordering::AcqRel) + 1;
        match gens.by_key.get_mut(key) {
            Some(v) => *v = g,
            None => {
                gens.by_key.insert(key.clone(), g);
            }
        }
        g
    }

    /// The generation of `key`'s last change (the floor when unknown or pruned).
    pub fn generation(&self, key: &ServiceKey) -> u64 {
        let gens = self.generations.read();
        gens.by_key.get(key).copied().unwrap_or(gens.floor)
    }

    /// Forgets services for which `keep` is false; returns how many were dropped.
    pub fn prune(&self, keep: impl Fn(&ServiceKey) -> bool) -> usize {
        let mut gens = self.generations.write();
        gens.floor = self.seq.fetch_add(1, Ordering::AcqRel) + 1;
        let before = gens.by_key.len();
        gens.by_key.retain(|k, _| keep(k));
        before - gens.by_key.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_grow_per_change() {
        let c = Changes::new();
        let a = ServiceKey::new("public", "G", "a");
        let b = ServiceKey::new("public", "G", "b");
        assert_eq!(c.generation(&a), 0);
        let g1 = c.bump(&a);
        let g2 = c.bump(&b);
        assert!(g2 > g1);
        assert_eq!(c.generation(&a), g1);
        c.bump(&a);
        assert!(c.generation(&a) > g2);
    }

    #[test]
    fn pruned_and_unknown_services_report_a_floor_above_every_old_generation() {
        let c = Changes::new();
        let a = ServiceKey::new("public", "G", "a");
        let b = ServiceKey::new("public", "G", "b");
        let never = ServiceKey::new("public", "G", "never");
        let old_never = c.generation(&never);
        let ga = c.bump(&a);
        let gb = c.bump(&b);
        assert_eq!(c.prune(|k| *k == b), 1);
        assert!(
            c.generation(&a) > ga,
            "a cached answer for `a` must not match again"
        );
        assert!(c.generation(&never) > old_never);
        assert_eq!(c.generation(&b), gb, "kept services keep their generation");
        assert!(c.bump(&a) > c.generation(&never));
    }
}
