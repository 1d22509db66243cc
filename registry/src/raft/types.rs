//! Raft type configuration for nacre and the node identity helpers.
//!
//! A node's Raft id is derived from its advertised address so that a node rescheduled with the
//! same address (a StatefulSet pod's DNS name) keeps its identity; the id is then pinned in the
//! data dir so a later address change does not silently turn the node into a stranger.

use std::io::{self, Write};
use std::path::Path;

use crate::naming::persistent::{Command, CommandResult};

openraft::declare_raft_types!(
    /// The openraft type configuration of the persistent naming store.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A node's Raft id.
pub type NodeId = u64;

/// A Raft log entry of this configuration.
pub type Entry = openraft::Entry<TypeConfig>;

/// The raft handle of this configuration.
pub type Raft = openraft::Raft<TypeConfig>;

/// Name of the file in the data dir that pins the node id.
pub const NODE_ID_FILE: &str = "node-id";

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The id earlier versions derived from the address `addr` (`host:port`): FNV-1a 64 of its
/// bytes. New data dirs get random ids ([`load_or_create_node_id`]); this remains for tests
/// and for recognising ids pinned before.
///
/// Written out here rather than taken from a hashing crate because the value is persisted and
/// compared across nodes: it must never change with a dependency upgrade.
pub fn node_id_for(addr: &str) -> NodeId {
    addr.as_bytes().iter().fold(FNV_OFFSET, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(FNV_PRIME)
    })
}

/// Reads the node id pinned in `data_dir`, or draws a random one and pins it.
///
/// The pinned value is the node's Raft identity for the life of its data: it survives an
/// address change (otherwise its old votes and log would be attributed to a different member),
/// and it dies with the data. A node whose data dir was wiped therefore comes back as a *new*
/// member, even at a known voter's address: an empty log must never act as a voter that had
/// promised votes and held committed entries (it could vote twice in a term, or help elect a
/// leader missing committed entries). Ids pinned by earlier versions (FNV-1a of the address,
/// [`node_id_for`]) stay as they are.
pub fn load_or_create_node_id(data_dir: &Path) -> io::Result<NodeId> {
    let path = data_dir.join(NODE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse::<NodeId>().map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: not a node id: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data_dir)?;
            let id = random_node_id();
            // Write-then-rename so a crash never leaves a truncated id behind.
            let tmp = data_dir.join(format!("{NODE_ID_FILE}.tmp"));
            {
                let mut f = std::fs::File::create(&tmp)?;
                writeln!(f, "{id}")?;
                f.sync_all()?;
            }
            std::fs::rename(&tmp, &path)?;
            if let Ok(dir) = std::fs::File::open(data_dir) {
                // Best effort: persists the rename on filesystems that need a dir fsync.
                let _ = dir.sync_all();
            }
            Ok(id)
        }
        Err(e) => Err(e),
    }
}

/// 64 random bits from the OS (a v4 UUID's), never 0.
fn random_node_id() -> NodeId {
    let bits = uuid::Uuid::new_v4().as_u64_pair();
    (bits.0 ^ bits.1).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_is_fnv1a_and_stable() {
        // Reference values of FNV-1a 64: pinned so an accidental change breaks the build.
        assert_eq!(node_id_for(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(node_id_for("a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(node_id_for("10.0.0.1:8848"), node_id_for("10.0.0.2:8848"));
    }

    #[test]
    fn node_id_is_random_pinned_in_data_dir_and_dies_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("data");
        let id = load_or_create_node_id(&sub).unwrap();
        assert_ne!(id, 0);
        // A restart (at any address) keeps the pinned identity.
        assert_eq!(load_or_create_node_id(&sub).unwrap(), id);
        // Wiped data: a new identity, not the old voter's.
        std::fs::remove_dir_all(&sub).unwrap();
        let again = load_or_create_node_id(&sub).unwrap();
        assert_ne!(again, id);
        // Another data dir at the same address is another member.
        assert_ne!(
            load_or_create_node_id(&dir.path().join("other")).unwrap(),
            again
        );
        std::fs::write(sub.join(NODE_ID_FILE), "garbage").unwrap();
        assert!(load_or_create_node_id(&sub).is_err());
        // An id pinned by an earlier version is kept as it is.
        std::fs::write(
            sub.join(NODE_ID_FILE),
            format!("{}\n", node_id_for("n1:8848")),
        )
        .unwrap();
        assert_eq!(
            load_or_create_node_id(&sub).unwrap(),
            node_id_for("n1:8848")
        );
    }
}
