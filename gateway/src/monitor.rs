//! Keeps the routing view current: follows the node source (static list, address server or
//! DNS), probes every node's readiness, rebuilds the ring when the set of ready nodes changes,
//! and runs one change-feed follower per node in the view.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use nacre_config::members::Discovery;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::feed;
use crate::upstreams::{PeerTimeouts, Upstream, View};
use crate::Shared;
use nacre_ring::wire::{PingReply, PING_PATH, SECRET_HEADER};

/// Failed probes in a row before a node leaves the ring. The first failure already takes it
/// out of rotation; the ring (and with it the cache) is rebuilt only on the second, so one slow
/// probe under load does not move every service.
const DOWN_AFTER: u32 = 2;

/// One probed node: where it is and what it calls itself, if ready.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ready {
    name: String,
    addr: SocketAddr,
    /// False for a node kept in the ring despite a missed probe.
    probed: bool,
    /// The node has the standing to take writes (one cut off, or held DOWN by its peers,
    /// answers them 503).
    standing: bool,
    /// The node requires credentials (then nothing may be served from the cache).
    auth: bool,
    /// The node answers beat batches (see [`crate::beats`]).
    beats: bool,
    /// ... and relayed instance writes in them.
    writes: bool,
}

/// Runs until `shutdown` is cancelled; every follower it started has stopped when it returns.
pub async fn run(shared: Arc<Shared>, discovery: Discovery, shutdown: CancellationToken) {
    let client = match reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the probe client; the gateway has no nodes");
            return;
        }
    };
    let mut members = discovery.subscribe();
    let interval = Duration::from_millis(shared.settings.probe_interval_ms);
    let mut followers: HashMap<(SocketAddr, String), CancellationToken> = HashMap::new();
    let mut misses: HashMap<SocketAddr, u32> = HashMap::new();
    let mut probe_states: HashMap<String, String> = HashMap::new();
    let mut tasks = JoinSet::new();
    loop {
        let addresses = members.borrow_and_update().clone();
        let mut ready = probe_all(&shared, &client, &addresses, &mut probe_states).await;
        // Nodes of the view that missed this probe stay in the ring (out of rotation) until
        // they miss DOWN_AFTER in a row.
        let current = shared.upstreams.view();
        misses.retain(|addr, _| current.upstreams().iter().any(|u| u.addr == *addr));
        for u in current.upstreams() {
            if ready.iter().any(|r| r.addr == u.addr) {
                misses.remove(&u.addr);
                continue;
            }
            let n = misses.entry(u.addr).or_insert(0);
            *n += 1;
            u.mark_unusable();
            if *n < DOWN_AFTER
                && addresses
                    .iter()
                    .any(|a| a.parse::<SocketAddr>().ok() == Some(u.addr) || *a == u.name)
            {
                ready.push(Ready {
                    name: u.name.clone(),
                    addr: u.addr,
                    probed: false,
                    standing: true,
                    auth: shared.auth_required(),
                    beats: u.relays_beats(),
                    writes: u.relays_writes(),
                });
            }
        }
        ready.sort_by(|a, b| a.name.cmp(&b.name));
        // One node with auth on is enough: a cached answer must never skip its check.
        shared.set_auth_required(ready.iter().any(|r| r.auth));
        shared.set_auth_everywhere(!ready.is_empty() && ready.iter().all(|r| r.auth));
        update_view(&shared, &ready);
        let view = shared.upstreams.view();
        // One follower per node in the view; a node that left gets its follower stopped.
        followers.retain(|(addr, name), stop| {
            let keep = view
                .upstreams()
                .iter()
                .any(|u| u.addr == *addr && u.name == *name);
            if !keep {
                stop.cancel();
            }
            keep
        });
        // Feeds serve the cache and the config listeners held here: with both off there is
        // nothing to follow.
        let follow = shared.cache.enabled() || shared.settings.hold_config_listeners;
        for up in view.upstreams().iter().filter(|_| follow) {
            if let std::collections::hash_map::Entry::Vacant(slot) =
                followers.entry((up.addr, up.name.clone()))
            {
                let stop = slot.insert(shutdown.child_token()).clone();
                tasks.spawn(feed::follow(
                    shared.clone(),
                    client.clone(),
                    up.clone(),
                    stop,
                ));
            }
        }
        while tasks.try_join_next().is_some() {}
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(interval) => {}
            _ = members.changed() => {}
        }
    }
    for stop in followers.values() {
        stop.cancel();
    }
    while tasks.join_next().await.is_some() {}
    discovery.stopped().await;
}

