//! The consistent-hash ring that decides which member owns a service.
//!
//! The gateway and every registry node build a [`Ring`] from the same [`Members`] and must
//! reach the same owner for every key, on every platform and binary version, for as long as the
//! cluster lives. So the hashing is pinned end to end: xxh3-64 with seed 0 over exactly the key's
//! [`ServiceKey::ring_bytes`], over exactly a member's address bytes, and over little-endian
//! integers for the virtual-node chain. The ring itself is `consistent_hash_ring`'s.

use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

use xxhash_rust::xxh3::Xxh3Default;

use crate::{Members, ServiceKey, GROUP_SEPARATOR, NAMESPACE_SEPARATOR};

/// Virtual nodes per member.
///
/// A member's share of the keys strays from the mean by about `1/sqrt(VNODES)` (vnode
/// positions behave like uniform random points), and the cluster wants every member of a small
/// cluster within ±10 % of the mean. Measured over thousands of random 3-member sets: 160 vnodes
/// stray up to ~19 %, 512 up to ~16 %, 1024 touch 10 %, 2048 stay under ~8.5 %. The cost is paid
/// once per membership change (building the ring is quadratic in total vnodes: ~3 ms for 3
/// members, ~50 ms for 10 in release); lookups stay a binary search. Changing it reassigns
/// keys, so every tier must change it together.
pub const VNODES: usize = 2048;

/// Ring over `consistent_hash_ring`, with the hasher pinned (see the module docs).
#[derive(Clone)]
pub struct Ring {
    members: Members,
    inner: consistent_hash_ring::Ring<Node, StableState>,
    /// The crate's hash ranges in clockwise order as `(last hash of the range, owner)`; kept
    /// because the crate's own replica order re-hashes the key instead of walking the ring, and
    /// only the walk guarantees that the first live entry is the owner the ring will pick once
    /// the dead members are removed.
    arcs: Arc<[(u64, Node)]>,
    /// For each [`BUCKET_BITS`]-bit prefix of the hash space, the first arc that reaches into
    /// it: a lookup starts there and steps past at most the few arcs that end inside the
    /// bucket, where a binary search over every arc (4,077 for 3 members) took ~4 % of a
    /// node's CPU under relayed beats.
    starts: Arc<[u32]>,
}

/// Buckets of [`Ring::starts`]: 4,096, so 16 KiB per ring, and about one arc per
/// bucket for 3 members.
const BUCKET_BITS: u32 = 12;

impl Ring {
    /// Builds the ring for `members`; an empty set gives an empty ring that owns nothing.
    pub fn new(members: &Members) -> Self {
        // Members iterate sorted, so even a vnode hash collision resolves identically
        // everywhere.
        let inner = consistent_hash_ring::RingBuilder::new(StableState)
            .vnodes(VNODES)
            .nodes_iter(members.iter().map(|a| Node(Arc::from(a.as_str()))))
            .build();
        let arcs: Arc<[(u64, Node)]> = inner
            .resident_ranges()
            .map(|r| (*r.keys().end(), r.node().clone()))
            .collect();
        let starts = (0..1u64 << BUCKET_BITS)
            .map(|b| {
                let first = b << (64 - BUCKET_BITS);
                // Arcs are fewer than 2^32 (members × VNODES × 2).
                arcs.partition_point(|(end, _)| *end < first) as u32
            })
            .collect();
        Self {
            members: members.clone(),
            inner,
            arcs,
            starts,
        }
    }

    /// The index of the arc holding `hash`: the first whose end is at or past it (the last arc
    /// ends at u64::MAX). `None` for an empty ring.
    fn arc_of(&self, hash: u64) -> Option<usize> {
        let mut i = *self.starts.get((hash >> (64 - BUCKET_BITS)) as usize)? as usize;
        while self.arcs.get(i)?.0 < hash {
            i += 1;
        }
        Some(i)
    }

    /// The member that owns `key`, or `None` for an empty ring. Does not allocate.
    pub fn owner(&self, key: &ServiceKey) -> Option<&str> {
        self.owner_at(key_hash(key))
    }

