//! Black-box conformance of the Nacos 1.x naming API against a real `nacre` process.
//!
//! Each test starts its own standalone node on a free loopback port with a fresh data dir, and
//! talks to it over HTTP the way legacy clients do.

use std::path::Path;
use std::time::Duration;

use nacre_testkit::http::Api;
use nacre_testkit::NodeProcess;

const NS: &str = "/nacos/v1/ns";

fn start(dir: &Path) -> NodeProcess {
    let mut node =
        NodeProcess::start(Path::new(env!("CARGO_BIN_EXE_nacre")), dir).expect("start nacre");
    node.wait_ready(Duration::from_secs(30))
        .expect("nacre ready");
    node
}

fn path(p: &str) -> String {
    format!("{NS}{p}")
}

#[tokio::test]
async fn register_list_and_grouping_follow_nacos() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    let java = Api::new(node.addr());
    let python = Api::new(node.addr()).with_agent("Nacos-Python-Client:v0.1.16");

    // Python sends a bare name plus groupName, in a form body.
    let r = python
        .form(
            "POST",
            &path("/instance"),
            &[
                ("serviceName", "orders"),
                ("groupName", "G1"),
                ("ip", "10.0.0.5"),
                ("port", "8080"),
                ("weight", "2.5"),
                ("metadata", r#"{"v":"1","n":2}"#),
                ("clusterName", "None"),
                ("enable", "True"),
            ],
        )
        .await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));

    // Java asks with the grouped name in the query string.
    let list = java.list(&[("serviceName", "G1@@orders")]).await;
    assert_eq!(list["name"], "G1@@orders");
    assert_eq!(list["dom"], "G1@@orders");
    assert_eq!(list["clusters"], "");
    assert_eq!(list["cacheMillis"], 3000);
    let h = &list["hosts"][0];
    assert_eq!(h["ip"], "10.0.0.5");
    assert_eq!(h["port"], 8080);
    assert_eq!(h["weight"], 2.5);
    assert_eq!(h["clusterName"], "None");
    assert_eq!(h["metadata"]["n"], "2");
    assert_eq!(h["instanceId"], "10.0.0.5#8080#None#G1@@orders");
    assert_eq!(h["healthy"], true);
    assert_eq!(h["valid"], true);

    // Python sees a bare `dom`.
    let list = python
        .list(&[("serviceName", "orders"), ("groupName", "G1")])
        .await;
    assert_eq!(list["dom"], "orders");
    assert_eq!(list["name"], "G1@@orders");

    // Other group and other namespace see nothing.
    let other = java.list(&[("serviceName", "orders")]).await;
    assert_eq!(
        other,
        serde_json::json!({"name":"DEFAULT_GROUP@@orders","clusters":"","cacheMillis":3000,"hosts":[]})
    );
    let other_ns = java
        .list(&[("serviceName", "G1@@orders"), ("namespaceId", "dev")])
        .await;
    assert_eq!(other_ns["hosts"], serde_json::json!([]));

    // Cluster filter echoes `clusters` verbatim.
    let filtered = java
        .list(&[("serviceName", "G1@@orders"), ("clusters", "A,B")])
        .await;
    assert_eq!(filtered["clusters"], "A,B");
    assert_eq!(filtered["hosts"], serde_json::json!([]));

    // Python 0.1.7 deregisters with a DELETE carrying a form body.
    let r = python
        .form(
            "DELETE",
            &path("/instance"),
            &[
                ("serviceName", "orders"),
                ("groupName", "G1"),
                ("ip", "10.0.0.5"),
                ("port", "8080"),
                ("clusterName", "None"),
            ],
        )
        .await;
    assert_eq!(r.body, "ok");
    let gone = java.list(&[("serviceName", "G1@@orders")]).await;
    assert_eq!(gone["hosts"], serde_json::json!([]));
}

