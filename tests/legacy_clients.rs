//! Real legacy-client compatibility suite.
//!
//! Starts the real `nacre` binary — a standalone node, a 3-node cluster handed to the clients
//! as a server list, and the same cluster behind `nacre gateway` (one address, and endpoint
//! mode: the clients only know the gateway's `/nacos/serverlist`) — on loopback and drives it
//! with the unmodified legacy clients:
//!
//! - Python `nacos-sdk-python` 0.1.x: `compat/python/check_legacy.py` (venv `compat/python/.venv`)
//! - Node `nacos` 2.x (`nacos-naming`): `compat/node/check_legacy.js` (`compat/node/node_modules`)
//!
//! Both are installed by `scripts/install-legacy-clients.sh` (run by `scripts/test.sh`). A
//! missing install is a test failure, never a skip.
//!
//! Each driver prints `PASS name` / `FAIL name: reason` per check and exits non-zero on any
//! failure; the output is echoed here. `NACRE_COMPAT_ONLY=a,b` restricts the scenarios
//! (names from `check_legacy.* --list`), e.g. while debugging one behaviour; `NACRE_TEST_BIN`
//! replaces the binary under test.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nacre_testkit::cluster::{ClusterOptions, TestCluster};
use nacre_testkit::gateway::GatewayProcess;
use nacre_testkit::repo_root;
use nacre_testkit::NodeProcess;

const INSTALL_HINT: &str =
    "run `scripts/install-legacy-clients.sh` (or `scripts/test.sh`, which runs it) first";
const DRIVER_TIMEOUT: Duration = Duration::from_secs(240);

/// The binary under test; NACRE_TEST_BIN overrides it (e.g. a release build).
fn bin() -> PathBuf {
    std::env::var_os("NACRE_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_nacre")))
}

/// How the clients reach the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// One standalone node.
    Single,
    /// A 3-node cluster given to the clients as a server list.
    Cluster,
    /// The 3-node cluster behind a gateway: the clients get its one address.
    Gateway,
    /// The same, but the clients only get the gateway's address-server endpoint. The gateway
    /// listens on `127.0.0.X:8848`, the only form nacos-sdk-python 0.1.x can use from an
    /// endpoint (bare IPs).
    Endpoint,
    /// The 3-node cluster with auth on, behind a gateway; the clients log in as the admin.
    AuthGateway,
    /// The same cluster with auth on, the clients given the nodes directly.
    AuthCluster,
}

/// The admin password the auth modes start the cluster with.
const ADMIN_PASSWORD: &str = "legacy-admin-pw";

impl Mode {
    fn auth(self) -> bool {
        matches!(self, Mode::AuthGateway | Mode::AuthCluster)
    }

    /// Credential arguments for a driver.
    fn credentials(self) -> Vec<&'static str> {
        if self.auth() {
            vec!["--username", "nacos", "--password", ADMIN_PASSWORD]
        } else {
            Vec::new()
        }
    }
}

/// What the clients run against.
enum Target {
    Single(NodeProcess),
    Cluster(TestCluster),
    Gateway(TestCluster, GatewayProcess),
    /// Clients use the nodes; the gateway only tells when they are ready (with auth on, the
    /// nodes' own readiness probe needs a user).
    Nodes(TestCluster, GatewayProcess),
}

impl Target {
    fn servers(&self) -> String {
        match self {
            Target::Single(n) => n.addr().to_string(),
            Target::Cluster(c) | Target::Nodes(c, _) => (0..c.len())
                .map(|i| c.node(i).addr().to_string())
                .collect::<Vec<_>>()
                .join(","),
            Target::Gateway(_, g) => g.addr().to_string(),
        }
    }

    fn log_tails(&self) -> String {
        match self {
            Target::Single(n) => format!(
                "--- nacre log tail ({}) ---\n{}",
                n.log_path().display(),
                n.log_tail(6000)
            ),
            Target::Cluster(c) => c.log_tails(),
            Target::Gateway(c, g) | Target::Nodes(c, g) => format!(
                "{}\n--- gateway log tail ---\n{}",
                c.log_tails(),
                g.log_tail(6000)
            ),
        }
    }
}

fn start_target(tag: &str, mode: Mode) -> Result<(tempfile::TempDir, Target)> {
    let data = tempfile::Builder::new()
        .prefix(&format!("nacre-legacy-{tag}-"))
        .tempdir()?;
    if mode == Mode::Single {
        let mut node = NodeProcess::start(&bin(), data.path())?;
        node.wait_ready(Duration::from_secs(30))?;
        return Ok((data, Target::Single(node)));
    }
    let mut opts = ClusterOptions::new(3);
    if mode.auth() {
        opts = opts
            .with_env("NACRE_AUTH_ENABLED", "true")
            .with_env("NACRE_AUTH_ADMIN_PASSWORD", ADMIN_PASSWORD);
    }
    let mut c = TestCluster::start(&bin(), data.path(), opts)?;
    if !mode.auth() {
        c.wait_ready(Duration::from_secs(60))?;
    }
    if mode == Mode::Cluster {
        return Ok((data, Target::Cluster(c)));
    }
    let listen = if mode == Mode::Endpoint {
        nacre_testkit::gateway::free_loopback_8848()?
    } else {
        nacre_testkit::free_loopback_addr()?
    };
    let mut g = GatewayProcess::in_front_of(&bin(), &c, &data.path().join("gateway"), listen, &[])?;
    g.wait_ready(c.len(), Duration::from_secs(60))?;
    if mode.auth() {
        wait_for_admin(g.addr())?;
    }
    if mode == Mode::AuthCluster {
        return Ok((data, Target::Nodes(c, g)));
    }
    Ok((data, Target::Gateway(c, g)))
}

