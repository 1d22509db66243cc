//! Cluster membership as the nodes and the gateway see it.
//!
//! The ring is built from a [`Members`] set, so two processes that hold the same set must build
//! the same ring whatever order they learned the addresses in; that is why the set is kept
//! normalised and why its [`Members::digest`] is a pinned hash rather than a `Hash` impl.

use std::collections::{btree_set, BTreeSet};
use std::fmt;
use std::hash::Hasher;

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3Default;

/// How healthy a member looks to the node reporting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum MemberState {
    /// Answering probes.
    Up,
    /// Missed a probe but not yet declared dead.
    Suspicious,
    /// Declared dead; its keys belong to the other members.
    Down,
}

impl MemberState {
    /// Whether the member still owns its keys. A suspicious member keeps them until it is
    /// declared down, so one lost probe does not move services around the cluster.
    pub fn is_live(self) -> bool {
        matches!(self, Self::Up | Self::Suspicious)
    }

    /// The wire spelling, shared by serde and `Display` so logs match the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "UP",
            Self::Suspicious => "SUSPICIOUS",
            Self::Down => "DOWN",
        }
    }
}

impl fmt::Display for MemberState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One cluster member and how it looks to the reporting node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Member {
    /// `host:port` the member serves on.
    pub address: String,
    /// Last known state.
    pub state: MemberState,
}

/// A normalised set of member addresses (`host:port`): trimmed, without blanks, sorted and
/// deduplicated. Serialised as a plain list; deserialising normalises again, so a peer's
/// unsorted list still yields the same set (and the same ring).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "Vec<String>", into = "Vec<String>")]
pub struct Members(BTreeSet<String>);

impl Members {
    /// Builds the set; surrounding whitespace is dropped so a hand-edited config line such as
    /// `"a:1, b:2"` names the same member as `"a:1,b:2"`.
    pub fn new<I, S>(addresses: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self(
            addresses
                .into_iter()
                .map(|a| a.as_ref().trim().to_owned())
                .filter(|a| !a.is_empty())
                .collect(),
        )
    }

    /// Addresses in sorted order.
    pub fn iter(&self) -> btree_set::Iter<'_, String> {
        self.0.iter()
    }

    /// Number of distinct members.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no members at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `address` (compared after trimming) is a member.
    pub fn contains(&self, address: &str) -> bool {
        self.0.contains(address.trim())
    }

    /// Addresses in sorted order, owned.
    pub fn to_vec(&self) -> Vec<String> {
        self.0.iter().cloned().collect()
    }

    /// A stable fingerprint of the set: xxh3-64 (seed 0) over the sorted addresses joined with
    /// `\n`. Nodes exchange it to tell cheaply whether they route with the same view; being
    /// pinned, it compares equal across binary versions and platforms.
    pub fn digest(&self) -> u64 {
        // Streaming the pieces hashes exactly the joined string without building it.
        let mut h = Xxh3Default::new();
        for (i, address) in self.0.iter().enumerate() {
            if i > 0 {
                h.write(b"\n");
            }
            h.write(address.as_bytes());
        }
        h.finish()
    }
}

impl From<Vec<String>> for Members {
    fn from(addresses: Vec<String>) -> Self {
        Self::new(addresses)
    }
}

impl From<Members> for Vec<String> {
    fn from(members: Members) -> Self {
        members.0.into_iter().collect()
    }
}

impl<S: AsRef<str>> FromIterator<S> for Members {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        Self::new(iter)
    }
}

impl<'a> IntoIterator for &'a Members {
    type Item = &'a String;
    type IntoIter = btree_set::Iter<'a, String>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl fmt::Display for Members {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, address) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(address)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_wire_spelling() {
        for (state, text) in [
            (MemberState::Up, "UP"),
            (MemberState::Suspicious, "SUSPICIOUS"),
            (MemberState::Down, "DOWN"),
        ] {
            assert_eq!(state.to_string(), text);
            assert_eq!(
                serde_json::to_string(&state).unwrap(),
                format!("\"{text}\"")
            );
            assert_eq!(
                serde_json::from_str::<MemberState>(&format!("\"{text}\"")).unwrap(),
                state
            );
        }
        assert!(MemberState::Up.is_live());
        assert!(MemberState::Suspicious.is_live());
        assert!(!MemberState::Down.is_live());
    }

    #[test]
    fn member_round_trips() {
        let m = Member {
            address: "10.0.0.1:8848".into(),
            state: MemberState::Suspicious,
        };
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#"{"address":"10.0.0.1:8848","state":"SUSPICIOUS"}"#);
        assert_eq!(serde_json::from_str::<Member>(&json).unwrap(), m);
    }

    #[test]
    fn members_are_normalised() {
        let m = Members::new([" b:2", "a:1", "", "b:2", "  ", "c:3 ", "a:1"]);
        assert_eq!(m.to_vec(), ["a:1", "b:2", "c:3"]);
        assert_eq!(m.len(), 3);
        assert!(!m.is_empty());
        assert!(m.contains("b:2"));
        assert!(m.contains(" c:3"));
        assert!(!m.contains("d:4"));
        assert_eq!(m, Members::new(["c:3", "b:2", "a:1"]));
        assert_eq!(m.to_string(), "a:1,b:2,c:3");
        assert!(Members::new(Vec::<String>::new()).is_empty());
    }

    #[test]
    fn members_serde_is_a_plain_normalised_list() {
        let m: Members = serde_json::from_str(r#"["b:2","a:1","b:2"," "]"#).unwrap();
        assert_eq!(serde_json::to_string(&m).unwrap(), r#"["a:1","b:2"]"#);
    }

    #[test]
    fn digest_is_pinned_and_order_insensitive() {
        let m = Members::new(["127.0.0.1:8850", "127.0.0.1:8848", "127.0.0.1:8849"]);
        let joined = "127.0.0.1:8848\n127.0.0.1:8849\n127.0.0.1:8850";
        assert_eq!(m.digest(), xxhash_rust::xxh3::xxh3_64(joined.as_bytes()));
        assert_eq!(m.digest(), DIGEST_3_LOCAL);
        assert_eq!(
            Members::new(["127.0.0.1:8849", "127.0.0.1:8850", "127.0.0.1:8848"]).digest(),
            DIGEST_3_LOCAL
        );
        assert_eq!(Members::default().digest(), DIGEST_EMPTY);
        assert_ne!(
            Members::new(["127.0.0.1:8848", "127.0.0.1:8849"]).digest(),
            DIGEST_3_LOCAL
        );
    }

    // Pinned so a dependency upgrade that changes the hash fails the build instead of
    // silently splitting the cluster's view.
    const DIGEST_3_LOCAL: u64 = 0x4AF6_A0F7_0A22_9B50;
    const DIGEST_EMPTY: u64 = 0x2D06_8005_38D3_94C2;
}
