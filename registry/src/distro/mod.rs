//! Ephemeral (AP) instance data. In standalone mode this is the in-memory store; replication
//! between nodes (Distro) arrives with clustering.

pub mod store;

pub use store::{BeatOutcome, EphemeralStore, Expiry, ExpiryKind};
