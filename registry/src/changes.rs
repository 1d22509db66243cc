//! Per-service change generations: one counter bumped after every visible change of a service,
//! whatever its origin (a client write here, a peer's record, a Raft apply, a health flip).
//!
//! Caches of derived data (rendered list answers) compare the generation they were built at
//! with the current one instead of being told about each kind of change separately. The
//! counter is global, so generations also order changes across services (a cursor for a
//! future change feed).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use nacre_ring::ServiceKey;
use parking_lot::RwLock;

/// Change generations of every service that has changed since the node started.
#[derive(Debug, Default)]
pub struct Changes {
    seq: AtomicU64,
    generations: RwLock<HashMap<ServiceKey, u64>>,
}

impl Changes {
    /// No changes yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a change of `key`; call it after the change is visible to readers.
    pub fn bump(&self, key: &ServiceKey) -> u64 {
        let g = self.seq.fetch_add(1, Ordering::AcqRel) + 1;
        let mut map = self.generations.write();
        match map.get_mut(key) {
            Some(v) => *v = g,
            None => {
                map.insert(key.clone(), g);
            }
        }
        g
    }

    /// The generation of `key`'s last change (0 when it never changed since start).
    pub fn generation(&self, key: &ServiceKey) -> u64 {
        self.generations.read().get(key).copied().unwrap_or(0)
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
}
