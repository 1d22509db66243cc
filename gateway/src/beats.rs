//! Client beats and instance writes relayed to their nodes in batches.
//!
//! Proxying a beat costs the gateway and the node a round trip each: a write, a read and a
//! thread wake-up on both sides, more than the node spends on the beat itself (measured: a
//! beat through `nacre up` cost ~75 µs of CPU against ~15 µs on a standalone node). Every
//! instance beats every 5 s, so a fleet's beats are most of its writes. The gateway therefore
//! hands a node the beats for it together:
//!
//! - **R1 (what is relayed).** A `PUT` beat, and an ephemeral register (`POST` instance) or
//!   deregister (`DELETE` instance), that the connection loop took whole (rule E2 of
//!   [`crate::edge`]) and that names its service, while `beat_linger_ms` > 0, to a node whose
//!   last probe said it answers batches (`PingReply::relays_beats`), and for a write, relayed
//!   writes too (`PingReply::relays_writes`). Any other request is handed to the proxy path
//!   unchanged (a rolling upgrade keeps proxying to older nodes; a persistent register goes
//!   through Raft and may take a leader election, too long to hold a batch for). Writes go to
//!   a path of their own (`nacre_ring::wire::WRITES_PATH`): should a node that predates them
//!   answer at an address the gateway took for a newer one, its 404 fails the batch without
//!   serving anything, the node is recorded as not taking writes, and its writes go to the
//!   proxy path. "Beat" below means any relayed request.
//! - **R2 (batching).** Per gateway thread and node, the first beat opens a batch and waits
//!   `beat_linger_ms`, or until [`MAX_BATCH`] beats have joined; every beat for that node
//!   arriving meanwhile joins it. Writes have batches of their own that wait for nothing but
//!   the writes the thread has already read: the first write opens one and lets the thread's
//!   other ready tasks run once (a client waits on its register, and a bulk registration with
//!   a few connections would be held to one write per linger each; measured: 100,000
//!   registers over 64 connections took 12.0 s with the linger, 4.8 s proxied). A batch then
//!   goes to the node in one internal request, and the next beat or write opens a new batch:
//!   batches do not wait for each other.
//! - **R3 (same answers).** The node serves each relayed beat as the same request on its
//!   public API (through its router, or straight to the handler where no middleware could act:
//!   rule B1 of the registry's `api::relay`), and each client gets exactly its beat's answer:
//!   status, headers and body. The gateway adds to each beat what it adds to a proxied request
//!   (the client's address, asserted with the cluster secret), and drops client-sent
//!   `x-nacre-*` headers; on a write, the owner-routed mark (rule V3 of the registry's
//!   `distro`: the client's reads of the service go to the node picked the same way). A
//!   write's service leaves the cache before its client hears the answer, as on the proxy
//!   path.
//! - **R4 (failures).** A batch that gets no answer, or not one answer per beat, takes the
//!   node out of rotation (until its next good probe), and each of its beats is tried on the
//!   next node in the ring's order; a beat the node answers with its not-ready 503 likewise.
//!   Beats and ephemeral registers and deregisters are idempotent (the same request leaves the
//!   same instance state), so one that reached a node whose answer was lost is safe to send
//!   again. A batch whose sender's task is gone before it sent (the gateway stopping) fails the
//!   same way: no beat waits for a sender that no longer exists. With no node left the client
//!   gets the proxy path's answer: 503 "no registry node is ready" when none is in the view,
//!   else 502 "no registry node answered". A batch waits for its slowest request, up to
//!   `read_timeout_ms`, and a timed-out batch replays all of its requests on the next node.
//!
//! A beat waits at most `beat_linger_ms` longer than proxied; every instance beats every 5 s
//! and expires after 15 s of silence, so a few milliseconds are nothing to it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use nacre_ring::wire::{RelayedAnswer, RelayedOp, RelayedRequest, TextPair, NOT_READY_HEADER};
use nacre_ring::ServiceKey;
use parking_lot::Mutex;
use serde_json::value::RawValue;
use tokio::sync::{oneshot, Notify};

