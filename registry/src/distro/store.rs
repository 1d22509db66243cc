//! The in-memory store of ephemeral instances (the AP side of the registry).
//!
//! Plain data and logic driven by explicit timestamps: registration, beats, patching and the
//! expiry sweep all take `now_ms` from the caller, so expiry is testable without sleeping.
//!
//! Every visible change gets a **version** from a hybrid logical clock (`max(now_ms << 16,
//! last + 1)`, raised past every version seen from peers): the service carries the version of
//! its last change, and each instance the version of its own last change (its *stamp*); a
//! removed instance leaves a stamped tombstone for [`TOMBSTONE_TTL_MS`]. Replication ships
//! [`ServiceRecord`]s, whole or as deltas of the instances that changed (rule V2), and a peer
//! **merges** one into its copy instance by instance: the
//! higher stamp wins, a tombstone beats an instance no newer than it, and an instance only one
//! side knows is kept. Merging is idempotent, order-insensitive and commutative, so two nodes
//! that accepted different registrations of one service at once both keep both (rule V1 in
//! [`crate::distro`]); a node whose merged copy holds something the sender lacked sends its
//! copy back.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

use nacre_ring::ServiceKey;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::naming::intern::MetadataPool;
use crate::naming::model::{grow_compact, push_compact, Instance, InstanceKey};
use crate::naming::persistent::{apply_patch, put_at, service_not_found, InstancePatch, PutMode};
use crate::naming::NamingError;

/// How long an ephemeral service may stay empty before it is dropped (ms), by default (the
/// `empty_service_ttl_ms` setting). Nacos's shipped
/// config cleans empty services after roughly five 30 s checks; one minute keeps lists tidy
/// without racing a client that re-registers after a restart.
pub const EMPTY_SERVICE_TTL_MS: u64 = 60_000;

/// How long a deleted service's tombstone is kept (ms): far longer than a verify round, so a
/// copy a peer still holds meets the deletion instead of bringing the service back.
pub const TOMBSTONE_TTL_MS: u64 = 300_000;

/// Candidate services the sweep judges and changes per hold of the write lock.
const SWEEP_BATCH: usize = 256;

/// Bits of a version below the millisecond part: room for 65,536 changes per ms.
const VERSION_SHIFT: u32 = 16;

/// The wall-clock millisecond a version was issued at (for ages in logs and repair rules).
pub fn version_ms(version: u64) -> u64 {
    version >> VERSION_SHIFT
}

/// Ephemeral instances of one service.
#[derive(Debug, Clone, Default)]
pub struct EphemeralService {
    /// Instances in registration order.
    pub instances: Vec<Instance>,
    /// The version of each instance's last change, aligned with `instances`.
    stamps: Vec<u64>,
    /// Instances removed within [`TOMBSTONE_TTL_MS`]: identity → (removal version, ms learned).
    removed: HashMap<InstanceKey, (u64, u64)>,
    /// Hybrid-logical-clock version of the last visible change.
    pub version: u64,
    /// When the service last became empty (ms), if it is empty.
    empty_since_ms: Option<u64>,
    /// Instances stamped at or below this were deleted with the service: it was re-created
    /// above a deletion (rule D1), and an older copy must not bring them back once the
    /// service's tombstone is gone.
    floor: u64,
    /// Until this wall-clock ms no instance here can pass a timeout, so the sweep skips the
    /// service (rule E5 in [`crate::distro`]).
    check_at: CheckAt,
    /// Positions by identity, once the service is large enough to index.
    index: PositionIndex,
    /// [`EphemeralService::checksum`] as of the last change.
    sum: CachedSum,
}

/// A service's checksum, kept until its next change: verify asks for it every round for every
/// service, and computing it hashes every instance. Every change of what the checksum covers
/// goes through [`EphemeralService::set_version`] (as rule E5's `check_at` relies on), which
/// forgets it; it is computed under the read lock, where two readers store the same value.
#[derive(Debug, Default)]
struct CachedSum {
    value: AtomicU64,
    valid: std::sync::atomic::AtomicBool,
}

impl CachedSum {
    fn get(&self) -> Option<u64> {
        self.valid
            .load(Ordering::Acquire)
            .then(|| self.value.load(Ordering::Relaxed))
    }

    fn put(&self, sum: u64) {
        self.value.store(sum, Ordering::Relaxed);
        self.valid.store(true, Ordering::Release);
    }

    fn forget(&self) {
        self.valid.store(false, Ordering::Release);
    }
}

impl Clone for CachedSum {
    /// A copy computes its own on first use.
    fn clone(&self) -> Self {
        Self::default()
    }
}

/// From this many instances a service keeps a [`PositionIndex`]: below it a scan is as cheap.
const INDEXED_FROM: usize = 64;

/// Where each instance of a large service sits in its list, so that a beat or a registration
/// into a 10,000-instance service finds its instance by a binary search instead of a scan:
/// each position with 32 bits of the hash of the identity there, ordered by that hash
/// (8 bytes per instance, a hash map took five times that; keeping the hash lets a probe
/// compare numbers instead of hashing the instance it lands on).
///
/// The index is either absent or complete: an append inserts the new position; anything that
/// removes or reorders instances drops the index, and the next lookup that may build it does.
/// Identities that share a hash sit side by side and are told apart by comparing them, so a
/// lookup is never wrong.
#[derive(Debug, Clone, Default)]
struct PositionIndex(Option<Vec<Slot>>);

/// One entry of a [`PositionIndex`]; ordered by `hash` first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Slot {
    hash: u32,
    at: u32,
}

/// The index's order (it never leaves this node).
fn identity_hash(ip: &str, port: u16, cluster: &str) -> u32 {
    use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};
    let seed = u64::from(port) ^ xxh3_64(cluster.as_bytes()).rotate_left(17);
    // The low half: xxh3 mixes every bit of the input into it.
    xxh3_64_with_seed(ip.as_bytes(), seed) as u32
}

/// The earliest ms at which a service's instances must be looked at again. The sweep raises
/// it from its read-locked pass (hence atomic); every change but a plain beat resets it to 0.
#[derive(Debug, Default)]
struct CheckAt(AtomicU64);

impl CheckAt {
    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self, ms: u64) {
        self.0.store(ms, Ordering::Relaxed);
    }
}

impl Clone for CheckAt {
    fn clone(&self) -> Self {
        Self(AtomicU64::new(self.get()))
    }
}

impl EphemeralService {
    /// The identity hash of the instance at `at` (the index's order).
    fn hash_at(&self, at: usize) -> u32 {
        self.instances
            .get(at)
            .map_or(u32::MAX, |i| identity_hash(&i.ip, i.port, &i.cluster))
    }

    fn position(&self, ip: &str, port: u16, cluster: &str) -> Option<usize> {
        if let Some(index) = &self.index.0 {
            let h = identity_hash(ip, port, cluster);
            let from = index.partition_point(|s| s.hash < h);
            // Complete: an identity it does not hold is not here.
            return index[from..]
                .iter()
                .take_while(|s| s.hash == h)
                .map(|s| s.at as usize)
                .find(|&at| self.instances[at].matches(ip, port, cluster));
        }
        self.instances
            .iter()
            .position(|i| i.matches(ip, port, cluster))
    }

    /// Builds the position index if the service is large enough and has none.
    fn index(&mut self) {
        if self.index.0.is_some() || self.instances.len() < INDEXED_FROM {
            return;
        }
        let mut index: Vec<Slot> = self
            .instances
            .iter()
            .zip(0u32..)
            .map(|(i, at)| Slot {
                hash: identity_hash(&i.ip, i.port, &i.cluster),
                at,
            })
            .collect();
        index.sort_unstable();
        self.index.0 = Some(index);
    }

    /// Records that an instance was appended at the end of the list.
    fn appended(&mut self) {
        let Some(last) = self.instances.len().checked_sub(1) else {
            return;
        };
        let Some(mut index) = self.index.0.take() else {
            return;
        };
        let hash = self.hash_at(last);
        let pos = index.partition_point(|s| s.hash <= hash);
        grow_compact(&mut index);
        index.insert(
            pos,
            Slot {
                hash,
                at: last as u32,
            },
        );
        self.index.0 = Some(index);
    }

    /// Records that instance `id` changed at version `v`: a new instance (pushed last, as
    /// [`put_into`](crate::naming::persistent::put_into) does) gets a stamp, an existing one a new stamp; a tombstone is lifted.
    fn stamp(&mut self, id: &InstanceKey, v: u64) {
        while self.stamps.len() < self.instances.len() {
            push_compact(&mut self.stamps, v);
        }
        if let Some(i) = self.position(&id.ip, id.port, &id.cluster) {
            self.stamps[i] = v;
        }
        self.removed.remove(id);
    }

    /// Whether a sweep at `now_ms` has anything to do here: expired instance tombstones, or
    /// (when `owned`) an empty service past `empty_ttl_ms` or an instance past a timeout, as
    /// of `horizon_ms` (rule E6).
    fn needs_sweep(&self, now_ms: u64, horizon_ms: u64, empty_ttl_ms: u64, owned: bool) -> bool {
        let stale_tombstone = self
            .removed
            .values()
            .any(|(_, at)| now_ms.saturating_sub(*at) >= TOMBSTONE_TTL_MS);
        if stale_tombstone {
            return true;
        }
        if !owned {
            return false;
        }
        if let Some(since) = self.empty_since_ms {
            return horizon_ms.saturating_sub(since) >= empty_ttl_ms;
        }
        if horizon_ms <= self.check_at.get() {
            return false;
        }
        // Instance `i` passes a timeout once the horizon passes its deadline.
        let mut next = u64::MAX;
        for i in self.instances.iter().filter(|i| !i.marked) {
            let timeout = if i.healthy {
                i.beat_timeout_ms().min(i.delete_timeout_ms())
            } else {
                i.delete_timeout_ms()
            };
            let deadline = i.last_beat_ms.saturating_add(timeout);
            if horizon_ms > deadline {
                // Left as it is: the write pass changes the service, which resets it.
                return true;
            }
            next = next.min(deadline);
        }
        self.check_at.set(next);
        false
    }

