//! Tests of the persistent store facade: restart, compaction, a real HTTP cluster, and the
//! internal routes' guards.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nacre_ring::ServiceKey;
use openraft::BasicNode;
use parking_lot::Mutex;
use tokio::net::TcpListener;

use super::network::{SECRET_HEADER, TARGET_HEADER};
use super::*;
use crate::naming::model::Namespace;
use crate::naming::persistent::CommandOutput;

pub(crate) const SECRET: &str = "test-secret";
pub(crate) const READY: Duration = Duration::from_secs(10);

pub(crate) fn key(name: &str) -> ServiceKey {
    ServiceKey::new("public", "DEFAULT_GROUP", name)
}

pub(crate) fn create(name: &str) -> Command {
    Command::CreateService {
        key: key(name),
        meta: Default::default(),
        exists_elsewhere: false,
    }
}

fn noop() -> ChangeCallback {
    Arc::new(|_: &[ServiceKey], _: &[nacre_ring::wire::ConfigChange]| {})
}

fn settings(dir: &Path, addr: &str, standalone: bool) -> RaftSettings {
    RaftSettings::new(dir, addr, SECRET, standalone)
}

pub(crate) async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + READY;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn standalone_restart_keeps_acknowledged_writes() {
    let dir = tempfile::tempdir().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let cb: ChangeCallback = Arc::new(
        move |k: &[ServiceKey], _: &[nacre_ring::wire::ConfigChange]| {
            seen2.lock().extend_from_slice(k)
        },
    );
    let s = PersistentStore::start(settings(dir.path(), "127.0.0.1:1", true), cb)
        .await
        .unwrap();
    assert!(s.wait_ready(READY).await);
    assert_eq!(s.status().role, "Leader");
    assert_eq!(s.status().leader.as_deref(), Some("127.0.0.1:1"));

    assert_eq!(
        s.write(create("orders")).await.unwrap(),
        Ok(CommandOutput {
            changed: vec![key("orders")],
            ..CommandOutput::default()
        })
    );
    // A rejection (a create with other settings) is a committed outcome, not a write error.
    let conflicting = Command::CreateService {
        key: key("orders"),
        meta: crate::naming::model::ServiceMeta {
            protect_threshold: 0.5,
            ..Default::default()
        },
        exists_elsewhere: false,
    };
    assert!(s.write(conflicting).await.unwrap().is_err());
    s.write(Command::CreateNamespace(Namespace {
        id: "dev".into(),
        show_name: "Dev".into(),
        desc: String::new(),
    }))
    .await
    .unwrap()
    .unwrap();
    assert_eq!(*seen.lock(), vec![key("orders")]);
    let before = s.read(|st| st.clone());
    let node_id = s.node_id();
    s.shutdown().await;
    assert!(matches!(
        s.write(create("late")).await,
        Err(WriteError::Unavailable(_))
    ));
    drop(s);

    let s = PersistentStore::start(settings(dir.path(), "127.0.0.1:1", true), noop())
        .await
        .unwrap();
    assert_eq!(s.node_id(), node_id);
    assert_eq!(s.read(|st| st.clone()), before);
    assert!(s.wait_ready(READY).await);
    assert!(s.read(|st| st.namespace("dev").is_some()));
    s.write(create("payments")).await.unwrap().unwrap();
    assert!(s.read(|st| st.service(&key("payments")).is_some()));
    s.shutdown().await;
}

/// Rules B2–B4 of `propose` end to end: concurrent writes share entries, each keeps its own
/// result, and every one is applied once its answer arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_entries_and_keep_their_own_results() {
    let dir = tempfile::tempdir().unwrap();
    let s = PersistentStore::start(settings(dir.path(), "127.0.0.1:1", true), noop())
        .await
        .unwrap();
    assert!(s.wait_ready(READY).await);
    s.write(create("taken")).await.unwrap().unwrap();
    let before = s.status().last_log_index.unwrap();

    const N: usize = 64;
    let conflicting = Command::CreateService {
        key: key("taken"),
        meta: crate::naming::model::ServiceMeta {
            protect_threshold: 0.5,
            ..Default::default()
        },
        exists_elsewhere: false,
    };
    let writes = (0..N).map(|i| {
        let s = s.clone();
        // Every eighth write is refused by the state machine; it must refuse only itself.
        let cmd = if i % 8 == 0 {
            conflicting.clone()
        } else {
            create(&format!("svc-{i}"))
        };
        tokio::spawn(async move {
            let res = s.write(cmd).await.unwrap();
            // B4: answered only once applied here.
            let applied = s.read(|st| st.service(&key(&format!("svc-{i}"))).is_some());
            (i, res, applied)
        })
    });
    for w in futures::future::join_all(writes).await {
        let (i, res, applied) = w.unwrap();
        if i % 8 == 0 {
            assert!(res.is_err(), "write {i} should be refused");
            assert!(!applied);
        } else {
            assert_eq!(
                res.unwrap().changed,
                vec![key(&format!("svc-{i}"))],
                "write {i}"
            );
            assert!(applied, "write {i} answered before it was applied");
        }
    }
    let entries = s.status().last_log_index.unwrap() - before;
    assert!(
        entries < N as u64,
        "{N} concurrent writes took {entries} entries: nothing was batched"
    );
    s.shutdown().await;
}

