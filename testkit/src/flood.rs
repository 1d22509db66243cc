//! A connection flood: many idle client sockets held open against one address.
//!
//! This is how ten thousand idle keep-alive clients look to a node: connections that take a slot
//! and say nothing. [`ConnectionFlood`] keeps `count` of them open, reconnecting any the server
//! closes (as real clients' pools do), until it is dropped.

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// How often the flood checks its sockets and replaces closed ones.
const TICK: Duration = Duration::from_millis(100);

/// Idle sockets held open against one address by a background thread.
#[derive(Debug)]
pub struct ConnectionFlood {
    stop: Arc<AtomicBool>,
    closed_by_server: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl ConnectionFlood {
    /// Opens `count` connections to `target` and keeps them open.
    pub fn start(target: SocketAddr, count: usize) -> ConnectionFlood {
        let stop = Arc::new(AtomicBool::new(false));
        let closed_by_server = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, closed) = (stop.clone(), closed_by_server.clone());
            thread::spawn(move || {
                let mut socks: Vec<Option<TcpStream>> = (0..count).map(|_| None).collect();
                while !stop.load(Ordering::Relaxed) {
                    for slot in socks.iter_mut() {
                        if slot.as_ref().is_some_and(|s| !is_open(s)) {
                            closed.fetch_add(1, Ordering::Relaxed);
                            *slot = None;
                        }
                        if slot.is_none() {
                            *slot = TcpStream::connect_timeout(&target, TICK).ok();
                        }
                    }
                    thread::sleep(TICK);
                }
            })
        };
        ConnectionFlood {
            stop,
            closed_by_server,
            thread: Some(thread),
        }
    }

    /// How many of the flood's connections the server has closed so far.
    pub fn closed_by_server(&self) -> u64 {
        self.closed_by_server.load(Ordering::Relaxed)
    }
}

/// Whether the server still holds `s` open (no EOF, no error pending).
fn is_open(s: &TcpStream) -> bool {
    if s.set_nonblocking(true).is_err() {
        return false;
    }
    let mut b = [0u8; 1];
    let open = matches!(s.peek(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    let _ = s.set_nonblocking(false);
    open
}

impl Drop for ConnectionFlood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::time::Instant;

    #[test]
    fn holds_its_connections_and_replaces_the_ones_the_server_closes() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let flood = ConnectionFlood::start(l.local_addr().unwrap(), 3);
        let mut accepted: Vec<TcpStream> = (0..3).map(|_| l.accept().unwrap().0).collect();
        // The server closes one: the flood notices and opens a replacement.
        drop(accepted.remove(0));
        let (again, _) = l.accept().unwrap();
        accepted.push(again);
        let started = Instant::now();
        while flood.closed_by_server() == 0 && started.elapsed() < Duration::from_secs(5) {
            thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(flood.closed_by_server(), 1);
    }
}
