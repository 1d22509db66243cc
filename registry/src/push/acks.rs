//! Outstanding pushes awaiting a client ack, with retransmission and failure accounting.
//!
//! Every packet is tracked under its `lastRefTime` and the address it was sent to: one render
//! of a service goes to all the subscribers that asked for it in the same shape as one
//! datagram, encoded (and compressed) once under one `lastRefTime`, as Nacos does, so each
//! of them acks it for itself. An ack matches only when it comes from the address the packet
//! was sent to. Without an ack the packet is resent after
//! `resend_after`, up to `max_sends` sends in total; `resend_after` after the last send it is
//! counted as failed (Nacos: 2 sends, 10 s apart, failed at 20 s). A packet superseded by a
//! newer push to the same subscriber is no longer retransmitted (its data is stale) but stays
//! ackable until its current deadline. The table is bounded: when full, the entry closest to
//! its deadline is evicted and counted as failed. Pure data structure: time is injected.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Pending {
    bytes: Arc<[u8]>,
    sends: u32,
    deadline: Instant,
    superseded: bool,
}

/// Something the hub must do now for an outstanding packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// Send these bytes to `addr` again (same `lastRefTime`).
    Resend {
        seq: u64,
        addr: SocketAddr,
        bytes: Arc<[u8]>,
    },
    /// Gave up on this packet: count it as failed.
    Failed { seq: u64, addr: SocketAddr },
}

/// A packet's identity: its `lastRefTime` and where it went.
type Key = (u64, SocketAddr);

/// Outstanding packets by `lastRefTime` and address, with a deadline queue.
#[derive(Debug)]
pub struct AckTracker {
    entries: HashMap<Key, Pending>,
    timers: BTreeSet<(Instant, Key)>,
    cap: usize,
    resend_after: Duration,
    max_sends: u32,
}

impl AckTracker {
    /// An empty tracker holding at most `cap` packets (at least 1); `max_sends` is at least 1.
    pub fn new(cap: usize, resend_after: Duration, max_sends: u32) -> Self {
        Self {
            entries: HashMap::new(),
            timers: BTreeSet::new(),
            cap: cap.max(1),
            resend_after,
            max_sends: max_sends.max(1),
        }
    }

    /// Number of outstanding packets.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is outstanding.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Starts tracking packet `seq`, just sent (first send) to `addr` at `now`.
    ///
    /// Returns the packet evicted to make room, if the tracker was full (count it as failed).
    pub fn track(
        &mut self,
        seq: u64,
        addr: SocketAddr,
        bytes: Arc<[u8]>,
        now: Instant,
    ) -> Option<Due> {
        let key = (seq, addr);
        let mut evicted = None;
        if self.remove(key).is_some() {
            // The same packet tracked twice for one address (the hub sends each once, so this
            // should not happen): the earlier entry is given up on, so that every tracked
            // packet still ends acked or failed.
            evicted = Some(Due::Failed { seq, addr });
        } else if self.entries.len() >= self.cap {
            if let Some(&(_, victim)) = self.timers.first() {
                if self.remove(victim).is_some() {
                    evicted = Some(Due::Failed {
                        seq: victim.0,
                        addr: victim.1,
                    });
                }
            }
        }
        let deadline = now + self.resend_after;
        self.timers.insert((deadline, key));
        self.entries.insert(
            key,
            Pending {
                bytes,
                sends: 1,
                deadline,
                superseded: false,
            },
        );
        evicted
    }

    fn remove(&mut self, key: Key) -> Option<Pending> {
        let p = self.entries.remove(&key)?;
        self.timers.remove(&(p.deadline, key));
        Some(p)
    }

    /// Handles an ack for `seq` from `from`. True if it matched an outstanding packet (which is
    /// then done); false for unknown, already finished, or wrong-source acks (ignored).
    pub fn ack(&mut self, from: SocketAddr, seq: u64) -> bool {
        self.remove((seq, from)).is_some()
    }

