//! Acknowledged persistent writes survive `kill -9` and restart on the same data directory;
//! ephemeral instances, which live in memory only, do not.

use std::path::Path;
use std::time::Duration;

use nacre_testkit::http::Api;
use nacre_testkit::NodeProcess;

#[tokio::test]
async fn persistent_data_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProcess::start(Path::new(env!("CARGO_BIN_EXE_nacre")), dir.path()).unwrap();
    node.wait_ready(Duration::from_secs(30)).unwrap();
    let api = Api::new(node.addr());

    let r = api
        .call(
            "POST",
            "/nacos/v1/ns/service",
            &[
                ("serviceName", "ledger"),
                ("groupName", "FIN"),
                ("namespaceId", "prod"),
                ("protectThreshold", "0.4"),
                ("metadata", r#"{"owner":"fin"}"#),
            ],
        )
        .await;
    assert_eq!(r.body, "ok");
    for i in 0..50 {
        let ip = format!("127.2.0.{i}");
        let r = api
            .instance(
                "POST",
                &[
                    ("serviceName", "FIN@@ledger"),
                    ("namespaceId", "prod"),
                    ("ip", &ip),
                    ("port", "9000"),
                    ("ephemeral", "false"),
                    ("weight", "2"),
                ],
            )
            .await;
        assert_eq!(r.body, "ok", "write {i}");
    }
    // One persistent instance deregistered: the delete must survive too.
    let r = api
        .instance(
            "DELETE",
            &[
                ("serviceName", "FIN@@ledger"),
                ("namespaceId", "prod"),
                ("ip", "127.2.0.0"),
                ("port", "9000"),
                ("ephemeral", "false"),
            ],
        )
        .await;
    assert_eq!(r.body, "ok");
    let r = api
        .form(
            "POST",
            "/nacos/v1/console/namespaces",
            &[
                ("customNamespaceId", "prod"),
                ("namespaceName", "Production"),
            ],
        )
        .await;
    assert_eq!(r.body, "true");
    let r = api
        .instance(
            "POST",
            &[("serviceName", "temp"), ("ip", "10.3.0.1"), ("port", "1")],
        )
        .await;
    assert_eq!(r.body, "ok");

    node.kill9().unwrap();
    node.restart().unwrap();
    node.wait_ready(Duration::from_secs(30)).unwrap();
    // A fresh client: pooled connections died with the old process.
    let api = Api::new(node.addr());

    let svc = api
        .call(
            "GET",
            "/nacos/v1/ns/service",
            &[
                ("serviceName", "ledger"),
                ("groupName", "FIN"),
                ("namespaceId", "prod"),
            ],
        )
        .await
        .json();
    assert_eq!(svc["protectThreshold"], 0.4);
    assert_eq!(svc["metadata"]["owner"], "fin");
    let list = api
        .list(&[("serviceName", "FIN@@ledger"), ("namespaceId", "prod")])
        .await;
    let hosts = list["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 49);
    assert!(hosts
        .iter()
        .all(|h| h["ephemeral"] == false && h["weight"] == 2.0));
    assert!(!hosts.iter().any(|h| h["ip"] == "127.2.0.0"));
    let ns = api
        .call("GET", "/nacos/v1/console/namespaces", &[])
        .await
        .json();
    assert_eq!(ns["data"][1]["namespaceShowName"], "Production");
    let temp = api.list(&[("serviceName", "temp")]).await;
    assert_eq!(
        temp["hosts"],
        serde_json::json!([]),
        "ephemeral data is memory-only"
    );

    // The restarted node still takes writes.
    let r = api
        .instance(
            "POST",
            &[
                ("serviceName", "FIN@@ledger"),
                ("namespaceId", "prod"),
                ("ip", "127.2.1.1"),
                ("port", "9000"),
                ("ephemeral", "false"),
            ],
        )
        .await;
    assert_eq!(r.body, "ok");
}
