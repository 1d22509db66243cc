//! The config center (`/nacos/v1/cs`) against real nodes: the wire contract of reads,
//! publishes, deletes, searches, history and listener long-polls; bad input; durability across
//! `kill -9`; a 3-node cluster (read-your-writes on every node, listeners woken by a publish
//! on another node, acknowledged publishes surviving the Raft leader's death); and listeners
//! through the gateway.

use std::path::Path;
use std::time::{Duration, Instant};

use nacre_testkit::cluster::{ClusterOptions, TestCluster};
use nacre_testkit::gateway::GatewayProcess;
use nacre_testkit::http::Api;
use nacre_testkit::NodeProcess;

const READY: Duration = Duration::from_secs(60);

/// Three fast nodes behind a gateway, data under `root`, ready.
fn gateway_cluster(root: &Path) -> (TestCluster, GatewayProcess) {
    GatewayProcess::with_cluster(bin(), root, ClusterOptions::new(3).fast(), READY)
        .unwrap_or_else(|e| panic!("gateway cluster: {e:#}"))
}

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_nacre"))
}

async fn standalone(dir: &Path) -> (NodeProcess, Api) {
    let mut node = NodeProcess::start(bin(), dir).expect("start nacre");
    node.wait_ready(READY).expect("ready");
    let api = Api::new(node.addr());
    (node, api)
}

/// The md5 a config listener holds: the one the nodes compute.
use nacre_registry::configs::md5_hex;

/// `dataId ^2 group ^2 md5 ^2 tenant ^1`, as the Python client writes every entry.
fn entry(data_id: &str, group: &str, md5: &str, tenant: &str) -> String {
    format!("{data_id}\u{2}{group}\u{2}{md5}\u{2}{tenant}\u{1}")
}

#[tokio::test]
async fn publish_get_delete_and_the_headers_clients_read() {
    let dir = tempfile::tempdir().unwrap();
    let (node, api) = standalone(dir.path()).await;
    let content = "spring:\n  name: demo # 配置 & = % +\n\n";
    let r = api
        .publish_config("app.yaml", "DEFAULT_GROUP", None, content)
        .await;
    assert_eq!((r.status, r.body.as_str()), (200, "true"), "{r:?}");
    // The exact bytes back, whitespace included, with Nacos's headers.
    let resp = reqwest::get(format!(
        "http://{}/nacos/v1/cs/configs?dataId=app.yaml&group=DEFAULT_GROUP",
        node.addr()
    ))
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    assert_eq!(h["Content-MD5"], md5_hex(content).as_str());
    assert_eq!(h["Config-Type"], "text");
    assert!(h["Content-Type"]
        .to_str()
        .unwrap()
        .contains("charset=UTF-8"));
    assert_eq!(h["Cache-Control"], "no-cache,no-store");
    assert!(h.contains_key("Last-Modified"));
    assert_eq!(resp.text().await.unwrap(), content);
    // Query parameters (the Python client) and a type.
    let r = api
        .call(
            "POST",
            "/nacos/v1/cs/configs",
            &[
                ("dataId", "db.json"),
                ("group", "G1"),
                ("tenant", "ns-1"),
                ("content", "{\"a\":1}"),
                ("type", "json"),
            ],
        )
        .await;
    assert_eq!(r.body, "true");
    // A namespace isolates: the same key elsewhere does not exist.
    assert_eq!(
        api.config("db.json", "G1", Some("ns-1")).await.body,
        "{\"a\":1}"
    );
    let missing = api.config("db.json", "G1", None).await;
    assert_eq!(
        (missing.status, missing.body.as_str()),
        (404, "config data not exist\n")
    );
    // `public` is the empty tenant.
    assert_eq!(
        api.config("app.yaml", "DEFAULT_GROUP", Some("public"))
            .await
            .body,
        content
    );
    // Delete answers `true`, also for what is not there.
    for _ in 0..2 {
        let r = api
            .call(
                "DELETE",
                "/nacos/v1/cs/configs",
                &[("dataId", "app.yaml"), ("group", "DEFAULT_GROUP")],
            )
            .await;
        assert_eq!(r.body, "true");
    }
    assert_eq!(
        api.config("app.yaml", "DEFAULT_GROUP", None).await.status,
        404
    );
}

#[tokio::test]
async fn bad_input_is_refused_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let (mut node, api) = standalone(dir.path()).await;
    assert_eq!(
        api.publish_config("kept", "G", None, "v1").await.body,
        "true"
    );
    let too_big = "x".repeat(10 * 1024 * 1024 + 1);
    for (d, g, t, c, says) in [
        ("a b", "G", None, "v", "invalid dataId"),
        ("kept", "G/../x", None, "v", "invalid group"),
        ("kept", "G", Some("bad tenant"), "v", "invalid tenant"),
        ("kept", "G", None, "   ", "content must not be blank"),
        ("kept", "G", None, too_big.as_str(), "over the"),
    ] {
        let r = api.publish_config(d, g, t, c).await;
        assert_eq!(r.status, 400, "{d} {g} {t:?}: {}", r.body);
        assert!(r.body.contains(says), "{says}: {}", r.body);
    }
    let r = api
        .form("POST", "/nacos/v1/cs/configs", &[("dataId", "kept")])
        .await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (400, "Param 'group' is required.")
    );
    assert_eq!(api.config("kept", "G", None).await.body, "v1", "unchanged");
    // Malformed listener requests.
    let many: String = (0..10_001)
        .map(|i| entry(&format!("d{i}"), "G", "", ""))
        .collect();
    for bad in [
        String::new(),
        "a\u{2}G\u{1}".to_string(),
        "a\u{2}G\u{2}m\u{2}t\u{2}x\u{1}".to_string(),
        many,
    ] {
        let r = api.listen_configs(&bad, None).await;
        assert_eq!(r.status, 400, "{:?}: {}", bad.get(..20), r.body);
    }
    let r = api
        .call("GET", "/nacos/v1/cs/configs", &[("search", "fuzzy")])
        .await;
    assert_eq!(r.status, 400);
    assert!(node.try_exit_status().unwrap().is_none(), "node died");
}

