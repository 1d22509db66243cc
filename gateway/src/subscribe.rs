//! Push subscriptions kept alive without proxying every poll.
//!
//! A 1.x client subscribed to pushes lists its services every 10 s, and a node stops pushing to
//! a subscriber it has not heard from for its subscriber TTL (10 s). Sending every such poll to
//! the node just to keep the subscription alive would make the gateway's cache useless for
//! exactly the clients that poll most. Instead, per subscriber (client, `udpPort`, service,
//! answer shape):
//! - **P1 — first contact goes to the node.** A subscriber the gateway has not seen within
//!   [`SEEN_FOR`] push-refresh periods is proxied, so the node registers it before it answers
//!   (as without a gateway).
//! - **P2 — later polls are answered from the cache, and noted.** A known subscriber's poll is
//!   served from the cache; if the node last heard of it a push-refresh period (`push_refresh_ms`)
//!   ago or more, a [`SubscriberNote`] goes to the service's owner in the next batch (within
//!   [`BATCH_WINDOW`]), which registers it as its poll would have.
//! - **P3 — a note that fails is forgotten.** If the batch cannot be delivered (no owner, a
//!   refusal, a timeout) or the queue is full, its subscribers are forgotten here, so their next
//!   poll goes to the node again (P1).
//!
//! A subscriber is told apart by a 128-bit digest of what identifies it ([`SeenKey`]), so a
//! cached poll neither copies its strings nor compares them to look it up. The digest is two
//! outputs of the process's randomly keyed std hasher (SipHash-1-3 today) over the same fields
//! with a different leading tag each, so a client cannot choose its digest. Two subscribers
//! sharing one (about n²/2¹²⁹ among n subscribers, were the hasher's outputs random) would
//! share one entry: the later one's first poll would be answered from the cache without
//! reaching its node, which would not push to it until its next note.
//!
//! *Tests:* `tests::p1_*`, `tests::p2_*`, `tests::p3_*`, `tests::seen_keys_*`;
//! `tests/gateway.rs` `cached_polls_keep_push_subscriptions_alive`.

use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use nacre_ring::wire::{SubscriberNote, PUSH_SUBSCRIBERS_PATH};
use nacre_ring::ServiceKey;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::route::Variant;
use crate::Shared;

/// A subscriber as the gateway tells them apart: a digest of its client, `udpPort`, service
/// and answer shape (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SeenKey(u128);

impl SeenKey {
    /// The key of the subscriber `client`:`udp` polling `key` in the shape `variant`.
    pub fn of(client: &str, udp: u16, key: &ServiceKey, variant: &Variant) -> Self {
        // One random key, drawn once per process; the tag makes the two halves hashes of
        // different inputs.
        static KEY: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
        let hasher = KEY.get_or_init(Default::default);
        let half = |tag: u8| hasher.hash_one((tag, client, udp, key, variant));
        Self((u128::from(half(0)) << 64) | u128::from(half(1)))
    }
}

/// Rule P1: a subscriber not seen for this many push-refresh periods is new again.
pub const SEEN_FOR: u32 = 3;
/// Rule P2: notes wait at most this long for others to share their request.
pub const BATCH_WINDOW: Duration = Duration::from_millis(20);
/// Most notes in one request.
const MAX_BATCH: usize = 2_000;
/// Notes queued at most; beyond, polls go to the node (rule P3).
const QUEUE: usize = 100_000;
/// Time allowed for a batch.
const SEND_TIMEOUT: Duration = Duration::from_secs(2);

/// What a subscriber's poll needs besides its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contact {
    /// Nothing: the node heard of it recently.
    None,
    /// A note to its node (rule P2).
    Note,
    /// The poll itself must reach the node (rule P1).
    Poll,
}

/// A queued note and the subscriber it refreshes.
#[derive(Debug)]
struct Queued {
    note: SubscriberNote,
    seen: SeenKey,
}

/// The subscribers seen, and the queue of notes to their nodes.
#[derive(Debug)]
pub struct Relay {
    /// When each subscriber last reached (or was noted to) its node.
    seen: moka::sync::Cache<SeenKey, Instant>,
    refresh: Duration,
    tx: mpsc::Sender<Queued>,
    rx: Mutex<Option<mpsc::Receiver<Queued>>>,
}