    /// This service's replicated state.
    fn record(&self, key: &ServiceKey) -> ServiceRecord {
        ServiceRecord {
            key: key.clone(),
            version: self.version,
            instances: Some(self.instances.clone()),
            stamps: self.stamps.clone(),
            removed: self
                .removed
                .iter()
                .map(|(id, (v, _))| (id.clone(), *v))
                .collect(),
            floor: self.floor,
            partial: false,
        }
    }

    /// A delta of this service: its version and floor with only the instances in `ids` that
    /// it holds, and the removals of those it removed (rule V2 in [`crate::distro`]).
    fn delta<'a>(
        &self,
        key: &ServiceKey,
        ids: impl IntoIterator<Item = &'a InstanceKey>,
    ) -> ServiceRecord {
        let mut instances = Vec::new();
        let mut stamps = Vec::new();
        let mut removed = Vec::new();
        for id in ids {
            if let Some(i) = self.position(&id.ip, id.port, &id.cluster) {
                instances.push(self.instances[i].clone());
                stamps.push(self.stamp_at(i));
            } else if let Some((v, _)) = self.removed.get(id) {
                removed.push((id.clone(), *v));
            }
        }
        ServiceRecord {
            key: key.clone(),
            version: self.version,
            instances: Some(instances),
            stamps,
            removed,
            floor: self.floor,
            partial: true,
        }
    }

    /// Raises the floor to `v`, dropping the instances it buries; returns how many went.
    fn raise_floor(&mut self, v: u64) -> usize {
        if v <= self.floor {
            return 0;
        }
        self.floor = v;
        // Buried by the floor, not removed one by one: no instance tombstones needed.
        self.drain_where(|_, stamp| stamp <= v).len()
    }

    /// The stamp of the instance at `i` (0, older than every change, if it has none).
    fn stamp_at(&self, i: usize) -> u64 {
        self.stamps.get(i).copied().unwrap_or(0)
    }

    /// Removes the instance at `i`, leaving a tombstone at version `v`.
    fn remove_at(&mut self, i: usize, v: u64, now_ms: u64) {
        self.index.0 = None;
        let inst = self.instances.remove(i);
        if i < self.stamps.len() {
            self.stamps.remove(i);
        }
        self.removed.insert(inst.key(), (v, now_ms));
    }

    /// Removes every instance for which `gone(instance, stamp)` holds, in one pass, leaving a
    /// tombstone at version `v` for each; returns how many went.
    fn remove_where(
        &mut self,
        v: u64,
        now_ms: u64,
        gone: impl Fn(&Instance, u64) -> bool,
    ) -> usize {
        let removed = self.drain_where(gone);
        for inst in &removed {
            self.removed.insert(inst.key(), (v, now_ms));
        }
        removed.len()
    }

    /// Takes out every instance for which `gone(instance, stamp)` holds, in one pass, keeping
    /// instances and stamps aligned; returns what went.
    fn drain_where(&mut self, gone: impl Fn(&Instance, u64) -> bool) -> Vec<Instance> {
        self.index.0 = None;
        let instances = std::mem::take(&mut self.instances);
        let mut stamps = std::mem::take(&mut self.stamps);
        stamps.resize(instances.len(), 0);
        let mut drained = Vec::new();
        self.instances.reserve_exact(instances.len());
        self.stamps.reserve_exact(instances.len());
        for (inst, stamp) in instances.into_iter().zip(stamps) {
            if gone(&inst, stamp) {
                drained.push(inst);
            } else {
                self.instances.push(inst);
                self.stamps.push(stamp);
            }
        }
        drained
    }

    fn find_mut(&mut self, ip: &str, port: u16, cluster: &str) -> Option<&mut Instance> {
        self.index();
        let at = self.position(ip, port, cluster)?;
        self.instances.get_mut(at)
    }

    fn set_version(&mut self, version: u64, now_ms: u64) {
        self.version = version;
        // Something changed: an instance may have a nearer deadline now (rule E5), and the
        // checksum may differ.
        self.check_at.set(0);
        self.sum.forget();
        self.empty_since_ms = match (self.instances.is_empty(), self.empty_since_ms) {
            (false, _) => None,
            (true, Some(since)) => Some(since),
            (true, None) => Some(now_ms),
        };
    }

    /// Order-independent checksum of what replicas must agree on. `last_beat_ms` is left out:
    /// each node stamps it with its own clock.
    pub fn checksum(&self) -> u64 {
        if let Some(sum) = self.sum.get() {
            return sum;
        }
        let sum = self.compute_checksum();
        self.sum.put(sum);
        sum
    }

    fn compute_checksum(&self) -> u64 {
        let sum = self
            .instances
            .iter()
            // Wrapping sum: the order instances were registered in does not matter.
            .fold(0u64, |sum, i| sum.wrapping_add(instance_hash(i)));
        sum ^ (self.instances.len() as u64)
    }
}

/// One service's replicated state: what Distro ships between nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceRecord {
    /// The service.
    pub key: ServiceKey,
    /// Version of this state.
    pub version: u64,
    /// The instances, or `None` when the service was deleted at `version`.
    pub instances: Option<Vec<Instance>>,
    /// Each instance's stamp, aligned with `instances` (empty from a sender that keeps none:
    /// every instance is then taken at `version`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stamps: Vec<u64>,
    /// Instances the sender removed recently, with the version of each removal.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<(InstanceKey, u64)>,
    /// Instances stamped at or below this were deleted with the service (see
    /// `EphemeralService::floor`); 0 when it never was.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub floor: u64,
    /// A delta (rule V2 in [`crate::distro`]): `instances` and `removed` hold only the
    /// instances that changed, so what the record leaves out says nothing.
    #[serde(default, skip_serializing_if = "is_false")]
    pub partial: bool,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn is_false(v: &bool) -> bool {
    !*v
}

impl ServiceRecord {
    /// A record of a service deleted at `version`.
    pub fn deletion(key: ServiceKey, version: u64) -> Self {
        Self {
            key,
            version,
            instances: None,
            stamps: Vec::new(),
            removed: Vec::new(),
            floor: 0,
            partial: false,
        }
    }
}

/// What merging one record did here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Merged {
    /// The local copy changed (subscribers must hear of it).
    pub changed: bool,
    /// The local copy holds something the sender lacks: send it back.
    pub diverged: bool,
    /// A delta created the service here, which therefore holds only part of it: ask the
    /// sender for the whole record (rule V2).
    pub incomplete: bool,
}

/// Hash of one instance's replicated content (the checksum's unit; ties between equal stamps
/// are broken by it, the same way on every node).
fn instance_hash(i: &Instance) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(i.ip.as_bytes());
    h.update(&i.port.to_le_bytes());
    h.update(i.cluster.as_bytes());
    h.update(&i.weight.to_bits().to_le_bytes());
    h.update(&[
        i.healthy as u8,
        i.enabled as u8,
        i.ephemeral as u8,
        i.marked as u8,
    ]);
    for (k, v) in &i.metadata {
        h.update(k.as_bytes());
        h.update(&[0]);
        h.update(v.as_bytes());
        h.update(&[0]);
    }
    h.update(i.instance_id.as_bytes());
    h.update(&[0]);
    h.update(i.app.as_bytes());
    h.digest()
}

/// A service's version and checksum, compared by the periodic verify.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    /// The service.
    pub key: ServiceKey,
    /// Version of the sender's copy.
    pub version: u64,
    /// [`EphemeralService::checksum`] of the sender's copy.
    pub checksum: u64,
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

/// What one sweep did to one service: the sweep's log unit (one line per service and round,
/// however many instances a stopped fleet takes with it).
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceExpiry {
    /// Service.
    pub key: ServiceKey,
    /// Instances marked unhealthy.
    pub unhealthy: usize,
    /// Instances removed.
    pub removed: usize,
    /// The first few instances touched, for the log line.
    pub sample: Vec<InstanceKey>,
}

/// Instances named per service in a sweep's log line.
pub const EXPIRY_SAMPLE: usize = 3;

/// Groups a sweep's expiries by service, in the order services first appear.
pub fn summarize(expired: &[Expiry]) -> Vec<ServiceExpiry> {
    let mut out: Vec<ServiceExpiry> = Vec::new();
    let mut index: HashMap<&ServiceKey, usize> = HashMap::new();
    for e in expired {
        let i = *index.entry(&e.key).or_insert_with(|| {
            out.push(ServiceExpiry {
                key: e.key.clone(),
                unhealthy: 0,
                removed: 0,
                sample: Vec::new(),
            });
            out.len() - 1
        });
        let s = &mut out[i];
        match e.kind {
            ExpiryKind::Unhealthy => s.unhealthy += 1,
            ExpiryKind::Removed => s.removed += 1,
        }
        if s.sample.len() < EXPIRY_SAMPLE {
            s.sample.push(e.instance.clone());
        }
    }
    out
}

