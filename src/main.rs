//! The `nacre` binary: parses flags, sets up logging, and hands over to the tier crates. A
//! failure is printed as one message and a hint, never a backtrace: a mistake in a flag or a
//! setting is the user's to fix, not a crash to debug.

mod address_server;
mod logging;
mod settings;
mod up;

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use nacre_config::{ConfigError, RegistrySettings};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use logging::LogFormat;

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

#[derive(Debug, Subcommand)]
enum Command {
    /// Run nacre locally with zero configuration: a gateway on --listen in front of --nodes
    /// registry nodes on the next loopback ports, data and logs under --data.
    Up(up::UpArgs),
    /// Run one registry node.
    Registry(settings::RegistryArgs),
    /// Run the gateway: one stateless address in front of the registry nodes.
    Gateway(settings::GatewayArgs),
    /// Load-test a Nacos 1.x compatible registry (nacre, r-nacos, Java Nacos).
    Loadtest(nacre_loadtest::LoadtestArgs),
    /// Serve a members file as an address-server endpoint (/nacos/serverlist) that nodes and
    /// gateways follow, holding their reads until the list changes.
    AddressServer(address_server::AddressServerArgs),
}

/// Cancels `token` on SIGINT or SIGTERM; a second signal exits at once. `tell` also says so
/// on the terminal (`nacre up`, whose logs go to files).
fn shutdown_on_signals(token: CancellationToken, tell: bool) {
    tokio::spawn(async move {
        wait_signal().await;
        tracing::info!("shutting down (send the signal again to exit at once)");
        if tell {
            println!("nacre: stopping (Ctrl-C again to exit at once)");
        }
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
    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let token = CancellationToken::new();
    shutdown_on_signals(token.clone(), false);
    nacre_registry::run(listener, settings, token).await?;
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    runtime_of(tokio::runtime::Builder::new_multi_thread())
}

fn runtime_of(mut builder: tokio::runtime::Builder) -> anyhow::Result<tokio::runtime::Runtime> {
    builder
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Runs the chosen command to its end.
fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Up(args) => {
            // Logs go to files before anything can log; the guard flushes them at exit.
            let logs = logging::to_files(cli.log_format, &args.data.join("logs"), args.verbose)
                .with_context(|| format!("cannot write logs under {}", args.data.display()))?;
            let current = logs.current.clone();
            let cores = std::thread::available_parallelism().map_or(1, usize::from);
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(args.node_threads(cores));
            runtime_of(builder)?.block_on(up::run(args, current))
        }
        Command::Registry(args) => {
            logging::to_stderr(cli.log_format);
            let loaded = settings::registry(args)?;
            settings::warn_unknown_env(&loaded.unknown_env);
            runtime()?.block_on(run_registry(loaded.settings))
        }
        Command::Gateway(args) => {
            logging::to_stderr(cli.log_format);
            let loaded = settings::gateway(args)?;
            settings::warn_unknown_env(&loaded.unknown_env);
            // pingora builds its own runtimes and must not be started inside one.
            nacre_gateway::run(loaded.settings, nacre_gateway::Stop::Signals)?;
            Ok(())
        }
        Command::AddressServer(args) => {
            logging::to_stderr(cli.log_format);
            runtime()?.block_on(async {
                let token = CancellationToken::new();
                shutdown_on_signals(token.clone(), false);
                address_server::run(args, token).await
            })
        }
        Command::Loadtest(args) => {
            logging::to_stderr(cli.log_format);
            runtime()?.block_on(nacre_loadtest::run(args))?;
            Ok(())
        }
    }
}

/// The configuration error somewhere in `e`'s chain, also when a tier wrapped it.
fn config_error(e: &anyhow::Error) -> Option<&ConfigError> {
    e.chain().find_map(|c| {
        c.downcast_ref::<ConfigError>()
            .or_else(|| match c.downcast_ref::<nacre_registry::ServeError>() {
                Some(nacre_registry::ServeError::Config(ce)) => Some(ce),
                _ => None,
            })
            .or_else(|| match c.downcast_ref::<nacre_gateway::GatewayError>() {
                Some(nacre_gateway::GatewayError::Config(ce)) => Some(ce),
                _ => None,
            })
    })
}

/// What to do about `e`, when there is something to say beyond its message.
fn hint(e: &anyhow::Error) -> Option<&'static str> {
    if let Some(ce) = config_error(e) {
        return Some(match ce {
            ConfigError::Read { .. } => "check the path given to --config",
            ConfigError::Parse { .. } => {
                "fix or remove the key named above; README.md lists every setting"
            }
            ConfigError::Invalid { .. } => {
                "fix the value named above (a flag, a NACRE_* variable or the --config file); `nacre <command> --help` lists the flags"
            }
        });
    }
    let io = e.chain().find_map(|c| c.downcast_ref::<std::io::Error>())?;
    match io.kind() {
        std::io::ErrorKind::AddrInUse => {
            Some("another process is listening there: stop it, or choose another address with --listen")
        }
        std::io::ErrorKind::AddrNotAvailable => {
            Some("that address is not one of this machine's: use 127.0.0.1, 0.0.0.0 or a local interface's address")
        }
        std::io::ErrorKind::PermissionDenied => {
            Some("this user may not use that port or path: choose a port above 1023, or a directory you own (--data)")
        }
        _ => None,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the cause chain on one line and never a backtrace, whatever
            // RUST_BACKTRACE says.
            eprintln!("nacre: error: {e:#}");
            if let Some(h) = hint(&e) {
                eprintln!("hint: {h}");
            }
            // 2 for a usage or settings mistake, as clap's own usage errors; 1 otherwise.
            ExitCode::from(if config_error(&e).is_some() { 2 } else { 1 })
        }
    }
}
