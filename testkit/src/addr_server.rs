//! A tiny Nacos address server for tests: answers `GET /nacos/serverlist` (any path, really)
//! with the current content of a member file, re-read on every request.
//!
//! Nodes started with `--members-endpoint` poll it; editing the file (e.g. through
//! [`crate::cluster::TestCluster::add_node`]) changes what they discover. Loopback only.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};

/// A running address server; stops when dropped.
#[derive(Debug)]
pub struct AddressServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl AddressServer {
    /// Serves the content of `file` on a free loopback port.
    pub fn start(file: &Path) -> Result<AddressServer> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the address server")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let (file, flag) = (file.to_path_buf(), stop.clone());
        let thread = thread::spawn(move || serve(listener, file, flag));
        Ok(AddressServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The endpoint URL nodes should poll.
    pub fn url(&self) -> String {
        format!("http://{}/nacos/serverlist", self.addr)
    }
}

impl Drop for AddressServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(listener: TcpListener, file: PathBuf, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = answer(stream, &file);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(10));
            }
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn answer(mut stream: TcpStream, file: &Path) -> Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let (status, body) = match std::fs::read_to_string(file) {
        Ok(text) => ("200 OK", text),
        Err(e) => ("500 Internal Server Error", e.to_string()),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_the_file_as_it_is_now() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("cluster.conf");
        std::fs::write(&f, "127.0.0.1:1\n").unwrap();
        let s = AddressServer::start(&f).unwrap();
        let addr: SocketAddr = s.url()["http://".len()..]
            .split('/')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let (code, body) =
            crate::http_get(addr, "/nacos/serverlist", Duration::from_secs(2)).unwrap();
        assert_eq!((code, body.as_str()), (200, "127.0.0.1:1\n"));
        std::fs::write(&f, "127.0.0.1:2\n").unwrap();
        let (_, body) = crate::http_get(addr, "/nacos/serverlist", Duration::from_secs(2)).unwrap();
        assert_eq!(body, "127.0.0.1:2\n");
    }
}