#[tokio::test]
async fn listeners_fire_on_create_change_and_delete_and_echo_the_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, api) = standalone(dir.path()).await;
    // Missing config, client holds nothing: no change, answered at once without a timeout.
    let nothing = entry("later", "G", "", "");
    let r = api.listen_configs(&nothing, None).await;
    assert_eq!((r.status, r.body.as_str()), (200, ""));
    // A parked listener on a not-yet-created config fires when it is created.
    let parked = {
        let api = api.clone();
        let nothing = nothing.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            (
                api.listen_configs(&nothing, Some(30_000)).await,
                t.elapsed(),
            )
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        api.publish_config("later", "G", None, "v1").await.body,
        "true"
    );
    let (r, took) = parked.await.unwrap();
    assert_eq!(r.body, "later%02G%01\n", "{r:?}");
    assert_eq!(
        api.metric("nacre_config{field=\"parked_listeners\"}").await,
        0.0
    );
    assert!(
        took < Duration::from_secs(5),
        "woken by the publish: {took:?}"
    );
    // A stale md5 answers at once; the current one holds.
    let r = api
        .listen_configs(&entry("later", "G", "stale", ""), Some(30_000))
        .await;
    assert_eq!(r.body, "later%02G%01\n");
    // The tenant is echoed as sent, and `null` md5 means none.
    assert_eq!(
        api.publish_config("t", "G", Some("ns-9"), "x").await.body,
        "true"
    );
    let r = api
        .listen_configs(&entry("t", "G", "null", "ns-9"), Some(30_000))
        .await;
    assert_eq!(r.body, "t%02G%02ns-9%01\n");
    // A delete fires a listener holding the current md5.
    let current = entry("later", "G", &md5_hex("v1"), "");
    let parked = {
        let api = api.clone();
        tokio::spawn(async move { api.listen_configs(&current, Some(30_000)).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = api
        .call(
            "DELETE",
            "/nacos/v1/cs/configs",
            &[("dataId", "later"), ("group", "G")],
        )
        .await;
    assert_eq!(r.body, "true");
    assert_eq!(parked.await.unwrap().body, "later%02G%01\n");
    // Nothing changes: the hold ends with an empty body after max(10 s, timeout - 0.5 s).
    let held = entry("t", "G", &md5_hex("x"), "ns-9");
    let t = Instant::now();
    let r = api.listen_configs(&held, Some(10_000)).await;
    let took = t.elapsed();
    assert_eq!((r.status, r.body.as_str()), (200, ""));
    assert!(
        (Duration::from_millis(9_500)..Duration::from_secs(12)).contains(&took),
        "{took:?}"
    );
}

#[tokio::test]
async fn search_history_and_previous_versions() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, api) = standalone(dir.path()).await;
    for (d, g, c) in [
        ("app-a.yaml", "G", "a1"),
        ("app-b.yaml", "G", "b1"),
        ("db.properties", "G", "d1"),
        ("app-a.yaml", "G", "a2"),
        ("app-a.yaml", "OTHER", "o1"),
    ] {
        assert_eq!(api.publish_config(d, g, None, c).await.body, "true");
    }
    // The Python client's get_configs: accurate, empty dataId and group: everything.
    let all = api
        .call(
            "GET",
            "/nacos/v1/cs/configs",
            &[
                ("dataId", ""),
                ("group", ""),
                ("search", "accurate"),
                ("pageNo", "1"),
                ("pageSize", "1000"),
            ],
        )
        .await
        .json();
    assert_eq!(all["totalCount"], 4, "{all}");
    let blur = api
        .call(
            "GET",
            "/nacos/v1/cs/configs",
            &[
                ("dataId", "app-*"),
                ("group", "G"),
                ("search", "blur"),
                ("pageNo", "1"),
                ("pageSize", "1"),
            ],
        )
        .await
        .json();
    assert_eq!(
        (blur["totalCount"].clone(), blur["pagesAvailable"].clone()),
        (2.into(), 2.into())
    );
    assert_eq!(blur["pageItems"][0]["dataId"], "app-a.yaml");
    assert_eq!(blur["pageItems"][0]["content"], "a2");
    // History, newest first, then one entry and the one before it.
    let h = api
        .call(
            "GET",
            "/nacos/v1/cs/history",
            &[
                ("search", "accurate"),
                ("dataId", "app-a.yaml"),
                ("group", "G"),
                ("pageNo", "1"),
                ("pageSize", "10"),
            ],
        )
        .await
        .json();
    assert_eq!(h["totalCount"], 2, "{h}");
    assert_eq!(h["pageItems"][0]["content"], "a2");
    assert_eq!(h["pageItems"][0]["opType"], "U");
    assert_eq!(h["pageItems"][1]["opType"], "I");
    let nid = h["pageItems"][0]["id"].to_string();
    let one = api
        .call("GET", "/nacos/v1/cs/history", &[("nid", &nid)])
        .await
        .json();
    assert_eq!(one["content"], "a2");
    let prev = api
        .call("GET", "/nacos/v1/cs/history/previous", &[("id", &nid)])
        .await
        .json();
    assert_eq!(prev["content"], "a1");
    let none = api
        .call("GET", "/nacos/v1/cs/history", &[("nid", "999999")])
        .await;
    assert_eq!(none.status, 404);
    // A batch delete by ids answers Nacos's RestResult.
    let ids: Vec<String> = all["pageItems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["group"] == "OTHER")
        .map(|i| i["id"].to_string())
        .collect();
    let r = api
        .call(
            "DELETE",
            "/nacos/v1/cs/configs",
            &[("delType", "ids"), ("ids", &ids.join(","))],
        )
        .await
        .json();
    assert_eq!(r["data"], true, "{r}");
    assert_eq!(api.config("app-a.yaml", "OTHER", None).await.status, 404);
    assert_eq!(api.config("app-a.yaml", "G", None).await.body, "a2");
}

#[tokio::test]
async fn acknowledged_publishes_survive_kill_9_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (mut node, api) = standalone(dir.path()).await;
    for i in 0..20 {
        let r = api
            .publish_config(&format!("d{i}"), "G", None, &format!("content {i}\n"))
            .await;
        assert_eq!(r.body, "true");
    }
    assert_eq!(
        api.publish_config("d0", "G", None, "latest").await.body,
        "true"
    );
    node.kill9().unwrap();
    node.restart().unwrap();
    node.wait_ready(READY).unwrap();
    let api = Api::new(node.addr());
    assert_eq!(api.config("d0", "G", None).await.body, "latest");
    for i in 1..20 {
        assert_eq!(
            api.config(&format!("d{i}"), "G", None).await.body,
            format!("content {i}\n")
        );
    }
    // Its md5 index is back too: a listener holding the latest md5 sees no change.
    let r = api
        .listen_configs(&entry("d0", "G", &md5_hex("latest"), ""), None)
        .await;
    assert_eq!(r.body, "");
}

