//! The binary's command line: `nacre up` runs a gateway in front of a 3-node cluster with a
//! short status on the terminal and its logs in files, stops cleanly on Ctrl-C and finds its
//! data again on the next start (even with its ports moved); bad settings stop start-up with
//! the offending key named and a hint, never a backtrace; a stray `NACRE_*` variable in the
//! environment is a warning, not a refusal.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nacre_testkit::http::{ips_of, listed_hosts};
use nacre_testkit::{free_loopback_addr, http_call, http_get, wait_until, METRICS_PATH};

const BIN: &str = env!("CARGO_BIN_EXE_nacre");

/// A loopback base port whose next `n - 1` ports are free too (`nacre up` uses four: the
/// gateway, then three nodes).
fn consecutive_free_ports(n: u16) -> SocketAddr {
    for _ in 0..50 {
        let base = free_loopback_addr().expect("free port");
        let held: Vec<_> = (0..n)
            .filter_map(|k| base.port().checked_add(k))
            .filter_map(|p| TcpListener::bind(SocketAddr::new(base.ip(), p)).ok())
            .collect();
        if held.len() == usize::from(n) {
            return base;
        }
    }
    panic!("no {n} consecutive free loopback ports");
}

/// `port + k` on the same IP.
fn plus(addr: SocketAddr, k: u16) -> SocketAddr {
    SocketAddr::new(addr.ip(), addr.port() + k)
}

/// A running `nacre up`: the gateway on `base`, three nodes on the next ports.
struct Up {
    child: Child,
    base: SocketAddr,
    data: PathBuf,
    stderr: PathBuf,
    /// What it printed on stdout so far (read by a thread as it comes).
    stdout: Arc<Mutex<String>>,
}

