//! Member discovery: where a registry node (or a gateway) learns the addresses of the cluster's
//! members, and how it follows them while running.
//!
//! Four sources exist ([`MemberSource`]): a static list (`--members`), a Nacos `cluster.conf`
//! file, an address server (`GET /nacos/serverlist`, as Nacos's "endpoint" mode) and the DNS
//! name of a Kubernetes headless Service. The parsers here are pure; [`Discovery`] runs one task
//! that re-reads the source every interval and publishes the member list on a
//! [`tokio::sync::watch`] channel.
//!
//! Every list is normalised (`host:port`, IPv6 as `[ip]:port`, port 8848 when none is written),
//! sorted as strings and deduplicated, so two nodes reading the same source agree on the list
//! byte for byte. A source that fails or answers nothing usable never empties the list: the last
//! good list stays until the source gives a new good one, because "every member left" is far
//! less likely than a half-written file or a restarting address server.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::{invalid, ConfigError};

/// Port assumed when an address names only a host (Nacos's default server port).
pub const DEFAULT_PORT: u16 = 8848;

/// A file whose size and modification time look unchanged is still re-read after this many
/// polls: a same-length rewrite within the file system's timestamp granularity is otherwise
/// invisible.
const FORCED_REREAD_EVERY: u32 = 10;

/// An address server's list is a few lines; anything this large is not one.
const MAX_BODY_BYTES: usize = 1 << 20;

/// Longest DNS name (RFC 1035, without the trailing dot).
const MAX_HOST_LEN: usize = 253;

/// A host (IPv6 already unbracketed and in canonical form) and the port, if one was written.
struct HostPort {
    host: String,
    v6: bool,
    port: Option<u16>,
}

impl HostPort {
    fn render(&self) -> String {
        let port = self.port.unwrap_or(DEFAULT_PORT);
        if self.v6 {
            format!("[{}]:{port}", self.host)
        } else {
            format!("{}:{port}", self.host)
        }
    }
}

fn parse_port(p: &str) -> Result<u16, String> {
    if p.is_empty() {
        return Err("missing port after ':'".to_string());
    }
    // `u16::from_str` would also take "+80"; a port is digits only.
    if !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("port {p:?} is not a number"));
    }
    match p.parse::<u32>() {
        Ok(n @ 1..=65535) => u16::try_from(n).map_err(|_| "port must be 1-65535".to_string()),
        _ => Err(format!("port {p} is out of range 1-65535")),
    }
}

fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("missing host".to_string());
    }
    if host.len() > MAX_HOST_LEN {
        return Err(format!("host is longer than {MAX_HOST_LEN} characters"));
    }
    // Host names and IPv4 literals only; this also rejects URLs, paths and stray separators.
    if let Some(c) = host
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        return Err(format!("host {host:?} contains {c:?}"));
    }
    if host.starts_with(['-', '.']) {
        return Err(format!("host {host:?} must start with a letter or digit"));
    }
    Ok(())
}

fn split_host_port(s: &str) -> Result<HostPort, String> {
    if s.is_empty() {
        return Err("empty address".to_string());
    }
    if s.contains("://") {
        return Err("expected host or host:port, not a URL".to_string());
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (inside, after) = rest
            .split_once(']')
            .ok_or_else(|| "missing ']' after the IPv6 address".to_string())?;
        let ip: Ipv6Addr = inside
            .parse()
            .map_err(|_| format!("{inside:?} is not an IPv6 address"))?;
        let port = match after {
            "" => None,
            _ => {
                let p = after
                    .strip_prefix(':')
                    .ok_or_else(|| format!("expected ':' after ']', found {after:?}"))?;
                Some(parse_port(p)?)
            }
        };
        return Ok(HostPort {
            host: ip.to_string(),
            v6: true,
            port,
        });
    }
    // Without brackets "::1:8848" is itself a valid IPv6 address, so the port is ambiguous.
    if s.parse::<Ipv6Addr>().is_ok() {
        return Err("IPv6 addresses need brackets, e.g. [::1]:8848".to_string());
    }
    let (host, port) = match s.split_once(':') {
        Some((h, p)) => (h, Some(parse_port(p)?)),
        None => (s, None),
    };
    check_host(host)?;
    Ok(HostPort {
        host: host.to_string(),
        v6: false,
        port,
    })
}

