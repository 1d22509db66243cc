//! The messages Distro peers exchange, and their routes under `/nacre/internal/distro`.
//!
//! All bodies are JSON. Sync carries service records, whole or as deltas (rule V2); verify carries per-service version
//! and checksum digests of the sender's owned services; a snapshot is every record a node holds.

use nacre_ring::ServiceKey;
use serde::{Deserialize, Serialize};

use super::store::{Digest, ServiceRecord};

/// Route receiving [`SyncBatch`]es.
pub const SYNC_PATH: &str = "/nacre/internal/distro/sync";
/// Route receiving [`VerifyRequest`]s.
pub const VERIFY_PATH: &str = "/nacre/internal/distro/verify";
/// Route answering a full snapshot (`Vec<ServiceRecord>`).
pub const SNAPSHOT_PATH: &str = "/nacre/internal/distro/snapshot";

/// Changed services pushed by a node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncBatch {
    /// Sender's advertised address.
    pub from: String,
    /// Current records of the changed services.
    pub records: Vec<ServiceRecord>,
}

/// Answer to a [`SyncBatch`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncReply {
    /// Records that were newer than the receiver's copy.
    pub applied: usize,
    /// Services a delta created at the receiver, which wants their whole records (rule V2).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub want: Vec<ServiceKey>,
}

/// The digests of every service the sender owns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyRequest {
    /// Sender's advertised address.
    pub from: String,
    /// Digest of the sender's ring members: the receiver only deletes services on the
    /// sender's word when both agree on who owns what.
    pub ring_digest: u64,
    /// Version and checksum per owned service.
    pub digests: Vec<Digest>,
}

/// What the receiver of a [`VerifyRequest`] wants resent.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VerifyReply {
    /// Services whose copy here is older or missing: send them.
    pub want: Vec<ServiceKey>,
    /// Services whose copies have equal versions but different contents: restamp and send.
    pub conflicting: Vec<ServiceKey>,
}
