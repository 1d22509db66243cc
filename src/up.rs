//! `nacre up`: a gateway in front of a local cluster, in one process, for people trying nacre.
//!
//! The terminal gets a short status (the address for clients, the nodes, where data and logs
//! are, when the cluster is ready, how to stop); the full logs go to daily files under
//! `<data>/logs` (`--verbose` also prints them).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use nacre_config::{GatewaySettings, Loaded, RegistrySettings};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What `nacre up` was asked for.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Address of the gateway, the one address clients use; node K listens K ports above.
    #[arg(long, default_value = "127.0.0.1:8848")]
    pub listen: SocketAddr,
    /// Data directory (one sub-directory per node, the shared cluster secret, and `logs/`).
    #[arg(long, default_value = "./data")]
    pub data: PathBuf,
    /// Number of registry nodes (1 runs a standalone node).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub nodes: u16,
    /// Gateway worker threads. One by default: the gateway shares the machine with the nodes'
    /// runtime, and on two cores a second gateway thread cost ~45 % more CPU per request in
    /// the fleet benchmark (`docs/benchmarks.md`) for the same latency.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: u16,
    /// Worker threads the nodes share. By default the cores the gateway's threads leave, at
    /// least one, so the process's busy threads match the machine: the nodes mostly serve the
    /// gateway's batches. On two cores one node worker used less CPU than two in 8 of 12
    /// alternating fleet pairs (median 5.5 % less) and bulk registration ran 3–10 % slower
    /// (`docs/benchmarks.md`, stop 31).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub node_threads: Option<u16>,
    /// Also print the full logs here (they always go to files under `<data>/logs`).
    #[arg(long)]
    pub verbose: bool,
}

impl UpArgs {
    /// The nodes' worker threads on a machine with `cores` (see `--node-threads`).
    pub fn node_threads(&self, cores: usize) -> usize {
        match self.node_threads {
            Some(n) => usize::from(n),
            None => cores.saturating_sub(usize::from(self.threads)).max(1),
        }
    }
}

/// How long to wait for the cluster before saying it is slow (and where to look).
const SLOW_START: Duration = Duration::from_secs(60);

/// The shared secret of the local nodes, generated once into the data dir (as a standalone
/// node does with its own), readable only by its owner.
fn local_cluster_secret(data: &Path) -> anyhow::Result<String> {
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    Ok(nacre_registry::load_or_create_secret(data)?)
}

/// The nodes' addresses: the `nodes` ports after the gateway's.
fn node_addrs(listen: SocketAddr, nodes: u16) -> anyhow::Result<Vec<SocketAddr>> {
    (1..=nodes)
        .map(|k| {
            listen
                .port()
                .checked_add(k)
                .map(|p| SocketAddr::new(listen.ip(), p))
                .context("the nodes' ports would pass 65535: pick a lower --listen port")
        })
        .collect()
}

/// Node `k`'s settings: the environment's, on its own port and data dir, in the local cluster.
fn node_settings(
    base: &RegistrySettings,
    addrs: &[SocketAddr],
    k: usize,
    data: &Path,
    secret: &str,
) -> anyhow::Result<RegistrySettings> {
    let mut s = base.clone();
    s.listen = addrs[k];
    s.data_dir = data.join(format!("node-{}", k + 1));
    s.cluster_secret = Some(secret.to_string());
    s.standalone = addrs.len() == 1;
    if !s.standalone {
        s.cluster.members = addrs.iter().map(|a| a.to_string()).collect();
    }
    s.validate()?;
    Ok(s)
}

/// The status printed at start: everything a newcomer needs, nothing else.
fn print_status(args: &UpArgs, addrs: &[SocketAddr], logs: &Path, unknown_env: &[String]) {
    let gw = args.listen;
    let nodes: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    println!(
        "nacre {} — a gateway in front of {}",
        env!("CARGO_PKG_VERSION"),
        if addrs.len() == 1 {
            "one standalone node".to_string()
        } else {
            format!("a {}-node cluster", addrs.len())
        }
    );
    println!("  clients:  {gw}   (the server address for Nacos 1.x clients; endpoint http://{gw}/nacos/serverlist)");
    println!("  nodes:    {}", nodes.join("  "));
    println!(
        "  cluster:  http://{}/nacre/v1/cluster   (leader, members, ownership ring)",
        addrs[0]
    );
    println!("  console:  http://{gw}/nacos/");
    println!("  metrics:  http://{gw}/metrics (gateway), http://<node>/metrics (each node)");
    println!("  data:     {}", args.data.display());
    println!(
        "  logs:     {}{}",
        logs.display(),
        if args.verbose {
            ""
        } else {
            "   (--verbose prints them here)"
        }
    );
    println!("  stop:     Ctrl-C");
    for var in unknown_env {
        println!("  warning:  ignoring unknown environment variable {var}: no setting reads it");
    }
}

