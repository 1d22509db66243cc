//! The registry nodes behind the gateway and the routing ring built from them.
//!
//! A node is in the ring while it answers probes and reports ready, under the name it gives
//! itself (its advertised address), which is the name the nodes' own rings use: the gateway
//! therefore picks the same owner the nodes agree on. A connect failure takes a node out of
//! rotation at once, until its next good probe; so do a fresh connection the node closes or
//! resets before answering (it is going away) and a 503 marked `x-nacre-not-ready` (a node
//! restarted under the same name answers before any probe has seen it). In those three cases
//! the request is replayed on the next node (`proxy`): every v1 naming write is idempotent.
//! *Tests:* `tests/gateway.rs` `a_node_answering_not_ready_is_skipped_and_the_request_replayed`,
//! `killing_a_node_under_load_keeps_clients_working`; `tests/rolling.rs`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nacre_ring::{Members, Ring, ServiceKey};
use parking_lot::RwLock;
use pingora::upstreams::peer::HttpPeer;
use prometheus::Histogram;

/// One registry node.
#[derive(Debug)]
pub struct Upstream {
    /// The node's own name for itself: its ring member name.
    pub name: String,
    /// Where the gateway connects.
    pub addr: SocketAddr,
    /// Built once: cloning it is all a request pays.
    pub peer: HttpPeer,
    /// Where its beat batches go, parsed once (`None` only if the address could not make one).
    pub beats_url: Option<reqwest::Url>,
    /// Where its write batches go, likewise.
    pub writes_url: Option<reqwest::Url>,
    usable: AtomicBool,
    feed_ok: AtomicBool,
    /// Its last probe said it answers beat batches.
    relays_beats: AtomicBool,
    /// ... and relayed instance writes in them.
    relays_writes: AtomicBool,
    /// Upstream latency of this node.
    pub latency: Histogram,
}

/// How the gateway connects to nodes.
#[derive(Debug, Clone, Copy)]
pub struct PeerTimeouts {
    /// Connect.
    pub connect: Duration,
    /// Each read of an answer.
    pub read: Duration,
}

impl Upstream {
    /// A node reachable at `addr` calling itself `name`.
    pub fn new(name: String, addr: SocketAddr, t: PeerTimeouts, latency: Histogram) -> Self {
        let mut peer = HttpPeer::new(addr, false, String::new());
        peer.options.connection_timeout = Some(t.connect);
        peer.options.read_timeout = Some(t.read);
        // No write timeout: requests are small (the read timeout bounds a stuck node), and
        // each armed timer costs on every request.
        // Nodes keep idle connections for a while; reuse them rather than reconnect.
        peer.options.idle_timeout = Some(Duration::from_secs(50));
        let url = |path: &str| reqwest::Url::parse(&format!("http://{addr}{path}")).ok();
        Self {
            name,
            addr,
            peer,
            beats_url: url(nacre_ring::wire::BEATS_PATH),
            writes_url: url(nacre_ring::wire::WRITES_PATH),
            usable: AtomicBool::new(true),
            feed_ok: AtomicBool::new(false),
            relays_beats: AtomicBool::new(false),
            relays_writes: AtomicBool::new(false),
            latency,
        }
    }

    /// Takes the node out of rotation until its next good probe.
    pub fn mark_unusable(&self) {
        self.usable.store(false, Ordering::Release);
    }

    /// Puts the node back in rotation (a good probe).
    pub fn mark_usable(&self) {
        self.usable.store(true, Ordering::Release);
    }

    /// Whether requests may go to the node.
    pub fn is_usable(&self) -> bool {
        self.usable.load(Ordering::Acquire)
    }

    /// Records whether the node's change feed is being followed.
    pub fn set_feed_ok(&self, ok: bool) -> bool {
        self.feed_ok.swap(ok, Ordering::AcqRel)
    }

    /// Records whether the node's last probe said it answers beat batches, and relayed
    /// instance writes in them.
    pub fn set_relays(&self, beats: bool, writes: bool) {
        self.relays_beats.store(beats, Ordering::Release);
        self.relays_writes.store(writes, Ordering::Release);
    }