#[tokio::test]
async fn health_threshold_and_update_semantics() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    let api = Api::new(node.addr());
    for (ip, healthy) in [
        ("10.0.0.1", "true"),
        ("10.0.0.2", "false"),
        ("10.0.0.3", "false"),
    ] {
        let r = api
            .instance(
                "POST",
                &[
                    ("serviceName", "pay"),
                    ("ip", ip),
                    ("port", "80"),
                    ("healthy", healthy),
                ],
            )
            .await;
        assert_eq!(r.body, "ok");
    }
    let all = api.list(&[("serviceName", "pay")]).await;
    let order: Vec<_> = all["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["ip"].as_str().unwrap().to_string(),
                h["healthy"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        order,
        vec![
            ("10.0.0.1".to_string(), true),
            ("10.0.0.2".to_string(), false),
            ("10.0.0.3".to_string(), false)
        ]
    );
    let healthy = api
        .list(&[("serviceName", "pay"), ("healthyOnly", "true")])
        .await;
    assert_eq!(healthy["hosts"].as_array().unwrap().len(), 1);

    // Raise the protect threshold to 0.5: 1/3 healthy <= 0.5, so all come back healthy.
    let r = api
        .call(
            "PUT",
            &path("/service"),
            &[("serviceName", "pay"), ("protectThreshold", "0.5")],
        )
        .await;
    assert_eq!(r.body, "ok");
    let protected = api
        .list(&[("serviceName", "pay"), ("healthyOnly", "true")])
        .await;
    let hosts = protected["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 3);
    assert!(hosts.iter().all(|h| h["healthy"] == true));

    // Java ≥ 1.0: PUT on a missing instance is a 400; Python: upsert.
    let r = api
        .instance(
            "PUT",
            &[("serviceName", "pay"), ("ip", "10.0.0.9"), ("port", "80")],
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.starts_with("instance not exist"), "{}", r.body);
    let py = api.clone().with_agent("Nacos-Python-Client:v0.1.16");
    let r = py
        .instance(
            "PUT",
            &[("serviceName", "pay"), ("ip", "10.0.0.9"), ("port", "80")],
        )
        .await;
    assert_eq!(r.body, "ok");

    // Re-registration keeps the health flag; PATCH changes only what it names.
    let r = api
        .instance(
            "PATCH",
            &[
                ("serviceName", "pay"),
                ("ip", "10.0.0.2"),
                ("port", "80"),
                ("weight", "7"),
            ],
        )
        .await;
    assert_eq!(r.body, "ok");
    let detail = api
        .instance(
            "GET",
            &[("serviceName", "pay"), ("ip", "10.0.0.2"), ("port", "80")],
        )
        .await
        .json();
    assert_eq!(detail["weight"], 7.0);
    assert_eq!(detail["healthy"], false);
    assert_eq!(detail["service"], "DEFAULT_GROUP@@pay");

    let missing = api
        .instance(
            "GET",
            &[("serviceName", "pay"), ("ip", "10.9.9.9"), ("port", "80")],
        )
        .await;
    assert_eq!(
        (missing.status, missing.body.as_str()),
        (404, "no matched ip found!")
    );
}

#[tokio::test]
async fn beats_revive_and_unknown_instances_reregister() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    let api = Api::new(node.addr());
    let r = api
        .call(
            "PUT",
            &path("/instance/beat"),
            &[("serviceName", "svc"), ("ip", "10.0.0.1"), ("port", "81")],
        )
        .await
        .json();
    assert_eq!(
        r,
        serde_json::json!({"clientBeatInterval":5000,"code":20404})
    );

    // With a body (Java sends it in a form), the instance is registered from the beat.
    let beat = r#"{"ip":"10.0.0.1","port":81,"weight":3.0,"cluster":"C1","metadata":{"preserved.heart.beat.interval":"2000"},"scheduled":true}"#;
    let r = api
        .form(
            "PUT",
            &path("/instance/beat"),
            &[("serviceName", "svc"), ("beat", beat)],
        )
        .await
        .json();
    assert_eq!(r["code"], 10200);
    assert_eq!(r["clientBeatInterval"], 2000);
    assert_eq!(r["lightBeatEnabled"], true);
    let list = api.list(&[("serviceName", "svc")]).await;
    assert_eq!(list["hosts"][0]["clusterName"], "C1");
    assert_eq!(list["hosts"][0]["weight"], 3.0);

    // A light beat (no body) for the now-known instance.
    let r = api
        .call(
            "PUT",
            &path("/instance/beat"),
            &[
                ("serviceName", "svc"),
                ("ip", "10.0.0.1"),
                ("port", "81"),
                ("clusterName", "C1"),
            ],
        )
        .await
        .json();
    assert_eq!(r["code"], 10200);
}