use crate::upstreams::{Tried, Upstream, View};
use crate::Shared;

thread_local! {
    /// Each gateway thread's client for batches (pingora runs one runtime per thread).
    static CLIENT: reqwest::Client = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_default();
}

/// The most beats one batch carries (rule R2).
pub const MAX_BATCH: usize = 256;

/// Which batch a request joins: its gateway thread's, for its node, in its lane (rule R2).
type BatchKey = (ThreadId, SocketAddr, Lane);

/// Beats and writes are batched apart (rule R2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Lane {
    Beats,
    Writes,
}

impl Lane {
    fn of(op: RelayedOp) -> Self {
        if op.is_write() {
            Lane::Writes
        } else {
            Lane::Beats
        }
    }

    /// Where its batches go on `up` (`nacre_ring::wire::BEATS_PATH` or `WRITES_PATH`).
    fn url(self, up: &Upstream) -> Option<&reqwest::Url> {
        match self {
            Lane::Beats => up.beats_url.as_ref(),
            Lane::Writes => up.writes_url.as_ref(),
        }
    }

    /// Waits, once a batch is open, for what may still join it (rule R2).
    async fn gather(self, shared: &Shared, batch: &Batch) {
        match self {
            // The other tasks this thread has ready run before this one resumes.
            Lane::Writes => tokio::task::yield_now().await,
            Lane::Beats => {
                let linger = Duration::from_millis(shared.settings.beat_linger_ms);
                tokio::select! {
                    () = tokio::time::sleep(linger) => {}
                    () = batch.full.notified() => {}
                }
            }
        }
    }

    /// Its counters: batches sent, requests answered.
    fn counters(self, shared: &Shared) -> (&prometheus::IntCounter, &prometheus::IntCounter) {
        let m = &shared.metrics;
        match self {
            Lane::Beats => (&m.beat_batches, &m.beats_relayed),
            Lane::Writes => (&m.write_batches, &m.writes_relayed),
        }
    }
}

/// Batches being filled, per gateway thread, node, and beats or writes (rule R2).
#[derive(Debug, Default)]
pub struct RelayBatches {
    open: Mutex<HashMap<BatchKey, Arc<Batch>>>,
}

/// One batch being filled.
#[derive(Debug, Default)]
struct Batch {
    beats: Mutex<Vec<Pending>>,
    /// Told when the batch reached [`MAX_BATCH`]: its sender need not wait any longer.
    full: Notify,
}

/// What a batch brought a request in it (rules R1, R4).
type Outcome = Result<RelayedAnswer, Failed>;

/// Why a batch brought no answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failed {
    /// The node answered the writes path 404: it predates relayed writes, served none of the
    /// batch and stays in rotation; it is recorded as not taking writes (rule R1).
    NoWrites,
    /// No answer, or not one per request (rule R4).
    Batch,
}

/// A relayed request, written once when its client's request is read: a batch is then the
/// documents of its requests copied side by side, and a request tried on a second node
/// (rule R4) is not written again.
#[derive(Debug)]
pub struct Encoded {
    op: RelayedOp,
    doc: Box<RawValue>,
}

impl Encoded {
    /// `relayed`, written; `None` should it not serialize (it always does: strings only).
    pub fn of(relayed: &RelayedRequest<'_>) -> Option<Self> {
        Some(Self {
            op: relayed.op,
            doc: serde_json::value::to_raw_value(relayed).ok()?,
        })
    }

    /// What it is.
    pub fn op(&self) -> RelayedOp {
        self.op
    }
}

/// A beat in a batch, and where its answer goes.
#[derive(Debug)]
struct Pending {
    beat: Arc<Encoded>,
    answer: oneshot::Sender<Outcome>,
}

/// What became of a relayed beat.
#[derive(Debug)]
pub enum Relayed {
    /// The answer for the client.
    Answer(RelayedAnswer),
    /// Not relayed (rule R1): hand the request to the proxy path as it came.
    Proxy,
}

