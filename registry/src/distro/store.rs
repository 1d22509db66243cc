//! The in-memory store of ephemeral instances (the AP side).
//!
//! Plain data and logic driven by explicit timestamps: registration, beats, patching and the
//! expiry sweep all take `now_ms` from the caller, so expiry is testable without sleeping. Each
//! service carries a revision that grows on every visible change; replication (cluster issue)
//! and caches key off it.

use std::collections::HashMap;

use nacre_ring::ServiceKey;
use parking_lot::RwLock;

use crate::naming::model::{Instance, InstanceKey};
use crate::naming::persistent::{apply_patch, put_into, service_not_found, InstancePatch, PutMode};
use crate::naming::NamingError;

/// How long an ephemeral service may stay empty before it is dropped (ms). Nacos's shipped
/// config cleans empty services after roughly five 30 s checks; one minute keeps lists tidy
/// without racing a client that re-registers after a restart.
pub const EMPTY_SERVICE_TTL_MS: u64 = 60_000;

/// Ephemeral instances of one service.
#[derive(Debug, Clone, Default)]
pub struct EphemeralService {
    /// Instances in registration order.
    pub instances: Vec<Instance>,
    /// Grows on every visible change.
    pub revision: u64,
    /// When the service last became empty (ms), if it is empty.
    empty_since_ms: Option<u64>,
}

impl EphemeralService {
    fn find_mut(&mut self, ip: &str, port: u16, cluster: &str) -> Option<&mut Instance> {
        self.instances
            .iter_mut()
            .find(|i| i.matches(ip, port, cluster))
    }

    fn touch(&mut self, now_ms: u64) {
        self.revision += 1;
        self.empty_since_ms = self.instances.is_empty().then_some(now_ms);
    }
}

/// What a beat found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeatOutcome {
    /// The instance exists; `revived` when it was unhealthy and turned healthy again.
    Alive {
        /// Interval the client should beat at (ms).
        interval_ms: u64,
        /// The beat flipped the instance back to healthy.
        revived: bool,
    },
    /// No such instance.
    Unknown,
}

/// What the expiry sweep did to one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiryKind {
    /// Silent past its beat timeout: marked unhealthy.
    Unhealthy,
    /// Silent past its delete timeout: removed.
    Removed,
}

/// One instance touched by the expiry sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct Expiry {
    /// Service.
    pub key: ServiceKey,
    /// Instance identity.
    pub instance: InstanceKey,
    /// What happened.
    pub kind: ExpiryKind,
}

/// All ephemeral services of a node.
#[derive(Debug, Default)]
pub struct EphemeralStore {
    services: RwLock<HashMap<ServiceKey, EphemeralService>>,
}