/// Prints one line when the gateway routes to every node with their change feeds followed (or
/// one saying where to look if that takes long).
async fn report_ready(gateway: SocketAddr, nodes: usize, logs: PathBuf, stop: CancellationToken) {
    let started = Instant::now();
    let Ok(client) = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
    else {
        return;
    };
    let url = format!("http://{gateway}/nacre/gateway/ready");
    let want = format!("\"nodes\":{nodes},");
    let mut warned = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        let ready = match client.get(&url).send().await {
            Ok(r) if r.status().is_success() => r
                .text()
                .await
                .is_ok_and(|b| b.contains(&want) && b.contains("\"feedsFollowed\":true")),
            _ => false,
        };
        if ready {
            println!(
                "nacre: ready in {:.1} s — clients can use {gateway}",
                started.elapsed().as_secs_f64()
            );
            return;
        }
        if !warned && started.elapsed() > SLOW_START {
            warned = true;
            println!(
                "nacre: not ready after {} s; the log says why: {}",
                SLOW_START.as_secs(),
                logs.display()
            );
        }
    }
}

/// Runs the local cluster and its gateway until Ctrl-C (or until one part fails, which stops
/// the rest: a half-started cluster on fixed ports would only confuse).
pub async fn run(args: UpArgs, logs: PathBuf) -> anyhow::Result<()> {
    let Loaded {
        settings: base,
        mut unknown_env,
    } = RegistrySettings::load(None, std::env::vars())?;
    // The gateway's tuning comes from its own `NACRE_GATEWAY_*` variables, as `nacre gateway`
    // reads them; where it listens and which nodes it fronts are `nacre up`'s.
    let Loaded {
        settings: gateway_base,
        unknown_env: unknown_gateway_env,
    } = GatewaySettings::load(None, std::env::vars())?;
    unknown_env.extend(unknown_gateway_env);
    let addrs = node_addrs(args.listen, args.nodes)?;
    let secret = local_cluster_secret(&args.data)?;
    let gateway = GatewaySettings {
        listen: args.listen,
        threads: usize::from(args.threads),
        cluster_secret: Some(secret.clone()),
        upstreams: addrs.iter().map(|a| a.to_string()).collect(),
        upstreams_endpoint: None,
        upstreams_dns: None,
        ..gateway_base
    };
    gateway.validate()?;
    let token = CancellationToken::new();
    crate::shutdown_on_signals(token.clone(), true);
    let mut set = tokio::task::JoinSet::new();
    for k in 0..addrs.len() {
        let s = node_settings(&base, &addrs, k, &args.data, &secret)?;
        let addr = addrs[k];
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (node {})", k + 1))?;
        let span = tracing::info_span!("node", addr = %addr);
        let t = token.clone();
        set.spawn(tracing::Instrument::instrument(
            async move {
                nacre_registry::run(listener, s, t)
                    .await
                    .map_err(anyhow::Error::from)
            },
            span,
        ));
    }
    let gateway_stop = token.clone();
    set.spawn(async move {
        tokio::task::spawn_blocking(move || {
            nacre_gateway::run(gateway, nacre_gateway::Stop::Token(gateway_stop))
        })
        .await?
        .map_err(anyhow::Error::from)
    });
    print_status(&args, &addrs, &logs, &unknown_env);
    let ready_stop = token.clone();
    set.spawn(async move {
        report_ready(args.listen, addrs.len(), logs, ready_stop.clone()).await;
        ready_stop.cancelled().await;
        Ok(())
    });
    let mut result = Ok(());
    while let Some(r) = set.join_next().await {
        let r = r.map_err(anyhow::Error::from).and_then(|r| r);
        if let Err(e) = r {
            token.cancel();
            if result.is_ok() {
                result = Err(e);
            }
        }
    }
    if result.is_ok() {
        println!("nacre: stopped");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(threads: u16, node_threads: Option<u16>) -> UpArgs {
        UpArgs {
            listen: "127.0.0.1:8848".parse().unwrap(),
            data: PathBuf::from("./data"),
            nodes: 3,
            threads,
            node_threads,
            verbose: false,
        }
    }

    #[test]
    fn the_nodes_get_the_cores_the_gateway_leaves_and_at_least_one() {
        assert_eq!(args(1, None).node_threads(2), 1);
        assert_eq!(args(1, None).node_threads(8), 7);
        assert_eq!(args(2, None).node_threads(8), 6);
        assert_eq!(args(2, None).node_threads(2), 1, "never none");
        assert_eq!(args(4, None).node_threads(1), 1);
        assert_eq!(args(1, Some(3)).node_threads(2), 3, "as asked");
    }
}
