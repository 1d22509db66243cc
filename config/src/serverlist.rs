//! The address-server list (`GET /nacos/serverlist`) and nacre's long-poll on it, stated once
//! for the three parties: the gateway (which serves its own list to clients), `nacre
//! address-server` (which serves the registry members to nodes and gateways), and member
//! discovery (which reads it, in [`crate::members`]).
//!
//! **Rules**
//! - **E1 — the plain answer is Nacos's.** A `GET` without nacre's parameters gets the list
//!   exactly as the legacy clients parse it ([`body`]): one address a line, `\r\n` between
//!   lines, a bare host where the port is 8848. Every answer also carries the list's digest in
//!   [`DIGEST_HEADER`]; clients that do not know it ignore it.
//! - **E2 — a held read.** A `GET` with `?waitMs=N` and [`DIGEST_HEADER`] naming the list the
//!   caller has is answered as soon as the list differs from that one, or after `N` ms (at most
//!   [`MAX_WAIT`]) with the list unchanged, or when the server stops. A digest that does not
//!   match is answered at once. So a membership change reaches every follower as soon as the
//!   server sees it, not one polling interval later.
//! - **E3 — asking only a server that said it can.** A follower sends `waitMs` only after an
//!   answer carried the digest header; a Nacos address server never sends it, so a follower of
//!   one keeps polling every `discovery_interval_ms`, as before. After a failed read the
//!   follower waits one interval before the next, held or not, so a broken server is not
//!   hammered.
//!
//! *Tests:* the unit tests below (E1, E2's decision); `tests/address_server.rs` (E2 and E3: a
//! member added to the file reaches a gateway and the nodes through `nacre address-server`
//! with their polling set to a minute; the gateway's own list holds reads and stays plain for
//! legacy clients); followers of a plain Nacos-style server keep polling (E3):
//! `tests/cluster.rs` `members_from_an_address_server_form_and_follow_the_cluster`,
//! `tests/gateway.rs` `nodes_found_through_an_address_server_are_followed`.

use std::time::Duration;

/// Path of the address-server endpoint.
pub const PATH: &str = "/nacos/serverlist";
/// Header carrying the digest of the list answered (and, on a held read, the list the caller
/// has).
pub const DIGEST_HEADER: &str = "x-nacre-list-digest";
/// Query parameter asking for a held read, in milliseconds.
pub const WAIT_PARAM: &str = "waitMs";
/// The longest hold a server grants.
pub const MAX_WAIT: Duration = Duration::from_secs(30);
/// The hold followers ask for: well under a minute, so idle proxies in between do not cut it.
pub const FOLLOW_WAIT: Duration = Duration::from_secs(20);

/// The list as legacy clients parse it (rule E1).
pub fn body(addresses: &[String]) -> String {
    addresses
        .iter()
        .map(|a| a.strip_suffix(":8848").unwrap_or(a))
        .collect::<Vec<_>>()
        .join("\r\n")
}

/// The digest of a list body: stable across processes and versions (xxh3, hex).
pub fn digest(body: &str) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(body.as_bytes()))
}

/// A held read a caller asked for (rule E2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// The digest of the list the caller has.
    pub digest: String,
    /// How long it may be held.
    pub wait: Duration,
}

impl Hold {
    /// The hold asked for by a request's query string and digest header; `None` for a plain
    /// read (no or bad `waitMs`, no digest).
    pub fn of(query: Option<&str>, digest_header: Option<&str>) -> Option<Hold> {
        let digest = digest_header?.trim();
        if digest.is_empty() {
            return None;
        }
        let ms = form_urlencoded::parse(query?.as_bytes())
            .find(|(k, _)| k == WAIT_PARAM)
            .and_then(|(_, v)| v.parse::<u64>().ok())?;
        Some(Hold {
            digest: digest.to_string(),
            wait: Duration::from_millis(ms).min(MAX_WAIT),
        })
    }

    /// Whether the answer must go now: the caller's list is not the current one.
    pub fn answer_now(&self, current_digest: &str) -> bool {
        self.digest != current_digest || self.wait.is_zero()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e1_the_plain_body_is_the_legacy_format() {
        assert_eq!(
            body(&["10.0.0.1:8848".into(), "10.0.0.2:9000".into()]),
            "10.0.0.1\r\n10.0.0.2:9000"
        );
        assert_eq!(body(&[]), "");
    }

    #[test]
    fn digests_are_stable_and_tell_lists_apart() {
        let a = digest("10.0.0.1\r\n10.0.0.2");
        assert_eq!(a, digest("10.0.0.1\r\n10.0.0.2"));
        assert_ne!(a, digest("10.0.0.1"));
        assert_eq!(a.len(), 16);
    }

    #[test]
    fn e2_a_hold_needs_both_a_wait_and_a_digest_and_is_capped() {
        assert_eq!(Hold::of(Some("waitMs=5000"), None), None);
        assert_eq!(Hold::of(None, Some("abc")), None);
        assert_eq!(Hold::of(Some("waitMs=soon"), Some("abc")), None);
        assert_eq!(Hold::of(Some("waitMs=5000"), Some("  ")), None);
        let h = Hold::of(Some("x=1&waitMs=5000"), Some("abc"));
        assert_eq!(
            h,
            Some(Hold {
                digest: "abc".into(),
                wait: Duration::from_secs(5)
            })
        );
        let capped = Hold::of(Some("waitMs=999999999"), Some("abc")).map(|h| h.wait);
        assert_eq!(capped, Some(MAX_WAIT));
    }

    #[test]
    fn e2_a_caller_with_another_list_is_answered_at_once() {
        let h = Hold {
            digest: "old".into(),
            wait: Duration::from_secs(5),
        };
        assert!(h.answer_now("new"));
        assert!(!h.answer_now("old"));
        let zero = Hold {
            digest: "old".into(),
            wait: Duration::ZERO,
        };
        assert!(zero.answer_now("old"));
    }
}
