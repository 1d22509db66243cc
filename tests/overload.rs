//! Graceful overload (rules G1, G2 in `registry::overload`, G3 in `nacre_ring::turns`, E6 in
//! `registry::distro`), on a real node process flooded with more list renders than two cores
//! can serve while a fleet keeps beating. As configured by default it has the lists (and its
//! UDP pushes) wait their turns and answers every one; with read shedding on it turns a share
//! away with Nacos's 503. Either way it serves every beat, loses no instance, and serves every
//! list again once the flood stops. A gateway on two threads in front of three nodes, flooded
//! with lists it answers from its cache, has them wait their turns the same way.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Result};
use nacre_testkit::cluster::{ClusterOptions, TestCluster};
use nacre_testkit::fleet::{Fleet, FleetSpec, Targets};
use nacre_testkit::gateway::GatewayProcess;
use nacre_testkit::http::{eventually, Api};
use nacre_testkit::subscriber::PushChecker;
use nacre_testkit::NodeProcess;

/// Instances of the service the flood lists: enough that each render costs real CPU.
const HEAVY_INSTANCES: usize = 1_500;
/// Concurrent listers: far more renders than two cores keep up with.
const FLOODERS: usize = 32;
const FLOOD_FOR: Duration = Duration::from_secs(8);

#[derive(Default)]
struct Answers {
    ok: AtomicU64,
    shed: AtomicU64,
    other: AtomicU64,
    /// Pushes received by the UDP subscriber watching a churned fleet, when there is one.
    pushed: AtomicU64,
}

/// Registers the heavy service, its instances kept alive by long `preserved.*` timeouts.
async fn register_heavy(api: &Api) -> Result<()> {
    let metadata =
        r#"{"preserved.heart.beat.timeout":"600000","preserved.ip.delete.timeout":"600000"}"#;
    for chunk in (0..HEAVY_INSTANCES).collect::<Vec<_>>().chunks(50) {
        let regs = chunk.iter().map(|n| {
            let ip = format!("10.7.{}.{}", n / 250, n % 250 + 1);
            async move {
                api.instance(
                    "POST",
                    &[
                        ("serviceName", "heavy"),
                        ("ip", &ip),
                        ("port", "8080"),
                        ("metadata", metadata),
                    ],
                )
                .await
                .body
                    == "ok"
            }
        });
        let done = futures::future::join_all(regs).await;
        ensure!(
            done.iter().all(|ok| *ok),
            "registering the heavy service failed"
        );
    }
    Ok(())
}

/// How a flood runs, and where.
struct Flood {
    /// Where every client request goes: a node, or a gateway in front of the nodes.
    entry: SocketAddr,
    /// The nodes, whose metrics tell which beats they turned away and what expired.
    nodes: Vec<SocketAddr>,
    /// Connections listing the heavy service as fast as they can.
    flooders: usize,
    /// Each list a new variant, so every one is rendered; else they are one cached answer.
    distinct: bool,
    /// A UDP subscriber also watches a second, beating fleet whose services change every
    /// 300 ms (the testkit's `PushChecker`): every push it gets must show every live instance.
    pushes: bool,
}

impl Flood {
    /// Node-rendered lists flooding one node.
    fn node(node: &NodeProcess, pushes: bool) -> Flood {
        Flood {
            entry: node.addr(),
            nodes: vec![node.addr()],
            flooders: FLOODERS,
            distinct: true,
            pushes,
        }
    }

    /// The sum of metric `name` over the nodes.
    async fn nodes_metric(&self, name: &str) -> f64 {
        let mut sum = 0.0;
        for node in &self.nodes {
            sum += Api::new(*node).metric(name).await;
        }
        sum
    }
}

