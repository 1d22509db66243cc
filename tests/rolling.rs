//! Rolling restarts and scaling, played the way Kubernetes plays them, under client load.
//!
//! The cluster learns its members from an address server (standing in for the headless
//! Service's DNS answers); every node sits behind a proxy whose address is its stable name
//! (the pod's DNS name), so a node can come back on a new port (a new pod IP) under the same
//! name. Two gateways, also following the address server, are the one address (a client given
//! both fails over between them, as it would between a Service's endpoints).
//!
//! While it runs, clients work through the gateways only: a fleet of ephemeral instances beats
//! as 1.x clients do (moving to the other gateway when one does not answer), a client lists
//! every service, a writer registers persistent instances and a reader checks them, and the
//! real legacy Node client (npm `nacos`, `compat/node/rolling_clients.js`), given both
//! gateways as its server list, keeps its own instances beating and lists them every 200 ms. The test
//! then asks for zero client-visible failures (a beat, list or write no gateway answered),
//! zero live instances missing or unhealthy in any list, zero forgotten instances (20404) and
//! zero acknowledged writes lost, and prints the figures.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use nacre_testkit::addr_server::AddressServer;
use nacre_testkit::cluster::{ClusterOptions, TestCluster};
use nacre_testkit::fleet::{Fleet, FleetSpec, LiveChecker, Targets};
use nacre_testkit::gateway::GatewayProcess;
use nacre_testkit::http::Api;
use nacre_testkit::ledger::Ledger;

const READY: Duration = Duration::from_secs(60);
/// Kubernetes' default grace period.
const STOP: Duration = Duration::from_secs(30);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_nacre"))
}

/// A cluster following an address server, and two gateways following it too.
struct Site {
    _server: AddressServer,
    cluster: TestCluster,
    gateways: Vec<GatewayProcess>,
}

impl Site {
    fn start(root: &Path, nodes: usize) -> Result<Site> {
        // The address server answers whatever `<root>/cluster.conf` says at the time.
        let server = AddressServer::start(&root.join("cluster.conf"))?;
        let opts = ClusterOptions::new(nodes)
            .with_members_endpoint(&server.url())
            .fast();
        let mut cluster = TestCluster::start(bin(), root, opts)?;
        cluster.wait_ready(READY)?;
        let mut gateways = Vec::new();
        for k in 0..2 {
            let args = vec!["--upstreams-endpoint".to_string(), server.url()];
            let env = [
                ("NACRE_GATEWAY_DISCOVERY_INTERVAL_MS", "200"),
                ("NACRE_GATEWAY_PROBE_INTERVAL_MS", "200"),
            ];
            let mut g = GatewayProcess::start_with_env(
                bin(),
                &root.join(format!("gw-{k}")),
                nacre_testkit::free_loopback_addr()?,
                cluster.secret(),
                &args,
                &env,
            )?;
            g.wait_ready(nodes, READY)?;
            gateways.push(g);
        }
        Ok(Site {
            _server: server,
            cluster,
            gateways,
        })
    }

    fn gateway_addrs(&self) -> Vec<SocketAddr> {
        self.gateways.iter().map(GatewayProcess::addr).collect()
    }

    /// Restarts the gateways one at a time (SIGTERM, start, ready), as a Deployment rollout.
    fn roll_gateways(&mut self, nodes: usize) -> Result<()> {
        for g in &mut self.gateways {
            g.terminate(STOP)?;
            g.restart()?;
            g.wait_ready(nodes, READY)?;
        }
        Ok(())
    }

    fn logs(&self) -> String {
        let mut out = self.cluster.log_tails();
        for (k, g) in self.gateways.iter().enumerate() {
            out.push_str(&format!("\n--- gateway {k} ---\n{}", g.log_tail(3000)));
        }
        out
    }
}

