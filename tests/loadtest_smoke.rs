//! `nacre loadtest` smoke runs: every scenario, for a couple of seconds at low concurrency,
//! against a real nacre node, must produce its JSON report with zero errors (and, where the
//! scenario subscribes, pushes that were received, acked and matched to the changes made).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use nacre_testkit::NodeProcess;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_nacre");

fn start_node(dir: &Path) -> NodeProcess {
    let mut node = NodeProcess::start(Path::new(BIN), &dir.join("node")).expect("start nacre");
    node.wait_ready(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("nacre not ready: {e:#}"));
    node
}

/// Runs `nacre loadtest` with `args` (plus `--json`) and returns the parsed report.
fn loadtest(node: &NodeProcess, dir: &Path, args: &[&str]) -> Value {
    let json = dir.join("report.json");
    let out = Command::new(BIN)
        .arg("loadtest")
        .arg("--target")
        .arg(node.addr().to_string())
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run nacre loadtest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "nacre loadtest {args:?} failed ({}):\n{stdout}\n{stderr}\nnode log:\n{}",
        out.status,
        node.log_tail(3000)
    );
    assert!(
        stdout.contains("requests per CPU-s"),
        "no table on stdout:\n{stdout}"
    );
    let text = std::fs::read_to_string(&json).expect("JSON report written");
    serde_json::from_str(&text).expect("JSON report parses")
}

/// The fields every report has, and no errors.
fn assert_clean(report: &Value, scenario: &str) {
    assert_eq!(report["scenario"], scenario, "{report:#}");
    assert!(report["requests"].as_u64().unwrap_or(0) > 0, "{report:#}");
    assert_eq!(
        report["errors"], 0,
        "errors: {:#}",
        report["errors_by_kind"]
    );
    for key in ["throughput_rps", "p50_ms", "p99_ms", "max_ms"] {
        let v = report[key].as_f64().unwrap_or(-1.0);
        assert!(v > 0.0, "{key} = {v} in {report:#}");
    }
    assert!(report["p50_ms"].as_f64() <= report["max_ms"].as_f64());
}

