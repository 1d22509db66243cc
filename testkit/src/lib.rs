//! Dev-only helpers for nacre's integration tests.
//!
//! [`NodeProcess`] runs a real `nacre registry --standalone` binary as a child process on a free
//! loopback port, waits until it reports `"status":"UP"`, and can `kill -9` and restart it on the
//! same port and data directory (crash/recovery tests). The child's stdout and stderr go to
//! `<data dir>/nacre.log` (appended across restarts); [`NodeProcess::log_tail`] returns its end
//! for failure messages.
//!
//! [`NodeProcess::start_member`] runs a cluster member instead (no `--standalone`), and
//! [`cluster::TestCluster`] runs a whole multi-node cluster with a [`proxy::LinkProxy`] in front
//! of every node so tests can cut or slow down the links between nodes.
//! [`gateway::GatewayProcess`] runs `nacre gateway` in front of nodes. [`wait_until`] polls for
//! convergence. Faults: `kill -9`, SIGSTOP / SIGCONT pauses, partitions, cut or delayed links,
//! and floods of idle client sockets ([`flood::ConnectionFlood`]). [`fleet`] is the workload of
//! the fault tests (instances beating as 1.x clients do) and their "live never absent" checker.
//!
//! Everything here is synchronous and std-only (the readiness probe is a tiny HTTP/1.0 GET),
//! so it can be used from plain `#[test]`s and from async tests alike.

pub mod addr_server;
pub mod cluster;
pub mod driver;
pub mod fleet;
pub mod flood;
pub mod gateway;
pub mod http;
pub mod ledger;
pub mod nemesis;
mod process;
pub use process::log_tail;
pub mod proxy;
pub mod subscriber;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// The repository's root: where the scripts, manifests and installed legacy clients the tests
/// use live. Read when the test runs (cargo and nextest set `CARGO_MANIFEST_DIR` for a test
/// process), not when it was built: in a target directory shared by several checkouts (CI's
/// cache), cargo may count a test binary built from another checkout as fresh, and that
/// checkout may be gone. Outside a test runner, the checkout this crate was built from. For the
/// root package's tests (`tests/`) only: in another package's tests the variable names that
/// package's folder.
pub fn repo_root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
}

/// Path of the readiness probe (the Java/Node clients' own health check).
pub const METRICS_PATH: &str = "/nacos/v1/ns/operator/metrics";

