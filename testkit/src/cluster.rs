//! A real multi-node nacre cluster of child processes, with a cuttable link in front of each node.
//!
//! Every node `i` (0-based; data dir `<root>/node-<i+1>`) listens on its own free loopback port
//! and has a [`LinkProxy`] in front of it. The node *advertises the proxy's address* and every
//! member list names proxy addresses, so all peer traffic towards node `i` flows through
//! `proxy(i)`. Test clients talk to the node's real address ([`TestCluster::node`]`(i).addr()`),
//! which no proxy operation affects.
//!
//! Links, from the narrowest tool to the widest:
//! - [`TestCluster::proxy`]`(i).cut()` stops peers from reaching node `i`, but node `i` can still
//!   call its peers through their proxies (and get answers): an *asymmetric* failure.
//! - [`TestCluster::isolate`] / [`TestCluster::partition`] separate nodes in both directions:
//!   each proxy also refuses connections opened by the other side's node processes (found by
//!   process id through `/proc`, so Linux only). The cluster re-applies this after
//!   [`TestCluster::restart`], whose new process has a new pid. [`TestCluster::heal`] undoes it.
//! - [`LinkProxy::set_delay`] adds latency towards one node.
//!
//! Membership: with [`ClusterOptions::members_file`] every node reads one shared `cluster.conf`
//! (`<root>/cluster.conf`, one `host:port` per line, rewritten atomically), so
//! [`TestCluster::add_node`] / [`TestCluster::remove_node`] change what running nodes see.
//! Without it nodes get a fixed `--members` list at spawn: a node added later knows everybody,
//! but the existing nodes never learn about it, and a removed node stays in their lists.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::hash::{BuildHasher, Hasher};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::proxy::LinkProxy;
use crate::NodeProcess;

/// How much of each node's log [`TestCluster::log_tails`] includes.
const LOG_TAIL_BYTES: usize = 3000;

/// How to start a [`TestCluster`].
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Number of nodes to start (at least 1).
    pub nodes: usize,
    /// Use a shared `cluster.conf` (`--members-file`) instead of `--members`; needed for
    /// [`TestCluster::add_node`] / [`TestCluster::remove_node`] to reach running nodes.
    pub members_file: bool,
    /// Extra environment for every node, e.g. `("NACRE_MEMBER_PROBE_INTERVAL_MS", "200")`.
    /// The registry rejects unknown `NACRE_*` names, so only pass real settings.
    pub env: Vec<(String, String)>,
    /// Extra arguments appended to every node's command line (after the cluster flags).
    pub args: Vec<String>,
    /// Discover members from this address-server URL (`--members-endpoint`, with
    /// `--bootstrap-expect` = the initial node count) instead of a list or file. The cluster
    /// still keeps `<root>/cluster.conf` current, for the test's address server to serve.
    pub members_endpoint: Option<String>,
}

impl ClusterOptions {
    /// `nodes` nodes with `--members`, no extra environment or arguments.
    pub fn new(nodes: usize) -> Self {
        ClusterOptions {
            nodes,
            members_file: false,
            env: Vec::new(),
            args: Vec::new(),
            members_endpoint: None,
        }
    }

    /// Switches to a shared members file.
    pub fn with_members_file(mut self) -> Self {
        self.members_file = true;
        self
    }

    /// Switches to an address server at `url` (see [`ClusterOptions::members_endpoint`]).
    pub fn with_members_endpoint(mut self, url: &str) -> Self {
        self.members_endpoint = Some(url.to_string());
        self
    }