fn short(extra: &[&'static str]) -> Vec<&'static str> {
    let mut v = vec![
        "--duration",
        "2s",
        "--warmup",
        "500ms",
        "--concurrency",
        "2",
    ];
    v.extend_from_slice(extra);
    v
}

/// A short run of one scenario against a fresh node of its own.
fn run_short(extra: &[&'static str]) -> Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start_node(dir.path());
    loadtest(&node, dir.path(), &short(extra))
}

#[test]
fn register_scenario_runs_clean() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start_node(dir.path());
    let pid = node.pid().expect("pid").to_string();
    let mut args = short(&[
        "--scenario",
        "register",
        "--seed",
        "11",
        "--metadata-bytes",
        "64",
    ]);
    args.extend(["--target-pid", pid.as_str()]);
    let r = loadtest(&node, dir.path(), &args);
    assert_clean(&r, "register");
    assert_eq!(r["operations"][0]["op"], "register");
    assert!(
        r["server"]["cpu_seconds"].as_f64().unwrap_or(0.0) > 0.0,
        "{r:#}"
    );
    assert!(r["server"]["peak_rss_bytes"].as_u64().unwrap_or(0) > 0);
}

#[test]
fn deregister_scenario_removes_each_instance_once() {
    let r = run_short(&[
        "--scenario",
        "deregister",
        "--seed",
        "12",
        "--services",
        "4",
        "--instances-per-service",
        "25",
    ]);
    assert_clean(&r, "deregister");
    assert_eq!(r["requests"], 100);
}

#[test]
fn beat_scenario_runs_clean_open_loop() {
    let r = run_short(&["--scenario", "beat", "--seed", "13", "--rate", "200"]);
    assert_clean(&r, "beat");
    // Open loop: about rate × duration requests, whatever the server's speed.
    let n = r["requests"].as_u64().unwrap_or(0);
    assert!((300..=420).contains(&n), "{n} beats at 200/s for 2 s");
}

#[test]
fn list_scenario_runs_clean() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start_node(dir.path());
    let svg = dir.path().join("list.svg");
    let svg_arg = svg.to_str().expect("utf-8 path").to_string();
    let mut args = short(&["--scenario", "list", "--seed", "14"]);
    args.extend(["--svg", svg_arg.as_str()]);
    let r = loadtest(&node, dir.path(), &args);
    assert_clean(&r, "list");
    let chart = std::fs::read_to_string(&svg).expect("SVG written");
    assert!(chart.starts_with("<svg") && chart.contains("<polyline"));
}

#[test]
fn subscribe_scenario_receives_and_acks_pushes() {
    let r = run_short(&["--scenario", "subscribe", "--seed", "15", "--services", "3"]);
    assert_clean(&r, "subscribe");
    let push = &r["push"];
    assert!(push["received"].as_u64().unwrap_or(0) > 0, "{push:#}");
    assert_eq!(push["received"], push["acked"], "{push:#}");
    assert_eq!(push["decode_errors"], 0);
    assert!(push["observed"].as_u64().unwrap_or(0) > 0, "{push:#}");
    assert!(push["p50_ms"].as_f64().unwrap_or(0.0) > 0.0, "{push:#}");
}

#[test]
fn mixed_fleet_runs_clean() {
    let r = run_short(&[
        "--scenario",
        "mixed",
        "--seed",
        "16",
        "--services",
        "5",
        "--instances-per-service",
        "20",
    ]);
    assert_clean(&r, "mixed");
    let ops: Vec<&str> = r["operations"]
        .as_array()
        .expect("operations")
        .iter()
        .filter_map(|o| o["op"].as_str())
        .collect();
    assert_eq!(ops, ["beat", "list"]);
    // 100 clients: 20 beats/s and 30 lists/s.
    let n = r["requests"].as_u64().unwrap_or(0);
    assert!((80..=120).contains(&n), "{n} requests in 2 s");
}

#[test]
fn churn_scenario_runs_clean_and_is_pushed() {
    let r = run_short(&[
        "--scenario",
        "churn",
        "--seed",
        "17",
        "--services",
        "3",
        "--rate",
        "100",
    ]);
    assert_clean(&r, "churn");
    let push = &r["push"];
    assert!(push["observed"].as_u64().unwrap_or(0) > 0, "{push:#}");
    assert_eq!(push["decode_errors"], 0);
}

#[test]
fn memory_mode_reports_bytes_per_instance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start_node(dir.path());
    let pid = node.pid().expect("pid").to_string();
    let r = loadtest(
        &node,
        dir.path(),
        &[
            "--scenario",
            "memory",
            "--seed",
            "18",
            "--services",
            "5",
            "--instances-per-service",
            "400",
            "--concurrency",
            "4",
            "--settle",
            "200ms",
            "--target-pid",
            pid.as_str(),
        ],
    );
    assert_clean(&r, "memory");
    assert_eq!(r["requests"], 2000);
    let m = &r["memory"];
    assert_eq!(m["instances"], 2000);
    assert_eq!(m["verified_instances"], 2000, "{m:#}");
    assert!(m["rss_after_bytes"].as_u64().unwrap_or(0) > 0);
    assert!(m["bytes_per_instance"].is_f64());
}

#[test]
fn compare_alternates_two_targets_and_reports_ratios() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = start_node(&dir.path().join("a"));
    let b = start_node(&dir.path().join("b"));
    let b_addr = b.addr().to_string();
    let r = loadtest(
        &a,
        dir.path(),
        &[
            "--scenario",
            "list",
            "--seed",
            "19",
            "--duration",
            "1s",
            "--warmup",
            "200ms",
            "--concurrency",
            "2",
            "--rounds",
            "2",
            "--compare",
            b_addr.as_str(),
        ],
    );
    assert_clean(&r["a"], "list");
    assert_clean(&r["b"], "list");
    assert!(r["ratios"]["throughput"].as_f64().unwrap_or(0.0) > 0.0);
    let targets: Vec<&str> = r["rounds"]
        .as_array()
        .expect("rounds")
        .iter()
        .filter_map(|row| row["target"].as_str())
        .collect();
    let a_addr = a.addr().to_string();
    // A B, then B A.
    assert_eq!(
        targets,
        [
            a_addr.as_str(),
            b_addr.as_str(),
            b_addr.as_str(),
            a_addr.as_str()
        ]
    );
}