/// Normalises one address, or says what is wrong with it (without repeating it).
fn normalise(s: &str) -> Result<String, String> {
    let s = s.trim();
    // Nacos 1.x wrote members as `ip:port?raft_port=…`; the suffix means nothing to nacre.
    let s = s.split_once('?').map_or(s, |(a, _)| a).trim_end();
    split_host_port(s).map(|hp| hp.render())
}

fn sorted(mut list: Vec<String>) -> Vec<String> {
    list.sort();
    list.dedup();
    list
}

/// Normalises one member address.
///
/// Accepts `host`, `ip`, `host:port`, `[ipv6]` and `[ipv6]:port`, surrounded by whitespace or
/// not; a missing port becomes [`DEFAULT_PORT`]. Nacos's legacy suffix (`ip:port?raft_port=…`)
/// is dropped. The result is `host:port`, or `[ip]:port` for IPv6.
///
/// # Errors
/// [`ConfigError::Invalid`] with key `member`, naming the value: an empty host, a port outside
/// 1–65535, a host with spaces, slashes or other characters no host name has, or an IPv6
/// address without brackets.
pub fn parse_address(s: &str) -> Result<String, ConfigError> {
    normalise(s).map_err(|reason| invalid("member", s.trim(), &reason))
}

fn parse_cluster_conf_named(text: &str, name: &str) -> Result<Vec<String>, ConfigError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut members = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let content = line.split_once('#').map_or(line, |(before, _)| before);
        for piece in content.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let member = normalise(piece).map_err(|reason| {
                invalid(
                    &format!("{name} line {}", i + 1),
                    line.trim(),
                    &if piece == line.trim() {
                        reason
                    } else {
                        format!("{piece:?}: {reason}")
                    },
                )
            })?;
            members.push(member);
        }
    }
    Ok(sorted(members))
}

/// Parses the text of a Nacos `cluster.conf`.
///
/// One member per line (`ip` or `ip:port`, as [`parse_address`]); `#` starts a comment, on its
/// own line or after a member; blank lines are ignored; a line may hold several members
/// separated by commas. The result is sorted and deduplicated; it is empty when the text lists
/// no member (deciding whether that is acceptable is the caller's business).
///
/// # Errors
/// [`ConfigError::Invalid`] whose key names the line number (`cluster.conf line 3`), whose value
/// is the line's text, and whose reason names the bad address.
pub fn parse_cluster_conf(text: &str) -> Result<Vec<String>, ConfigError> {
    parse_cluster_conf_named(text, "cluster.conf")
}

/// Parses the body an address server answers to `GET /nacos/serverlist`.
///
/// Addresses are separated by `\r\n`, `\n` or any whitespace; a bare IP means port 8848. The
/// result is sorted and deduplicated, and empty for an empty body.
///
/// # Errors
/// [`ConfigError::Invalid`] with key `serverlist`, naming the first bad address.
pub fn parse_server_list(body: &str) -> Result<Vec<String>, ConfigError> {
    let body = body.strip_prefix('\u{feff}').unwrap_or(body);
    body.split_whitespace()
        .map(|a| normalise(a).map_err(|reason| invalid("serverlist", a, &reason)))
        .collect::<Result<Vec<_>, _>>()
        .map(sorted)
}

/// Parses the value of `--members a:p,b:p,c:p` (commas, optional spaces around each address).
///
/// Sorted and deduplicated. Empty pieces (a trailing comma) are skipped.
///
/// # Errors
/// [`ConfigError::Invalid`] with key `members`, naming the first bad address, or the whole value
/// when it holds no address at all.
pub fn parse_members_flag(s: &str) -> Result<Vec<String>, ConfigError> {
    let members = s
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|a| normalise(a).map_err(|reason| invalid("members", a, &reason)))
        .collect::<Result<Vec<_>, _>>()?;
    if members.is_empty() {
        return Err(invalid("members", s, "no member address given"));
    }
    Ok(sorted(members))
}