    /// Adds an environment variable for every node.
    pub fn with_env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Adds a command-line argument for every node.
    pub fn with_arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_string());
        self
    }

    /// Fast failure detection and repair (probes every 200 ms, DOWN after 3 misses, verify
    /// every second), so fault tests run in seconds.
    pub fn fast(self) -> Self {
        self.with_env("NACRE_PROBE_INTERVAL_MS", "200")
            .with_env("NACRE_PROBE_TIMEOUT_MS", "400")
            .with_env("NACRE_DOWN_AFTER", "3")
            .with_env("NACRE_VERIFY_INTERVAL_MS", "1000")
            .with_env("NACRE_DISCOVERY_INTERVAL_MS", "200")
            .with_env("NACRE_RAFT_MEMBERSHIP_INTERVAL_MS", "300")
            .with_env("NACRE_EXPIRY_INTERVAL_MS", "200")
    }
}

impl Default for ClusterOptions {
    /// Three nodes with `--members`.
    fn default() -> Self {
        Self::new(3)
    }
}

/// One node of the cluster and the proxy in front of it.
#[derive(Debug)]
struct Slot {
    // Declared before the proxy so the node is killed before its proxy goes away.
    node: NodeProcess,
    proxy: LinkProxy,
    removed: bool,
}

/// A running cluster of `nacre registry` child processes; dropping it kills every node and
/// stops every proxy. Node indices are 0-based and never reused.
#[derive(Debug)]
pub struct TestCluster {
    bin: PathBuf,
    root: PathBuf,
    secret: String,
    env: Vec<(String, String)>,
    args: Vec<String>,
    members_file: Option<PathBuf>,
    /// Address-server URL and bootstrap size, when members come from an endpoint.
    endpoint: Option<(String, usize)>,
    slots: Vec<Slot>,
    /// Ordered pairs `(from, to)`: connections opened by node `from` towards node `to` are
    /// refused (by `to`'s proxy).
    blocked: BTreeSet<(usize, usize)>,
}

impl TestCluster {
    /// Starts `opts.nodes` nodes under `root` (data dirs `root/node-1..N`, members file
    /// `root/cluster.conf`). All listen ports and proxies are allocated before any node is
    /// spawned, so every node starts with the full member list. Every node gets
    /// `--listen <own port> --advertise <own proxy> --data <dir> --cluster-secret <secret>
    /// (--members <all proxies> | --members-file <root>/cluster.conf) <opts.args>` and
    /// `opts.env`. Does not wait for readiness: call [`TestCluster::wait_ready`].
    pub fn start(bin: &Path, root: &Path, opts: ClusterOptions) -> Result<TestCluster> {
        if opts.nodes == 0 {
            bail!("a cluster needs at least one node");
        }
        std::fs::create_dir_all(root)
            .with_context(|| format!("creating cluster root {}", root.display()))?;
        // Hold every listen port while the proxies bind theirs, so no proxy can be given a
        // port meant for a node; released just before the nodes bind them.
        let held = (0..opts.nodes)
            .map(|_| TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0"))
            .collect::<Result<Vec<_>>>()?;
        let listens = held
            .iter()
            .map(|l| l.local_addr().context("local_addr"))
            .collect::<Result<Vec<_>>>()?;
        let proxies = listens
            .iter()
            .map(|&l| LinkProxy::start(l))
            .collect::<Result<Vec<_>>>()?;
        drop(held);

        let advertised: Vec<String> = proxies.iter().map(|p| p.addr().to_string()).collect();
        let members_file = if opts.members_file || opts.members_endpoint.is_some() {
            let path = root.join("cluster.conf");
            write_cluster_conf(&path, &advertised)?;
            Some(path)
        } else {
            None
        };
        let mut cluster = TestCluster {
            bin: bin.to_path_buf(),
            root: root.to_path_buf(),
            secret: random_hex(32),
            env: opts.env,
            args: opts.args,
            members_file,
            endpoint: opts.members_endpoint.map(|u| (u, opts.nodes)),
            slots: Vec::with_capacity(opts.nodes),
            blocked: BTreeSet::new(),
        };
        // If a spawn fails, dropping `cluster` kills the nodes already started.
        for (i, (listen, proxy)) in listens.into_iter().zip(proxies).enumerate() {
            let node = cluster.spawn_node(i, listen, &proxy, &advertised)?;
            cluster.slots.push(Slot {
                node,
                proxy,
                removed: false,
            });
        }
        Ok(cluster)
    }

    /// Spawns node `i` listening on `listen` behind `proxy`; `members` is the member list for
    /// `--members` (ignored with a members file).
    fn spawn_node(
        &self,
        i: usize,
        listen: SocketAddr,
        proxy: &LinkProxy,
        members: &[String],
    ) -> Result<NodeProcess> {
        let membership = match (&self.endpoint, &self.members_file) {
            (Some((url, expect)), _) => Membership::Endpoint(url.clone(), *expect),
            (None, Some(path)) => Membership::File(path.clone()),
            (None, None) => Membership::List(members.to_vec()),
        };
        let args = member_args(
            &proxy.addr().to_string(),
            &self.secret,
            &membership,
            &self.args,
        );
        let dir = self.root.join(format!("node-{}", i + 1));
        NodeProcess::start_member(&self.bin, &dir, listen, args, self.env.clone())
            .with_context(|| format!("starting cluster node {i}"))
    }

    /// Waits until every node that should be up (not removed, not killed by
    /// [`TestCluster::kill9`]) answers `"status":"UP"`, within `timeout` overall. A node that
    /// exited by itself is an error. Errors carry every node's log tail.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        for i in 0..self.slots.len() {
            let slot = &mut self.slots[i];
            if slot.removed || slot.node.is_killed() {
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if let Err(e) = slot.node.wait_ready(left) {
                bail!("cluster node {i} not ready: {e:#}\n{}", self.log_tails());
            }
        }
        Ok(())
    }