#[tokio::test]
async fn silent_instances_expire_by_their_preserved_timeouts() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    let api = Api::new(node.addr());
    let meta = r#"{"preserved.heart.beat.timeout":"1000","preserved.ip.delete.timeout":"2500"}"#;
    let r = api
        .instance(
            "POST",
            &[
                ("serviceName", "short"),
                ("ip", "10.0.0.1"),
                ("port", "80"),
                ("metadata", meta),
            ],
        )
        .await;
    assert_eq!(r.body, "ok");
    let host_state = || async {
        let l = api.list(&[("serviceName", "short")]).await;
        l["hosts"]
            .as_array()
            .unwrap()
            .first()
            .map(|h| h["healthy"].as_bool().unwrap())
    };
    // Generous bounds: the sweep runs every second.
    let mut saw_unhealthy = false;
    for _ in 0..60 {
        match host_state().await {
            // With one instance and threshold 0.0, unhealthy is reported as healthy under
            // protection; check the detail endpoint, which reports the stored flag.
            Some(_) => {
                let d = api
                    .instance(
                        "GET",
                        &[("serviceName", "short"), ("ip", "10.0.0.1"), ("port", "80")],
                    )
                    .await;
                if d.status == 200 && d.json()["healthy"] == false {
                    saw_unhealthy = true;
                }
            }
            None => break,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(saw_unhealthy, "instance never turned unhealthy");
    assert_eq!(host_state().await, None, "instance was not removed");
    let m = api.call("GET", "/metrics", &[]).await.body;
    assert!(
        m.contains("nacre_expirations_total{kind=\"removed\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("nacre_expirations_total{kind=\"unhealthy\"} 1"),
        "{m}"
    );
}

#[tokio::test]
async fn services_catalog_and_namespaces() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    let api = Api::new(node.addr());
    let create = [
        ("serviceName", "inventory"),
        ("protectThreshold", "0.3"),
        ("metadata", "team=core,tier=1"),
    ];
    let r = api.form("POST", &path("/service"), &create).await;
    assert_eq!(r.body, "ok");
    // A client retrying the same create (its first answer lost) gets the same outcome.
    let retried = api.form("POST", &path("/service"), &create).await;
    assert_eq!((retried.status, retried.body.as_str()), (200, "ok"));
    let dup = api
        .call("POST", &path("/service"), &[("serviceName", "inventory")])
        .await;
    assert_eq!(dup.status, 400);
    assert_eq!(
        dup.body,
        "specified service already exists, serviceName : DEFAULT_GROUP@@inventory"
    );
    let d = api
        .call("GET", &path("/service"), &[("serviceName", "inventory")])
        .await
        .json();
    assert_eq!(d["name"], "inventory");
    assert_eq!(d["groupName"], "DEFAULT_GROUP");
    assert_eq!(d["protectThreshold"], 0.3);
    assert_eq!(d["metadata"]["team"], "core");
    assert_eq!(d["selector"]["type"], "none");

    for i in 0..3 {
        let name = format!("svc{i}");
        api.instance(
            "POST",
            &[("serviceName", &name), ("ip", "10.1.1.1"), ("port", "80")],
        )
        .await;
    }
    let page = api
        .call(
            "GET",
            &path("/service/list"),
            &[("pageNo", "2"), ("pageSize", "3")],
        )
        .await
        .json();
    assert_eq!(page["count"], 4);
    assert_eq!(page["doms"], serde_json::json!(["svc2"]));

    let cat = api
        .call(
            "GET",
            &path("/catalog/services"),
            &[
                ("pageNo", "1"),
                ("pageSize", "10"),
                ("serviceNameParam", "svc"),
            ],
        )
        .await
        .json();
    assert_eq!(cat["count"], 3);
    assert_eq!(cat["serviceList"][0]["ipCount"], 1);
    assert_eq!(cat["serviceList"][0]["healthyInstanceCount"], 1);

    let r = api
        .call("DELETE", &path("/service"), &[("serviceName", "inventory")])
        .await;
    assert_eq!(r.body, "ok");
    let r = api
        .call("GET", &path("/service"), &[("serviceName", "inventory")])
        .await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (404, "service DEFAULT_GROUP@@inventory is not found!")
    );

    // Namespaces.
    let r = api
        .form(
            "POST",
            "/nacos/v1/console/namespaces",
            &[
                ("customNamespaceId", "dev"),
                ("namespaceName", "Dev"),
                ("namespaceDesc", "d"),
            ],
        )
        .await;
    assert_eq!(r.body, "true");
    let list = api
        .call("GET", "/nacos/v1/console/namespaces", &[])
        .await
        .json();
    let ids: Vec<_> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["namespace"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, vec!["".to_string(), "dev".to_string()]);
    let r = api
        .form(
            "PUT",
            "/nacos/v1/console/namespaces",
            &[("namespace", "dev"), ("namespaceShowName", "Development")],
        )
        .await;
    assert_eq!(r.body, "true");
    let one = api
        .call(
            "GET",
            "/nacos/v1/console/namespaces",
            &[("show", "all"), ("namespaceId", "dev")],
        )
        .await
        .json();
    assert_eq!(one["namespaceShowName"], "Development");
    let r = api
        .call(
            "DELETE",
            "/nacos/v1/console/namespaces",
            &[("namespaceId", "dev")],
        )
        .await;
    assert_eq!(r.body, "true");
    let exists = api
        .call(
            "GET",
            "/nacos/v1/console/namespaces",
            &[
                ("checkNamespaceIdExist", "true"),
                ("customNamespaceId", "dev"),
            ],
        )
        .await;
    assert_eq!(exists.body, "false");
}

