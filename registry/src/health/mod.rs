//! Server-side health checks of persistent instances.
//!
//! Persistent instances send no beats, so the node probes them as Nacos does: per cluster a
//! `TCP` connect (default), an `HTTP` GET expecting a status code, or `NONE` (health only set by
//! hand). An instance flips only after [`CHECK_TIMES`] consecutive opposite results, so one lost
//! packet does not flap it. Results live in memory, not in Raft: health is a fact about now, and
//! replicating every flip through the log would turn probe noise into disk writes.
//!
//! In a cluster only the owner of a service probes its instances (N nodes probing would put N
//! times the load on every instance and let nodes disagree); after each round it sends the
//! judged health of its services to every live peer ([`SYNC_PATH`]), which take it as is.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, StreamExt};
use nacre_ring::ServiceKey;
use parking_lot::RwLock;
use tokio_util::sync::CancellationToken;

use crate::naming::model::{ClusterMeta, Instance, InstanceKey};
use crate::node::Node;

/// Consecutive opposite results needed to flip an instance (Nacos `checkTimes`).
pub const CHECK_TIMES: u8 = 3;
/// Probes in flight at once, so a large fleet cannot exhaust sockets.
const MAX_CONCURRENT_PROBES: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct State {
    healthy: bool,
    streak: u8,
}

/// Probe results per persistent instance, grouped by service so that a list query touches
/// only its own service's entries.
#[derive(Debug, Default)]
pub struct HealthOverlay {
    states: RwLock<HashMap<ServiceKey, HashMap<InstanceKey, State>>>,
}

/// Route on which peers receive an owner's health results.
pub const SYNC_PATH: &str = "/nacre/internal/health/sync";

/// One judged health, as an owner shares it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HealthResult {
    /// Service.
    pub key: ServiceKey,
    /// Instance.
    pub id: InstanceKey,
    /// Judged health.
    pub healthy: bool,
}

/// The instances each service still has probed, for [`HealthOverlay::retain`].
pub type LiveTargets = HashMap<ServiceKey, HashSet<InstanceKey>>;

impl HealthOverlay {
    /// An empty overlay (every instance keeps its stored flag until probed).
    pub fn new() -> Self {
        Self::default()
    }

    /// Overwrites the stored health of `instances` of `key` with probe results, where any.
    pub fn apply(&self, key: &ServiceKey, instances: &mut [Instance]) {
        let states = self.states.read();
        let Some(probed) = states.get(key) else {
            return;
        };
        for inst in instances {
            if let Some(st) = probed.get(&inst.key()) {
                inst.healthy = st.healthy;
            }
        }
    }

    /// Records one probe result; returns the new health when the instance flipped.
    pub fn record(
        &self,
        key: &ServiceKey,
        id: &InstanceKey,
        stored: bool,
        ok: bool,
    ) -> Option<bool> {
        let mut map = self.states.write();
        let st = map
            .entry(key.clone())
            .or_default()
            .entry(id.clone())
            .or_insert(State {
                healthy: stored,
                streak: 0,
            });
        if ok == st.healthy {
            st.streak = 0;
            return None;
        }
        st.streak += 1;
        if st.streak >= CHECK_TIMES {
            st.healthy = ok;
            st.streak = 0;
            return Some(ok);
        }
        None
    }

    /// Takes a health judged by the service's owner; true when it changed what lists show.
    pub fn set(&self, key: &ServiceKey, id: &InstanceKey, healthy: bool) -> bool {
        let mut map = self.states.write();
        let st = map.entry(key.clone()).or_default().entry(id.clone());
        match st {
            std::collections::hash_map::Entry::Occupied(mut o) => {
                let changed = o.get().healthy != healthy;
                *o.get_mut() = State { healthy, streak: 0 };
                changed
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(State { healthy, streak: 0 });
                true
            }
        }
    }

    /// The judged health of every probed instance of the services selected by `pred`.
    pub fn results(&self, pred: impl Fn(&ServiceKey) -> bool) -> Vec<HealthResult> {
        let map = self.states.read();
        map.iter()
            .filter(|(k, _)| pred(k))
            .flat_map(|(k, probed)| {
                probed.iter().map(move |(id, st)| HealthResult {
                    key: k.clone(),
                    id: id.clone(),
                    healthy: st.healthy,
                })
            })
            .collect()
    }