    /// Waits until every member's ownership ring holds every member (a node learns that a
    /// peer is ready one probe after the peer is), within `timeout`.
    pub fn wait_rings_complete(&self, timeout: Duration) -> Result<()> {
        let members = self.member_indices();
        let n = members.len();
        for i in members {
            let addr = self.node(i).addr();
            crate::wait_until(timeout, Duration::from_millis(50), || {
                let (_, body) =
                    crate::http_get(addr, "/nacre/v1/cluster", Duration::from_secs(2)).ok()?;
                let v: serde_json::Value = serde_json::from_str(&body).ok()?;
                (v["ring"].as_array()?.len() == n).then_some(())
            })
            .map_err(|e| {
                anyhow::anyhow!("ring of node {i} incomplete: {e}\n{}", self.log_tails())
            })?;
        }
        Ok(())
    }

    /// Number of node indices allocated so far, removed nodes included.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Always false: a cluster has at least one node (provided for clippy's `len` convention).
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Node `i`. Panics if `i >= len()`, like slice indexing.
    pub fn node(&self, i: usize) -> &NodeProcess {
        &self.slots[i].node
    }

    /// Node `i`, mutably (for `wait_ready`, `is_running`, ...). Panics if `i >= len()`.
    pub fn node_mut(&mut self, i: usize) -> &mut NodeProcess {
        &mut self.slots[i].node
    }

    /// The proxy in front of node `i`. Panics if `i >= len()`.
    pub fn proxy(&self, i: usize) -> &LinkProxy {
        &self.slots[i].proxy
    }

    /// The address node `i` advertises to its peers (its proxy), as `127.0.0.1:<port>`.
    /// Panics if `i >= len()`.
    pub fn advertised(&self, i: usize) -> String {
        self.slots[i].proxy.addr().to_string()
    }

    /// Advertised addresses of the current members (every node not removed, killed ones
    /// included), in index order — what `cluster.conf` lists.
    pub fn members(&self) -> Vec<String> {
        self.member_indices()
            .into_iter()
            .map(|i| self.advertised(i))
            .collect()
    }

