//! The binary's command line: `nacre up` runs a 3-node cluster and stops cleanly on Ctrl-C; bad settings stop
//! start-up with the offending key named.

use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nacre_testkit::{free_loopback_addr, http_get, METRICS_PATH};

const BIN: &str = env!("CARGO_BIN_EXE_nacre");

/// A loopback base port whose next two ports are free too (`nacre up` uses three).
fn three_free_ports() -> SocketAddr {
    for _ in 0..50 {
        let base = free_loopback_addr().expect("free port");
        let held: Vec<_> = (0..3u16)
            .filter_map(|k| base.port().checked_add(k))
            .filter_map(|p| TcpListener::bind(SocketAddr::new(base.ip(), p)).ok())
            .collect();
        if held.len() == 3 {
            return base;
        }
    }
    panic!("no three consecutive free loopback ports");
}

#[test]
fn up_starts_a_three_node_cluster_and_stops_cleanly_on_sigint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = three_free_ports();
    let data = dir.path().join("data");
    let mut child = Command::new(BIN)
        .args(["up", "--listen", &base.to_string(), "--data"])
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn nacre up");
    let addrs: Vec<SocketAddr> = (0..3u16)
        .map(|k| SocketAddr::new(base.ip(), base.port() + k))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    for addr in &addrs {
        loop {
            if let Ok((200, body)) = http_get(*addr, METRICS_PATH, Duration::from_secs(2)) {
                if body.contains("\"status\":\"UP\"") {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "node {addr} never became ready");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // One cluster: every node names the same leader and all three members.
    let (_, view) =
        http_get(addrs[0], "/nacre/v1/cluster", Duration::from_secs(2)).expect("cluster view");
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
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "nacre up did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "exit status {exit:?}");
    let mut out = String::new();
    let _ = std::io::Read::read_to_string(&mut child.stdout.take().expect("stdout"), &mut out);
    for addr in &addrs {
        assert!(
            out.contains(&addr.to_string()),
            "address {addr} not printed: {out}"
        );
    }
}

#[test]
fn bad_settings_fail_loudly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(BIN)
        .args([
            "registry",
            "--standalone",
            "--listen",
            "127.0.0.1:0",
            "--data",
        ])
        .arg(dir.path())
        .env("NACRE_MAX_BODY_BYTES", "lots")
        .output()
        .expect("run nacre");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("NACRE_MAX_BODY_BYTES") && err.contains("lots"),
        "{err}"
    );

    let cfg = dir.path().join("nacre.toml");
    std::fs::write(&cfg, "max_body_byts = 10\n").expect("write config");
    let out = Command::new(BIN)
        .args(["registry", "--standalone", "--config"])
        .arg(&cfg)
        .output()
        .expect("run nacre");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max_body_byts"), "{err}");
}