/// Rule B7 of `propose`: with the gate closed (a member that cannot read packed entries),
/// every command is its own entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_batch_gate_proposes_one_command_per_entry() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = settings(dir.path(), "127.0.0.1:1", true);
    cfg.batch_gate = propose::BatchGate::new(|| false);
    let s = PersistentStore::start(cfg, noop()).await.unwrap();
    assert!(s.wait_ready(READY).await);
    let before = s.status().last_log_index.unwrap();
    let writes = (0..16).map(|i| {
        let s = s.clone();
        tokio::spawn(async move { s.write(create(&format!("one-{i}"))).await })
    });
    for w in futures::future::join_all(writes).await {
        w.unwrap().unwrap().unwrap();
    }
    assert_eq!(s.status().last_log_index.unwrap() - before, 16);
    s.shutdown().await;
}

#[test]
fn a_batch_applies_in_order_each_command_on_its_own() {
    let mut st = PersistentState::default();
    let out = st
        .apply(&Command::Batch(vec![
            create("a"),
            Command::DeleteService {
                key: key("a"),
                exists_elsewhere: false,
            },
            Command::DeleteService {
                key: key("a"),
                exists_elsewhere: false,
            },
            create("b"),
        ]))
        .unwrap();
    let ok: Vec<bool> = out.batch.iter().map(Result::is_ok).collect();
    assert_eq!(ok, vec![true, true, false, true], "{:?}", out.batch);
    assert!(st.service(&key("a")).is_none(), "the delete saw the create");
    assert!(st.service(&key("b")).is_some());
    assert_eq!(out.changed, vec![key("a"), key("b")]);
}

#[tokio::test]
async fn snapshot_compacts_log_and_restart_restores_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = settings(dir.path(), "127.0.0.1:2", true);
    cfg.snapshot_logs_since_last = 20;
    cfg.logs_kept_after_snapshot = 5;
    let histogram =
        prometheus::Histogram::with_opts(prometheus::HistogramOpts::new("apply_latency", "test"))
            .unwrap();
    cfg.apply_latency = Some(histogram.clone());
    let s = PersistentStore::start(cfg.clone(), noop()).await.unwrap();
    assert!(s.wait_ready(READY).await);
    for i in 0..65 {
        s.write(create(&format!("svc-{i}"))).await.unwrap().unwrap();
    }
    assert_eq!(histogram.get_sample_count(), 65);
    wait_for("log purged after a snapshot", || {
        let st = s.status();
        st.snapshot_index.is_some() && st.purged_index.is_some_and(|p| p > 20)
    })
    .await;
    let before = s.read(|st| st.clone());
    let status = s.status();
    s.shutdown().await;
    drop(s);

    let s = PersistentStore::start(cfg, noop()).await.unwrap();
    assert!(s.wait_ready(READY).await);
    assert_eq!(s.read(|st| st.clone()), before);
    assert_eq!(s.read(|st| st.services().count()), 65);
    let after = s.status();
    assert!(after.purged_index >= status.purged_index);
    assert!(after.snapshot_index.is_some());
    s.shutdown().await;
}

pub(crate) struct Node {
    pub(crate) store: PersistentStore,
    pub(crate) addr: String,
    pub(crate) server: tokio::task::JoinHandle<()>,
}

pub(crate) async fn start_node(dir: &Path) -> Node {
    start_node_with(dir, |_| {}).await
}