impl Up {
    /// Starts `nacre up`; what it prints on stderr goes to `stderr` (nothing, unless it fails).
    fn start(base: SocketAddr, data: &Path, stderr: &Path) -> Up {
        let err = std::fs::File::create(stderr).expect("create stderr file");
        let mut child = Command::new(BIN)
            .args(["up", "--listen", &base.to_string(), "--data"])
            .arg(data)
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .expect("spawn nacre up");
        let stdout = Arc::new(Mutex::new(String::new()));
        if let Some(pipe) = child.stdout.take() {
            let sink = stdout.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if let Ok(mut s) = sink.lock() {
                        s.push_str(&line);
                        s.push('\n');
                    }
                }
            });
        }
        Up {
            child,
            base,
            data: data.to_path_buf(),
            stderr: stderr.to_path_buf(),
            stdout,
        }
    }

    fn printed(&self) -> String {
        self.stdout.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The log file(s) `nacre up` writes under its data dir.
    fn log_files(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.data.join("logs"))
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default()
    }

    /// The end of the log files and of stderr, for a failure message.
    fn log_tail(&self) -> String {
        let mut out = String::new();
        for f in self.log_files().iter().chain([&self.stderr]) {
            out += &format!(
                "--- {}\n{}\n",
                f.display(),
                nacre_testkit::log_tail(f, 6000)
            );
        }
        out
    }

    fn nodes(&self) -> Vec<SocketAddr> {
        (1..=3).map(|k| plus(self.base, k)).collect()
    }

    /// Every node ready, and the gateway routing to all three with their feeds followed.
    fn wait_ready(&self) {
        let mut checks: Vec<(SocketAddr, &str, &[&str])> = self
            .nodes()
            .into_iter()
            .map(|addr| (addr, METRICS_PATH, &["\"status\":\"UP\""][..]))
            .collect();
        checks.push((
            self.base,
            "/nacre/gateway/ready",
            &["\"nodes\":3", "\"feedsFollowed\":true"],
        ));
        let shows = |(addr, path, marks): &(SocketAddr, &str, &[&str])| {
            matches!(http_get(*addr, path, Duration::from_secs(2)),
                Ok((200, body)) if marks.iter().all(|m| body.contains(m)))
        };
        let ready = wait_until(Duration::from_secs(60), Duration::from_millis(100), || {
            // The terminal says so too, once the gateway routes to every node.
            (checks.iter().all(shows) && self.printed().contains("nacre: ready")).then_some(())
        });
        if let Err(e) = ready {
            let pending: Vec<_> = checks.iter().filter(|c| !shows(c)).collect();
            panic!(
                "nacre up not ready ({e}); still waiting for {pending:?}; log:\n{}",
                self.log_tail()
            );
        }
    }

    /// A call through the gateway.
    fn call(&self, method: &str, path: &str) -> (u16, String) {
        http_call(self.base, method, path, Duration::from_secs(5)).expect("call the gateway")
    }

    /// SIGINT, as Ctrl-C; returns the exit status and what was printed.
    fn interrupt(mut self) -> (ExitStatus, String) {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("kill -INT");
        assert!(status.success());
        let exit = wait_until(Duration::from_secs(15), Duration::from_millis(50), || {
            self.child.try_wait().ok().flatten()
        })
        .expect("nacre up did not stop on SIGINT");
        // The reader thread sees the pipe close right after the exit.
        let out = wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
            let out = self.printed();
            out.contains("nacre: stopped").then_some(out)
        })
        .unwrap_or_else(|_| self.printed());
        (exit, out)
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        // A failed assertion must not leave a cluster running on fixed ports.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn up_starts_a_gateway_and_three_nodes_and_stops_cleanly_on_sigint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = consecutive_free_ports(4);
    let data = dir.path().join("data");
    let up = Up::start(base, &data, &dir.path().join("up.log"));
    up.wait_ready();
    // One cluster: every node names the same leader and all three members.
    let (_, view) =
        http_get(up.nodes()[0], "/nacre/v1/cluster", Duration::from_secs(2)).expect("cluster view");
    let view: serde_json::Value = serde_json::from_str(&view).expect("json");
    assert_eq!(view["members"].as_array().map(Vec::len), Some(3), "{view}");
    assert!(view["leader"].is_string(), "{view}");
    for k in 1..=3 {
        assert!(
            data.join(format!("node-{k}")).join("nacre.db").exists(),
            "no SQLite file for node {k}"
        );
    }
    assert!(
        data.join("cluster-secret").exists(),
        "no shared secret generated"
    );
    // The one address clients get: the gateway, routing to all three nodes.
    let (code, list) = up.call("GET", "/nacos/serverlist");
    assert_eq!((code, list.as_str()), (200, base.to_string().as_str()));
    let (code, body) = up.call("GET", "/nacos/v1/ns/instance/list?serviceName=none");
    assert_eq!(code, 200, "{body}");
    let nodes = up.nodes();
    let log_files = up.log_files();
    let stderr_path = up.stderr.clone();
    let (exit, out) = up.interrupt();
    assert!(exit.success(), "exit status {exit:?}");
    // A short status, not the logs: the addresses, where data and logs are, how to stop.
    for addr in nodes.iter().chain([&base]) {
        assert!(
            out.contains(&addr.to_string()),
            "address {addr} not printed: {out}"
        );
    }
    for mark in ["logs:", "data:", "Ctrl-C", "ready in", "stopped"] {
        assert!(out.contains(mark), "{mark:?} not printed: {out}");
    }
    assert!(out.lines().count() <= 16, "too chatty:\n{out}");
    assert!(!out.contains("INFO"), "log lines on the terminal:\n{out}");
    let stderr = std::fs::read_to_string(&stderr_path).expect("read stderr");
    assert!(stderr.trim().is_empty(), "printed on stderr:\n{stderr}");
    // ... while the full logs are in a file under the data dir.
    assert_eq!(log_files.len(), 1, "{log_files:?}");
    let log = std::fs::read_to_string(&log_files[0]).expect("read log");
    assert!(
        log.contains("gateway serving") && log.contains("INFO"),
        "{log}"
    );
    assert!(
        out.contains(&log_files[0].display().to_string()),
        "log path not printed: {out}"
    );
    // The generated cluster secret is readable by its owner only.
    let mode = std::fs::metadata(data.join("cluster-secret"))
        .expect("secret")
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o077,
        0,
        "{mode:?}"
    );
}

