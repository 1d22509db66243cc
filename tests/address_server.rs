//! `nacre address-server` and the endpoint long-poll (rules E1–E3 of
//! `nacre_config::serverlist`), with real processes on loopback.
//!
//! Nodes and a gateway follow the address server with their polling interval set to a minute,
//! so only a held read can bring them a change within seconds. A member added to the file
//! reaches the followers as soon as the server has read the file; the gateway's own
//! `/nacos/serverlist` answers plain reads in the legacy format and holds reads too. A
//! follower of a Nacos-style server (no digest) keeps polling: `tests/cluster.rs`
//! `members_from_an_address_server_form_and_follow_the_cluster` and `tests/gateway.rs`
//! `nodes_found_through_an_address_server_are_followed` run against such a server.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use nacre_config::serverlist::{DIGEST_HEADER, WAIT_PARAM};
use nacre_testkit::cluster::{ClusterOptions, TestCluster};
use nacre_testkit::gateway::GatewayProcess;
use nacre_testkit::http::{eventually, Api};

const READY: Duration = Duration::from_secs(60);
/// Polling this slow cannot explain a change seen within seconds.
const SLOW_POLL: &str = "60000";

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_nacre"))
}

/// A running `nacre address-server`, killed on drop.
struct AddressServerProcess {
    child: Child,
    addr: SocketAddr,
}

impl AddressServerProcess {
    fn start(file: &Path, log: &Path) -> Result<AddressServerProcess> {
        let addr = nacre_testkit::free_loopback_addr()?;
        let out = std::fs::File::create(log)?;
        let child = Command::new(bin())
            .args(["address-server", "--listen", &addr.to_string()])
            .arg("--members-file")
            .arg(file)
            .args(["--interval-ms", "100"])
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("spawning nacre address-server")?;
        Ok(AddressServerProcess { child, addr })
    }

    fn url(&self) -> String {
        format!("http://{}/nacos/serverlist", self.addr)
    }
}

