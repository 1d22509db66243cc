//! `nacre gateway` in front of a real 3-node cluster on loopback: owner routing, read-your-
//! writes through the gateway, the list cache and its invalidation by the nodes' change feeds,
//! the address-server endpoint, shutdown, and a node killed under load.
//!
//! Nodes and gateway are child processes; the gateway connects to the nodes directly. Nothing
//! here asserts on speed except bounds far above what a healthy run shows (the figures seen are
//! printed).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use nacre_testkit::cluster::{ClusterOptions, TestCluster};
use nacre_testkit::gateway::GatewayProcess;
use nacre_testkit::http::{eventually, Api};

const READY: Duration = Duration::from_secs(60);
/// How soon a change made on a node must be visible through the gateway. The feed delivers
/// in a few milliseconds; the bound leaves room for a loaded CI machine.
const FEED_BOUND: Duration = Duration::from_secs(1);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_nacre"))
}

struct Setup {
    cluster: TestCluster,
    gateway: GatewayProcess,
    _root: tempfile::TempDir,
}

impl Setup {
    fn gw(&self) -> Api {
        Api::new(self.gateway.addr())
    }

    fn node(&self, i: usize) -> Api {
        Api::new(self.cluster.node(i).addr())
    }

    /// Sum of a metric over every live node.
    async fn nodes_metric(&self, name: &str) -> f64 {
        self.cluster.metric_sum(name).await
    }
}

/// A fast-detecting 3-node cluster with a gateway in front, both ready.
fn setup(gateway_args: &[&str]) -> Result<Setup> {
    setup_with("", gateway_args)
}

/// [`setup`], with `config` added to the gateway's TOML file.
fn setup_with(config: &str, gateway_args: &[&str]) -> Result<Setup> {
    setup_nodes_with(&[], config, gateway_args)
}

/// [`setup_with`], with `node_env` set on every node.
fn setup_nodes_with(
    node_env: &[(&str, &str)],
    config: &str,
    gateway_args: &[&str],
) -> Result<Setup> {
    let root = tempfile::Builder::new()
        .prefix("nacre-gateway-")
        .tempdir()?;
    let opts = node_env
        .iter()
        .fold(ClusterOptions::new(3).fast(), |o, (k, v)| o.with_env(k, v));
    let mut cluster = TestCluster::start(bin(), root.path(), opts)?;
    cluster.wait_ready(READY)?;
    cluster.wait_rings_complete(READY)?;
    let conf = root.path().join("gateway.toml");
    std::fs::write(
        &conf,
        // Probes answer in well under a millisecond; the long timeout only keeps a loaded CI
        // machine from dropping a node (a refused connect is still noticed at once).
        format!(
            "probe_interval_ms = 100\nprobe_timeout_ms = 1000\nconnect_timeout_ms = 300\n{config}"
        ),
    )?;
    let mut args = vec!["--config".to_string(), conf.display().to_string()];
    args.extend(gateway_args.iter().map(|s| s.to_string()));
    let listen = nacre_testkit::free_loopback_addr()?;
    let mut gateway =
        GatewayProcess::in_front_of(bin(), &cluster, &root.path().join("gw"), listen, &args)?;
    gateway.wait_ready(3, READY)?;
    Ok(Setup {
        cluster,
        gateway,
        _root: root,
    })
}

/// Tasks listing one service through the gateway as fast as they can, until stopped.
struct Readers {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Readers {
    fn start(gw: &Api, n: usize, service: &'static str) -> Readers {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..n)
            .map(|_| {
                let (gw, stop) = (gw.clone(), stop.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        gw.ips(service).await;
                    }
                })
            })
            .collect();
        Readers { stop, tasks }
    }

    async fn stop(self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await?;
        }
        Ok(())
    }
}

const HITS: &str = "nacre_gateway_cache_total{result=\"hit\"}";

/// List requests as counted by the nodes and by the gateway's cache.
#[derive(Debug)]
struct ListCounts {
    /// Lists the nodes answered.
    at_nodes: f64,
    /// Lists the gateway answered from its cache.
    hits: f64,
    /// Lists the gateway passed on to a node (misses, and bypasses while a feed is not followed).
    passed_on: f64,
}

impl ListCounts {
    async fn read(s: &Setup) -> ListCounts {
        let gw = s.gw();
        let cache = |result: &str| format!("nacre_gateway_cache_total{{result=\"{result}\"}}");
        ListCounts {
            at_nodes: s
                .nodes_metric("nacre_http_requests_total{api=\"GET /nacos/v1/ns/instance/list\"")
                .await,
            hits: gw.metric(HITS).await,
            passed_on: gw.metric(&cache("miss")).await + gw.metric(&cache("bypass")).await,
        }
    }
}

