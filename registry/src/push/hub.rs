//! The push hub: one UDP socket, the subscriber table, and the task that drives pushes.
//!
//! [`PushHub::run`] is a single task multiplexing four things: debounced pushes of changed
//! services, the ack receive loop, retransmission/failure of unacknowledged packets, and the
//! periodic zombie sweep. All state lives behind one short-held mutex; rendering and socket
//! I/O happen outside it. Time comes from `tokio::time`, so paused-time tests drive it.
//!
//! Under overload the task takes read turns (rule G3 in `nacre_ring::turns`): a turn before
//! each render, and one for every [`DATAGRAMS_PER_TURN`] datagrams of a render already made
//! or of resends. While it waits for a turn it keeps reading acks, so a packet its client
//! acknowledged meanwhile is not resent or failed for want of a read. Everything else of the
//! task (other services' pushes, the sweep) waits with it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nacre_ring::ServiceKey;
use parking_lot::Mutex;
use tokio::net::UdpSocket;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::acks::{AckTracker, Due};
use super::debounce::Debouncer;
use super::packet::{decode_incoming, encode_push, Incoming, SeqGen};
use super::table::{SubscribeOutcome, SubscriberTable};
use super::{PushMetrics, PushSettings, PushState, Renderer, Subscriber};
use nacre_ring::turns::ReadTurns;

/// One change's push to the subscribers of one request shape: its `lastRefTime` and bytes.
type Datagram = (u64, Arc<[u8]>);

/// Largest datagram we read; acks are tiny.
const RECV_BUF: usize = 64 * 1024;

/// Largest datagram read while waiting for a turn: an ack is under 100 bytes, and anything
/// longer is no ack (cut short, it decodes as garbage and is ignored).
const ACK_BUF: usize = 1024;

/// Subscribers one read turn covers once their render is made (rule G3): a render costs about
/// what a list answer does, a subscriber's datagram one `sendto`, a fraction of it. So a
/// service with many subscribers does not take a turn per subscriber behind every waiting
/// read. (A subscriber whose address already got the datagram is charged too: it is rare, and
/// charging before knowing keeps the budget simple.)
pub const DATAGRAMS_PER_TURN: u32 = 8;

/// What the push task has left of its last read turn (rule G3).
#[derive(Debug, Default)]
struct TurnBudget {
    /// Datagrams the last turn still covers.
    left: u32,
}

impl TurnBudget {
    /// Accounts for the next datagram; true when a turn must be taken first: it needs a
    /// `render`, or the last turn's datagrams are used up.
    fn needs_turn(&mut self, render: bool) -> bool {
        let turn = render || self.left == 0;
        if turn {
            self.left = DATAGRAMS_PER_TURN;
        }
        self.left -= 1;
        turn
    }
}

/// The current instant on the tokio clock (identical to `std::time::Instant::now()` unless a
/// test paused time).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// An IPv4-mapped IPv6 address as plain IPv4, so acks match whatever family the socket uses.
fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

#[derive(Debug)]
struct Core {
    table: SubscriberTable,
    acks: AckTracker,
    debounce: Debouncer,
}

/// The UDP push service. Create with [`PushHub::bind`], drive with [`PushHub::run`].
#[derive(Debug)]
pub struct PushHub {
    socket: UdpSocket,
    local: SocketAddr,
    settings: PushSettings,
    metrics: PushMetrics,
    core: Mutex<Core>,
    wake: Notify,
    seq: SeqGen,
    total: AtomicU64,
    succeed: AtomicU64,
    failed: AtomicU64,
}

impl PushHub {
    /// Binds the push socket. Nothing is sent until [`PushHub::run`] is spawned.
    pub async fn bind(settings: PushSettings, metrics: PushMetrics) -> std::io::Result<Arc<Self>> {
        let socket = UdpSocket::bind(settings.bind).await?;
        let local = socket.local_addr()?;
        let core = Core {
            table: SubscriberTable::new(settings.max_subscribers, settings.subscriber_ttl),
            acks: AckTracker::new(
                settings.max_subscribers,
                settings.resend_after,
                settings.max_sends,
            ),
            debounce: Debouncer::new(settings.debounce),
        };
        metrics.subscribers.set(0);
        Ok(Arc::new(Self {
            socket,
            local,
            settings,
            metrics,
            core: Mutex::new(core),
            wake: Notify::new(),
            seq: SeqGen::from_wall_clock(),
            total: AtomicU64::new(0),
            succeed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }))
    }