/// The IPs `service` lists through the gateway, sorted.
fn registered_ips(up: &Up, service: &str) -> Vec<String> {
    let (code, body) = up.call(
        "GET",
        &format!("/nacos/v1/ns/instance/list?serviceName={service}"),
    );
    assert_eq!(code, 200, "{body}");
    ips_of(&listed_hosts(&body))
}

fn register_persistent(up: &Up, service: &str, ip: &str) {
    let (code, body) = up.call(
        "POST",
        &format!("/nacos/v1/ns/instance?serviceName={service}&ip={ip}&port=80&ephemeral=false"),
    );
    assert_eq!((code, body.as_str()), (200, "ok"));
}

#[test]
fn up_keeps_persistent_data_across_restarts_and_a_moved_port_layout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let base = consecutive_free_ports(5);

    let up = Up::start(base, &data, &dir.path().join("up-1.log"));
    up.wait_ready();
    register_persistent(&up, "kept", "10.7.0.1");
    let (exit, _) = up.interrupt();
    assert!(exit.success(), "{exit:?}");

    // The same command again: everything stored is there as soon as the gateway is ready.
    let up = Up::start(base, &data, &dir.path().join("up-2.log"));
    up.wait_ready();
    assert_eq!(registered_ips(&up, "kept"), vec!["10.7.0.1"]);
    let (exit, _) = up.interrupt();
    assert!(exit.success(), "{exit:?}");

    // One port up: each node's data now belongs to another node's old address, as a `./data`
    // from before the gateway does (its nodes ran on the ports the gateway and the first two
    // nodes use now). The cluster re-forms over the new addresses and keeps everything.
    let up = Up::start(plus(base, 1), &data, &dir.path().join("up-3.log"));
    up.wait_ready();
    assert_eq!(registered_ips(&up, "kept"), vec!["10.7.0.1"]);
    register_persistent(&up, "kept", "10.7.0.2");
    assert_eq!(registered_ips(&up, "kept"), vec!["10.7.0.1", "10.7.0.2"]);
    let (exit, _) = up.interrupt();
    assert!(exit.success(), "{exit:?}");
}

/// Runs `cmd`, expects it to refuse to start, and returns what it printed on stderr.
fn refused(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run nacre");
    assert!(!out.status.success(), "{cmd:?} started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_settings_fail_loudly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = refused(
        Command::new(BIN)
            .args([
                "registry",
                "--standalone",
                "--listen",
                "127.0.0.1:0",
                "--data",
            ])
            .arg(dir.path())
            .env("NACRE_MAX_BODY_BYTES", "lots"),
    );
    assert!(
        err.contains("NACRE_MAX_BODY_BYTES") && err.contains("lots"),
        "{err}"
    );

    let cfg = dir.path().join("nacre.toml");
    std::fs::write(&cfg, "max_body_byts = 10\n").expect("write config");
    let err = refused(
        Command::new(BIN)
            .args(["registry", "--standalone", "--config"])
            .arg(&cfg),
    );
    assert!(err.contains("max_body_byts"), "{err}");

    // The gateway refuses to start without the cluster's secret, and names it.
    let gateway = || {
        let mut c = Command::new(BIN);
        c.args([
            "gateway",
            "--listen",
            "127.0.0.1:0",
            "--upstreams",
            "127.0.0.1:9",
        ]);
        c
    };
    let err = refused(gateway().env_remove("NACRE_CLUSTER_SECRET"));
    assert!(err.contains("cluster_secret"), "{err}");
}

/// Starts `cmd` with stderr in `stderr`, waits until `addr` answers `path` with 200, stops it
/// and returns what it printed on stderr.
fn serves_and_says(cmd: &mut Command, addr: SocketAddr, path: &str, stderr: &Path) -> String {
    let err = std::fs::File::create(stderr).expect("create stderr file");
    let mut child = cmd.stderr(err).spawn().expect("spawn nacre");
    let served = wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
        matches!(http_get(addr, path, Duration::from_secs(2)), Ok((200, _))).then_some(())
    });
    let exited = child.try_wait().ok().flatten();
    let _ = child.kill();
    let _ = child.wait();
    let said = std::fs::read_to_string(stderr).unwrap_or_default();
    assert!(
        served.is_ok(),
        "{cmd:?} did not serve {path} (exit {exited:?}):\n{said}"
    );
    said
}

