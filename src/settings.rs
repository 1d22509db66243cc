//! The `registry` and `gateway` flags, and how they go over the file and environment settings
//! (`nacre-config` loads those; a flag given here wins).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use nacre_config::{GatewaySettings, Loaded, RegistrySettings};

#[derive(Debug, Args)]
pub struct RegistryArgs {
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
pub struct GatewayArgs {
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

/// The gateway's settings: file, then `NACRE_GATEWAY_*`, then flags; validated.
pub fn gateway(args: GatewayArgs) -> anyhow::Result<Loaded<GatewaySettings>> {
    let mut loaded = GatewaySettings::load(args.config.as_deref(), std::env::vars())?;
    let s = &mut loaded.settings;
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
    Ok(loaded)
}

/// A node's settings: file, then `NACRE_*`, then flags; validated.
pub fn registry(args: RegistryArgs) -> anyhow::Result<Loaded<RegistrySettings>> {
    let mut loaded = RegistrySettings::load(args.config.as_deref(), std::env::vars())?;
    let s = &mut loaded.settings;
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
    s.validate()?;
    Ok(loaded)
}

/// Logs one warning per unknown variable (the server commands; `nacre up` prints them).
pub fn warn_unknown_env(unknown: &[String]) {
    for var in unknown {
        tracing::warn!(variable = %var, "ignoring unknown environment variable {var}: no setting reads it");
    }
}