async fn cluster_leader(c: &TestCluster) -> Option<usize> {
    for i in 0..c.len() {
        let v = Api::new(c.node(i).addr())
            .call("GET", "/nacre/v1/cluster", &[])
            .await;
        if v.status != 200 {
            continue;
        }
        if let Some(l) = v.json()["leader"].as_str() {
            return (0..c.len()).find(|&j| c.advertised(j) == l);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_reads_its_writes_everywhere_wakes_listeners_on_other_nodes_and_keeps_them_past_the_leader(
) {
    let root = tempfile::tempdir().unwrap();
    let mut c = TestCluster::start(bin(), root.path(), ClusterOptions::new(3).fast()).unwrap();
    c.wait_ready(READY).unwrap();
    let apis: Vec<Api> = (0..3).map(|i| Api::new(c.node(i).addr())).collect();
    // Read-your-writes: a publish through any node is read back from every node at once.
    for (i, a) in apis.iter().enumerate() {
        let d = format!("ryw-{i}");
        assert_eq!(
            a.publish_config(&d, "G", None, &format!("v{i}")).await.body,
            "true"
        );
        for b in &apis {
            assert_eq!(b.config(&d, "G", None).await.body, format!("v{i}"));
        }
    }
    // A listener parked on node 2 is woken by a publish on node 0.
    let parked = {
        let a = apis[2].clone();
        tokio::spawn(async move {
            a.listen_configs(&entry("ryw-0", "G", &md5_hex("v0"), ""), Some(30_000))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = Instant::now();
    assert_eq!(
        apis[0]
            .publish_config("ryw-0", "G", None, "v0-new")
            .await
            .body,
        "true"
    );
    let r = parked.await.unwrap();
    assert_eq!(r.body, "ryw-0%02G%01\n");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // Kill the Raft leader: every acknowledged publish is still there on the others.
    let leader = cluster_leader(&c).await.expect("a leader");
    c.kill9(leader).unwrap();
    let survivors: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    for &i in &survivors {
        for j in 0..3 {
            let want = if j == 0 {
                "v0-new".to_string()
            } else {
                format!("v{j}")
            };
            assert_eq!(
                apis[i].config(&format!("ryw-{j}"), "G", None).await.body,
                want
            );
        }
    }
    // And new publishes are accepted once a new leader is elected.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = apis[survivors[0]]
            .publish_config("after", "G", None, "new leader")
            .await;
        if r.body == "true" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no publish after the kill: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        apis[survivors[1]].config("after", "G", None).await.body,
        "new leader"
    );
}

/// Listeners parked on the nodes of `c` (each node's `nacre_config{field="parked_listeners"}`).
async fn parked_on_nodes(c: &TestCluster) -> f64 {
    let mut n = 0.0;
    for i in 0..c.len() {
        n += Api::new(c.node(i).addr())
            .metric("nacre_config{field=\"parked_listeners\"}")
            .await;
    }
    n
}

/// Waits until `f` returns `want` (polled every 100 ms), or panics after `within`.
async fn eventually<F, Fut>(what: &str, within: Duration, want: f64, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = f64>,
{
    let deadline = Instant::now() + within;
    loop {
        let got = f().await;
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {got}, expected {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A listener registered through the gateway is held by the gateway itself (no node holds
/// it) and fires after a publish made directly on a node; the hold ends with an empty answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_through_the_gateway_is_held_at_the_edge_and_fires_on_a_publish_made_on_a_node()
{
    let root = tempfile::tempdir().unwrap();
    let (c, gw) = gateway_cluster(root.path());
    let through = Api::new(gw.addr());
    assert_eq!(
        through.publish_config("gw", "G", None, "v1").await.body,
        "true"
    );
    assert_eq!(through.config("gw", "G", None).await.body, "v1");
    let parked = {
        let a = through.clone();
        tokio::spawn(async move {
            a.listen_configs(&entry("gw", "G", &md5_hex("v1"), ""), Some(30_000))
                .await
        })
    };
    eventually("listeners parked at the gateway", READY, 1.0, || {
        through.metric("nacre_gateway_config_listeners")
    })
    .await;
    assert_eq!(parked_on_nodes(&c).await, 0.0, "nodes hold no listener");
    let direct = Api::new(c.node(1).addr());
    assert_eq!(
        direct.publish_config("gw", "G", None, "v2").await.body,
        "true"
    );
    let r = parked.await.unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "gw%02G%01\n"));
    // A hold longer than the gateway's read timeout for other answers (10 s) ends with an
    // empty answer, not an error.
    let t = Instant::now();
    let r = through
        .listen_configs(&entry("gw", "G", &md5_hex("v2"), ""), Some(11_000))
        .await;
    assert_eq!((r.status, r.body.as_str()), (200, ""), "{r:?}");
    assert!(
        t.elapsed() >= Duration::from_millis(10_000),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(parked_on_nodes(&c).await, 0.0);
    assert!(
        through
            .metric("nacre_gateway_config_polls_total{result=\"node\"}")
            .await
            == 0.0,
        "every poll was answered at the edge"
    );
}

/// A listener request as the legacy clients send it (form body), answered at once.
fn listener_request(listening: &str, extra_headers: &str, version: &str) -> String {
    let body = format!(
        "Listening-Configs={}",
        form_urlencoded::byte_serialize(listening.as_bytes()).collect::<String>()
    );
    format!(
        "POST /nacos/v1/cs/configs/listener {version}\r\nHost: gw\r\n\
         Content-Type: application/x-www-form-urlencoded\r\n\
         Long-Pulling-Timeout: 30000\r\nLong-Pulling-Timeout-No-Hangup: true\r\n\
         {extra_headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Rules E1–E4 of the gateway's keep-alive loop (`gateway::edge`), on the wire: a listener
/// served at the edge and a pipelined request behind it on one connection; listener requests
/// the edge does not take (a chunked body) still answered through the proxy; `Connection:
/// close` and HTTP/1.0 close the connection after the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_serves_listeners_and_pipelined_requests_on_one_keep_alive_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
    let root = tempfile::tempdir().unwrap();
    let (_c, gw) = gateway_cluster(root.path());
    let through = Api::new(gw.addr());
    wait_feeds_followed(&through).await;
    assert_eq!(
        through.publish_config("ka", "G", None, "v1").await.body,
        "true"
    );
    let stale = entry("ka", "G", "", "");
    let open =
        || async { BufReader::new(tokio::net::TcpStream::connect(gw.addr()).await.unwrap()) };

    // A listener and, in the same write, the next request: both answered, in order.
    let mut conn = open().await;
    let both = format!(
        "{}GET /nacos/serverlist HTTP/1.1\r\nHost: gw\r\n\r\n",
        listener_request(&stale, "", "HTTP/1.1")
    );
    conn.get_mut().write_all(both.as_bytes()).await.unwrap();
    let (status, headers, body) = nacre_testkit::http::read_response(&mut conn).await;
    assert_eq!((status, body.as_str()), (200, "ka%02G%01\n"), "{headers:?}");
    assert!(
        headers.contains(&("cache-control".into(), "no-cache,no-store".into())),
        "{headers:?}"
    );
    let (status, _, body) = nacre_testkit::http::read_response(&mut conn).await;
    assert_eq!(status, 200);
    assert!(body.contains(':'), "a server list: {body:?}");
    // The connection stays usable: a listener after a proxied request.
    conn.get_mut()
        .write_all(listener_request(&stale, "", "HTTP/1.1").as_bytes())
        .await
        .unwrap();
    assert_eq!(
        nacre_testkit::http::read_response(&mut conn).await.2,
        "ka%02G%01\n"
    );

    let proxied = "nacre_gateway_config_listeners_proxied_total";
    assert_eq!(through.metric(proxied).await, 0.0, "the edge served them");

    // A chunked body is not the edge's (rule E2): the proxy answers it the same way.
    let body = format!(
        "Listening-Configs={}",
        form_urlencoded::byte_serialize(stale.as_bytes()).collect::<String>()
    );
    let chunked = format!(
        "POST /nacos/v1/cs/configs/listener HTTP/1.1\r\nHost: gw\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nLong-Pulling-Timeout: 30000\r\n\
         Long-Pulling-Timeout-No-Hangup: true\r\nTransfer-Encoding: chunked\r\n\r\n\
         {:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    conn.get_mut().write_all(chunked.as_bytes()).await.unwrap();
    assert_eq!(
        nacre_testkit::http::read_response(&mut conn).await.2,
        "ka%02G%01\n"
    );
    assert_eq!(through.metric(proxied).await, 1.0, "the proxy served it");

    // Rule E4: `Connection: close` and HTTP/1.0 end the connection after the answer.
    for (extra, version) in [("Connection: close\r\n", "HTTP/1.1"), ("", "HTTP/1.0")] {
        let mut conn = open().await;
        conn.get_mut()
            .write_all(listener_request(&stale, extra, version).as_bytes())
            .await
            .unwrap();
        let (status, headers, body) = nacre_testkit::http::read_response(&mut conn).await;
        assert_eq!((status, body.as_str()), (200, "ka%02G%01\n"), "{version}");
        assert!(
            headers.contains(&("connection".into(), "close".into())),
            "{headers:?}"
        );
        let mut rest = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut rest))
            .await
            .expect("the gateway closes the connection")
            .unwrap();
        assert_eq!(n, 0, "{version}: nothing after the answer");
    }
    // HTTP/1.0 asking to keep the connection is told so, and can send another request.
    let mut conn = open().await;
    let ask = listener_request(&stale, "Connection: keep-alive\r\n", "HTTP/1.0");
    conn.get_mut().write_all(ask.as_bytes()).await.unwrap();
    let (_, headers, body) = nacre_testkit::http::read_response(&mut conn).await;
    assert_eq!(body, "ka%02G%01\n");
    assert!(
        headers.contains(&("connection".into(), "keep-alive".into())),
        "{headers:?}"
    );
    conn.get_mut().write_all(ask.as_bytes()).await.unwrap();
    assert_eq!(
        nacre_testkit::http::read_response(&mut conn).await.2,
        "ka%02G%01\n"
    );

    // A malformed poll gets the nodes' 400 from the edge too.
    let mut conn = open().await;
    conn.get_mut()
        .write_all(listener_request("no-separators", "", "HTTP/1.1").as_bytes())
        .await
        .unwrap();
    assert_eq!(nacre_testkit::http::read_response(&mut conn).await.0, 400);
}

/// Waits until the gateway follows every node's change feed.
async fn wait_feeds_followed(gw: &Api) {
    let deadline = Instant::now() + READY;
    while !gw
        .call("GET", "/nacre/gateway/ready", &[])
        .await
        .body
        .contains("\"feedsFollowed\":true")
    {
        assert!(Instant::now() < deadline, "feeds not followed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Rule L4: a gateway that loses a node's feed passes held and new listeners to a node whose
/// feed it still follows, relays that node's answers, and holds listeners itself again once
/// every feed is back. No poll is answered empty before its hold ends. The paused node stays
/// in rotation throughout (its probes hang), so only the broken feed tells the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_loses_a_feed_passes_listeners_to_a_node_and_takes_them_back() {
    let root = tempfile::tempdir().unwrap();
    let mut c = TestCluster::start(bin(), root.path(), ClusterOptions::new(3).fast()).unwrap();
    let upstreams = (0..c.len())
        .map(|i| c.node(i).addr().to_string())
        .collect::<Vec<_>>()
        .join(",");
    let mut gw = GatewayProcess::start_with_env(
        bin(),
        &root.path().join("gw"),
        nacre_testkit::free_loopback_addr().unwrap(),
        c.secret(),
        &["--upstreams".to_string(), upstreams],
        &[
            ("NACRE_GATEWAY_PROBE_TIMEOUT_MS", "120000"),
            ("NACRE_GATEWAY_FEED_WAIT_MS", "500"),
        ],
    )
    .unwrap();
    gw.wait_ready(3, READY).unwrap();
    let through = Api::new(gw.addr());
    wait_feeds_followed(&through).await;
    let leader = cluster_leader(&c).await.expect("a leader");
    let paused = (0..3).find(|&i| i != leader).unwrap();
    let other = (0..3).find(|&i| i != leader && i != paused).unwrap();
    let apis: Vec<Api> = (0..3).map(|i| Api::new(c.node(i).addr())).collect();
    let on = |i: usize| apis[i].clone();
    assert_eq!(
        on(leader).publish_config("f", "G", None, "v1").await.body,
        "true"
    );

    let listen = |md5: String, hold: u64| {
        let a = through.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            let r = a
                .listen_configs(&entry("f", "G", &md5, ""), Some(hold))
                .await;
            (r, t.elapsed())
        })
    };
    let first = listen(md5_hex("v1"), 30_000);
    eventually("held at the gateway", READY, 1.0, || {
        through.metric("nacre_gateway_config_listeners")
    })
    .await;
    assert_eq!(parked_on_nodes(&c).await, 0.0);

    c.pause(paused).unwrap();
    // The feed read times out (500 ms wait + 3 s): the parked poll goes to a node.
    eventually("passed to a node", Duration::from_secs(15), 1.0, || async {
        let mut n = 0.0;
        for i in [leader, other] {
            n += on(i)
                .metric("nacre_config{field=\"parked_listeners\"}")
                .await;
        }
        n
    })
    .await;
    assert_eq!(
        on(other).publish_config("f", "G", None, "v2").await.body,
        "true"
    );
    let (r, took) = first.await.unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "f%02G%01\n"), "{r:?}");
    assert!(
        took < Duration::from_secs(25),
        "answered on the change: {took:?}"
    );

    // A new poll while the feed is still broken is passed too, and fires.
    let second = listen(md5_hex("v2"), 20_000);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        on(leader).publish_config("f", "G", None, "v3").await.body,
        "true"
    );
    let (r, took) = second.await.unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "f%02G%01\n"), "{r:?}");
    assert!(took < Duration::from_secs(15), "{took:?}");
    assert!(
        through
            .metric("nacre_gateway_config_polls_total{result=\"node\"}")
            .await
            >= 2.0
    );

    // Every feed back: held at the edge again, woken by a publish on the node that was paused.
    c.resume(paused).unwrap();
    wait_feeds_followed(&through).await;
    let third = listen(md5_hex("v3"), 30_000);
    eventually("held at the gateway again", READY, 1.0, || {
        through.metric("nacre_gateway_config_listeners")
    })
    .await;
    assert_eq!(parked_on_nodes(&c).await, 0.0);
    assert_eq!(
        on(paused).publish_config("f", "G", None, "v4").await.body,
        "true"
    );
    let (r, took) = third.await.unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "f%02G%01\n"), "{r:?}");
    assert!(took < Duration::from_secs(25), "{took:?}");
}

/// Rule L7: the gateway answers repeated config reads from its cache, serves a change made
/// directly on a node as soon as that node's feed reports it (never the old content after),
/// gives a client that published through it its own write at once, and caches "not found" too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_reads_through_the_gateway_are_cached_until_the_config_changes() {
    let root = tempfile::tempdir().unwrap();
    let (c, gw) = gateway_cluster(root.path());
    let through = Api::new(gw.addr());
    wait_feeds_followed(&through).await;
    let hits = || through.metric("nacre_gateway_config_reads_total{result=\"hit\"}");
    assert_eq!(
        through.publish_config("rd", "G", None, "v1").await.body,
        "true"
    );
    // The first read after the publish may precede the feed's news of it: a miss. Once the
    // table knows the config, reads are hits.
    eventually("reads answered from the cache", READY, 1.0, || async {
        let r = through.config("rd", "G", None).await;
        assert_eq!((r.status, r.body.as_str()), (200, "v1"));
        f64::from(hits().await >= 3.0)
    })
    .await;

    // A publish made on a node: the gateway answers the new content once the feed reports
    // it, and never the old one afterwards.
    let direct = Api::new(c.node(2).addr());
    assert_eq!(
        direct.publish_config("rd", "G", None, "v2").await.body,
        "true"
    );
    eventually(
        "the change made on a node",
        Duration::from_secs(5),
        1.0,
        || async { f64::from(through.config("rd", "G", None).await.body == "v2") },
    )
    .await;
    for _ in 0..20 {
        let r = through.config("rd", "G", None).await;
        assert_eq!(r.body, "v2");
        // A cached answer carries the node's headers.
        assert_eq!(
            r.header("content-md5"),
            Some(md5_hex("v2").as_str()),
            "{r:?}"
        );
        assert_eq!(r.header("config-type"), Some("text"));
        assert!(r.header("last-modified").is_some());
        assert!(
            !r.headers.iter().any(|(n, _)| n.starts_with("x-nacre")),
            "{r:?}"
        );
    }

    // Read-your-writes through the gateway, every time. (Here the feed's news of each publish
    // usually beats the publish's own answer back to the client; the rule for when it does
    // not, a write through the gateway drops the cached reads, is `reads::tests::l7_*`.)
    for i in 3..13 {
        let v = format!("v{i}");
        assert_eq!(
            through.publish_config("rd", "G", None, &v).await.body,
            "true"
        );
        assert_eq!(
            through.config("rd", "G", None).await.body,
            v,
            "read after write"
        );
    }

    // A delete on a node: "not found" is served, then cached too.
    let r = direct
        .call(
            "DELETE",
            "/nacos/v1/cs/configs",
            &[("dataId", "rd"), ("group", "G")],
        )
        .await;
    assert_eq!(r.body, "true");
    eventually(
        "the delete made on a node",
        Duration::from_secs(5),
        1.0,
        || async { f64::from(through.config("rd", "G", None).await.status == 404) },
    )
    .await;
    let before = hits().await;
    for _ in 0..5 {
        let r = through.config("rd", "G", None).await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (404, "config data not exist\n")
        );
    }
    assert!(hits().await >= before + 4.0, "cached 404s");
    assert!(
        !through
            .config("rd", "G", None)
            .await
            .headers
            .iter()
            .any(|(n, _)| n.starts_with("x-nacre")),
        "nacre's own headers never reach clients"
    );
}