    /// Stops retransmitting packet `seq` to `addr` (a newer packet went to that subscriber).
    pub fn supersede(&mut self, seq: u64, addr: SocketAddr) {
        if let Some(p) = self.entries.get_mut(&(seq, addr)) {
            p.superseded = true;
        }
    }

    /// The earliest deadline, if anything is outstanding.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.first().map(|&(d, _)| d)
    }

    /// Everything due at `now`: resends (deadline re-armed) and failures (entry dropped).
    pub fn due(&mut self, now: Instant) -> Vec<Due> {
        let mut out = Vec::new();
        while let Some(&(deadline, key)) = self.timers.first() {
            if deadline > now {
                break;
            }
            self.timers.pop_first();
            let Some(p) = self.entries.get_mut(&key) else {
                continue;
            };
            let (seq, addr) = key;
            if !p.superseded && p.sends < self.max_sends {
                p.sends += 1;
                p.deadline = now + self.resend_after;
                self.timers.insert((p.deadline, key));
                out.push(Due::Resend {
                    seq,
                    addr,
                    bytes: Arc::clone(&p.bytes),
                });
            } else {
                self.entries.remove(&key);
                out.push(Due::Failed { seq, addr });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S10: Duration = Duration::from_secs(10);

    fn addr(port: u16) -> SocketAddr {
        ([127, 0, 0, 1], port).into()
    }

    fn bytes(s: &str) -> Arc<[u8]> {
        Arc::from(s.as_bytes())
    }

    #[test]
    fn ack_matches_source_and_seq() {
        let t0 = Instant::now();
        let mut a = AckTracker::new(10, S10, 2);
        assert_eq!(a.track(100, addr(1), bytes("x"), t0), None);
        assert_eq!(a.track(101, addr(2), bytes("y"), t0), None);
        // Wrong source, unknown seq: ignored.
        assert!(!a.ack(addr(2), 100));
        assert!(!a.ack(addr(1), 999));
        assert!(a.ack(addr(1), 100));
        // A duplicate ack is ignored.
        assert!(!a.ack(addr(1), 100));
        assert_eq!(a.len(), 1);
        assert!(a.ack(addr(2), 101));
        assert!(a.is_empty());
        assert_eq!(a.next_deadline(), None);
        assert!(a.due(t0 + S10 * 5).is_empty());
    }

    #[test]
    fn resend_once_then_fail_like_nacos() {
        let t0 = Instant::now();
        let mut a = AckTracker::new(10, S10, 2);
        a.track(7, addr(1), bytes("pkt"), t0);
        assert_eq!(a.next_deadline(), Some(t0 + S10));
        assert!(a.due(t0 + Duration::from_millis(9_999)).is_empty());
        assert_eq!(
            a.due(t0 + S10),
            vec![Due::Resend {
                seq: 7,
                addr: addr(1),
                bytes: bytes("pkt")
            }]
        );
        assert_eq!(a.next_deadline(), Some(t0 + S10 * 2));
        assert!(a.due(t0 + Duration::from_millis(19_999)).is_empty());
        assert_eq!(
            a.due(t0 + S10 * 2),
            vec![Due::Failed {
                seq: 7,
                addr: addr(1)
            }]
        );
        assert!(a.is_empty());
        // A late ack after failure is ignored.
        assert!(!a.ack(addr(1), 7));
    }

    #[test]
    fn ack_after_resend_succeeds() {
        let t0 = Instant::now();
        let mut a = AckTracker::new(10, S10, 2);
        a.track(7, addr(1), bytes("pkt"), t0);
        assert_eq!(a.due(t0 + S10).len(), 1);
        assert!(a.ack(addr(1), 7));
        assert!(a.due(t0 + S10 * 3).is_empty());
    }

    #[test]
    fn max_sends_one_means_no_resend() {
        let t0 = Instant::now();
        let mut a = AckTracker::new(10, S10, 0);
        a.track(7, addr(1), bytes("pkt"), t0);
        assert_eq!(
            a.due(t0 + S10),
            vec![Due::Failed {
                seq: 7,
                addr: addr(1)
            }]
        );
    }

    #[test]
    fn superseded_packet_is_not_resent_but_still_ackable() {
        let t0 = Instant::now();
        let mut a = AckTracker::new(10, S10, 2);
        a.track(1, addr(1), bytes("old"), t0);
        a.track(2, addr(1), bytes("new"), t0 + Duration::from_secs(1));
        a.supersede(1, addr(1));
        a.supersede(999, addr(1)); // unknown: no-op
        a.supersede(2, addr(2)); // another address's packet 2: no-op
                                 // Old packet: no resend at 10 s, failed instead.
        assert_eq!(
            a.due(t0 + S10),
            vec![Due::Failed {
                seq: 1,
                addr: addr(1)
            }]
        );
        // Had it been acked in time, it would have counted.
        a.track(3, addr(1), bytes("x"), t0);
        a.supersede(3, addr(1));
        assert!(a.ack(addr(1), 3));
    }

    #[test]
    fn one_packet_to_many_subscribers_is_acked_and_superseded_by_each() {
        let t0 = Instant::now();
        let mut a = AckTracker::new(10, S10, 2);
        let pkt = bytes("render");
        for port in 1..=3 {
            assert_eq!(a.track(5, addr(port), pkt.clone(), t0), None);
        }
        assert_eq!(a.len(), 3);
        // Each subscriber's ack completes its own copy only.
        assert!(a.ack(addr(1), 5));
        assert!(!a.ack(addr(1), 5));
        assert_eq!(a.len(), 2);
        // A newer packet to subscriber 2 stops only its copy's resends.
        a.supersede(5, addr(2));
        let due = a.due(t0 + S10);
        assert_eq!(
            due,
            vec![
                Due::Failed {
                    seq: 5,
                    addr: addr(2)
                },
                Due::Resend {
                    seq: 5,
                    addr: addr(3),
                    bytes: pkt.clone()
                },
            ]
        );
        // Tracked again for the same address, the earlier copy is given up on, not lost.
        assert_eq!(
            a.track(5, addr(3), pkt.clone(), t0 + S10),
            Some(Due::Failed {
                seq: 5,
                addr: addr(3)
            })
        );
        assert_eq!(a.len(), 1);
        assert!(a.ack(addr(3), 5));
        assert!(a.is_empty());
    }

    #[test]
    fn bounded_evicts_earliest_deadline_as_failed() {
        let t0 = Instant::now();
        let mut a = AckTracker::new(2, S10, 2);
        a.track(1, addr(1), bytes("a"), t0);
        a.track(2, addr(2), bytes("b"), t0 + Duration::from_secs(1));
        assert_eq!(
            a.track(3, addr(3), bytes("c"), t0 + Duration::from_secs(2)),
            Some(Due::Failed {
                seq: 1,
                addr: addr(1)
            })
        );
        assert_eq!(a.len(), 2);
        assert!(!a.ack(addr(1), 1));
        assert!(a.ack(addr(3), 3));
    }

    #[test]
    fn many_due_at_once_are_all_reported() {
        let t0 = Instant::now();
        let mut a = AckTracker::new(100, S10, 2);
        for seq in 0..50 {
            a.track(seq, addr(1), bytes("p"), t0 + Duration::from_millis(seq));
        }
        let d = a.due(t0 + S10 + Duration::from_millis(49));
        assert_eq!(d.len(), 50);
        assert!(d.iter().all(|d| matches!(d, Due::Resend { .. })));
        let d = a.due(t0 + S10 * 3);
        assert_eq!(d.len(), 50);
        assert!(d.iter().all(|d| matches!(d, Due::Failed { .. })));
        assert!(a.is_empty());
    }
}