    /// Records that the node does not take relayed writes after all (it answered their path
    /// 404), leaving what it said of beats as it is.
    pub fn refuse_writes(&self) {
        self.relays_writes.store(false, Ordering::Release);
    }

    /// Whether the node's last probe said it takes relayed writes.
    pub fn relays_writes(&self) -> bool {
        self.relays_writes.load(Ordering::Acquire)
    }

    /// Whether requests of kind `op` may be relayed to the node in batches.
    pub fn relays(&self, op: nacre_ring::wire::RelayedOp) -> bool {
        self.relays_beats() && (!op.is_write() || self.relays_writes())
    }

    /// Whether beats may be relayed to the node in batches (see [`crate::beats`]).
    pub fn relays_beats(&self) -> bool {
        self.relays_beats.load(Ordering::Acquire)
    }

    /// Whether the node's change feed is being followed.
    pub fn feed_ok(&self) -> bool {
        self.feed_ok.load(Ordering::Acquire)
    }
}

/// The nodes in rotation and their ring, replaced as a whole when the set changes.
#[derive(Debug, Default)]
pub struct View {
    ring: Option<Ring>,
    upstreams: Vec<Arc<Upstream>>,
    by_name: HashMap<String, usize>,
}

/// Nodes already tried by one request (by index in its view).
#[derive(Debug, Default, Clone, Copy)]
pub struct Tried(u64);

impl Tried {
    fn has(self, i: usize) -> bool {
        self.0 & (1u64 << (i % 64)) != 0
    }

    fn add(&mut self, i: usize) {
        self.0 |= 1u64 << (i % 64);
    }

    /// Whether any node was tried.
    pub fn any(self) -> bool {
        self.0 != 0
    }
}

impl View {
    /// A view of `upstreams` (their names must be distinct).
    pub fn new(mut upstreams: Vec<Arc<Upstream>>) -> Self {
        upstreams.sort_by(|a, b| a.name.cmp(&b.name));
        let by_name = upstreams
            .iter()
            .enumerate()
            .map(|(i, u)| (u.name.clone(), i))
            .collect();
        let ring = (!upstreams.is_empty())
            .then(|| Ring::new(&Members::new(upstreams.iter().map(|u| u.name.as_str()))));
        Self {
            ring,
            upstreams,
            by_name,
        }
    }

    /// Nodes in rotation.
    pub fn upstreams(&self) -> &[Arc<Upstream>] {
        &self.upstreams
    }

    /// Whether every node's change feed is followed: only then can a cached answer be trusted
    /// to be invalidated when its service changes.
    pub fn feeds_ok(&self) -> bool {
        !self.upstreams.is_empty() && self.upstreams.iter().all(|u| u.feed_ok())
    }

    /// The node for a request: the owner of `key` (then the next members in ring order), or
    /// any node round-robin; never one in `tried`. Usable nodes first, then the rest (a node
    /// taken out of rotation may be back before its probe says so).
    pub fn pick(
        &self,
        key: Option<&ServiceKey>,
        tried: &mut Tried,
        rr: &AtomicUsize,
    ) -> Option<Arc<Upstream>> {
        let ring = self.ring.as_ref()?;
        let idx = |name: &str| self.by_name.get(name).copied();
        let chosen = match key {
            Some(key) => {
                let fast = ring
                    .owner(key)
                    .and_then(idx)
                    .filter(|&i| !tried.has(i) && self.upstreams[i].is_usable());
                fast.or_else(|| {
                    let order: Vec<usize> =
                        ring.replicas(key).into_iter().filter_map(idx).collect();
                    self.first_untried(order.into_iter(), *tried)
                })
            }
            None => {
                let n = self.upstreams.len();
                let start = rr.fetch_add(1, Ordering::Relaxed);
                self.first_untried((0..n).map(|k| (start + k) % n), *tried)
            }
        }?;
        tried.add(chosen);
        Some(self.upstreams[chosen].clone())
    }