    /// Drops entries for instances that no longer exist or are no longer probed.
    pub fn retain(&self, live: &LiveTargets) {
        self.states.write().retain(|key, probed| {
            let Some(ids) = live.get(key) else {
                return false;
            };
            probed.retain(|id, _| ids.contains(id));
            !probed.is_empty()
        });
    }
}

/// One probe to run.
#[derive(Debug, Clone)]
struct Target {
    key: ServiceKey,
    id: InstanceKey,
    stored: bool,
    host: String,
    port: u16,
    check: Check,
}

#[derive(Debug, Clone)]
enum Check {
    Tcp,
    Http { path: String, expected: u16 },
}

fn check_of(cluster: &ClusterMeta) -> Option<Check> {
    let hc = &cluster.health_checker;
    match hc.kind.to_ascii_uppercase().as_str() {
        "TCP" => Some(Check::Tcp),
        "HTTP" => {
            let path = hc.path.clone().unwrap_or_else(|| "/".to_string());
            // Validated on the way in; a path stored before that rule is not sent at all.
            if crate::naming::validate::checker_path(&path).is_err() {
                return None;
            }
            Some(Check::Http {
                path,
                expected: hc.expected_response_code.unwrap_or(200),
            })
        }
        // MYSQL needs credentials and a driver; NONE means manual. Neither is probed.
        _ => None,
    }
}

fn targets(node: &Node) -> Vec<Target> {
    node.persistent().read(|st| {
        let mut out = Vec::new();
        for (key, svc) in st.services() {
            for inst in &svc.instances {
                let cluster = svc
                    .meta
                    .clusters
                    .get(inst.cluster.as_str())
                    .cloned()
                    .unwrap_or_default();
                let Some(check) = check_of(&cluster) else {
                    continue;
                };
                let port = if cluster.use_instance_port {
                    inst.port
                } else {
                    cluster.check_port
                };
                out.push(Target {
                    key: key.clone(),
                    id: inst.key(),
                    stored: inst.healthy,
                    host: inst.ip.to_string(),
                    port,
                    check,
                });
            }
        }
        out
    })
}

async fn probe(t: &Target, timeout: Duration) -> bool {
    let connect = tokio::time::timeout(
        timeout,
        tokio::net::TcpStream::connect((t.host.as_str(), t.port)),
    );
    let Ok(Ok(mut stream)) = connect.await else {
        return false;
    };
    match &t.check {
        Check::Tcp => true,
        Check::Http { path, expected } => {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let req = format!(
                "GET {path} HTTP/1.0\r\nHost: {}:{}\r\nUser-Agent: Nacos-Server:nacre\r\nConnection: close\r\n\r\n",
                t.host, t.port
            );
            let exchange = async {
                stream.write_all(req.as_bytes()).await.ok()?;
                let mut head = vec![0u8; 64];
                let n = stream.read(&mut head).await.ok()?;
                let line = std::str::from_utf8(&head[..n]).ok()?;
                line.split_whitespace().nth(1)?.parse::<u16>().ok()
            };
            matches!(tokio::time::timeout(timeout, exchange).await, Ok(Some(code)) if code == *expected)
        }
    }
}

/// Probes every persistent instance each `interval` until `stop` fires.
pub async fn run(node: Arc<Node>, interval: Duration, timeout: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                tracing::debug!("health checker stopped");
                return;
            }
            _ = tick.tick() => {}
        }
        let all = targets(&node);
        let mut live = LiveTargets::new();
        for t in &all {
            live.entry(t.key.clone()).or_default().insert(t.id.clone());
        }
        node.health_overlay().retain(&live);
        let membership = node.membership();
        let owned: Vec<Target> = all
            .into_iter()
            .filter(|t| membership.is_owner(&t.key))
            .collect();
        node.metrics().health_probes.inc_by(owned.len() as u64);
        let results: Vec<(Target, bool)> = stream::iter(owned)
            .map(|t| async move {
                let ok = probe(&t, timeout).await;
                (t, ok)
            })
            .buffer_unordered(MAX_CONCURRENT_PROBES)
            .collect()
            .await;
        for (t, ok) in results {
            if let Some(healthy) = node.health_overlay().record(&t.key, &t.id, t.stored, ok) {
                node.health_flipped(&t.key, &t.id, healthy);
            }
        }
        share(&node, timeout).await;
    }
}