    /// The address the push socket is bound to (pushes come from it; acks go to it).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Adds `sub` or refreshes it as of `now` (pass `std::time::Instant::now()`).
    ///
    /// Returns false if the table is full of live subscribers and `sub` was not stored.
    pub fn subscribe(&self, sub: Subscriber, now: Instant) -> bool {
        let mut core = self.core.lock();
        let outcome = core.table.subscribe(sub, now);
        self.metrics.subscribers.set(gauge(core.table.len()));
        drop(core);
        if outcome == SubscribeOutcome::Rejected {
            tracing::debug!("push subscriber table full; subscriber not stored");
        }
        outcome != SubscribeOutcome::Rejected
    }

    /// Schedules a debounced push of `key` to all its subscribers. No-op without subscribers.
    pub fn service_changed(&self, key: &ServiceKey) {
        let mut core = self.core.lock();
        if !core.table.has_key(key) {
            return;
        }
        let scheduled = core.debounce.schedule(key, now());
        drop(core);
        if scheduled {
            self.wake.notify_one();
        }
    }

    /// The live subscribers of `key` (for `GET /nacos/v1/ns/service/subscribers`).
    pub fn subscribers_of(&self, key: &ServiceKey) -> Vec<Subscriber> {
        self.core.lock().table.list(key, now())
    }

    /// Number of stored subscribers, all services together.
    pub fn subscriber_count(&self) -> usize {
        self.core.lock().table.len()
    }

