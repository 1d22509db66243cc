//! "Has member M applied index i yet?", asked once for many writes.
//!
//! A write returns only once the other members have applied it too (or a short wait passed), so
//! a legacy client that sends its next request to another member reads its own write. Asked per
//! write, that was two HTTP round trips per write on a 3-node cluster; with writes packed into
//! shared entries (see `propose`) the asks were most of a publish's cost. The rules:
//!
//! - **A1 (one ask per member).** At most one ask is in flight per member, for the highest
//!   index any waiting write needs at the moment it is sent. Each write asks at most once: the
//!   write that finds no ask in flight sends one; when it returns, a write still waiting for a
//!   higher index sends the next.
//! - **A2 (success covers lower indexes).** A member that has applied `i` has applied
//!   everything below it: a confirmed index releases every write waiting for `i` or less, and
//!   a later write for such an index returns at once.
//! - **A3 (failure releases who was waiting).** A failed ask (refused, timed out, member down)
//!   releases the writes that were waiting when it failed, as a failed ask of their own would
//!   have; a write that starts later asks again. An ask abandoned by its write (that write's
//!   deadline passed) is not a failure: another waiting write takes over.
//! - **A4 (bounded).** Whatever happens to the asker, no write waits longer than its own
//!   deadline.

use std::collections::HashMap;
use std::future::Future;

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
struct Seen {
    /// Highest index the member confirmed it has applied.
    applied: u64,
    /// The last failed ask: the index it asked for and when it failed.
    failed: Option<(u64, Instant)>,
}

struct Slot {
    seen: watch::Sender<Seen>,
    /// Highest index a waiting write needs.
    wanted: u64,
    asking: bool,
}

/// The coalesced asks, per member address.
#[derive(Default)]
pub struct PeerApplied {
    slots: Mutex<HashMap<String, Slot>>,
}

/// Clears `asking` if the asker is dropped mid-ask, so another write takes over (rule A3).
struct Asking<'a> {
    owner: &'a PeerApplied,
    addr: &'a str,
    done: bool,
}

impl Drop for Asking<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.owner.finish(self.addr, None);
        }
    }
}

impl PeerApplied {
    /// Waits until `addr` has applied `index` (rules A1–A4), asking with `ask(i)` (`true`: the
    /// member has applied `i`), at most until `deadline`.
    pub async fn wait<F, Fut>(&self, addr: &str, index: u64, deadline: Instant, ask: F)
    where
        F: Fn(u64) -> Fut,
        Fut: Future<Output = bool>,
    {
        let since = Instant::now();
        let released = |s: &Seen| {
            s.applied >= index || s.failed.is_some_and(|(i, at)| i >= index && at >= since)
        };
        let work = async {
            let mut asked = false;
            loop {
                // Under the lock: done, or lead the next ask, or wait for the one in flight.
                let (lead, mut rx) = {
                    let mut slots = self.slots.lock();
                    let slot = slots.entry(addr.to_string()).or_insert_with(|| Slot {
                        seen: watch::Sender::new(Seen {
                            applied: 0,
                            failed: None,
                        }),
                        wanted: 0,
                        asking: false,
                    });
                    if released(&slot.seen.borrow()) {
                        return;
                    }
                    slot.wanted = slot.wanted.max(index);
                    let lead = !slot.asking && !asked;
                    if lead {
                        slot.asking = true;
                    }
                    (lead.then_some(slot.wanted), slot.seen.subscribe())
                };
                match lead {
                    Some(wanted) => {
                        let mut guard = Asking {
                            owner: self,
                            addr,
                            done: false,
                        };
                        let ok = ask(wanted).await;
                        guard.done = true;
                        self.finish(addr, Some((wanted, ok)));
                        asked = true;
                    }
                    None => {
                        if rx.changed().await.is_err() {
                            return;
                        }
                    }
                }
            }
        };
        let _ = tokio::time::timeout_at(deadline, work).await;
    }