impl Drop for AddressServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The list's lines and its digest, from a plain read.
async fn read(api: &Api) -> (Vec<String>, String) {
    let r = api.call("GET", "/nacos/serverlist", &[]).await;
    let lines = r.body.split("\r\n").map(str::to_string).collect();
    (lines, r.header(DIGEST_HEADER).unwrap_or("").to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_added_to_the_file_reaches_nodes_and_gateways_at_once() -> Result<()> {
    let root = tempfile::tempdir()?;
    let conf = root.path().join("cluster.conf");
    // A stand-in list until the cluster writes its members: followers that read it first learn
    // the real list through a held read.
    std::fs::write(&conf, "127.0.0.1:1\n")?;
    let server = AddressServerProcess::start(&conf, &root.path().join("address-server.log"))?;
    let api = Api::new(server.addr);
    eventually(READY, "the address server answers", || async {
        (api.call("GET", "/nacos/serverlist", &[]).await.status == 200).then_some(())
    })
    .await?;

    let opts = ClusterOptions::new(3)
        .with_members_endpoint(&server.url())
        .fast()
        .with_env("NACRE_DISCOVERY_INTERVAL_MS", SLOW_POLL);
    let mut cluster = TestCluster::start(bin(), root.path(), opts)?;
    cluster.wait_ready(READY)?;
    let mut gateway = GatewayProcess::start_with_env(
        bin(),
        &root.path().join("gw"),
        nacre_testkit::free_loopback_addr()?,
        cluster.secret(),
        &["--upstreams-endpoint".to_string(), server.url()],
        &[
            ("NACRE_GATEWAY_DISCOVERY_INTERVAL_MS", SLOW_POLL),
            ("NACRE_GATEWAY_PROBE_INTERVAL_MS", "100"),
        ],
    )?;
    gateway.wait_ready(3, READY)?;

    // A plain read: the legacy format, and the digest for a held one.
    let (lines, digest) = read(&api).await;
    ensure!(lines.len() == 3 && digest.len() == 16, "{lines:?} {digest}");
    let held = {
        let api = api.clone();
        let digest = digest.clone();
        tokio::spawn(async move {
            let r = api
                .call_with_headers(
                    "GET",
                    "/nacos/serverlist",
                    &[(WAIT_PARAM, "20000")],
                    &[(DIGEST_HEADER, digest.as_str())],
                )
                .await;
            (Instant::now(), r)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    ensure!(
        !held.is_finished(),
        "a read naming the current list was not held"
    );

    let written = Instant::now();
    let added = cluster.add_node()?;
    let name = cluster.advertised(added);
    let (answered, reply) = held.await?;
    let to_server = answered.duration_since(written);
    ensure!(
        reply.status == 200 && reply.body.contains(&name),
        "{}",
        reply.body
    );
    ensure!(reply.header(DIGEST_HEADER) != Some(digest.as_str()));

    // Node 0 learns the member from its held read, before the new node is even ready.
    let n0 = Api::new(cluster.node(0).addr());
    let to_node = eventually(READY, "node 0 has the new member", || async {
        let v = n0.call("GET", "/nacre/v1/cluster", &[]).await.json();
        let has = v["members"]
            .as_array()
            .is_some_and(|ms| ms.iter().any(|m| m["address"] == name.as_str()));
        has.then(|| written.elapsed())
    })
    .await?;
    cluster.node_mut(added).wait_ready(READY)?;
    let ready = written.elapsed();
    let gw = Api::new(gateway.addr());
    let to_gateway = eventually(READY, "the gateway routes to the new node", || async {
        let s = gw.call("GET", "/nacre/gateway/status", &[]).await.json();
        let usable = s["nodes"].as_array().is_some_and(|ns| {
            ns.iter()
                .any(|n| n["name"] == name.as_str() && n["usable"] == true)
        });
        usable.then(|| written.elapsed())
    })
    .await?;
    println!(
        "member added: held read answered after {} ms, node 0 listed it after {} ms, the new node was ready after {} ms, the gateway routed to it after {} ms (followers poll every {SLOW_POLL} ms)",
        to_server.as_millis(),
        to_node.as_millis(),
        ready.as_millis(),
        to_gateway.as_millis()
    );
    ensure!(to_server < Duration::from_secs(2), "{to_server:?}");
    ensure!(to_node < Duration::from_secs(10) && to_gateway < Duration::from_secs(10));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_serverlist_is_plain_for_legacy_clients_and_holds_when_asked() -> Result<()> {
    let root = tempfile::tempdir()?;
    let (_cluster, gateway) =
        GatewayProcess::with_cluster(bin(), root.path(), ClusterOptions::new(1), READY)?;
    let gw = Api::new(gateway.addr());
    let plain = gw.call("GET", "/nacos/serverlist", &[]).await;
    ensure!(plain.status == 200, "{}", plain.body);
    ensure!(!plain.body.contains('\n') || plain.body.contains("\r\n"));
    let digest = plain
        .header(DIGEST_HEADER)
        .context("digest header")?
        .to_string();
    let held = |d: String| {
        let gw = gw.clone();
        async move {
            let t = Instant::now();
            let r = gw
                .call_with_headers(
                    "GET",
                    "/nacos/serverlist",
                    &[(WAIT_PARAM, "600")],
                    &[(DIGEST_HEADER, d.as_str())],
                )
                .await;
            (t.elapsed(), r)
        }
    };
    let (waited, r) = held(digest.clone()).await;
    ensure!(r.status == 200 && r.body == plain.body, "{}", r.body);
    ensure!(waited >= Duration::from_millis(550), "not held: {waited:?}");
    let (waited, r) = held("0000000000000000".to_string()).await;
    ensure!(r.status == 200 && r.body == plain.body, "{}", r.body);
    ensure!(
        waited < Duration::from_millis(500),
        "held for another list: {waited:?}"
    );
    Ok(())
}