impl EphemeralStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts or replaces an instance (see [`put_into`] for the rules); `UpdateExisting`
    /// fails when the service or the instance is missing.
    pub fn put(
        &self,
        key: &ServiceKey,
        instance: Instance,
        mode: PutMode,
        now_ms: u64,
    ) -> Result<(), NamingError> {
        let mut map = self.services.write();
        let svc = match mode {
            PutMode::Upsert => map.entry(key.clone()).or_default(),
            PutMode::UpdateExisting => map.get_mut(key).ok_or_else(|| service_not_found(key))?,
        };
        put_into(&mut svc.instances, instance, mode)?;
        svc.touch(now_ms);
        Ok(())
    }

    /// Inserts or replaces an instance; an upsert cannot fail.
    pub fn register(&self, key: &ServiceKey, instance: Instance, now_ms: u64) {
        // Only `UpdateExisting` has failure cases.
        let _ = self.put(key, instance, PutMode::Upsert, now_ms);
    }

    /// Runs `f` on an existing instance; `f` says whether it made a visible change.
    fn modify(
        &self,
        key: &ServiceKey,
        id: &InstanceKey,
        now_ms: u64,
        f: impl FnOnce(&mut Instance) -> bool,
    ) -> Result<bool, NamingError> {
        let mut map = self.services.write();
        let svc = map
            .get_mut(key)
            .ok_or_else(|| NamingError::bad("instance not found"))?;
        let inst = svc
            .find_mut(&id.ip, id.port, &id.cluster)
            .ok_or_else(|| NamingError::bad("instance not found"))?;
        let changed = f(inst);
        if changed {
            svc.touch(now_ms);
        }
        Ok(changed)
    }

    /// Applies the given fields to an existing instance.
    pub fn patch(
        &self,
        key: &ServiceKey,
        id: &InstanceKey,
        patch: &InstancePatch,
        now_ms: u64,
    ) -> Result<(), NamingError> {
        self.modify(key, id, now_ms, |inst| {
            apply_patch(inst, patch, now_ms);
            true
        })
        .map(drop)
    }

    /// Removes an instance; true when something was removed.
    pub fn remove(&self, key: &ServiceKey, id: &InstanceKey, now_ms: u64) -> bool {
        let mut map = self.services.write();
        let Some(svc) = map.get_mut(key) else {
            return false;
        };
        let before = svc.instances.len();
        svc.instances
            .retain(|i| !i.matches(&id.ip, id.port, &id.cluster));
        let removed = svc.instances.len() != before;
        if removed {
            svc.touch(now_ms);
        }
        removed
    }

    /// Records a beat.
    pub fn beat(&self, key: &ServiceKey, id: &InstanceKey, now_ms: u64) -> BeatOutcome {
        let mut map = self.services.write();
        let Some(svc) = map.get_mut(key) else {
            return BeatOutcome::Unknown;
        };
        let Some(inst) = svc.find_mut(&id.ip, id.port, &id.cluster) else {
            return BeatOutcome::Unknown;
        };
        inst.last_beat_ms = now_ms;
        let revived = !inst.healthy && !inst.marked;
        if revived {
            inst.healthy = true;
        }
        let interval_ms = inst.beat_interval_ms();
        if revived {
            svc.touch(now_ms);
        }
        BeatOutcome::Alive {
            interval_ms,
            revived,
        }
    }

    /// Sets the health flag of an instance (operator API); true when it changed.
    pub fn set_health(
        &self,
        key: &ServiceKey,
        id: &InstanceKey,
        healthy: bool,
        now_ms: u64,
    ) -> Result<bool, NamingError> {
        self.modify(key, id, now_ms, |inst| {
            let changed = inst.healthy != healthy;
            inst.healthy = healthy;
            changed
        })
    }

    /// Drops a whole service; true when it existed.
    pub fn remove_service(&self, key: &ServiceKey) -> bool {
        self.services.write().remove(key).is_some()
    }

    /// Marks silent instances unhealthy and removes those silent past their delete timeout.
    /// Empty services older than [`EMPTY_SERVICE_TTL_MS`] are dropped.
    pub fn sweep(&self, now_ms: u64) -> Vec<Expiry> {
        let mut out = Vec::new();
        let mut map = self.services.write();
        map.retain(|key, svc| {
            let mut changed = false;
            svc.instances.retain_mut(|inst| {
                if inst.marked {
                    return true;
                }
                let silent = now_ms.saturating_sub(inst.last_beat_ms);
                if silent > inst.delete_timeout_ms() {
                    out.push(Expiry {
                        key: key.clone(),
                        instance: inst.key(),
                        kind: ExpiryKind::Removed,
                    });
                    changed = true;
                    return false;
                }
                if inst.healthy && silent > inst.beat_timeout_ms() {
                    inst.healthy = false;
                    out.push(Expiry {
                        key: key.clone(),
                        instance: inst.key(),
                        kind: ExpiryKind::Unhealthy,
                    });
                    changed = true;
                }
                true
            });
            if changed {
                svc.touch(now_ms);
            }
            match svc.empty_since_ms {
                Some(since) => now_ms.saturating_sub(since) < EMPTY_SERVICE_TTL_MS,
                None => true,
            }
        });
        out
    }

    /// Runs `f` on one service, if present.
    pub fn with_service<R>(
        &self,
        key: &ServiceKey,
        f: impl FnOnce(&EphemeralService) -> R,
    ) -> Option<R> {
        self.services.read().get(key).map(f)
    }

    /// Whether the service exists here.
    pub fn contains(&self, key: &ServiceKey) -> bool {
        self.services.read().contains_key(key)
    }

    /// Keys of all services, unordered.
    pub fn keys(&self) -> Vec<ServiceKey> {
        self.services.read().keys().cloned().collect()
    }

    /// (services, instances) currently held.
    pub fn counts(&self) -> (usize, usize) {
        let map = self.services.read();
        (map.len(), map.values().map(|s| s.instances.len()).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ServiceKey {
        ServiceKey::new("public", "DEFAULT_GROUP", "orders")
    }

    fn inst(ip: &str, now: u64) -> Instance {
        Instance {
            last_beat_ms: now,
            ..crate::naming::model::test_instance(ip, 8080, "DEFAULT", true)
        }
    }

    fn id(ip: &str) -> InstanceKey {
        InstanceKey {
            ip: ip.into(),
            port: 8080,
            cluster: "DEFAULT".into(),
        }
    }

    fn healthy(store: &EphemeralStore, ip: &str) -> Option<bool> {
        store
            .with_service(&key(), |s| {
                s.instances.iter().find(|i| i.ip == ip).map(|i| i.healthy)
            })
            .flatten()
    }

    #[test]
    fn silent_instance_turns_unhealthy_then_is_removed() {
        let s = EphemeralStore::new();
        s.register(&key(), inst("10.0.0.1", 0), 0);
        assert!(
            s.sweep(15_000).is_empty(),
            "exactly at the timeout is still fine"
        );
        let e = s.sweep(15_001);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].kind, ExpiryKind::Unhealthy);
        assert_eq!(healthy(&s, "10.0.0.1"), Some(false));
        assert!(s.sweep(20_000).is_empty(), "unhealthy is reported once");
        let e = s.sweep(30_001);
        assert_eq!(e[0].kind, ExpiryKind::Removed);
        assert_eq!(healthy(&s, "10.0.0.1"), None);
    }

    #[test]
    fn beats_keep_instances_alive_and_revive_them() {
        let s = EphemeralStore::new();
        s.register(&key(), inst("10.0.0.1", 0), 0);
        for t in (5_000..=60_000).step_by(5_000) {
            assert!(matches!(
                s.beat(&key(), &id("10.0.0.1"), t),
                BeatOutcome::Alive { revived: false, .. }
            ));
            assert!(s.sweep(t + 1).is_empty());
        }
        s.sweep(80_000);
        assert_eq!(healthy(&s, "10.0.0.1"), Some(false));
        assert_eq!(
            s.beat(&key(), &id("10.0.0.1"), 80_001),
            BeatOutcome::Alive {
                interval_ms: 5_000,
                revived: true
            }
        );
        assert_eq!(healthy(&s, "10.0.0.1"), Some(true));
        assert_eq!(
            s.beat(&key(), &id("10.9.9.9"), 80_001),
            BeatOutcome::Unknown
        );
    }

    #[test]
    fn per_instance_timeouts_are_honoured() {
        let s = EphemeralStore::new();
        let mut i = inst("10.0.0.1", 0);
        i.metadata
            .insert("preserved.heart.beat.timeout".into(), "3000".into());
        i.metadata
            .insert("preserved.ip.delete.timeout".into(), "6000".into());
        i.metadata
            .insert("preserved.heart.beat.interval".into(), "1000".into());
        s.register(&key(), i, 0);
        assert_eq!(s.sweep(3_001)[0].kind, ExpiryKind::Unhealthy);
        assert_eq!(
            s.beat(&key(), &id("10.0.0.1"), 3_002),
            BeatOutcome::Alive {
                interval_ms: 1000,
                revived: true
            }
        );
        assert_eq!(s.sweep(9_003)[0].kind, ExpiryKind::Removed);
    }

    #[test]
    fn marked_instances_never_expire() {
        let s = EphemeralStore::new();
        let mut i = inst("10.0.0.1", 0);
        i.marked = true;
        s.register(&key(), i, 0);
        assert!(s.sweep(1_000_000).is_empty());
    }

    #[test]
    fn reregistration_keeps_health_and_bumps_revision() {
        let s = EphemeralStore::new();
        s.register(&key(), inst("10.0.0.1", 0), 0);
        s.sweep(20_000);
        let rev = s.with_service(&key(), |s| s.revision).unwrap();
        let mut again = inst("10.0.0.1", 20_000);
        again.weight = 2.0;
        s.register(&key(), again, 20_000);
        assert_eq!(healthy(&s, "10.0.0.1"), Some(false));
        assert!(s.with_service(&key(), |s| s.revision).unwrap() > rev);
    }

    #[test]
    fn empty_services_are_dropped_after_ttl() {
        let s = EphemeralStore::new();
        s.register(&key(), inst("10.0.0.1", 0), 0);
        assert!(s.remove(&key(), &id("10.0.0.1"), 1_000));
        s.sweep(1_000 + EMPTY_SERVICE_TTL_MS - 1);
        assert!(s.contains(&key()));
        s.sweep(1_000 + EMPTY_SERVICE_TTL_MS);
        assert!(!s.contains(&key()));
    }

    #[test]
    fn snowflake_ids_take_smallest_free_integer() {
        let s = EphemeralStore::new();
        for ip in ["10.0.0.1", "10.0.0.2", "10.0.0.3"] {
            let mut i = inst(ip, 0);
            i.metadata
                .insert("preserved.instance.id.generator".into(), "snowflake".into());
            s.register(&key(), i, 0);
        }
        s.remove(&key(), &id("10.0.0.2"), 0);
        let mut i = inst("10.0.0.4", 0);
        i.metadata
            .insert("preserved.instance.id.generator".into(), "snowflake".into());
        s.register(&key(), i, 0);
        let ids: Vec<String> = s
            .with_service(&key(), |s| {
                s.instances.iter().map(|i| i.instance_id.clone()).collect()
            })
            .unwrap();
        assert_eq!(ids, vec!["0", "2", "1"]);
    }
}