/// Against a node with auth on, `--auth USER:PASSWORD` logs in once and every request carries
/// the token (zero errors); without it the run stops at its setup, refused.
#[tokio::test]
async fn auth_flag_logs_in_and_every_request_carries_the_token() {
    const PASSWORD: &str = "loadtest-admin-pw";
    const AUTH: &str = "nacos:loadtest-admin-pw";
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, _, _) =
        NodeProcess::start_with_auth(Path::new(BIN), &dir.path().join("node"), PASSWORD, &[])
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
    let args = short(&["--scenario", "register", "--seed", "15", "--auth", AUTH]);
    let r = loadtest(&node, dir.path(), &args);
    assert_clean(&r, "register");
    // Without credentials the list scenario's setup (registering what it lists) is refused,
    // and the harness says so instead of measuring refusals.
    let out = Command::new(BIN)
        .args(["loadtest", "--target", &node.addr().to_string()])
        .args(short(&["--scenario", "list", "--seed", "15"]))
        .output()
        .expect("run nacre loadtest");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("http_403"), "{stderr}");
}

#[test]
fn config_scenarios_run_clean() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start_node(dir.path());
    for (scenario, seed) in [("config-publish", "16"), ("config-get", "17")] {
        let args = short(&[
            "--scenario",
            scenario,
            "--seed",
            seed,
            "--services",
            "20",
            "--config-bytes",
            "512",
        ]);
        let r = loadtest(&node, dir.path(), &args);
        assert_clean(&r, scenario);
        assert_eq!(r["operations"][0]["op"], scenario, "{r:#}");
    }
    // What the runs stored is readable: 20 configs per seed.
    let (status, body) = nacre_testkit::http_get(
        node.addr(),
        "/nacos/v1/cs/configs?search=accurate&dataId=&group=&pageNo=1&pageSize=100",
        Duration::from_secs(10),
    )
    .expect("search");
    assert_eq!(status, 200, "{body}");
    let page: Value = serde_json::from_str(&body).expect("a page");
    assert_eq!(page["totalCount"], 40, "{page:#}");
}

/// Every publish reaches every listener of its config (none missed), with its latency.
#[test]
fn config_listen_scenario_times_every_notification() {
    let r = run_short(&[
        "--scenario",
        "config-listen",
        "--seed",
        "18",
        "--services",
        "5",
        "--listeners",
        "10",
        "--rate",
        "20",
    ]);
    assert_clean(&r, "config-listen");
    let ops = r["operations"].as_array().cloned().unwrap_or_default();
    let count = |op: &str| {
        ops.iter()
            .find(|o| o["op"] == op)
            .and_then(|o| o["requests"].as_u64())
            .unwrap_or(0)
    };
    let (publishes, notified) = (count("config-publish"), count("notify"));
    assert!(publishes >= 30, "{r:#}");
    // Two listeners per config, so about two notifications per publish (fewer only if a
    // listener coalesced two publishes into one answer).
    assert!(
        notified >= publishes && notified <= 2 * publishes,
        "{publishes} publishes, {notified} notifications: {r:#}"
    );
}

/// Beats carrying the whole beat JSON (with metadata), as the Python and Node clients send
/// them, are answered like light ones: nothing lost.
#[test]
fn full_beats_run_clean_and_lose_nothing() {
    let r = run_short(&[
        "--scenario",
        "beat",
        "--seed",
        "19",
        "--full-beats",
        "--metadata-bytes",
        "120",
        "--rate",
        "200",
    ]);
    assert_clean(&r, "beat");
    assert_eq!(r["config"]["full_beats"], true, "{:#}", r["config"]);
    assert_eq!(r["lost"]["beats_unknown"], 0);
    // Open loop: the schedule is reported.
    assert!(
        r["schedule"]["scheduled"].as_u64().unwrap_or(0) > 0,
        "{r:#}"
    );
}

