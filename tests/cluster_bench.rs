//! Cluster benchmarks (not run by default): replication latency, Raft leader failover time,
//! and how long a new node takes to converge with 100,000 instances.
//!
//! Run with a release build so the nodes are measured, not debug assertions:
//! `cargo test --release -p nacre --test cluster_bench -- --ignored --nocapture`.
//! Figures go to stdout; nothing is asserted about speed.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use nacre_testkit::cluster::{ClusterOptions, TestCluster};
use nacre_testkit::http::Api;

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn listed(api: &Api, service: &str, ip: &str) -> bool {
    api.ips(service).await.iter().any(|i| i == ip)
}

async fn instance_count(api: &Api) -> u64 {
    let v = api
        .call("GET", "/nacos/v1/ns/operator/metrics", &[])
        .await
        .json();
    v["instanceCount"].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark: run with --release --ignored --nocapture"]
async fn cluster_figures() -> Result<()> {
    let root = tempfile::Builder::new().prefix("nacre-bench-").tempdir()?;
    let opts = ClusterOptions::new(3)
        .with_members_file()
        .with_env("NACRE_PROBE_INTERVAL_MS", "200")
        .with_env("NACRE_DOWN_AFTER", "3")
        .with_env("NACRE_DISCOVERY_INTERVAL_MS", "200")
        .with_env("NACRE_RAFT_MEMBERSHIP_INTERVAL_MS", "300");
    let mut c = TestCluster::start(Path::new(env!("CARGO_BIN_EXE_nacre")), root.path(), opts)?;
    c.wait_ready(Duration::from_secs(60))?;
    let apis: Vec<Api> = (0..3).map(|i| Api::new(c.node(i).addr())).collect();

    // 1. Replication latency: register on one node, poll the other two until both list it.
    let mut ack = Vec::new();
    let mut visible = Vec::new();
    for i in 0..1000 {
        let service = format!("lat-{i}");
        let ip = format!("10.{}.{}.{}", 20 + i / 65536, (i / 256) % 256, i % 256);
        let t = Instant::now();
        let r = apis[i % 3]
            .instance(
                "POST",
                &[("serviceName", &service), ("ip", &ip), ("port", "80")],
            )
            .await;
        if r.body != "ok" {
            bail!("register failed: {} {}", r.status, r.body);
        }
        ack.push(t.elapsed());
        for j in 1..3 {
            let other = &apis[(i + j) % 3];
            while !listed(other, &service, &ip).await {
                if t.elapsed() > Duration::from_secs(5) {
                    bail!("{service} not replicated within 5 s");
                }
            }
        }
        visible.push(t.elapsed());
    }
    ack.sort();
    visible.sort();
    println!(
        "replication: register acknowledged p50 {:?} p99 {:?}; listed by both other nodes p50 {:?} p99 {:?} max {:?} (n=1000)",
        pct(&ack, 0.5),
        pct(&ack, 0.99),
        pct(&visible, 0.5),
        pct(&visible, 0.99),
        visible[visible.len() - 1]
    );

    // 2. Leader failover: kill -9 the leader, time until a survivor accepts a persistent write.
    let leader_addr = apis[0].call("GET", "/nacre/v1/cluster", &[]).await.json()["leader"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let Some(leader) = (0..3).find(|&i| c.advertised(i) == leader_addr) else {
        bail!("no leader");
    };
    let survivor = (0..3).find(|&i| i != leader).unwrap_or(0);
    c.kill9(leader)?;
    let t = Instant::now();
    let mut n = 0;
    loop {
        let ip = format!("127.9.0.{}", n % 250);
        n += 1;
        let r = apis[survivor]
            .instance(
                "POST",
                &[
                    ("serviceName", "failover"),
                    ("ip", &ip),
                    ("port", "80"),
                    ("ephemeral", "false"),
                ],
            )
            .await;
        if r.status == 200 {
            break;
        }
        if t.elapsed() > Duration::from_secs(30) {
            bail!("no write accepted within 30 s");
        }
    }
    println!(
        "leader failover: first persistent write accepted {:?} after kill -9",
        t.elapsed()
    );
    c.restart(leader)?;
    c.node_mut(leader).wait_ready(Duration::from_secs(60))?;

    // 3. A new node converging with 100,000 ephemeral instances (1,000 services × 100).
    let writers = 32;
    let api = Arc::new(apis[0].clone());
    let t = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            for k in (w..100_000).step_by(writers) {
                let service = format!("bulk-{}", k / 100);
                let ip = format!("10.{}.{}.{}", 100 + k / 65536, (k / 256) % 256, k % 256);
                api.instance(
                    "POST",
                    &[("serviceName", &service), ("ip", &ip), ("port", "80")],
                )
                .await;
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    println!(
        "loaded 100,000 instances through one node in {:?}",
        t.elapsed()
    );
    let before = instance_count(&apis[0]).await;
    let t = Instant::now();
    let newcomer = c.add_node()?;
    c.node_mut(newcomer).wait_ready(Duration::from_secs(120))?;
    let ready_after = t.elapsed();
    let count = instance_count(&Api::new(c.node(newcomer).addr())).await;
    println!(
        "new node: ready {ready_after:?} after start, holding {count} instances at ready (node 0 holds {before})"
    );
    Ok(())
}
