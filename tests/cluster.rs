//! A real 3-node (and 4-node) nacre cluster on loopback: Distro replication, ownership,
//! verify repair, snapshot on start, Raft failover and runtime membership changes.
//!
//! Every node runs as a child process; peer traffic between nodes flows through a cuttable
//! loopback proxy per node (see `nacre_testkit::cluster`), test clients talk to the nodes
//! directly. Timings are shortened through `NACRE_*` settings so faults are detected in well
//! under a second; nothing here asserts on speed.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use nacre_registry::peer::{FORWARDED_HEADER, NOT_LOADED_HEADER};
use nacre_testkit::addr_server::AddressServer;
use nacre_testkit::cluster::{ClusterOptions, TestCluster};
use nacre_testkit::http::{eventually, Api};
use nacre_testkit::METRICS_PATH;

const READY: Duration = Duration::from_secs(60);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_nacre"))
}

/// Starts a cluster and waits until every node is ready and every node's ownership ring holds
/// every member (a node learns that a peer is ready one probe after the peer is).
fn start(opts: ClusterOptions) -> Result<(tempfile::TempDir, TestCluster)> {
    let root = tempfile::Builder::new()
        .prefix("nacre-cluster-")
        .tempdir()?;
    let mut c = TestCluster::start(bin(), root.path(), opts.fast())?;
    c.wait_ready(READY)?;
    c.wait_rings_complete(READY)?;
    Ok((root, c))
}

fn api(c: &TestCluster, i: usize) -> Api {
    Api::new(c.node(i).addr())
}