/// `flooders` loops listing the heavy service at `addr` until `stop`; with `distinct`, each
/// request a new variant so every one is rendered.
fn flood(
    addr: SocketAddr,
    flooders: usize,
    distinct: bool,
    answers: Arc<Answers>,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..flooders)
        .map(|f| {
            let (answers, stop) = (answers.clone(), stop.clone());
            tokio::spawn(async move {
                let api = Api::new(addr).with_timeout(Duration::from_secs(10));
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let env = match distinct {
                        true => format!("flood-{f}-{n}"),
                        false => String::new(),
                    };
                    let r = api
                        .call(
                            "GET",
                            "/nacos/v1/ns/instance/list",
                            &[("serviceName", "heavy"), ("env", &env)],
                        )
                        .await;
                    let counter = match r.status {
                        200 => &answers.ok,
                        503 if r.body.contains("overloaded")
                            && r.header("retry-after") == Some("1") =>
                        {
                            &answers.shed
                        }
                        _ => &answers.other,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect()
}

/// A node flooded for [`FLOOD_FOR`] while a fleet beats: the flood's answers, then the checks
/// every overloaded node must pass (lists served again at once, no beat turned away or
/// forgotten, nothing expired, every instance listed healthy).
async fn flood_while_beating(run: &Flood) -> Result<Arc<Answers>> {
    let addr = run.entry;
    let api = Api::new(addr);
    register_heavy(&api).await?;
    // 20 instances beating every 500 ms, unhealthy after 3 s and removed after 6 s of silence.
    let fleet = Fleet::register(FleetSpec::new("live", 4, 5), &[addr]).await?;
    let beating = fleet.start_beating(Targets::new(vec![addr]));
    let watched = match run.pushes {
        true => {
            let watched = Fleet::register(FleetSpec::new("watched", 2, 2), &[addr]).await?;
            let beating = watched.start_beating(Targets::new(vec![addr]));
            let targets = Targets::new(vec![addr]);
            let checker = PushChecker::start(&watched, targets.clone(), targets).await?;
            Some((watched, beating, checker))
        }
        false => None,
    };

    let answers = Arc::new(Answers::default());
    let stop = Arc::new(AtomicBool::new(false));
    let flooders = flood(
        addr,
        run.flooders,
        run.distinct,
        answers.clone(),
        stop.clone(),
    );
    tokio::time::sleep(FLOOD_FOR).await;
    stop.store(true, Ordering::Relaxed);
    futures::future::join_all(flooders).await;
    eprintln!(
        "flood answers: {} served, {} shed, {} other",
        answers.ok.load(Ordering::Relaxed),
        answers.shed.load(Ordering::Relaxed),
        answers.other.load(Ordering::Relaxed)
    );

    // Backed off: every read is served again within a few seconds.
    eventually(Duration::from_secs(5), "lists served again", || async {
        for _ in 0..20 {
            if api
                .call(
                    "GET",
                    "/nacos/v1/ns/instance/list",
                    &[("serviceName", "heavy")],
                )
                .await
                .status
                != 200
            {
                return None;
            }
        }
        Some(())
    })
    .await?;

    tokio::time::sleep(Duration::from_secs(1)).await;
    fleet.stop();
    beating.await?;
    if let Some((watched, beating, checker)) = watched {
        let pushed = checker.counts.received.load(Ordering::Relaxed);
        let violations = checker.finish().await;
        watched.stop();
        beating.await?;
        ensure!(
            violations.is_empty(),
            "pushes missed live instances: {violations:?}"
        );
        ensure!(pushed > 0, "no push reached the subscriber");
        answers.pushed.store(pushed, Ordering::Relaxed);
    }
    let beats = &fleet.beats;
    ensure!(
        beats.lost.load(Ordering::Relaxed) == 0,
        "live instances were forgotten: {:?}",
        fleet.lost_examples()
    );
    ensure!(beats.ok.load(Ordering::Relaxed) > 0, "no beat was answered");
    let shed_beats = run
        .nodes_metric(
            r#"nacre_http_requests_total{api="PUT /nacos/v1/ns/instance/beat",status="503"}"#,
        )
        .await;
    ensure!(shed_beats == 0.0, "{shed_beats} beats were turned away");
    let expired = run.nodes_metric("nacre_expirations_total").await;
    ensure!(
        expired == 0.0,
        "{expired} instances expired while their clients beat"
    );
    for service in fleet.services() {
        let hosts = api.hosts(&service).await;
        ensure!(
            hosts.len() == 5 && hosts.iter().all(|h| h["healthy"] == true),
            "{service} lost live instances: {hosts:?}"
        );
    }
    Ok(answers)
}

/// A node started with `env` and flooded while a fleet beats ([`flood_while_beating`]), with
/// its flood's answers: served, shed, other.
async fn flooded_node(
    dir: &Path,
    env: &[(&str, &str)],
    pushes: bool,
) -> Result<(NodeProcess, Arc<Answers>)> {
    let mut node = NodeProcess::start_with_env(Path::new(env!("CARGO_BIN_EXE_nacre")), dir, env)?;
    node.wait_ready(Duration::from_secs(20))?;
    let answers = flood_while_beating(&Flood::node(&node, pushes)).await?;
    Ok((node, answers))
}

/// The flood's answers: served, shed, other.
fn counts(answers: &Answers) -> (u64, u64, u64) {
    (
        answers.ok.load(Ordering::Relaxed),
        answers.shed.load(Ordering::Relaxed),
        answers.other.load(Ordering::Relaxed),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_node_sheds_reads_serves_every_beat_and_recovers() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (node, answers) =
        flooded_node(dir.path(), &[("NACRE_OVERLOAD_LAG_MS", "50")], false).await?;
    let (ok, shed, other) = counts(&answers);
    ensure!(
        shed > 0,
        "the node never shed a list under the flood ({ok} served)"
    );
    ensure!(ok > 0, "the node shed every list ({shed} shed)");
    ensure!(
        other == 0,
        "{other} lists got neither an answer nor the overload 503"
    );
    ensure!(
        Api::new(node.addr())
            .metric("nacre_overload_shed_total")
            .await
            >= shed as f64,
        "the shed counter missed some"
    );
    Ok(())
}

/// Checks that with reads never shed every list of the flood was answered and that reads
/// waited for turns (`waited`, a metric of `server`); returns how many waited.
async fn all_answered_after_waits(
    answers: &Answers,
    server: SocketAddr,
    waited: &str,
) -> Result<f64> {
    let (ok, shed, other) = counts(answers);
    ensure!(ok > 0, "no list was answered under the flood");
    ensure!(
        shed == 0 && other == 0,
        "{shed} lists were shed and {other} failed with reads never shed"
    );
    let n = Api::new(server).metric(waited).await;
    ensure!(
        n > 0.0,
        "no read waited for a turn under the flood ({ok} served)"
    );
    Ok(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooded_node_has_reads_and_pushes_wait_their_turn_and_answers_every_one() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // Read turns on and no read shed, as by default, but from the first connection on: the
    // flood's few dozen connections are no crowd by the default measure.
    let (node, answers) =
        flooded_node(dir.path(), &[("NACRE_READ_TURNS_CROWD", "0")], true).await?;
    let waited =
        all_answered_after_waits(&answers, node.addr(), "nacre_read_turns_waited_total").await?;
    let pushes_waited = Api::new(node.addr())
        .metric("nacre_push_turns_waited_total")
        .await;
    ensure!(
        pushes_waited > 0.0,
        "no push waited for a turn under the flood"
    );
    eprintln!(
        "{waited} reads and {pushes_waited} pushes waited for their turn; {} pushes received",
        answers.pushed.load(Ordering::Relaxed)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooded_gateway_on_two_threads_has_reads_wait_their_turn_and_keeps_every_instance(
) -> Result<()> {
    let root = tempfile::tempdir()?;
    let bin = Path::new(env!("CARGO_BIN_EXE_nacre"));
    let mut cluster = TestCluster::start(bin, root.path(), ClusterOptions::new(3).fast())?;
    cluster.wait_ready(Duration::from_secs(30))?;
    cluster.wait_rings_complete(Duration::from_secs(30))?;
    let nodes: Vec<SocketAddr> = cluster
        .member_indices()
        .into_iter()
        .map(|i| cluster.node(i).addr())
        .collect();
    let upstreams = nodes
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",");
    // Two threads, as `nacre gateway` runs by default (the testkit's gateway always does),
    // each with its own turns; turns from the first connection on, as the node test's.
    let mut gateway = GatewayProcess::start_with_env(
        bin,
        &root.path().join("gw"),
        nacre_testkit::free_loopback_addr()?,
        cluster.secret(),
        &["--upstreams".to_string(), upstreams],
        &[("NACRE_GATEWAY_READ_TURNS_CROWD", "0")],
    )?;
    gateway.wait_ready(nodes.len(), Duration::from_secs(30))?;
    // The gateway answers the heavy list from its cache: what it is flooded with is its own
    // work, reading requests and writing answers.
    let answers = flood_while_beating(&Flood {
        entry: gateway.addr(),
        nodes,
        flooders: 2 * FLOODERS,
        distinct: false,
        pushes: false,
    })
    .await?;
    let waited = all_answered_after_waits(
        &answers,
        gateway.addr(),
        "nacre_gateway_read_turns_waited_total",
    )
    .await?;
    eprintln!(
        "{waited} reads waited for their turn at the gateway; {} lists served",
        counts(&answers).0
    );
    Ok(())
}