    /// Push counters (for `GET /nacos/v1/ns/operator/push/state`).
    pub fn state(&self) -> PushState {
        PushState {
            succeed: self.succeed.load(Ordering::Relaxed),
            total: self.total.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }

    /// Runs the hub until `shutdown` fires: debounced pushes rendered with `render`, the ack
    /// receive loop, retransmissions and the zombie sweep. With `turns`, renders and datagrams
    /// take read turns (rule G3 in `nacre_ring::turns`; see the module doc), so beats go before
    /// pushes.
    pub async fn run(
        self: Arc<Self>,
        render: Renderer,
        turns: Option<Arc<ReadTurns>>,
        shutdown: CancellationToken,
    ) {
        let sweep_every = (self.settings.subscriber_ttl * 2).max(Duration::from_millis(10));
        let mut next_sweep = now() + sweep_every;
        let mut buf = vec![0u8; RECV_BUF];
        loop {
            let wake_at = {
                let core = self.core.lock();
                [core.debounce.next_deadline(), core.acks.next_deadline()]
                    .into_iter()
                    .flatten()
                    .fold(next_sweep, Instant::min)
            };
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok((n, from)) => self.on_datagram(buf.get(..n).unwrap_or_default(), from),
                    Err(e) => {
                        tracing::debug!(error = %e, "push socket receive error");
                        // Avoid a hot loop should the socket keep failing.
                        tokio::select! {
                            () = shutdown.cancelled() => break,
                            () = tokio::time::sleep(Duration::from_millis(10)) => {}
                        }
                    }
                },
                () = self.wake.notified() => {}
                () = tokio::time::sleep_until(tokio::time::Instant::from_std(wake_at)) => {}
            }

            let due = self.core.lock().debounce.take_due(now());
            for key in due {
                if shutdown.is_cancelled() {
                    return;
                }
                self.push_service(&key, &render, turns.as_deref(), &shutdown)
                    .await;
            }
            self.retransmit_due(turns.as_deref(), &shutdown).await;
            let t = now();
            if t >= next_sweep {
                let mut core = self.core.lock();
                let removed = core.table.sweep(t);
                self.metrics.subscribers.set(gauge(core.table.len()));
                drop(core);
                if removed > 0 {
                    tracing::debug!(removed, "push zombie subscribers swept");
                }
                next_sweep = t + sweep_every;
            }
        }
    }

    /// Handles one datagram from the socket: a matching `push-ack` completes its packet;
    /// everything else (other types, unknown or stale acks, garbage) is ignored.
    fn on_datagram(&self, bytes: &[u8], from: SocketAddr) {
        match decode_incoming(bytes) {
            Incoming::PushAck { last_ref_time } => {
                let matched = self.core.lock().acks.ack(canonical(from), last_ref_time);
                if matched {
                    self.succeed.fetch_add(1, Ordering::Relaxed);
                    self.metrics.acked.inc();
                } else {
                    tracing::trace!(%from, last_ref_time, "push ack matches nothing");
                }
            }
            Incoming::Other(kind) => tracing::trace!(%from, kind, "push datagram ignored"),
            Incoming::Garbage => tracing::trace!(%from, "garbage push datagram ignored"),
        }
    }

    /// `data`'s datagram under a new `lastRefTime`; `None` (logged) when it cannot be encoded.
    fn datagram(&self, data: &str) -> Option<Datagram> {
        let seq = self.seq.next_seq();
        match encode_push(data, seq) {
            Ok(b) => Some((seq, b.into())),
            Err(e) => {
                tracing::warn!(error = %e, "push packet encoding failed");
                None
            }
        }
    }

    /// Pushes the current render of `key` to each of its live subscribers (zombies dropped).
    ///
    /// A [`Datagram`] is made once per request shape.
    async fn push_service(
        &self,
        key: &ServiceKey,
        render: &Renderer,
        turns: Option<&ReadTurns>,
        shutdown: &CancellationToken,
    ) {
        let subs = {
            let mut core = self.core.lock();
            let subs = core.table.live_for_push(key, now());
            self.metrics.subscribers.set(gauge(core.table.len()));
            subs
        };
        // Subscribers that asked the same way get the same datagram: one render, one encoding
        // (and compression) and one `lastRefTime` per shape, acked by each subscriber for
        // itself (see `acks`), as Nacos pushes one service change.
        let mut made: HashMap<(&str, &str), Option<Datagram>> = HashMap::new();
        // Each datagram's first send to an address, and whether it went out.
        let mut sent: HashMap<(u64, SocketAddr), bool> = HashMap::new();
        let mut budget = TurnBudget::default();
        for sub in &subs {
            let shape = (sub.clusters.as_str(), sub.agent.as_str());
            let render_needed = !made.contains_key(&shape);
            if budget.needs_turn(render_needed) && !self.take_turn(turns, shutdown).await {
                return;
            }
            if shutdown.is_cancelled() {
                return;
            }
            let packet = made
                .entry(shape)
                .or_insert_with(|| render(sub).and_then(|data| self.datagram(&data)))
                .clone();
            let Some((seq, bytes)) = packet else {
                continue;
            };
            let target = canonical(sub.addr);
            // Several subscriptions of one address in one shape (apps sharing a UDP port) get
            // the datagram once: the same bytes again would tell the client nothing. Each
            // records it as its last packet only if it went out.
            let first_copy = match sent.get(&(seq, target)) {
                Some(false) => continue,
                Some(true) => false,
                None => {
                    self.total.fetch_add(1, Ordering::Relaxed);
                    let went = self.send(&bytes, target).await;
                    sent.insert((seq, target), went.is_ok());
                    if let Err(e) = went {
                        tracing::debug!(error = %e, %target, "push send failed");
                        self.count_failed();
                        continue;
                    }
                    true
                }
            };
            let mut core = self.core.lock();
            if let Some(prev) = core.table.set_last_seq(sub, seq) {
                core.acks.supersede(prev, target);
            }
            let evicted = first_copy
                .then(|| core.acks.track(seq, target, bytes, now()))
                .flatten();
            drop(core);
            if evicted.is_some() {
                self.count_failed();
            }
        }
    }

    /// Resends or gives up on packets whose ack deadline has passed.
    async fn retransmit_due(&self, turns: Option<&ReadTurns>, shutdown: &CancellationToken) {
        let due = self.core.lock().acks.due(now());
        let mut budget = TurnBudget::default();
        for d in due {
            match d {
                Due::Resend { seq, addr, bytes } => {
                    if budget.needs_turn(false) && !self.take_turn(turns, shutdown).await {
                        return;
                    }
                    tracing::debug!(%addr, seq, "push retransmit");
                    if let Err(e) = self.send(&bytes, addr).await {
                        // The entry stays; it fails at its next deadline.
                        tracing::debug!(error = %e, %addr, "push resend failed");
                    }
                }
                Due::Failed { seq, addr } => {
                    tracing::debug!(%addr, seq, "push not acknowledged; failed");
                    self.count_failed();
                }
            }
        }
    }

    /// Rule G3 for pushes: waits for a read turn, as a client's list would, reading acks
    /// meanwhile. False once `shutdown` fires.
    async fn take_turn(&self, turns: Option<&ReadTurns>, shutdown: &CancellationToken) -> bool {
        let Some(t) = turns else {
            return !shutdown.is_cancelled();
        };
        // One future for the whole wait: a new one would queue again at the back.
        let take = t.take(|| self.metrics.waited.inc());
        tokio::pin!(take);
        let mut buf = [0u8; ACK_BUF];
        // A socket that errors is left alone until the turn comes (the main loop backs off).
        let mut receiving = true;
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return false,
                () = &mut take => return true,
                r = self.socket.recv_from(&mut buf), if receiving => match r {
                    Ok((n, from)) => self.on_datagram(buf.get(..n).unwrap_or_default(), from),
                    Err(e) => {
                        tracing::debug!(error = %e, "push socket receive error");
                        receiving = false;
                    }
                },
            }
        }
    }

    async fn send(&self, bytes: &[u8], target: SocketAddr) -> std::io::Result<()> {
        // A dual-stack IPv6 socket reaches IPv4 clients through mapped addresses.
        let target = match (self.local, target) {
            (SocketAddr::V6(_), SocketAddr::V4(v4)) => {
                SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
            }
            _ => target,
        };
        self.socket.send_to(bytes, target).await?;
        self.metrics.sent.inc();
        Ok(())
    }

    fn count_failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.metrics.failed.inc();
    }
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::packet::maybe_gunzip;
    use std::sync::atomic::AtomicUsize;

    /// Generous: only reached on failure (and the paused-clock tests need > 10 s).
    const WAIT: Duration = Duration::from_secs(30);

    fn key(s: &str) -> ServiceKey {
        ServiceKey::new("public", "DEFAULT_GROUP", s)
    }

    fn subscriber(service: &str, addr: SocketAddr) -> Subscriber {
        Subscriber {
            key: key(service),
            clusters: String::new(),
            addr,
            agent: "Nacos-Java-Client:v1.4.1".into(),
            app: "unknown".into(),
        }
    }

    fn settings(resend_after: Duration) -> PushSettings {
        PushSettings {
            bind: ([127, 0, 0, 1], 0).into(),
            debounce: Duration::from_millis(20),
            resend_after,
            ..PushSettings::default()
        }
    }

    fn fixed_render(data: String) -> Renderer {
        Arc::new(move |_: &Subscriber| Some(data.clone()))
    }

    async fn start(
        settings: PushSettings,
        render: Renderer,
    ) -> (Arc<PushHub>, CancellationToken, tokio::task::JoinHandle<()>) {
        start_with_turns(settings, render, None).await
    }

    async fn start_with_turns(
        settings: PushSettings,
        render: Renderer,
        turns: Option<Arc<ReadTurns>>,
    ) -> (Arc<PushHub>, CancellationToken, tokio::task::JoinHandle<()>) {
        let metrics = PushMetrics::unregistered().expect("metrics");
        let hub = PushHub::bind(settings, metrics).await.expect("bind");
        let token = CancellationToken::new();
        let task = tokio::spawn(Arc::clone(&hub).run(render, turns, token.clone()));
        (hub, token, task)
    }

    #[tokio::test]
    async fn g3_a_push_waits_for_a_read_turn_once_a_crowded_round_is_used_up() {
        let open = Arc::new(AtomicUsize::new(3));
        let count = open.clone();
        let turns = ReadTurns::new(
            1,
            2,
            Box::new(move || count.load(Ordering::SeqCst)),
            Box::new(|| {}),
        )
        .expect("on");
        let (hub, client, token, task) = subscribed_with_turns(turns.clone()).await;
        // Three connections are a crowd of more than two: a client's read takes the round's
        // only turn, and no round task tops it up yet.
        assert!(turns.go_ahead());
        hub.service_changed(&key("orders"));
        wait_until(|| hub.metrics.waited.get() == 1).await;
        assert!(
            no_datagram_within(&client, Duration::from_millis(200)).await,
            "the push waits for a turn"
        );
        assert_eq!(hub.state().total, 0);
        // The next round serves it.
        let stop = CancellationToken::new();
        let rounds = tokio::spawn(turns.clone().run(stop.clone()));
        let (_, v, _) = recv_push(&client).await;
        assert_eq!(v["type"], "dom");
        // No crowd: the next push goes at once though no turn is left.
        while turns.go_ahead() {}
        open.store(2, Ordering::SeqCst);
        hub.service_changed(&key("orders"));
        recv_push(&client).await;
        assert_eq!(hub.metrics.waited.get(), 1, "no crowd, no wait");
        stop.cancel();
        let _ = rounds.await;
        token.cancel();
        let _ = task.await;
    }

    #[test]
    fn g3_a_turn_covers_a_render_or_several_datagrams() {
        let mut budget = TurnBudget::default();
        assert!(budget.needs_turn(false), "the first datagram takes a turn");
        for _ in 1..DATAGRAMS_PER_TURN {
            assert!(!budget.needs_turn(false), "covered by the turn taken");
        }
        assert!(budget.needs_turn(false), "used up: the next takes a turn");
        assert!(budget.needs_turn(true), "a render always takes one");
        assert!(!budget.needs_turn(false));
    }

    #[tokio::test]
    async fn g3_acks_are_read_while_a_push_waits_for_its_turn() {
        let turns = one_turn_a_round();
        let (hub, token, task) = start_with_turns(
            settings(Duration::from_secs(30)),
            fixed_render(r#"{"hosts":[]}"#.into()),
            Some(turns.clone()),
        )
        .await;
        // Twenty subscribers of one shape, each on its own socket, acking all.
        let mut ackers = Vec::new();
        for n in 0..20 {
            let client = UdpSocket::bind("127.0.0.1:0").await.expect("client");
            let sub = Subscriber {
                app: format!("app-{n}"),
                ..subscriber("orders", client.local_addr().expect("addr"))
            };
            assert!(hub.subscribe(sub, Instant::now()));
            ackers.push(tokio::spawn(async move {
                loop {
                    let (_, v, from) = recv_push(&client).await;
                    let ack = serde_json::json!({
                        "type": "push-ack",
                        "lastRefTime": v["lastRefTime"],
                        "data": "",
                    });
                    let _ = client.send_to(ack.to_string().as_bytes(), from).await;
                }
            }));
        }
        // No round task: the test hands out the turns. A client's read has this round's.
        assert!(turns.go_ahead());
        hub.service_changed(&key("orders"));
        wait_until(|| hub.metrics.waited.get() == 1).await;
        assert_eq!(hub.state().total, 0);
        // One turn: the render and the first datagrams it covers, then a wait for the next.
        turns.queue().add_permits(1);
        wait_until(|| hub.metrics.waited.get() == 2).await;
        let first = u64::from(DATAGRAMS_PER_TURN);
        assert_eq!(hub.state().total, first);
        // Their acks are read while the push waits.
        wait_until(|| hub.state().succeed == first).await;
        turns.queue().add_permits(2);
        let done = wait_state(&hub, |s| s.succeed == 20).await;
        assert_eq!((done.total, done.succeed, done.failed), (20, 20, 0));
        for acker in ackers {
            acker.abort();
        }
        token.cancel();
        let _ = task.await;
    }

    #[tokio::test]
    async fn g3_a_push_waiting_for_a_turn_stops_at_shutdown() {
        let turns = one_turn_a_round();
        let (hub, _client, token, task) = subscribed_with_turns(turns.clone()).await;
        assert!(turns.go_ahead());
        hub.service_changed(&key("orders"));
        wait_until(|| hub.metrics.waited.get() == 1).await;
        token.cancel();
        tokio::time::timeout(WAIT, task)
            .await
            .expect("the hub stops though its push had no turn")
            .expect("join");
        assert_eq!(hub.state().total, 0, "nothing was sent");
    }

    /// Turns of one a round, taken from the first connection on (one is open).
    fn one_turn_a_round() -> Arc<ReadTurns> {
        ReadTurns::new(1, 0, Box::new(|| 1), Box::new(|| {})).expect("on")
    }

    /// A hub taking `turns`, with one subscriber of `orders` on the returned socket.
    async fn subscribed_with_turns(
        turns: Arc<ReadTurns>,
    ) -> (
        Arc<PushHub>,
        UdpSocket,
        CancellationToken,
        tokio::task::JoinHandle<()>,
    ) {
        let (hub, token, task) = start_with_turns(
            settings(Duration::from_secs(30)),
            fixed_render(r#"{"hosts":[]}"#.into()),
            Some(turns),
        )
        .await;
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("client");
        assert!(hub.subscribe(
            subscriber("orders", client.local_addr().expect("addr")),
            Instant::now()
        ));
        (hub, client, token, task)
    }

    async fn wait_until(pred: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !pred() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "condition not met in time"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Receives one push datagram and decodes it: (raw bytes, packet JSON, source).
    async fn recv_push(client: &UdpSocket) -> (Vec<u8>, serde_json::Value, SocketAddr) {
        let mut buf = vec![0u8; 65536];
        let (n, from) = tokio::time::timeout(WAIT, client.recv_from(&mut buf))
            .await
            .expect("push datagram in time")
            .expect("recv");
        buf.truncate(n);
        let plain = maybe_gunzip(&buf).expect("gunzip");
        let v: serde_json::Value = serde_json::from_slice(&plain).expect("packet json");
        (buf, v, from)
    }

    async fn no_datagram_within(client: &UdpSocket, d: Duration) -> bool {
        let mut buf = vec![0u8; 65536];
        tokio::time::timeout(d, client.recv_from(&mut buf))
            .await
            .is_err()
    }

    /// Waits until `succeed` pushes are acked, then checks that `total` went out and none
    /// failed.
    async fn settles(hub: &PushHub, succeed: u64, total: u64) {
        let s = wait_state(hub, |s| s.succeed == succeed).await;
        assert_eq!(
            s,
            PushState {
                succeed,
                total,
                failed: 0
            }
        );
    }

    async fn wait_state(hub: &PushHub, pred: impl Fn(PushState) -> bool) -> PushState {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let s = hub.state();
            if pred(s) || tokio::time::Instant::now() >= deadline {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn one_render_per_request_shape_serves_every_subscriber_of_it() {
        let calls = Arc::new(AtomicUsize::new(0));
        let render: Renderer = {
            let calls = Arc::clone(&calls);
            Arc::new(move |s: &Subscriber| {
                calls.fetch_add(1, Ordering::SeqCst);
                Some(format!(r#"{{"hosts":[],"clusters":"{}"}}"#, s.clusters))
            })
        };
        let (hub, token, task) = start(settings(Duration::from_secs(30)), render).await;
        let mut clients = Vec::new();
        for clusters in ["", "", "", "east"] {
            let client = UdpSocket::bind("127.0.0.1:0").await.expect("client");
            let sub = Subscriber {
                clusters: clusters.into(),
                ..subscriber("orders", client.local_addr().expect("addr"))
            };
            assert!(hub.subscribe(sub, Instant::now()));
            clients.push((clusters, client));
        }
        hub.service_changed(&key("orders"));
        let mut seqs = Vec::new();
        for (clusters, client) in &clients {
            let (raw, v, from) = recv_push(client).await;
            let data: serde_json::Value =
                serde_json::from_str(v["data"].as_str().expect("data")).expect("json");
            assert_eq!(
                data["clusters"], *clusters,
                "each gets its own shape's render"
            );
            let seq = v["lastRefTime"].as_u64().expect("lastRefTime");
            seqs.push((raw, seq));
            let ack = format!(r#"{{"type":"push-ack","lastRefTime":{seq},"data":""}}"#);
            client.send_to(ack.as_bytes(), from).await.expect("ack");
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "four subscribers, two shapes: two renders"
        );
        // One datagram per shape, under one lastRefTime: the same bytes to each of its
        // subscribers, and another shape's under another.
        assert!(seqs[..3].iter().all(|s| *s == seqs[0]), "{seqs:?}");
        assert_ne!(seqs[3].1, seqs[0].1);
        // Each subscriber's ack counts for its own copy.
        settles(&hub, 4, 4).await;
        token.cancel();
        let _ = task.await;
    }

    #[tokio::test]
    async fn subscriptions_sharing_an_address_and_shape_get_one_datagram() {
        let (hub, token, task) = start(
            settings(Duration::from_secs(30)),
            fixed_render(r#"{"hosts":[]}"#.into()),
        )
        .await;
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("client");
        for n in 0..3 {
            let sub = Subscriber {
                app: format!("app-{n}"),
                ..subscriber("orders", client.local_addr().expect("addr"))
            };
            assert!(hub.subscribe(sub, Instant::now()));
        }
        hub.service_changed(&key("orders"));
        let (_, v, from) = recv_push(&client).await;
        assert!(no_datagram_within(&client, Duration::from_millis(200)).await);
        let ack = format!(
            r#"{{"type":"push-ack","lastRefTime":{},"data":""}}"#,
            v["lastRefTime"]
        );
        client.send_to(ack.as_bytes(), from).await.expect("ack");
        settles(&hub, 1, 1).await;
        token.cancel();
        let _ = task.await;
    }

    #[tokio::test]
    async fn push_is_received_and_ack_counts_as_succeed() {
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("client");
        let big = format!(
            r#"{{"hosts":[{}]}}"#,
            vec![r#"{"ip":"10.0.0.1"}"#; 80].join(",")
        );
        let small = r#"{"hosts":[],"cacheMillis":10000}"#.to_owned();
        let calls = Arc::new(AtomicUsize::new(0));
        let render: Renderer = {
            let (big, small, calls) = (big.clone(), small.clone(), Arc::clone(&calls));
            Arc::new(move |_: &Subscriber| {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                Some(if n == 0 { big.clone() } else { small.clone() })
            })
        };
        let (hub, token, task) = start(settings(Duration::from_secs(30)), render).await;
        let sub = subscriber("orders", client.local_addr().expect("addr"));
        assert!(hub.subscribe(sub.clone(), Instant::now()));
        assert_eq!(hub.subscribers_of(&key("orders")), vec![sub]);
        assert_eq!(hub.metrics.subscribers.get(), 1);

        // First push: large, so gzipped; ack with a string lastRefTime (Java).
        hub.service_changed(&key("orders"));
        let (raw, v, from) = recv_push(&client).await;
        assert_eq!(&raw[..2], &[0x1f, 0x8b]);
        assert_eq!(from, hub.local_addr());
        assert_eq!(v["type"], "dom");
        assert_eq!(v["data"].as_str(), Some(big.as_str()));
        let seq = v["lastRefTime"].as_u64().expect("numeric lastRefTime");
        assert!(seq < 1 << 53);
        let ack = format!(r#"{{"type":"push-ack","lastRefTime":"{seq}","data":""}}"#);
        client.send_to(ack.as_bytes(), from).await.expect("ack");
        settles(&hub, 1, 1).await;

        // Second push: small, plain JSON; ack with a numeric lastRefTime (Node).
        hub.service_changed(&key("orders"));
        let (raw, v, _) = recv_push(&client).await;
        assert_eq!(raw[0], b'{');
        assert_eq!(v["data"].as_str(), Some(small.as_str()));
        let seq2 = v["lastRefTime"].as_u64().expect("numeric lastRefTime");
        assert!(seq2 > seq);
        let ack = format!(r#"{{"type":"push-ack","lastRefTime":{seq2},"data":""}}"#);
        client.send_to(ack.as_bytes(), from).await.expect("ack");
        settles(&hub, 2, 2).await;
        assert_eq!(hub.metrics.sent.get(), 2);
        assert_eq!(hub.metrics.acked.get(), 2);

        token.cancel();
        tokio::time::timeout(WAIT, task)
            .await
            .expect("run returns")
            .expect("join");
    }

    #[tokio::test]
    async fn unacked_push_is_resent_once_then_failed() {
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("client");
        let resend = Duration::from_millis(150);
        let (hub, token, task) = start(settings(resend), fixed_render("{}".into())).await;
        hub.subscribe(
            subscriber("orders", client.local_addr().expect("addr")),
            Instant::now(),
        );
        hub.service_changed(&key("orders"));

        let (first, _, _) = recv_push(&client).await;
        let t1 = tokio::time::Instant::now();
        let (second, _, _) = recv_push(&client).await;
        // Identical datagram (same lastRefTime), after the resend delay.
        assert_eq!(first, second);
        assert!(t1.elapsed() >= resend - Duration::from_millis(20));

        let s = wait_state(&hub, |s| s.failed == 1).await;
        assert_eq!(
            s,
            PushState {
                succeed: 0,
                total: 1,
                failed: 1
            }
        );
        assert!(no_datagram_within(&client, resend * 3).await);
        assert_eq!(hub.metrics.sent.get(), 2);
        assert_eq!(hub.metrics.failed.get(), 1);

        // A late ack is ignored.
        let v: serde_json::Value = serde_json::from_slice(&first).expect("json");
        let ack = format!(
            r#"{{"type":"push-ack","lastRefTime":{}}}"#,
            v["lastRefTime"]
        );
        client
            .send_to(ack.as_bytes(), hub.local_addr())
            .await
            .expect("ack");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(hub.state().succeed, 0);

        token.cancel();
        tokio::time::timeout(WAIT, task)
            .await
            .expect("run returns")
            .expect("join");
    }

    #[tokio::test(start_paused = true)]
    async fn nacos_timings_with_paused_clock() {
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("client");
        let settings = PushSettings {
            bind: ([127, 0, 0, 1], 0).into(),
            debounce: Duration::from_millis(1000),
            ..PushSettings::default()
        };
        let (hub, token, task) = start(settings, fixed_render("{}".into())).await;
        let t0 = tokio::time::Instant::now();
        let sub = subscriber("orders", client.local_addr().expect("addr"));
        hub.subscribe(sub.clone(), now());
        // A first change after silence is pushed at once; two more soon after merge into one
        // push 1 s after the first of them (Nacos's trailing debounce).
        hub.service_changed(&key("orders"));
        let (first, _, _) = recv_push(&client).await;
        assert_eq!(t0.elapsed(), Duration::ZERO);
        tokio::time::sleep(Duration::from_millis(300)).await;
        hub.service_changed(&key("orders"));
        hub.service_changed(&key("orders"));
        let (second, _, _) = recv_push(&client).await;
        assert_ne!(first, second, "a new push");
        assert_eq!(t0.elapsed(), Duration::from_millis(1300));
        assert_eq!(
            hub.state(),
            PushState {
                succeed: 0,
                total: 2,
                failed: 0
            }
        );
        // Unacked: the first, superseded by the second, is not resent and fails at 10 s; the
        // second is resent once, 10 s after it was sent.
        let (resent, _, _) = recv_push(&client).await;
        assert_eq!(resent, second);
        assert_eq!(t0.elapsed(), Duration::from_millis(11_300));
        assert_eq!(hub.state().failed, 1);

        // The second fails 10 s after its resend, not before.
        tokio::time::sleep_until(t0 + Duration::from_millis(21_299)).await;
        assert_eq!(hub.state().failed, 1);
        tokio::time::sleep_until(t0 + Duration::from_millis(21_301)).await;
        assert_eq!(
            hub.state(),
            PushState {
                succeed: 0,
                total: 2,
                failed: 2
            }
        );
        assert!(no_datagram_within(&client, Duration::from_secs(30)).await);

        token.cancel();
        task.await.expect("join");
    }

    #[tokio::test(start_paused = true)]
    async fn zombies_are_not_pushed_and_are_swept() {
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("client");
        let (hub, token, task) =
            start(settings(Duration::from_secs(10)), fixed_render("{}".into())).await;
        let addr = client.local_addr().expect("addr");
        hub.subscribe(subscriber("a", addr), now());
        hub.subscribe(subscriber("b", addr), now());
        assert_eq!(hub.subscriber_count(), 2);

        tokio::time::sleep(Duration::from_secs(11)).await;
        // Stored but expired: not listed, and dropped instead of pushed.
        assert!(hub.subscribers_of(&key("a")).is_empty());
        hub.service_changed(&key("a"));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(hub.state().total, 0);
        assert_eq!(hub.subscriber_count(), 1);
        assert!(no_datagram_within(&client, Duration::from_millis(100)).await);

        // The periodic sweep (every 2 × TTL = 20 s) drops "b".
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert_eq!(hub.subscriber_count(), 0);
        assert_eq!(hub.metrics.subscribers.get(), 0);
        // No subscribers: a change schedules nothing.
        hub.service_changed(&key("b"));
        assert!(hub.core.lock().debounce.is_empty());

        token.cancel();
        task.await.expect("join");
    }

    #[tokio::test]
    async fn garbage_and_forged_acks_are_ignored() {
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("client");
        let other = UdpSocket::bind("127.0.0.1:0").await.expect("other");
        let (hub, token, task) =
            start(settings(Duration::from_secs(30)), fixed_render("{}".into())).await;
        let to = hub.local_addr();
        for g in [
            &b""[..],
            b"\x1f\x8b\x08garbage",
            b"{",
            b"[]",
            b"\xff\xff",
            br#"{"type":"dump"}"#,
        ] {
            client.send_to(g, to).await.expect("send garbage");
        }
        hub.subscribe(
            subscriber("orders", client.local_addr().expect("addr")),
            Instant::now(),
        );
        hub.service_changed(&key("orders"));
        let (_, v, _) = recv_push(&client).await;
        let seq = v["lastRefTime"].as_u64().expect("seq");

        // Right seq, wrong source; right source, wrong seq: both ignored.
        let forged = format!(r#"{{"type":"push-ack","lastRefTime":"{seq}"}}"#);
        other.send_to(forged.as_bytes(), to).await.expect("send");
        let wrong = format!(r#"{{"type":"push-ack","lastRefTime":"{}"}}"#, seq + 1);
        client.send_to(wrong.as_bytes(), to).await.expect("send");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            hub.state(),
            PushState {
                succeed: 0,
                total: 1,
                failed: 0
            }
        );

        client.send_to(forged.as_bytes(), to).await.expect("send");
        let s = wait_state(&hub, |s| s.succeed == 1).await;
        assert_eq!(s.succeed, 1);
        assert!(!task.is_finished());

        token.cancel();
        tokio::time::timeout(WAIT, task)
            .await
            .expect("run returns")
            .expect("join");
    }

    #[tokio::test]
    async fn gone_service_is_skipped_and_table_is_bounded() {
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("client");
        let s = PushSettings {
            max_subscribers: 1,
            ..settings(Duration::from_secs(30))
        };
        let render: Renderer = Arc::new(|_: &Subscriber| None);
        let (hub, token, task) = start(s, render).await;
        let addr = client.local_addr().expect("addr");
        assert!(hub.subscribe(subscriber("a", addr), Instant::now()));
        assert!(!hub.subscribe(subscriber("b", addr), Instant::now()));
        assert!(hub.subscribe(subscriber("a", addr), Instant::now()));
        assert_eq!(hub.metrics.subscribers.get(), 1);

        hub.service_changed(&key("a"));
        assert!(no_datagram_within(&client, Duration::from_millis(200)).await);
        assert_eq!(hub.state().total, 0);

        token.cancel();
        tokio::time::timeout(WAIT, task)
            .await
            .expect("run returns")
            .expect("join");
    }

    #[test]
    fn mapped_addresses_are_canonical() {
        let mapped: SocketAddr = "[::ffff:10.1.2.3]:53000".parse().expect("addr");
        let v4: SocketAddr = "10.1.2.3:53000".parse().expect("addr");
        assert_eq!(canonical(mapped), v4);
        assert_eq!(canonical(v4), v4);
        let v6: SocketAddr = "[2001:db8::1]:1".parse().expect("addr");
        assert_eq!(canonical(v6), v6);
    }

    #[test]
    fn metrics_register_once() {
        let registry = prometheus::Registry::new();
        let m = PushMetrics::new(&registry).expect("register");
        m.sent.inc();
        assert_eq!(registry.gather().len(), 5);
        assert!(PushMetrics::new(&registry).is_err());
    }
}