/// A deleted service: the version of its deletion, when this node learned of it, and the
/// instance removals a peer reported for it (an empty service's record can carry removals newer
/// than its deletion: they must outlive its absence here, or merging the same records twice
/// could end differently).
#[derive(Debug, Clone, Default)]
struct Tombstone {
    version: u64,
    at_ms: u64,
    removed: HashMap<InstanceKey, u64>,
}

impl Tombstone {
    /// Hands the removals it kept to `svc`, created again.
    fn carry_into(&self, svc: &mut EphemeralService, now_ms: u64) {
        for (id, t) in &self.removed {
            let known = svc.removed.entry(id.clone()).or_insert((*t, now_ms));
            known.0 = known.0.max(*t);
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    services: HashMap<ServiceKey, EphemeralService>,
    /// Deleted services, kept [`TOMBSTONE_TTL_MS`]: older copies of them are refused.
    tombstones: HashMap<ServiceKey, Tombstone>,
    /// The hybrid logical clock: the highest version issued or seen.
    hlc: u64,
    /// The distinct metadata maps instances point at: every instance taken in is interned.
    metadata: MetadataPool,
}

/// What a sweep did.
#[derive(Debug, Default)]
pub struct Swept {
    /// Instances marked unhealthy or removed.
    pub expired: Vec<Expiry>,
    /// Empty services this node dropped as their owner (peers learn it as deletions).
    pub dropped: Vec<ServiceKey>,
}

impl Inner {
    fn next_version(&mut self, now_ms: u64, floor: u64) -> u64 {
        // Saturating: versions arrive from peers, and a corrupt one near u64::MAX must not
        // overflow the clock (a panic in debug builds, a wrap to old versions in release).
        let v = (now_ms << VERSION_SHIFT).max(self.hlc.max(floor).saturating_add(1));
        self.hlc = v;
        v
    }

    /// Stamps a visible change of `key` with a fresh version, and returns it.
    fn touch(&mut self, key: &ServiceKey, now_ms: u64) -> u64 {
        let floor = self.services.get(key).map_or(0, |s| s.version);
        let v = self.next_version(now_ms, floor);
        if let Some(s) = self.services.get_mut(key) {
            s.set_version(v, now_ms);
            // Re-created above its deletion: the floor keeps what the tombstone guarded.
            // (Every instance here came after the deletion; the one being registered is
            // stamped right after this.)
            if let Some(t) = self.tombstones.remove(key) {
                s.floor = s.floor.max(t.version);
                t.carry_into(s, now_ms);
            }
        }
        v
    }

    /// Stamps a change of instance `id` of `key`: a fresh service version, which becomes the
    /// instance's stamp.
    fn touch_instance(&mut self, key: &ServiceKey, id: &InstanceKey, now_ms: u64) {
        let v = self.touch(key, now_ms);
        if let Some(s) = self.services.get_mut(key) {
            s.stamp(id, v);
        }
    }

    /// Merges a peer's deletion of `key` at `version`: every instance no newer than it goes;
    /// an instance changed here after the deletion keeps the service alive (and the sender
    /// hears of it).
    fn merge_deletion(&mut self, key: &ServiceKey, version: u64, now_ms: u64) -> Merged {
        // The local copy outlives the deletion if anything in it is newer, or if it was
        // re-created above a later deletion already (its floor).
        let newer = self
            .services
            .get(key)
            .map(|svc| svc.floor > version || svc.stamps.iter().any(|s| *s > version));
        match newer {
            None | Some(false) => {
                let dropped = self.services.remove(key);
                let t = self.tombstones.entry(key.clone()).or_insert(Tombstone {
                    version,
                    at_ms: now_ms,
                    ..Tombstone::default()
                });
                t.version = t.version.max(version);
                // Removals newer than the deletion outlive the service (rule D1): one of its
                // instances stamped between the two must stay removed if it comes back.
                let newer = dropped.iter().flat_map(|svc| &svc.removed);
                for (id, (v, _)) in newer.filter(|(_, (v, _))| *v > version) {
                    let known = t.removed.entry(id.clone()).or_insert(*v);
                    *known = (*known).max(*v);
                }
                Merged {
                    changed: dropped.is_some(),
                    ..Merged::default()
                }
            }
            Some(true) => {
                let Some(svc) = self.services.get_mut(key) else {
                    return Merged::default();
                };
                let gone = svc.remove_where(version, now_ms, |_, stamp| stamp <= version);
                svc.raise_floor(version);
                self.touch(key, now_ms);
                Merged {
                    changed: gone > 0,
                    diverged: true,
                    ..Merged::default()
                }
            }
        }
    }

    /// Removes `key` here and remembers the deletion at a fresh version.
    fn delete(&mut self, key: &ServiceKey, now_ms: u64) -> bool {
        let Some(svc) = self.services.remove(key) else {
            return false;
        };
        let version = self.next_version(now_ms, svc.version);
        self.tombstones.insert(
            key.clone(),
            Tombstone {
                version,
                at_ms: now_ms,
                ..Tombstone::default()
            },
        );
        true
    }
}

/// All ephemeral services of a node.
#[derive(Debug)]
pub struct EphemeralStore {
    inner: RwLock<Inner>,
    /// How long a service may stay empty before its owner drops it (ms).
    empty_ttl_ms: u64,
}

impl Default for EphemeralStore {
    fn default() -> Self {
        Self::with_empty_ttl(EMPTY_SERVICE_TTL_MS)
    }
}

impl EphemeralStore {
    /// An empty store that drops services empty for [`EMPTY_SERVICE_TTL_MS`].
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store that drops services empty for `empty_ttl_ms`.
    pub fn with_empty_ttl(empty_ttl_ms: u64) -> Self {
        Self {
            inner: RwLock::new(Inner::default()),
            empty_ttl_ms,
        }
    }

    /// Inserts or replaces an instance (see [`put_into`](crate::naming::persistent::put_into) for the rules); `UpdateExisting`
    /// fails when the service or the instance is missing.
    pub fn put(
        &self,
        key: &ServiceKey,
        instance: Instance,
        mode: PutMode,
        now_ms: u64,
    ) -> Result<(), NamingError> {
        let mut instance = instance;
        let mut inner = self.inner.write();
        inner.metadata.intern(&mut instance.metadata);
        let svc = match mode {
            PutMode::Upsert => inner.services.entry(key.clone()).or_default(),
            PutMode::UpdateExisting => inner
                .services
                .get_mut(key)
                .ok_or_else(|| service_not_found(key))?,
        };
        let id = instance.key();
        svc.index();
        let at = svc.position(&id.ip, id.port, &id.cluster);
        let before = svc.instances.len();
        put_at(&mut svc.instances, at, instance, mode)?;
        if svc.instances.len() > before {
            svc.appended();
        }
        inner.touch_instance(key, &id, now_ms);
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
        let mut guard = self.inner.write();
        let inner = &mut *guard;
        let svc = inner
            .services
            .get_mut(key)
            .ok_or_else(|| NamingError::bad("instance not found"))?;
        let inst = svc
            .find_mut(&id.ip, id.port, &id.cluster)
            .ok_or_else(|| NamingError::bad("instance not found"))?;
        let changed = f(inst);
        // A patch may have given it new metadata.
        inner.metadata.intern(&mut inst.metadata);
        if changed {
            inner.touch_instance(key, id, now_ms);
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
        let mut inner = self.inner.write();
        let Some(i) = inner
            .services
            .get(key)
            .and_then(|svc| svc.position(&id.ip, id.port, &id.cluster))
        else {
            return false;
        };
        let v = inner.touch(key, now_ms);
        if let Some(svc) = inner.services.get_mut(key) {
            svc.remove_at(i, v, now_ms);
            svc.set_version(v, now_ms);
        }
        true
    }

    /// Records a beat.
    pub fn beat(&self, key: &ServiceKey, id: &InstanceKey, now_ms: u64) -> BeatOutcome {
        let mut inner = self.inner.write();
        let Some(svc) = inner.services.get_mut(key) else {
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
            inner.touch_instance(key, id, now_ms);
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

    /// Drops a whole service, keeping a tombstone; true when it existed. Peers learn of it
    /// through [`EphemeralStore::deletion_record`] when the change is replicated.
    pub fn remove_service(&self, key: &ServiceKey, now_ms: u64) -> bool {
        self.inner.write().delete(key, now_ms)
    }

    /// The version of `key`'s deletion, while its tombstone is kept.
    pub fn tombstone(&self, key: &ServiceKey) -> Option<u64> {
        self.inner.read().tombstones.get(key).map(|t| t.version)
    }

    /// A deletion record for a service that no longer exists here: at its tombstone's version,
    /// or (no tombstone kept) above everything this node has seen; `None` when it exists.
    pub fn deletion_record(&self, key: &ServiceKey) -> Option<ServiceRecord> {
        let mut inner = self.inner.write();
        if inner.services.contains_key(key) {
            return None;
        }
        let version = match inner.tombstones.get(key) {
            Some(t) => t.version,
            None => {
                inner.hlc = inner.hlc.saturating_add(1);
                inner.hlc
            }
        };
        Some(ServiceRecord::deletion(key.clone(), version))
    }

    /// Gives an existing service a fresh version without changing it, so that every peer
    /// takes this node's copy (used when copies with equal versions disagree).
    pub fn restamp(&self, key: &ServiceKey, now_ms: u64) -> bool {
        let mut inner = self.inner.write();
        if !inner.services.contains_key(key) {
            return false;
        }
        inner.touch(key, now_ms);
        true
    }

    /// Marks silent instances unhealthy and removes those silent past their delete timeout,
    /// in every service; drops services empty for the store's empty-service TTL.
    pub fn sweep(&self, now_ms: u64) -> Vec<Expiry> {
        self.sweep_owned(now_ms, now_ms, |_| true).expired
    }

    /// Like [`sweep`](Self::sweep), for the services for which `owned` holds: in a cluster only
    /// a service's owner judges its instances, and only the owner drops it once empty (rule
    /// D1 in [`crate::distro`]); the others follow its deletion record, and an older copy meets
    /// the tombstone instead of bringing the service back. Expired tombstones are forgotten.
    ///
    /// Two passes, so that beats and writes are not held up by a walk over every instance:
    /// a read-locked pass finds the services with something to do (an instance past a
    /// timeout, an empty service past its TTL, expired instance tombstones); only those are
    /// then judged again, and changed, under the write lock, 256 services per
    /// hold of it.
    ///
    /// Silence is judged up to `horizon_ms` (rule E6: `now_ms` less the node's lag); `now_ms`
    /// stamps the changes and ages tombstones.
    pub fn sweep_owned(
        &self,
        now_ms: u64,
        horizon_ms: u64,
        owned: impl Fn(&ServiceKey) -> bool,
    ) -> Swept {
        let candidates: Vec<ServiceKey> = {
            let inner = self.inner.read();
            inner
                .services
                .iter()
                .filter(|(key, svc)| {
                    svc.needs_sweep(now_ms, horizon_ms, self.empty_ttl_ms, owned(key))
                })
                .map(|(key, _)| key.clone())
                .collect()
        };
        let mut out = Swept::default();
        // A batch of services per write lock: a mass expiry (a zone gone silent) holds beats
        // and writes up behind one batch, not behind all of it. Each service is judged again
        // under the lock that changes it, so what happened since the read pass counts.
        for batch in candidates.chunks(SWEEP_BATCH) {
            let mut inner = self.inner.write();
            self.sweep_batch(&mut inner, batch, (now_ms, horizon_ms), &owned, &mut out);
        }
        let mut inner = self.inner.write();
        inner
            .tombstones
            .retain(|_, t| now_ms.saturating_sub(t.at_ms) < TOMBSTONE_TTL_MS);
        out
    }

    /// The write half of [`sweep_owned`](Self::sweep_owned) for one batch of candidate
    /// services, under the write lock the caller holds.
    fn sweep_batch(
        &self,
        inner: &mut Inner,
        batch: &[ServiceKey],
        (now_ms, horizon_ms): (u64, u64),
        owned: &impl Fn(&ServiceKey) -> bool,
        out: &mut Swept,
    ) {
        let mut dropped = Vec::new();
        // (service, instances turned unhealthy, instances removed): stamped once the
        // service's new version is known.
        let mut changed: Vec<(ServiceKey, Vec<InstanceKey>, Vec<InstanceKey>)> = Vec::new();
        for key in batch {
            let Some(svc) = inner.services.get_mut(key) else {
                continue;
            };
            svc.removed
                .retain(|_, (_, at)| now_ms.saturating_sub(*at) < TOMBSTONE_TTL_MS);
            if !owned(key) {
                continue;
            }
            if let Some(since) = svc.empty_since_ms {
                if horizon_ms.saturating_sub(since) >= self.empty_ttl_ms {
                    dropped.push(key.clone());
                }
                continue;
            }
            let (mut unhealthy, mut removed) = (Vec::new(), Vec::new());
            for inst in svc.instances.iter_mut().filter(|i| !i.marked) {
                let silent = horizon_ms.saturating_sub(inst.last_beat_ms);
                if silent > inst.delete_timeout_ms() {
                    removed.push(inst.key());
                } else if inst.healthy && silent > inst.beat_timeout_ms() {
                    inst.healthy = false;
                    unhealthy.push(inst.key());
                }
            }
            for (ids, kind) in [
                (&unhealthy, ExpiryKind::Unhealthy),
                (&removed, ExpiryKind::Removed),
            ] {
                out.expired.extend(ids.iter().map(|id| Expiry {
                    key: key.clone(),
                    instance: id.clone(),
                    kind,
                }));
            }
            if !unhealthy.is_empty() || !removed.is_empty() {
                changed.push((key.clone(), unhealthy, removed));
            }
        }
        for (key, unhealthy, removed) in changed {
            let v = inner.touch(&key, now_ms);
            let Some(svc) = inner.services.get_mut(&key) else {
                continue;
            };
            for id in &unhealthy {
                svc.stamp(id, v);
            }
            if !removed.is_empty() {
                let gone: std::collections::HashSet<&InstanceKey> = removed.iter().collect();
                svc.remove_where(v, now_ms, |inst, _| gone.contains(&inst.key()));
                svc.set_version(v, now_ms);
            }
        }
        // Deleted under the same lock that found them empty: a registration arriving after
        // the lock is released finds the tombstone and re-creates the service above it.
        for k in &dropped {
            inner.delete(k, now_ms);
        }
        out.dropped.extend(dropped);
    }

    /// Gives every instance of the services selected by `pred` a fresh beat time, so a node
    /// that has just become their owner waits one full timeout before expiring anything: it
    /// never saw their beats, and a membership change must not mass-delete live instances.
    pub fn grant_grace(&self, now_ms: u64, pred: impl Fn(&ServiceKey) -> bool) -> usize {
        let mut inner = self.inner.write();
        let mut n = 0;
        for (key, svc) in inner.services.iter_mut() {
            if pred(key) {
                for i in &mut svc.instances {
                    i.last_beat_ms = i.last_beat_ms.max(now_ms);
                }
                n += 1;
            }
        }
        n
    }

    /// Moves every instance's last beat `by_ms` later (never past `now_ms`): the node could
    /// not observe that long (a pause, a stall), so that silence is not the instances'.
    pub fn extend_deadlines(&self, by_ms: u64, now_ms: u64) {
        let mut inner = self.inner.write();
        for svc in inner.services.values_mut() {
            for i in &mut svc.instances {
                i.last_beat_ms = i.last_beat_ms.saturating_add(by_ms).min(now_ms);
            }
        }
    }

    /// Merges a peer's record into the local copy (rule V1: instance by instance, the higher
    /// stamp wins; see the module doc).
    ///
    /// Instances taken from the record get `last_beat_ms = now_ms`: the sender's beat times
    /// come from another clock, and "last heard of" is what expiry needs should this node
    /// become the owner. Instances kept from the local copy keep their beat times.
    pub fn apply_remote(&self, record: ServiceRecord, now_ms: u64) -> Merged {
        let mut inner = self.inner.write();
        let top = record
            .stamps
            .iter()
            .chain(record.removed.iter().map(|(_, v)| v))
            .fold(record.version, |a, b| a.max(*b));
        inner.hlc = inner.hlc.max(top);
        let key = record.key.clone();
        // Everything at or below the service's last deletion, as this node or the sender
        // knows it, stays deleted.
        let tomb = [
            inner.tombstones.get(&key).map(|t| t.version),
            inner.services.get(&key).map(|s| s.floor),
            Some(record.floor),
        ]
        .into_iter()
        .flatten()
        .max()
        .filter(|v| *v > 0);
        let Some(remote) = record.instances else {
            return inner.merge_deletion(&key, record.version, now_ms);
        };
        let stamps = if record.stamps.len() == remote.len() {
            record.stamps
        } else {
            vec![record.version; remote.len()]
        };
        // Instances no newer than the service's deletion here stay deleted. A record naming
        // one instance twice is malformed (no node sends one); the newest copy counts, as it
        // would had the two arrived in two records, so merging stays idempotent.
        let mut newest: HashMap<InstanceKey, (Instance, u64)> =
            HashMap::with_capacity(remote.len());
        for (inst, s) in remote.into_iter().zip(stamps) {
            if tomb.is_some_and(|t| s <= t) {
                continue;
            }
            match newest.entry(inst.key()) {
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert((inst, s));
                }
                std::collections::hash_map::Entry::Occupied(mut e) => {
                    let (kept, ks) = e.get();
                    if (s, instance_hash(&inst)) > (*ks, instance_hash(kept)) {
                        e.insert((inst, s));
                    }
                }
            }
        }
        let mut live: Vec<(Instance, u64)> = newest.into_values().collect();
        for (inst, _) in &mut live {
            inner.metadata.intern(&mut inst.metadata);
        }
        if !inner.services.contains_key(&key) && live.is_empty() {
            if let Some(t) = tomb {
                // Nothing to create, but remember the deletion the sender knows of.
                let kept = inner.tombstones.entry(key).or_insert(Tombstone {
                    version: t,
                    at_ms: now_ms,
                    ..Tombstone::default()
                });
                kept.version = kept.version.max(t);
                for (id, v) in &record.removed {
                    let known = kept.removed.entry(id.clone()).or_insert(*v);
                    *known = (*known).max(*v);
                }
                return Merged::default();
            }
        }
        let created = !inner.services.contains_key(&key);
        let carried = created
            .then(|| inner.tombstones.get(&key).cloned())
            .flatten();
        let svc = inner.services.entry(key.clone()).or_default();
        if let Some(t) = &carried {
            t.carry_into(svc, now_ms);
        }
        // Every instance has a stamp (see `stamp`); the merge below indexes both together.
        svc.stamps.resize(svc.instances.len(), 0);
        let mut changed = created | (svc.raise_floor(tomb.unwrap_or(0)) > 0);
        for (id, t) in &record.removed {
            if let Some(i) = svc.position(&id.ip, id.port, &id.cluster) {
                if svc.stamp_at(i) <= *t {
                    svc.remove_at(i, *t, now_ms);
                    changed = true;
                    continue;
                }
            }
            let known = svc.removed.entry(id.clone()).or_insert((*t, now_ms));
            known.0 = known.0.max(*t);
        }
        // After the removals above (which drop it): each lookup below is then O(1).
        svc.index();
        let mut sender: HashMap<InstanceKey, u64> = HashMap::with_capacity(live.len());
        for (mut inst, s) in live {
            let id = inst.key();
            sender.insert(id.clone(), s);
            if svc.removed.get(&id).is_some_and(|(t, _)| *t >= s) {
                continue;
            }
            inst.last_beat_ms = now_ms;
            match svc.position(&inst.ip, inst.port, &inst.cluster) {
                Some(i) => {
                    let local = (svc.stamp_at(i), instance_hash(&svc.instances[i]));
                    if (s, instance_hash(&inst)) > local {
                        inst.last_beat_ms = inst.last_beat_ms.max(svc.instances[i].last_beat_ms);
                        svc.instances[i] = inst;
                        svc.stamps[i] = s;
                        changed = true;
                    }
                }
                None => {
                    push_compact(&mut svc.instances, inst);
                    svc.appended();
                    push_compact(&mut svc.stamps, s);
                    svc.removed.remove(&id);
                    changed = true;
                }
            }
        }
        // Does the sender lack anything of ours: an instance, a newer stamp, a removal? A delta
        // speaks only for the instances it names (rule V2).
        let diverged = if record.partial {
            let newer_here =
                |id: &InstanceKey, s: u64| match svc.position(&id.ip, id.port, &id.cluster) {
                    Some(i) => svc.stamp_at(i) != s,
                    None => svc.removed.get(id).is_some_and(|(t, _)| *t >= s),
                };
            sender.iter().any(|(id, s)| newer_here(id, *s))
                || record.removed.iter().any(|(id, t)| {
                    svc.position(&id.ip, id.port, &id.cluster)
                        .is_some_and(|i| svc.stamp_at(i) > *t)
                })
        } else {
            svc.instances
                .iter()
                .zip(&svc.stamps)
                .any(|(i, s)| sender.get(&i.key()) != Some(s))
                || svc
                    .removed
                    .iter()
                    .any(|(id, (t, _))| sender.get(id).is_some_and(|s| s <= t))
        };
        let version = svc.version.max(record.version);
        svc.set_version(version, now_ms);
        if changed {
            inner.tombstones.remove(&key);
        }
        if diverged {
            // Our merged copy must win the sender's version comparisons (verify) from now on.
            inner.touch(&key, now_ms);
        }
        Merged {
            changed,
            diverged,
            incomplete: created && record.partial,
        }
    }

    /// The current records of `keys` (a missing service is left out).
    pub fn export(&self, keys: &[ServiceKey]) -> Vec<ServiceRecord> {
        let inner = self.inner.read();
        keys.iter()
            .filter_map(|k| inner.services.get(k).map(|s| s.record(k)))
            .collect()
    }

    /// What a peer is owed of each item: the whole record (`None`) or a delta of the named
    /// instances (rule V2). A service missing here was deleted: the peer gets its deletion
    /// record (see [`EphemeralStore::deletion_record`]).
    pub fn export_changes<'a>(
        &self,
        items: impl IntoIterator<Item = (&'a ServiceKey, Option<&'a HashSet<InstanceKey>>)>,
    ) -> Vec<ServiceRecord> {
        let mut missing = Vec::new();
        let mut out: Vec<ServiceRecord> = {
            let inner = self.inner.read();
            items
                .into_iter()
                .filter_map(|(k, ids)| {
                    let Some(svc) = inner.services.get(k) else {
                        missing.push(k);
                        return None;
                    };
                    Some(match ids {
                        None => svc.record(k),
                        Some(ids) => svc.delta(k, ids),
                    })
                })
                .collect()
        };
        // After the read lock: a deletion record may advance the clock (a write).
        out.extend(missing.into_iter().filter_map(|k| self.deletion_record(k)));
        out
    }

    /// Every service's record (a full snapshot for a starting peer).
    pub fn export_all(&self) -> Vec<ServiceRecord> {
        let inner = self.inner.read();
        inner.services.iter().map(|(k, s)| s.record(k)).collect()
    }

    /// Version and checksum of every service selected by `pred`.
    pub fn digests(&self, pred: impl Fn(&ServiceKey) -> bool) -> Vec<Digest> {
        let inner = self.inner.read();
        inner
            .services
            .iter()
            .filter(|(k, _)| pred(k))
            .map(|(k, s)| Digest {
                key: k.clone(),
                version: s.version,
                checksum: s.checksum(),
            })
            .collect()
    }

    /// The local version and checksum of one service.
    pub fn digest(&self, key: &ServiceKey) -> Option<(u64, u64)> {
        self.inner
            .read()
            .services
            .get(key)
            .map(|s| (s.version, s.checksum()))
    }

    /// Runs `f` on one service, if present.
    pub fn with_service<R>(
        &self,
        key: &ServiceKey,
        f: impl FnOnce(&EphemeralService) -> R,
    ) -> Option<R> {
        self.inner.read().services.get(key).map(f)
    }

    /// Whether the service exists here.
    pub fn contains(&self, key: &ServiceKey) -> bool {
        self.inner.read().services.contains_key(key)
    }

    /// Keys of all services, unordered.
    pub fn keys(&self) -> Vec<ServiceKey> {
        self.inner.read().services.keys().cloned().collect()
    }

    /// (services, instances, fingerprint) of everything held. The fingerprint is an
    /// order-independent hash of every service's key and [`EphemeralService::checksum`]: nodes
    /// that hold the same data show the same value, which is how convergence is observed.
    pub fn fingerprint(&self) -> (usize, usize, u64) {
        let inner = self.inner.read();
        let mut sum = 0u64;
        let mut instances = 0;
        for (k, svc) in &inner.services {
            let mut h = xxhash_rust::xxh3::Xxh3::new();
            h.update(&k.ring_bytes());
            h.update(&svc.checksum().to_le_bytes());
            sum = sum.wrapping_add(h.digest());
            instances += svc.instances.len();
        }
        (inner.services.len(), instances, sum)
    }

    /// (services, instances) currently held.
    pub fn counts(&self) -> (usize, usize) {
        self.counts_where(|_| true)
    }

    /// (services, instances) of the services for which `pred` holds.
    pub fn counts_where(&self, pred: impl Fn(&ServiceKey) -> bool) -> (usize, usize) {
        let inner = self.inner.read();
        inner
            .services
            .iter()
            .filter(|(k, _)| pred(k))
            .fold((0, 0), |(s, i), (_, svc)| (s + 1, i + svc.instances.len()))
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

    fn with_meta(mut i: Instance, pairs: &[(&str, &str)]) -> Instance {
        for (k, v) in pairs {
            i.metadata.make_mut().insert(k.to_string(), v.to_string());
        }
        i
    }

    fn check_at(s: &EphemeralStore) -> u64 {
        s.with_service(&key(), |svc| svc.check_at.get()).unwrap()
    }

    fn scan(svc: &EphemeralService, ip: &str) -> Option<usize> {
        svc.instances
            .iter()
            .position(|i| i.matches(ip, 8080, "DEFAULT"))
    }

    #[test]
    fn a_large_service_finds_every_instance_through_its_index() {
        let s = EphemeralStore::new();
        let ip = |n: usize| format!("10.0.{}.{}", n / 256, n % 256);
        for n in 0..300 {
            s.register(&key(), inst(&ip(n), 0), 0);
        }
        let beat = |n: usize| s.beat(&key(), &inst(&ip(n), 0).key(), 1_000);
        assert!(matches!(beat(0), BeatOutcome::Alive { .. }));
        s.with_service(&key(), |svc| assert!(svc.index.0.is_some()))
            .unwrap();
        // Removals drop the index; lookups rebuild it and agree with a scan throughout.
        for n in (0..300).step_by(3) {
            assert!(s.remove(&key(), &inst(&ip(n), 0).key(), 2_000));
        }
        for n in 300..400 {
            s.register(&key(), inst(&ip(n), 0), 3_000);
        }
        for n in 0..400 {
            let alive = matches!(beat(n), BeatOutcome::Alive { .. });
            assert_eq!(alive, n >= 300 || n % 3 != 0, "instance {n}");
            s.with_service(&key(), |svc| {
                assert_eq!(
                    svc.position(&ip(n), 8080, "DEFAULT"),
                    scan(svc, &ip(n)),
                    "{n}"
                );
            })
            .unwrap();
        }
        // Re-registering an existing instance replaces it in place, not twice.
        s.register(&key(), inst(&ip(1), 4_000), 4_000);
        assert_eq!(s.counts(), (1, 300));
        // And a peer's record merged into the large service is found the same way.
        let mut record = s.export(&[key()]).remove(0);
        record.instances.as_mut().unwrap().push(inst("10.9.9.9", 0));
        record.stamps.push(record.version + 1);
        s.apply_remote(record, 5_000);
        assert!(matches!(
            s.beat(&key(), &inst("10.9.9.9", 0).key(), 5_000),
            BeatOutcome::Alive { .. }
        ));
        assert_eq!(s.counts(), (1, 301));
    }

    #[test]
    fn the_index_orders_positions_by_identity_hash_and_stays_complete() {
        let mut svc = EphemeralService::default();
        for n in 0..100 {
            svc.instances.push(inst(&format!("10.1.0.{n}"), 0));
        }
        svc.index();
        for n in 100..150 {
            svc.instances.push(inst(&format!("10.1.0.{n}"), 0));
            svc.appended();
        }
        let index = svc.index.0.clone().unwrap();
        assert_eq!(index.len(), 150);
        assert!(index.iter().all(|s| s.hash == svc.hash_at(s.at as usize)));
        assert!(index.windows(2).all(|w| w[0].hash <= w[1].hash));
        for n in 0..150 {
            assert_eq!(
                svc.position(&format!("10.1.0.{n}"), 8080, "DEFAULT"),
                Some(n)
            );
        }
        assert_eq!(svc.position("10.1.0.200", 8080, "DEFAULT"), None);
        assert_eq!(svc.position("10.1.0.5", 8081, "DEFAULT"), None);
    }

    #[test]
    fn a_mass_expiry_goes_in_batches_and_misses_nothing() {
        let s = EphemeralStore::with_empty_ttl(1_000);
        let n = 2 * SWEEP_BATCH + 17;
        let keys: Vec<ServiceKey> = (0..n)
            .map(|i| ServiceKey::new("public", "DEFAULT_GROUP", format!("svc-{i}")))
            .collect();
        for k in &keys {
            s.register(k, inst("10.0.0.1", 0), 0);
        }
        let unhealthy = s.sweep(15_001);
        assert_eq!(unhealthy.len(), n);
        let removed = s.sweep(30_001);
        assert_eq!(removed.len(), n);
        assert_eq!(s.counts(), (n, 0));
        // Every one of them empty past the TTL: all dropped, in batches too.
        let dropped = s.sweep_owned(31_002, 31_002, |_| true).dropped;
        assert_eq!(dropped.len(), n);
        assert_eq!(s.counts(), (0, 0));
        assert!(keys.iter().all(|k| s.tombstone(k).is_some()));
    }

    #[test]
    fn e5_the_sweep_leaves_a_service_alone_until_its_first_deadline() {
        let s = EphemeralStore::new();
        s.register(&key(), inst("10.0.0.1", 0), 0);
        s.register(&key(), inst("10.0.0.2", 2_000), 2_000);
        assert!(s.sweep(1_000).is_empty());
        // The nearest deadline: the first instance's beat timeout.
        assert_eq!(check_at(&s), 15_000);
        // Plain beats move deadlines later and leave the check time early, never late.
        s.beat(&key(), &inst("10.0.0.1", 0).key(), 10_000);
        assert!(s.sweep(15_001).is_empty());
        assert_eq!(check_at(&s), 17_000, "recomputed once due");
        let expired = s.sweep(17_001);
        assert_eq!(expired.len(), 1);
        assert_eq!(healthy(&s, "10.0.0.2"), Some(false));
        assert_eq!(healthy(&s, "10.0.0.1"), Some(true));
    }

    #[test]
    fn e6_an_instance_silent_only_within_the_lag_is_kept() {
        let s = EphemeralStore::new();
        s.register(&key(), inst("10.0.0.1", 0), 0);
        // 16 s of silence against a 15 s beat timeout, but the node runs 2 s late: the beat
        // that would have come in time may still be waiting in its queues.
        assert!(s.sweep_owned(16_000, 14_000, |_| true).expired.is_empty());
        assert_eq!(healthy(&s, "10.0.0.1"), Some(true));
        // Caught up and still silent: judged as usual.
        let expired = s.sweep_owned(16_001, 16_001, |_| true).expired;
        assert_eq!(expired.len(), 1);
        assert_eq!(healthy(&s, "10.0.0.1"), Some(false));
        // The removal too waits for the horizon, not the clock.
        assert!(s.sweep_owned(31_000, 29_000, |_| true).expired.is_empty());
        assert_eq!(s.sweep_owned(31_000, 30_001, |_| true).expired.len(), 1);
    }

    #[test]
    fn e5_any_change_but_a_beat_brings_the_check_forward() {
        let s = EphemeralStore::new();
        s.register(&key(), inst("10.0.0.1", 0), 0);
        assert!(s.sweep(1_000).is_empty());
        assert_eq!(check_at(&s), 15_000);
        // A newcomer with a one-second timeout: due long before the check time set above.
        let short = with_meta(
            inst("10.0.0.2", 2_000),
            &[("preserved.heart.beat.timeout", "1000")],
        );
        s.register(&key(), short, 2_000);
        assert_eq!(s.sweep(3_001).len(), 1);
        assert_eq!(healthy(&s, "10.0.0.2"), Some(false));
        // The same through a peer's record: an instance it knows with a short timeout.
        let s = EphemeralStore::new();
        s.register(&key(), inst("10.0.0.1", 0), 0);
        assert!(s.sweep(1_000).is_empty());
        let mut record = s.export(&[key()]).remove(0);
        let mut peer = with_meta(
            inst("10.0.0.3", 0),
            &[("preserved.heart.beat.timeout", "500")],
        );
        peer.last_beat_ms = 0;
        record.instances.as_mut().unwrap().push(peer);
        record.stamps.push(record.version + 1);
        s.apply_remote(record, 2_000);
        assert_eq!(s.sweep(2_501).len(), 1);
        assert_eq!(healthy(&s, "10.0.0.3"), Some(false));
        // And a patch shortening a timeout.
        let s = EphemeralStore::new();
        s.register(&key(), inst("10.0.0.1", 0), 0);
        assert!(s.sweep(1_000).is_empty());
        let patch = InstancePatch {
            metadata: Some(
                [(
                    "preserved.heart.beat.timeout".to_string(),
                    "1500".to_string(),
                )]
                .into(),
            ),
            ..InstancePatch::default()
        };
        s.patch(&key(), &inst("10.0.0.1", 0).key(), &patch, 1_200)
            .unwrap();
        assert_eq!(check_at(&s), 0);
        let at = s
            .with_service(&key(), |svc| svc.instances[0].last_beat_ms)
            .unwrap();
        assert!(s.sweep(at + 1_500).is_empty());
        assert_eq!(s.sweep(at + 1_501).len(), 1);
    }

    #[test]
    fn instances_with_equal_metadata_share_one_map_whichever_way_they_arrive() {
        let s = EphemeralStore::new();
        let meta = [("zone", "a"), ("version", "1.0")];
        s.register(&key(), with_meta(inst("10.0.0.1", 0), &meta), 0);
        s.register(&key(), with_meta(inst("10.0.0.2", 0), &meta), 0);
        // From a peer, in a replicated record (deserialized: a fresh map).
        let mut record = ServiceRecord {
            key: key(),
            version: 1 << VERSION_SHIFT,
            instances: Some(vec![with_meta(inst("10.0.0.3", 0), &meta)]),
            stamps: vec![1 << VERSION_SHIFT],
            removed: Vec::new(),
            floor: 0,
            partial: false,
        };
        record = serde_json::from_str(&serde_json::to_string(&record).unwrap()).unwrap();
        s.apply_remote(record, 1);
        // A patch that ends with the same map as the others.
        s.register(&key(), with_meta(inst("10.0.0.4", 0), &[("zone", "b")]), 0);
        let patch = InstancePatch {
            metadata: Some(
                meta.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..InstancePatch::default()
        };
        let id = inst("10.0.0.4", 0).key();
        s.patch(&key(), &id, &patch, 2).unwrap();
        s.with_service(&key(), |svc| {
            assert_eq!(svc.instances.len(), 4);
            let first = &svc.instances[0].metadata;
            for i in &svc.instances {
                assert!(i.metadata.shares(first), "{} has its own copy", i.ip);
            }
        })
        .unwrap();
        assert_eq!(s.inner.read().metadata.len(), 2);
        // Changing one instance's metadata leaves the others' alone.
        let patch = InstancePatch {
            metadata: Some([("zone".to_string(), "c".to_string())].into()),
            ..InstancePatch::default()
        };
        s.patch(&key(), &id, &patch, 3).unwrap();
        s.with_service(&key(), |svc| {
            assert_eq!(svc.instances[0].metadata.get("zone").unwrap(), "a");
        })
        .unwrap();
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
    fn a_stopped_fleet_is_summarized_per_service() {
        let s = EphemeralStore::new();
        let other = ServiceKey::new("public", "DEFAULT_GROUP", "billing");
        for n in 0..500 {
            s.register(&key(), inst(&format!("10.0.{}.{}", n / 250, n % 250), 0), 0);
        }
        s.register(&other, inst("10.9.0.1", 0), 0);
        let expired = s.sweep(30_001);
        assert_eq!(expired.len(), 501);
        let mut summary = summarize(&expired);
        summary.sort_by(|a, b| a.key.cmp(&b.key));
        assert_eq!(summary.len(), 2, "one entry per service, not per instance");
        assert_eq!((summary[0].key.clone(), summary[0].removed), (other, 1));
        assert_eq!(summary[0].sample, vec![id("10.9.0.1")]);
        assert_eq!((summary[1].unhealthy, summary[1].removed), (0, 500));
        assert_eq!(summary[1].sample.len(), EXPIRY_SAMPLE);
        // Unhealthy and removed in one round are counted apart.
        let mixed = [
            Expiry {
                key: key(),
                instance: id("10.0.0.1"),
                kind: ExpiryKind::Unhealthy,
            },
            Expiry {
                key: key(),
                instance: id("10.0.0.2"),
                kind: ExpiryKind::Removed,
            },
        ];
        let m = summarize(&mixed);
        assert_eq!((m.len(), m[0].unhealthy, m[0].removed), (1, 1, 1));
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
            .make_mut()
            .insert("preserved.heart.beat.timeout".into(), "3000".into());
        i.metadata
            .make_mut()
            .insert("preserved.ip.delete.timeout".into(), "6000".into());
        i.metadata
            .make_mut()
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
    fn reregistration_keeps_health_and_bumps_version() {
        let s = EphemeralStore::new();
        s.register(&key(), inst("10.0.0.1", 0), 0);
        s.sweep(20_000);
        let rev = s.with_service(&key(), |s| s.version).unwrap();
        let mut again = inst("10.0.0.1", 20_000);
        again.weight = 2.0;
        s.register(&key(), again, 20_000);
        assert_eq!(healthy(&s, "10.0.0.1"), Some(false));
        assert!(s.with_service(&key(), |s| s.version).unwrap() > rev);
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
                .make_mut()
                .insert("preserved.instance.id.generator".into(), "snowflake".into());
            s.register(&key(), i, 0);
        }
        s.remove(&key(), &id("10.0.0.2"), 0);
        let mut i = inst("10.0.0.4", 0);
        i.metadata
            .make_mut()
            .insert("preserved.instance.id.generator".into(), "snowflake".into());
        s.register(&key(), i, 0);
        let ids: Vec<String> = s
            .with_service(&key(), |s| {
                s.instances
                    .iter()
                    .map(|i| i.instance_id.to_string())
                    .collect()
            })
            .unwrap();
        assert_eq!(ids, vec!["0", "2", "1"]);
    }

    fn record(s: &EphemeralStore) -> ServiceRecord {
        s.export(&[key()]).pop().unwrap()
    }

    fn ips(s: &EphemeralStore) -> Vec<String> {
        let mut ips: Vec<String> = s
            .with_service(&key(), |svc| {
                svc.instances.iter().map(|i| i.ip.to_string()).collect()
            })
            .unwrap_or_default();
        ips.sort();
        ips
    }

    #[test]
    fn concurrent_registrations_on_two_nodes_both_survive() {
        let a = EphemeralStore::new();
        let b = EphemeralStore::new();
        a.register(&key(), inst("10.0.0.1", 0), 1_000);
        b.apply_remote(record(&a), 1_000);
        // Each node accepts one new instance while the other is out of reach; b's is later.
        a.register(&key(), inst("10.0.0.2", 0), 2_000);
        b.register(&key(), inst("10.0.0.3", 0), 3_000);
        let (from_a, from_b) = (record(&a), record(&b));

        // Whole-record last-writer-wins would keep only b's copy; the merge keeps both.
        let at_a = a.apply_remote(from_b.clone(), 4_000);
        assert!(at_a.changed && at_a.diverged, "{at_a:?}: b lacks 10.0.0.2");
        let at_b = b.apply_remote(from_a.clone(), 4_000);
        assert!(at_b.changed && at_b.diverged, "{at_b:?}");
        let all = ["10.0.0.1", "10.0.0.2", "10.0.0.3"];
        assert_eq!(ips(&a), all);
        assert_eq!(ips(&b), all);
        // What each sends back settles the other without further changes.
        let settled = b.apply_remote(record(&a), 5_000);
        assert!(!settled.changed && !settled.diverged, "{settled:?}");
        let settled = a.apply_remote(record(&b), 5_000);
        assert!(!settled.changed && !settled.diverged, "{settled:?}");
        assert_eq!(a.digest(&key()).map(|d| d.1), b.digest(&key()).map(|d| d.1));
        // Old records delivered again, in any order, change nothing.
        assert!(!a.apply_remote(from_a, 6_000).changed);
        assert!(!b.apply_remote(from_b, 6_000).changed);
        assert_eq!(ips(&b), all);
    }

    #[test]
    fn a_removal_beats_an_older_copy_and_loses_to_a_newer_registration() {
        let a = EphemeralStore::new();
        let b = EphemeralStore::new();
        a.register(&key(), inst("10.0.0.1", 0), 1_000);
        a.register(&key(), inst("10.0.0.2", 0), 1_000);
        b.apply_remote(record(&a), 1_000);
        let before = record(&b);
        assert!(a.remove(&key(), &id("10.0.0.1"), 2_000));
        assert!(b.apply_remote(record(&a), 2_000).changed);
        assert_eq!(ips(&b), ["10.0.0.2"]);
        // A copy from before the removal does not bring it back.
        assert!(!a.apply_remote(before.clone(), 3_000).changed);
        assert!(!b.apply_remote(before, 3_000).changed);
        assert_eq!(ips(&a), ["10.0.0.2"]);
        // A registration after the removal does.
        b.register(&key(), inst("10.0.0.1", 0), 4_000);
        assert!(a.apply_remote(record(&b), 4_000).changed);
        assert_eq!(ips(&a), ["10.0.0.1", "10.0.0.2"]);
    }

    #[test]
    fn versions_grow_and_order_across_nodes() {
        let a = EphemeralStore::new();
        a.register(&key(), inst("10.0.0.1", 0), 1_000);
        let v1 = record(&a).version;
        assert_eq!(version_ms(v1), 1_000);
        a.register(&key(), inst("10.0.0.2", 0), 1_000);
        assert!(record(&a).version > v1, "same millisecond still advances");

        // A peer whose clock is behind still writes above what it has seen.
        let b = EphemeralStore::new();
        assert!(b.apply_remote(record(&a), 5).changed);
        b.register(&key(), inst("10.0.0.3", 0), 5);
        assert!(record(&b).version > record(&a).version);
        // Idempotent and order-insensitive: an older record changes nothing here.
        assert!(!b.apply_remote(record(&a), 6).changed);
        assert!(a.apply_remote(record(&b), 7).changed);
        assert_eq!(a.digest(&key()), b.digest(&key()));
    }

    #[test]
    fn checksum_ignores_beat_times_and_order() {
        let a = EphemeralStore::new();
        a.register(&key(), inst("10.0.0.1", 0), 0);
        a.register(&key(), inst("10.0.0.2", 0), 0);
        let b = EphemeralStore::new();
        b.register(&key(), inst("10.0.0.2", 99), 50);
        b.register(&key(), inst("10.0.0.1", 77), 50);
        let sum = |s: &EphemeralStore| s.digest(&key()).unwrap().1;
        assert_eq!(sum(&a), sum(&b));
        b.patch(
            &key(),
            &id("10.0.0.1"),
            &InstancePatch {
                weight: Some(3.0),
                ..Default::default()
            },
            60,
        )
        .unwrap();
        assert_ne!(sum(&a), sum(&b));
    }

    #[test]
    fn the_kept_checksum_follows_every_kind_of_change() {
        let s = EphemeralStore::new();
        let peer = EphemeralStore::new();
        let check = |s: &EphemeralStore, what: &str| {
            s.with_service(&key(), |svc| {
                assert_eq!(svc.checksum(), svc.compute_checksum(), "after {what}");
            });
        };
        s.register(&key(), inst("10.0.0.1", 0), 0);
        check(&s, "a registration");
        s.register(&key(), inst("10.0.0.2", 0), 1);
        check(&s, "a second registration");
        let mut heavier = inst("10.0.0.2", 2);
        heavier.weight = 5.0;
        s.register(&key(), heavier, 2);
        check(&s, "a re-registration that changes a field");
        s.patch(
            &key(),
            &id("10.0.0.1"),
            &InstancePatch {
                weight: Some(3.0),
                ..Default::default()
            },
            3,
        )
        .unwrap();
        check(&s, "a patch");
        s.set_health(&key(), &id("10.0.0.1"), false, 4).unwrap();
        check(&s, "a health change by hand");
        s.set_health(&key(), &id("10.0.0.1"), true, 5).unwrap();
        // Silence past the beat timeout marks it unhealthy, a beat revives it.
        s.sweep(20_000);
        check(&s, "a sweep marking instances unhealthy");
        s.beat(&key(), &id("10.0.0.1"), 20_001);
        check(&s, "a beat that revives");
        // A peer's newer change of one instance arrives at an older service version.
        peer.apply_remote(s.export(&[key()]).remove(0), 20_002);
        peer.patch(
            &key(),
            &id("10.0.0.2"),
            &InstancePatch {
                weight: Some(9.0),
                ..Default::default()
            },
            20_003,
        )
        .unwrap();
        s.apply_remote(peer.export(&[key()]).remove(0), 20_004);
        check(&s, "a merged record");
        assert_eq!(
            s.digest(&key()).unwrap().1,
            peer.digest(&key()).unwrap().1,
            "replicas that agree have equal checksums"
        );
        s.remove(&key(), &id("10.0.0.2"), 20_005);
        check(&s, "a deregistration");
        s.sweep(200_000);
        check(&s, "a sweep removing instances");
    }

    #[test]
    fn deletion_replicates_and_stale_records_do_not_resurrect() {
        let a = EphemeralStore::new();
        a.register(&key(), inst("10.0.0.1", 0), 10);
        let b = EphemeralStore::new();
        let old = record(&a);
        b.apply_remote(old.clone(), 10);
        assert!(a.remove_service(&key(), 20));
        let del = a.deletion_record(&key()).unwrap();
        assert!(del.version > old.version && del.instances.is_none());
        assert_eq!(
            a.deletion_record(&key()).map(|r| r.version),
            Some(del.version),
            "the deletion keeps one version"
        );
        assert!(b.apply_remote(del.clone(), 20).changed);
        assert!(!b.contains(&key()));
        // Both keep a tombstone: the old copy, still held somewhere, revives nothing.
        assert!(!a.apply_remote(old.clone(), 30).changed);
        assert!(!b.apply_remote(old, 30).changed);
        assert_eq!(b.tombstone(&key()), Some(del.version));
        // A registration after the deletion is newer and brings the service back.
        a.register(&key(), inst("10.0.0.2", 40), 40);
        assert!(b.apply_remote(record(&a), 40).changed);
        assert_eq!(b.tombstone(&key()), None);
    }

    /// Found by `tests/prop_peer_input.rs`: once a deleted service was re-created its
    /// tombstone was dropped, and a stale copy from before the deletion brought the deleted
    /// instances back (and merging was no longer idempotent).
    #[test]
    fn d1_a_stale_copy_never_revives_instances_deleted_with_the_service() {
        let s = EphemeralStore::new();
        s.register(&key(), inst("10.0.0.1", 0), 0);
        let stale = record(&s);
        assert!(s.remove_service(&key(), 1));
        // Re-created by a new registration: the tombstone goes, its guard stays.
        s.register(&key(), inst("10.0.0.2", 0), 2);
        assert_eq!(s.tombstone(&key()), None);
        s.apply_remote(stale.clone(), 3);
        assert_eq!(ips(&s), vec!["10.0.0.2"]);
        // A peer that only ever sees the re-created service learns the floor from its record,
        // whichever order the two copies arrive in.
        let peer = EphemeralStore::new();
        peer.apply_remote(stale, 3);
        peer.apply_remote(record(&s), 4);
        assert_eq!(ips(&peer), vec!["10.0.0.2"]);
    }

    fn delta_of(s: &EphemeralStore, ips: &[&str]) -> ServiceRecord {
        let ids: HashSet<InstanceKey> = ips.iter().map(|ip| inst(ip, 0).key()).collect();
        s.export_changes([(&key(), Some(&ids))]).pop().unwrap()
    }

    #[test]
    fn v2_a_delta_carries_only_the_named_instances_and_says_nothing_of_the_rest() {
        let (a, b) = (EphemeralStore::new(), EphemeralStore::new());
        a.register(&key(), inst("10.0.0.1", 0), 0);
        a.register(&key(), inst("10.0.0.2", 0), 0);
        b.apply_remote(record(&a), 1);
        a.register(&key(), inst("10.0.0.3", 10), 10);
        let delta = delta_of(&a, &["10.0.0.3"]);
        assert!(delta.partial);
        assert_eq!(delta.instances.as_ref().map(Vec::len), Some(1));
        // b holds instances the delta leaves out: that is no sign the sender lacks them.
        let m = b.apply_remote(delta, 11);
        assert_eq!((m.changed, m.diverged, m.incomplete), (true, false, false));
        assert_eq!(ips(&b), ["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
        assert_eq!(a.fingerprint(), b.fingerprint());
        // A removal travels as a delta too: the instance's tombstone, nothing else.
        assert!(a.remove(&key(), &inst("10.0.0.3", 0).key(), 20));
        let delta = delta_of(&a, &["10.0.0.3"]);
        assert_eq!(delta.instances.as_ref().map(Vec::len), Some(0));
        assert_eq!(delta.removed.len(), 1);
        assert!(b.apply_remote(delta, 21).changed);
        assert_eq!(ips(&b), ["10.0.0.1", "10.0.0.2"]);
        assert_eq!(a.fingerprint(), b.fingerprint());
        // On the wire a whole record stays as it was (old peers read both).
        let whole = serde_json::to_string(&record(&a)).unwrap();
        assert!(!whole.contains("partial"), "{whole}");
    }

    #[test]
    fn v2_a_delta_that_creates_the_service_asks_for_the_whole_record() {
        let (a, c) = (EphemeralStore::new(), EphemeralStore::new());
        a.register(&key(), inst("10.0.0.1", 0), 0);
        a.register(&key(), inst("10.0.0.2", 0), 0);
        let m = c.apply_remote(delta_of(&a, &["10.0.0.2"]), 1);
        assert!(m.changed && m.incomplete, "{m:?}");
        assert_eq!(ips(&c), ["10.0.0.2"]);
        // A delta to a service it holds, and the whole record, ask for nothing more.
        assert!(!c.apply_remote(delta_of(&a, &["10.0.0.2"]), 2).incomplete);
        let m = c.apply_remote(record(&a), 3);
        assert!(m.changed && !m.incomplete);
        assert_eq!(a.fingerprint(), c.fingerprint());
    }

    #[test]
    fn v2_a_receiver_newer_on_a_named_instance_sends_its_copy_back() {
        let (a, b) = (EphemeralStore::new(), EphemeralStore::new());
        a.register(&key(), inst("10.0.0.1", 0), 0);
        b.apply_remote(record(&a), 1);
        a.register(&key(), inst("10.0.0.1", 10), 10);
        // b changed the same instance later than a did.
        b.register(&key(), inst("10.0.0.1", 20), 20);
        let m = b.apply_remote(delta_of(&a, &["10.0.0.1"]), 21);
        assert!(m.diverged, "{m:?}");
        // b removed an instance the delta brings with an older stamp: b's removal stands
        // and a must hear of it.
        a.register(&key(), inst("10.0.0.2", 30), 30);
        b.apply_remote(delta_of(&a, &["10.0.0.2"]), 31);
        assert!(b.remove(&key(), &inst("10.0.0.2", 0).key(), 40));
        let m = b.apply_remote(delta_of(&a, &["10.0.0.2"]), 41);
        assert!(m.diverged && !m.changed, "{m:?}");
    }

    #[test]
    fn d1_only_the_owner_drops_an_empty_service_and_peers_follow_its_deletion() {
        let owner = EphemeralStore::new();
        let peer = EphemeralStore::new();
        owner.register(&key(), inst("10.0.0.1", 0), 0);
        assert!(owner.remove(&key(), &id("10.0.0.1"), 1_000));
        let emptied = record(&owner);
        peer.apply_remote(emptied.clone(), 1_000);
        let late = 1_000 + EMPTY_SERVICE_TTL_MS + 5_000;
        // A non-owner waits for the owner's word, however long the service stays empty.
        let swept = peer.sweep_owned(late, late, |_| false);
        assert!(swept.dropped.is_empty() && peer.contains(&key()));
        // The owner drops it once, and its deletion record removes the peer's copy.
        let swept = owner.sweep_owned(late, late, |_| true);
        assert_eq!(swept.dropped, vec![key()]);
        assert!(owner
            .sweep_owned(late + 1, late + 1, |_| true)
            .dropped
            .is_empty());
        let del = owner.deletion_record(&key()).unwrap();
        assert!(peer.apply_remote(del, late).changed);
        assert!(!peer.contains(&key()));
        // The empty copy a slow peer still sends back is refused, not re-created.
        assert!(!owner.apply_remote(emptied, late + 2).changed);
        // Tombstones are forgotten after their horizon.
        owner.sweep_owned(late + TOMBSTONE_TTL_MS, late + TOMBSTONE_TTL_MS, |_| true);
        assert_eq!(owner.tombstone(&key()), None);
    }

    #[test]
    fn a_version_near_the_end_of_the_clock_does_not_overflow_it() {
        let s = EphemeralStore::new();
        let forged = ServiceRecord {
            key: key(),
            version: u64::MAX,
            instances: Some(vec![inst("10.0.0.1", 0)]),
            stamps: Vec::new(),
            removed: Vec::new(),
            floor: 0,
            partial: false,
        };
        assert!(s.apply_remote(forged, 0).changed);
        s.register(&key(), inst("10.0.0.2", 0), 1);
        assert!(s.remove_service(&key(), 2));
        assert_eq!(s.deletion_record(&key()).map(|r| r.version), Some(u64::MAX));
    }

    #[test]
    fn only_owned_services_expire_and_grace_defers_expiry() {
        let s = EphemeralStore::new();
        s.register(&key(), inst("10.0.0.1", 0), 0);
        assert!(s.sweep_owned(40_000, 40_000, |_| false).expired.is_empty());
        assert_eq!(healthy(&s, "10.0.0.1"), Some(true));
        assert_eq!(s.grant_grace(40_000, |_| true), 1);
        assert!(s.sweep_owned(54_000, 54_000, |_| true).expired.is_empty());
        assert_eq!(
            s.sweep_owned(55_001, 55_001, |_| true).expired[0].kind,
            ExpiryKind::Unhealthy
        );
    }

    #[test]
    fn remote_records_stamp_local_beat_time() {
        let a = EphemeralStore::new();
        a.register(&key(), inst("10.0.0.1", 0), 0);
        let b = EphemeralStore::new();
        b.apply_remote(record(&a), 100_000);
        let beat = b
            .with_service(&key(), |s| s.instances[0].last_beat_ms)
            .unwrap();
        assert_eq!(beat, 100_000);
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
