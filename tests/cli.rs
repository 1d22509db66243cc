//! The binary's command line: `nacre up` runs a gateway in front of a 3-node cluster and stops
//! cleanly on Ctrl-C; bad settings stop start-up with the offending key named.

use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nacre_testkit::{free_loopback_addr, http_get, METRICS_PATH};

const BIN: &str = env!("CARGO_BIN_EXE_nacre");

/// A loopback base port whose next three ports are free too (`nacre up` uses four: the
/// gateway, then three nodes).
fn four_free_ports() -> SocketAddr {
    for _ in 0..50 {
        let base = free_loopback_addr().expect("free port");
        let held: Vec<_> = (0..4u16)
            .filter_map(|k| base.port().checked_add(k))
            .filter_map(|p| TcpListener::bind(SocketAddr::new(base.ip(), p)).ok())
            .collect();
        if held.len() == 4 {
            return base;
        }
    }
    panic!("no four consecutive free loopback ports");
}

#[test]
fn up_starts_a_gateway_and_three_nodes_and_stops_cleanly_on_sigint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = four_free_ports();
    let data = dir.path().join("data");
    let mut child = Command::new(BIN)
        .args(["up", "--listen", &base.to_string(), "--data"])
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn nacre up");
    let addrs: Vec<SocketAddr> = (1..=3u16)
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
    // The one address clients get: the gateway, routing to all three nodes.
    loop {
        if let Ok((200, body)) = http_get(base, "/nacre/gateway/ready", Duration::from_secs(2)) {
            if body.contains("\"nodes\":3") && body.contains("\"feedsFollowed\":true") {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the gateway never became ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, list) = http_get(base, "/nacos/serverlist", Duration::from_secs(2)).expect("list");
    assert_eq!((code, list.as_str()), (200, base.to_string().as_str()));
    let (code, body) = http_get(
        base,
        "/nacos/v1/ns/instance/list?serviceName=none",
        Duration::from_secs(2),
    )
    .expect("list through the gateway");
    assert_eq!(code, 200, "{body}");
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
    for addr in addrs.iter().chain([&base]) {
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

    // The gateway refuses to start without the cluster's secret, and names it.
    let out = Command::new(BIN)
        .args([
            "gateway",
            "--listen",
            "127.0.0.1:0",
            "--upstreams",
            "127.0.0.1:9",
        ])
        .env_remove("NACRE_CLUSTER_SECRET")
        .output()
        .expect("run nacre gateway");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cluster_secret"), "{err}");
}
