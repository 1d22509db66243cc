//! A `nacre gateway` child process in front of registry nodes, for integration tests.
//!
//! Like [`crate::NodeProcess`], it runs the real binary on a loopback port, logs to a file,
//! can be `kill -9`ed and restarted, and is waited on until ready: here, until the gateway has
//! ready nodes and follows every node's change feed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// Readiness endpoint of the gateway.
pub const READY_PATH: &str = "/nacre/gateway/ready";

/// A running `nacre gateway`.
#[derive(Debug)]
pub struct GatewayProcess {
    bin: PathBuf,
    dir: PathBuf,
    addr: SocketAddr,
    args: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl GatewayProcess {
    /// Spawns `bin gateway --listen <listen> --cluster-secret <secret> <args...>`, logging to
    /// `<dir>/gateway.log`. `args` names the node source (`--upstreams …` or
    /// `--upstreams-endpoint …`) and anything else. Does not wait for readiness.
    pub fn start(
        bin: &Path,
        dir: &Path,
        listen: SocketAddr,
        secret: &str,
        args: &[String],
    ) -> Result<GatewayProcess> {
        Self::start_with_env(bin, dir, listen, secret, args, &[])
    }

    /// [`start`](Self::start) with `env` added to the child's environment.
    pub fn start_with_env(
        bin: &Path,
        dir: &Path,
        listen: SocketAddr,
        secret: &str,
        args: &[String],
        env: &[(&str, &str)],
    ) -> Result<GatewayProcess> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut all = vec![
            "--cluster-secret".to_string(),
            secret.to_string(),
            "--threads".to_string(),
            "2".to_string(),
        ];
        all.extend(args.iter().cloned());
        let mut g = GatewayProcess {
            bin: bin.to_path_buf(),
            dir: dir.to_path_buf(),
            addr: listen,
            args: all,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
        };
        g.spawn()?;
        Ok(g)
    }

    /// A gateway in front of every node of `cluster` (connecting to the nodes directly, not
    /// through the link proxies), with `args` added. The node list is the cluster's at start.
    pub fn in_front_of(
        bin: &Path,
        cluster: &crate::cluster::TestCluster,
        dir: &Path,
        listen: SocketAddr,
        args: &[String],
    ) -> Result<GatewayProcess> {
        let upstreams = cluster
            .member_indices()
            .into_iter()
            .map(|i| cluster.node(i).addr().to_string())
            .collect::<Vec<_>>()
            .join(",");
        let mut all = vec!["--upstreams".to_string(), upstreams];
        all.extend(args.iter().cloned());
        Self::start(bin, dir, listen, cluster.secret(), &all)
    }

    fn spawn(&mut self) -> Result<()> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("gateway")
            .arg("--listen")
            .arg(self.addr.to_string())
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        self.child = Some(crate::process::spawn_logged(&mut cmd, &self.log_path())?);
        Ok(())
    }

    /// A cluster started with `opts` under `root` and a gateway in front of it (on a free
    /// loopback address, logging under `root/gw`), ready within `ready`: the gateway sees every
    /// node ready in its probes (which need no credentials, so this works with auth on).
    pub fn with_cluster(
        bin: &Path,
        root: &Path,
        opts: crate::cluster::ClusterOptions,
        ready: Duration,
    ) -> Result<(crate::cluster::TestCluster, GatewayProcess)> {
        let cluster = crate::cluster::TestCluster::start(bin, root, opts)?;
        let mut gw = Self::in_front_of(
            bin,
            &cluster,
            &root.join("gw"),
            crate::free_loopback_addr()?,
            &[],
        )?;
        gw.wait_ready(cluster.len(), ready)?;
        Ok((cluster, gw))
    }

    /// Starts the gateway again, same address and arguments (after [`Self::kill9`] or
    /// [`Self::terminate`]). Does not wait for readiness.
    pub fn restart(&mut self) -> Result<()> {
        if self.child.is_some() {
            anyhow::bail!("the gateway is still running");
        }
        self.spawn()
    }

    /// The listen address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The child's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Where the gateway logs.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("gateway.log")
    }

    /// The end of the gateway's log, for failure messages.
    pub fn log_tail(&self, max_bytes: usize) -> String {
        crate::process::log_tail(&self.log_path(), max_bytes)
    }

    /// Waits until the gateway routes to `nodes` ready nodes and follows every node's feed.
    pub fn wait_ready(&mut self, nodes: usize, timeout: Duration) -> Result<()> {
        let log = self.log_path();
        let ready = |v: &serde_json::Value| {
            v["nodes"].as_u64() == Some(nodes as u64) && v["feedsFollowed"] == true
        };
        let r = crate::process::Readiness {
            what: "gateway",
            addr: self.addr,
            path: READY_PATH,
            ready: &ready,
            log: &log,
        };
        crate::process::wait_ready(&mut self.child, &r, timeout)
    }

    /// SIGKILLs the gateway and reaps it.
    pub fn kill9(&mut self) -> Result<()> {
        crate::process::kill9(&mut self.child)
    }

    /// Sends SIGTERM and waits up to `timeout` for a clean exit; returns the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        crate::process::terminate(&mut self.child, "gateway", timeout)
    }
}

/// A loopback address on Nacos's default port 8848 that is free: `127.0.0.X:8848` for the
/// first X from 2 up that can be bound. Endpoint-mode clients that only understand bare IPs
/// (nacos-sdk-python 0.1.x) need a server on 8848; the 127/8 block is all loopback on Linux.
pub fn free_loopback_8848() -> Result<SocketAddr> {
    for x in 2..=254u8 {
        let addr = SocketAddr::from(([127, 0, 0, x], 8848));
        if std::net::TcpListener::bind(addr).is_ok() {
            return Ok(addr);
        }
    }
    bail!("no 127.0.0.X:8848 is free")
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.kill9();
    }
}