    /// Records an ask's outcome (`None`: abandoned by its write) and wakes the waiting writes:
    /// released ones return, and one still waiting sends the next ask.
    fn finish(&self, addr: &str, outcome: Option<(u64, bool)>) {
        let mut slots = self.slots.lock();
        let Some(slot) = slots.get_mut(addr) else {
            return;
        };
        slot.asking = false;
        match outcome {
            Some((asked, true)) => slot.seen.send_modify(|s| s.applied = s.applied.max(asked)),
            // Every write waiting now is released, including those that raised the wanted
            // index during the failed ask (rule A3).
            Some((_, false)) => {
                let (wanted, now) = (slot.wanted, Instant::now());
                slot.seen.send_modify(|s| s.failed = Some((wanted, now)));
            }
            // Nothing learned; the wake-up lets a waiting write take over.
            None => slot.seen.send_modify(|_| {}),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    /// How long an ask takes here.
    const ASK: Duration = Duration::from_millis(50);

    /// A member that has applied `applied` (changeable), counting the asks it gets.
    #[derive(Default)]
    struct Member {
        applied: AtomicU64,
        asks: AtomicUsize,
        down: std::sync::atomic::AtomicBool,
    }

    impl Member {
        async fn ask(&self, i: u64) -> bool {
            self.asks.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(ASK).await;
            !self.down.load(Ordering::SeqCst) && self.applied.load(Ordering::SeqCst) >= i
        }
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[tokio::test]
    async fn a1_a2_concurrent_writes_share_asks_and_lower_indexes_return_at_once() {
        let pa = Arc::new(PeerApplied::default());
        let m = Arc::new(Member::default());
        m.applied.store(100, Ordering::SeqCst);
        let waits = (1..=50u64).map(|i| {
            let (pa, m) = (pa.clone(), m.clone());
            tokio::spawn(async move { pa.wait("m", i, soon(), |x| m.ask(x)).await })
        });
        futures::future::join_all(waits).await;
        let asks = m.asks.load(Ordering::SeqCst);
        assert!(asks <= 2, "50 concurrent writes made {asks} asks");
        let t = Instant::now();
        pa.wait("m", 10, soon(), |x| m.ask(x)).await;
        assert!(t.elapsed() < ASK, "a confirmed index needs no ask");
        assert_eq!(m.asks.load(Ordering::SeqCst), asks);
    }

    #[tokio::test]
    async fn a3_a_failed_ask_releases_waiters_and_the_next_write_asks_again() {
        let pa = PeerApplied::default();
        let m = Member::default();
        m.down.store(true, Ordering::SeqCst);
        let t = Instant::now();
        pa.wait("m", 5, soon(), |x| m.ask(x)).await;
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "released by the failure"
        );
        m.down.store(false, Ordering::SeqCst);
        m.applied.store(5, Ordering::SeqCst);
        pa.wait("m", 5, soon(), |x| m.ask(x)).await;
        assert_eq!(
            m.asks.load(Ordering::SeqCst),
            2,
            "asked again after the failure"
        );
    }

    #[tokio::test]
    async fn a3_a_failure_also_releases_writes_that_joined_during_the_ask() {
        let pa = Arc::new(PeerApplied::default());
        let m = Arc::new(Member::default());
        m.down.store(true, Ordering::SeqCst);
        let first = {
            let (pa, m) = (pa.clone(), m.clone());
            tokio::spawn(async move { pa.wait("m", 1, soon(), |x| m.ask(x)).await })
        };
        tokio::time::sleep(ASK / 5).await;
        let t = Instant::now();
        pa.wait("m", 9, soon(), |x| m.ask(x)).await;
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        first.await.unwrap();
    }

    #[tokio::test]
    async fn a1_a_write_is_not_kept_asking_for_later_writes() {
        // Asks take 50 ms and writes keep coming with higher indexes: the first write still
        // returns after its own ask, not at its deadline.
        let pa = Arc::new(PeerApplied::default());
        let m = Arc::new(Member::default());
        m.applied.store(u64::MAX, Ordering::SeqCst);
        let stream = {
            let (pa, m) = (pa.clone(), m.clone());
            tokio::spawn(async move {
                for i in 2..40u64 {
                    let (pa, m) = (pa.clone(), m.clone());
                    tokio::spawn(async move { pa.wait("m", i, soon(), |x| m.ask(x)).await });
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        };
        let t = Instant::now();
        pa.wait("m", 1, soon(), |x| m.ask(x)).await;
        assert!(t.elapsed() < 3 * ASK, "{:?}", t.elapsed());
        stream.await.unwrap();
    }

    #[tokio::test]
    async fn a4_no_write_waits_past_its_deadline_even_if_the_asker_is_dropped() {
        let pa = Arc::new(PeerApplied::default());
        let slow = |_| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            true
        };
        // The first waiter (the asker) is dropped mid-ask.
        let first = {
            let pa = pa.clone();
            tokio::spawn(async move { pa.wait("m", 1, soon(), slow).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        first.abort();
        let _ = first.await;
        // A later write is not stuck behind the dropped asker: it asks itself, within its
        // deadline.
        let t = Instant::now();
        pa.wait("m", 1, Instant::now() + Duration::from_millis(200), slow)
            .await;
        let e = t.elapsed();
        assert!(
            e >= Duration::from_millis(190) && e < Duration::from_secs(2),
            "{e:?}"
        );
    }
}
