//! UDP push to Nacos 1.x clients (reference §13; pitfalls 6–7).
//!
//! A list query carrying `udpPort>0` from a push-capable client [`PushHub::subscribe`]s it
//! (the HTTP layer decides push capability from the User-Agent). Whenever a service changes,
//! [`PushHub::service_changed`] schedules one debounced push; the [`PushHub::run`] task then
//! renders the list response for every live subscriber of that service, sends it as a `dom`
//! packet from the hub's single UDP socket, matches `push-ack`s, retransmits unacknowledged
//! packets and drops zombie subscribers. A push is a read the node starts itself: under
//! overload its renders and datagrams wait for read turns like a client's list (rule G3 in
//! `nacre_ring::turns`; [`hub::DATAGRAMS_PER_TURN`]), so beats go first. A deferred push loses
//! nothing: a change made while it waits schedules another push.
//!
//! The logic is split into pure, clock-injected parts ([`table`], [`acks`], [`debounce`],
//! [`packet`]) and the socket-driving [`hub`].

pub mod acks;
pub mod debounce;
pub mod hub;
pub mod packet;
pub mod table;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use nacre_ring::ServiceKey;
use prometheus::{IntCounter, IntGauge, Registry};
use serde::Serialize;

pub use hub::PushHub;

/// Tunables of the push hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushSettings {
    /// Address of the push socket (default `0.0.0.0:0`, an ephemeral port like Nacos).
    pub bind: SocketAddr,
    /// A subscriber not refreshed for this long is a zombie (Nacos `pushCacheMillis`, 10 s).
    /// Zombies are also swept every `2 × subscriber_ttl` (Nacos: every 20 s).
    pub subscriber_ttl: Duration,
    /// Delay between a service change and its push; changes meanwhile are merged
    /// (Nacos 1000 ms; default 50 ms).
    pub debounce: Duration,
    /// Resend an unacknowledged packet after this long (Nacos 10 s).
    pub resend_after: Duration,
    /// Sends per packet including the first (Nacos 2); 0 is treated as 1.
    pub max_sends: u32,
    /// Bound on stored subscribers; also bounds the packets awaiting an ack.
    pub max_subscribers: usize,
}

impl Default for PushSettings {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            subscriber_ttl: Duration::from_secs(10),
            debounce: Duration::from_millis(50),
            resend_after: Duration::from_secs(10),
            max_sends: 2,
            max_subscribers: 100_000,
        }
    }
}

/// One push client: a (service, clusters, `clientIP:udpPort`, agent, app) registration.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Subscriber {
    /// The subscribed service.
    pub key: ServiceKey,
    /// The `clusters` parameter of the query, verbatim.
    pub clusters: String,
    /// Where to push: `clientIP:udpPort` from the query.
    pub addr: SocketAddr,
    /// The client's User-Agent.
    pub agent: String,
    /// The `app` parameter (`unknown` when absent, as Nacos).
    pub app: String,
}

/// Prometheus instruments of the push hub.
#[derive(Clone, Debug)]
pub struct PushMetrics {
    /// Datagrams sent, retransmissions included.
    pub sent: IntCounter,
    /// Packets acknowledged by their client.
    pub acked: IntCounter,
    /// Packets given up on (no ack after all sends, send error, or evicted).
    pub failed: IntCounter,
    /// Subscribers currently stored.
    pub subscribers: IntGauge,
    /// Times the push task waited for a read turn (rule G3) before a render or datagrams.
    pub waited: IntCounter,
}

impl PushMetrics {
    /// Creates the instruments and registers them in `registry` as `nacre_push_sent_total`,
    /// `nacre_push_acked_total`, `nacre_push_failed_total`, `nacre_push_subscribers` and
    /// `nacre_push_turns_waited_total`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self::unregistered()?;
        registry.register(Box::new(m.sent.clone()))?;
        registry.register(Box::new(m.acked.clone()))?;
        registry.register(Box::new(m.failed.clone()))?;
        registry.register(Box::new(m.subscribers.clone()))?;
        registry.register(Box::new(m.waited.clone()))?;
        Ok(m)
    }

    /// Creates the instruments without registering them anywhere.
    pub fn unregistered() -> prometheus::Result<Self> {
        Ok(Self {
            sent: IntCounter::new("nacre_push_sent_total", "UDP push datagrams sent")?,
            acked: IntCounter::new("nacre_push_acked_total", "UDP push packets acknowledged")?,
            failed: IntCounter::new("nacre_push_failed_total", "UDP push packets failed")?,
            subscribers: IntGauge::new("nacre_push_subscribers", "UDP push subscribers")?,
            waited: IntCounter::new(
                "nacre_push_turns_waited_total",
                "Times UDP pushes waited for a read turn",
            )?,
        })
    }
}

/// Renders the `data` payload (the list-response JSON object, serialised) for one subscriber.
/// `None` means the service is gone: that subscriber is skipped. The render may depend only on
/// the subscriber's service, `clusters` and `agent`: one push round renders each distinct
/// (`clusters`, `agent`) once and sends it to every subscriber that shares it.
pub type Renderer = Arc<dyn Fn(&Subscriber) -> Option<String> + Send + Sync>;

/// Push counters for `GET /nacos/v1/ns/operator/push/state`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PushState {
    /// Packets acknowledged by their client.
    pub succeed: u64,
    /// Packets pushed (first sends; retransmissions are not counted again).
    pub total: u64,
    /// Packets given up on. `total - succeed - failed` are still awaiting an ack.
    pub failed: u64,
}

impl PushState {
    /// `succeed / total`, or 0 when nothing was pushed (as Nacos reports `ratio`).
    pub fn ratio(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.succeed as f64 / self.total as f64
        }
    }
}