/// Parses the value of `--members-dns NAME[:PORT]`: the DNS name to resolve and the port every
/// resolved address gets ([`DEFAULT_PORT`] when none is written). An IPv6 literal goes in
/// brackets and is returned without them.
///
/// # Errors
/// [`ConfigError::Invalid`] with key `members_dns`, naming the value: an empty name, a URL, a
/// name with characters no host name has, or a bad port.
pub fn parse_dns_target(s: &str) -> Result<(String, u16), ConfigError> {
    let t = s.trim();
    let hp = split_host_port(t).map_err(|reason| invalid("members_dns", t, &reason))?;
    Ok((hp.host, hp.port.unwrap_or(DEFAULT_PORT)))
}

/// Where the member list comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberSource {
    /// A fixed list (`--members`); each entry is normalised as [`parse_address`].
    Static(Vec<String>),
    /// A Nacos `cluster.conf`, re-read when it changes.
    File(PathBuf),
    /// An address server, `http://host:port/path` (usually `…/nacos/serverlist`), polled.
    Endpoint(String),
    /// Every A/AAAA record of a DNS name (a Kubernetes headless Service), re-resolved.
    Dns {
        /// Name to resolve.
        name: String,
        /// Port given to every resolved address.
        port: u16,
    },
}

/// The places a member list may come from, as settings name them; [`SourceKeys::resolve`]
/// checks that at most one is given. Shared by the registry's `[cluster]` and the gateway.
#[derive(Debug, Clone, Copy)]
pub struct SourceKeys<'a> {
    /// Setting names, in the order: list, file, endpoint, DNS (for error messages).
    pub names: [&'a str; 4],
    /// A static list.
    pub list: &'a [String],
    /// A Nacos `cluster.conf`.
    pub file: Option<&'a Path>,
    /// An address-server URL.
    pub endpoint: Option<&'a str>,
    /// `NAME:PORT` to resolve.
    pub dns: Option<&'a str>,
}

impl SourceKeys<'_> {
    /// The one source given, `None` when none is; an error names the key of a malformed value
    /// or says that several were given.
    pub fn resolve(&self) -> Result<Option<MemberSource>, ConfigError> {
        let [list_key, _, endpoint_key, _] = self.names;
        let mut sources = Vec::new();
        if !self.list.is_empty() {
            let list = self
                .list
                .iter()
                .map(|m| parse_address(m))
                .collect::<Result<Vec<_>, _>>()?;
            sources.push(MemberSource::Static(list));
        }
        if let Some(f) = self.file {
            sources.push(MemberSource::File(f.to_path_buf()));
        }
        if let Some(u) = self.endpoint {
            if !u.starts_with("http://") {
                return Err(invalid(endpoint_key, u, "expected an http:// URL"));
            }
            sources.push(MemberSource::Endpoint(u.to_string()));
        }
        if let Some(d) = self.dns {
            let (name, port) = parse_dns_target(d)?;
            sources.push(MemberSource::Dns { name, port });
        }
        if sources.len() > 1 {
            let given: Vec<&str> = self
                .names
                .iter()
                .copied()
                .filter(|n| !n.is_empty())
                .collect();
            return Err(invalid(
                list_key,
                "several sources",
                &format!("give exactly one of {}", given.join(", ")),
            ));
        }
        Ok(sources.pop())
    }
}

impl fmt::Display for MemberSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Static(members) => write!(f, "static list [{}]", members.join(", ")),
            Self::File(path) => write!(f, "file {}", path.display()),
            Self::Endpoint(url) => write!(f, "address server {url}"),
            Self::Dns { name, port } if name.contains(':') => write!(f, "DNS [{name}]:{port}"),
            Self::Dns { name, port } => write!(f, "DNS {name}:{port}"),
        }
    }
}

/// What a file looked like when it was last read: modification time and length.
type Stamp = (Option<SystemTime>, u64);

fn stamp(meta: &std::fs::Metadata) -> Stamp {
    (meta.modified().ok(), meta.len())
}

async fn read_member_file(path: &Path) -> Result<(Stamp, Vec<String>), ConfigError> {
    let read_err = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = tokio::fs::metadata(path).await.map_err(read_err)?;
    let text = tokio::fs::read_to_string(path).await.map_err(read_err)?;
    let members = parse_cluster_conf_named(&text, &path.display().to_string())?;
    // An editor that truncates before writing leaves an empty file for a moment.
    if members.is_empty() {
        return Err(ConfigError::Parse {
            path: path.to_path_buf(),
            message: "lists no member address".to_string(),
        });
    }
    Ok((stamp(&meta), members))
}