#[tokio::test]
async fn operator_and_health_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    let api = Api::new(node.addr());
    let m = api
        .call("GET", &path("/operator/metrics"), &[])
        .await
        .json();
    assert_eq!(m["status"], "UP");
    let s = api
        .call("GET", &path("/operator/switches"), &[])
        .await
        .json();
    assert_eq!(s["defaultCacheMillis"], 3000);
    assert_eq!(s["clientBeatInterval"], 5000);
    let servers = api
        .call("GET", &path("/operator/servers"), &[])
        .await
        .json();
    assert_eq!(servers["servers"][0]["address"], node.addr().to_string());
    let ops = api.call("GET", &path("/ops/metrics"), &[]).await;
    assert_eq!(ops.status, 200);
    assert_eq!(
        api.call("GET", "/nacos/v1/console/health/liveness", &[])
            .await
            .body,
        "OK"
    );
    assert_eq!(
        api.call("GET", "/nacos/v1/console/health/readiness", &[])
            .await
            .body,
        "OK"
    );
    let hs = api.call("GET", &path("/health/server"), &[]).await.json();
    assert!(hs["msg"]
        .as_str()
        .unwrap()
        .starts_with("Hello! I am Nacos-Naming"));
    let cluster = api.call("GET", "/nacre/v1/cluster", &[]).await.json();
    assert_eq!(cluster["leader"], node.addr().to_string());
    assert_eq!(cluster["self"], node.addr().to_string());
    let nodes = api
        .call("GET", "/nacos/v1/core/cluster/nodes", &[])
        .await
        .json();
    assert_eq!(nodes["data"][0]["state"], "UP");

    api.instance(
        "POST",
        &[("serviceName", "m"), ("ip", "10.0.0.1"), ("port", "80")],
    )
    .await;
    let prom = api.call("GET", "/metrics", &[]).await.body;
    assert!(
        prom.contains("nacre_instances{kind=\"ephemeral\"} 1"),
        "{prom}"
    );
    assert!(
        prom.contains(
            "nacre_http_requests_total{api=\"POST /nacos/v1/ns/instance\",status=\"200\"} 1"
        ),
        "{prom}"
    );

    // Manual health only with a NONE checker.
    let r = api
        .call(
            "PUT",
            &path("/health/instance"),
            &[
                ("serviceName", "m"),
                ("ip", "10.0.0.1"),
                ("port", "80"),
                ("healthy", "false"),
            ],
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.body.starts_with("health check is still working"),
        "{}",
        r.body
    );
    api.mark_unhealthy_by_hand("m", "10.0.0.1", "80").await;
    let d = api
        .instance(
            "GET",
            &[("serviceName", "m"), ("ip", "10.0.0.1"), ("port", "80")],
        )
        .await
        .json();
    assert_eq!(d["healthy"], false);
}

