//! Failed-login throttling (rule A6): per user name and per client address, in one-minute
//! windows, with a bounded number of tracked keys.

use std::collections::HashMap;

use parking_lot::Mutex;

/// Failed logins allowed per key within a window.
pub const MAX_FAILURES: u32 = 5;
/// The window (ms).
pub const WINDOW_MS: u64 = 60_000;
/// Keys tracked at most; past it, windows that ended are dropped, then the oldest ones.
const MAX_KEYS: usize = 100_000;

/// Counts failed logins.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    failures: Mutex<HashMap<String, (u64, u32)>>,
}

impl LoginThrottle {
    /// Whether any of `keys` (user name, client address) is locked out at `now_ms`.
    pub fn locked(&self, keys: &[&str], now_ms: u64) -> bool {
        let f = self.failures.lock();
        keys.iter().any(|k| {
            f.get(*k)
                .is_some_and(|(start, n)| now_ms < start + WINDOW_MS && *n >= MAX_FAILURES)
        })
    }

    /// Records a failed login for each of `keys`.
    pub fn failed(&self, keys: &[&str], now_ms: u64) {
        let mut f = self.failures.lock();
        if f.len() >= MAX_KEYS {
            f.retain(|_, (start, _)| now_ms < *start + WINDOW_MS);
            if f.len() >= MAX_KEYS {
                f.clear();
            }
        }
        for k in keys {
            let e = f.entry((*k).to_string()).or_insert((now_ms, 0));
            if now_ms >= e.0 + WINDOW_MS {
                *e = (now_ms, 0);
            }
            e.1 += 1;
        }
    }

    /// Clears the user's count after a successful login (the address keeps its count).
    pub fn succeeded(&self, user: &str) {
        self.failures.lock().remove(user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a6_five_failures_lock_a_user_and_an_address_for_the_window() {
        let t = LoginThrottle::default();
        for _ in 0..MAX_FAILURES {
            assert!(!t.locked(&["u:bob", "ip:10.0.0.1"], 1_000));
            t.failed(&["u:bob", "ip:10.0.0.1"], 1_000);
        }
        assert!(t.locked(&["u:bob"], 1_001));
        assert!(
            t.locked(&["u:alice", "ip:10.0.0.1"], 1_001),
            "the address too"
        );
        assert!(!t.locked(&["u:alice", "ip:10.0.0.2"], 1_001));
        assert!(!t.locked(&["u:bob"], 1_000 + WINDOW_MS), "window over");
        t.succeeded("u:bob");
        assert!(!t.locked(&["u:bob"], 1_001));
    }
}
