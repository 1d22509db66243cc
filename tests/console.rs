//! The web console, in a real browser.
//!
//! A 3-node cluster behind a gateway, all real processes on loopback; Debian's `chromium`
//! (headless) driven by `compat/browser/console_check.js` (playwright-core) through the
//! operator's paths, each step's effect checked with the real legacy Node client or the API:
//! find a service, drain an instance and bring it back, edit weight and metadata, create a
//! namespace, publish / diff / roll back a config, and read the cluster page while a node is
//! killed with `kill -9`. With auth on, the console asks for a user first.
//!
//! `scripts/install-browser.sh` (run by `scripts/test.sh`) installs chromium and the driver;
//! a missing install fails these tests, it never skips them. `NACRE_CONSOLE_SHOTS=DIR` keeps
//! the screenshots (docs/console.md shows one run's).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use nacre_testkit::cluster::ClusterOptions;
use nacre_testkit::driver::run_driver;
use nacre_testkit::gateway::GatewayProcess;
use nacre_testkit::http::Api;
use nacre_testkit::repo_root;
use nacre_testkit::NodeProcess;

const READY: Duration = Duration::from_secs(60);
const DRIVER_TIMEOUT: Duration = Duration::from_secs(300);
const CHROMIUM: &str = "/usr/bin/chromium";
const INSTALL_HINT: &str = "run `scripts/install-browser.sh` (or `scripts/test.sh`) first";

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_nacre"))
}

/// The driver command, or why it cannot run.
fn driver(base: &str, shots: &Path, extra: &[String]) -> Result<Command> {
    let browser = repo_root().join("compat/browser");
    ensure!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: {INSTALL_HINT}"
    );
    ensure!(
        browser.join("node_modules/playwright-core").is_dir()
            && repo_root().join("compat/node/node_modules/nacos").is_dir(),
        "the browser driver or the legacy Node client is not installed: {INSTALL_HINT}"
    );
    let mut cmd = Command::new("node");
    cmd.arg(browser.join("console_check.js"))
        .arg("--gateway")
        .arg(base)
        .arg("--shots")
        .arg(shots)
        .args(extra)
        .env("NACRE_CHROMIUM", CHROMIUM);
    Ok(cmd)
}

/// Where screenshots go: `NACRE_CONSOLE_SHOTS`, else under the test's data directory.
fn shots_dir(data: &Path) -> PathBuf {
    std::env::var_os("NACRE_CONSOLE_SHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| data.join("shots"))
}

/// An asset answer: 200, its type, the policy that keeps data from running as script.
async fn assert_asset(api: &Api, path: &str, content_type: &str) -> Result<String> {
    let r = api.call("GET", path, &[]).await;
    ensure!(r.status == 200, "{path}: {} {}", r.status, r.body);
    ensure!(
        r.header("content-type") == Some(content_type),
        "{path}: {:?}",
        r.header("content-type")
    );
    let csp = r.header("content-security-policy").unwrap_or("");
    ensure!(csp.contains("script-src 'self'"), "{path}: policy {csp}");
    Ok(r.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_paths_work_in_a_real_browser_through_the_gateway() -> Result<()> {
    let data = tempfile::tempdir()?;
    let (cluster, gw) =
        GatewayProcess::with_cluster(bin(), data.path(), ClusterOptions::new(3), READY)?;
    let gateway = Api::new(gw.addr());
    let node = Api::new(cluster.node(0).addr());

    // The same embedded console from the gateway and from a node.
    let from_gateway = assert_asset(&gateway, "/nacos/", "text/html; charset=utf-8").await?;
    let from_node = assert_asset(&node, "/nacos/", "text/html; charset=utf-8").await?;
    ensure!(from_gateway == from_node && from_gateway.contains("console.js"));
    let js = "/nacos/console/console.js";
    let js_type = "text/javascript; charset=utf-8";
    ensure!(assert_asset(&gateway, js, js_type).await? == assert_asset(&node, js, js_type).await?);
    for api in [&gateway, &node] {
        let missing = api.call("GET", "/nacos/console/missing.js", &[]).await;
        ensure!(missing.status == 404, "{} {}", missing.status, missing.body);
    }

    // What the cluster page reads: the gateway's rotation, the node's Raft and replication.
    let status = gateway
        .call("GET", "/nacre/gateway/status", &[])
        .await
        .json();
    let nodes = status["nodes"].as_array().context("nodes")?;
    ensure!(
        nodes.len() == 3 && nodes.iter().all(|n| n["usable"] == true),
        "{status}"
    );
    let view = node.call("GET", "/nacre/v1/cluster", &[]).await.json();
    let peers = view["replication"].as_array().context("replication")?;
    ensure!(peers.len() == 2, "{view}");

    let victim = 2;
    let extra = vec![
        "--kill-pid".to_string(),
        cluster.node(victim).pid().context("node pid")?.to_string(),
        "--kill-addr".to_string(),
        cluster.advertised(victim),
    ];
    let base = format!("http://{}", gw.addr());
    let cmd = driver(&base, &shots_dir(data.path()), &extra)?;
    let (ok, transcript) =
        tokio::task::spawn_blocking(move || run_driver(cmd, DRIVER_TIMEOUT)).await??;
    println!("{transcript}");
    if !ok {
        bail!(
            "console checks failed (FAIL lines above)\n{}\n--- gateway log tail ---\n{}",
            cluster.log_tails(),
            gw.log_tail(4000)
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_on_the_console_asks_for_a_user_and_its_files_stay_public() -> Result<()> {
    let data = tempfile::tempdir()?;
    let password = "console-admin-pw";
    let (node, api, _token) =
        NodeProcess::start_with_auth(bin(), data.path(), password, &[]).await?;
    assert_asset(&api, "/nacos/", "text/html; charset=utf-8").await?;
    assert_asset(
        &api,
        "/nacos/console/console.css",
        "text/css; charset=utf-8",
    )
    .await?;
    let refused = api
        .call(
            "GET",
            "/nacos/v1/ns/catalog/services",
            &[("pageNo", "1"), ("pageSize", "10")],
        )
        .await;
    ensure!(refused.status == 403, "{} {}", refused.status, refused.body);

    let extra: Vec<String> = [
        "--only",
        "login",
        "--username",
        "nacos",
        "--password",
        password,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let cmd = driver(
        &format!("http://{}", node.addr()),
        &shots_dir(data.path()),
        &extra,
    )?;
    let (ok, transcript) =
        tokio::task::spawn_blocking(move || run_driver(cmd, DRIVER_TIMEOUT)).await??;
    println!("{transcript}");
    ensure!(ok, "console login checks failed\n{}", node.log_tail(4000));
    Ok(())
}
