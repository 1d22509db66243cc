//! Instance metadata shared between instances that carry the same map.
//!
//! A fleet's instances mostly carry the same metadata keys and values (one client library,
//! one deployment's settings), and a map of a few short strings costs several hundred bytes of
//! nodes and string buffers. So an instance holds its metadata behind a [`SharedMetadata`]
//! pointer, and the ephemeral store passes every map it takes in through a [`MetadataPool`],
//! which hands back the copy already held when an equal map exists: a thousand instances
//! with the same metadata cost one map plus a pointer each. Empty metadata costs nothing.
//!
//! The pool holds one reference per distinct map; maps no instance holds any more are pruned
//! once the pool has doubled since its last prune, so the work is amortized O(1) per map
//! interned and the pool never holds more than about twice the live distinct maps.

use std::collections::HashSet;
use std::ops::Deref;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::model::Metadata;

/// An instance's metadata: a map shared with every instance interned to the same content.
/// Reads see a plain [`Metadata`]; a change goes through [`SharedMetadata::make_mut`].
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct SharedMetadata(Option<Arc<Metadata>>);

/// What an absent map reads as.
static EMPTY: Metadata = Metadata::new();

impl SharedMetadata {
    /// The map, to change: copied first if other instances share it.
    pub fn make_mut(&mut self) -> &mut Metadata {
        Arc::make_mut(self.0.get_or_insert_with(Default::default))
    }

    /// Whether `self` and `other` are the same shared map (not merely equal ones).
    #[cfg(test)]
    pub fn shares(&self, other: &SharedMetadata) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }
}

impl Deref for SharedMetadata {
    type Target = Metadata;
    fn deref(&self) -> &Metadata {
        self.0.as_deref().unwrap_or(&EMPTY)
    }
}

impl From<Metadata> for SharedMetadata {
    fn from(m: Metadata) -> Self {
        Self((!m.is_empty()).then(|| Arc::new(m)))
    }
}

impl<'a> IntoIterator for &'a SharedMetadata {
    type Item = (&'a String, &'a String);
    type IntoIter = std::collections::btree_map::Iter<'a, String, String>;
    fn into_iter(self) -> Self::IntoIter {
        self.deref().iter()
    }
}

impl std::fmt::Debug for SharedMetadata {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.deref().fmt(f)
    }
}

impl Serialize for SharedMetadata {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.deref().serialize(s)
    }
}

impl<'de> Deserialize<'de> for SharedMetadata {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Metadata::deserialize(d).map(Self::from)
    }
}

/// Below this many distinct maps the pool is never pruned.
const PRUNE_FLOOR: usize = 1024;

/// The distinct metadata maps in use, for [`SharedMetadata`] to point at.
#[derive(Debug, Default)]
pub struct MetadataPool {
    maps: HashSet<Arc<Metadata>>,
    /// Size after the last prune.
    kept: usize,
}

impl MetadataPool {
    /// Points `m` at the pool's copy of its content, adding it when new.
    pub fn intern(&mut self, m: &mut SharedMetadata) {
        let Some(map) = &m.0 else {
            return;
        };
        if let Some(held) = self.maps.get(map) {
            if !Arc::ptr_eq(held, map) {
                m.0 = Some(held.clone());
            }
            return;
        }
        if self.maps.len() >= (2 * self.kept).max(PRUNE_FLOOR) {
            // Only the pool holds these: no instance carries them any more.
            self.maps.retain(|held| Arc::strong_count(held) > 1);
            self.kept = self.maps.len();
        }
        self.maps.insert(map.clone());
    }

    /// Distinct maps held (some may await pruning).
    pub fn len(&self) -> usize {
        self.maps.len()
    }

    /// Whether the pool holds no map.
    pub fn is_empty(&self) -> bool {
        self.maps.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(pairs: &[(&str, &str)]) -> SharedMetadata {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Metadata>()
            .into()
    }

    #[test]
    fn equal_maps_are_shared_and_different_ones_are_not() {
        let mut pool = MetadataPool::default();
        let mut a = meta(&[("zone", "a"), ("v", "1")]);
        let mut b = meta(&[("v", "1"), ("zone", "a")]);
        let mut c = meta(&[("zone", "b")]);
        pool.intern(&mut a);
        pool.intern(&mut b);
        pool.intern(&mut c);
        assert!(a.shares(&b));
        assert!(!a.shares(&c));
        assert_eq!(pool.len(), 2);
        assert_eq!(b.get("zone").map(String::as_str), Some("a"));
    }

    #[test]
    fn a_change_to_one_instance_leaves_the_others_alone() {
        let mut pool = MetadataPool::default();
        let mut a = meta(&[("k", "v")]);
        let mut b = meta(&[("k", "v")]);
        pool.intern(&mut a);
        pool.intern(&mut b);
        b.make_mut().insert("k".into(), "changed".into());
        assert_eq!(a.get("k").map(String::as_str), Some("v"));
        assert_eq!(b.get("k").map(String::as_str), Some("changed"));
        assert!(!a.shares(&b));
    }

    #[test]
    fn empty_metadata_holds_nothing_and_reads_as_an_empty_map() {
        let mut pool = MetadataPool::default();
        let mut e = SharedMetadata::from(Metadata::new());
        pool.intern(&mut e);
        assert!(pool.is_empty());
        assert!(e.is_empty());
        assert_eq!(e, SharedMetadata::default());
        assert_eq!(serde_json::to_string(&e).unwrap(), "{}");
    }

    #[test]
    fn maps_nobody_holds_are_pruned_and_the_pool_stays_bounded() {
        let mut pool = MetadataPool::default();
        let mut live = Vec::new();
        for i in 0..10 * PRUNE_FLOOR {
            let mut m = meta(&[("i", &i.to_string())]);
            pool.intern(&mut m);
            // Keep one in ten; the others are dropped as an instance going away would be.
            if i % 10 == 0 {
                live.push(m);
            }
        }
        assert!(
            pool.len() <= 2 * live.len().max(PRUNE_FLOOR),
            "{}",
            pool.len()
        );
        // Every kept map is still the pool's copy.
        for m in &mut live {
            let before = m.clone();
            pool.intern(m);
            assert!(m.shares(&before));
        }
    }

    #[test]
    fn serde_reads_and_writes_a_plain_map() {
        let m = meta(&[("a", "1")]);
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(text, r#"{"a":"1"}"#);
        let back: SharedMetadata = serde_json::from_str(&text).unwrap();
        assert_eq!(back, m);
    }
}
