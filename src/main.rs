//! The `nacre` binary: parses flags, sets up logging, binds listeners and hands over to the
//! tier crates. Nothing else lives here.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use nacre_config::RegistrySettings;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

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
    /// Run nacre locally with zero configuration: a registry on --listen, data under --data.
    Up {
        /// Address clients use.
        #[arg(long, default_value = "127.0.0.1:8848")]
        listen: SocketAddr,
        /// Data directory.
        #[arg(long, default_value = "./data")]
        data: PathBuf,
    },
    /// Run one registry node.
    Registry(RegistryArgs),
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
    /// Shared secret for node-to-node traffic (default: generated into the data dir).
    #[arg(long, env = "NACRE_CLUSTER_SECRET", hide_env_values = true)]
    cluster_secret: Option<String>,
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
    if !args.standalone {
        anyhow::bail!(
            "only --standalone nodes are supported in this version; clustering is not built yet"
        );
    }
    s.standalone = true;
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
    Ok(s)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Up { listen, data } => {
            let mut s = RegistrySettings::load(None, std::env::vars())?;
            s.listen = listen;
            s.data_dir = data;
            s.standalone = true;
            println!(
                "nacre: registry node on http://{listen} (data in {})",
                s.data_dir.display()
            );
            run_registry(s).await
        }
        Command::Registry(args) => run_registry(registry_settings(args)?).await,
    }
}