    /// The member that owns the raw ring bytes (`namespace##group@@service`); agrees with
    /// [`Ring::owner`] for `key.ring_bytes()`.
    pub fn owner_of(&self, bytes: &[u8]) -> Option<&str> {
        // One call: the same hash as streaming them (`hashing_is_plain_xxh3_of_the_bytes`).
        self.owner_at(xxhash_rust::xxh3::xxh3_64(bytes))
    }

    /// The owner of a key hashing to `hash`: the member of the arc holding it, as the crate's
    /// own lookup finds it (`lookups_agree_with_the_crate` checks).
    fn owner_at(&self, hash: u64) -> Option<&str> {
        self.arcs
            .get(self.arc_of(hash)?)
            .map(|(_, node)| node.as_str())
    }

    /// Every member exactly once, owner first, in the order met walking the ring clockwise
    /// from the key. A caller that cannot reach the owner tries the next entry: it is the member
    /// that would own the key if the ones before it were removed, so the fallback lands where
    /// the data will live once the cluster agrees the owner is down.
    pub fn replicas(&self, key: &ServiceKey) -> Vec<&str> {
        self.walk(key_hash(key))
    }

    /// [`Ring::replicas`] for raw ring bytes.
    pub fn replicas_of(&self, bytes: &[u8]) -> Vec<&str> {
        self.walk(xxhash_rust::xxh3::xxh3_64(bytes))
    }

    /// The members the ring was built from.
    pub fn members(&self) -> &Members {
        &self.members
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the ring has no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    fn walk(&self, hash: u64) -> Vec<&str> {
        let want = self.inner.len();
        let mut out: Vec<&str> = Vec::with_capacity(want);
        // `% len` wraps past the top of the hash space.
        let Some(start) = self.arc_of(hash) else {
            return out;
        };
        for i in 0..self.arcs.len() {
            if out.len() == want {
                break;
            }
            let node = self.arcs[(start + i) % self.arcs.len()].1.as_str();
            // Clusters are small, so a linear scan beats a set here.
            if !out.contains(&node) {
                out.push(node);
            }
        }
        out
    }
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("members", &self.members)
            .field("vnodes", &self.inner.vnodes())
            .finish()
    }
}

/// A ring member. `Hash` feeds exactly the address bytes: the derived `str` hash would append
/// a terminator byte whose presence is a std implementation detail.
#[derive(Clone, PartialEq, Eq)]
struct Node(Arc<str>);

impl Node {
    fn as_str(&self) -> &str {
        &self.0
    }
}

impl Hash for Node {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.0.as_bytes());
    }
}

/// A service key hashed as its ring bytes. Streaming the parts gives the same xxh3 as hashing
/// the joined `namespace##group@@service`, without allocating it on every lookup.
struct KeyBytes<'a>(&'a ServiceKey);

impl Hash for KeyBytes<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.0.namespace.as_bytes());
        state.write(NAMESPACE_SEPARATOR.as_bytes());
        state.write(self.0.group.as_bytes());
        state.write(GROUP_SEPARATOR.as_bytes());
        state.write(self.0.service.as_bytes());
    }
}