/// Where a beat for one service goes: the view it is routed in, and its node, picked once.
#[derive(Debug)]
pub struct Route {
    view: Arc<View>,
    tried: Tried,
    /// The owner, or `None` when the view has no node at all.
    first: Option<Arc<Upstream>>,
}

/// Routes a request of kind `op` for `key` (rule R1): `None` when its node does not take it in
/// batches, so it goes to the proxy path as it came.
pub fn route(shared: &Shared, key: &ServiceKey, op: RelayedOp) -> Option<Route> {
    let view = shared.upstreams.view();
    let mut tried = Tried::default();
    let first = shared.upstreams.pick(&view, Some(key), &mut tried);
    if first.as_ref().is_some_and(|up| !up.relays(op)) {
        return None;
    }
    Some(Route { view, tried, first })
}

/// Relays `beat`, for the service `key`, along `route` (rules R2–R4).
pub async fn relay(shared: &Shared, key: &ServiceKey, route: Route, beat: Encoded) -> Relayed {
    let Route {
        view,
        mut tried,
        first,
    } = route;
    let beat = Arc::new(beat);
    let mut next = first;
    let mut any = false;
    while let Some(up) = next {
        if !up.relays(beat.op) {
            // A node tried next that does not take batches (a rolling upgrade): the proxy
            // path replays the beat, which is safe (R4).
            tracing::debug!(upstream = %up.name, "beat falls back to the proxy path");
            return Relayed::Proxy;
        }
        if any {
            shared.metrics.retries.inc();
        }
        any = true;
        match shared.relay_batches.join(shared, &up, beat.clone()).await {
            Ok(answer) if !not_ready(&answer) => return Relayed::Answer(answer),
            // The node turned out not to take relayed writes: none was served (R1, R4).
            Err(Failed::NoWrites) => return Relayed::Proxy,
            // Rule R4: out of rotation, and the beat goes to the next node.
            Ok(_) | Err(Failed::Batch) => up.mark_unusable(),
        }
        next = shared.upstreams.pick(&view, Some(key), &mut tried);
    }
    Relayed::Answer(if view.upstreams().is_empty() {
        plain(503, "no registry node is ready")
    } else {
        plain(502, "no registry node answered")
    })
}

/// The node's not-ready 503 (see `nacre_ring::wire::NOT_READY_HEADER`).
fn not_ready(answer: &RelayedAnswer) -> bool {
    answer.status == 503
        && answer
            .headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case(NOT_READY_HEADER))
}

/// The gateway's own plain-text answer.
fn plain(status: u16, body: &str) -> RelayedAnswer {
    RelayedAnswer {
        status,
        headers: vec![("content-type".to_string(), crate::proxy::TEXT.to_string())],
        body: body.to_string(),
    }
}

impl RelayBatches {
    /// Adds `beat` to the batch open for `up` on this thread, opening and later sending it
    /// when there is none (rule R2); the node's answer, `None` when the batch failed.
    async fn join(&self, shared: &Shared, up: &Arc<Upstream>, beat: Arc<Encoded>) -> Outcome {
        let (tx, rx) = oneshot::channel();
        let lane = Lane::of(beat.op);
        let key = (std::thread::current().id(), up.addr, lane);
        let pending = Pending { beat, answer: tx };
        let lead = {
            let mut open = self.open.lock();
            match open.get(&key) {
                Some(batch) => {
                    let mut beats = batch.beats.lock();
                    beats.push(pending);
                    if beats.len() >= MAX_BATCH {
                        drop(beats);
                        if let Some(batch) = open.remove(&key) {
                            batch.full.notify_one();
                        }
                    }
                    None
                }
                None => {
                    let batch = Arc::new(Batch::default());
                    batch.beats.lock().push(pending);
                    open.insert(key, batch.clone());
                    Some(batch)
                }
            }
        };
        if let Some(batch) = lead {
            let lead = Lead {
                batches: self,
                key,
                batch,
            };
            lane.gather(shared, &lead.batch).await;
            send(shared, up, lead.close(), lane).await;
        }
        // A sender dropped without answering is a failed batch too.
        rx.await.unwrap_or(Err(Failed::Batch))
    }
}