/// Probes every address at once; returns the ready ones.
async fn probe_all(
    shared: &Arc<Shared>,
    client: &reqwest::Client,
    addresses: &[String],
    states: &mut HashMap<String, String>,
) -> Vec<Ready> {
    let timeout = Duration::from_millis(shared.settings.probe_timeout_ms);
    let secret = shared.settings.cluster_secret.clone().unwrap_or_default();
    let mut set = JoinSet::new();
    for address in addresses {
        let (client, secret, address) = (client.clone(), secret.clone(), address.clone());
        set.spawn(async move {
            (
                address.clone(),
                probe(&client, &secret, &address, timeout).await,
            )
        });
    }
    let mut ready = Vec::new();
    while let Some(r) = set.join_next().await {
        let Ok((address, outcome)) = r else { continue };
        // Logged when a node's probe outcome changes, not on every probe: a wrong secret
        // (401) or an unreachable node must be visible without flooding the log.
        let state = match &outcome {
            Ok(Some(_)) => "ready".to_string(),
            Ok(None) => "not ready".to_string(),
            Err(e) => e.clone(),
        };
        if states.get(&address) != Some(&state) {
            match &outcome {
                Ok(Some(_)) => tracing::info!(%address, "node ready"),
                Ok(None) => tracing::info!(%address, "node answers but is not ready"),
                Err(e) => tracing::warn!(%address, error = %e, "node probe failed"),
            }
            states.insert(address.clone(), state);
        }
        if let Ok(Some(r)) = outcome {
            ready.push(r);
        }
    }
    states.retain(|a, _| addresses.contains(a));
    // A node cut off from the majority of its cluster is out of rotation while another one
    // has the standing to take writes; when none has (most of the cluster is down), the
    // ready ones still serve what they hold.
    if ready.iter().any(|r| r.standing) {
        ready.retain(|r| r.standing);
    }
    ready.sort_by(|a, b| a.name.cmp(&b.name));
    ready
}

async fn probe(
    client: &reqwest::Client,
    secret: &str,
    address: &str,
    timeout: Duration,
) -> Result<Option<Ready>, String> {
    let addr = resolve(address).await?;
    let resp = client
        .get(format!("http://{addr}{PING_PATH}"))
        .header(SECRET_HEADER, secret)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    match resp.status().as_u16() {
        200..=299 => {}
        401 | 403 => {
            return Err(format!(
                "status {}: the gateway's cluster secret is not the nodes'",
                resp.status()
            ))
        }
        _ => return Err(format!("status {}", resp.status())),
    }
    let ping: PingReply = resp.json().await.map_err(|e| e.to_string())?;
    Ok(ping.ready.then_some(Ready {
        name: ping.address,
        addr,
        probed: true,
        standing: ping.standing,
        auth: ping.auth,
        beats: ping.relays_beats,
        writes: ping.relays_writes,
    }))
}

async fn resolve(address: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = address.parse() {
        return Ok(a);
    }
    tokio::net::lookup_host(address)
        .await
        .map_err(|e| e.to_string())?
        .next()
        .ok_or_else(|| format!("{address} resolves to nothing"))
}

/// Installs a new view when the ready set changed; otherwise puts probed nodes back in
/// rotation. A new view resets the cache: ownership moved, and answers cached from the
/// previous owner need not match the new one.
fn update_view(shared: &Shared, ready: &[Ready]) {
    let current = shared.upstreams.view();
    let same = current.upstreams().len() == ready.len()
        && current
            .upstreams()
            .iter()
            .zip(ready)
            .all(|(u, r)| u.name == r.name && u.addr == r.addr);
    for u in current.upstreams() {
        let found = ready.iter().find(|r| r.name == u.name && r.addr == u.addr);
        let up = found.is_some_and(|r| r.probed);
        // What the node takes is known before it is back in rotation.
        if let Some(r) = found {
            u.set_relays(r.beats, r.writes);
        }
        if up {
            u.mark_usable();
        }
        shared.metrics.set_upstream_up(&u.name, up);
    }
    if same {
        return;
    }
    let timeouts = PeerTimeouts {
        connect: Duration::from_millis(shared.settings.connect_timeout_ms),
        read: Duration::from_millis(shared.settings.read_timeout_ms),
    };
    let upstreams: Vec<Arc<Upstream>> = ready
        .iter()
        .map(|r| {
            current
                .upstreams()
                .iter()
                .find(|u| u.name == r.name && u.addr == r.addr)
                .cloned()
                .unwrap_or_else(|| {
                    Arc::new(Upstream::new(
                        r.name.clone(),
                        r.addr,
                        timeouts,
                        shared.metrics.upstream_latency(&r.name),
                    ))
                })
        })
        .collect();
    for (u, r) in upstreams.iter().zip(ready) {
        shared.metrics.set_upstream_up(&u.name, r.probed);
        u.set_relays(r.beats, r.writes);
    }
    tracing::info!(
        nodes = ?upstreams.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(),
        "routing ring changed"
    );
    shared.metrics.ring_members.set(upstreams.len() as i64);
    shared.upstreams.replace(View::new(upstreams));
    shared.reset_cache();
}
