//! The `nacre` binary: parses flags, sets up logging, binds listeners and hands over to the
//! tier crates. Nothing else lives here.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use nacre_config::{GatewaySettings, RegistrySettings};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

// The request path allocates many small, short-lived buffers (parameters, keys, JSON); glibc's
// malloc/free/consolidate took ~13 % of a register-heavy profile. `no_thp` (Cargo.toml) keeps
// transparent huge pages from inflating RSS in 2 MiB steps.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A Nacos 1.x compatible service registry.
#[derive(Debug, Parser)]
#[command(name = "nacre", version, about)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run nacre locally with zero configuration: a gateway on --listen in front of --nodes
    /// registry nodes on the next loopback ports, data under --data/node-K.
    Up {
        /// Address of the gateway, the one address clients use; node K listens K ports above.
        #[arg(long, default_value = "127.0.0.1:8848")]
        listen: SocketAddr,
        /// Data directory (one sub-directory per node, plus the shared cluster secret).
        #[arg(long, default_value = "./data")]
        data: PathBuf,
        /// Number of registry nodes (1 runs a standalone node).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=16))]
        nodes: u16,
        /// Gateway worker threads.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=256))]
        threads: u16,
    },
    /// Run one registry node.
    Registry(RegistryArgs),
    /// Run the gateway: one stateless address in front of the registry nodes.
    Gateway(GatewayArgs),
    /// Load-test a Nacos 1.x compatible registry (nacre, r-nacos, Java Nacos).
    Loadtest(nacre_loadtest::LoadtestArgs),
}

#[derive(Debug, Args)]
struct RegistryArgs {
    /// TOML settings file (flags and NACRE_* variables override it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Run as a single-node cluster.
    #[arg(long)]
    standalone: bool,
    /// HTTP listen address.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Address peers and clients use for this node (default: the listen address).
    #[arg(long)]
    advertise: Option<String>,
    /// Data directory (SQLite file, node id, generated cluster secret).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Shared secret for node-to-node traffic (required for a cluster; a standalone node
    /// generates one into its data dir).
    #[arg(long, env = "NACRE_CLUSTER_SECRET", hide_env_values = true)]
    cluster_secret: Option<String>,
    /// Cluster members, `host:port,host:port,…` (this node included).
    #[arg(long, group = "source")]
    members: Option<String>,
    /// A Nacos `cluster.conf` listing the members; re-read when it changes.
    #[arg(long, group = "source")]
    members_file: Option<PathBuf>,
    /// An address server URL (`http://host:port/nacos/serverlist`) answering the members.
    #[arg(long, group = "source")]
    members_endpoint: Option<String>,
    /// `NAME:PORT` of a DNS name (a Kubernetes headless Service) whose A records are the members.
    #[arg(long, group = "source")]
    members_dns: Option<String>,
    /// Members that must be known before a fresh cluster forms (needed with endpoint or DNS
    /// discovery; defaults to the size of a static list or file).
    #[arg(long)]
    bootstrap_expect: Option<usize>,
}

#[derive(Debug, Args)]
struct GatewayArgs {
    /// TOML settings file. `NACRE_GATEWAY_<KEY>` variables override it (any key of the file,
    /// in capitals), and flags override both.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Listen address.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Addresses `/nacos/serverlist` answers, `host:port,…` (default: the listen address).
    #[arg(long)]
    advertise: Option<String>,
    /// Worker threads of the proxy.
    #[arg(long)]
    threads: Option<usize>,
    /// The registry cluster's shared secret (probes and change feeds are internal calls).
    #[arg(long, env = "NACRE_CLUSTER_SECRET", hide_env_values = true)]
    cluster_secret: Option<String>,
    /// Registry nodes, `host:port,host:port,…`.
    #[arg(long, group = "upstream_source")]
    upstreams: Option<String>,
    /// An address server URL (`http://host:port/nacos/serverlist`) answering the nodes.
    #[arg(long, group = "upstream_source")]
    upstreams_endpoint: Option<String>,
    /// `NAME:PORT` of a DNS name whose A records are the nodes.
    #[arg(long, group = "upstream_source")]
    upstreams_dns: Option<String>,
}

fn gateway_settings(args: GatewayArgs) -> anyhow::Result<GatewaySettings> {
    let mut s = GatewaySettings::load(args.config.as_deref(), std::env::vars())?;
    if let Some(l) = args.listen {
        s.listen = l;
    }
    if let Some(a) = args.advertise {
        s.advertise = nacre_config::members::parse_members_flag(&a)?;
    }
    if let Some(t) = args.threads {
        s.threads = t;
    }
    if let Some(c) = args.cluster_secret {
        s.cluster_secret = Some(c);
    }
    // A source on the command line replaces the file's.
    if args.upstreams.is_some() || args.upstreams_endpoint.is_some() || args.upstreams_dns.is_some()
    {
        s.upstreams.clear();
        s.upstreams_endpoint = args.upstreams_endpoint;
        s.upstreams_dns = args.upstreams_dns;
        if let Some(u) = args.upstreams {
            s.upstreams = nacre_config::members::parse_members_flag(&u)?;
        }
    }
    s.validate()?;
    Ok(s)
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NACRE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Cancels `token` on SIGINT or SIGTERM; a second signal exits at once.
fn shutdown_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        wait_signal().await;
        tracing::info!("shutting down (send the signal again to exit at once)");
        token.cancel();
        wait_signal().await;
        tracing::warn!("second signal: exiting immediately");
        std::process::exit(130);
    });
}