/// The error and its causes on one line: reqwest's own message omits the cause that matters
/// ("connection refused", "timed out").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// Reads the list, held when `held` names the digest the caller has (with the plain read's
/// timeout); returns the members and the digest the server sent, if any.
async fn fetch_server_list(
    client: &reqwest::Client,
    url: &reqwest::Url,
    held: Option<(&str, Duration)>,
) -> Result<(Vec<String>, Option<String>), String> {
    let request = match held {
        Some((digest, timeout)) => {
            let wait = crate::serverlist::FOLLOW_WAIT;
            let mut url = url.clone();
            url.query_pairs_mut()
                .append_pair(crate::serverlist::WAIT_PARAM, &wait.as_millis().to_string());
            client
                .get(url)
                .header(crate::serverlist::DIGEST_HEADER, digest)
                .timeout(wait + timeout)
        }
        None => client.get(url.clone()),
    };
    let mut resp = request.send().await.map_err(|e| error_chain(&e))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("answered {status}"));
    }
    let digest = resp
        .headers()
        .get(crate::serverlist::DIGEST_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| error_chain(&e))? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(format!("answer is larger than {MAX_BODY_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(body).map_err(|_| "answer is not UTF-8 text".to_string())?;
    let members = parse_server_list(&text).map_err(|e| e.to_string())?;
    if members.is_empty() {
        return Err("answer lists no member address".to_string());
    }
    Ok((members, digest))
}

fn render_socket_addr(a: SocketAddr) -> String {
    match a {
        SocketAddr::V4(v4) => format!("{}:{}", v4.ip(), v4.port()),
        // Without the scope id: member addresses never carry one (see `parse_address`).
        SocketAddr::V6(v6) => format!("[{}]:{}", v6.ip(), v6.port()),
    }
}

async fn resolve(name: &str, port: u16, timeout: Duration) -> Result<Vec<String>, String> {
    let addrs = tokio::time::timeout(timeout, tokio::net::lookup_host((name, port)))
        .await
        .map_err(|_| format!("no DNS answer within {} ms", timeout.as_millis()))?
        .map_err(|e| format!("DNS lookup failed: {e}"))?;
    let members = sorted(addrs.map(render_socket_addr).collect());
    if members.is_empty() {
        return Err("DNS answer holds no address".to_string());
    }
    Ok(members)
}

/// Bound on one fetch (HTTP request or DNS lookup), so a hung source cannot stall the loop.
fn fetch_timeout(interval: Duration) -> Duration {
    interval.clamp(Duration::from_secs(2), Duration::from_secs(10))
}

/// The per-source state of the polling loop.
enum Poller {
    File {
        path: PathBuf,
        stamp: Option<Stamp>,
        polls_since_read: u32,
    },
    Endpoint {
        client: reqwest::Client,
        url: reqwest::Url,
        /// The digest of the last list answered, when the server sent one: it holds reads
        /// (rule E3 of [`crate::serverlist`]).
        digest: Option<String>,
        /// Bound on a plain read; a held one gets the hold on top.
        timeout: Duration,
    },
    Dns {
        name: String,
        port: u16,
        timeout: Duration,
    },
}

impl Poller {
    /// Whether the next read is held by the server (rule E3): then it is sent at once after
    /// an answer, not one interval later.
    fn holds(&self) -> bool {
        matches!(
            self,
            Self::Endpoint {
                digest: Some(_),
                ..
            }
        )
    }

    /// `Ok(None)`: nothing to look at (the file looks unchanged).
    async fn poll(&mut self) -> Result<Option<Vec<String>>, String> {
        match self {
            Self::File {
                path,
                stamp: last,
                polls_since_read,
            } => {
                let meta = tokio::fs::metadata(&*path)
                    .await
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                let now = stamp(&meta);
                *polls_since_read += 1;
                if *last == Some(now) && *polls_since_read < FORCED_REREAD_EVERY {
                    return Ok(None);
                }
                *polls_since_read = 0;
                // Recorded even if the read fails, so a broken file is re-parsed only when it
                // changes (or at the forced re-read), not on every poll.
                *last = Some(now);
                read_member_file(path)
                    .await
                    .map(|(_, members)| Some(members))
                    .map_err(|e| e.to_string())
            }
            Self::Endpoint {
                client,
                url,
                digest,
                timeout,
            } => {
                let held = digest.as_deref().map(|d| (d, *timeout));
                let (members, answered) = fetch_server_list(client, url, held).await?;
                *digest = answered;
                Ok(Some(members))
            }
            Self::Dns {
                name,
                port,
                timeout,
            } => resolve(name, *port, *timeout).await.map(Some),
        }
    }
}

/// Logs failures once per distinct error, so a source that stays broken does not flood the log.
struct Complaints {
    source: String,
    last: Option<String>,
}

impl Complaints {
    fn failed(&mut self, error: String, kept: usize) {
        if self.last.as_deref() != Some(error.as_str()) {
            tracing::warn!(
                source = %self.source,
                %error,
                kept_members = kept,
                "member discovery failed; keeping the last member list"
            );
            self.last = Some(error);
        }
    }

    fn recovered(&mut self) {
        if self.last.take().is_some() {
            tracing::info!(source = %self.source, "member discovery works again");
        }
    }
}

/// Publishes `new` if it differs from the current list, logging who joined and who left.
fn publish(tx: &watch::Sender<Vec<String>>, source: &str, new: Vec<String>) {
    let mut diff = None;
    tx.send_if_modified(|current| {
        if *current == new {
            return false;
        }
        // Both lists are sorted, so membership is a binary search.
        let added: Vec<String> = new
            .iter()
            .filter(|m| current.binary_search(m).is_err())
            .cloned()
            .collect();
        let removed: Vec<String> = current
            .iter()
            .filter(|m| new.binary_search(m).is_err())
            .cloned()
            .collect();
        diff = Some((added, removed, new.len()));
        *current = new;
        true
    });
    // Logged after the channel's lock is released: a slow log sink must not block readers.
    if let Some((added, removed, count)) = diff {
        tracing::info!(
            %source,
            ?added,
            ?removed,
            members = count,
            "cluster members changed"
        );
    }
}

async fn run(
    mut poller: Poller,
    tx: watch::Sender<Vec<String>>,
    interval: Duration,
    shutdown: CancellationToken,
    mut complaints: Complaints,
) {
    // The first load happened in `start`; the first poll is one interval later.
    let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // After a failure the next read waits an interval even from a holding server (rule E3).
    let mut failed = false;
    loop {
        let outcome = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            outcome = async {
                if failed {
                    tokio::time::sleep(interval).await;
                } else if !poller.holds() {
                    ticker.tick().await;
                }
                poller.poll().await
            } => outcome,
        };
        failed = outcome.is_err();
        match outcome {
            Ok(Some(members)) => {
                complaints.recovered();
                publish(&tx, &complaints.source, members);
            }
            Ok(None) => {}
            Err(error) => {
                let kept = tx.borrow().len();
                complaints.failed(error, kept);
            }
        }
    }
    tracing::debug!(source = %complaints.source, "member discovery stopped");
}