async fn register(api: &Api, service: &str, ip: &str) -> Result<()> {
    // A form body, as the Node and Python clients send it: the gateway must read it to route.
    let r = api
        .form(
            "POST",
            "/nacos/v1/ns/instance",
            &[("serviceName", service), ("ip", ip), ("port", "8080")],
        )
        .await;
    ensure!(
        r.status == 200 && r.body == "ok",
        "register {service} {ip}: {r:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_reach_the_owner_and_reads_right_after_see_them() -> Result<()> {
    let s = setup(&[])?;
    let gw = s.gw();
    for i in 0..30 {
        let service = format!("owned-{i}");
        let ip = format!("10.1.0.{i}");
        register(&gw, &service, &ip).await?;
        // Read-your-writes through the gateway, with no wait.
        assert_eq!(gw.ips(&service).await, vec![ip.clone()], "{service}");
        let r = gw
            .call(
                "DELETE",
                "/nacos/v1/ns/instance",
                &[("serviceName", &service), ("ip", &ip), ("port", "8080")],
            )
            .await;
        assert_eq!(r.body, "ok");
        assert!(gw.ips(&service).await.is_empty(), "{service} after delete");
    }
    // Every write arrived at its owner: no node had to forward one.
    let forwarded = s
        .nodes_metric("nacre_forwards_total{result=\"forwarded\"}")
        .await;
    assert_eq!(forwarded, 0.0, "writes the gateway sent to a non-owner");
    // And the owners are spread over the nodes.
    let mut per_node = BTreeMap::new();
    for i in 0..3 {
        let n = s
            .node(i)
            .metric("nacre_http_requests_total{api=\"POST /nacos/v1/ns/instance\",status=\"200\"}")
            .await;
        per_node.insert(i, n);
    }
    println!("registrations per node: {per_node:?}");
    assert!(
        per_node.values().filter(|n| **n > 0.0).count() >= 2,
        "{per_node:?}"
    );
    Ok(())
}

/// Rule V3: the owner answers a write the gateway routed to it once applied (the gateway
/// reads from it too); every other write waits for the live peers, including one that carries
/// the gateway's mark without the secret's proof, and one a node forwards to the owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn owners_answer_gateway_writes_at_once_and_every_other_write_after_its_peers() -> Result<()>
{
    let s = setup(&[])?;
    let gw = s.gw();
    let acks = |how: &str| format!("nacre_distro_write_acks_total{{ack=\"{how}\"}}");
    let forwarded = "nacre_forwards_total{result=\"forwarded\"}";
    for i in 0..20 {
        let (service, ip) = (format!("routed-{i}"), format!("10.2.0.{i}"));
        register(&gw, &service, &ip).await?;
        assert_eq!(
            gw.ips(&service).await,
            vec![ip],
            "read-your-writes through the gateway"
        );
    }
    assert_eq!(s.nodes_metric(&acks("applied")).await, 20.0);
    assert_eq!(s.nodes_metric(&acks("peers")).await, 0.0);

    // Straight to a node: owned there or forwarded to the owner, it waits for the peers, and
    // every node lists it right after the answer.
    let node = s.node(0);
    for i in 0..10 {
        register(&node, &format!("direct-{i}"), "10.3.0.1").await?;
        for n in 0..3 {
            assert_eq!(
                s.node(n).ips(&format!("direct-{i}")).await,
                vec!["10.3.0.1"]
            );
        }
    }
    let register_with = |service: String, headers: Vec<(&'static str, String)>| {
        let node = node.clone();
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let form = [
                ("serviceName", service.as_str()),
                ("ip", "10.4.0.1"),
                ("port", "8080"),
            ];
            node.call_with_headers("POST", "/nacos/v1/ns/instance", &form, &headers)
                .await
        }
    };
    let forged = register_with(
        "forged".into(),
        vec![
            ("x-nacre-owner-routed", "1".into()),
            ("x-nacre-asserted-by", "not-the-secret".into()),
        ],
    )
    .await;
    assert_eq!(forged.body, "ok", "{forged:?}");
    assert_eq!(s.nodes_metric(&acks("applied")).await, 20.0);
    assert_eq!(s.nodes_metric(&acks("peers")).await, 11.0);

    // The gateway's mark with the proof, sent to a node that may not own the service (a
    // gateway whose view lags): the node answers at once only what it owns, and a write it
    // forwards reaches the owner without the mark. 30 services: node 0 owns some and not all.
    let before = s.nodes_metric(forwarded).await;
    for i in 0..30 {
        let r = register_with(
            format!("marked-{i}"),
            vec![
                ("x-nacre-owner-routed", "1".into()),
                ("x-nacre-client-addr", "127.0.0.1".into()),
                ("x-nacre-asserted-by", s.cluster.secret().to_string()),
            ],
        )
        .await;
        assert_eq!(r.body, "ok", "{r:?}");
    }
    let moved = s.nodes_metric(forwarded).await - before;
    let applied = s.nodes_metric(&acks("applied")).await - 20.0;
    let waited = s.nodes_metric(&acks("peers")).await - 11.0;
    assert_eq!((applied, waited), (30.0 - moved, moved));
    assert!(moved > 0.0 && applied > 0.0, "node 0 owns {applied} of 30");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cache_hits_stay_in_the_gateway_and_changes_on_nodes_invalidate_them() -> Result<()> {
    let s = setup(&[])?;
    let gw = s.gw();
    register(&gw, "cached", "10.2.0.1").await?;
    assert_eq!(gw.ips("cached").await, vec!["10.2.0.1"]);
    // The write's feed events (from the owner and from each replica) reach the gateway after
    // the write's answer, and each may drop the entry once: wait for the cache to hold it.
    eventually(FEED_BOUND, "a first cache hit", || {
        let gw = gw.clone();
        async move {
            let before = gw.metric(HITS).await;
            gw.ips("cached").await;
            (gw.metric(HITS).await > before).then_some(())
        }
    })
    .await?;
    let before = ListCounts::read(&s).await;
    for _ in 0..100 {
        assert_eq!(gw.ips("cached").await, vec!["10.2.0.1"]);
    }
    let after = ListCounts::read(&s).await;
    println!("list counts over 100 reads: {before:?} -> {after:?}");
    // Exactly the lists the gateway passed on reached a node: no hit did. (A late feed event
    // may still turn a few reads into misses; those are counted as such.)
    assert_eq!(
        after.at_nodes - before.at_nodes,
        after.passed_on - before.passed_on,
        "cache hits reached a node: {before:?} -> {after:?}"
    );
    assert!(
        after.hits - before.hits >= 90.0,
        "too few hits: {before:?} -> {after:?}"
    );
    let hits_after = after.hits;

    // Changes made on the nodes directly (every node in turn, owner or not) while readers
    // keep the cache hot: each shows through the gateway within the bound.
    let readers = Readers::start(&s.gw(), 4, "cached");
    let mut delays = Vec::new();
    let mut expected = vec!["10.2.0.1".to_string()];
    for round in 0..21usize {
        let node = s.node(round % 3);
        let ip = format!("10.2.1.{round}");
        if round % 4 == 3 {
            // A deregistration, of an instance added earlier.
            let gone = expected.pop().unwrap_or_default();
            let r = node
                .call(
                    "DELETE",
                    "/nacos/v1/ns/instance",
                    &[("serviceName", "cached"), ("ip", &gone), ("port", "8080")],
                )
                .await;
            assert_eq!(r.body, "ok");
        } else {
            register(&node, "cached", &ip).await?;
            expected.push(ip);
        }
        let acked = Instant::now();
        let mut want = expected.clone();
        want.sort();
        eventually(
            FEED_BOUND,
            &format!("round {round} through the gateway"),
            || {
                let (gw, want) = (s.gw(), want.clone());
                async move { (gw.ips("cached").await == want).then_some(()) }
            },
        )
        .await?;
        delays.push(acked.elapsed());
    }
    readers.stop().await?;
    delays.sort();
    println!(
        "node change visible through the gateway after: median {:?}, max {:?} ({} changes)",
        delays[delays.len() / 2],
        delays[delays.len() - 1],
        delays.len()
    );
    let feed = gw
        .metric("nacre_gateway_cache_invalidations_total{cause=\"feed\"}")
        .await;
    assert!(feed > 0.0, "no invalidation came from the feeds");
    assert!(
        gw.metric(HITS).await > hits_after,
        "the readers never hit the cache"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_right_after_a_write_never_gets_a_cached_older_answer() -> Result<()> {
    let s = setup(&[])?;
    let gw = s.gw();
    register(&gw, "racy", "10.3.0.0").await?;
    // Readers refill the cache as fast as they can, so fetches are in flight whenever a write
    // lands: an answer fetched before a write must never be cached after it.
    let readers = Readers::start(&gw, 6, "racy");
    let mut expected = vec!["10.3.0.0".to_string()];
    for i in 1..=60 {
        let ip = format!("10.3.0.{i}");
        register(&gw, "racy", &ip).await?;
        expected.push(ip);
        expected.sort();
        assert_eq!(gw.ips("racy").await, expected, "right after write {i}");
    }
    readers.stop().await?;
    let skipped = gw
        .metric("nacre_gateway_cache_total{result=\"stale_skipped\"}")
        .await;
    println!("answers kept out of the cache as stale: {skipped}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_endpoint_answers_the_advertised_gateways_and_internal_paths_stay_hidden() -> Result<()>
{
    let s = setup(&["--advertise", "10.9.0.1:8848,10.9.0.2:9000"])?;
    let gw = s.gw();
    let r = gw.call("GET", "/nacos/serverlist", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "10.9.0.1\r\n10.9.0.2:9000");
    let r = gw
        .call("GET", "/nacos/serverlist", &[("namespace", "public")])
        .await;
    assert_eq!(r.body, "10.9.0.1\r\n10.9.0.2:9000", "query ignored");
    let hidden = gw.call("GET", "/nacre/internal/member/ping", &[]).await;
    assert_eq!(hidden.status, 404);
    let health = gw.call("GET", "/nacre/gateway/health", &[]).await;
    assert_eq!(health.status, 200);
    let ready = gw.call("GET", "/nacre/gateway/ready", &[]).await;
    assert_eq!(ready.json()["nodes"], 3);
    // A body too large to route is refused in the Nacos style, and nothing is stored.
    let big = format!("ip=10.9.9.9&port=1&metadata={}", "x".repeat(70 * 1024));
    let r = gw
        .raw(
            "POST",
            "/nacos/v1/ns/instance",
            "application/x-www-form-urlencoded",
            format!("{big}&serviceName=big").into_bytes(),
        )
        .await;
    assert_eq!(r.status, 413, "{r:?}");
    assert!(gw.ips("big").await.is_empty());
    // Client mistakes are the nodes' 4xx answers, passed through.
    let r = gw
        .call("POST", "/nacos/v1/ns/instance", &[("serviceName", "x")])
        .await;
    assert_eq!(r.status, 400, "{r:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_found_through_an_address_server_are_followed() -> Result<()> {
    let s = setup(&[])?;
    // A second gateway that learns the nodes from an address server, starting with two.
    let conf = s._root.path().join("upstreams.conf");
    let nodes: Vec<String> = (0..3)
        .map(|i| s.cluster.node(i).addr().to_string())
        .collect();
    nacre_testkit::cluster::write_cluster_conf(&conf, &nodes[..2])?;
    let server = nacre_testkit::addr_server::AddressServer::start(&conf)?;
    let gw_conf = s._root.path().join("gw2.toml");
    std::fs::write(
        &gw_conf,
        "discovery_interval_ms = 100\nprobe_interval_ms = 100\n",
    )?;
    let mut g = GatewayProcess::start(
        bin(),
        &s._root.path().join("gw2"),
        nacre_testkit::free_loopback_addr()?,
        s.cluster.secret(),
        &[
            "--upstreams-endpoint".to_string(),
            server.url(),
            "--config".to_string(),
            gw_conf.display().to_string(),
        ],
    )?;
    g.wait_ready(2, READY)?;
    nacre_testkit::cluster::write_cluster_conf(&conf, &nodes)?;
    g.wait_ready(3, READY)?;
    // Both gateways route the same service to the same owner: a write through one is read
    // through the other at once, and no node forwarded anything.
    let other = Api::new(g.addr());
    register(&other, "via-endpoint", "10.5.0.1").await?;
    assert_eq!(s.gw().ips("via-endpoint").await, vec!["10.5.0.1"]);
    let forwarded = s
        .nodes_metric("nacre_forwards_total{result=\"forwarded\"}")
        .await;
    assert_eq!(forwarded, 0.0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_found_through_dns_given_in_the_environment_are_probed_and_used() -> Result<()> {
    // Loopback has no multi-record DNS name; `localhost` resolves to 127.0.0.1 (and maybe
    // ::1, where nothing listens: that record must simply stay out of rotation).
    let root = tempfile::Builder::new()
        .prefix("nacre-gateway-dns-")
        .tempdir()?;
    let mut node = nacre_testkit::NodeProcess::start(bin(), &root.path().join("node"))?;
    node.wait_ready(READY)?;
    let secret = std::fs::read_to_string(root.path().join("node").join("cluster-secret"))?;
    // Given in the environment, as a Kubernetes Deployment would.
    let dns = format!("localhost:{}", node.addr().port());
    let mut g = GatewayProcess::start_with_env(
        bin(),
        &root.path().join("gw"),
        nacre_testkit::free_loopback_addr()?,
        secret.trim(),
        &[],
        &[("NACRE_GATEWAY_UPSTREAMS_DNS", &dns)],
    )?;
    g.wait_ready(1, READY)?;
    let gw = Api::new(g.addr());
    register(&gw, "via-dns", "10.6.0.1").await?;
    assert_eq!(gw.ips("via-dns").await, vec!["10.6.0.1"]);
    Ok(())
}

/// A node restarted under the same address that is not ready yet (its peers are cut off, so
/// it cannot load) answers 503 marked not-ready: the gateway, whose probes have not noticed
/// the restart, takes it out of rotation and replays each read on another node, so clients
/// never see those 503s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_answering_not_ready_is_skipped_and_the_request_replayed() -> Result<()> {
    let root = tempfile::tempdir()?;
    let mut cluster = TestCluster::start(bin(), root.path(), ClusterOptions::new(3).fast())?;
    cluster.wait_ready(READY)?;
    cluster.wait_rings_complete(READY)?;
    let upstreams: Vec<String> = (0..3).map(|i| cluster.node(i).addr().to_string()).collect();
    // Probes far apart: only the not-ready answer itself can take the node out of rotation.
    let mut gateway = GatewayProcess::start_with_env(
        bin(),
        &root.path().join("gw"),
        nacre_testkit::free_loopback_addr()?,
        cluster.secret(),
        &["--upstreams".to_string(), upstreams.join(",")],
        &[("NACRE_GATEWAY_PROBE_INTERVAL_MS", "60000")],
    )?;
    gateway.wait_ready(3, READY)?;
    let gw = Api::new(gateway.addr());

    cluster.kill9(2)?;
    cluster.proxy(0).cut();
    cluster.proxy(1).cut();
    cluster.restart(2)?;
    let n2 = Api::new(cluster.node(2).addr());
    eventually(READY, "the restarted node listens, not ready", || async {
        let r = n2
            .call("GET", "/nacos/v1/ns/instance/list", &[("serviceName", "x")])
            .await;
        (r.status == 503).then_some(())
    })
    .await?;
    // Services never listed before: no cached answer, each goes to its owner on the ring.
    for k in 0..40 {
        let name = format!("replayed-{k}");
        let r = gw
            .call(
                "GET",
                "/nacos/v1/ns/instance/list",
                &[("serviceName", name.as_str())],
            )
            .await;
        ensure!(r.status == 200, "{name}: {} {}", r.status, r.body);
    }
    let status = gw.call("GET", "/nacre/gateway/status", &[]).await.json();
    let advertised = cluster.advertised(2);
    let node2 = status["nodes"]
        .as_array()
        .and_then(|ns| ns.iter().find(|n| n["name"] == advertised.as_str()))
        .cloned()
        .unwrap_or_default();
    ensure!(
        node2["usable"] == false,
        "node 2 still in rotation: {status}"
    );
    cluster.proxy(0).heal();
    cluster.proxy(1).heal();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_ready_node_clients_get_a_clear_503() -> Result<()> {
    let root = tempfile::Builder::new()
        .prefix("nacre-gateway-none-")
        .tempdir()?;
    let nobody = nacre_testkit::free_loopback_addr()?;
    let g = GatewayProcess::start(
        bin(),
        &root.path().join("gw"),
        nacre_testkit::free_loopback_addr()?,
        "0123456789abcdef-secret",
        &["--upstreams".to_string(), nobody.to_string()],
    )?;
    let gw = Api::new(g.addr());
    eventually(READY, "gateway answering", || {
        let gw = gw.clone();
        async move {
            (gw.call("GET", "/nacre/gateway/health", &[]).await.status == 200).then_some(())
        }
    })
    .await?;
    let ready = gw.call("GET", "/nacre/gateway/ready", &[]).await;
    assert_eq!(ready.status, 503, "{ready:?}");
    let r = gw
        .call("GET", "/nacos/v1/ns/instance/list", &[("serviceName", "x")])
        .await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.body, "no registry node is ready");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gateway_with_the_wrong_secret_uses_no_node_and_says_why() -> Result<()> {
    let s = setup(&[])?;
    let nodes = (0..3)
        .map(|i| s.cluster.node(i).addr().to_string())
        .collect::<Vec<_>>()
        .join(",");
    let g = GatewayProcess::start(
        bin(),
        &s._root.path().join("gw-wrong"),
        nacre_testkit::free_loopback_addr()?,
        "not-the-cluster-secret",
        &["--upstreams".to_string(), nodes],
    )?;
    let gw = Api::new(g.addr());
    eventually(READY, "the secret mismatch logged", || {
        let log = g.log_tail(20_000);
        async move {
            log.contains("cluster secret is not the nodes'")
                .then_some(())
        }
    })
    .await?;
    assert_eq!(
        gw.call("GET", "/nacre/gateway/ready", &[]).await.status,
        503
    );
    let r = gw
        .call("GET", "/nacos/v1/ns/instance/list", &[("serviceName", "x")])
        .await;
    assert_eq!(r.status, 503, "{r:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_stops_the_gateway_cleanly() -> Result<()> {
    let mut s = setup(&[])?;
    let started = Instant::now();
    let status = s.gateway.terminate(Duration::from_secs(30))?;
    assert!(status.success(), "exit status {status}");
    println!("gateway stopped {:?} after SIGTERM", started.elapsed());
    Ok(())
}

/// Counts of one client loop.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    /// Milliseconds after the kill of the last failure (0: none after it).
    last_failure_ms: AtomicU64,
    /// What the first failures were.
    samples: std::sync::Mutex<Vec<String>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_a_node_under_load_keeps_clients_working() -> Result<()> {
    let mut s = setup(&[])?;
    let services: Vec<String> = (0..24).map(|i| format!("load-{i}")).collect();
    for (i, svc) in services.iter().enumerate() {
        register(&s.gw(), svc, &format!("10.4.0.{i}")).await?;
    }
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let killed_at: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    let mut clients = Vec::new();
    for c in 0..8usize {
        let (gw, tally, stop, killed_at) = (s.gw(), tally.clone(), stop.clone(), killed_at.clone());
        let services = services.clone();
        clients.push(tokio::spawn(async move {
            let mut k = c;
            while !stop.load(Ordering::Relaxed) {
                k += 1;
                let i = k % services.len();
                let svc = &services[i];
                let ip = format!("10.4.0.{i}");
                let (ok, what) = match k % 3 {
                    0 => {
                        let got = gw.ips(svc).await;
                        (got.contains(&ip), format!("list {svc}: {got:?}"))
                    }
                    1 => {
                        let r = gw
                            .form(
                                "POST",
                                "/nacos/v1/ns/instance",
                                &[("serviceName", svc), ("ip", &ip), ("port", "8080")],
                            )
                            .await;
                        (
                            r.status == 200 && r.body == "ok",
                            format!("register {svc}: {r:?}"),
                        )
                    }
                    _ => {
                        let r = gw
                            .call(
                                "PUT",
                                "/nacos/v1/ns/instance/beat",
                                &[("serviceName", svc), ("ip", &ip), ("port", "8080")],
                            )
                            .await;
                        (r.status == 200, format!("beat {svc}: {r:?}"))
                    }
                };
                if ok {
                    tally.ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    tally.failed.fetch_add(1, Ordering::Relaxed);
                    let mut samples = tally.samples.lock().unwrap_or_else(|e| e.into_inner());
                    if samples.len() < 10 {
                        samples.push(what);
                    }
                    drop(samples);
                    if let Some(at) = *killed_at.lock().unwrap_or_else(|e| e.into_inner()) {
                        let ms = at.elapsed().as_millis() as u64;
                        tally.last_failure_ms.fetch_max(ms, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    // The worst node to lose: the Raft leader (an election runs while clients keep going).
    let leader = s.node(0).call("GET", "/nacre/v1/cluster", &[]).await.json()["leader"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let victim = (0..3)
        .find(|&i| s.cluster.advertised(i) == leader)
        .unwrap_or(1);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = tally.ok.load(Ordering::Relaxed);
    *killed_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    s.cluster.kill9(victim)?;
    let kill = Instant::now();
    // Routing has recovered once the dead node is out of rotation (first refused connect or
    // missed probe), and the ring is rebuilt without it after two missed probes.
    eventually(Duration::from_secs(10), "dead node out of rotation", || {
        let gw = s.gw();
        async move {
            let v = gw.call("GET", "/nacre/gateway/ready", &[]).await.json();
            (v["nodes"] == 2).then_some(())
        }
    })
    .await?;
    let out_of_rotation = kill.elapsed();
    eventually(
        Duration::from_secs(10),
        "gateway ring without the dead node",
        || {
            let gw = s.gw();
            async move { (gw.metric("nacre_gateway_ring_members").await == 2.0).then_some(()) }
        },
    )
    .await?;
    let ring_after = kill.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await?;
    }
    let ok = tally.ok.load(Ordering::Relaxed);
    let failed = tally.failed.load(Ordering::Relaxed);
    let last = tally.last_failure_ms.load(Ordering::Relaxed);
    let retries = s.gw().metric("nacre_gateway_retries_total").await;
    println!(
        "kill -9 of node {victim} (Raft leader {leader}) under load: {ok} requests ok ({} after the kill), {failed} failed, last failure \
         {last} ms after the kill, node out of rotation after {out_of_rotation:?} and out of the ring \
         after {ring_after:?}, {retries} retries",
        ok - before
    );
    println!(
        "first failures: {:#?}",
        tally.samples.lock().unwrap_or_else(|e| e.into_inner())
    );
    assert!(ok - before > 100, "clients stalled after the kill");
    // Writes and reads of the dead node's services move to the next node; a failure is only
    // tolerable right at the kill (a request in flight on the dead node's connection).
    assert!(
        failed <= 8,
        "{failed} requests failed (last {last} ms after the kill)"
    );
    ensure!(
        last < 3_000,
        "requests still failed {last} ms after the kill"
    );
    Ok(())
}

/// A push subscriber polling through the gateway is answered from the cache after its first
/// poll, yet its node keeps it subscribed (the gateway notes it instead of proxying: rules
/// P1–P3 in `nacre_gateway::subscribe`), so a change is still pushed to it, long after the
/// node's subscriber TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_polls_keep_push_subscriptions_alive() -> Result<()> {
    let s = setup_nodes_with(
        &[("NACRE_PUSH_SUBSCRIBER_TTL_MS", "1000")],
        "push_refresh_ms = 300\n",
        &[],
    )?;
    let gw = s.gw();
    register(&gw, "noted", "10.77.0.1").await?;
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let udp = sock.local_addr()?.port().to_string();
    let query = [("serviceName", "noted"), ("udpPort", udp.as_str())];
    let poll = || gw.list(&query);
    let node_lists =
        || s.nodes_metric(r#"nacre_http_requests_total{api="GET /nacos/v1/ns/instance/list""#);
    poll().await;
    let before = node_lists().await;
    // Three seconds of polls, three subscriber TTLs.
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        poll().await;
    }
    let reached = node_lists().await - before;
    ensure!(
        reached <= 2.0,
        "{reached} of 15 polls reached a node: they should be answered from the cache"
    );
    let delivered = gw
        .metric(r#"nacre_gateway_subscriber_notes_total{result="delivered"}"#)
        .await;
    ensure!(delivered >= 1.0, "no subscriber note was delivered");
    // Still subscribed: a change is pushed to the client's UDP port.
    register(&gw, "noted", "10.77.0.2").await?;
    let mut buf = vec![0u8; 65_536];
    let got = tokio::time::timeout(Duration::from_secs(3), sock.recv_from(&mut buf)).await;
    ensure!(
        got.is_ok(),
        "no push reached the subscriber after its polls were cached"
    );
    Ok(())
}

/// Behind the gateway, pushes go to the client's own address as the gateway saw it (asserted
/// to the nodes with the cluster secret), never to what the client wrote in `clientIP`,
/// `X-Forwarded-For` or a forged assertion header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_the_gateway_pushes_go_to_the_client_the_gateway_saw() -> Result<()> {
    let s = setup(&[])?;
    // The client connects from 127.0.0.2, the gateway from 127.0.0.1: the node must use the
    // former.
    let client = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()?;
    let url = format!(
        "http://{}/nacos/v1/ns/instance/list?serviceName=aimed-gw&udpPort=41236&clientIP=10.66.0.1",
        s.gateway.addr()
    );
    let r = client
        .get(&url)
        .header("user-agent", "Nacos-Java-Client:v1.4.1")
        .header("x-forwarded-for", "10.66.0.2")
        .header("x-nacre-client-addr", "10.66.0.3")
        .header("x-nacre-asserted-by", "not-the-secret-000")
        .send()
        .await?;
    ensure!(r.status() == 200, "{}", r.text().await?);
    let mut seen = Vec::new();
    for i in 0..3 {
        let subs = s
            .node(i)
            .call(
                "GET",
                "/nacos/v1/ns/service/subscribers",
                &[("serviceName", "aimed-gw")],
            )
            .await
            .json();
        for sub in subs["subscribers"].as_array().cloned().unwrap_or_default() {
            seen.push(sub["addrStr"].as_str().unwrap_or_default().to_string());
        }
    }
    ensure!(
        seen == vec!["127.0.0.2:41236".to_string()],
        "subscriptions: {seen:?}"
    );
    Ok(())
}

/// A client over its rate limit gets 429 from the gateway itself (no node sees the request),
/// others keep being served, and probes and scrapes are never limited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_rate_limit_gets_429_and_others_are_served() -> Result<()> {
    let s = setup_with("client_rate_limit = 2\nclient_rate_burst = 5\n", &[])?;
    let list = format!(
        "http://{}/nacos/v1/ns/instance/list?serviceName=limited",
        s.gateway.addr()
    );
    let from = |last: u8| {
        reqwest::Client::builder()
            .local_address(std::net::IpAddr::from([127, 0, 0, last]))
            .build()
    };
    let greedy = from(3)?;
    let nodes_before = s.nodes_metric("nacre_http_requests_total").await;
    let mut codes = Vec::new();
    for _ in 0..12 {
        codes.push(greedy.get(&list).send().await?.status().as_u16());
    }
    let refused = codes.iter().filter(|c| **c == 429).count();
    ensure!(
        codes.iter().take(5).all(|c| *c == 200) && refused >= 6,
        "burst of 5, then refusals: {codes:?}"
    );
    let r = greedy.get(&list).send().await?;
    ensure!(r.status() == 429);
    let body = r.text().await?;
    ensure!(body.contains("too many requests from 127.0.0.3"), "{body}");
    // Its own endpoints stay open to probes and scrapers, whatever the rate.
    for _ in 0..10 {
        let h = greedy
            .get(format!("http://{}/nacre/gateway/health", s.gateway.addr()))
            .send()
            .await?;
        ensure!(h.status() == 200);
    }
    // Another client has its own budget.
    let other = from(4)?;
    ensure!(other.get(&list).send().await?.status() == 200);
    // The refused requests never reached a node (the nodes saw the 5 + 1 served ones at most;
    // cache hits are served by the gateway itself).
    let reached = s.nodes_metric("nacre_http_requests_total").await - nodes_before;
    ensure!(reached <= 6.0 + 3.0, "nodes saw {reached} requests");
    ensure!(s.gw().metric("nacre_gateway_rate_limited_total").await >= refused as f64 + 1.0);
    // After a pause the client is served again.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    ensure!(greedy.get(&list).send().await?.status() == 200);
    Ok(())
}

/// A client past its connection cap has the extra connection closed as it is accepted (no
/// request is read from it); its admitted connections and other clients are served, and a
/// place frees up when one of its connections ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_past_its_connection_cap_is_closed_at_accept_and_others_are_served() -> Result<()>
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = setup_with("client_max_connections = 3\n", &[])?;
    let gw = s.gateway.addr();
    let connect = |last: u8| async move {
        let sock = tokio::net::TcpSocket::new_v4()?;
        sock.bind(std::net::SocketAddr::from(([127, 0, 0, last], 0)))?;
        anyhow::Ok(sock.connect(gw).await?)
    };
    // One request on a kept-alive connection: the status, or None when the gateway closed it.
    let ask = |mut c: tokio::net::TcpStream| async move {
        let req = "GET /nacos/v1/ns/instance/list?serviceName=capped HTTP/1.1\r\nHost: gw\r\n\r\n";
        let _ = c.write_all(req.as_bytes()).await;
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
            .await
            .map_err(|_| anyhow::anyhow!("no answer and no close"))?
            .unwrap_or(0);
        let status = std::str::from_utf8(&buf[..n])
            .ok()
            .and_then(|t| t.split(' ').nth(1))
            .and_then(|c| c.parse::<u16>().ok());
        anyhow::Ok((status, c))
    };
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect(5).await?);
    }
    // Let the gateway accept all three before the fourth arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (fourth, _) = ask(connect(5).await?).await?;
    ensure!(
        fourth.is_none(),
        "the fourth connection was served: {fourth:?}"
    );
    ensure!(
        s.gw()
            .metric("nacre_gateway_connections_refused_total")
            .await
            >= 1.0
    );
    let (other, _) = ask(connect(6).await?).await?;
    ensure!(other == Some(200), "another client: {other:?}");
    let (first, first_conn) = ask(held.remove(0)).await?;
    ensure!(first == Some(200), "an admitted connection: {first:?}");
    drop(first_conn);
    // The freed place is taken by a new connection once the gateway has seen the close.
    let mut again = None;
    for _ in 0..50 {
        again = ask(connect(5).await?).await?.0;
        if again.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ensure!(again == Some(200), "after a close: {again:?}");
    Ok(())
}

/// Rules R1–R4 of the gateway's `beats`: beats go to their nodes in batches and every client
/// gets the answer the node gives that beat on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn beats_reach_their_nodes_in_batches_with_the_answers_nodes_give() -> Result<()> {
    // A long linger, so beats sent together surely share batches.
    let s = setup_with("beat_linger_ms = 50\n", &[])?;
    let gw = s.gw();
    for i in 0..10 {
        register(&gw, "relayed", &format!("10.7.0.{i}")).await?;
    }
    let relayed = "nacre_gateway_beats_relayed_total";
    let batches = "nacre_gateway_beat_batches_total";
    let (relayed0, batches0) = (gw.metric(relayed).await, gw.metric(batches).await);

    // Known instances: each answer is the node's (interval, code 10200).
    let beats = (0..10).map(|i| {
        let gw = gw.clone();
        async move {
            let ip = format!("10.7.0.{i}");
            let q = [
                ("serviceName", "relayed"),
                ("ip", ip.as_str()),
                ("port", "8080"),
            ];
            gw.call("PUT", "/nacos/v1/ns/instance/beat", &q).await
        }
    });
    for r in futures::future::join_all(beats).await {
        ensure!(r.status == 200, "{r:?}");
        let doc = r.json();
        ensure!(
            doc["code"] == 10200 && doc["clientBeatInterval"].is_u64(),
            "{r:?}"
        );
    }
    let sent = gw.metric(relayed).await - relayed0;
    let used = gw.metric(batches).await - batches0;
    ensure!(sent == 10.0, "10 beats relayed, counted {sent}");
    // Two gateway threads, each with its own batch per node: at most 2 × 3 batches.
    ensure!(used <= 6.0, "10 beats sent together took {used} batches");

    // An unknown instance: the same answer (20404) as from a node directly.
    let q = [
        ("serviceName", "relayed"),
        ("ip", "10.7.9.9"),
        ("port", "8080"),
    ];
    let through = gw.call("PUT", "/nacos/v1/ns/instance/beat", &q).await;
    let direct = s
        .node(1)
        .call("PUT", "/nacos/v1/ns/instance/beat", &q)
        .await;
    ensure!(
        through.status == direct.status && through.json() == direct.json(),
        "through the gateway {through:?}, from a node {direct:?}"
    );
    ensure!(through.json()["code"] == 20404, "{through:?}");

    // A full beat in a form body registers the instance it describes, as on a node.
    let beat = r#"{"ip":"10.7.1.1","port":9090,"serviceName":"DEFAULT_GROUP@@relayed","cluster":"DEFAULT","weight":1.0,"metadata":{"k":"v"}}"#;
    let r = gw
        .form(
            "PUT",
            "/nacos/v1/ns/instance/beat",
            &[("serviceName", "relayed"), ("beat", beat)],
        )
        .await;
    ensure!(r.status == 200 && r.json()["code"] == 10200, "{r:?}");
    eventually(FEED_BOUND, "the beaten instance listed", || async {
        gw.ips("relayed")
            .await
            .contains(&"10.7.1.1".to_string())
            .then_some(())
    })
    .await?;

    // A client's mistake stays the node's 400, and a beat naming no service is proxied as is.
    let bad = [
        ("serviceName", "relayed"),
        ("ip", "10.7.0.1"),
        ("port", "x"),
    ];
    let r = gw.call("PUT", "/nacos/v1/ns/instance/beat", &bad).await;
    ensure!(r.status == 400, "{r:?}");
    let before = gw.metric(relayed).await;
    let r = gw
        .call("PUT", "/nacos/v1/ns/instance/beat", &[("ip", "10.7.0.1")])
        .await;
    ensure!(r.status == 400, "{r:?}");
    ensure!(
        gw.metric(relayed).await == before,
        "a beat without a service relayed"
    );
    Ok(())
}

/// The batch route itself: only with the cluster secret, and a batch that is not one is a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_beat_batch_needs_the_cluster_secret_and_a_well_formed_body() -> Result<()> {
    let s = setup(&[])?;
    let url = format!(
        "http://{}{}",
        s.cluster.node(0).addr(),
        nacre_ring::wire::BEATS_PATH
    );
    let http = reqwest::Client::new();
    let r = http.post(&url).body("[]").send().await?;
    ensure!(r.status() == 403, "no secret: {}", r.status());
    let r = http
        .post(&url)
        .header(nacre_ring::wire::SECRET_HEADER, s.cluster.secret())
        .body("not json")
        .send()
        .await?;
    ensure!(r.status() == 400, "not a batch: {}", r.status());
    let r = http
        .post(&url)
        .header(nacre_ring::wire::SECRET_HEADER, s.cluster.secret())
        .body(r#"[{"query":"serviceName=x&ip=1.2.3.4&port=1","headers":[["bad header","v"]],"body":""}]"#)
        .send()
        .await?;
    ensure!(r.status() == 200, "{}", r.status());
    let answers: Vec<nacre_ring::wire::RelayedAnswer> = r.json().await?;
    ensure!(
        answers.len() == 1 && answers[0].status == 400,
        "a beat that is not HTTP: {answers:?}"
    );
    Ok(())
}

/// Rule R1 of the gateway's `beats` for instance writes: registers and deregisters (query or
/// form body) are relayed in batches, their answers are the node's, and the client's next list
/// through the gateway sees the write at once (the cached answer is dropped first, rule R3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_and_deregisters_are_relayed_and_read_back_at_once() -> Result<()> {
    let s = setup(&[])?;
    let gw = s.gw();
    let relayed = "nacre_gateway_writes_relayed_total";
    register(&gw, "rw", "10.6.0.1").await?;
    // Lists until one is a cache hit, so the next write must drop a cached answer.
    let deadline = Instant::now() + FEED_BOUND;
    let hits = gw.metric(HITS).await;
    while gw.metric(HITS).await == hits {
        ensure!(gw.ips("rw").await == ["10.6.0.1"], "the first register");
        ensure!(Instant::now() < deadline, "no list answered from the cache");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = gw.metric(relayed).await;
    let dropped = "nacre_gateway_cache_invalidations_total{cause=\"write\"}";
    let dropped_before = gw.metric(dropped).await;
    let q = [("serviceName", "rw"), ("ip", "10.6.0.2"), ("port", "8080")];
    let r = gw.instance("POST", &q).await;
    ensure!(r.status == 200 && r.body == "ok", "{r:?}");
    ensure!(
        gw.metric(dropped).await > dropped_before,
        "the cached answer was dropped by the write itself"
    );
    let mut ips = gw.ips("rw").await;
    ips.sort();
    ensure!(
        ips == ["10.6.0.1", "10.6.0.2"],
        "read back at once: {ips:?}"
    );
    let r = gw
        .form(
            "DELETE",
            "/nacos/v1/ns/instance",
            &[("serviceName", "rw"), ("ip", "10.6.0.1"), ("port", "8080")],
        )
        .await;
    ensure!(r.status == 200 && r.body == "ok", "{r:?}");
    ensure!(gw.ips("rw").await == ["10.6.0.2"], "deregistered at once");
    ensure!(
        gw.metric(relayed).await == before + 2.0,
        "both writes went in batches"
    );
    // A persistent instance's register goes through Raft: proxied, not batched.
    let q = [
        ("serviceName", "rw-persistent"),
        ("ip", "10.6.0.4"),
        ("port", "8080"),
        ("ephemeral", "false"),
    ];
    let r = gw.instance("POST", &q).await;
    ensure!(r.status == 200 && r.body == "ok", "{r:?}");
    ensure!(
        gw.metric(relayed).await == before + 2.0,
        "a persistent register is proxied"
    );
    ensure!(gw.ips("rw-persistent").await == ["10.6.0.4"]);
    // A client's mistake is the node's own 400.
    let bad = [("serviceName", "rw"), ("ip", "10.6.0.3"), ("port", "x")];
    let through = gw.instance("POST", &bad).await;
    let direct = s.node(0).instance("POST", &bad).await;
    ensure!(
        through.status == 400 && (through.status, &through.body) == (direct.status, &direct.body),
        "through the gateway {through:?}, from a node {direct:?}"
    );
    Ok(())
}

/// Rule B1 of the node's `api::relay`: a beat in a batch, served without the router, gets
/// exactly the answer the node gives the same beat on its own (found, not found, each kind of
/// bad parameter, a full beat in a form body), and is counted as one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b1_a_beat_in_a_batch_is_answered_as_the_same_beat_alone() -> Result<()> {
    use nacre_ring::wire::{RelayedAnswer, RelayedOp, RelayedRequest, BEATS_PATH, SECRET_HEADER};
    let s = setup(&[])?;
    register(&s.gw(), "b1", "10.9.0.1").await?;
    let node = s.node(0);
    let addr = s.cluster.node(0).addr();
    let form = "application/x-www-form-urlencoded";
    let full = r#"{"ip":"10.9.0.2","port":8080,"serviceName":"DEFAULT_GROUP@@b1","cluster":"DEFAULT","weight":1.0}"#;
    /// A name, the query, the headers.
    type Case = (&'static str, String, Vec<(String, String)>);
    let cases: Vec<Case> = vec![
        (
            "found",
            "serviceName=b1&ip=10.9.0.1&port=8080".into(),
            vec![],
        ),
        (
            "not found",
            "serviceName=b1&ip=10.9.9.9&port=8080".into(),
            vec![],
        ),
        ("no service", "ip=10.9.0.1&port=8080".into(), vec![]),
        (
            "bad port",
            "serviceName=b1&ip=10.9.0.1&port=x".into(),
            vec![],
        ),
        (
            "bad encoding",
            "serviceName=b1%FF&ip=10.9.0.1".into(),
            vec![],
        ),
        ("bad beat", "serviceName=b1&beat=%7Bnope".into(), vec![]),
        (
            "form body",
            String::new(),
            vec![("content-type".into(), form.into())],
        ),
    ];
    let body_of = |name: &str| {
        if name == "form body" {
            format!(
                "serviceName=b1&beat={}",
                form_urlencoded::byte_serialize(full.as_bytes()).collect::<String>()
            )
        } else {
            String::new()
        }
    };
    let batch: Vec<RelayedRequest> = cases
        .iter()
        .map(|(name, query, headers)| RelayedRequest {
            op: RelayedOp::Beat,
            query: query.as_str().into(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.as_str().into(), v.as_str().into()))
                .collect(),
            body: body_of(name).into(),
        })
        .collect();
    let api = "nacre_http_requests_total{api=\"PUT /nacos/v1/ns/instance/beat\"";
    let counted = node.metric(api).await;
    let direct = "nacre_relayed_requests_total{via=\"direct\"}";
    let served_direct = node.metric(direct).await;
    let r = reqwest::Client::new()
        .post(format!("http://{addr}{BEATS_PATH}"))
        .header(SECRET_HEADER, s.cluster.secret())
        .json(&batch)
        .send()
        .await?;
    ensure!(r.status() == 200, "{}", r.status());
    let answers: Vec<RelayedAnswer> = r.json().await?;
    ensure!(answers.len() == cases.len(), "{answers:?}");
    ensure!(
        node.metric(api).await == counted + cases.len() as f64,
        "each relayed beat counted as the router counts it"
    );
    ensure!(
        node.metric(direct).await == served_direct + cases.len() as f64,
        "each beat served without the router"
    );
    let http = reqwest::Client::new();
    for ((name, query, headers), relayed) in cases.iter().zip(&answers) {
        let mut req = http
            .put(format!("http://{addr}/nacos/v1/ns/instance/beat?{query}"))
            .body(body_of(name));
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let alone = req.send().await?;
        let status = alone.status().as_u16();
        let content_type = alone
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = alone.text().await?;
        let relayed_type = relayed
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v.clone());
        // Error documents carry the time they were made; compare them without it.
        let strip = |b: &str| -> String {
            match serde_json::from_str::<serde_json::Value>(b) {
                Ok(mut v) => {
                    if let Some(o) = v.as_object_mut() {
                        o.remove("timestamp");
                    }
                    v.to_string()
                }
                Err(_) => b.to_string(),
            }
        };
        ensure!(
            (relayed.status, &relayed_type, strip(&relayed.body))
                == (status, &content_type, strip(&body)),
            "{name}: relayed {relayed:?}, alone {status} {content_type:?} {body}"
        );
    }
    ensure!(answers[0].status == 200 && answers[0].body.contains("10200"));
    ensure!(answers[1].body.contains("20404"), "{:?}", answers[1]);
    ensure!(answers[2..6].iter().all(|a| a.status == 400), "{answers:?}");
    ensure!(answers[6].body.contains("10200"), "{:?}", answers[6]);
    Ok(())
}

/// Rules E2 and E4 of the gateway's `edge` for beats and cached lists: pipelined on one
/// keep-alive connection they are answered in order, a cache miss is served by the proxy path
/// on the same connection, and `Connection: close` ends the connection. (A request pipelined
/// behind one the proxy path serves closes the connection after that answer: pingora's rule.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beats_and_cached_lists_share_a_keep_alive_connection_in_order() -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
    let s = setup(&[])?;
    let gw = s.gw();
    register(&gw, "piped", "10.8.0.1").await?;
    let beat = "PUT /nacos/v1/ns/instance/beat?serviceName=piped&ip=10.8.0.1&port=8080 HTTP/1.1\r\nHost: gw\r\n\r\n";
    let list = "GET /nacos/v1/ns/instance/list?serviceName=piped HTTP/1.1\r\nHost: gw\r\n\r\n";
    let hits = gw.metric(HITS).await;
    let mut conn = BufReader::new(tokio::net::TcpStream::connect(s.gateway.addr()).await?);
    // Lists until one is answered from the cache (the first misses; the proxy path fills it).
    let deadline = Instant::now() + FEED_BOUND;
    loop {
        conn.get_mut().write_all(list.as_bytes()).await?;
        let (status, _, body) = nacre_testkit::http::read_response(&mut conn).await;
        ensure!(
            status == 200 && body.contains("10.8.0.1"),
            "{status} {body}"
        );
        if gw.metric(HITS).await > hits {
            break;
        }
        ensure!(Instant::now() < deadline, "no list answered from the cache");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let relayed = gw.metric("nacre_gateway_beats_relayed_total").await;
    let hits = gw.metric(HITS).await;
    let burst = format!("{beat}{list}{beat}{list}");
    conn.get_mut().write_all(burst.as_bytes()).await?;
    for (i, want) in ["beat", "list", "beat", "list"].iter().enumerate() {
        let (status, headers, body) = nacre_testkit::http::read_response(&mut conn).await;
        ensure!(
            status == 200,
            "answer {i} ({want}): {status} {headers:?} {body}"
        );
        match *want {
            "beat" => ensure!(body.contains("\"code\":10200"), "answer {i}: {body}"),
            _ => ensure!(body.contains("10.8.0.1"), "answer {i}: {body}"),
        }
    }
    ensure!(gw.metric("nacre_gateway_beats_relayed_total").await == relayed + 2.0);
    ensure!(gw.metric(HITS).await == hits + 2.0);
    let closing = beat.replace("Host: gw\r\n", "Host: gw\r\nConnection: close\r\n");
    conn.get_mut().write_all(closing.as_bytes()).await?;
    let (status, headers, _) = nacre_testkit::http::read_response(&mut conn).await;
    ensure!(status == 200, "{headers:?}");
    ensure!(
        headers.contains(&("connection".into(), "close".into())),
        "{headers:?}"
    );
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest).await?;
    ensure!(rest.is_empty(), "the connection closed after the answer");
    Ok(())
}
