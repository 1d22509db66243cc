//! A loopback TCP proxy that a test can cut, heal, slow down, or close to chosen processes.
//!
//! [`LinkProxy`] listens on a loopback port and forwards every accepted connection to one fixed
//! loopback target. Cluster tests put one in front of each node and make the node advertise the
//! proxy's address, so all peer traffic *towards* that node crosses it: [`LinkProxy::cut`] then
//! stops the node's peers from reaching it while test clients, which talk to the node's real
//! address, are unaffected. [`LinkProxy::set_delay`] injects latency instead.
//!
//! A cut is one-directional at the connection level: the node behind a cut proxy can still open
//! connections to its peers (through *their* proxies) and get answers on them — a Raft leader
//! keeps replicating, for instance. To separate nodes in both directions the peers' proxies must
//! also refuse the node's own connections: [`LinkProxy::set_blocked_sources`] does that by
//! process id (on Linux, the owner of an accepted connection is found through `/proc`), and
//! [`crate::cluster::TestCluster::partition`] drives it for whole clusters.
//!
//! Plain std threads: one accept thread, and two copy threads per connection (one per
//! direction). The proxy keeps a clone of both sockets of every open connection so that
//! [`LinkProxy::cut`] and `Drop` can `shutdown` them from outside, which also wakes the copy
//! threads blocked in `read`.

use std::collections::{HashMap, HashSet};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// How long the proxy waits for the target to accept a forwarded connection. The target is on
/// loopback, so a refused or stuck connect is a dead node, not a slow network.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Bytes read per chunk; each chunk is delayed as a unit by [`LinkProxy::set_delay`].
const CHUNK: usize = 16 * 1024;

/// A TCP proxy `127.0.0.1:<port>` → `target` whose link can be cut, healed and delayed.
///
/// Dropping it stops accepting, closes all forwarded connections and releases the port.
#[derive(Debug)]
pub struct LinkProxy {
    addr: SocketAddr,
    inner: Arc<Inner>,
    accept_thread: Option<JoinHandle<()>>,
}

/// State shared by the handle, the accept thread and the copy threads.
#[derive(Debug)]
struct Inner {
    /// The proxy's own listen address (the remote end of every accepted connection, needed to
    /// find a connection's owner in `/proc/net/tcp`).
    addr: SocketAddr,
    /// Where new connections go; [`LinkProxy::retarget`] moves it.
    target: Mutex<SocketAddr>,
    /// Set by `cut`; only changed under the `state` lock, and checked under it when a
    /// connection registers, so a connection accepted concurrently with `cut` cannot slip
    /// through.
    cut: AtomicBool,
    stop: AtomicBool,
    delay_nanos: AtomicU64,
    accepted: AtomicU64,
    next_id: AtomicU64,
    state: Mutex<State>,
}

/// Open connections and source filtering, under one lock.
#[derive(Debug, Default)]
struct State {
    conns: HashMap<u64, Conn>,
    /// Process ids whose connections are refused.
    blocked: HashSet<u32>,
    /// Bumped on every change of `blocked`, so a connection that resolved its owner against an
    /// older set resolves again.
    generation: u64,
}

/// Clones of an open forwarded connection's two sockets, so `cut` can shut them down.
#[derive(Debug)]
struct Conn {
    client: TcpStream,
    upstream: TcpStream,
    /// The connecting side's address (its `local_address` in `/proc/net/tcp`).
    peer: SocketAddr,
    /// Copy threads still running; the entry (and with it the last socket clones) is dropped
    /// when this reaches zero.
    running: u8,
}

impl Conn {
    fn shutdown(&self) {
        // Errors only mean the socket is already closed, which is the goal.
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.upstream.shutdown(Shutdown::Both);
    }
}

impl Inner {
    /// The shared state; a poisoned lock (a panicking copy thread) must not make `cut` or
    /// `Drop` panic, so the poison is ignored — the state itself is always consistent.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Shuts down and forgets every open connection (their copy threads then exit on their
    /// own and drop the last socket handles).
    fn close_all(&self) {
        for (_, conn) in self.state().conns.drain() {
            conn.shutdown();
        }
    }