    /// Indices of the current members (not removed), ascending.
    pub fn member_indices(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|&i| !self.slots[i].removed)
            .collect()
    }

    /// Whether node `i` was removed by [`TestCluster::remove_node`]. Panics if `i >= len()`.
    pub fn is_removed(&self, i: usize) -> bool {
        self.slots[i].removed
    }

    /// Sum of a metric (every series whose line starts with `name`) over the live members.
    pub async fn metric_sum(&self, name: &str) -> f64 {
        let mut sum = 0.0;
        for i in self.member_indices() {
            if !self.node(i).is_killed() {
                sum += crate::http::Api::new(self.node(i).addr())
                    .metric(name)
                    .await;
            }
        }
        sum
    }

    /// The cluster secret every node was started with (for calling internal endpoints).
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// The directory holding the nodes' data dirs (and `cluster.conf`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// SIGKILLs node `i` (it stays a member; [`TestCluster::restart`] brings it back).
    pub fn kill9(&mut self, i: usize) -> Result<()> {
        self.slot_mut(i)?.node.kill9()
    }

    /// Freezes node `i` with SIGSTOP: it holds its sockets but answers nothing, as in a long
    /// GC pause or a VM freeze. [`TestCluster::resume`] thaws it.
    pub fn pause(&mut self, i: usize) -> Result<()> {
        self.slot_mut(i)?.node.pause()
    }

    /// Thaws node `i` (SIGCONT) after [`TestCluster::pause`].
    pub fn resume(&mut self, i: usize) -> Result<()> {
        self.slot_mut(i)?.node.resume()
    }

    /// Kills node `i` if running and starts it again with the same port, arguments,
    /// environment and data dir (with a members file it reads the file's current content).
    /// Partitions set with [`TestCluster::partition`] are re-applied to the new process.
    /// Does not wait for readiness.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        let slot = self.slot_mut(i)?;
        if slot.removed {
            bail!("cluster node {i} was removed; it cannot be restarted");
        }
        slot.node.restart()?;
        self.apply_blocks()
    }

    /// Replaces node `i` as Kubernetes replaces a StatefulSet pod: stops it (SIGTERM, waiting
    /// up to `stop_timeout`), then starts it with the same data and arguments on a new listen
    /// port, with its proxy (the name it advertises, its "DNS name") pointed at the new port.
    /// The node keeps its advertised name; its address behind the name changes. Partitions are
    /// re-applied. Does not wait for readiness.
    pub fn replace_node(&mut self, i: usize, stop_timeout: Duration) -> Result<()> {
        let slot = self.slot_mut(i)?;
        if slot.removed {
            bail!("cluster node {i} was removed; it cannot be replaced");
        }
        slot.node
            .terminate(stop_timeout)
            .with_context(|| format!("stopping cluster node {i}"))?;
        let held = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
        let listen = held.local_addr()?;
        drop(held);
        slot.proxy.retarget(listen)?;
        slot.node.restart_at(listen)?;
        self.apply_blocks()
    }

    /// Kills node `i` and deletes its data (its log file is kept), then starts it again at the
    /// same address: a machine whose disk was replaced. Does not wait for readiness.
    pub fn wipe_and_restart(&mut self, i: usize) -> Result<()> {
        let slot = self.slot_mut(i)?;
        if slot.removed {
            bail!("cluster node {i} was removed; it cannot be restarted");
        }
        slot.node.kill9()?;
        let dir = slot.node.data_dir().to_path_buf();
        let log = slot.node.log_path();
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let path = entry?.path();
            if path == log {
                continue;
            }
            if path.is_dir() {
                std::fs::remove_dir_all(&path)?;
            } else {
                std::fs::remove_file(&path)?;
            }
        }
        self.restart(i)
    }

    /// Starts a new, empty node (new index, data dir, port and proxy) and returns its index.
    /// With a members file, the new member is written to `cluster.conf` first, so running
    /// nodes learn about it and the new node starts with the full list. Without one, only the
    /// new node knows the full list (it gets `--members` with every current member and
    /// itself); existing nodes never learn about it. Does not wait for readiness.
    pub fn add_node(&mut self) -> Result<usize> {
        let i = self.slots.len();
        let held = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
        let listen = held.local_addr()?;
        let proxy = LinkProxy::start(listen)?;
        drop(held);
        let mut members = self.members();
        members.push(proxy.addr().to_string());
        if let Some(path) = &self.members_file {
            write_cluster_conf(path, &members)?;
        }
        let node = self.spawn_node(i, listen, &proxy, &members)?;
        self.slots.push(Slot {
            node,
            proxy,
            removed: false,
        });
        self.apply_blocks()?;
        Ok(i)
    }

    /// Removes node `i` from the membership and kills it (SIGKILL). With a members file,
    /// `cluster.conf` is rewritten without it first, so the others see a membership change
    /// rather than a crash; without one the others keep listing it (and see it as down). The
    /// index stays allocated and is reported by [`TestCluster::is_removed`].
    pub fn remove_node(&mut self, i: usize) -> Result<()> {
        if self.slot_mut(i)?.removed {
            bail!("cluster node {i} was already removed");
        }
        if let Some(path) = &self.members_file {
            let rest: Vec<String> = self
                .member_indices()
                .into_iter()
                .filter(|&j| j != i)
                .map(|j| self.advertised(j))
                .collect();
            write_cluster_conf(path, &rest)?;
        }
        let slot = self.slot_mut(i)?;
        slot.removed = true;
        slot.node.kill9()
    }

    /// The shared `cluster.conf`, if the cluster was started with one.
    pub fn members_file(&self) -> Option<&Path> {
        self.members_file.as_deref()
    }

    /// Separates node `i` from every other node in both directions (see
    /// [`TestCluster::partition`]). Test clients still reach it directly.
    pub fn isolate(&mut self, i: usize) -> Result<()> {
        self.slot_mut(i)?;
        let rest: Vec<usize> = (0..self.slots.len()).filter(|&j| j != i).collect();
        self.partition(&[vec![i], rest])
    }

    /// Splits the nodes into `groups` that cannot open connections to each other, in either
    /// direction; open connections across groups are closed. Nodes within a group, and nodes
    /// in no group, are unaffected; replaces any earlier partition. Works by process id (each
    /// node's proxy refuses connections opened by the other groups' node processes), so Linux
    /// only; kept across [`TestCluster::restart`] and applied to nodes added later only if
    /// they are named here. [`LinkProxy::cut`] is independent of this.
    pub fn partition(&mut self, groups: &[Vec<usize>]) -> Result<()> {
        let mut group_of = HashMap::new();
        for (g, members) in groups.iter().enumerate() {
            for &i in members {
                self.slot_mut(i)?;
                if group_of.insert(i, g).is_some_and(|prev| prev != g) {
                    bail!("cluster node {i} is in more than one partition group");
                }
            }
        }
        self.blocked = group_of
            .iter()
            .flat_map(|(&a, &ga)| {
                group_of
                    .iter()
                    .filter(move |&(_, &gb)| gb != ga)
                    .map(move |(&b, _)| (a, b))
            })
            .collect();
        self.apply_blocks()
    }

    /// Undoes [`TestCluster::partition`] / [`TestCluster::isolate`] and heals every cut
    /// proxy. Delays set with [`LinkProxy::set_delay`] stay.
    pub fn heal(&mut self) -> Result<()> {
        self.blocked.clear();
        for slot in &self.slots {
            slot.proxy.heal();
        }
        self.apply_blocks()
    }

    /// Pushes `self.blocked` to the proxies with the nodes' current pids.
    fn apply_blocks(&self) -> Result<()> {
        for (to, slot) in self.slots.iter().enumerate() {
            let pids: Vec<u32> = self
                .blocked
                .iter()
                .filter(|&&(_, t)| t == to)
                .filter_map(|&(from, _)| self.slots.get(from).and_then(|s| s.node.pid()))
                .collect();
            slot.proxy
                .set_blocked_sources(&pids)
                .with_context(|| format!("blocking peers at node {to}'s proxy"))?;
        }
        Ok(())
    }

    /// Every node's log tail, labelled with its index, addresses and state, for assertion
    /// messages.
    pub fn log_tails(&self) -> String {
        let mut out = String::new();
        for (i, slot) in self.slots.iter().enumerate() {
            let state = if slot.removed {
                "removed"
            } else if slot.node.is_killed() {
                "killed"
            } else {
                "started"
            };
            let _ = writeln!(
                out,
                "===== node {i} ({state}; listen {}, advertised {}, data {}) =====",
                slot.node.addr(),
                slot.proxy.addr(),
                slot.node.data_dir().display()
            );
            out.push_str(&slot.node.log_tail(LOG_TAIL_BYTES));
            if !out.ends_with('\n') {
                out.push('\n');
            }
        }
        out
    }

    fn slot_mut(&mut self, i: usize) -> Result<&mut Slot> {
        let len = self.slots.len();
        self.slots
            .get_mut(i)
            .with_context(|| format!("no cluster node {i} (cluster has {len})"))
    }
}