/// A client cannot aim pushes at another host: neither `clientIP` nor `X-Forwarded-For` nor a
/// forged client-address assertion moves a subscription off the request's TCP peer.
#[tokio::test]
async fn pushes_go_to_the_verified_source_not_where_a_client_points_them() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    let api = Api::new(node.addr()).with_agent("Nacos-Java-Client:v1.4.1");
    let svc = "aimed";
    let sub = api
        .list(&[
            ("serviceName", svc),
            ("udpPort", "41234"),
            ("clientIP", "10.66.0.1"),
        ])
        .await;
    assert_eq!(sub["cacheMillis"], 10000, "{sub}");
    // Headers a client can write itself.
    let client = reqwest::Client::new();
    let url = format!(
        "http://{}{}?serviceName={svc}&udpPort=41235",
        node.addr(),
        path("/instance/list")
    );
    let r = client
        .get(&url)
        .header("user-agent", "Nacos-Java-Client:v1.4.1")
        .header("x-forwarded-for", "10.66.0.2")
        .header("x-nacre-client-addr", "10.66.0.3")
        .header("x-nacre-asserted-by", "not-the-secret-000")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let subs = api
        .call(
            "GET",
            &path("/service/subscribers"),
            &[("serviceName", svc)],
        )
        .await
        .json();
    let ips: Vec<String> = subs["subscribers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["addrStr"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(subs["count"], 2, "{subs}");
    for ip in &ips {
        assert!(
            ip.starts_with("127.0.0.1:"),
            "a push was aimed elsewhere: {ips:?}"
        );
    }
}