/// A `nacre registry` child process bound to `127.0.0.1:<port>`: standalone
/// ([`NodeProcess::start`]) or a cluster member ([`NodeProcess::start_member`]).
#[derive(Debug)]
pub struct NodeProcess {
    bin: PathBuf,
    data_dir: PathBuf,
    addr: SocketAddr,
    /// Whether `--standalone` is passed (kept on restart).
    standalone: bool,
    extra_args: Vec<String>,
    /// Extra environment for the child, on top of the inherited one (kept on restart).
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl NodeProcess {
    /// Picks a free loopback port and spawns `bin registry --standalone --listen 127.0.0.1:<port>
    /// --data <data_dir>` (the data dir is created if missing). Does not wait for readiness: call
    /// [`NodeProcess::wait_ready`].
    pub fn start(bin: &Path, data_dir: &Path) -> Result<NodeProcess> {
        Self::start_with_args(bin, data_dir, &[])
    }

    /// Like [`NodeProcess::start`], with extra command-line arguments appended (kept on restart).
    pub fn start_with_args(
        bin: &Path,
        data_dir: &Path,
        extra_args: &[&str],
    ) -> Result<NodeProcess> {
        Self::start_standalone(bin, data_dir, extra_args, &[])
    }

    /// Like [`NodeProcess::start`], with `env` added to the inherited environment (kept on
    /// restart).
    pub fn start_with_env(
        bin: &Path,
        data_dir: &Path,
        env: &[(&str, &str)],
    ) -> Result<NodeProcess> {
        Self::start_standalone(bin, data_dir, &[], env)
    }

    /// A standalone node with auth on, `admin_password` for the first administrator
    /// (`nacos`) and `env` added, returned once it is ready and the administrator can log in, with a client
    /// and the administrator's token. Readiness is read from an open route, and logins are
    /// spaced, since failed ones count towards the lockout.
    pub async fn start_with_auth(
        bin: &Path,
        data_dir: &Path,
        admin_password: &str,
        env: &[(&str, &str)],
    ) -> Result<(NodeProcess, http::Api, String)> {
        let mut all = vec![
            ("NACRE_AUTH_ENABLED", "true"),
            ("NACRE_AUTH_ADMIN_PASSWORD", admin_password),
        ];
        all.extend_from_slice(env);
        let node = Self::start_with_env(bin, data_dir, &all)?;
        let api = http::Api::new(node.addr());
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while api
            .call("GET", "/nacos/v1/console/health/readiness", &[])
            .await
            .status
            != 200
        {
            if std::time::Instant::now() >= deadline {
                anyhow::bail!("never ready\n{}", node.log_tail(4000));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let token = api
            .login_when_ready("nacos", admin_password, Duration::from_secs(30))
            .await
            .map_err(|e| anyhow::anyhow!("{e}\n{}", node.log_tail(4000)))?;
        Ok((node, api, token))
    }

    fn start_standalone(
        bin: &Path,
        data_dir: &Path,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<NodeProcess> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating data dir {}", data_dir.display()))?;
        let owned = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let mut node = NodeProcess {
            bin: bin.to_path_buf(),
            data_dir: data_dir.to_path_buf(),
            addr: free_loopback_addr()?,
            standalone: true,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            env: owned(env),
            child: None,
        };
        node.spawn()?;
        Ok(node)
    }

    /// Spawns a cluster member: `bin registry --listen <listen> --data <data_dir> <args...>`
    /// (no `--standalone`) with `env` added to the inherited environment. The caller picks
    /// `listen` (cluster tests allocate every port up front) and passes the cluster flags
    /// (`--advertise`, `--cluster-secret`, `--members`/`--members-file`) in `args`.
    /// [`NodeProcess::restart`] reuses the same address, arguments, environment and data dir.
    /// Does not wait for readiness.
    pub fn start_member(
        bin: &Path,
        data_dir: &Path,
        listen: SocketAddr,
        args: Vec<String>,
        env: Vec<(String, String)>,
    ) -> Result<NodeProcess> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating data dir {}", data_dir.display()))?;
        let mut node = NodeProcess {
            bin: bin.to_path_buf(),
            data_dir: data_dir.to_path_buf(),
            addr: listen,
            standalone: false,
            extra_args: args,
            env,
            child: None,
        };
        node.spawn()?;
        Ok(node)
    }

    fn spawn(&mut self) -> Result<()> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("registry");
        if self.standalone {
            cmd.arg("--standalone");
        }
        cmd.arg("--listen")
            .arg(self.addr.to_string())
            .arg("--data")
            .arg(&self.data_dir)
            .args(&self.extra_args)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        self.child = Some(process::spawn_logged(&mut cmd, &self.log_path())?);
        Ok(())
    }

    /// The HTTP listen address, always `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>` (no trailing slash).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The node's data directory (also holds `nacre.log`).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Where the child's stdout/stderr go.
    pub fn log_path(&self) -> PathBuf {
        self.data_dir.join("nacre.log")
    }

    /// The last `max_bytes` of the node's log (lossy UTF-8), for failure messages.
    pub fn log_tail(&self, max_bytes: usize) -> String {
        process::log_tail(&self.log_path(), max_bytes)
    }

    /// The child's process id, `None` after [`NodeProcess::kill9`] (until restarted).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `Ok(Some(status))` if the child has exited, `Ok(None)` if it is running (or was killed by
    /// [`NodeProcess::kill9`] and not restarted: then `None` too).
    pub fn try_exit_status(&mut self) -> Result<Option<std::process::ExitStatus>> {
        match self.child.as_mut() {
            Some(c) => Ok(c.try_wait()?),
            None => Ok(None),
        }
    }

    /// Whether the child is alive: spawned, not killed by [`NodeProcess::kill9`], and not
    /// exited on its own (needs `&mut` because checking reaps an exited child).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Whether [`NodeProcess::kill9`] stopped the node and it was not restarted since
    /// (as opposed to a child that exited or crashed by itself).
    pub fn is_killed(&self) -> bool {
        self.child.is_none()
    }

    /// Polls `GET /nacos/v1/ns/operator/metrics` until it answers 200 with JSON
    /// `"status":"UP"`. Fails early (with the log tail) if the child exits.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let log = self.log_path();
        let ready = |v: &serde_json::Value| v["status"] == "UP";
        let r = process::Readiness {
            what: "nacre",
            addr: self.addr,
            path: METRICS_PATH,
            ready: &ready,
            log: &log,
        };
        process::wait_ready(&mut self.child, &r, timeout)
    }

