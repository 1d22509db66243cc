//! The gateway's read turns (rule G3 in [`nacre_ring::turns`]): one set per gateway thread.
//!
//! Each gateway thread runs a single-threaded runtime of its own, and a round of turns is one
//! runtime's: a round task on one thread could not tell how far another thread's queue has
//! come. So every thread gets its own turns, made on the first request that thread serves,
//! with their round task spawned on that thread's runtime; all of them stop with the gateway.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use nacre_ring::turns::ReadTurns;
use prometheus::{IntCounter, IntGauge};
use tokio_util::sync::CancellationToken;

/// Tells one gateway's turns apart from another's on the same thread (tests run several).
static NEXT_GATEWAY: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread's turns, per gateway.
    static TURNS: RefCell<Vec<(u64, Arc<ReadTurns>)>> = const { RefCell::new(Vec::new()) };
}

/// Rule G3's turns for every thread of one gateway.
#[derive(Debug)]
pub struct ThreadTurns {
    gateway: u64,
    per_round: usize,
    crowd: usize,
    /// Client connections open now, on every thread (the crowd rule's count).
    open: IntGauge,
    waited: IntCounter,
    stop: CancellationToken,
}

impl ThreadTurns {
    /// `per_round` turns per round on each thread once more than `crowd` client connections
    /// are `open`, reads that queue counted in `waited`, the round tasks stopped by `stop`;
    /// `None` when 0 turns the gate off.
    pub fn new(
        per_round: usize,
        crowd: usize,
        open: IntGauge,
        waited: IntCounter,
        stop: CancellationToken,
    ) -> Option<Self> {
        (per_round > 0).then(|| Self {
            gateway: NEXT_GATEWAY.fetch_add(1, Ordering::Relaxed),
            per_round,
            crowd,
            open,
            waited,
            stop,
        })
    }

    /// The calling thread's turns, made (and their round task spawned on the calling thread's
    /// runtime) the first time. Call from a task of the runtime that serves the connection.
    pub fn here(&self) -> Option<Arc<ReadTurns>> {
        TURNS.with(|all| {
            let mut all = all.borrow_mut();
            if let Some((_, turns)) = all.iter().find(|(g, _)| *g == self.gateway) {
                return Some(turns.clone());
            }
            let (open, waited) = (self.open.clone(), self.waited.clone());
            let turns = ReadTurns::new(
                self.per_round,
                self.crowd,
                Box::new(move || usize::try_from(open.get()).unwrap_or(0)),
                Box::new(move || waited.inc()),
            )?;
            tokio::spawn(turns.clone().run(self.stop.clone()));
            all.push((self.gateway, turns.clone()));
            Some(turns)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn g3_each_thread_has_turns_of_its_own_and_each_gateway_too() {
        let stop = CancellationToken::new();
        let counter = || IntCounter::new("w", "w").expect("counter");
        let open = || IntGauge::new("o", "o").expect("gauge");
        let a = ThreadTurns::new(2, 0, open(), counter(), stop.clone()).expect("on");
        let b = ThreadTurns::new(2, 0, open(), counter(), stop.clone()).expect("on");
        assert!(ThreadTurns::new(0, 0, open(), counter(), stop.clone()).is_none());
        let here = a.here().expect("turns");
        assert!(
            Arc::ptr_eq(&here, &a.here().expect("turns")),
            "one set per thread"
        );
        assert!(
            !Arc::ptr_eq(&here, &b.here().expect("turns")),
            "one set per gateway"
        );
        let elsewhere = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move { !Arc::ptr_eq(&here, &a.here().expect("turns")) })
        })
        .join()
        .expect("thread");
        assert!(elsewhere, "another thread has turns of its own");
        stop.cancel();
    }
}
