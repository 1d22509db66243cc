//! Per-client request-rate limits at the edge: one token bucket per client address (GCRA, from
//! the `governor` crate), checked before anything else, so a client that floods the gateway
//! gets 429 without costing a node anything.
//!
//! Off unless `client_rate_limit` is set. The buckets of clients that went quiet are dropped
//! by [`ClientLimiter::forget_idle`], which the gateway's monitor calls periodically, so the
//! map stays bounded by the clients seen recently.

use std::net::IpAddr;
use std::num::NonZeroU32;

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

#[cfg(test)]
mod tests {
    use super::*;

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