#[tokio::test]
async fn udp_push_reaches_a_java_subscriber() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    let api = Api::new(node.addr());
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = sock.local_addr().unwrap().port().to_string();
    let sub = api
        .list(&[
            ("serviceName", "pushy"),
            ("udpPort", &port),
            ("clientIP", "127.0.0.1"),
        ])
        .await;
    assert_eq!(sub["cacheMillis"], 10000);
    let r = api
        .instance(
            "POST",
            &[("serviceName", "pushy"), ("ip", "10.0.0.7"), ("port", "80")],
        )
        .await;
    assert_eq!(r.body, "ok");
    let mut buf = vec![0u8; 65536];
    let (n, from) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
        .await
        .expect("no push within 5 s")
        .unwrap();
    let packet: serde_json::Value = serde_json::from_slice(&buf[..n]).unwrap();
    assert_eq!(packet["type"], "dom");
    let data: serde_json::Value = serde_json::from_str(packet["data"].as_str().unwrap()).unwrap();
    assert_eq!(data["hosts"][0]["ip"], "10.0.0.7");
    assert_eq!(data["name"], "DEFAULT_GROUP@@pushy");
    let ack = serde_json::json!({"type":"push-ack","lastRefTime": packet["lastRefTime"].to_string(),"data":""});
    sock.send_to(ack.to_string().as_bytes(), from)
        .await
        .unwrap();
    let mut acked = false;
    for _ in 0..50 {
        let st = api
            .call("GET", &path("/operator/push/state"), &[])
            .await
            .json();
        if st["succeed"] == 1 {
            acked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(acked, "ack was not counted");
    let subs = api
        .call(
            "GET",
            &path("/service/subscribers"),
            &[("serviceName", "pushy")],
        )
        .await
        .json();
    assert_eq!(subs["count"], 1);
}

#[tokio::test]
async fn metadata_batch_updates_and_removes_keys() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    let api = Api::new(node.addr());
    for (ip, eph) in [
        ("10.0.0.1", "true"),
        ("10.0.0.2", "true"),
        ("127.0.0.3", "false"),
    ] {
        let r = api
            .instance(
                "POST",
                &[
                    ("serviceName", "meta"),
                    ("ip", ip),
                    ("port", "80"),
                    ("ephemeral", eph),
                    ("metadata", "keep=1"),
                ],
            )
            .await;
        assert_eq!(r.body, "ok");
    }
    let r = api
        .form(
            "PUT",
            &path("/instance/metadata/batch"),
            &[
                ("serviceName", "meta"),
                ("consistencyType", "ephemeral"),
                ("metadata", r#"{"zone":"a"}"#),
            ],
        )
        .await
        .json();
    let mut updated: Vec<String> = r["updated"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    updated.sort();
    assert_eq!(
        updated,
        vec![
            "10.0.0.1:80:unknown:DEFAULT:ephemeral".to_string(),
            "10.0.0.2:80:unknown:DEFAULT:ephemeral".to_string()
        ]
    );
    let instances = r#"[{"ip":"127.0.0.3","port":80,"clusterName":"DEFAULT","ephemeral":false}]"#;
    let r = api
        .form(
            "PUT",
            &path("/instance/metadata/batch"),
            &[
                ("serviceName", "meta"),
                ("instances", instances),
                ("metadata", "zone=b"),
            ],
        )
        .await
        .json();
    assert_eq!(
        r["updated"],
        serde_json::json!(["127.0.0.3:80:unknown:DEFAULT:persist"])
    );
    let list = api.list(&[("serviceName", "meta")]).await;
    for h in list["hosts"].as_array().unwrap() {
        let want = if h["ip"] == "127.0.0.3" { "b" } else { "a" };
        assert_eq!(h["metadata"]["zone"], want, "{h}");
        assert_eq!(h["metadata"]["keep"], "1");
    }
    let r = api
        .call(
            "DELETE",
            &path("/instance/metadata/batch"),
            &[("serviceName", "meta"), ("metadata", "zone=")],
        )
        .await
        .json();
    assert_eq!(r["updated"].as_array().unwrap().len(), 3);
    let list = api.list(&[("serviceName", "meta")]).await;
    assert!(list["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .all(|h| h["metadata"].get("zone").is_none()));
    let bad = api
        .call(
            "PUT",
            &path("/instance/metadata/batch"),
            &[
                ("serviceName", "meta"),
                ("instances", "[{"),
                ("metadata", "a=1"),
            ],
        )
        .await;
    assert_eq!(bad.status, 400);
}

/// Lists are served from a cache of rendered answers; every kind of change must show in the
/// very next list, and `lastRefTime` must still be the time of the request.
#[tokio::test]
async fn cached_lists_follow_every_change_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    let api = Api::new(node.addr());
    let svc = [("serviceName", "cached")];
    let ips = |v: &serde_json::Value| -> Vec<String> {
        let mut ips: Vec<String> = v["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| format!("{}:{}", h["ip"].as_str().unwrap(), h["healthy"]))
            .collect();
        ips.sort();
        ips
    };

    assert!(ips(&api.list(&svc).await).is_empty(), "missing service");
    let reg = |ip: &'static str, eph: &'static str| {
        let api = api.clone();
        async move {
            let r = api
                .instance(
                    "POST",
                    &[
                        ("serviceName", "cached"),
                        ("ip", ip),
                        ("port", "80"),
                        ("ephemeral", eph),
                    ],
                )
                .await;
            assert_eq!(r.body, "ok");
        }
    };
    // Ephemeral register after a cached "missing" answer.
    reg("10.9.0.1", "true").await;
    let first = api.list(&svc).await;
    assert_eq!(ips(&first), vec!["10.9.0.1:true"]);
    // Repeated lists (cache hits) carry a fresh lastRefTime.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let again = api.list(&svc).await;
    assert!(again["lastRefTime"].as_u64() > first["lastRefTime"].as_u64());
    assert_eq!(again["checksum"], first["checksum"]);

    // A persistent register (Raft apply path).
    reg("127.9.0.2", "false").await;
    assert_eq!(
        ips(&api.list(&svc).await),
        vec!["10.9.0.1:true", "127.9.0.2:true"]
    );
    // Health set by hand (cluster checker NONE, through Raft).
    api.mark_unhealthy_by_hand("cached", "10.9.0.1", "80").await;
    assert_eq!(
        ips(&api.list(&svc).await),
        vec!["10.9.0.1:false", "127.9.0.2:true"]
    );
    // The protect threshold (service metadata through Raft) changes the healthy flags shown.
    let r = api
        .call(
            "PUT",
            &path("/service"),
            &[("serviceName", "cached"), ("protectThreshold", "0.9")],
        )
        .await;
    assert_eq!(r.body, "ok");
    assert_eq!(
        ips(&api.list(&svc).await),
        vec!["10.9.0.1:true", "127.9.0.2:true"],
        "protect threshold reached: everyone is returned as healthy"
    );
    // Deregistration.
    let r = api
        .instance(
            "DELETE",
            &[
                ("serviceName", "cached"),
                ("ip", "10.9.0.1"),
                ("port", "80"),
            ],
        )
        .await;
    assert_eq!(r.body, "ok");
    assert_eq!(ips(&api.list(&svc).await), vec!["127.9.0.2:true"]);
}