async fn wait_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn run_registry(settings: RegistrySettings) -> anyhow::Result<()> {
    settings.validate()?;
    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let token = CancellationToken::new();
    shutdown_on_signals(token.clone());
    nacre_registry::run(listener, settings, token).await?;
    Ok(())
}

fn registry_settings(args: RegistryArgs) -> anyhow::Result<RegistrySettings> {
    let mut s = RegistrySettings::load(args.config.as_deref(), std::env::vars())?;
    if let Some(l) = args.listen {
        s.listen = l;
    }
    if let Some(a) = args.advertise {
        s.advertise = Some(a);
    }
    if let Some(d) = args.data {
        s.data_dir = d;
    }
    if let Some(c) = args.cluster_secret {
        s.cluster_secret = Some(c);
    }
    let c = &mut s.cluster;
    if let Some(m) = args.members {
        c.members = nacre_config::members::parse_members_flag(&m)?;
    }
    if let Some(f) = args.members_file {
        c.members_file = Some(f);
    }
    if let Some(u) = args.members_endpoint {
        c.members_endpoint = Some(u);
    }
    if let Some(d) = args.members_dns {
        c.members_dns = Some(d);
    }
    if let Some(n) = args.bootstrap_expect {
        c.bootstrap_expect = Some(n);
    }
    // A member source means a cluster unless --standalone says otherwise; without one the
    // settings file decides (standalone by default).
    if args.standalone {
        s.standalone = true;
    } else if s.cluster.source()?.is_some() {
        s.standalone = false;
    }
    Ok(s)
}

/// The secret shared by the nodes of `nacre up`, generated once into the data dir.
fn local_cluster_secret(data: &std::path::Path) -> anyhow::Result<String> {
    let path = data.join("cluster-secret");
    if let Ok(s) = std::fs::read_to_string(&path) {
        if s.trim().len() >= 16 {
            return Ok(s.trim().to_string());
        }
    }
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    let secret = format!(
        "{:016x}{:016x}",
        rand_u64(),
        rand_u64() ^ std::process::id() as u64
    );
    std::fs::write(&path, &secret).with_context(|| format!("writing {}", path.display()))?;
    Ok(secret)
}

/// 64 random bits from the OS-seeded hasher (no extra dependency for a local secret).
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

/// `nacre up`: `nodes` registry nodes in this process on the ports after `listen`, and the
/// gateway on `listen` (on a thread of its own: pingora runs its own runtimes).
async fn run_up(listen: SocketAddr, data: PathBuf, nodes: u16, threads: u16) -> anyhow::Result<()> {
    let base = RegistrySettings::load(None, std::env::vars())?;
    let secret = local_cluster_secret(&data)?;
    let addrs: Vec<SocketAddr> = (1..=nodes)
        .map(|k| {
            listen
                .port()
                .checked_add(k)
                .map(|p| SocketAddr::new(listen.ip(), p))
                .context("port range overflows")
        })
        .collect::<anyhow::Result<_>>()?;
    let gateway = GatewaySettings {
        listen,
        threads: usize::from(threads),
        cluster_secret: Some(secret.clone()),
        upstreams: addrs.iter().map(|a| a.to_string()).collect(),
        ..GatewaySettings::default()
    };
    gateway.validate()?;
    let token = CancellationToken::new();
    shutdown_on_signals(token.clone());
    let mut set = tokio::task::JoinSet::new();
    for (k, addr) in addrs.iter().enumerate() {
        let mut s = base.clone();
        s.listen = *addr;
        s.data_dir = data.join(format!("node-{}", k + 1));
        s.cluster_secret = Some(secret.clone());
        if nodes == 1 {
            s.standalone = true;
        } else {
            s.standalone = false;
            s.cluster.members = addrs.iter().map(|a| a.to_string()).collect();
        }
        s.validate()?;
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        println!(
            "nacre: node {} on http://{addr} (data in {})",
            k + 1,
            s.data_dir.display()
        );
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
    println!("nacre: gateway on http://{listen} (point clients here)");
    let gateway_stop = token.clone();
    set.spawn(async move {
        tokio::task::spawn_blocking(move || {
            nacre_gateway::run(gateway, nacre_gateway::Stop::Token(gateway_stop))
        })
        .await?
        .map_err(anyhow::Error::from)
    });
    let mut result = Ok(());
    while let Some(r) = set.join_next().await {
        // One part failing takes the local cluster down: a half-started cluster on fixed
        // ports would only confuse.
        let r = r.map_err(anyhow::Error::from).and_then(|r| r);
        if let Err(e) = r {
            token.cancel();
            if result.is_ok() {
                result = Err(e);
            }
        }
    }
    result
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    // pingora builds its own runtimes and must not be started inside one.
    if let Command::Gateway(args) = cli.command {
        nacre_gateway::run(gateway_settings(args)?, nacre_gateway::Stop::Signals)?;
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Up {
                listen,
                data,
                nodes,
                threads,
            } => run_up(listen, data, nodes, threads).await,
            Command::Registry(args) => run_registry(registry_settings(args)?).await,
            Command::Loadtest(args) => {
                nacre_loadtest::run(args).await?;
                Ok(())
            }
            Command::Gateway(_) => Err(anyhow::anyhow!(
                "the gateway runs outside the async runtime"
            )),
        }
    })
}