impl Relay {
    /// A relay for subscribers refreshed every `refresh` (`push_refresh_ms`).
    pub fn new(refresh: Duration) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        Self {
            seen: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(refresh * SEEN_FOR)
                .build(),
            refresh,
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }

    /// What the poll of `seen` at `now` needs (rules P1, P2); records the contact it implies.
    pub fn contact(&self, seen: &SeenKey, now: Instant) -> Contact {
        let contact = self.peek(seen, now);
        if contact != Contact::None {
            self.record(seen, now);
        }
        contact
    }

    /// Records that `seen`'s node hears of it at `now` (its poll, or a note).
    pub fn record(&self, seen: &SeenKey, now: Instant) {
        self.seen.insert(*seen, now);
    }

    /// What the poll of `seen` at `now` would need, recording nothing.
    pub fn peek(&self, seen: &SeenKey, now: Instant) -> Contact {
        match self.seen.get(seen) {
            None => Contact::Poll,
            Some(at) if now.saturating_duration_since(at) < self.refresh => Contact::None,
            Some(_) => Contact::Note,
        }
    }

    /// Queues `note` for `seen`'s node; `false` (and `seen` forgotten, rule P3) when the queue
    /// is full, so the caller sends the poll to the node instead.
    pub fn offer(&self, note: SubscriberNote, seen: SeenKey) -> bool {
        match self.tx.try_send(Queued { note, seen }) {
            Ok(()) => true,
            Err(e) => {
                let q = match e {
                    mpsc::error::TrySendError::Full(q) | mpsc::error::TrySendError::Closed(q) => q,
                };
                self.seen.invalidate(&q.seen);
                false
            }
        }
    }

    /// Forgets `seen` (rule P3): its next poll goes to the node.
    pub fn forget(&self, seen: &SeenKey) {
        self.seen.invalidate(seen);
    }
}

/// Sends the queued notes in batches, each to its service's owner, until `stop`.
pub async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let rx = shared.relay.rx.lock().ok().and_then(|mut g| g.take());
    let Some(mut rx) = rx else {
        return;
    };
    loop {
        let first = tokio::select! {
            _ = stop.cancelled() => break,
            q = rx.recv() => match q {
                Some(q) => q,
                None => break,
            },
        };
        let mut batch = vec![first];
        let window = tokio::time::sleep(BATCH_WINDOW);
        tokio::pin!(window);
        while batch.len() < MAX_BATCH {
            tokio::select! {
                _ = &mut window => break,
                q = rx.recv() => match q {
                    Some(q) => batch.push(q),
                    None => break,
                },
            }
        }
        send(&shared, batch).await;
    }
}