/// An instance the server drops while its client keeps beating (and listing) is counted as
/// lost: beats answered 20404, lists short of it.
#[tokio::test]
async fn instances_the_server_forgets_are_reported_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start_node(dir.path());
    let api = nacre_testkit::http::Api::new(node.addr());
    for (scenario, seed, service) in [
        ("beat", "20", "lt20-svc00000"),
        ("list", "21", "lt21-svc00000"),
    ] {
        let run_dir = dir.path().join(scenario);
        std::fs::create_dir_all(&run_dir).expect("run dir");
        let mut args = vec![
            "--scenario",
            scenario,
            "--seed",
            seed,
            "--services",
            "1",
            "--instances-per-service",
            "2",
            "--rate",
            "100",
            "--duration",
            "3s",
            "--warmup",
            "200ms",
        ];
        if scenario == "list" {
            args.push("--keep-alive");
        }
        let addr = node.addr().to_string();
        let json = run_dir.join("report.json");
        let json_arg = json.to_string_lossy().to_string();
        let run = tokio::task::spawn_blocking(move || {
            Command::new(BIN)
                .args(["loadtest", "--target", &addr, "--json", &json_arg])
                .args(&args)
                .output()
                .expect("run nacre loadtest")
        });
        // Setup is done well within a second; then one instance goes.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let gone = api
            .call(
                "DELETE",
                "/nacos/v1/ns/instance",
                &[
                    ("serviceName", service),
                    ("ip", "127.0.0.1"),
                    ("port", "8080"),
                    ("clusterName", "DEFAULT"),
                ],
            )
            .await;
        assert_eq!(gone.status, 200, "{}", gone.body);
        let out = run.await.expect("loadtest task");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}");
        assert!(stdout.contains("instances lost: "), "{stdout}");
        let r: Value = serde_json::from_str(&std::fs::read_to_string(&json).expect("report"))
            .expect("report parses");
        let lost = if scenario == "beat" {
            &r["lost"]["beats_unknown"]
        } else {
            &r["lost"]["lists_short"]
        };
        assert!(
            lost.as_u64().unwrap_or(0) > 0,
            "{scenario}: {:#}",
            r["lost"]
        );
    }
}

/// `overload --push-clients N`: the lists come from N loopback addresses, so the node holds N
/// subscribers of each service, and every change's push reaches them and is acked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_with_push_clients_has_each_service_pushed_to_every_client() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start_node(dir.path());
    let api = nacre_testkit::http::Api::new(node.addr());
    let args = [
        "--scenario",
        "overload",
        "--seed",
        "22",
        "--services",
        "3",
        "--instances-per-service",
        "4",
        "--rate",
        "200",
        "--duration",
        "4s",
        "--overload-for",
        "2s",
        "--warmup",
        "500ms",
        "--concurrency",
        "8",
        "--push-clients",
        "4",
    ];
    // The helper runs the harness to its end; the node's metrics are read after it.
    let r = tokio::task::block_in_place(|| loadtest(&node, dir.path(), &args));
    assert_eq!(r["errors"], 0, "{:#}", r["errors_by_kind"]);
    assert_eq!(r["config"]["push_clients"], 4, "the report says how many");
    let push = &r["push"];
    assert!(push["observed"].as_u64().unwrap_or(0) > 0, "{push:#}");
    assert_eq!(push["received"], push["acked"], "{push:#}");
    assert_eq!(
        api.metric("nacre_push_subscribers").await,
        12.0,
        "3 services, each listed from 4 addresses"
    );
    // Each change went to the four clients of its service: far more datagrams than changes.
    let (received, changes) = (
        push["received"].as_u64().unwrap_or(0),
        push["changes"].as_u64().unwrap_or(0),
    );
    assert!(received >= 2 * changes, "{push:#}");
    assert_eq!(api.metric("nacre_push_failed_total").await, 0.0);
}
