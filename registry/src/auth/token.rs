//! Access tokens (rule A3): `base64url(claims JSON) . base64url(HMAC-SHA256(key, claims))`.
//!
//! Opaque to clients (the 1.x clients only pass them back). Checked in constant time.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// User name.
    #[serde(rename = "u")]
    pub user: String,
    /// The user's generation when the token was issued.
    #[serde(rename = "g")]
    pub generation: u64,
    /// Expiry, seconds since the Unix epoch.
    #[serde(rename = "e")]
    pub expires_s: u64,
}

/// Why a token was refused (the messages are Nacos's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token of ours: malformed, or signed with another key.
    #[error("token invalid!")]
    Invalid,
    /// Past its expiry.
    #[error("token expired!")]
    Expired,
}

/// Signs `claims` with `key`.
pub fn sign(key: &[u8], claims: &Claims) -> String {
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
    let mut mac = mac(key);
    mac.update(body.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{body}.{sig}")
}

/// The claims of `token` if `key` signed it and it has not expired at `now_s`.
pub fn verify(key: &[u8], token: &str, now_s: u64) -> Result<Claims, TokenError> {
    let (body, sig) = token.split_once('.').ok_or(TokenError::Invalid)?;
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| TokenError::Invalid)?;
    let mut mac = mac(key);
    mac.update(body.as_bytes());
    mac.verify_slice(&sig).map_err(|_| TokenError::Invalid)?;
    let raw = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| TokenError::Invalid)?;
    let claims: Claims = serde_json::from_slice(&raw).map_err(|_| TokenError::Invalid)?;
    if claims.expires_s <= now_s {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

/// An HMAC-SHA256 keyed with `key`.
pub(crate) fn mac(key: &[u8]) -> HmacSha256 {
    #[allow(clippy::expect_used)]
    <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes keys of any length")
}

/// A fresh random key for a new cluster, hex-encoded.
pub fn new_key() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of a hex key (a malformed one yields no key: every token is then invalid).
pub fn key_bytes(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) || hex.is_empty() {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> Claims {
        Claims {
            user: "bob".into(),
            generation: 3,
            expires_s: exp,
        }
    }

    #[test]
    fn a3_a_token_verifies_under_its_key_until_it_expires() {
        let key = key_bytes(&new_key()).unwrap();
        let t = sign(&key, &claims(100));
        assert_eq!(verify(&key, &t, 99), Ok(claims(100)));
        assert_eq!(verify(&key, &t, 100), Err(TokenError::Expired));
    }

    #[test]
    fn a3_forged_tampered_and_foreign_tokens_are_invalid() {
        let key = key_bytes(&new_key()).unwrap();
        let other = key_bytes(&new_key()).unwrap();
        let t = sign(&key, &claims(100));
        assert_eq!(verify(&other, &t, 1), Err(TokenError::Invalid));
        let (body, sig) = t.split_once('.').unwrap();
        // The claims rewritten to another user, signature kept.
        let forged_body = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&Claims {
                user: "nacos".into(),
                ..claims(100)
            })
            .unwrap(),
        );
        assert_eq!(
            verify(&key, &format!("{forged_body}.{sig}"), 1),
            Err(TokenError::Invalid)
        );
        for junk in [
            "",
            ".",
            "abc",
            &format!("{body}."),
            &format!("{body}.{sig}x"),
            "a.b.c",
        ] {
            assert_eq!(verify(&key, junk, 1), Err(TokenError::Invalid), "{junk:?}");
        }
    }

    #[test]
    fn keys_are_random_and_round_trip_through_hex() {
        let (a, b) = (new_key(), new_key());
        assert_ne!(a, b);
        assert_eq!(key_bytes(&a).map(|k| k.len()), Some(32));
        assert_eq!(key_bytes("zz"), None);
        assert_eq!(key_bytes("abc"), None);
    }
}