/// Rules C7 and L8: a beta is read (and listened to) by the addresses in its list only, a tag
/// by `tag` or `Vipserver-Tag`; through the gateway, which sends such reads and polls to a
/// node with the client's address, and never serves a beta'd config from its cache. Two
/// clients on one machine: 127.0.0.1 (in the beta) and 127.0.0.2 (not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beta_and_tag_variants_through_the_gateway_and_on_a_node() {
    let root = tempfile::tempdir().unwrap();
    let (c, gw) = gateway_cluster(root.path());
    let inside = Api::new(gw.addr());
    let outside = Api::new(gw.addr()).with_local_address("127.0.0.2".parse().unwrap());
    wait_feeds_followed(&inside).await;
    const PATH: &str = "/nacos/v1/cs/configs";
    let key = [("dataId", "gray"), ("group", "G")];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut q = key.to_vec();
        q.extend_from_slice(extra);
        q
    };
    let publish = |extra: &[(&'static str, &'static str)],
                   headers: &[(&'static str, &'static str)]| {
        let (q, h, api) = (with(extra), headers.to_vec(), inside.clone());
        async move { api.call_with_headers("POST", PATH, &q, &h).await }
    };
    assert_eq!(publish(&[("content", "main")], &[]).await.body, "true");
    assert_eq!(
        publish(&[("content", "blue"), ("tag", "blue")], &[])
            .await
            .body,
        "true"
    );
    assert_eq!(
        publish(
            &[("content", "beta")],
            &[("betaIps", "127.0.0.1, 10.0.0.9")]
        )
        .await
        .body,
        "true"
    );
    for bad in [("betaIps", "not-an-ip"), ("betaIps", ",")] {
        let r = publish(&[("content", "x")], &[bad]).await;
        assert_eq!(r.status, 400, "{bad:?}: {r:?}");
    }
    let r = publish(&[("content", "x"), ("tag", "waytoolongforatag")], &[]).await;
    assert_eq!(r.status, 400, "{r:?}");

    let read = |api: &Api,
                extra: &[(&'static str, &'static str)],
                headers: &[(&'static str, &'static str)]| {
        let (q, h, api) = (with(extra), headers.to_vec(), api.clone());
        async move { api.call_with_headers("GET", PATH, &q, &h).await }
    };
    let hits = || inside.metric("nacre_gateway_config_reads_total{result=\"hit\"}");
    let hits_before = hits().await;
    for _ in 0..3 {
        let r = read(&outside, &[], &[]).await;
        assert_eq!(
            (r.status, r.body.as_str(), r.header("isbeta")),
            (200, "main", None)
        );
        let r = read(&inside, &[], &[]).await;
        assert_eq!(
            (r.body.as_str(), r.header("isbeta")),
            ("beta", Some("true")),
            "{r:?}"
        );
    }
    assert_eq!(
        hits().await,
        hits_before,
        "a beta'd config is never served from the cache"
    );
    assert_eq!(read(&outside, &[("tag", "blue")], &[]).await.body, "blue");
    assert_eq!(read(&outside, &[("tag", "red")], &[]).await.status, 404);
    let r = read(&outside, &[], &[("Vipserver-Tag", "blue")]).await;
    assert_eq!(
        (r.body.as_str(), r.header("vipserver-tag")),
        ("blue", Some("blue"))
    );
    assert_eq!(
        read(&outside, &[], &[("Vipserver-Tag", "red")]).await.body,
        "main"
    );
    let beta = inside
        .call("GET", PATH, &with(&[("beta", "true")]))
        .await
        .json();
    assert_eq!(beta["data"]["content"], "beta", "{beta}");
    assert_eq!(beta["data"]["betaIps"], "127.0.0.1,10.0.0.9");

    // Listeners compare what their client reads; a beta'd key's polls are a node's.
    let entry_of = |content: &str| entry("gray", "G", &md5_hex(content), "");
    let r = inside.listen_configs(&entry_of("main"), Some(30_000)).await;
    assert_eq!(
        r.body, "gray%02G%01\n",
        "the beta client holds the main md5: changed"
    );
    let r = inside.listen_configs(&entry_of("beta"), None).await;
    assert_eq!(r.body, "", "short poll, up to date");
    let parked_outside = {
        let o = outside.clone();
        let e = entry_of("main");
        tokio::spawn(async move { o.listen_configs(&e, Some(30_000)).await })
    };
    let parked_inside = {
        let i = inside.clone();
        let e = entry_of("beta");
        tokio::spawn(async move { i.listen_configs(&e, Some(30_000)).await })
    };
    eventually("both held by nodes", READY, 2.0, || parked_on_nodes(&c)).await;
    // Stopping the beta: the beta client now reads the main content, so its listener fires;
    // the other client's does not.
    let r = inside
        .call("DELETE", PATH, &with(&[("beta", "true")]))
        .await;
    assert_eq!(r.json()["message"], "stop beta ok", "{r:?}");
    let r = parked_inside.await.unwrap();
    assert_eq!(r.body, "gray%02G%01\n");
    assert_eq!(read(&inside, &[], &[]).await.body, "main");
    assert!(
        !parked_outside.is_finished(),
        "nothing changed for the other client"
    );
    // A publish of the config fires the other one, through the node that held it.
    assert_eq!(publish(&[("content", "main2")], &[]).await.body, "true");
    assert_eq!(parked_outside.await.unwrap().body, "gray%02G%01\n");

    // Without a beta, listeners are the gateway's again; deleting the tag leaves the config.
    let held = {
        let o = outside.clone();
        let e = entry_of("main2");
        tokio::spawn(async move { o.listen_configs(&e, Some(30_000)).await })
    };
    eventually("held at the gateway", READY, 1.0, || {
        inside.metric("nacre_gateway_config_listeners")
    })
    .await;
    assert_eq!(parked_on_nodes(&c).await, 0.0);
    let r = inside.call("DELETE", PATH, &with(&[("tag", "blue")])).await;
    assert_eq!(r.body, "true");
    assert_eq!(read(&outside, &[("tag", "blue")], &[]).await.status, 404);
    assert_eq!(read(&outside, &[], &[]).await.body, "main2");
    held.abort();
}

