//! Which credentials a node accepted, a moment ago, for reading which service: with auth on,
//! the gateway serves a cached list answer only to a request carrying a credential that a
//! node accepted for that very service within the last [`MEMO_TTL`].
//!
//! Rules:
//! - An entry is made only from a node's 200 answer to `GET instance/list` for that service
//!   with that credential: the node checked the credential and the read permission.
//! - A credential is the access token (query `accessToken` or `Authorization: Bearer`), or
//!   `username` + `password`; it is kept as a SHA-256 fingerprint, never in clear.
//! - Entries live [`MEMO_TTL`]: a token that expires, or a user whose password changes, whose
//!   permission is revoked or who is deleted, stops getting cached answers within that time
//!   (Nacos's own servers cache users and permissions for 15 s).
//! - A request without a credential is never served from the cache while auth is on.

use std::time::Duration;

use nacre_ring::ServiceKey;
use sha2::{Digest, Sha256};

/// How long a node's acceptance of a credential lets the gateway serve that credential cached
/// answers of the same service.
pub const MEMO_TTL: Duration = Duration::from_secs(1);

/// Most remembered (credential, service) pairs.
const CAPACITY: u64 = 200_000;

/// The fingerprint of a credential.
pub type Fingerprint = [u8; 32];

/// The fingerprint of what a request presents, or `None` without a credential. A token wins
/// over a password, as on the nodes.
pub fn fingerprint(
    token: Option<&str>,
    user: Option<&str>,
    password: Option<&str>,
) -> Option<Fingerprint> {
    let mut h = Sha256::new();
    match (token.filter(|t| !t.is_empty()), user, password) {
        (Some(t), _, _) => {
            h.update(b"token\0");
            h.update(t.as_bytes());
        }
        (None, Some(u), Some(p)) if !u.is_empty() && !p.is_empty() => {
            h.update(b"password\0");
            h.update(u.as_bytes());
            h.update(b"\0");
            h.update(p.as_bytes());
        }
        _ => return None,
    }
    Some(h.finalize().into())
}

/// Credentials recently accepted, per service.
#[derive(Debug)]
pub struct AuthMemo {
    accepted: moka::sync::Cache<(Fingerprint, ServiceKey), ()>,
}

impl Default for AuthMemo {
    fn default() -> Self {
        Self::new(MEMO_TTL)
    }
}

impl AuthMemo {
    /// Entries that live `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            accepted: moka::sync::Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_live(ttl)
                .build(),
        }
    }

    /// A node accepted `credential` for reading `key`.
    pub fn accepted(&self, credential: Fingerprint, key: &ServiceKey) {
        self.accepted.insert((credential, key.clone()), ());
    }

    /// Whether a node accepted `credential` for reading `key` within the TTL.
    pub fn allows(&self, credential: Fingerprint, key: &ServiceKey) -> bool {
        self.accepted.contains_key(&(credential, key.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> ServiceKey {
        ServiceKey::new("public", "DEFAULT_GROUP", s)
    }

    #[test]
    fn only_a_credential_accepted_for_that_service_is_allowed_and_only_for_a_while() {
        let memo = AuthMemo::new(Duration::from_millis(50));
        let a = fingerprint(Some("tok-a"), None, None).unwrap();
        let b = fingerprint(Some("tok-b"), None, None).unwrap();
        memo.accepted(a, &key("s"));
        assert!(memo.allows(a, &key("s")));
        assert!(!memo.allows(b, &key("s")), "another credential");
        assert!(!memo.allows(a, &key("t")), "another service");
        std::thread::sleep(Duration::from_millis(80));
        assert!(!memo.allows(a, &key("s")), "expired");
    }

    #[test]
    fn fingerprints_tell_tokens_and_passwords_apart_and_need_a_credential() {
        assert_eq!(fingerprint(None, None, None), None);
        assert_eq!(fingerprint(Some(""), Some("u"), None), None);
        let p = fingerprint(None, Some("u"), Some("p")).unwrap();
        assert_ne!(Some(p), fingerprint(None, Some("u"), Some("q")));
        assert_ne!(Some(p), fingerprint(Some("u\0p"), None, None));
        assert_eq!(
            fingerprint(Some("t"), Some("u"), Some("p")),
            fingerprint(Some("t"), None, None),
            "a token wins, as on the nodes"
        );
    }
}
