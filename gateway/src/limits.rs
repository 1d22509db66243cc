//! Per-client limits at the edge, so one client cannot take what the gateway has for all:
//!
//! - [`ClientLimiter`]: a request rate per client address. One token bucket per address (GCRA,
//!   from the `governor` crate), checked before anything else, so a client that floods the
//!   gateway gets 429 without costing a node anything. Off unless `client_rate_limit` is set.
//!   The buckets of clients that went quiet are dropped by [`ClientLimiter::forget_idle`],
//!   which the gateway's monitor calls periodically, so the map stays bounded by the clients
//!   seen recently.
//! - [`ConnectionCaps`]: open connections per client address. A connection past the cap is
//!   closed as it is accepted, before a byte is read, so idle or slow sockets from one address
//!   cannot use up the gateway's file descriptors and workers. Off unless
//!   `client_max_connections` is set. An address leaves the map with its last connection.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// The rate limit of every client address.
#[derive(Debug)]
pub struct ClientLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    per_second: u32,
}

impl ClientLimiter {
    /// A limiter allowing `per_second` requests per client address with bursts of `burst`
    /// (the rate when 0); `None` when `per_second` is 0 (no limit).
    pub fn new(per_second: u32, burst: u32) -> Option<Self> {
        let rate = NonZeroU32::new(per_second)?;
        let burst = NonZeroU32::new(burst).unwrap_or(rate);
        Some(Self {
            limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            per_second,
        })
    }

    /// Whether `client` may send one more request now.
    pub fn allow(&self, client: IpAddr) -> bool {
        self.limiter.check_key(&client).is_ok()
    }

    /// The configured rate, for the refusal message.
    pub fn per_second(&self) -> u32 {
        self.per_second
    }

    /// Drops the buckets of clients whose quota is full again (they are as new).
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Client addresses with a bucket.
    pub fn tracked(&self) -> usize {
        self.limiter.len()
    }
}

/// Open connections per client address, capped.
#[derive(Debug)]
pub struct ConnectionCaps {
    per_client: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One admitted connection; dropping it (the connection ended) frees its place.
#[derive(Debug)]
pub struct Admitted {
    caps: Arc<ConnectionCaps>,
    client: IpAddr,
}

impl ConnectionCaps {
    /// At most `per_client` open connections per address; `None` when 0 (no cap).
    pub fn new(per_client: usize) -> Option<Arc<Self>> {
        (per_client > 0).then(|| {
            Arc::new(Self {
                per_client,
                open: Mutex::new(HashMap::new()),
            })
        })
    }

    /// Admits one more connection from `client`, or `None` when it already has the cap open.
    pub fn admit(self: &Arc<Self>, client: IpAddr) -> Option<Admitted> {
        // The map is only counted in, never held across I/O: poisoning cannot leave it
        // inconsistent, so a poisoned lock is used as is.
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(client).or_insert(0);
        if *n >= self.per_client {
            return None;
        }
        *n += 1;
        Some(Admitted {
            caps: self.clone(),
            client,
        })
    }

    /// The cap, for logs.
    pub fn per_client(&self) -> usize {
        self.per_client
    }

    /// Open connections of `client`.
    pub fn open(&self, client: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(&client).copied().unwrap_or(0)
    }

    /// Client addresses with a connection open.
    pub fn clients(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self
            .caps
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.client) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_at_its_cap_is_refused_until_one_of_its_connections_ends() {
        assert!(ConnectionCaps::new(0).is_none(), "0 means no cap");
        let caps = ConnectionCaps::new(2).unwrap();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = caps.admit(a).unwrap();
        let _second = caps.admit(a).unwrap();
        assert!(caps.admit(a).is_none(), "third connection from a");
        assert!(caps.admit(b).is_some(), "b has places of its own");
        drop(first);
        assert_eq!(caps.open(a), 1);
        let _third = caps.admit(a).expect("a place freed");
        assert!(caps.admit(a).is_none());
    }

    #[test]
    fn an_address_leaves_the_map_with_its_last_connection() {
        let caps = ConnectionCaps::new(3).unwrap();
        let held: Vec<_> = (1..=4u8)
            .map(|i| caps.admit(IpAddr::from([10, 0, 0, i])).unwrap())
            .collect();
        assert_eq!(caps.clients(), 4);
        drop(held);
        assert_eq!(caps.clients(), 0);
        assert_eq!(caps.per_client(), 3);
    }

    #[test]
    fn a_client_past_its_burst_is_refused_and_others_are_not() {
        let l = ClientLimiter::new(5, 3).unwrap();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let allowed = (0..10).filter(|_| l.allow(a)).count();
        assert_eq!(allowed, 3, "burst of 3");
        assert!(l.allow(b), "another client has its own bucket");
        assert_eq!(l.per_second(), 5);
    }

    #[test]
    fn no_rate_means_no_limiter_and_quiet_clients_are_forgotten() {
        assert!(ClientLimiter::new(0, 10).is_none());
        let l = ClientLimiter::new(1000, 0).unwrap();
        l.allow("10.0.0.1".parse().unwrap());
        assert_eq!(l.tracked(), 1);
        std::thread::sleep(std::time::Duration::from_millis(20));
        l.forget_idle();
        assert_eq!(l.tracked(), 0);
    }
}