/// Follows a [`MemberSource`]: one background task re-reads it every interval and publishes the
/// member list (sorted, deduplicated) whenever it changes.
#[derive(Debug)]
pub struct Discovery {
    rx: watch::Receiver<Vec<String>>,
    task: JoinHandle<()>,
}

impl Discovery {
    /// Loads the members once, then follows `source` every `interval` until `shutdown` is
    /// cancelled.
    ///
    /// A static list and a file must load now. An address server or DNS name is tried once;
    /// if that fails (or `shutdown` is cancelled meanwhile) a warning is logged and discovery
    /// starts with an empty list, then keeps polling. Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// [`ConfigError`] when `interval` is zero, a static address is malformed or the list is
    /// empty, the file cannot be read, is malformed or lists no member, the endpoint is not an
    /// `http://` URL, or the DNS name or port is malformed.
    pub async fn start(
        source: MemberSource,
        interval: Duration,
        shutdown: CancellationToken,
    ) -> Result<Discovery, ConfigError> {
        if interval.is_zero() {
            return Err(invalid(
                "member discovery interval",
                "0 ms",
                "must be positive",
            ));
        }
        let name = source.to_string();
        let mut complaints = Complaints {
            source: name.clone(),
            last: None,
        };
        let (first, poller) = match source {
            MemberSource::Static(list) => {
                let members = list
                    .iter()
                    .map(|a| parse_address(a))
                    .collect::<Result<Vec<_>, _>>()?;
                if members.is_empty() {
                    return Err(invalid("members", "", "no member address given"));
                }
                (sorted(members), None)
            }
            MemberSource::File(path) => {
                let (stamp, members) = read_member_file(&path).await?;
                let poller = Poller::File {
                    path,
                    stamp: Some(stamp),
                    polls_since_read: 0,
                };
                (members, Some(poller))
            }
            MemberSource::Endpoint(url) => {
                let mut poller = endpoint_poller(&url, interval)?;
                let first = first_answer(&mut poller, &shutdown, &mut complaints).await;
                (first, Some(poller))
            }
            MemberSource::Dns { name, port } => {
                if name.parse::<IpAddr>().is_err() {
                    check_host(&name).map_err(|reason| invalid("members_dns", &name, &reason))?;
                }
                if port == 0 {
                    return Err(invalid("members_dns", port, "port must be 1-65535"));
                }
                let mut poller = Poller::Dns {
                    name,
                    port,
                    timeout: fetch_timeout(interval),
                };
                let first = first_answer(&mut poller, &shutdown, &mut complaints).await;
                (first, Some(poller))
            }
        };
        tracing::info!(source = %name, members = ?first, "cluster members discovered");
        let (tx, rx) = watch::channel(first);
        let task = match poller {
            Some(poller) => tokio::spawn(run(poller, tx, interval, shutdown, complaints)),
            None => tokio::spawn(async move {
                // Held until shutdown so subscribers see the channel close only then.
                let _tx = tx;
                shutdown.cancelled().await;
            }),
        };
        Ok(Discovery { rx, task })
    }