/// A client listing every fleet service through the gateways, trying the other gateway when
/// one does not answer; counts the lists no gateway answered, and keeps the first few answers
/// of those.
struct Lister {
    stop: Arc<AtomicBool>,
    lists: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    examples: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Lister {
    fn start(services: Vec<String>, gateways: Vec<SocketAddr>) -> Lister {
        let stop = Arc::new(AtomicBool::new(false));
        let lists = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let examples = Arc::new(Mutex::new(Vec::new()));
        let (s, l, f, ex) = (
            stop.clone(),
            lists.clone(),
            failed.clone(),
            examples.clone(),
        );
        let task = tokio::spawn(async move {
            let apis: Vec<Api> = gateways
                .iter()
                .map(|g| Api::new(*g).with_timeout(Duration::from_secs(2)))
                .collect();
            let mut turn = 0usize;
            while !s.load(Ordering::Relaxed) {
                for service in &services {
                    turn += 1;
                    let mut why = Vec::new();
                    for k in 0..apis.len() {
                        let api = &apis[(turn + k) % apis.len()];
                        let query = [("serviceName", service.as_str())];
                        let r = api.call("GET", "/nacos/v1/ns/instance/list", &query).await;
                        if r.status == 200 {
                            why.clear();
                            break;
                        }
                        let body: String = r.body.chars().take(160).collect();
                        why.push(format!("{} {body}", r.status));
                    }
                    l.fetch_add(1, Ordering::Relaxed);
                    if !why.is_empty() {
                        f.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut e) = ex.lock() {
                            if e.len() < 5 {
                                e.push(format!("{service}: {}", why.join(" / ")));
                            }
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Lister {
            stop,
            lists,
            failed,
            examples,
            task,
        }
    }

    async fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        if let Ok(e) = self.examples.lock() {
            if !e.is_empty() {
                println!("unanswered lists (first ones): {e:?}");
            }
        }
        (
            self.lists.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// The real legacy Node client (`compat/node/rolling_clients.js`): registers instances that it
/// beats itself and lists them from the servers every 200 ms, given both gateways as its
/// server list; prints its figures on SIGTERM.
struct LegacyClient {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl LegacyClient {
    fn start(service: &str, gateways: &[SocketAddr]) -> Result<LegacyClient> {
        let dir = nacre_testkit::repo_root().join("compat/node");
        ensure!(
            dir.join("node_modules/nacos").is_dir(),
            "the legacy Node client is not installed: run scripts/install-legacy-clients.sh"
        );
        let servers: Vec<String> = gateways.iter().map(ToString::to_string).collect();
        let mut child = Command::new("node")
            .arg(dir.join("rolling_clients.js"))
            .args(["--servers", &servers.join(","), "--service", service])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawning the legacy Node client")?;
        let out = child.stdout.take().context("stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let client = LegacyClient { child, lines };
        let ready = client
            .lines
            .recv_timeout(READY)
            .context("the legacy client never got its instances listed")?;
        ensure!(ready == "READY", "legacy client: {ready}");
        Ok(client)
    }

    /// Stops it (SIGTERM) and returns its figures.
    fn finish(mut self) -> Result<serde_json::Value> {
        let pid = i32::try_from(self.child.id()).context("pid")?;
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .context("sending SIGTERM")?;
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(10))
            .context("the legacy client printed no figures")?;
        let _ = self.child.wait();
        Ok(serde_json::from_str(&line)?)
    }
}

/// The client load: fleet beats, lists, the live checker and the persistent-write ledger.
struct Load {
    legacy: LegacyClient,
    fleet: Fleet,
    beating: tokio::task::JoinHandle<()>,
    checker: LiveChecker,
    lister: Lister,
    ledger: Ledger,
    started: Instant,
}

impl Load {
    /// Client-visible failures so far (beats, lists), for progress lines.
    fn failures(&self) -> String {
        format!(
            "beats unanswered {}, failed over {}, lists unanswered {}",
            self.fleet.beats.unanswered.load(Ordering::Relaxed),
            self.fleet.beats.failed.load(Ordering::Relaxed),
            self.lister.failed.load(Ordering::Relaxed)
        )
    }

    async fn start(prefix: &str, gateways: Vec<SocketAddr>) -> Result<Load> {
        let fleet = Fleet::register(FleetSpec::new(prefix, 20, 5), &gateways).await?;
        let targets = Targets::new(gateways.clone());
        let beating = fleet.start_beating(targets.clone());
        let checker = LiveChecker::start(&fleet, targets.clone(), Duration::from_millis(200));
        let lister = Lister::start(fleet.services(), gateways.clone());
        let ledger = Ledger::start(
            &format!("{prefix}-ledger"),
            targets.clone(),
            targets,
            Duration::from_millis(100),
        );
        let service = format!("{prefix}-legacy");
        let gws = gateways;
        let legacy =
            tokio::task::spawn_blocking(move || LegacyClient::start(&service, &gws)).await??;
        Ok(Load {
            legacy,
            fleet,
            beating,
            checker,
            lister,
            ledger,
            started: Instant::now(),
        })
    }

    /// Stops the load, checks it against the cluster's nodes, and prints the figures.
    async fn finish(mut self, what: &str, nodes: &[SocketAddr], logs: &str) -> Result<()> {
        // Let the last changes settle into every list before the final checks.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let violations = self.checker.finish().await;
        self.fleet.stop();
        let _ = self.beating.await;
        let (lists, lists_failed) = self.lister.finish().await;
        let legacy = tokio::task::spawn_blocking(move || self.legacy.finish()).await??;
        self.ledger.stop().await;
        let writes = self.ledger.writes();
        let acked = writes.iter().filter(|w| w.acked).count();
        let mut lost_writes = Vec::new();
        for n in nodes {
            let missing = self
                .ledger
                .missing_on(*n)
                .await
                .with_context(|| format!("node {n} does not answer the final read"))?;
            lost_writes.extend(missing.into_iter().map(|ip| format!("{ip} on {n}")));
        }
        let regressions = self.ledger.regressions();
        let b = &self.fleet.beats;
        let (ok, lost, failed, unanswered) = (
            b.ok.load(Ordering::Relaxed),
            b.lost.load(Ordering::Relaxed),
            b.failed.load(Ordering::Relaxed),
            b.unanswered.load(Ordering::Relaxed),
        );
        let figures = serde_json::json!({
            "scenario": what,
            "seconds": self.started.elapsed().as_secs_f64(),
            "instances": self.fleet.members().len(),
            "beats_ok": ok,
            "beat_attempts_failed_over": failed,
            "beats_unanswered": unanswered,
            "beats_answered_20404": lost,
            "lists": lists,
            "lists_unanswered": lists_failed,
            "live_instances_missing_or_unhealthy": violations.len(),
            "writes": writes.len(),
            "writes_acked": acked,
            "writes_unacked": writes.len() - acked,
            "acked_writes_lost": lost_writes.len(),
            "read_regressions": regressions.len(),
            "legacy_node_client": legacy,
        });
        println!("rolling figures: {figures}");
        let forgotten = self.fleet.lost_examples();
        if !forgotten.is_empty() {
            println!("beats answered 20404 (first ones): {forgotten:?}");
        }
        ensure!(
            violations.is_empty() && lost == 0,
            "live instances missing or forgotten: {:?} {:?}\n{figures}\n{logs}",
            violations.iter().take(5).collect::<Vec<_>>(),
            self.fleet.lost_examples()
        );
        ensure!(
            unanswered == 0 && lists_failed == 0 && acked == writes.len(),
            "client requests failed: {figures}\n{logs}"
        );
        ensure!(
            legacy["list_errors"] == 0 && legacy["lists_missing_instances"] == 0,
            "the legacy Node client failed a list or missed its instances: {figures}\n{logs}"
        );
        ensure!(
            lost_writes.is_empty() && regressions.is_empty(),
            "acknowledged writes lost {lost_writes:?} or read back in time {:?}: {figures}\n{logs}",
            regressions.iter().take(5).collect::<Vec<_>>()
        );
        Ok(())
    }
}

fn node_addrs(c: &TestCluster) -> Vec<SocketAddr> {
    c.member_indices()
        .into_iter()
        .map(|i| c.node(i).addr())
        .collect()
}

/// Waits until node `i` counts `n` Raft voters.
async fn raft_voters(c: &TestCluster, i: usize, n: usize) -> Result<()> {
    let api = Api::new(c.node(i).addr());
    let deadline = Instant::now() + READY;
    loop {
        let v = api.call("GET", "/nacre/v1/cluster", &[]).await;
        if v.status == 200 && v.json()["raftNodes"].as_array().map(Vec::len) == Some(n) {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "never {n} Raft voters: {}",
            v.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_nodes_and_gateways_loses_nothing_a_client_sees() -> Result<()> {
    let root = tempfile::tempdir()?;
    let mut site = Site::start(root.path(), 3)?;
    let load = Load::start("roll", site.gateway_addrs()).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Nodes, highest ordinal first as a StatefulSet does: SIGTERM, a new pod IP behind the same
    // name, wait for readiness before the next.
    for i in (0..3).rev() {
        let t = Instant::now();
        site.cluster.replace_node(i, STOP)?;
        site.cluster.node_mut(i).wait_ready(READY)?;
        println!(
            "node {i} replaced (now at {}) and ready in {:.1} s; {}",
            site.cluster.node(i).addr(),
            t.elapsed().as_secs_f64(),
            load.failures()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Then the gateways, one at a time.
    let t = Instant::now();
    site.roll_gateways(3)?;
    println!(
        "gateways rolled in {:.1} s; {}",
        t.elapsed().as_secs_f64(),
        load.failures()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;

    let nodes = node_addrs(&site.cluster);
    let logs = site.logs();
    load.finish("rolling restart", &nodes, &logs).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_from_three_to_five_and_back_loses_nothing_a_client_sees() -> Result<()> {
    let root = tempfile::tempdir()?;
    let mut site = Site::start(root.path(), 3)?;
    let load = Load::start("scale", site.gateway_addrs()).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // 3 -> 5: the new members are added to the address server's list, then started.
    let t = Instant::now();
    let added = [site.cluster.add_node()?, site.cluster.add_node()?];
    for &i in &added {
        site.cluster.node_mut(i).wait_ready(READY)?;
    }
    raft_voters(&site.cluster, 0, 5).await?;
    for g in &mut site.gateways {
        g.wait_ready(5, READY)?;
    }
    println!("3 -> 5 in {:.1} s", t.elapsed().as_secs_f64());
    tokio::time::sleep(Duration::from_secs(2)).await;

    // 5 -> 3, as docs/operations.md says: out of the list first, Raft shrinks, then the pods
    // stop (SIGTERM).
    let t = Instant::now();
    let conf = site
        .cluster
        .members_file()
        .context("the cluster has a members file")?
        .to_path_buf();
    let keep: Vec<String> = (0..3).map(|i| site.cluster.advertised(i)).collect();
    let tmp = conf.with_extension("tmp");
    std::fs::write(&tmp, format!("{}\n", keep.join("\n")))?;
    std::fs::rename(&tmp, &conf)?;
    raft_voters(&site.cluster, 0, 3).await?;
    for &i in &added {
        site.cluster.node_mut(i).terminate(STOP)?;
        site.cluster.remove_node(i)?;
    }
    for g in &mut site.gateways {
        g.wait_ready(3, READY)?;
    }
    println!("5 -> 3 in {:.1} s", t.elapsed().as_secs_f64());
    tokio::time::sleep(Duration::from_secs(1)).await;

    let nodes = node_addrs(&site.cluster);
    let logs = site.logs();
    load.finish("scale 3 -> 5 -> 3", &nodes, &logs).await
}
