//! The Kubernetes packaging (`deploy/kubernetes/nacre.yaml`), short of a Kubernetes cluster.
//!
//! The manifests name every node by its pod's DNS name (`nacre-K.nacre-headless:8848`), list
//! those names in a `cluster.conf` the nodes read, and advertise `$(POD_NAME).nacre-headless`.
//! What that relies on runs here on loopback, with `localhost:PORT` standing in for the pod
//! names (the one host name this machine resolves): nodes known only by host names form a
//! cluster, replicate, and a node restarted on its data keeps its identity. The schema check
//! of the manifests (`kubernetes-validate --strict`) runs in `scripts/test.sh`.

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use nacre_testkit::repo_root;
use nacre_testkit::{free_loopback_addrs, http_call, http_get, wait_until, NodeProcess};

const READY: Duration = Duration::from_secs(60);
const STEP: Duration = Duration::from_secs(5);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_nacre"))
}

fn manifest() -> Result<String> {
    let path = repo_root().join("deploy/kubernetes/nacre.yaml");
    std::fs::read_to_string(&path).with_context(|| path.display().to_string())
}

#[test]
fn the_manifests_name_every_node_by_its_pod_dns_name() -> Result<()> {
    let m = manifest()?;
    let replicas: usize = m
        .split("kind: StatefulSet")
        .nth(1)
        .and_then(|s| s.split("replicas:").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .context("the StatefulSet's replicas")?;
    let conf: Vec<&str> = m
        .split("cluster.conf: |")
        .nth(1)
        .context("the cluster.conf ConfigMap")?
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    let expected: Vec<String> = (0..replicas)
        .map(|k| format!("nacre-{k}.nacre-headless:8848"))
        .collect();
    ensure!(
        conf == expected,
        "cluster.conf lists {conf:?}, the StatefulSet has {replicas} pods"
    );
    for needed in [
        "--advertise=$(POD_NAME).nacre-headless:8848",
        "--members-file=/etc/nacre/cluster.conf",
        "publishNotReadyAddresses: true",
        "podManagementPolicy: Parallel",
        "path: /nacos/v1/console/health/readiness",
        "path: /nacre/gateway/ready",
        "accessModes: [ReadWriteOnce]",
        "kind: PodDisruptionBudget",
    ] {
        ensure!(m.contains(needed), "the manifests lack {needed}");
    }
    ensure!(
        !m.contains("NACRE_CLUSTER_SECRET\n              value:"),
        "the cluster secret must come from a Secret, never a value in the manifest"
    );
    Ok(())
}

fn cluster_view(node: &NodeProcess) -> Result<serde_json::Value> {
    let (status, body) = http_get(node.addr(), "/nacre/v1/cluster", STEP)?;
    ensure!(status == 200, "{status} {body}");
    Ok(serde_json::from_str(&body)?)
}

fn sorted(v: &serde_json::Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[test]
fn nodes_known_by_host_names_form_a_cluster_and_keep_their_identity_across_a_restart() -> Result<()>
{
    let dir = tempfile::tempdir()?;
    let addrs = free_loopback_addrs(3)?;
    let names: Vec<String> = addrs
        .iter()
        .map(|a| format!("localhost:{}", a.port()))
        .collect();
    let conf = dir.path().join("cluster.conf");
    std::fs::write(&conf, format!("# pod names\n{}\n", names.join("\n")))?;
    let mut nodes = Vec::new();
    for (i, (addr, name)) in addrs.iter().zip(&names).enumerate() {
        let args = vec![
            format!("--advertise={name}"),
            format!("--members-file={}", conf.display()),
            "--cluster-secret=kubernetes-test-secret-0123456789".to_string(),
        ];
        let data = dir.path().join(format!("node-{i}"));
        nodes.push(NodeProcess::start_member(
            bin(),
            &data,
            *addr,
            args,
            Vec::new(),
        )?);
    }
    for n in &mut nodes {
        n.wait_ready(READY)?;
    }
    let mut want = names.clone();
    want.sort();
    let view = cluster_view(&nodes[0])?;
    ensure!(sorted(&view["raftMembers"]) == want, "{view}");
    let members: Vec<String> = view["members"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m["address"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    ensure!(
        members.len() == 3 && members.iter().all(|m| names.contains(m)),
        "{view}"
    );

    // A persistent write through one node, read on another.
    let write = "/nacos/v1/ns/instance?serviceName=k8s&ip=10.9.0.1&port=80&ephemeral=false";
    let (status, body) = http_call(nodes[1].addr(), "POST", write, STEP)?;
    ensure!(status == 200, "{status} {body}");
    let listed = |n: &NodeProcess| {
        http_get(n.addr(), "/nacos/v1/ns/instance/list?serviceName=k8s", STEP)
            .map(|(s, b)| s == 200 && b.contains("10.9.0.1"))
            .unwrap_or(false)
    };
    wait_until(READY, Duration::from_millis(100), || {
        listed(&nodes[2]).then_some(())
    })
    .context("node 2 never listed the write")?;

    // The pod is replaced (kill -9, same volume): same name, same Raft member, the data kept.
    nodes[2].kill9()?;
    nodes[2].restart()?;
    nodes[2].wait_ready(READY)?;
    let view = cluster_view(&nodes[2])?;
    ensure!(view["self"] == names[2].as_str(), "{view}");
    ensure!(
        sorted(&view["raftMembers"]) == want,
        "a restarted node joined anew: {view}"
    );
    ensure!(listed(&nodes[2]), "the restarted node lost the write");
    Ok(())
}