#[test]
fn unknown_variables_in_the_environment_are_warnings_not_refusals() {
    let dir = tempfile::tempdir().expect("tempdir");
    let addr = free_loopback_addr().expect("free port");
    let said = serves_and_says(
        Command::new(BIN)
            .args([
                "registry",
                "--standalone",
                "--listen",
                &addr.to_string(),
                "--data",
            ])
            .arg(dir.path().join("node"))
            .env("NACRE_HOME", "/home/someone/nacre")
            .env("NACRE_LISTN", "127.0.0.1:1"),
        addr,
        METRICS_PATH,
        &dir.path().join("node.err"),
    );
    for var in ["NACRE_HOME", "NACRE_LISTN"] {
        assert!(
            said.lines().any(|l| l.contains("WARN") && l.contains(var)),
            "no warning naming {var}:\n{said}"
        );
    }

    let addr = free_loopback_addr().expect("free port");
    let said = serves_and_says(
        Command::new(BIN)
            .args([
                "gateway",
                "--listen",
                &addr.to_string(),
                "--upstreams",
                "127.0.0.1:9",
            ])
            .args(["--cluster-secret", "0123456789abcdef0123"])
            .env("NACRE_GATEWAY_THREADZ", "4"),
        addr,
        "/nacre/gateway/health",
        &dir.path().join("gateway.err"),
    );
    assert!(
        said.lines()
            .any(|l| l.contains("WARN") && l.contains("NACRE_GATEWAY_THREADZ")),
        "no warning naming the variable:\n{said}"
    );
}

#[test]
fn user_errors_print_a_message_and_a_hint_never_a_backtrace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_addr = taken.local_addr().expect("addr").to_string();
    let registry = |extra: &[&str]| {
        let mut c = Command::new(BIN);
        c.args(["registry", "--standalone", "--data"])
            .arg(dir.path().join("node"))
            .args(extra)
            .env("RUST_BACKTRACE", "full")
            .env("RUST_LIB_BACKTRACE", "1");
        c
    };
    let cases: Vec<(Command, i32, &str, &str)> = vec![
        (
            {
                let mut c = registry(&["--listen", "127.0.0.1:0"]);
                c.env("NACRE_MAX_BODY_BYTES", "lots");
                c
            },
            2,
            "NACRE_MAX_BODY_BYTES",
            "hint: fix the value",
        ),
        (
            registry(&["--listen", &taken_addr]),
            1,
            &taken_addr,
            "hint: another process is listening there",
        ),
    ];
    for (mut cmd, code, named, hint) in cases {
        let out = cmd.output().expect("run nacre");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{cmd:?}:\n{err}");
        assert!(err.contains(named) && err.contains(hint), "{cmd:?}:\n{err}");
        for noise in ["backtrace", "panicked", "Stack", "at src/"] {
            assert!(!err.contains(noise), "{noise:?} printed:\n{err}");
        }
        let lines: Vec<&str> = err
            .lines()
            .filter(|l| !l.contains("INFO") && !l.trim().is_empty())
            .collect();
        assert_eq!(lines.len(), 2, "one message and one hint:\n{err}");
    }
    drop(taken);
}

/// A secret file that group or others can read gets a warning at start naming the file and
/// the fix; one readable by its owner only does not.
#[test]
fn a_secret_file_readable_by_others_is_warned_about_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let bin = Path::new(env!("CARGO_BIN_EXE_nacre"));
    for (mode, warned) in [(0o644, true), (0o600, false)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("cluster-secret");
        std::fs::write(&secret, "0123456789abcdef0123456789abcdef").expect("write secret");
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let mut node = nacre_testkit::NodeProcess::start(bin, dir.path()).expect("start");
        node.wait_ready(Duration::from_secs(30)).expect("ready");
        let log = node.log_tail(20_000);
        assert_eq!(
            log.contains("secret file is readable by group or others; run chmod 600 on it"),
            warned,
            "mode {mode:o}:\n{log}"
        );
    }
}