/// The ring hash of `key`: xxh3-64 of its ring bytes, as [`KeyBytes`] streams them, but
/// hashed in one call from a stack copy when they are short (as keys are), which takes half
/// the time of the streaming hasher.
fn key_hash(key: &ServiceKey) -> u64 {
    let parts = [
        key.namespace.as_bytes(),
        NAMESPACE_SEPARATOR.as_bytes(),
        key.group.as_bytes(),
        GROUP_SEPARATOR.as_bytes(),
        key.service.as_bytes(),
    ];
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut buf = [0u8; 256];
    if len > buf.len() {
        return StableState.hash_one(KeyBytes(key));
    }
    let mut at = 0;
    for part in parts {
        buf[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    xxhash_rust::xxh3::xxh3_64(&buf[..len])
}

/// Builds [`StableHasher`]s; what the ring is parameterised with.
#[derive(Clone, Copy, Debug, Default)]
struct StableState;

impl BuildHasher for StableState {
    type Hasher = StableHasher;

    fn build_hasher(&self) -> StableHasher {
        StableHasher(Xxh3Default::new())
    }
}

/// xxh3-64, seed 0, over every byte written. The integer writes are pinned to little-endian
/// because std's defaults use native order and the crate chains vnode positions by hashing
/// `u64`s: a big-endian node would otherwise place its vnodes elsewhere.
struct StableHasher(Xxh3Default);

impl Hasher for StableHasher {
    fn finish(&self) -> u64 {
        self.0.digest()
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn write_u8(&mut self, i: u8) {
        self.write(&[i]);
    }

    fn write_u16(&mut self, i: u16) {
        self.write(&i.to_le_bytes());
    }

    fn write_u32(&mut self, i: u32) {
        self.write(&i.to_le_bytes());
    }

    fn write_u64(&mut self, i: u64) {
        self.write(&i.to_le_bytes());
    }

    fn write_u128(&mut self, i: u128) {
        self.write(&i.to_le_bytes());
    }

    fn write_usize(&mut self, i: usize) {
        // Widened so 32- and 64-bit builds agree.
        self.write_u64(i as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xxhash_rust::xxh3::xxh3_64;

    fn local3() -> Members {
        Members::new(["127.0.0.1:8848", "127.0.0.1:8849", "127.0.0.1:8850"])
    }

    #[test]
    fn hashing_is_plain_xxh3_of_the_bytes() {
        let key = ServiceKey::new("public", "DEFAULT_GROUP", "orders");
        let bytes = key.ring_bytes();
        assert_eq!(StableState.hash_one(KeyBytes(&key)), xxh3_64(&bytes));
        assert_eq!(key_hash(&key), xxh3_64(&bytes));
        let long = ServiceKey::new("public", "DEFAULT_GROUP", "s".repeat(300));
        assert_eq!(key_hash(&long), xxh3_64(&long.ring_bytes()));
        let node = Node(Arc::from("127.0.0.1:8848"));
        assert_eq!(StableState.hash_one(&node), xxh3_64(b"127.0.0.1:8848"));
        assert_eq!(
            StableState.hash_one(0x0102_0304_0506_0708_u64),
            xxh3_64(&[8, 7, 6, 5, 4, 3, 2, 1])
        );
    }

    #[test]
    fn lookups_agree_with_the_crate() {
        for n in [1, 2, 3, 5, 9] {
            let members = Members::new((0..n).map(|i| format!("10.0.0.{i}:8848")));
            let ring = Ring::new(&members);
            // Around every arc's end and at both ends of the hash space, the bucket index finds
            // the arc a binary search over all of them finds.
            let searched = |h: u64| {
                let i = ring.arcs.partition_point(|(end, _)| *end < h);
                Some(ring.arcs[i].1.as_str())
            };
            let ends = ring
                .arcs
                .iter()
                .flat_map(|(end, _)| [end.wrapping_sub(1), *end, end.wrapping_add(1)]);
            for h in ends.chain([0, u64::MAX]) {
                assert_eq!(ring.owner_at(h), searched(h), "{n} members, hash {h}");
            }
            // And keys land where the crate's own lookup puts them.
            for i in 0..20_000 {
                let key = ServiceKey::new("public", "DEFAULT_GROUP", format!("svc-{i}"));
                assert_eq!(
                    ring.owner(&key),
                    ring.inner.try_get(KeyBytes(&key)).map(Node::as_str)
                );
            }
        }
    }

    #[test]
    fn empty_ring_owns_nothing() {
        let ring = Ring::new(&Members::default());
        let key = ServiceKey::new("public", "DEFAULT_GROUP", "orders");
        assert!(ring.is_empty());
        assert_eq!(ring.len(), 0);
        assert_eq!(ring.owner(&key), None);
        assert_eq!(ring.owner_of(b"x"), None);
        assert!(ring.replicas(&key).is_empty());
    }

    #[test]
    fn single_member_owns_everything() {
        let ring = Ring::new(&Members::new(["10.0.0.1:8848"]));
        for i in 0..100 {
            let key = ServiceKey::new("public", "DEFAULT_GROUP", format!("svc-{i}"));
            assert_eq!(ring.owner(&key), Some("10.0.0.1:8848"));
            assert_eq!(ring.replicas(&key), ["10.0.0.1:8848"]);
        }
    }

    #[test]
    fn owners_are_pinned() {
        // Literals on purpose: if an upgrade of either dependency (or a change of VNODES)
        // moves these, a new binary would disagree with every deployed gateway and node.
        let ring = Ring::new(&local3());
        assert_eq!(ring.len(), 3);
        for (service, replicas) in PINNED_LOCAL {
            let key = ServiceKey::new("public", "DEFAULT_GROUP", *service);
            assert_eq!(ring.owner(&key), Some(replicas[0]), "{service}");
            assert_eq!(ring.replicas(&key), replicas, "{service}");
        }
        let ring = Ring::new(&Members::new([
            "10.0.0.1:8848",
            "10.0.0.2:8848",
            "10.0.0.3:8848",
            "10.0.0.4:8848",
        ]));
        for ((namespace, group, service), owner) in PINNED_LAN {
            let key = ServiceKey::new(*namespace, *group, *service);
            assert_eq!(ring.owner(&key), Some(*owner), "{key}");
        }
    }

    const PINNED_LOCAL: &[(&str, [&str; 3])] = &[
        (
            "orders",
            ["127.0.0.1:8849", "127.0.0.1:8850", "127.0.0.1:8848"],
        ),
        (
            "payments",
            ["127.0.0.1:8848", "127.0.0.1:8849", "127.0.0.1:8850"],
        ),
        (
            "svc-0",
            ["127.0.0.1:8849", "127.0.0.1:8848", "127.0.0.1:8850"],
        ),
        (
            "svc-5",
            ["127.0.0.1:8850", "127.0.0.1:8849", "127.0.0.1:8848"],
        ),
        (
            "svc-7",
            ["127.0.0.1:8848", "127.0.0.1:8850", "127.0.0.1:8849"],
        ),
    ];

    const PINNED_LAN: &[((&str, &str, &str), &str)] = &[
        (("dev", "G1", "orders"), "10.0.0.3:8848"),
        (("public", "DEFAULT_GROUP", "orders"), "10.0.0.2:8848"),
        (("7f3a", "pay", "gateway"), "10.0.0.3:8848"),
        (("public", "DEFAULT_GROUP", "svc-42"), "10.0.0.4:8848"),
    ];

    #[test]
    fn owner_and_owner_of_agree() {
        let ring = Ring::new(&Members::new(["10.0.0.1:8848", "10.0.0.2:8848"]));
        for i in 0..500 {
            let key = ServiceKey::new(format!("ns{}", i % 7), "G", format!("svc-{i}"));
            assert_eq!(ring.owner(&key), ring.owner_of(&key.ring_bytes()));
            assert_eq!(ring.replicas(&key), ring.replicas_of(&key.ring_bytes()));
        }
    }

    #[test]
    fn replicas_hold_every_member_once_owner_first() {
        let members = Members::new([
            "10.0.0.1:8848",
            "10.0.0.2:8848",
            "10.0.0.3:8848",
            "10.0.0.4:8848",
            "10.0.0.5:8848",
        ]);
        let ring = Ring::new(&members);
        for i in 0..500 {
            let key = ServiceKey::new("public", "DEFAULT_GROUP", format!("svc-{i}"));
            let replicas = ring.replicas(&key);
            assert_eq!(Some(replicas[0]), ring.owner(&key));
            let mut sorted = replicas.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, members.to_vec());
        }
    }

    #[test]
    fn next_replica_is_the_owner_once_the_owner_leaves() {
        let members = Members::new(["10.0.0.1:8848", "10.0.0.2:8848", "10.0.0.3:8848"]);
        let ring = Ring::new(&members);
        let without: Vec<(String, Ring)> = members
            .iter()
            .map(|gone| {
                let rest = Members::new(members.iter().filter(|m| *m != gone));
                (gone.clone(), Ring::new(&rest))
            })
            .collect();
        for i in 0..300 {
            let key = ServiceKey::new("public", "DEFAULT_GROUP", format!("svc-{i}"));
            let replicas = ring.replicas(&key);
            let (_, smaller) = without
                .iter()
                .find(|(gone, _)| gone == replicas[0])
                .unwrap();
            assert_eq!(smaller.owner(&key), Some(replicas[1]));
        }
    }
}