/// (ip, healthy) of every instance a node lists for `service`.
async fn hosts(api: &Api, service: &str) -> Vec<(String, bool)> {
    api.hosts(service)
        .await
        .iter()
        .map(|h| {
            (
                h["ip"].as_str().unwrap_or_default().to_string(),
                h["healthy"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

/// Waits until `api`'s node lists `ip` in `service`; the error carries every node's log.
async fn wait_listed(
    c: &TestCluster,
    api: &Api,
    service: &str,
    ip: &str,
    timeout: Duration,
) -> Result<()> {
    eventually(timeout, &format!("{service} {ip} listed"), || async {
        hosts(api, service)
            .await
            .iter()
            .any(|(h, _)| h == ip)
            .then_some(())
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", c.log_tails()))
}

async fn register(api: &Api, service: &str, ip: &str, extra: &[(&str, &str)]) {
    let mut q = vec![("serviceName", service), ("ip", ip), ("port", "8080")];
    q.extend_from_slice(extra);
    let r = api.instance("POST", &q).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "ok"),
        "register {service} {ip}"
    );
}

async fn cluster_view(api: &Api) -> serde_json::Value {
    api.call("GET", "/nacre/v1/cluster", &[]).await.json()
}

async fn owner_of(api: &Api, service: &str) -> String {
    // Any service name works for ownership; the endpoint only needs it to exist.
    let r = api
        .call(
            "GET",
            "/nacos/v1/ns/operator/distro/server",
            &[("serviceName", service)],
        )
        .await;
    r.json()["responsibleServer"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_on_any_node_are_listed_by_every_node() -> Result<()> {
    let (_root, c) = start(ClusterOptions::new(3))?;
    let apis: Vec<Api> = (0..3).map(|i| api(&c, i)).collect();
    let mut latencies = Vec::new();
    for i in 0..30 {
        let service = format!("orders-{i}");
        let ip = format!("10.1.0.{i}");
        let started = Instant::now();
        register(&apis[i % 3], &service, &ip, &[]).await;
        for a in &apis {
            wait_listed(&c, a, &service, &ip, Duration::from_secs(5)).await?;
        }
        latencies.push(started.elapsed());
    }
    latencies.sort();
    println!(
        "replication (register on one node -> listed by all 3, incl. polling): p50 {:?} p99 {:?} max {:?}",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1]
    );

    // Every node holds all 30 services but is responsible only for those the ring gives it;
    // the nodes' shares add up to the whole.
    let mut owned_by = std::collections::BTreeMap::<String, u64>::new();
    for i in 0..30 {
        *owned_by
            .entry(owner_of(&apis[0], &format!("orders-{i}")).await)
            .or_default() += 1;
    }
    let mut shares = 0;
    for (i, a) in apis.iter().enumerate() {
        let m = a.call("GET", METRICS_PATH, &[]).await.json();
        let want = owned_by.get(&c.advertised(i)).copied().unwrap_or(0);
        assert_eq!(m["serviceCount"], 30, "{m}");
        assert_eq!(m["instanceCount"], 30, "{m}");
        assert_eq!(m["responsibleServiceCount"], want, "node {i}: {m}");
        assert_eq!(m["responsibleInstanceCount"], want, "node {i}: {m}");
        shares += want;
    }
    assert_eq!(shares, 30);
    assert!(
        owned_by.values().all(|&n| n < 30),
        "one node owns everything: {owned_by:?}"
    );

    // Deregistration through yet another node disappears everywhere.
    for i in 0..30 {
        let service = format!("orders-{i}");
        let ip = format!("10.1.0.{i}");
        let r = apis[(i + 1) % 3]
            .instance(
                "DELETE",
                &[("serviceName", &service), ("ip", &ip), ("port", "8080")],
            )
            .await;
        assert_eq!(r.body, "ok");
    }
    for a in &apis {
        for i in 0..30 {
            let service = format!("orders-{i}");
            eventually(
                Duration::from_secs(5),
                "deregistration everywhere",
                || async { hosts(a, &service).await.is_empty().then_some(()) },
            )
            .await?;
        }
    }

    // Every node agrees on one Raft leader and lists all three members as UP.
    for a in &apis {
        let v = cluster_view(a).await;
        assert!(v["leader"].is_string(), "{v}");
        let members = v["members"].as_array().cloned().unwrap_or_default();
        assert_eq!(members.len(), 3, "{v}");
        assert!(members.iter().all(|m| m["state"] == "UP"), "{v}");
        let nodes = a
            .call("GET", "/nacos/v1/core/cluster/nodes", &[])
            .await
            .json();
        assert_eq!(nodes["data"].as_array().map(Vec::len), Some(3), "{nodes}");
        let servers = a
            .call(
                "GET",
                "/nacos/v1/ns/operator/servers",
                &[("healthy", "true")],
            )
            .await
            .json();
        assert_eq!(
            servers["servers"].as_array().map(Vec::len),
            Some(3),
            "{servers}"
        );
    }
    let leaders: BTreeSet<String> = {
        let mut s = BTreeSet::new();
        for a in &apis {
            s.insert(cluster_view(a).await["leader"].to_string());
        }
        s
    };
    assert_eq!(leaders.len(), 1, "{leaders:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_a_node_never_loses_a_beating_instance() -> Result<()> {
    let (_root, mut c) = start(ClusterOptions::new(3))?;
    let (a0, a1, a2) = (api(&c, 0), api(&c, 1), api(&c, 2));
    // Short timeouts make a missed hand-over visible within the test: an instance whose
    // beats were lost would turn unhealthy after 3 s.
    let meta = r#"{"preserved.heart.beat.interval":"500","preserved.heart.beat.timeout":"3000","preserved.ip.delete.timeout":"6000"}"#;
    // Node addresses (and so ownership) change from run to run: with 12 services, none landed
    // on node 2 in about 1 run in 130 ((2/3)^12); with 24, about 1 in 17,000.
    let services: Vec<String> = (0..24).map(|i| format!("pay-{i}")).collect();
    for (i, s) in services.iter().enumerate() {
        register(&a0, s, &format!("10.2.0.{i}"), &[("metadata", meta)]).await;
    }
    let victim = c.advertised(2);
    let mut owned_by_victim = Vec::new();
    for s in &services {
        if owner_of(&a2, s).await == victim {
            owned_by_victim.push(s.clone());
        }
    }
    assert!(
        !owned_by_victim.is_empty(),
        "no service landed on node 2 — pick more services"
    );

    // Clients beat through nodes 0 and 1 only, every 500 ms.
    let stop = tokio_util::sync::CancellationToken::new();
    let beater = {
        let (b0, b1, services, stop) = (a0.clone(), a1.clone(), services.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.is_cancelled() {
                for (i, s) in services.iter().enumerate() {
                    let ip = format!("10.2.0.{i}");
                    let via = if (n + i).is_multiple_of(2) { &b0 } else { &b1 };
                    via.call(
                        "PUT",
                        "/nacos/v1/ns/instance/beat",
                        &[("serviceName", s), ("ip", &ip), ("port", "8080")],
                    )
                    .await;
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.kill9(2)?;
    let killed = Instant::now();

    // For 10 s (over three unhealthy timeouts), every instance is listed healthy by both
    // survivors at every look.
    let mut looks = 0;
    while killed.elapsed() < Duration::from_secs(10) {
        for a in [&a0, &a1] {
            for (i, s) in services.iter().enumerate() {
                let ip = format!("10.2.0.{i}");
                let hs = hosts(a, s).await;
                if !hs.contains(&(ip.clone(), true)) {
                    stop.cancel();
                    bail!(
                        "{s} {ip} missing or unhealthy {:?} after the kill: {hs:?}\n{}",
                        killed.elapsed(),
                        c.log_tails()
                    );
                }
                looks += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    let _ = beater.await;
    println!("{looks} looks, no instance missing or unhealthy");

    // The dead node's services have a new, live owner.
    for s in &owned_by_victim {
        let o0 = owner_of(&a0, s).await;
        let o1 = owner_of(&a1, s).await;
        assert_eq!(o0, o1, "survivors disagree on the owner of {s}");
        assert!(
            o0 == c.advertised(0) || o0 == c.advertised(1),
            "{s} owned by {o0}"
        );
    }
    let v = cluster_view(&a0).await;
    let down = v["members"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|m| m["address"] == victim.as_str() && m["state"] == "DOWN");
    assert!(down, "node 2 not reported DOWN: {v}");
    Ok(())
}

/// Rule S2: a restarted node still loading its start-up data refuses forwarded writes with a
/// marked 503 (the forwarder then applies them), and clients with the plain not-ready 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_still_loading_refuses_forwarded_writes_with_a_marked_503() -> Result<()> {
    let (_root, mut c) = start(ClusterOptions::new(3))?;
    register(&api(&c, 0), "s2", "10.2.0.1", &[]).await;
    // Its peers unreachable, a restarted node cannot load: it stays loading.
    c.kill9(2)?;
    c.proxy(0).cut();
    c.proxy(1).cut();
    c.restart(2)?;
    let a2 = api(&c, 2);
    let beat = [("serviceName", "s2"), ("ip", "10.2.0.1"), ("port", "8080")];
    let secret = c.secret().to_string();
    let forwarded = [
        (FORWARDED_HEADER, "1"),
        (nacre_registry::peer::SECRET_HEADER, secret.as_str()),
    ];
    let r = eventually(
        Duration::from_secs(10),
        "the loading node answers the forwarded beat",
        || async {
            let r = a2
                .call_with_headers("PUT", "/nacos/v1/ns/instance/beat", &beat, &forwarded)
                .await;
            (r.status == 503).then_some(r)
        },
    )
    .await?;
    assert_eq!(r.header(NOT_LOADED_HEADER), Some("1"), "{}", r.body);
    let plain = a2.call("PUT", "/nacos/v1/ns/instance/beat", &beat).await;
    assert_eq!(plain.status, 503, "{}", plain.body);
    assert_eq!(plain.header(NOT_LOADED_HEADER), None);
    // Once it can load, it takes forwarded writes again.
    c.proxy(0).heal();
    c.proxy(1).heal();
    c.node_mut(2).wait_ready(READY)?;
    let r = a2
        .call_with_headers("PUT", "/nacos/v1/ns/instance/beat", &beat, &forwarded)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarted_and_new_nodes_load_everything_before_ready() -> Result<()> {
    let (_root, mut c) = start(ClusterOptions::new(3).with_members_file())?;
    let a0 = api(&c, 0);
    let mut expected: Vec<(String, String)> = Vec::new();
    for i in 0..40 {
        let (s, ip) = (format!("inv-{}", i % 10), format!("10.3.0.{i}"));
        register(&a0, &s, &ip, &[]).await;
        expected.push((s, ip));
    }
    for i in 0..5 {
        let (s, ip) = ("inv-persistent".to_string(), format!("127.3.0.{i}"));
        register(&a0, &s, &ip, &[("ephemeral", "false")]).await;
        expected.push((s, ip));
    }

    c.kill9(1)?;
    // Changes made while it is down.
    for i in 40..50 {
        let (s, ip) = (format!("inv-{}", i % 10), format!("10.3.0.{i}"));
        register(&a0, &s, &ip, &[]).await;
        expected.push((s, ip));
    }
    c.restart(1)?;
    c.node_mut(1).wait_ready(READY)?;
    // The first answers after "ready" are already complete: no eventual wait here.
    let a1 = api(&c, 1);
    for (s, ip) in &expected {
        let hs = hosts(&a1, s).await;
        assert!(
            hs.iter().any(|(h, _)| h == ip),
            "restarted node lacks {s} {ip}: {hs:?}\n{}",
            c.log_tails()
        );
    }

    // A brand-new, empty node joins through cluster.conf.
    let started = Instant::now();
    let n = c.add_node()?;
    c.node_mut(n).wait_ready(READY)?;
    println!("new node ready after {:?}", started.elapsed());
    let an = api(&c, n);
    for (s, ip) in &expected {
        let hs = hosts(&an, s).await;
        assert!(
            hs.iter().any(|(h, _)| h == ip),
            "new node lacks {s} {ip}: {hs:?}\n{}",
            c.log_tails()
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_link_heals_and_verify_repairs_the_copies() -> Result<()> {
    // A tiny backlog overflows while the link is cut, so the repair has to come from verify
    // rather than from sync retries.
    let (_root, mut c) = start(ClusterOptions::new(3).with_env("NACRE_SYNC_QUEUE_CAPACITY", "2"))?;
    let (a0, a2) = (api(&c, 0), api(&c, 2));
    c.isolate(2)?;
    let victim = c.advertised(2);
    eventually(Duration::from_secs(5), "node 2 seen DOWN", || async {
        let v = cluster_view(&a0).await;
        v["members"]
            .as_array()?
            .iter()
            .any(|m| m["address"] == victim.as_str() && m["state"] == "DOWN")
            .then_some(())
    })
    .await?;

    let services: Vec<String> = (0..20).map(|i| format!("cut-{i}")).collect();
    for (i, s) in services.iter().enumerate() {
        register(&a0, s, &format!("10.4.0.{i}"), &[]).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut missing = 0;
    for s in &services {
        if hosts(&a2, s).await.is_empty() {
            missing += 1;
        }
    }
    assert_eq!(
        missing,
        services.len(),
        "the cut node saw writes it cannot have received"
    );

    c.heal()?;
    let healed = Instant::now();
    for (i, s) in services.iter().enumerate() {
        let ip = format!("10.4.0.{i}");
        wait_listed(&c, &a2, s, &ip, Duration::from_secs(15)).await?;
    }
    println!(
        "all copies repaired {:?} after the link healed",
        healed.elapsed()
    );
    let mut repaired = 0.0;
    for i in 0..3 {
        let m = api(&c, i).call("GET", "/metrics", &[]).await.body;
        repaired += m
            .lines()
            .filter(|l| l.starts_with("nacre_distro_verify_repairs_total{repair=\"requested\"}"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    assert!(repaired > 0.0, "verify reported no repair");
    Ok(())
}

async fn leader_index(c: &TestCluster, among: &[usize]) -> Option<usize> {
    for &i in among {
        let v = cluster_view(&api(c, i)).await;
        if let Some(l) = v["leader"].as_str() {
            return (0..c.len()).find(|&j| c.advertised(j) == l);
        }
    }
    None
}

async fn persistent_ips(a: &Api) -> BTreeSet<String> {
    hosts(a, "ledger")
        .await
        .into_iter()
        .map(|(ip, _)| ip)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_raft_leader_keeps_every_acknowledged_write() -> Result<()> {
    let (_root, mut c) = start(ClusterOptions::new(3))?;
    let mut acked = BTreeSet::new();
    for i in 0..20 {
        let ip = format!("127.5.0.{i}");
        register(&api(&c, i % 3), "ledger", &ip, &[("ephemeral", "false")]).await;
        acked.insert(ip);
    }
    let leader = leader_index(&c, &[0, 1, 2]).await.expect("a leader");
    c.kill9(leader)?;
    let killed = Instant::now();
    let survivors: Vec<usize> = (0..3).filter(|&i| i != leader).collect();

    // Keep writing through a survivor until one is accepted: the failover time.
    let a = api(&c, survivors[0]);
    let mut n = 0;
    let failover = loop {
        let ip = format!("127.5.1.{n}");
        let r = a
            .instance(
                "POST",
                &[
                    ("serviceName", "ledger"),
                    ("ip", &ip),
                    ("port", "8080"),
                    ("ephemeral", "false"),
                ],
            )
            .await;
        n += 1;
        if r.status == 200 {
            acked.insert(ip);
            break killed.elapsed();
        }
        if killed.elapsed() > Duration::from_secs(30) {
            bail!(
                "no write accepted 30 s after the leader died: {} {}\n{}",
                r.status,
                r.body,
                c.log_tails()
            );
        }
    };
    println!("leader failover: first write accepted {failover:?} after kill -9");

    for &i in &survivors {
        let got = persistent_ips(&api(&c, i)).await;
        assert!(
            acked.is_subset(&got),
            "node {i} lost writes: {:?}",
            acked.difference(&got).collect::<Vec<_>>()
        );
    }
    let new_leader = leader_index(&c, &survivors).await.expect("a new leader");
    assert_ne!(new_leader, leader);

    c.restart(leader)?;
    c.node_mut(leader).wait_ready(READY)?;
    let got = persistent_ips(&api(&c, leader)).await;
    assert!(
        acked.is_subset(&got),
        "restarted node missing {:?}",
        acked.difference(&got).collect::<Vec<_>>()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_conf_changes_are_followed_at_runtime() -> Result<()> {
    let (_root, mut c) = start(ClusterOptions::new(3).with_members_file())?;
    let a0 = api(&c, 0);
    let n = c.add_node()?;
    c.node_mut(n).wait_ready(READY)?;
    let added = c.advertised(n);
    eventually(
        Duration::from_secs(20),
        "4th node in members, ring and raft",
        || async {
            let p = placement(&cluster_view(&a0).await, &added)?;
            (p.up && p.in_ring && p.in_raft).then_some(())
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}: {}\n{}", cluster_view_now(&a0), c.log_tails()))?;

    let removed = c.advertised(1);
    c.remove_node(1)?;
    eventually(
        Duration::from_secs(20),
        "node 1 gone from members and raft",
        || async {
            let p = placement(&cluster_view(&a0).await, &removed)?;
            (!p.listed && !p.in_raft).then_some(())
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", c.log_tails()))?;

    // The reshaped cluster still takes persistent and ephemeral writes, seen by the new node.
    register(&a0, "after-change", "127.6.0.1", &[("ephemeral", "false")]).await;
    register(&a0, "after-change", "10.6.0.2", &[]).await;
    let an = api(&c, n);
    eventually(
        Duration::from_secs(5),
        "writes after the change on the new node",
        || async { (hosts(&an, "after-change").await.len() == 2).then_some(()) },
    )
    .await?;
    Ok(())
}

/// Where a member address appears in a `/nacre/v1/cluster` view.
struct Placement {
    /// Among the members, in any state.
    listed: bool,
    /// Among the members and UP.
    up: bool,
    in_ring: bool,
    in_raft: bool,
}

/// `None` when the view lacks one of its lists.
fn placement(v: &serde_json::Value, addr: &str) -> Option<Placement> {
    let members = v["members"].as_array()?;
    let has = |list: &str| -> Option<bool> { Some(v[list].as_array()?.iter().any(|m| m == addr)) };
    Some(Placement {
        listed: members.iter().any(|m| m["address"] == addr),
        up: members
            .iter()
            .any(|m| m["address"] == addr && m["state"] == "UP"),
        in_ring: has("ring")?,
        in_raft: has("raftMembers")?,
    })
}

/// The cluster view, fetched from a blocking context for an error message.
fn cluster_view_now(a: &Api) -> String {
    let a = a.clone();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map(|rt| rt.block_on(cluster_view(&a)).to_string())
            .unwrap_or_default()
    })
    .join()
    .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_from_an_address_server_form_and_follow_the_cluster() -> Result<()> {
    let root = tempfile::Builder::new()
        .prefix("nacre-cluster-")
        .tempdir()?;
    // The address server answers whatever `<root>/cluster.conf` says at the time.
    let server = AddressServer::start(&root.path().join("cluster.conf"))?;
    let opts = ClusterOptions::new(3)
        .with_members_endpoint(&server.url())
        .fast();
    let mut c = TestCluster::start(bin(), root.path(), opts)?;
    c.wait_ready(READY)?;
    let a0 = api(&c, 0);
    let v = cluster_view(&a0).await;
    assert!(v["leader"].is_string(), "{v}");
    assert_eq!(v["raftMembers"].as_array().map(Vec::len), Some(3), "{v}");

    let n = c.add_node()?;
    c.node_mut(n).wait_ready(READY)?;
    let added = c.advertised(n);
    eventually(
        Duration::from_secs(20),
        "4th member found through the endpoint",
        || async {
            let p = placement(&cluster_view(&a0).await, &added)?;
            (p.up && p.in_raft).then_some(())
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", c.log_tails()))?;
    register(&a0, "via-endpoint", "10.7.0.1", &[]).await;
    wait_listed(
        &c,
        &api(&c, n),
        "via-endpoint",
        "10.7.0.1",
        Duration::from_secs(5),
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_the_owner_probes_persistent_instances_and_every_node_shows_its_verdict() -> Result<()>
{
    let (_root, c) = start(
        ClusterOptions::new(3)
            .with_env("NACRE_HEALTH_CHECK_INTERVAL_MS", "200")
            .with_env("NACRE_HEALTH_CHECK_TIMEOUT_MS", "150"),
    )?;
    // One instance with a listener (probes succeed) and one on a port nothing listens on:
    // with every instance down the protect threshold would show them all as healthy.
    let live = std::net::TcpListener::bind("127.0.0.1:0")?;
    let live_port = live.local_addr()?.port().to_string();
    let dead = nacre_testkit::free_loopback_addr()?;
    let dead_port = dead.port().to_string();
    let a0 = api(&c, 0);
    for (ip, port) in [("127.0.0.1", &live_port), ("127.0.0.2", &dead_port)] {
        let r = a0
            .instance(
                "POST",
                &[
                    ("serviceName", "db"),
                    ("ip", ip),
                    ("port", port),
                    ("ephemeral", "false"),
                ],
            )
            .await;
        assert_eq!(r.body, "ok");
    }
    let expected = vec![
        ("127.0.0.1".to_string(), true),
        ("127.0.0.2".to_string(), false),
    ];
    for i in 0..3 {
        let a = api(&c, i);
        eventually(
            Duration::from_secs(10),
            "the verdict on every node",
            || async {
                let mut hs = hosts(&a, "db").await;
                hs.sort();
                (hs == expected).then_some(())
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("node {i}: {e}\n{}", c.log_tails()))?;
    }
    let owner = owner_of(&a0, "db").await;
    for i in 0..3 {
        let probes = api(&c, i).metric("nacre_health_probes_total").await;
        if c.advertised(i) == owner {
            assert!(probes > 0.0, "the owner never probed");
        } else {
            assert_eq!(probes, 0.0, "node {i} is not the owner but probed");
        }
    }
    Ok(())
}