/// Waits until the admin can log in (the cluster has bootstrapped auth).
fn wait_for_admin(gateway: std::net::SocketAddr) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(nacre_testkit::http::Api::new(gateway).login_when_ready(
        "nacos",
        ADMIN_PASSWORD,
        Duration::from_secs(60),
    ))?;
    Ok(())
}

/// Runs a driver to completion (bounded by DRIVER_TIMEOUT), returns (success, transcript).
fn run_driver(mut cmd: Command) -> Result<(bool, String)> {
    if let Ok(only) = std::env::var("NACRE_COMPAT_ONLY") {
        cmd.arg("--only").arg(only);
    }
    nacre_testkit::driver::run_driver(cmd, DRIVER_TIMEOUT)
}

fn finish(name: &str, target: &Target, ok: bool, output: String) -> Result<()> {
    println!("{output}");
    if !ok {
        bail!(
            "{name} legacy-client checks failed (FAIL lines above).\n{}",
            target.log_tails()
        );
    }
    Ok(())
}

#[test]
fn python_legacy_client() -> Result<()> {
    python_suite(Mode::Single)
}

#[test]
fn python_legacy_client_against_a_cluster() -> Result<()> {
    python_suite(Mode::Cluster)
}

#[test]
fn python_legacy_client_through_the_gateway() -> Result<()> {
    python_suite(Mode::Gateway)
}

#[test]
fn python_legacy_client_in_endpoint_mode() -> Result<()> {
    python_suite(Mode::Endpoint)
}

#[test]
fn python_legacy_client_with_auth_through_the_gateway() -> Result<()> {
    python_suite(Mode::AuthGateway)
}

#[test]
fn python_legacy_client_with_auth_against_the_nodes() -> Result<()> {
    python_suite(Mode::AuthCluster)
}

#[test]
fn node_legacy_client_with_auth_through_the_gateway() -> Result<()> {
    node_suite(Mode::AuthGateway)
}

#[test]
fn node_legacy_client_with_auth_against_the_nodes() -> Result<()> {
    node_suite(Mode::AuthCluster)
}

#[test]
fn node_legacy_client() -> Result<()> {
    node_suite(Mode::Single)
}

#[test]
fn node_legacy_client_against_a_cluster() -> Result<()> {
    node_suite(Mode::Cluster)
}

#[test]
fn node_legacy_client_through_the_gateway() -> Result<()> {
    node_suite(Mode::Gateway)
}

#[test]
fn node_legacy_client_in_endpoint_mode() -> Result<()> {
    node_suite(Mode::Endpoint)
}

fn python_suite(mode: Mode) -> Result<()> {
    let py = repo_root().join("compat/python/.venv/bin/python");
    if !py.exists() {
        bail!(
            "Python legacy client venv missing ({}): {INSTALL_HINT}",
            py.display()
        );
    }
    let probe = Command::new(&py)
        .args(["-c", "import nacos"])
        .status()
        .with_context(|| format!("running {}", py.display()))?;
    if !probe.success() {
        bail!(
            "nacos-sdk-python is not importable from {}: {INSTALL_HINT}",
            py.display()
        );
    }
    let (_data, target) = start_target("py", mode)?;
    let mut cmd = Command::new(&py);
    cmd.arg(repo_root().join("compat/python/check_legacy.py"))
        .arg("--servers")
        .arg(target.servers())
        .args(mode.credentials())
        .current_dir(repo_root().join("compat/python"));
    if mode == Mode::Endpoint {
        cmd.arg("--endpoint")
            .arg(format!("http://{}/nacos/serverlist", target.servers()));
    }
    let (ok, output) = run_driver(cmd)?;
    finish("python (nacos-sdk-python 0.1.x)", &target, ok, output)
}

fn node_suite(mode: Mode) -> Result<()> {
    let dir = repo_root().join("compat/node");
    if !dir.join("node_modules/nacos/package.json").exists()
        || !dir.join("node_modules/nacos-naming/package.json").exists()
    {
        bail!(
            "Node legacy client missing ({}/node_modules): {INSTALL_HINT}",
            dir.display()
        );
    }
    match Command::new("node").arg("--version").output() {
        Ok(o) if o.status.success() => {}
        _ => bail!("`node` is not on PATH; the Node legacy-client suite needs Node.js (20.x)"),
    }
    let (_data, target) = start_target("node", mode)?;
    let mut cmd = Command::new("node");
    cmd.arg(dir.join("check_legacy.js"))
        .arg("--servers")
        .arg(target.servers())
        .args(mode.credentials())
        .current_dir(&dir);
    if mode == Mode::Endpoint {
        // The Node client builds `http://<endpoint>/nacos/serverlist` itself.
        cmd.arg("--endpoint").arg(target.servers());
    }
    let (ok, output) = run_driver(cmd)?;
    finish("node (nacos 2.x / nacos-naming)", &target, ok, output)
}