/// The batch a beat opened, until its sender takes it. Should the sender's task be dropped
/// first (the gateway stopping), dropping this fails the beats in it (rule R4) rather than
/// leaving them, and every beat joining after them, waiting for a sender that is gone.
struct Lead<'a> {
    batches: &'a RelayBatches,
    key: BatchKey,
    batch: Arc<Batch>,
}

impl Lead<'_> {
    /// Closes the batch to new beats and takes the ones in it.
    fn close(&self) -> Vec<Pending> {
        {
            let mut open = self.batches.open.lock();
            if open
                .get(&self.key)
                .is_some_and(|b| Arc::ptr_eq(b, &self.batch))
            {
                open.remove(&self.key);
            }
        }
        std::mem::take(&mut *self.batch.beats.lock())
    }
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        for pending in self.close() {
            // Its client may be gone as well.
            let _ = pending.answer.send(Err(Failed::Batch));
        }
    }
}

/// Sends one batch of `lane` and hands each request its answer (rules R2–R4).
async fn send(shared: &Shared, up: &Upstream, beats: Vec<Pending>, lane: Lane) {
    let started = Instant::now();
    let answers = post_batch(shared, up, &beats, lane).await;
    up.latency.observe(started.elapsed().as_secs_f64());
    let (batches, relayed) = lane.counters(shared);
    batches.inc();
    match answers {
        Ok(answers) => {
            relayed.inc_by(beats.len() as u64);
            for (pending, answer) in beats.into_iter().zip(answers) {
                // A client that went away no longer waits for its answer.
                let _ = pending.answer.send(Ok(answer));
            }
        }
        Err(failed) => {
            // A node without the writes path served nothing and stays in: not a failure.
            if failed == Failed::Batch {
                shared.metrics.beat_batches_failed.inc();
            }
            for pending in beats {
                let _ = pending.answer.send(Err(failed));
            }
        }
    }
}

/// Posts `beats` to `up` and reads one answer per request.
async fn post_batch(
    shared: &Shared,
    up: &Upstream,
    beats: &[Pending],
    lane: Lane,
) -> Result<Vec<RelayedAnswer>, Failed> {
    let body: Vec<&RawValue> = beats.iter().map(|p| p.beat.doc.as_ref()).collect();
    let timeout = Duration::from_millis(shared.settings.read_timeout_ms);
    // This thread's own client: a connection made by another thread's runtime would be driven
    // there, and every batch would wake that thread twice.
    let client = CLIENT.with(reqwest::Client::clone);
    let url = lane.url(up).cloned().ok_or(Failed::Batch)?;
    let posted = shared.post_internal_to(&client, url, &body, timeout);
    match posted.await {
        Ok(resp) if resp.status().is_success() => resp
            .json::<Vec<RelayedAnswer>>()
            .await
            .ok()
            .filter(|a| a.len() == beats.len())
            .ok_or(Failed::Batch),
        Ok(resp) if lane == Lane::Writes && resp.status() == reqwest::StatusCode::NOT_FOUND => {
            // A node older than relayed writes answers at this address again.
            tracing::info!(upstream = %up.name, "node does not take relayed writes");
            up.refuse_writes();
            Err(Failed::NoWrites)
        }
        Ok(resp) => {
            tracing::debug!(upstream = %up.name, status = %resp.status(), "batch refused");
            Err(Failed::Batch)
        }
        Err(e) => {
            tracing::debug!(upstream = %up.name, error = %e, "batch failed");
            Err(Failed::Batch)
        }
    }
}