    /// A receiver of the member list: `borrow()` reads the current list, `changed()` wakes on
    /// each later change (only real changes are sent) and fails once discovery has stopped.
    pub fn subscribe(&self) -> watch::Receiver<Vec<String>> {
        let mut rx = self.rx.clone();
        // A clone inherits this handle's "seen" mark, which never moves: without this a new
        // subscriber would be woken for changes made before it subscribed.
        rx.mark_unchanged();
        rx
    }

    /// The current member list (sorted, deduplicated; empty only while an endpoint or DNS
    /// source has never answered).
    pub fn current(&self) -> Vec<String> {
        self.rx.borrow().clone()
    }

    /// Waits for the background task to end; it ends once the `shutdown` token given to
    /// [`Discovery::start`] is cancelled (and never before). A panic in the task is resumed here.
    pub async fn stopped(self) {
        if let Err(e) = self.task.await {
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    }
}

/// One try at a remote source (address server, DNS); a failure is logged and gives no members.
async fn first_answer(
    poller: &mut Poller,
    shutdown: &CancellationToken,
    complaints: &mut Complaints,
) -> Vec<String> {
    let outcome = tokio::select! {
        biased;
        () = shutdown.cancelled() => Err("shut down before the first answer".to_string()),
        outcome = poller.poll() => outcome,
    };
    match outcome {
        Ok(members) => members.unwrap_or_default(),
        Err(error) => {
            tracing::warn!(
                source = %complaints.source,
                %error,
                "first member lookup failed; starting with no members and retrying"
            );
            complaints.last = Some(error);
            Vec::new()
        }
    }
}

fn endpoint_poller(url: &str, interval: Duration) -> Result<Poller, ConfigError> {
    let key = "members_endpoint";
    let parsed = reqwest::Url::parse(url.trim())
        .map_err(|e| invalid(key, url, &format!("not a URL: {e}")))?;
    if parsed.scheme() != "http" {
        return Err(invalid(
            key,
            url,
            "only http:// URLs are supported (this build has no TLS)",
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid(key, url, "URL has no host"));
    }
    let timeout = fetch_timeout(interval);
    // No proxy: an HTTP_PROXY meant for the outside world must not sit between cluster members.
    let client = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(timeout)
        .timeout(timeout)
        .build()
        .map_err(|e| invalid(key, url, &format!("cannot build an HTTP client: {e}")))?;
    Ok(Poller::Endpoint {
        client,
        url: parsed,
        digest: None,
        timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(e: ConfigError) -> String {
        e.to_string()
    }

    #[test]
    fn addresses_are_normalised() {
        assert_eq!(parse_address("10.0.0.1").unwrap(), "10.0.0.1:8848");
        assert_eq!(
            parse_address("  10.0.0.1:9000 \n").unwrap(),
            "10.0.0.1:9000"
        );
        assert_eq!(parse_address("node-1.nacre").unwrap(), "node-1.nacre:8848");
        assert_eq!(
            parse_address("nacre-0.nacre.default.svc.cluster.local:8848").unwrap(),
            "nacre-0.nacre.default.svc.cluster.local:8848"
        );
        assert_eq!(parse_address("[::1]:8848").unwrap(), "[::1]:8848");
        assert_eq!(parse_address("[::1]").unwrap(), "[::1]:8848");
        assert_eq!(
            parse_address("[0:0:0:0:0:0:0:1]:9").unwrap(),
            "[::1]:9",
            "IPv6 is canonicalised so duplicates collapse"
        );
        assert_eq!(
            parse_address("10.0.0.1:8848?raft_port=7848").unwrap(),
            "10.0.0.1:8848"
        );
        assert_eq!(
            parse_address("10.0.0.1?raft_port=7848").unwrap(),
            "10.0.0.1:8848"
        );
        assert_eq!(parse_address("h:65535").unwrap(), "h:65535");
        assert_eq!(parse_address("h:1").unwrap(), "h:1");
    }

    #[test]
    fn bad_addresses_are_named() {
        for (input, needle) in [
            ("", "empty address"),
            ("   ", "empty address"),
            ("10.0.0.1:0", "out of range"),
            ("10.0.0.1:65536", "out of range"),
            ("10.0.0.1:99999999999999999999", "out of range"),
            ("10.0.0.1:", "missing port"),
            ("10.0.0.1:+80", "not a number"),
            ("10.0.0.1:http", "not a number"),
            (":8848", "missing host"),
            ("my host:8848", "contains ' '"),
            ("http://10.0.0.1:8848", "not a URL"),
            ("10.0.0.1/24", "contains '/'"),
            ("::1", "need brackets"),
            ("[::1", "missing ']'"),
            ("[zz]:1", "not an IPv6 address"),
            ("[::1]8848", "expected ':'"),
            ("a:1:2", "not a number"),
            ("-x:1", "must start with"),
        ] {
            let e = parse_address(input).unwrap_err();
            let msg = reason(e);
            assert!(msg.contains(needle), "{input:?}: {msg}");
            assert!(
                msg.contains(&format!("{:?}", input.trim())),
                "{input:?}: message must name the value: {msg}"
            );
            assert!(msg.contains("member"), "{msg}");
        }
    }

    #[test]
    fn cluster_conf_is_parsed_like_nacos() {
        let text = "\u{feff}# cluster members\n\
                    10.0.0.3:8848\n\
                    \n\
                    10.0.0.1 # first\n\
                    10.0.0.2:8848?raft_port=7848\r\n\
                    10.0.0.4:8848, 10.0.0.5:9000 ,\n\
                    10.0.0.1:8848\n\
                    \t  # indented comment\n";
        assert_eq!(
            parse_cluster_conf(text).unwrap(),
            [
                "10.0.0.1:8848",
                "10.0.0.2:8848",
                "10.0.0.3:8848",
                "10.0.0.4:8848",
                "10.0.0.5:9000"
            ]
        );
        assert!(parse_cluster_conf("# nothing\n\n").unwrap().is_empty());
        assert!(parse_cluster_conf("").unwrap().is_empty());
    }

    #[test]
    fn cluster_conf_sorts_as_strings() {
        assert_eq!(
            parse_cluster_conf("10.0.0.9\n10.0.0.10\n").unwrap(),
            ["10.0.0.10:8848", "10.0.0.9:8848"]
        );
    }

    #[test]
    fn bad_cluster_conf_line_is_named() {
        let e = parse_cluster_conf("10.0.0.1\n# ok\n10.0.0.2:99999 # broken\n").unwrap_err();
        match &e {
            ConfigError::Invalid { key, value, reason } => {
                assert_eq!(key, "cluster.conf line 3");
                assert_eq!(value, "10.0.0.2:99999 # broken");
                assert!(reason.contains("\"10.0.0.2:99999\""), "{reason}");
                assert!(reason.contains("out of range"), "{reason}");
            }
            other => panic!("unexpected {other:?}"),
        }
        let msg = e.to_string();
        assert!(
            msg.contains("line 3") && msg.contains("10.0.0.2:99999"),
            "{msg}"
        );
    }

    #[test]
    fn server_list_bodies() {
        assert_eq!(
            parse_server_list("10.0.0.2:8848\r\n10.0.0.1").unwrap(),
            ["10.0.0.1:8848", "10.0.0.2:8848"]
        );
        assert_eq!(
            parse_server_list("10.0.0.1:8848\n10.0.0.2:8848\n10.0.0.1:8848\n").unwrap(),
            ["10.0.0.1:8848", "10.0.0.2:8848"]
        );
        assert_eq!(
            parse_server_list(" 10.0.0.1  10.0.0.2:9\t").unwrap(),
            ["10.0.0.1:8848", "10.0.0.2:9"]
        );
        assert!(parse_server_list("").unwrap().is_empty());
        assert!(parse_server_list("\r\n").unwrap().is_empty());
        let msg = parse_server_list("10.0.0.1\n<html>oops</html>")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("serverlist") && msg.contains("<html>oops</html>"),
            "{msg}"
        );
    }

    #[test]
    fn members_flag() {
        assert_eq!(
            parse_members_flag("b:1, a:2 ,a:2,c").unwrap(),
            ["a:2", "b:1", "c:8848"]
        );
        assert_eq!(parse_members_flag("a:1,").unwrap(), ["a:1"]);
        let msg = parse_members_flag("a:1,b:0").unwrap_err().to_string();
        assert!(msg.contains("members") && msg.contains("\"b:0\""), "{msg}");
        let msg = parse_members_flag(" , ").unwrap_err().to_string();
        assert!(msg.contains("no member address"), "{msg}");
    }

    #[test]
    fn dns_targets() {
        assert_eq!(
            parse_dns_target("nacre.default.svc.cluster.local:8848").unwrap(),
            ("nacre.default.svc.cluster.local".to_string(), 8848)
        );
        assert_eq!(
            parse_dns_target(" nacre-headless ").unwrap(),
            ("nacre-headless".to_string(), DEFAULT_PORT)
        );
        assert_eq!(parse_dns_target("[::1]:9").unwrap(), ("::1".to_string(), 9));
        for (input, needle) in [
            ("", "empty"),
            ("nacre:0", "out of range"),
            ("nacre:x", "not a number"),
            ("http://nacre:8848", "not a URL"),
            ("bad name", "contains ' '"),
        ] {
            let msg = parse_dns_target(input).unwrap_err().to_string();
            assert!(
                msg.contains(needle) && msg.contains("members_dns"),
                "{input:?}: {msg}"
            );
            assert!(msg.contains(&format!("{input:?}")), "{input:?}: {msg}");
        }
    }

    #[test]
    fn sources_display_for_logs() {
        assert_eq!(
            MemberSource::Static(vec!["a:1".into(), "b:2".into()]).to_string(),
            "static list [a:1, b:2]"
        );
        assert_eq!(
            MemberSource::File(PathBuf::from("/etc/nacre/cluster.conf")).to_string(),
            "file /etc/nacre/cluster.conf"
        );
        assert_eq!(
            MemberSource::Endpoint("http://as:8080/nacos/serverlist".into()).to_string(),
            "address server http://as:8080/nacos/serverlist"
        );
        let dns = MemberSource::Dns {
            name: "nacre".into(),
            port: 8848,
        };
        assert_eq!(dns.to_string(), "DNS nacre:8848");
        let v6 = MemberSource::Dns {
            name: "::1".into(),
            port: 9,
        };
        assert_eq!(v6.to_string(), "DNS [::1]:9");
    }

    #[test]
    fn socket_addresses_render_like_members() {
        assert_eq!(
            render_socket_addr("127.0.0.1:9".parse().unwrap()),
            "127.0.0.1:9"
        );
        assert_eq!(render_socket_addr("[::1]:9".parse().unwrap()), "[::1]:9");
    }

    #[test]
    fn publish_sends_only_changes() {
        let (tx, mut rx) = watch::channel(vec!["a:1".to_string()]);
        rx.mark_unchanged();
        publish(&tx, "test", vec!["a:1".to_string()]);
        assert!(!rx.has_changed().unwrap());
        publish(&tx, "test", vec!["a:1".to_string(), "b:1".to_string()]);
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), ["a:1", "b:1"]);
    }
}