/// Delivers `batch`, one request per owning node; forgets the subscribers of any that failed.
async fn send(shared: &Shared, batch: Vec<Queued>) {
    let view = shared.upstreams.view();
    let mut by_node: Vec<(Arc<crate::upstreams::Upstream>, Vec<Queued>)> = Vec::new();
    for q in batch {
        let owner = shared.upstreams.pick(
            &view,
            Some(&q.note.key),
            &mut crate::upstreams::Tried::default(),
        );
        let Some(owner) = owner else {
            shared.metrics.subscriber_notes_failed.inc();
            shared.relay.forget(&q.seen);
            continue;
        };
        match by_node.iter_mut().find(|(up, _)| up.addr == owner.addr) {
            Some((_, list)) => list.push(q),
            None => by_node.push((owner, vec![q])),
        }
    }
    for (up, queued) in by_node {
        let notes: Vec<&SubscriberNote> = queued.iter().map(|q| &q.note).collect();
        let sent = shared
            .post_internal(&up, PUSH_SUBSCRIBERS_PATH, &notes, SEND_TIMEOUT)
            .await;
        let ok = matches!(&sent, Ok(r) if r.status().is_success());
        if ok {
            shared.metrics.subscriber_notes.inc_by(queued.len() as u64);
        } else {
            tracing::debug!(node = %up.name, notes = queued.len(), "push subscriber notes not delivered; their next polls go to the node");
            shared
                .metrics
                .subscriber_notes_failed
                .inc_by(queued.len() as u64);
            for q in &queued {
                shared.relay.forget(&q.seen);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variant(agent: &str) -> Variant {
        Variant {
            clusters: String::new(),
            healthy_only: String::new(),
            env: String::new(),
            agent: agent.into(),
            subscribes: true,
        }
    }

    fn seen(client: &str) -> SeenKey {
        SeenKey::of(
            client,
            5_555,
            &ServiceKey::from_request(None, "svc", None).expect("key"),
            &variant("Nacos-Java-Client:v1.4.1"),
        )
    }

    #[test]
    fn seen_keys_tell_apart_every_part_and_agree_on_equal_ones() {
        let svc = ServiceKey::from_request(None, "svc", None).expect("key");
        let java = variant("Nacos-Java-Client:v1.4.1");
        let a = SeenKey::of("10.0.0.1", 5_555, &svc, &java);
        assert_eq!(
            a,
            SeenKey::of("10.0.0.1", 5_555, &svc.clone(), &java.clone())
        );
        let other_svc = ServiceKey::from_request(None, "svc2", None).expect("key");
        for b in [
            SeenKey::of("10.0.0.2", 5_555, &svc, &java),
            SeenKey::of("10.0.0.1", 5_556, &svc, &java),
            SeenKey::of("10.0.0.1", 5_555, &other_svc, &java),
            SeenKey::of("10.0.0.1", 5_555, &svc, &variant("Nacos-Python-Client")),
            // Field boundaries count: "a" + "bc" is not "ab" + "c".
            SeenKey::of(
                "10.0.0.1",
                5_555,
                &svc,
                &Variant {
                    clusters: "x".into(),
                    ..java.clone()
                },
            ),
        ] {
            assert_ne!(a, b);
        }
        let ab = Variant {
            clusters: "a".into(),
            env: "bc".into(),
            ..java.clone()
        };
        let a_b = Variant {
            clusters: "ab".into(),
            env: "c".into(),
            ..java
        };
        assert_ne!(
            SeenKey::of("c", 1, &svc, &ab),
            SeenKey::of("c", 1, &svc, &a_b)
        );
    }

    fn note() -> SubscriberNote {
        SubscriberNote {
            key: ServiceKey::from_request(None, "svc", None).expect("key"),
            clusters: String::new(),
            source: None,
            claimed: None,
            udp_port: 5_555,
            agent: "Nacos-Java-Client:v1.4.1".into(),
            app: None,
        }
    }

    #[test]
    fn p1_p2_a_new_subscriber_polls_its_node_then_is_noted_once_per_refresh() {
        let relay = Relay::new(Duration::from_secs(5));
        let t0 = Instant::now();
        let a = seen("10.0.0.1");
        assert_eq!(relay.contact(&a, t0), Contact::Poll, "first contact");
        assert_eq!(
            relay.contact(&a, t0 + Duration::from_secs(4)),
            Contact::None
        );
        assert_eq!(
            relay.contact(&a, t0 + Duration::from_secs(10)),
            Contact::Note
        );
        assert_eq!(
            relay.contact(&a, t0 + Duration::from_secs(12)),
            Contact::None,
            "the note counts as contact"
        );
        assert_eq!(
            relay.contact(&seen("10.0.0.2"), t0),
            Contact::Poll,
            "per subscriber"
        );
    }

    #[test]
    fn p3_a_note_that_cannot_be_queued_sends_the_next_poll_to_the_node() {
        let relay = Relay::new(Duration::from_secs(5));
        let t0 = Instant::now();
        let a = seen("10.0.0.1");
        relay.contact(&a, t0);
        // No receiver: the queue is closed, as when the relay task is gone.
        drop(relay.rx.lock().expect("lock").take());
        assert!(!relay.offer(note(), a));
        assert_eq!(
            relay.contact(&a, t0 + Duration::from_secs(1)),
            Contact::Poll
        );
        relay.forget(&a);
        assert_eq!(
            relay.contact(&a, t0 + Duration::from_secs(2)),
            Contact::Poll
        );
    }
}