/// How a node learns the member list.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Membership {
    /// `--members a,b,c`.
    List(Vec<String>),
    /// `--members-file PATH`.
    File(PathBuf),
    /// `--members-endpoint URL --bootstrap-expect N`.
    Endpoint(String, usize),
}

/// The cluster flags for one node (`--listen`/`--data` are added by [`NodeProcess`]).
fn member_args(
    advertise: &str,
    secret: &str,
    membership: &Membership,
    extra: &[String],
) -> Vec<String> {
    let mut args = vec![
        "--advertise".to_string(),
        advertise.to_string(),
        "--cluster-secret".to_string(),
        secret.to_string(),
    ];
    match membership {
        Membership::List(members) => {
            args.push("--members".to_string());
            args.push(members.join(","));
        }
        Membership::File(path) => {
            args.push("--members-file".to_string());
            args.push(path.display().to_string());
        }
        Membership::Endpoint(url, expect) => {
            args.push("--members-endpoint".to_string());
            args.push(url.clone());
            args.push("--bootstrap-expect".to_string());
            args.push(expect.to_string());
        }
    }
    args.extend(extra.iter().cloned());
    args
}

/// `cluster.conf` content: one `host:port` per line, nothing else (the plainest form of the
/// Nacos format, so any parser of it accepts it).
pub fn render_cluster_conf(members: &[String]) -> String {
    members.iter().map(|m| format!("{m}\n")).collect()
}

