//! What the gateway and the nodes must agree on about configs: a config's identity, the
//! listener long-poll protocol, and the signal that wakes parked listeners. Both tiers park
//! listeners (the gateway at the edge, a node for clients that talk to it directly), so both
//! read `Listening-Configs` and write its reply with this one implementation.
//!
//! Rules (each with its test; the config center's other rules, C2–C5, are in the registry's
//! `configs` module):
//! - **C1 — keys.** `dataId`, `group` and `tenant` use letters, digits and `_ - . :` only
//!   (Nacos's `ParamUtils`), `dataId` and `group` at most [`MAX_NAME`] characters, `tenant` at
//!   most [`MAX_TENANT`]. A blank, `public` or `null` tenant is the public namespace and is
//!   stored as `""`. *Test:* `tests::c1_*`.
//! - **C6 — listeners.** A listened key has changed iff the current md5 ([`MISSING_MD5`] for a
//!   config that does not exist) differs from the md5 the client sent (empty or `null` meaning
//!   "none"). A request lists at most [`MAX_LISTENED`] keys of three or four fields each; the
//!   reply names changed keys with the tenant exactly as the client sent it. A listener is held
//!   `max(10 s, Long-Pulling-Timeout − 500 ms)` (at most 120 s), or answered at once without
//!   that header or with `Long-Pulling-Timeout-No-Hangup: true`. A change wakes the listeners
//!   of the changed keys only. *Tests:* `listen::tests::c6_*`, `watch::tests::c6_*`.

pub mod listen;
pub mod watch;

use serde::{Deserialize, Serialize};

/// Longest `dataId` or `group`.
pub const MAX_NAME: usize = 256;
/// Longest `tenant`.
pub const MAX_TENANT: usize = 128;
/// Most keys one listener request may name (Nacos's `MD5Util.getClientMd5Map`).
pub const MAX_LISTENED: usize = 10_000;
/// The md5 of a config that does not exist.
pub const MISSING_MD5: &str = "";

/// The headers every config answer carries so no cache in between keeps it (names in lower
/// case, as HTTP/2 and `HeaderName::from_static` want them).
pub const NO_CACHE: [(&str, &str); 3] = [
    ("pragma", "no-cache"),
    ("expires", "Thu, 01 Jan 1970 00:00:00 GMT"),
    ("cache-control", "no-cache,no-store"),
];
/// The content type of a listener answer.
pub const LISTENER_CONTENT_TYPE: &str = "text/plain;charset=UTF-8";

/// A client parameter that breaks rule C1 or C6 (answered 400 by both tiers).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParamError(pub String);

/// Which config: tenant (`""` is public), group, data id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ConfigKey {
    /// Namespace id; `""` for public.
    pub tenant: String,
    /// Group.
    pub group: String,
    /// Data id.
    pub data_id: String,
}

/// The tenant a client's value names: blank, `public` and `null` are the public namespace.
pub fn normalize_tenant(tenant: Option<&str>) -> &str {
    match tenant.map(str::trim) {
        None | Some("") => "",
        Some(t) if t.eq_ignore_ascii_case("public") || t.eq_ignore_ascii_case("null") => "",
        Some(t) => t,
    }
}

fn valid_chars(v: &str) -> bool {
    v.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
}

/// Checks a `dataId`, `group`, `tenant` or `tag` value (rule C1).
pub fn check_name(field: &str, v: &str, max: usize) -> Result<(), ParamError> {
    if v.is_empty() {
        return Err(ParamError(format!("invalid {field}: must not be blank")));
    }
    if v.len() > max || !valid_chars(v) {
        return Err(ParamError(format!(
            "invalid {field}: at most {max} letters, digits and _ - . :"
        )));
    }
    Ok(())
}

impl ConfigKey {
    /// A validated key (rule C1).
    pub fn new(data_id: &str, group: &str, tenant: Option<&str>) -> Result<Self, ParamError> {
        check_name("dataId", data_id, MAX_NAME)?;
        check_name("group", group, MAX_NAME)?;
        let tenant = normalize_tenant(tenant);
        if !tenant.is_empty() {
            check_name("tenant", tenant, MAX_TENANT)?;
        }
        Ok(Self {
            tenant: tenant.to_string(),
            group: group.to_string(),
            data_id: data_id.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c1_keys_allow_nacos_characters_only_and_public_is_the_empty_tenant() {
        assert!(ConfigKey::new("app.yaml", "G-1:x_y", Some("ns-1")).is_ok());
        for (d, g) in [
            ("a b", "G"),
            ("a/b", "G"),
            ("a", "G\r\n"),
            ("", "G"),
            ("a", ""),
        ] {
            assert!(ConfigKey::new(d, g, None).is_err(), "{d:?} {g:?}");
        }
        assert!(ConfigKey::new(&"d".repeat(257), "G", None).is_err());
        assert!(ConfigKey::new("d", "G", Some(&"t".repeat(129))).is_err());
        assert!(ConfigKey::new("d", "G", Some("bad tenant")).is_err());
        for t in [None, Some(""), Some(" "), Some("public"), Some("null")] {
            assert_eq!(ConfigKey::new("d", "G", t).unwrap().tenant, "", "{t:?}");
        }
    }
}
