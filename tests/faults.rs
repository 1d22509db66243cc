//! Faults against a live fleet: a registry must never tell a caller that a live instance is
//! gone. Each test runs a 3-node cluster, a fleet of instances beating through the nodes that
//! stay healthy, and the "live never absent" checker (`nacre_testkit::fleet`) listing every
//! service on those nodes throughout; then it injects one fault, heals it, and requires zero
//! violations and zero forgotten instances (beats answered 20404), during the fault and after.
//!
//! The fleet's instances have short `preserved.*` timeouts (unhealthy after 3 s, removed after
//! 6 s), so every fault here lasts longer than the delete timeout.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{ensure, Result};
use nacre_testkit::cluster::{ClusterOptions, TestCluster};
use nacre_testkit::fleet::{Fleet, FleetSpec, LiveChecker, Targets};

const READY: Duration = Duration::from_secs(60);
/// Longer than the fleet's 6 s delete timeout, and than failure detection.
const FAULT: Duration = Duration::from_secs(10);
/// After healing: the fault's effects (syncs, verify rounds, ring hand-back) play out.
const AFTER: Duration = Duration::from_secs(8);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_nacre"))
}

async fn start() -> Result<(tempfile::TempDir, TestCluster)> {
    let root = tempfile::Builder::new().prefix("nacre-faults-").tempdir()?;
    let mut c = TestCluster::start(bin(), root.path(), ClusterOptions::new(3).fast())?;
    c.wait_ready(READY)?;
    c.wait_rings_complete(READY)?;
    Ok((root, c))
}

fn addrs(c: &TestCluster, nodes: &[usize]) -> Vec<SocketAddr> {
    nodes.iter().map(|&i| c.node(i).addr()).collect()
}

/// Fails with every violation, the forgotten instances and the nodes' logs.
fn verdict(
    c: &TestCluster,
    fleet: &Fleet,
    violations: &[nacre_testkit::fleet::Violation],
) -> Result<()> {
    let lost = fleet.beats.lost.load(Ordering::Relaxed);
    let ok = fleet.beats.ok.load(Ordering::Relaxed);
    println!(
        "beats ok {ok}, forgotten (20404) {lost}, failed {}; violations {}",
        fleet.beats.failed.load(Ordering::Relaxed),
        violations.len()
    );
    ensure!(ok > 0, "the fleet never beat");
    ensure!(
        violations.is_empty() && lost == 0,
        "live instances went missing: {} violations (first: {:?}), {lost} beats answered 20404 (first: {:?})\n{}",
        violations.len(),
        violations.iter().take(5).collect::<Vec<_>>(),
        fleet.lost_examples(),
        c.log_tails()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_isolated_node_coming_back_never_removes_live_instances() -> Result<()> {
    let (_root, mut c) = start().await?;
    let healthy = addrs(&c, &[0, 1]);
    let fleet = Fleet::register(FleetSpec::new("iso", 12, 2), &healthy).await?;
    let beating = fleet.start_beating(Targets::new(healthy.clone()));
    let watched = Targets::new(healthy);
    let checker = LiveChecker::start(&fleet, watched.clone(), Duration::from_millis(100));

    // Node 2 is cut off from its peers (clients still reach it, none beat through it) for
    // longer than the delete timeout: it must not judge instances whose beats it cannot see.
    c.isolate(2)?;
    tokio::time::sleep(FAULT).await;
    c.heal()?;
    watched.set(addrs(&c, &[0, 1, 2]));
    tokio::time::sleep(AFTER).await;

    fleet.stop();
    let violations = checker.finish().await;
    let _ = beating.await;
    verdict(&c, &fleet, &violations)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_node_resuming_never_removes_live_instances() -> Result<()> {
    let (_root, mut c) = start().await?;
    let healthy = addrs(&c, &[0, 1]);
    let fleet = Fleet::register(FleetSpec::new("pause", 12, 2), &healthy).await?;
    let beating = fleet.start_beating(Targets::new(healthy.clone()));
    let watched = Targets::new(healthy);
    let checker = LiveChecker::start(&fleet, watched.clone(), Duration::from_millis(100));

    // Node 2 freezes (a long GC pause, a VM freeze) for longer than the delete timeout; on
    // resuming, every last-beat time it holds is stale by the pause.
    c.pause(2)?;
    tokio::time::sleep(FAULT).await;
    c.resume(2)?;
    watched.set(addrs(&c, &[0, 1, 2]));
    tokio::time::sleep(AFTER).await;

    fleet.stop();
    let violations = checker.finish().await;
    let _ = beating.await;
    verdict(&c, &fleet, &violations)
}