/// Member addresses in `cluster.conf` text: trimmed lines, skipping blanks and `#` comments.
pub fn parse_cluster_conf(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Replaces `path` with `members` atomically (write a sibling temp file, fsync, rename), so a
/// node re-reading the file never sees it half-written.
pub fn write_cluster_conf(path: &Path, members: &[String]) -> Result<()> {
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    let mut tmp_name = name.to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    {
        use std::io::Write;
        let mut f =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(render_cluster_conf(members).as_bytes())
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.sync_all()
            .with_context(|| format!("syncing {}", tmp.display()))?;
    }
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// `len` random lowercase hex characters, from std's randomly keyed hasher (no `rand`
/// dependency; it only has to differ between clusters, not resist attack).
fn random_hex(len: usize) -> String {
    let mut out = String::with_capacity(len + 16);
    let mut counter = 0u64;
    while out.len() < len {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(counter);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        h.write_u32(std::process::id());
        let _ = write!(out, "{:016x}", h.finish());
        counter += 1;
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_conf_round_trips_and_rewrites_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.conf");
        let members = vec!["127.0.0.1:1001".to_string(), "127.0.0.1:1002".to_string()];
        write_cluster_conf(&path, &members).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "127.0.0.1:1001\n127.0.0.1:1002\n");
        assert_eq!(parse_cluster_conf(&text), members);

        write_cluster_conf(&path, &members[1..]).unwrap();
        assert_eq!(
            parse_cluster_conf(&std::fs::read_to_string(&path).unwrap()),
            vec!["127.0.0.1:1002".to_string()]
        );
        // No temp file left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("cluster.conf")]);
    }

    #[test]
    fn cluster_conf_parsing_skips_comments_and_blanks() {
        let text = "# nodes\n\n 10.0.0.1:8848 \n10.0.0.2:8848 # second\n#10.0.0.3:8848\n";
        assert_eq!(
            parse_cluster_conf(text),
            vec!["10.0.0.1:8848".to_string(), "10.0.0.2:8848".to_string()]
        );
    }

    #[test]
    fn member_args_name_the_cluster_flags() {
        let list = Membership::List(vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()]);
        let extra = vec!["--config".to_string(), "x.toml".to_string()];
        assert_eq!(
            member_args("127.0.0.1:1", "s3cr3t", &list, &extra),
            [
                "--advertise",
                "127.0.0.1:1",
                "--cluster-secret",
                "s3cr3t",
                "--members",
                "127.0.0.1:1,127.0.0.1:2",
                "--config",
                "x.toml"
            ]
        );
        let file = Membership::File(PathBuf::from("/r/cluster.conf"));
        assert_eq!(
            member_args("127.0.0.1:2", "s", &file, &[]),
            [
                "--advertise",
                "127.0.0.1:2",
                "--cluster-secret",
                "s",
                "--members-file",
                "/r/cluster.conf"
            ]
        );
    }

    #[test]
    fn secrets_are_long_hex_and_differ() {
        let (a, b) = (random_hex(32), random_hex(32));
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    /// A stand-in for the nacre binary: records its arguments and environment in the log and
    /// then sleeps, so spawning, restarting and membership bookkeeping can be checked without
    /// a cluster-capable build.
    #[cfg(unix)]
    fn fake_nacre(dir: &Path) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("fake-nacre.sh");
        std::fs::write(
            &path,
            "#!/bin/sh\necho \"ARGS: $*\"\necho \"ENV: $NACRE_MEMBER_PROBE_INTERVAL_MS\"\nexec sleep 60\n",
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// The last line starting with `prefix` that node `i` logged (after waiting for one).
    #[cfg(unix)]
    fn logged(c: &TestCluster, i: usize, prefix: &str) -> String {
        crate::wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
            let log = c.node(i).log_tail(10_000);
            log.lines()
                .rev()
                .find(|l| l.starts_with(prefix))
                .map(str::to_string)
        })
        .unwrap()
    }

    /// The last `ARGS:` line node `i` logged.
    #[cfg(unix)]
    fn logged_args(c: &TestCluster, i: usize) -> String {
        logged(c, i, "ARGS: ")
    }

    #[cfg(unix)]
    #[test]
    fn spawns_members_with_proxied_advertise_and_a_members_list() {
        let dir = tempfile::tempdir().unwrap();
        let bin = fake_nacre(dir.path());
        let root = dir.path().join("cluster");
        let opts = ClusterOptions::new(3)
            .with_env("NACRE_MEMBER_PROBE_INTERVAL_MS", "200")
            .with_arg("--extra");
        let mut c = TestCluster::start(&bin, &root, opts).unwrap();
        assert_eq!(c.len(), 3);
        assert!(c.members_file().is_none());
        let members = c.members();
        assert_eq!(members.len(), 3);
        for i in 0..3 {
            assert_eq!(c.advertised(i), c.proxy(i).addr().to_string());
            assert_eq!(c.proxy(i).target(), c.node(i).addr());
            assert_ne!(c.node(i).addr(), c.proxy(i).addr());
            assert_eq!(c.node(i).data_dir(), root.join(format!("node-{}", i + 1)));
            let args = logged_args(&c, i);
            assert!(!args.contains("--standalone"), "{args}");
            assert!(
                args.contains(&format!("--listen {}", c.node(i).addr())),
                "{args}"
            );
            assert!(
                args.contains(&format!("--advertise {}", c.advertised(i))),
                "{args}"
            );
            assert!(
                args.contains(&format!("--cluster-secret {}", c.secret())),
                "{args}"
            );
            assert!(
                args.contains(&format!("--members {}", members.join(","))),
                "{args}"
            );
            assert!(args.ends_with("--extra"), "{args}");
            assert_eq!(logged(&c, i, "ENV: "), "ENV: 200");
        }

        // kill9 / restart keep the port and arguments.
        let addr = c.node(1).addr();
        c.kill9(1).unwrap();
        assert!(c.node(1).is_killed());
        assert!(c.log_tails().contains("node 1 (killed"));
        c.restart(1).unwrap();
        assert!(c.node_mut(1).is_running());
        assert_eq!(c.node(1).addr(), addr);

        // Without a members file only the new node knows everyone.
        let n = c.add_node().unwrap();
        assert_eq!(n, 3);
        let args = logged_args(&c, n);
        assert!(
            args.contains(&format!("--members {}", c.members().join(","))),
            "{args}"
        );
        c.remove_node(0).unwrap();
        assert!(c.is_removed(0));
        assert_eq!(c.member_indices(), vec![1, 2, 3]);
        assert!(c.restart(0).is_err());
        assert!(c.kill9(9).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn members_file_follows_add_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let bin = fake_nacre(dir.path());
        let root = dir.path().join("cluster");
        let mut c =
            TestCluster::start(&bin, &root, ClusterOptions::new(2).with_members_file()).unwrap();
        let path = c.members_file().unwrap().to_path_buf();
        assert_eq!(path, root.join("cluster.conf"));
        let read = || parse_cluster_conf(&std::fs::read_to_string(&path).unwrap());
        assert_eq!(read(), c.members());
        let args = logged_args(&c, 0);
        assert!(
            args.contains(&format!("--members-file {}", path.display())),
            "{args}"
        );

        let n = c.add_node().unwrap();
        assert_eq!(read(), c.members());
        assert_eq!(read().len(), 3);
        assert!(read().contains(&c.advertised(n)));

        c.remove_node(0).unwrap();
        assert_eq!(read(), vec![c.advertised(1), c.advertised(2)]);
        assert!(c.node(0).is_killed());
        assert!(c.remove_node(0).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn wait_ready_reports_every_log_tail() {
        let dir = tempfile::tempdir().unwrap();
        // Exits at once: never ready.
        let bin = dir.path().join("dead-nacre.sh");
        std::fs::write(&bin, "#!/bin/sh\necho \"dying: $*\"\nexit 3\n").unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let mut c = TestCluster::start(&bin, dir.path(), ClusterOptions::new(2)).unwrap();
        let e = c
            .wait_ready(Duration::from_secs(5))
            .unwrap_err()
            .to_string();
        assert!(e.contains("node 0 ("), "{e}");
        assert!(e.contains("node 1 ("), "{e}");
        assert!(e.contains("dying:"), "{e}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn partition_blocks_by_pid_and_follows_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let bin = fake_nacre(dir.path());
        let mut c = TestCluster::start(&bin, dir.path(), ClusterOptions::new(3)).unwrap();
        let pid = |c: &TestCluster, i: usize| c.node(i).pid().unwrap();

        c.isolate(0).unwrap();
        assert_eq!(c.proxy(1).blocked_sources(), vec![pid(&c, 0)]);
        assert_eq!(c.proxy(2).blocked_sources(), vec![pid(&c, 0)]);
        let mut expect = vec![pid(&c, 1), pid(&c, 2)];
        expect.sort_unstable();
        assert_eq!(c.proxy(0).blocked_sources(), expect);

        c.restart(0).unwrap();
        assert_eq!(c.proxy(1).blocked_sources(), vec![pid(&c, 0)]);

        assert!(c.partition(&[vec![0, 1], vec![1]]).is_err());
        c.heal().unwrap();
        for i in 0..3 {
            assert!(c.proxy(i).blocked_sources().is_empty());
        }
    }
}