/// Sends the health of the services this node owns to every live peer.
async fn share(node: &Node, timeout: Duration) {
    let Some(cluster) = node.distro().cluster() else {
        return;
    };
    let membership = node.membership();
    let results = node.health_overlay().results(|k| membership.is_owner(k));
    if results.is_empty() {
        return;
    }
    let peers = membership.live_peers();
    let sends = peers.iter().map(|peer| {
        cluster
            .client
            .post_json::<_, usize>(peer, SYNC_PATH, &results, timeout)
    });
    for r in futures::future::join_all(sends).await {
        if let Err(e) = r {
            tracing::debug!(error = %e, "sharing health results failed");
        }
    }
}

/// Applies health results shared by their services' owner; returns the services whose
/// visible health changed.
pub fn accept(node: &Node, results: Vec<HealthResult>) -> Vec<ServiceKey> {
    let mut changed = Vec::new();
    for r in results {
        if node.health_overlay().set(&r.key, &r.id, r.healthy) && !changed.contains(&r.key) {
            changed.push(r.key);
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_results_are_taken_as_is_and_listed_back() {
        let o = HealthOverlay::new();
        let (k, id) = ids();
        assert!(
            o.set(&k, &id, false),
            "first result changes what lists show"
        );
        assert!(!o.set(&k, &id, false));
        assert!(o.set(&k, &id, true));
        assert_eq!(
            o.results(|_| true),
            vec![HealthResult {
                key: k.clone(),
                id: id.clone(),
                healthy: true
            }]
        );
        assert!(o.results(|_| false).is_empty());
        // A later probe on this node (after ownership moved here) continues from it.
        assert_eq!(o.record(&k, &id, false, false), None);
    }

    fn ids() -> (ServiceKey, InstanceKey) {
        (
            ServiceKey::new("public", "DEFAULT_GROUP", "db"),
            InstanceKey {
                ip: "127.0.0.1".into(),
                port: 1,
                cluster: "DEFAULT".into(),
            },
        )
    }

    /// Health the overlay reports for an instance stored as healthy.
    fn reported(o: &HealthOverlay, k: &ServiceKey, i: &InstanceKey) -> bool {
        let mut inst = [crate::naming::model::test_instance(
            &i.ip, i.port, &i.cluster, false,
        )];
        o.apply(k, &mut inst);
        inst[0].healthy
    }

    #[test]
    fn flips_only_after_three_opposite_results() {
        let o = HealthOverlay::new();
        let (k, i) = ids();
        assert_eq!(o.record(&k, &i, true, false), None);
        assert_eq!(o.record(&k, &i, true, false), None);
        assert!(reported(&o, &k, &i));
        assert_eq!(o.record(&k, &i, true, false), Some(false));
        assert!(!reported(&o, &k, &i));
        // A failure in between resets the recovery streak.
        assert_eq!(o.record(&k, &i, true, true), None);
        assert_eq!(o.record(&k, &i, true, false), None);
        assert_eq!(o.record(&k, &i, true, true), None);
        assert_eq!(o.record(&k, &i, true, true), None);
        assert_eq!(o.record(&k, &i, true, true), Some(true));
    }

    #[tokio::test]
    async fn tcp_and_http_probes_on_loopback() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (k, i) = ids();
        let tcp = Target {
            key: k.clone(),
            id: i.clone(),
            stored: true,
            host: "127.0.0.1".into(),
            port,
            check: Check::Tcp,
        };
        assert!(probe(&tcp, Duration::from_secs(1)).await);
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"HTTP/1.0 503 Unavailable\r\n\r\n").await;
            }
        });
        let http = Target {
            check: Check::Http {
                path: "/health".into(),
                expected: 200,
            },
            ..tcp.clone()
        };
        assert!(!probe(&http, Duration::from_secs(1)).await);
        let http503 = Target {
            check: Check::Http {
                path: "/health".into(),
                expected: 503,
            },
            ..tcp
        };
        assert!(probe(&http503, Duration::from_secs(1)).await);
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead_port = closed.local_addr().unwrap().port();
        drop(closed);
        let dead = Target {
            key: k,
            id: i,
            stored: true,
            host: "127.0.0.1".into(),
            port: dead_port,
            check: Check::Tcp,
        };
        assert!(!probe(&dead, Duration::from_secs(1)).await);
    }
}