    /// SIGKILLs the child (no graceful shutdown) and reaps it. No-op if not running.
    pub fn kill9(&mut self) -> Result<()> {
        process::kill9(&mut self.child)
    }

    /// Stops the node as Kubernetes stops a pod (SIGTERM), waiting up to `timeout` for it to
    /// exit; returns its exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        process::terminate(&mut self.child, "nacre", timeout)
    }

    /// Freezes the node with SIGSTOP (see [`NodeProcess::resume`]); a paused node is killed as
    /// usual on drop.
    pub fn pause(&mut self) -> Result<()> {
        process::set_paused(&self.child, true)
    }

    /// Thaws a node frozen by [`NodeProcess::pause`] (SIGCONT).
    pub fn resume(&mut self) -> Result<()> {
        process::set_paused(&self.child, false)
    }

    /// Kills the child if still running, then starts it again listening on `listen`, with the
    /// same data dir and arguments: a pod rescheduled with a new IP. Does not wait for
    /// readiness.
    pub fn restart_at(&mut self, listen: SocketAddr) -> Result<()> {
        self.kill9()?;
        self.addr = listen;
        self.spawn()
    }

    /// Kills the child if still running, then starts it again with the same port, data dir and
    /// arguments. Does not wait for readiness.
    pub fn restart(&mut self) -> Result<()> {
        self.kill9()?;
        // The listen port was just released; wait (briefly) until it can be bound again.
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpListener::bind(self.addr).is_err() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
        self.spawn()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.kill9();
    }
}

/// Calls `f` every `poll` until it returns `Some`, and returns that value; fails once `timeout`
/// has passed (after one last call at the deadline). Blocks the calling thread: from an async
/// test on a current-thread runtime, only poll things outside the runtime (child processes,
/// blocking HTTP via [`http_get`]) or use `spawn_blocking`.
pub fn wait_until<T>(
    timeout: Duration,
    poll: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Result<T> {
    let start = Instant::now();
    let deadline = start + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        let now = Instant::now();
        if now >= deadline {
            bail!(
                "condition not met within {timeout:?} (polled every {poll:?} for {:?})",
                now - start
            );
        }
        thread::sleep(poll.min(deadline - now));
    }
}

/// A loopback address whose port was free a moment ago.
pub fn free_loopback_addr() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

/// `n` distinct loopback addresses whose ports were free a moment ago. All `n` ports are held
/// at once while choosing, so (unlike `n` calls to [`free_loopback_addr`]) they never repeat.
pub fn free_loopback_addrs(n: usize) -> Result<Vec<SocketAddr>> {
    let held = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0"))
        .collect::<Result<Vec<_>>>()?;
    held.iter()
        .map(|l| l.local_addr().context("local_addr"))
        .collect()
}

/// Minimal blocking HTTP/1.0 GET (no chunked encoding, connection closed by the server).
/// Returns (status, body).
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(u16, String)> {
    http_call(addr, "GET", path, timeout)
}

/// [`http_get`] with another method and no body (Nacos reads parameters from the query of any
/// method).
pub fn http_call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    timeout: Duration,
) -> Result<(u16, String)> {
    let mut s =
        TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("connect {addr}"))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let length = if method == "GET" {
        ""
    } else {
        "Content-Length: 0\r\n"
    };
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: */*\r\n{length}\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).context("reading response")?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("malformed HTTP response: {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| anyhow!("malformed status line: {head:?}"))?;
    Ok((status, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_until_returns_the_first_some() {
        let mut calls = 0;
        let v = wait_until(Duration::from_secs(5), Duration::from_millis(1), || {
            calls += 1;
            (calls == 3).then_some(calls * 10)
        })
        .unwrap();
        assert_eq!(v, 30);
    }

    #[test]
    fn wait_until_times_out_with_a_description() {
        let t = Instant::now();
        let e = wait_until(Duration::from_millis(50), Duration::from_millis(10), || {
            None::<()>
        })
        .unwrap_err();
        assert!(t.elapsed() >= Duration::from_millis(50));
        assert!(e.to_string().contains("not met within"), "{e}");
    }

    #[test]
    fn free_loopback_addrs_are_distinct() {
        let addrs = free_loopback_addrs(20).unwrap();
        let mut ports: Vec<u16> = addrs.iter().map(|a| a.port()).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 20);
        assert!(addrs.iter().all(|a| a.ip().is_loopback()));
    }
}