async fn start_node_with(dir: &Path, tune: impl FnOnce(&mut RaftSettings)) -> Node {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut cfg = settings(dir, &addr, false);
    tune(&mut cfg);
    let store = PersistentStore::start(cfg, noop()).await.unwrap();
    let router = store.router();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Node {
        store,
        addr,
        server,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_over_http_replicate_and_redirect_to_leader() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = Vec::new();
    for d in &dirs {
        nodes.push(start_node(d.path()).await);
    }
    let members: BTreeMap<u64, BasicNode> = nodes
        .iter()
        .map(|n| (n.store.node_id(), BasicNode::new(&n.addr)))
        .collect();
    nodes[0].store.raft().initialize(members).await.unwrap();
    for n in &nodes {
        assert!(n.store.wait_ready(READY).await, "node {} not ready", n.addr);
    }
    let leader = nodes
        .iter()
        .find(|n| n.store.status().role == "Leader")
        .unwrap();
    let follower = nodes
        .iter()
        .find(|n| n.store.status().role == "Follower")
        .unwrap();

    leader.store.write(create("orders")).await.unwrap().unwrap();
    // Proposing on the follower alone is refused with the leader's address…
    assert_eq!(
        follower
            .store
            .write_local(create("other"))
            .await
            .map(|c| c.result),
        Err(WriteError::NotLeader {
            leader: Some(leader.addr.clone())
        })
    );
    // …while `write` forwards to the leader and returns once the follower has applied it.
    follower
        .store
        .write(create("other"))
        .await
        .unwrap()
        .unwrap();
    assert!(follower
        .store
        .read(|st| st.service(&key("other")).is_some()));
    for n in &nodes {
        wait_for("replicated to every node", || {
            n.store.read(|st| st.service(&key("orders")).is_some())
        })
        .await;
        assert_eq!(n.store.status().members.len(), 3);
    }
    for n in &nodes {
        n.store.shutdown().await;
        n.server.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_behind_the_purged_log_catches_up_from_a_snapshot_over_http() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader = start_node_with(d1.path(), |s| {
        s.snapshot_logs_since_last = 20;
        s.logs_kept_after_snapshot = 5;
    })
    .await;
    let members = BTreeMap::from([(leader.store.node_id(), BasicNode::new(&leader.addr))]);
    leader.store.raft().initialize(members).await.unwrap();
    assert!(leader.store.wait_ready(READY).await);
    for i in 0..60 {
        leader
            .store
            .write(create(&format!("s{i}")))
            .await
            .unwrap()
            .unwrap();
    }
    wait_for("the leader's log purged past the start", || {
        leader.store.status().purged_index.is_some_and(|p| p > 20)
    })
    .await;

    // The log no longer starts at 1: the newcomer can only be brought up by a snapshot.
    let late = start_node(d2.path()).await;
    leader
        .store
        .raft()
        .add_learner(late.store.node_id(), BasicNode::new(&late.addr), true)
        .await
        .unwrap();
    wait_for("the newcomer holds every service", || {
        late.store
            .read(|st| (0..60).all(|i| st.service(&key(&format!("s{i}"))).is_some()))
    })
    .await;
    assert!(
        late.store.status().snapshot_index.is_some(),
        "caught up without installing a snapshot"
    );
    for n in [&leader, &late] {
        n.store.shutdown().await;
        n.server.abort();
    }
}

#[tokio::test]
async fn internal_routes_require_the_secret_and_valid_json() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path()).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("http://{}/nacre/internal/raft/vote", node.addr);

    let missing = client.post(&url).body("{}").send().await.unwrap();
    assert_eq!(missing.status().as_u16(), 403);
    let wrong = client
        .post(&url)
        .header(SECRET_HEADER, "nope")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 403);
    let bad = client
        .post(&url)
        .header(SECRET_HEADER, SECRET)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);

    // A well-formed vote from an unknown candidate gets a typed Raft answer.
    let vote = openraft::raft::VoteRequest::<u64>::new(openraft::Vote::new(1, 42), None);
    let ok = client
        .post(&url)
        .header(SECRET_HEADER, SECRET)
        .json(&vote)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    let body: serde_json::Value = ok.json().await.unwrap();
    assert!(body.get("Ok").is_some(), "{body}");

    // A request meant for another member (it reached this node at a stale address) is refused
    // before Raft sees it: the higher term of the vote is not taken.
    let vote = openraft::raft::VoteRequest::<u64>::new(openraft::Vote::new(7, 42), None);
    let other = node.store.node_id().wrapping_add(1);
    let misdirected = client
        .post(&url)
        .header(SECRET_HEADER, SECRET)
        .header(TARGET_HEADER, other.to_string())
        .json(&vote)
        .send()
        .await
        .unwrap();
    assert_eq!(misdirected.status().as_u16(), 421);
    let text = misdirected.text().await.unwrap();
    assert!(text.contains(&other.to_string()), "{text}");
    assert!(
        node.store.status().term < 7,
        "a misdirected vote reached raft"
    );
    let meant = client
        .post(&url)
        .header(SECRET_HEADER, SECRET)
        .header(TARGET_HEADER, node.store.node_id().to_string())
        .json(&vote)
        .send()
        .await
        .unwrap();
    assert_eq!(meant.status().as_u16(), 200);
    wait_for("the vote's term is taken", || node.store.status().term == 7).await;

    node.store.shutdown().await;
    node.server.abort();
}

#[test]
fn default_election_timers_replace_a_dead_leader_within_the_failover_goal() {
    let (heartbeat, min, max) = super::election_timers(super::DEFAULT_ELECTION_TIMEOUT_MS);
    // openraft: lease (= max) + a random timeout in [min, max], checked every 1.5 heartbeats.
    let worst = max + max + heartbeat * 3 / 2;
    assert!(worst <= 1_350, "worst election start {worst} ms");
    // A follower must miss many heartbeats before it may even consider an election.
    assert!(max + min >= 10 * heartbeat, "{heartbeat} {min} {max}");
    // The timeout window spans more than one election tick, so followers can draw apart.
    assert!(max - min > heartbeat * 3 / 2, "{heartbeat} {min} {max}");
    // Votes and appends get time enough under load (they time out after `min` and after one
    // heartbeat interval).
    assert!(min >= 400 && heartbeat >= 100, "{heartbeat} {min}");
    let cfg = openraft::Config {
        heartbeat_interval: heartbeat,
        election_timeout_min: min,
        election_timeout_max: max,
        ..Default::default()
    };
    assert!(cfg.validate().is_ok());
    // Tiny values are raised to something openraft accepts.
    let (h, lo, hi) = super::election_timers(1);
    assert!(h > 0 && lo > h && hi > lo);
}