    fn delay(&self) -> Duration {
        Duration::from_nanos(self.delay_nanos.load(Ordering::Relaxed))
    }

    fn closing(&self) -> bool {
        self.cut.load(Ordering::SeqCst) || self.stop.load(Ordering::SeqCst)
    }
}

impl LinkProxy {
    /// Starts a proxy on `127.0.0.1:<free port>` forwarding to `target` (which must be a
    /// loopback address).
    pub fn start(target: SocketAddr) -> Result<LinkProxy> {
        Self::start_on(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0), target)
    }

    /// Starts a proxy on a fixed `listen` address (IPv4 loopback; port 0 picks a free one),
    /// e.g. to bring a proxy back on the same port after dropping it.
    pub fn start_on(listen: SocketAddr, target: SocketAddr) -> Result<LinkProxy> {
        // Tests only ever proxy between local processes; refusing anything else keeps a
        // mistyped address from opening a relay to, or from, the outside world.
        if !target.ip().is_loopback() {
            bail!("LinkProxy target {target} is not a loopback address");
        }
        // IPv4 only: owner lookup reads /proc/net/tcp, which lists IPv4 sockets.
        if !matches!(listen.ip(), IpAddr::V4(ip) if ip.is_loopback()) {
            bail!("LinkProxy listen address {listen} is not an IPv4 loopback address");
        }
        let listener =
            TcpListener::bind(listen).with_context(|| format!("binding proxy on {listen}"))?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            addr,
            target: Mutex::new(target),
            cut: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            delay_nanos: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            next_id: AtomicU64::new(0),
            state: Mutex::new(State::default()),
        });
        let shared = Arc::clone(&inner);
        let accept_thread = thread::Builder::new()
            .name(format!("proxy-{}-accept", addr.port()))
            .spawn(move || accept_loop(listener, shared))
            .context("spawning proxy accept thread")?;
        Ok(LinkProxy {
            addr,
            inner,
            accept_thread: Some(accept_thread),
        })
    }

    /// The address the proxy listens on (what peers should connect to).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where connections are forwarded.
    pub fn target(&self) -> SocketAddr {
        *self
            .inner
            .target
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sends new connections to `target` (a loopback address): the name this proxy stands for
    /// now resolves to another address, as a pod's DNS name does after it is rescheduled.
    /// Connections already forwarded keep their old target.
    pub fn retarget(&self, target: SocketAddr) -> Result<()> {
        if !target.ip().is_loopback() {
            bail!("LinkProxy target {target} is not a loopback address");
        }
        *self
            .inner
            .target
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = target;
        Ok(())
    }

    /// Cuts the link: shuts down both directions of every open connection (both ends see
    /// EOF) and, until [`LinkProxy::heal`], accepts new connections only to close them at once.
    pub fn cut(&self) {
        // Flag and sweep under the lock: a connection registering concurrently either sees the
        // flag or is in the map when we sweep it.
        let mut state = self.inner.state();
        self.inner.cut.store(true, Ordering::SeqCst);
        for (_, conn) in state.conns.drain() {
            conn.shutdown();
        }
    }

    /// Restores forwarding for new connections (connections closed by the cut stay closed;
    /// clients reconnect). Does not touch [`LinkProxy::set_blocked_sources`] or the delay.
    pub fn heal(&self) {
        let _state = self.inner.state();
        self.inner.cut.store(false, Ordering::SeqCst);
    }

    /// Whether the link is currently cut.
    pub fn is_cut(&self) -> bool {
        self.inner.cut.load(Ordering::SeqCst)
    }

    /// Delays every chunk forwarded in either direction by `d` (so a request/response round
    /// trip gains at least `2 * d`). `Duration::ZERO` turns the delay off. Applies to open
    /// connections from their next chunk on. Chunks in one direction are delayed one after
    /// the other, so this also caps throughput; it is meant for latency, not bandwidth.
    pub fn set_delay(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.inner.delay_nanos.store(nanos, Ordering::Relaxed);
    }

    /// The current injected delay.
    pub fn delay(&self) -> Duration {
        self.inner.delay()
    }

    /// Refuses connections opened by the processes `pids` (replacing the previous set; empty
    /// = refuse none): their open connections are closed now, new ones are closed right after
    /// accept. Connections from other processes are unaffected. Linux only — the owner of a
    /// connection is found through `/proc/net/tcp` and `/proc/<pid>/fd`; fails if `/proc` is
    /// not readable and `pids` is not empty.
    pub fn set_blocked_sources(&self, pids: &[u32]) -> Result<()> {
        let pids: HashSet<u32> = pids.iter().copied().collect();
        if !pids.is_empty() {
            // Fail loudly rather than let a partition silently not happen.
            std::fs::metadata("/proc/net/tcp")
                .context("source blocking needs /proc/net/tcp (Linux)")?;
        }
        let open: Vec<(u64, SocketAddr)> = {
            let mut state = self.inner.state();
            state.blocked = pids.clone();
            state.generation += 1;
            state.conns.iter().map(|(id, c)| (*id, c.peer)).collect()
        };
        // Connections registering from now on see the new set; sweep the older ones (owner
        // lookup reads /proc, so not under the lock).
        if pids.is_empty() {
            return Ok(());
        }
        let owners = socket_owners(&pids);
        for (id, peer) in open {
            if owners.owner_of(peer, self.addr).is_some() {
                if let Some(conn) = self.inner.state().conns.remove(&id) {
                    conn.shutdown();
                }
            }
        }
        Ok(())
    }

    /// The process ids currently refused by [`LinkProxy::set_blocked_sources`].
    pub fn blocked_sources(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.inner.state().blocked.iter().copied().collect();
        v.sort_unstable();
        v
    }

    /// Connections accepted since start, including those refused (while cut, from a blocked
    /// source, or because the target was unreachable): shows whether peers tried this link.
    pub fn connections_total(&self) -> u64 {
        self.inner.accepted.load(Ordering::SeqCst)
    }

    /// Connections currently being forwarded.
    pub fn connections_open(&self) -> usize {
        self.inner.state().conns.len()
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        self.inner.close_all();
        // The accept thread blocks in `accept`; a throwaway connection wakes it so it sees
        // `stop`, exits and releases the port. If even that connect fails, joining could hang
        // forever, so the thread is left detached instead.
        let woke = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).is_ok();
        if let Some(handle) = self.accept_thread.take() {
            if woke {
                let _ = handle.join();
            }
        }
        // Connections registered while we were stopping.
        self.inner.close_all();
    }
}

