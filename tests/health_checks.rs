//! Persistent instances are health-checked by the node (TCP by default, HTTP when configured),
//! flipping after consecutive failures and recovering when the port answers again. Every probe
//! target here is on loopback.

use std::path::Path;
use std::time::{Duration, Instant};

use nacre_testkit::http::Api;
use nacre_testkit::NodeProcess;

async fn healthy(api: &Api, port: &str) -> Option<bool> {
    let r = api
        .instance(
            "GET",
            &[("serviceName", "db"), ("ip", "127.0.0.1"), ("port", port)],
        )
        .await;
    (r.status == 200).then(|| r.json()["healthy"].as_bool().unwrap_or(false))
}

async fn wait_for(api: &Api, port: &str, want: bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while healthy(api, port).await != Some(want) {
        assert!(
            Instant::now() < deadline,
            "instance on port {port} never became healthy={want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn tcp_check_marks_dead_instances_and_recovers_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("nacre.toml");
    std::fs::write(
        &cfg,
        "health_check_interval_ms = 200\nhealth_check_timeout_ms = 200\n",
    )
    .expect("write config");
    let cfg = cfg.to_string_lossy().to_string();
    let mut node = NodeProcess::start_with_args(
        Path::new(env!("CARGO_BIN_EXE_nacre")),
        &dir.path().join("data"),
        &["--config", &cfg],
    )
    .expect("start");
    node.wait_ready(Duration::from_secs(30)).expect("ready");
    let api = Api::new(node.addr());

    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port().to_string();
    let r = api
        .instance(
            "POST",
            &[
                ("serviceName", "db"),
                ("ip", "127.0.0.1"),
                ("port", &port),
                ("ephemeral", "false"),
            ],
        )
        .await;
    assert_eq!(r.body, "ok");
    // Alive: stays healthy across several probe rounds.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(healthy(&api, &port).await, Some(true));

    drop(listener);
    wait_for(&api, &port, false).await;
    let prom = api.call("GET", "/metrics", &[]).await.body;
    assert!(
        prom.contains("nacre_health_check_flips_total{result=\"unhealthy\"} 1"),
        "{prom}"
    );

    let _again = std::net::TcpListener::bind(format!("127.0.0.1:{port}")).expect("rebind");
    wait_for(&api, &port, true).await;

    // With a NONE checker, probes stop and only the manual switch changes health.
    api.mark_unhealthy_by_hand("db", "127.0.0.1", &port).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(healthy(&api, &port).await, Some(false));
}
