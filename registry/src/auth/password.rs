//! Password hashing (rule A4): Argon2id with a random salt, PHC strings. Slow on purpose, so
//! callers run these on the blocking pool.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

/// The PHC hash of `password`, or `None` if hashing failed.
pub fn hash(password: &str) -> Option<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .ok()
        .map(|h| h.to_string())
}

/// Whether `password` matches `phc` (a malformed hash matches nothing).
pub fn check(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A generated password for the first admin: 24 characters from a 62-letter alphabet.
pub fn generate() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    (0..24)
        .map(|_| ALPHABET[rand::Rng::gen_range(&mut rand::thread_rng(), 0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a4_hashes_are_salted_and_check_only_the_right_password() {
        let a = hash("s3cret").unwrap();
        let b = hash("s3cret").unwrap();
        assert_ne!(a, b, "salted");
        assert!(a.starts_with("$argon2id$"));
        assert!(!a.contains("s3cret"));
        assert!(check("s3cret", &a));
        assert!(!check("s3creT", &a));
        assert!(!check("s3cret", "not a hash"));
        assert_eq!(generate().len(), 24);
        assert_ne!(generate(), generate());
    }

    #[test]
    fn a4_a_proven_password_is_remembered_briefly_and_only_for_its_generation() {
        let v = Verified::default();
        assert!(!v.known("bob", "pw", 1, 0));
        v.remember("bob", "pw", 1, 0);
        assert!(v.known("bob", "pw", 1, Verified::TTL_MS - 1));
        assert!(!v.known("bob", "pw2", 1, 1), "another password");
        assert!(!v.known("eve", "pw", 1, 1), "another user");
        assert!(!v.known("bob", "pw", 2, 1), "password changed since");
        assert!(!v.known("bob", "pw", 1, Verified::TTL_MS), "expired");
    }
}

/// A user name and the tag of a password proven for it.
type ProvenKey = (String, Vec<u8>);

/// Passwords recently proven correct, so that clients sending `username` + `password` on
/// every request (the npm client) do not cost an Argon2 verification each. Entries are keyed
/// by an HMAC of the password under a per-process random key (the password itself is never
/// kept), tied to the user's generation (a password change ends them) and live
/// [`Verified::TTL_MS`].
#[derive(Debug)]
pub struct Verified {
    key: [u8; 32],
    /// (user, password tag) → (generation, remembered until ms).
    entries: parking_lot::Mutex<std::collections::HashMap<ProvenKey, (u64, u64)>>,
}

impl Default for Verified {
    fn default() -> Self {
        Self {
            key: rand::random(),
            entries: parking_lot::Mutex::new(std::collections::HashMap::new()),
        }
    }
}

impl Verified {
    /// How long a proven password is remembered (ms).
    pub const TTL_MS: u64 = 60_000;
    /// Most entries kept; past it the cache starts over.
    const MAX: usize = 10_000;

    fn tag(&self, password: &str) -> Vec<u8> {
        use hmac::Mac;
        let mut m = crate::auth::token::mac(&self.key);
        m.update(password.as_bytes());
        m.finalize().into_bytes().to_vec()
    }

    /// Whether `password` was proven for `user` at `generation` within the TTL.
    pub fn known(&self, user: &str, password: &str, generation: u64, now_ms: u64) -> bool {
        let k = (user.to_string(), self.tag(password));
        self.entries
            .lock()
            .get(&k)
            .is_some_and(|(g, until)| *g == generation && now_ms < *until)
    }

    /// Remembers that `password` is `user`'s at `generation`.
    pub fn remember(&self, user: &str, password: &str, generation: u64, now_ms: u64) {
        let k = (user.to_string(), self.tag(password));
        let mut e = self.entries.lock();
        if e.len() >= Self::MAX {
            e.clear();
        }
        e.insert(k, (generation, now_ms + Self::TTL_MS));
    }
}