/// Rule C8: a namespace's configs exported as the Nacos console's zip import into another
/// namespace (through the gateway), with `ABORT`, `SKIP` and `OVERWRITE` for configs that
/// exist; an import wakes listeners like any publish; bad uploads are refused with Nacos's
/// result codes and import nothing; a clone copies configs by id under new names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configs_export_and_import_through_the_gateway() {
    let root = tempfile::tempdir().unwrap();
    let (_c, gw) = gateway_cluster(root.path());
    let api = Api::new(gw.addr());
    wait_feeds_followed(&api).await;
    for (id, content, app) in [
        ("a.yaml", "a: 1", "shop"),
        ("b.properties", "b=2", ""),
        ("c", "多字节 content\nline 2", ""),
    ] {
        let mut f = vec![("dataId", id), ("group", "G"), ("content", content)];
        if !app.is_empty() {
            f.push(("appName", app));
        }
        assert_eq!(
            api.form("POST", "/nacos/v1/cs/configs", &f).await.body,
            "true"
        );
    }
    let (status, headers, zip) = api
        .get_bytes("/nacos/v1/cs/configs?export=true&tenant=&group=G")
        .await;
    assert_eq!(status, 200);
    assert!(zip.starts_with(b"PK"), "a zip");
    assert!(headers.iter().any(|(n, v)| n == "content-disposition"
        && v.starts_with("attachment;filename=nacos_config_export_")));

    let r = api
        .form(
            "POST",
            "/nacos/v1/console/namespaces",
            &[
                ("customNamespaceId", "ns-imp"),
                ("namespaceName", "imported"),
                ("namespaceDesc", ""),
            ],
        )
        .await;
    assert_eq!(r.body, "true", "{r:?}");
    const IMPORT: &str = "/nacos/v1/cs/configs?import=true&namespace=ns-imp";
    let r = api.upload(IMPORT, &[], Some(("export.zip", &zip))).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["data"]["succCount"], 3, "{r:?}");
    let got = api.config("a.yaml", "G", Some("ns-imp")).await;
    assert_eq!(
        (got.body.as_str(), got.header("config-type")),
        ("a: 1", Some("yaml"))
    );
    assert_eq!(
        api.config("c", "G", Some("ns-imp")).await.body,
        "多字节 content\nline 2"
    );
    let found = api
        .call(
            "GET",
            "/nacos/v1/cs/configs",
            &[
                ("search", "accurate"),
                ("dataId", "a.yaml"),
                ("group", "G"),
                ("tenant", "ns-imp"),
                ("pageNo", "1"),
                ("pageSize", "10"),
            ],
        )
        .await
        .json();
    assert_eq!(found["pageItems"][0]["appName"], "shop", "{found}");

    // Again: everything exists.
    let r = api
        .upload(IMPORT, &[], Some(("export.zip", &zip)))
        .await
        .json();
    assert_eq!(
        (
            r["data"]["succCount"].clone(),
            r["data"]["failData"].as_array().map(Vec::len)
        ),
        (0.into(), Some(3)),
        "{r}"
    );
    let r = api
        .upload(IMPORT, &[("policy", "SKIP")], Some(("export.zip", &zip)))
        .await
        .json();
    assert_eq!(r["data"]["skipCount"], 3, "{r}");
    // A listener on an imported config fires when an overwrite changes it.
    assert_eq!(
        api.publish_config("a.yaml", "G", None, "a: 2").await.body,
        "true"
    );
    let (_, _, newer) = api
        .get_bytes("/nacos/v1/cs/configs?export=true&tenant=&group=G&dataId=a.*")
        .await;
    let parked = {
        let a = api.clone();
        tokio::spawn(async move {
            a.listen_configs(
                &entry("a.yaml", "G", &md5_hex("a: 1"), "ns-imp"),
                Some(30_000),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = api
        .upload(
            IMPORT,
            &[("policy", "OVERWRITE")],
            Some(("newer.zip", &newer)),
        )
        .await
        .json();
    assert_eq!(r["data"]["succCount"], 1, "only a.yaml was exported: {r}");
    assert_eq!(parked.await.unwrap().body, "a.yaml%02G%02ns-imp%01\n");
    assert_eq!(api.config("a.yaml", "G", Some("ns-imp")).await.body, "a: 2");

    // Refused: a namespace that does not exist, a file that is not a zip, no file, a bad policy.
    for (path, fields, file, code) in [
        (
            "/nacos/v1/cs/configs?import=true&namespace=nope",
            vec![],
            Some(zip.as_slice()),
            Some(100_001),
        ),
        (IMPORT, vec![], Some(b"not a zip".as_slice()), Some(100_004)),
        (IMPORT, vec![], None, Some(100_005)),
        (
            IMPORT,
            vec![("policy", "MERGE")],
            Some(zip.as_slice()),
            None,
        ),
    ] {
        let r = api.upload(path, &fields, file.map(|f| ("f.zip", f))).await;
        assert_eq!(r.status, 400, "{r:?}");
        if let Some(code) = code {
            assert_eq!(r.json()["code"], code, "{r:?}");
        }
    }
    let r = api
        .raw(
            "POST",
            IMPORT,
            "application/x-www-form-urlencoded",
            b"file=x".to_vec(),
        )
        .await;
    assert_eq!(r.status, 400, "not multipart: {r:?}");
    assert_eq!(
        api.config("b.properties", "G", Some("nope")).await.status,
        404
    );
}

/// A gateway killed mid-poll and started again loses no notification: the held poll breaks,
/// the publish lands meanwhile, and the client's next poll (with the md5 it still holds) is
/// answered at once: the new gateway has heard of no config, so it fetches the md5 (rule L3)
/// rather than guess.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_restarted_mid_poll_loses_no_notification() {
    let root = tempfile::tempdir().unwrap();
    let (c, mut gw) = gateway_cluster(root.path());
    let through = Api::new(gw.addr());
    assert_eq!(
        through.publish_config("rs", "G", None, "v1").await.body,
        "true"
    );
    let held = entry("rs", "G", &md5_hex("v1"), "");
    let parked = {
        let a = through.clone();
        let held = held.clone();
        tokio::spawn(async move { a.listen_configs(&held, Some(30_000)).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    gw.kill9().unwrap();
    let broken = parked.await.unwrap();
    assert_ne!(
        broken.status, 200,
        "the held poll cannot answer: {broken:?}"
    );
    let direct = Api::new(c.node(0).addr());
    assert_eq!(
        direct.publish_config("rs", "G", None, "v2").await.body,
        "true"
    );
    gw.restart().unwrap();
    gw.wait_ready(3, READY).unwrap();
    wait_feeds_followed(&through).await;
    let t = Instant::now();
    let r = through.listen_configs(&held, Some(30_000)).await;
    assert_eq!((r.status, r.body.as_str()), (200, "rs%02G%01\n"), "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // The restarted gateway had heard of no config: it fetched the md5 (rule L3) and
    // answered at the edge, not by passing the poll on.
    assert!(through.metric("nacre_gateway_config_fetches_total").await >= 1.0);
    assert_eq!(
        through
            .metric("nacre_gateway_config_polls_total{result=\"changed\"}")
            .await,
        1.0
    );
    assert_eq!(through.config("rs", "G", None).await.body, "v2");
}

/// Nacos's listener query (`GET /configs/listener`): a poll parked at the gateway and one
/// parked on a node directly are both listed through the gateway, each under its client's
/// address with the md5 it sent; the node lists only the one it holds; a poll answered leaves
/// the list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_query_lists_polls_parked_at_the_gateway_and_on_nodes() {
    let root = tempfile::tempdir().unwrap();
    let (c, gw) = gateway_cluster(root.path());
    let through = Api::new(gw.addr());
    assert_eq!(
        through.publish_config("lq", "G", None, "v1").await.body,
        "true"
    );
    let current = md5_hex("v1");
    let via_gw = Api::new(gw.addr()).with_local_address("127.0.0.2".parse().unwrap());
    let on_node = Api::new(c.node(1).addr()).with_local_address("127.0.0.3".parse().unwrap());
    let parked = [
        tokio::spawn({
            let e = entry("lq", "G", &current, "");
            async move { via_gw.listen_configs(&e, Some(30_000)).await }
        }),
        tokio::spawn({
            let e = entry("lq", "G", &current, "");
            async move { on_node.listen_configs(&e, Some(30_000)).await }
        }),
    ];
    let query = [("dataId", "lq"), ("group", "G")];
    let listed = |api: Api| async move {
        let r = api
            .call("GET", "/nacos/v1/cs/configs/listener", &query)
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        assert_eq!(v["collectStatus"], 200, "{v}");
        v["lisentersGroupkeyStatus"].clone()
    };
    let mut all = serde_json::Value::Null;
    for _ in 0..100 {
        all = listed(through.clone()).await;
        if all.as_object().is_some_and(|m| m.len() == 2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(all["127.0.0.2"], current.as_str(), "{all}");
    assert_eq!(all["127.0.0.3"], current.as_str(), "{all}");
    let node_only = listed(Api::new(c.node(1).addr())).await;
    assert_eq!(
        node_only.as_object().map(|m| m.len()),
        Some(1),
        "{node_only}"
    );
    assert!(node_only.get("127.0.0.3").is_some(), "{node_only}");
    // A bad key is the node's 400, relayed.
    let bad = through
        .call("GET", "/nacos/v1/cs/configs/listener", &[("dataId", "lq")])
        .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    // A publish answers both polls; they leave the list.
    assert_eq!(
        through.publish_config("lq", "G", None, "v2").await.body,
        "true"
    );
    for p in parked {
        assert_eq!(p.await.unwrap().body, "lq%02G%01\n");
    }
    let after = listed(through.clone()).await;
    assert_eq!(after.as_object().map(|m| m.len()), Some(0), "{after}");
}