fn accept_loop(listener: TcpListener, inner: Arc<Inner>) {
    loop {
        let accepted = listener.accept();
        if inner.stop.load(Ordering::SeqCst) {
            return;
        }
        match accepted {
            Ok((client, peer)) => {
                inner.accepted.fetch_add(1, Ordering::SeqCst);
                if inner.cut.load(Ordering::SeqCst) {
                    // Refuse: the peer sees its connection closed right after connecting.
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let shared = Arc::clone(&inner);
                // Connecting upstream happens off the accept thread so a slow target cannot
                // stall other connections. If the thread cannot be spawned the closure (and
                // the client socket in it) is dropped, which refuses the connection.
                let _ = thread::Builder::new()
                    .name("proxy-conn".to_string())
                    .spawn(move || forward(client, peer, shared));
            }
            // Transient (e.g. out of file descriptors, or the peer reset before accept): back
            // off briefly rather than spin.
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Connects to the target, registers the pair and copies in both directions until either
/// side closes (or `cut` shuts the sockets down).
fn forward(client: TcpStream, peer: SocketAddr, inner: Arc<Inner>) {
    let target = *inner
        .target
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Ok(upstream) = TcpStream::connect_timeout(&target, UPSTREAM_CONNECT_TIMEOUT) else {
        // Target down: the client sees an immediate close, much like a refused connect.
        return;
    };
    // Forwarded chunks are written as they arrive; Nagle would add its own latency on top.
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let Some(id) = register(&inner, &client, &upstream, peer) else {
        let _ = client.shutdown(Shutdown::Both);
        let _ = upstream.shutdown(Shutdown::Both);
        return;
    };
    let (Ok(client_w), Ok(upstream_r)) = (client.try_clone(), upstream.try_clone()) else {
        finish(&inner, id, true);
        finish(&inner, id, true);
        return;
    };
    let shared = Arc::clone(&inner);
    let back = thread::Builder::new()
        .name("proxy-copy".to_string())
        .spawn(move || {
            let broken = copy(&shared, upstream_r, client_w);
            finish(&shared, id, broken);
        });
    if back.is_err() {
        finish(&inner, id, true);
    }
    let broken = copy(&inner, client, upstream);
    finish(&inner, id, broken);
}

/// Adds the connection to the table unless the link is cut, the proxy is stopping or the
/// connection comes from a blocked process.
fn register(
    inner: &Inner,
    client: &TcpStream,
    upstream: &TcpStream,
    peer: SocketAddr,
) -> Option<u64> {
    let (c, u) = (client.try_clone().ok()?, upstream.try_clone().ok()?);
    let mut owner_checked_at: Option<u64> = None;
    loop {
        let (generation, blocked) = {
            let mut state = inner.state();
            if inner.closing() {
                return None;
            }
            if state.blocked.is_empty() || owner_checked_at == Some(state.generation) {
                let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
                state.conns.insert(
                    id,
                    Conn {
                        client: c,
                        upstream: u,
                        peer,
                        running: 2,
                    },
                );
                return Some(id);
            }
            (state.generation, state.blocked.clone())
        };
        // Reading /proc happens without the lock; if the blocked set changes meanwhile, the
        // generation differs and the owner is checked again against the new set.
        if socket_owners(&blocked).owner_of(peer, inner.addr).is_some() {
            return None;
        }
        owner_checked_at = Some(generation);
    }
}

/// One copy thread is done. A broken direction tears the whole connection down (so the other
/// thread, blocked in `read`, wakes up); the last thread out drops the socket clones.
fn finish(inner: &Inner, id: u64, broken: bool) {
    let mut state = inner.state();
    let last = match state.conns.get_mut(&id) {
        Some(conn) => {
            if broken {
                conn.shutdown();
            }
            conn.running = conn.running.saturating_sub(1);
            conn.running == 0
        }
        // Already swept by `cut`, `set_blocked_sources` or `Drop`.
        None => false,
    };
    if last {
        state.conns.remove(&id);
    }
}

/// Copies `from` → `to` chunk by chunk, sleeping the injected delay before each write.
/// Returns `false` on a clean EOF (passed on as a half-close, so request/response protocols
/// that half-close keep working) and `true` when the connection broke.
fn copy(inner: &Inner, mut from: TcpStream, mut to: TcpStream) -> bool {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return false;
            }
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return true,
        };
        let delay = inner.delay();
        if !delay.is_zero() {
            thread::sleep(delay);
        }
        // Re-check after the delay: a cut during the sleep must not let this chunk through.
        if inner.closing() {
            return true;
        }
        if to.write_all(&buf[..n]).is_err() {
            return true;
        }
    }
}

/// A snapshot of which of a few processes own which sockets (by inode).
struct SocketOwners {
    /// `(local, remote)` of every IPv4 TCP socket → its inode, from `/proc/net/tcp`.
    sockets: HashMap<(SocketAddr, SocketAddr), u64>,
    /// Socket inode → owning process, for the candidate processes only.
    owners: HashMap<u64, u32>,
}

impl SocketOwners {
    /// The candidate process that opened the connection `local` → `remote`, if any.
    fn owner_of(&self, local: SocketAddr, remote: SocketAddr) -> Option<u32> {
        let inode = self.sockets.get(&(local, remote))?;
        self.owners.get(inode).copied()
    }
}

/// Reads the socket table and the open sockets of `pids`. Unreadable entries are skipped
/// (a process may exit meanwhile): an unknown owner is treated as not blocked.
fn socket_owners(pids: &HashSet<u32>) -> SocketOwners {
    let sockets = std::fs::read_to_string("/proc/net/tcp")
        .map(|t| parse_proc_net_tcp(&t))
        .unwrap_or_default();
    let mut owners = HashMap::new();
    for &pid in pids {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path()) {
                if let Some(inode) = socket_inode(&link.to_string_lossy()) {
                    owners.insert(inode, pid);
                }
            }
        }
    }
    SocketOwners { sockets, owners }
}