#[cfg(test)]
mod paused_time_tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::Clock;

    #[tokio::test(start_paused = true)]
    async fn expiry_follows_the_tokio_clock() {
        let clock = Clock::new();
        let store = EphemeralStore::new();
        let key = ServiceKey::new("public", "DEFAULT_GROUP", "paused");
        let now = clock.now_ms();
        store.register(
            &key,
            Instance {
                last_beat_ms: now,
                ..crate::naming::model::test_instance("10.0.0.1", 80, "DEFAULT", true)
            },
            now,
        );
        let id = InstanceKey {
            ip: "10.0.0.1".into(),
            port: 80,
            cluster: "DEFAULT".into(),
        };
        // Beats every 5 s for a minute keep it healthy.
        for _ in 0..12 {
            tokio::time::advance(Duration::from_secs(5)).await;
            store.beat(&key, &id, clock.now_ms());
            assert!(store.sweep(clock.now_ms()).is_empty());
        }
        // Then silence: unhealthy after 15 s, removed after 30 s.
        tokio::time::advance(Duration::from_millis(15_001)).await;
        let e = store.sweep(clock.now_ms());
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].kind, ExpiryKind::Unhealthy);
        tokio::time::advance(Duration::from_secs(15)).await;
        let e = store.sweep(clock.now_ms());
        assert_eq!(e[0].kind, ExpiryKind::Removed);
        assert_eq!(store.counts().1, 0);
    }
}
