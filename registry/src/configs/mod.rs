//! The config center's domain (Nacos 1.x `/nacos/v1/cs`): configs keyed by tenant, group and
//! data id, their history, and the listener protocol. Free of I/O: the state is part of the
//! Raft state machine ([`crate::naming::persistent::PersistentState`]), [`watch`] is the
//! in-process signal that wakes parked listeners, and the HTTP edge is `api::configs`.
//!
//! Rules (each with its test):
//! - **C1 — keys** and **C6 — listeners** are shared with the gateway, which parks listeners
//!   too: they are stated and enforced in `nacre_ring::configs` (re-exported here as
//!   [`listen`] and [`watch`]).
//! - **C2 — content.** Content must not be blank and is at most [`MAX_CONTENT`] bytes (Nacos's
//!   always-on `maxContent`). Its md5 is the hex MD5 of its UTF-8 bytes; a config that does not
//!   exist has md5 `""`. *Tests:* `model::tests::c2_*`.
//! - **C3 — deterministic apply.** Every input of a change (time, source address, user) travels
//!   in the command, and history ids come from a counter in the state, so every replica that
//!   applies the same log holds the same configs and history. *Tests:*
//!   `model::tests::c3_*`.
//! - **C4 — history.** Each publish and delete appends an entry (`I` insert, `U` update, `D`
//!   delete) with the content as it was after the change (the deleted content for `D`); the
//!   newest [`HISTORY_KEPT`] entries per config are kept. *Tests:* `model::tests::c4_*`.
//! - **C5 — compare-and-set.** A publish carrying `casMd5` applies only if the stored md5
//!   (`""` when missing) equals it; otherwise it is refused as a conflict and nothing changes.
//!   *Tests:* `model::tests::c5_*`.
//! - **C7 — gray releases.** A publish with `tag` stores a tag variant, one with the `betaIps`
//!   header (comma-separated client addresses) a beta; both live beside the config, keep no
//!   history, take no `casMd5`, and survive the config's deletion (a delete with `tag` removes
//!   that tag, `beta=true` the beta). A client whose verified address is in the beta's list
//!   reads the beta (with `isBeta: true`); otherwise a `Vipserver-Tag` naming an existing tag
//!   reads that tag; otherwise the config itself. A read with `tag` reads that tag only. A
//!   listener compares the md5 of what the same client would read. *Tests:*
//!   `model::tests::c7_*`.
//! - **C8 — import and export.** An export is a zip of a namespace's configs in the Nacos
//!   console's format (see [`transfer`]); an import reads one into a namespace that exists,
//!   every entry checked (C1, C2) and the whole file bounded before anything is proposed, then
//!   publishes its configs in order in one Raft entry: a config that exists stops the import
//!   (`ABORT`, the default: it and the rest are reported failed), is left (`SKIP`), or is
//!   replaced (`OVERWRITE`). A clone is the same import of configs picked by id (under new
//!   names when given) from namespaces the caller may read. *Tests:* `transfer::tests::c8_*`,
//!   `model::tests::c8_*`, `tests/configs.rs` `configs_export_and_import_through_the_gateway`,
//!   `tests/auth.rs` `config_permissions_follow_the_namespace`.

pub mod model;
pub mod transfer;

pub use nacre_ring::configs::{listen, watch, MAX_LISTENED, MISSING_MD5};

pub use model::{
    ConfigCommand, ConfigItem, ConfigKey, ConfigMeta, ConfigRecord, ConfigState, HistoryEntry,
    Publish,
};

/// Largest content accepted (bytes): Nacos's `maxContent`, 10 MB.
pub const MAX_CONTENT: usize = 10 * 1024 * 1024;

/// History entries kept per config (newest first out of the window).
pub const HISTORY_KEPT: usize = 100;

/// Hex MD5 of `content`'s UTF-8 bytes, as Nacos and its clients compute it.
pub fn md5_hex(content: &str) -> String {
    use md5::{Digest, Md5};
    format!("{:x}", Md5::digest(content.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c2_md5_is_the_hex_md5_of_the_utf8_bytes() {
        assert_eq!(md5_hex("hello"), "5d41402abc4b2a76b9719d911017c592");
        assert_eq!(md5_hex("配置"), "224e2ccda861c2514faa683b3683c361");
    }
}