    fn first_untried(
        &self,
        order: impl Iterator<Item = usize> + Clone,
        tried: Tried,
    ) -> Option<usize> {
        let mut candidates = order.filter(|&i| !tried.has(i));
        let all: Vec<usize> = candidates.by_ref().collect();
        all.iter()
            .copied()
            .find(|&i| self.upstreams[i].is_usable())
            .or_else(|| all.first().copied())
    }
}

/// The current [`View`], shared by the proxy threads and replaced by the monitor.
#[derive(Debug, Default)]
pub struct Upstreams {
    view: RwLock<Arc<View>>,
    rr: AtomicUsize,
}

impl Upstreams {
    /// No nodes yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current view.
    pub fn view(&self) -> Arc<View> {
        self.view.read().clone()
    }

    /// Replaces the view.
    pub fn replace(&self, view: View) {
        *self.view.write() = Arc::new(view);
    }

    /// See [`View::pick`].
    pub fn pick(
        &self,
        view: &View,
        key: Option<&ServiceKey>,
        tried: &mut Tried,
    ) -> Option<Arc<Upstream>> {
        view.pick(key, tried, &self.rr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(name: &str, port: u16) -> Arc<Upstream> {
        let h = prometheus::Histogram::with_opts(prometheus::HistogramOpts::new("t", "t")).unwrap();
        Arc::new(Upstream::new(
            name.to_string(),
            SocketAddr::from(([127, 0, 0, 1], port)),
            PeerTimeouts {
                connect: Duration::from_millis(100),
                read: Duration::from_secs(1),
            },
            h,
        ))
    }

    fn three() -> View {
        View::new(vec![up("n1:1", 1), up("n2:2", 2), up("n3:3", 3)])
    }

    #[test]
    fn keyed_requests_go_to_the_ring_owner_then_in_ring_order() {
        let view = three();
        let ring = Ring::new(&Members::new(["n1:1", "n2:2", "n3:3"]));
        let rr = AtomicUsize::new(0);
        for i in 0..200 {
            let key = ServiceKey::new("public", "G", format!("s{i}"));
            let order = ring.replicas(&key);
            let mut tried = Tried::default();
            let first = view.pick(Some(&key), &mut tried, &rr).unwrap();
            assert_eq!(first.name, order[0]);
            let second = view.pick(Some(&key), &mut tried, &rr).unwrap();
            assert_eq!(second.name, order[1]);
            let third = view.pick(Some(&key), &mut tried, &rr).unwrap();
            assert_eq!(third.name, order[2]);
            assert!(view.pick(Some(&key), &mut tried, &rr).is_none());
        }
    }

    #[test]
    fn an_unusable_owner_is_skipped_but_still_tried_last() {
        let view = three();
        let ring = Ring::new(&Members::new(["n1:1", "n2:2", "n3:3"]));
        let key = ServiceKey::new("public", "G", "svc");
        let order = ring.replicas(&key);
        let owner = view
            .upstreams()
            .iter()
            .find(|u| u.name == order[0])
            .unwrap();
        owner.mark_unusable();
        let rr = AtomicUsize::new(0);
        let mut tried = Tried::default();
        assert_eq!(
            view.pick(Some(&key), &mut tried, &rr).unwrap().name,
            order[1]
        );
        assert_eq!(
            view.pick(Some(&key), &mut tried, &rr).unwrap().name,
            order[2]
        );
        assert_eq!(
            view.pick(Some(&key), &mut tried, &rr).unwrap().name,
            order[0]
        );
    }

    #[test]
    fn unkeyed_requests_rotate_over_every_node() {
        let view = three();
        let rr = AtomicUsize::new(0);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..3 {
            let mut tried = Tried::default();
            seen.insert(view.pick(None, &mut tried, &rr).unwrap().name.clone());
        }
        assert_eq!(seen.len(), 3);
    }

    #[test]
    fn an_empty_view_picks_nothing_and_trusts_no_feed() {
        let view = View::default();
        let rr = AtomicUsize::new(0);
        assert!(view.pick(None, &mut Tried::default(), &rr).is_none());
        assert!(!view.feeds_ok());
        let view = three();
        assert!(!view.feeds_ok(), "feeds start unfollowed");
        for u in view.upstreams() {
            u.set_feed_ok(true);
        }
        assert!(view.feeds_ok());
    }
}