/// The headers a relayed request of kind `op` carries: the client's own, less the
/// per-connection ones and any `x-nacre-*` header a client sent, plus what the gateway adds for
/// `client` (rule R3).
pub fn relayed_headers<'a>(
    client: impl Iterator<Item = (&'a str, &'a str)>,
    source: Option<IpAddr>,
    secret: Option<&str>,
    op: RelayedOp,
) -> Vec<TextPair<'a>> {
    let mut out: Vec<TextPair<'a>> = client
        .filter(|(name, _)| !crate::route::not_relayed(name))
        .map(|(n, v)| (n.into(), v.into()))
        .collect();
    if let Some(ip) = source {
        out.extend(
            crate::route::client_headers(ip, secret, op.is_write())
                .into_iter()
                .map(|(n, v)| (n.into(), v.into())),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use nacre_ring::wire::OWNER_ROUTED_HEADER;

    use crate::testing::shared;

    /// A loopback port nothing listens on.
    fn closed_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }

    fn request(op: RelayedOp) -> Encoded {
        Encoded::of(&RelayedRequest {
            op,
            query: "serviceName=s&ip=10.0.0.1&port=80".into(),
            headers: Vec::new(),
            body: "".into(),
        })
        .expect("written")
    }

    fn beat() -> Encoded {
        request(RelayedOp::Beat)
    }

    fn key() -> ServiceKey {
        ServiceKey::new("public", "DEFAULT_GROUP", "s")
    }

    #[tokio::test]
    async fn r1_a_node_that_does_not_answer_batches_gets_its_beats_proxied() {
        let s = shared(&[(closed_port(), false)]);
        assert!(route(&s, &key(), RelayedOp::Beat).is_none());
        assert_eq!(s.metrics.beat_batches.get(), 0, "nothing was sent");
    }

    #[tokio::test]
    async fn r4_a_failed_batch_takes_its_node_out_and_the_beat_tries_the_next() {
        let (a, b) = (closed_port(), closed_port());
        let s = shared(&[(a, true), (b, true)]);
        let route = route(&s, &key(), RelayedOp::Beat).expect("both nodes take batches");
        let Relayed::Answer(answer) = relay(&s, &key(), route, beat()).await else {
            panic!("relayed nodes never hand a beat back to the proxy path");
        };
        assert_eq!(answer.status, 502, "{answer:?}");
        assert_eq!(answer.body, "no registry node answered");
        let view = s.upstreams.view();
        assert!(view.upstreams().iter().all(|u| !u.is_usable()), "both out");
        assert_eq!(s.metrics.beat_batches_failed.get(), 2, "one batch per node");
        assert_eq!(s.metrics.retries.get(), 1);
    }

    #[tokio::test]
    async fn r4_beats_left_by_a_sender_that_is_gone_fail_instead_of_waiting() {
        let settings = nacre_config::GatewaySettings {
            beat_linger_ms: 1_000,
            ..crate::testing::settings()
        };
        let s = Arc::new(crate::testing::shared_with(
            settings,
            &[(closed_port(), true)],
        ));
        let up = s.upstreams.view().upstreams()[0].clone();
        let lead = {
            let (s, up) = (s.clone(), up.clone());
            tokio::spawn(async move { s.relay_batches.join(&s, &up, Arc::new(beat())).await })
        };
        // The follower joins the open batch on this thread: current-thread runtime.
        tokio::task::yield_now().await;
        let follower = {
            let (s, up) = (s.clone(), up.clone());
            tokio::spawn(async move { s.relay_batches.join(&s, &up, Arc::new(beat())).await })
        };
        tokio::task::yield_now().await;
        lead.abort();
        let answer = tokio::time::timeout(Duration::from_millis(500), follower)
            .await
            .expect("the follower is answered, not left waiting")
            .unwrap();
        assert_eq!(
            answer.err(),
            Some(Failed::Batch),
            "its batch failed (rule R4)"
        );
        assert!(s.relay_batches.open.lock().is_empty(), "nothing left open");
    }

    #[tokio::test]
    async fn r4_with_no_node_at_all_the_client_hears_none_is_ready() {
        let s = shared(&[]);
        let route = route(&s, &key(), RelayedOp::Beat).expect("no node: the relay answers");
        let Relayed::Answer(answer) = relay(&s, &key(), route, beat()).await else {
            panic!("no node, no proxying");
        };
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (503, "no registry node is ready")
        );
    }

    #[tokio::test]
    async fn r1_writes_go_in_batches_only_to_a_node_that_says_it_takes_them() {
        let s = shared(&[(closed_port(), true)]);
        let up = s.upstreams.view().upstreams()[0].clone();
        up.set_relays(true, false);
        assert!(route(&s, &key(), RelayedOp::Beat).is_some());
        for op in [RelayedOp::Register, RelayedOp::Deregister] {
            assert!(route(&s, &key(), op).is_none(), "{op:?} is proxied");
        }
        up.set_relays(true, true);
        assert!(route(&s, &key(), RelayedOp::Register).is_some());
    }

    /// A loopback port whose server answers every request 404, as a node older than relayed
    /// writes answers their path.
    async fn answers_404() -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while matches!(conn.read(&mut buf).await, Ok(n) if n > 0) {
                        let reply = "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
                        if conn.write_all(reply.as_bytes()).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn r1_a_node_without_the_writes_path_gets_its_writes_proxied_and_stays_in() {
        let s = shared(&[(answers_404().await, true)]);
        let up = s.upstreams.view().upstreams()[0].clone();
        let write = request(RelayedOp::Register);
        let route = route(&s, &key(), RelayedOp::Register).expect("taken for a newer node");
        let got = relay(&s, &key(), route, write).await;
        assert!(matches!(got, Relayed::Proxy), "{got:?}");
        assert!(
            !up.relays(RelayedOp::Register),
            "recorded: no relayed writes"
        );
        assert!(up.relays(RelayedOp::Beat), "beats still relayed");
        assert!(
            up.is_usable(),
            "nothing failed on the node: it stays in rotation"
        );
        assert_eq!(s.metrics.retries.get(), 0);
        assert_eq!(
            s.metrics.beat_batches_failed.get(),
            0,
            "not counted as failed"
        );
        assert_eq!(s.metrics.write_batches.get(), 1);
    }

    #[test]
    fn r3_a_write_carries_the_owner_routed_mark_and_a_beat_does_not() {
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        let marked = |op, secret| {
            relayed_headers(std::iter::empty(), Some(ip), secret, op)
                .iter()
                .any(|(n, v)| n == OWNER_ROUTED_HEADER && v == "1")
        };
        assert!(marked(RelayedOp::Register, Some("0123456789abcdef")));
        assert!(marked(RelayedOp::Deregister, Some("0123456789abcdef")));
        assert!(!marked(RelayedOp::Beat, Some("0123456789abcdef")));
        assert!(
            !marked(RelayedOp::Register, None),
            "without a secret a node would not believe it"
        );
    }

    #[test]
    fn r3_the_node_sees_the_client_headers_less_connection_ones_plus_the_asserted_address() {
        let client = [
            ("user-agent", "Nacos-Java-Client:v1.4.2"),
            ("connection", "keep-alive"),
            ("content-length", "0"),
            ("x-nacre-client-addr", "6.6.6.6"),
            ("X-Forwarded-For", "6.6.6.6"),
        ];
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        let got = relayed_headers(
            client.into_iter(),
            Some(ip),
            Some("0123456789abcdef"),
            RelayedOp::Beat,
        );
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_ref()).collect();
        assert_eq!(
            names,
            [
                "user-agent",
                nacre_ring::wire::CLIENT_ADDR_HEADER,
                nacre_ring::wire::ASSERTED_BY_HEADER,
                "x-forwarded-for"
            ]
        );
        assert!(got.iter().all(|(n, v)| n == "user-agent"
            || n == nacre_ring::wire::ASSERTED_BY_HEADER
            || v == "10.1.2.3"));
    }
}