/// `socket:[12345]` → 12345.
fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Parses `/proc/net/tcp` into `(local, remote)` → inode.
fn parse_proc_net_tcp(text: &str) -> HashMap<(SocketAddr, SocketAddr), u64> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local = parse_proc_addr(f.get(1)?)?;
            let remote = parse_proc_addr(f.get(2)?)?;
            let inode = f.get(9)?.parse().ok()?;
            Some(((local, remote), inode))
        })
        .collect()
}

/// `0100007F:1F90` → `127.0.0.1:8080`. The kernel prints the network-order address as a
/// native-endian integer, so its native bytes are the address bytes; the port is plain hex.
fn parse_proc_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let ip = u32::from_str_radix(ip, 16).ok()?;
    let port = u16::from_str_radix(port, 16).ok()?;
    Some(SocketAddr::new(
        IpAddr::V4(Ipv4Addr::from(ip.to_ne_bytes())),
        port,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// An echo server on `127.0.0.1:0` (one thread per connection); lives as long as the test.
    fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                thread::spawn(move || {
                    let mut r = s.try_clone().unwrap();
                    let _ = std::io::copy(&mut r, &mut s);
                });
            }
        });
        addr
    }

    fn connect(addr: SocketAddr) -> TcpStream {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }

    fn round_trip(s: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
        s.write_all(msg).unwrap();
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).unwrap();
        got
    }

    /// True if the connection is closed: a read returns EOF or an error (reset) rather than
    /// timing out.
    fn is_closed(s: &mut TcpStream) -> bool {
        let mut b = [0u8; 1];
        match s.read(&mut b) {
            Ok(n) => n == 0,
            Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        }
    }

    fn wait_for(mut f: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !f() {
            if Instant::now() > deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(10));
        }
        true
    }

    #[test]
    fn bytes_pass_through_both_ways() {
        let proxy = LinkProxy::start(echo_server()).unwrap();
        assert!(proxy.addr().ip().is_loopback());
        let mut s = connect(proxy.addr());
        assert_eq!(round_trip(&mut s, b"hello"), b"hello");
        // More than one chunk, so the copy loop iterates.
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut w = s.try_clone().unwrap();
        let sent = big.clone();
        let writer = thread::spawn(move || w.write_all(&sent).unwrap());
        let mut got = vec![0u8; big.len()];
        s.read_exact(&mut got).unwrap();
        writer.join().unwrap();
        assert_eq!(got, big);
        assert_eq!(proxy.connections_total(), 1);
        assert_eq!(proxy.connections_open(), 1);
    }

    #[test]
    fn half_close_is_forwarded() {
        let proxy = LinkProxy::start(echo_server()).unwrap();
        let mut s = connect(proxy.addr());
        s.write_all(b"bye").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"bye");
        // Both copy threads finish, so the entry goes away.
        assert!(wait_for(|| proxy.connections_open() == 0));
    }

    #[test]
    fn cut_closes_open_connections_and_refuses_new_ones_until_heal() {
        let proxy = LinkProxy::start(echo_server()).unwrap();
        let mut s = connect(proxy.addr());
        assert_eq!(round_trip(&mut s, b"ping"), b"ping");

        proxy.cut();
        assert!(proxy.is_cut());
        assert!(is_closed(&mut s), "open connection survived the cut");
        assert_eq!(proxy.connections_open(), 0);

        // New connections are accepted by the kernel but closed at once.
        let mut n = connect(proxy.addr());
        let _ = n.write_all(b"x");
        assert!(is_closed(&mut n), "new connection forwarded while cut");

        proxy.heal();
        assert!(!proxy.is_cut());
        let mut h = connect(proxy.addr());
        assert_eq!(round_trip(&mut h, b"again"), b"again");
        assert_eq!(proxy.connections_total(), 3);
    }

    #[test]
    fn delay_adds_latency_to_a_round_trip() {
        let proxy = LinkProxy::start(echo_server()).unwrap();
        let mut s = connect(proxy.addr());
        assert_eq!(round_trip(&mut s, b"warm"), b"warm");

        let d = Duration::from_millis(150);
        proxy.set_delay(d);
        assert_eq!(proxy.delay(), d);
        let t = Instant::now();
        assert_eq!(round_trip(&mut s, b"slow"), b"slow");
        // One delay per direction.
        assert!(t.elapsed() >= 2 * d, "round trip took {:?}", t.elapsed());

        proxy.set_delay(Duration::ZERO);
        let t = Instant::now();
        assert_eq!(round_trip(&mut s, b"fast"), b"fast");
        assert!(t.elapsed() < d, "round trip took {:?}", t.elapsed());
    }

    #[test]
    fn unreachable_target_closes_the_client() {
        // A port that was free a moment ago: nothing listens there.
        let dead = crate::free_loopback_addr().unwrap();
        let proxy = LinkProxy::start(dead).unwrap();
        let mut s = connect(proxy.addr());
        assert!(is_closed(&mut s));
        assert_eq!(proxy.connections_total(), 1);
    }

    #[test]
    fn non_loopback_addresses_are_refused() {
        let outside: SocketAddr = "192.0.2.1:80".parse().unwrap();
        assert!(LinkProxy::start(outside).is_err());
        let loopback: SocketAddr = "127.0.0.1:80".parse().unwrap();
        assert!(LinkProxy::start_on("0.0.0.0:0".parse().unwrap(), loopback).is_err());
    }

    #[test]
    fn drop_closes_connections_and_frees_the_port_for_start_on() {
        let echo = echo_server();
        let proxy = LinkProxy::start(echo).unwrap();
        let addr = proxy.addr();
        let mut s = connect(addr);
        assert_eq!(round_trip(&mut s, b"1"), b"1");
        drop(proxy);
        assert!(is_closed(&mut s));
        // Same port again (restart scenarios).
        let again = LinkProxy::start_on(addr, echo).unwrap();
        assert_eq!(again.addr(), addr);
        let mut s = connect(addr);
        assert_eq!(round_trip(&mut s, b"2"), b"2");
    }

    #[test]
    fn proc_addresses_parse() {
        let native = u32::from_ne_bytes([127, 0, 0, 1]);
        let s = format!("{native:08X}:1F90");
        assert_eq!(parse_proc_addr(&s), Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(socket_inode("socket:[4242]"), Some(4242));
        assert_eq!(socket_inode("pipe:[4242]"), None);
        let table = format!(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: {s} {s} 01 00000000:00000000 00:00000000 00000000  1000        0 777 1 0 20 4 30 10 -1\n"
        );
        let parsed = parse_proc_net_tcp(&table);
        let a: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(parsed.get(&(a, a)), Some(&777));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn blocked_source_processes_are_refused_others_pass() {
        let proxy = LinkProxy::start(echo_server()).unwrap();
        let mut s = connect(proxy.addr());
        assert_eq!(round_trip(&mut s, b"a"), b"a");

        // Some other process: our own connections keep working.
        let mut other = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        proxy.set_blocked_sources(&[other.id()]).unwrap();
        assert_eq!(proxy.blocked_sources(), vec![other.id()]);
        assert_eq!(round_trip(&mut s, b"b"), b"b");
        let mut n = connect(proxy.addr());
        assert_eq!(round_trip(&mut n, b"c"), b"c");

        // This process: open connections close, new ones are refused.
        proxy.set_blocked_sources(&[std::process::id()]).unwrap();
        assert!(is_closed(&mut s), "blocked source kept its connection");
        assert!(is_closed(&mut n), "blocked source kept its connection");
        let mut r = connect(proxy.addr());
        let _ = r.write_all(b"x");
        assert!(is_closed(&mut r), "blocked source got a new connection");
        assert_eq!(proxy.connections_open(), 0);

        proxy.set_blocked_sources(&[]).unwrap();
        let mut h = connect(proxy.addr());
        assert_eq!(round_trip(&mut h, b"d"), b"d");
        let _ = other.kill();
        let _ = other.wait();
    }
}
