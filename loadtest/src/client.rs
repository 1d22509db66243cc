//! A minimal keep-alive HTTP/1.1 client: one TCP connection, one request at a time, the request
//! written with a single `write`, the answer parsed in place with `httparse`.
//!
//! Why not hyper: its client runs each connection as a separate task fed through channels, so
//! every request costs two cross-task wake-ups on top of the syscalls. A load generator that
//! must cost the machine less CPU per request than `wrk` does (see `docs/benchmarks.md`) cannot
//! afford that; this client does what wrk does — write, read, parse — inside the sending task.
//! Bodies may be `Content-Length`, chunked (Tomcat, i.e. Java Nacos), or delimited by close.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Methods the Nacos naming API uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
        }
    }
}

/// A request with every parameter in the query string (as the Java 1.4 client sends them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// Path and query, already percent-encoded.
    pub target: String,
}

/// Why one exchange failed; the connection is unusable afterwards.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("timed out")]
    Timeout,
    #[error("i/o: {0}")]
    Io(std::io::Error),
    #[error("connection closed before a complete answer")]
    Closed,
    #[error("malformed answer: {0}")]
    Protocol(String),
}

/// A parsed answer, borrowing the connection's buffers until the next request.
#[derive(Debug)]
pub struct Response<'a> {
    pub status: u16,
    pub body: &'a [u8],
}

/// How the body of an answer is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BodyKind {
    Length(usize),
    Chunked,
    UntilClose,
    Empty,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Head {
    status: u16,
    header_len: usize,
    body: BodyKind,
    close: bool,
}

const MAX_HEADERS: usize = 32;
const READ_CHUNK: usize = 64 * 1024;
/// Largest response body accepted; the target is any server, and a bogus length must not make
/// the harness allocate without bound or overflow its offsets.
const MAX_BODY: usize = 256 * 1024 * 1024;

/// Parses a response head at the start of `buf`; `Ok(None)` if more bytes are needed.
fn parse_head(buf: &[u8], head_request: bool) -> Result<Option<Head>, ClientError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let header_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(ClientError::Protocol(e.to_string())),
    };
    let status = resp
        .code
        .ok_or_else(|| ClientError::Protocol("no status code".into()))?;
    let mut length = None;
    let mut chunked = false;
    let mut close = resp.version == Some(0);
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .filter(|n| *n <= MAX_BODY)
                .ok_or_else(|| ClientError::Protocol("bad or too large content-length".into()))?;
            length = Some(v);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = h
                .value
                .split(|&b| b == b',')
                .any(|v| v.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            let v = h.value.trim_ascii();
            if v.eq_ignore_ascii_case(b"close") {
                close = true;
            } else if v.eq_ignore_ascii_case(b"keep-alive") {
                close = false;
            }
        }
    }
    let body = if head_request || status / 100 == 1 || status == 204 || status == 304 {
        BodyKind::Empty
    } else if chunked {
        BodyKind::Chunked
    } else if let Some(n) = length {
        BodyKind::Length(n)
    } else {
        close = true;
        BodyKind::UntilClose
    };
    Ok(Some(Head {
        status,
        header_len,
        body,
        close,
    }))
}

/// Decodes a complete chunked body from the start of `buf` into `out`. Returns the bytes
/// consumed (trailers included), or `Ok(None)` if more input is needed.
fn decode_chunked(buf: &[u8], out: &mut Vec<u8>) -> Result<Option<usize>, ClientError> {
    out.clear();
    let mut pos = 0;
    loop {
        let Some(line_end) = find_crlf(&buf[pos..]) else {
            return Ok(None);
        };
        let line = &buf[pos..pos + line_end];
        // Chunk extensions (";name=value") are allowed and ignored.
        let size_hex = line
            .split(|&b| b == b';')
            .next()
            .unwrap_or(line)
            .trim_ascii();
        let size = std::str::from_utf8(size_hex)
            .ok()
            .and_then(|s| usize::from_str_radix(s, 16).ok())
            .filter(|n| *n <= MAX_BODY && out.len() + n <= MAX_BODY)
            .ok_or_else(|| ClientError::Protocol("bad or too large chunk size".into()))?;
        pos += line_end + 2;
        if size == 0 {
            // Trailers: header lines until an empty line.
            loop {
                let Some(end) = find_crlf(&buf[pos..]) else {
                    return Ok(None);
                };
                pos += end + 2;
                if end == 0 {
                    return Ok(Some(pos));
                }
            }
        }
        if buf.len() < pos + size + 2 {
            return Ok(None);
        }
        out.extend_from_slice(&buf[pos..pos + size]);
        if &buf[pos + size..pos + size + 2] != b"\r\n" {
            return Err(ClientError::Protocol("chunk not followed by CRLF".into()));
        }
        pos += size + 2;
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

/// One keep-alive connection.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    host: String,
    user_agent: String,
    /// Appended to every request's query (`accessToken=…`), or empty.
    query: String,
    wbuf: Vec<u8>,
    rbuf: Vec<u8>,
    chunked: Vec<u8>,
    /// Bytes of `rbuf` that belong to the previous answer, dropped before the next request.
    consumed: usize,
    closed: bool,
}

impl Conn {
    pub async fn connect(
        addr: SocketAddr,
        host: &str,
        user_agent: &str,
        timeout: Duration,
    ) -> Result<Conn, ClientError> {
        Self::connect_from(addr, None, host, user_agent, timeout).await
    }

    /// [`Conn::connect`] from local address `source` (any port) when given.
    pub async fn connect_from(
        addr: SocketAddr,
        source: Option<std::net::IpAddr>,
        host: &str,
        user_agent: &str,
        timeout: Duration,
    ) -> Result<Conn, ClientError> {
        let connect = async {
            match source {
                None => TcpStream::connect(addr).await,
                Some(ip) => {
                    let socket = if ip.is_ipv4() {
                        tokio::net::TcpSocket::new_v4()?
                    } else {
                        tokio::net::TcpSocket::new_v6()?
                    };
                    socket.bind(SocketAddr::new(ip, 0))?;
                    socket.connect(addr).await
                }
            }
        };
        let stream = match tokio::time::timeout(timeout, connect).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(ClientError::Connect(e)),
            Err(_) => return Err(ClientError::Timeout),
        };
        // One write per request already; without NODELAY a small write after a delayed ACK
        // would add 40 ms to the measured latency.
        stream.set_nodelay(true).map_err(ClientError::Connect)?;
        Ok(Conn {
            stream,
            host: host.to_string(),
            user_agent: user_agent.to_string(),
            query: String::new(),
            wbuf: Vec::with_capacity(512),
            rbuf: Vec::with_capacity(READ_CHUNK),
            chunked: Vec::new(),
            consumed: 0,
            closed: false,
        })
    }

    /// Sends `query` (already encoded `name=value` pairs) with every request.
    pub fn with_query(mut self, query: &str) -> Conn {
        self.query = query.to_string();
        self
    }

    /// False once the server said `Connection: close` (or an HTTP/1.0 answer without
    /// keep-alive): the caller must open a new connection.
    pub fn reusable(&self) -> bool {
        !self.closed
    }

    /// Sends `req` and reads the whole answer. Any error leaves the connection unusable.
    pub async fn send(&mut self, req: &Request) -> Result<Response<'_>, ClientError> {
        self.exchange(req.method, &req.target, &[], None).await
    }

    /// POSTs `form` (already encoded) to `target` with extra `headers` (the config listener:
    /// `Listening-Configs` in the body, `Long-Pulling-Timeout` in a header).
    pub async fn send_form(
        &mut self,
        target: &str,
        headers: &[(&str, &str)],
        form: &[u8],
    ) -> Result<Response<'_>, ClientError> {
        self.exchange(Method::Post, target, headers, Some(form))
            .await
    }

    async fn exchange(
        &mut self,
        method: Method,
        target: &str,
        headers: &[(&str, &str)],
        form: Option<&[u8]>,
    ) -> Result<Response<'_>, ClientError> {
        self.rbuf.drain(..self.consumed);
        self.consumed = 0;
        if !self.rbuf.is_empty() {
            return Err(ClientError::Protocol(
                "unsolicited bytes before the request".into(),
            ));
        }
        self.wbuf.clear();
        self.wbuf.extend_from_slice(method.as_str().as_bytes());
        self.wbuf.push(b' ');
        self.wbuf.extend_from_slice(target.as_bytes());
        if !self.query.is_empty() {
            self.wbuf
                .push(if target.contains('?') { b'&' } else { b'?' });
            self.wbuf.extend_from_slice(self.query.as_bytes());
        }
        self.wbuf.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        self.wbuf.extend_from_slice(self.host.as_bytes());
        self.wbuf.extend_from_slice(b"\r\nUser-Agent: ");
        self.wbuf.extend_from_slice(self.user_agent.as_bytes());
        for (name, value) in headers {
            self.wbuf.extend_from_slice(b"\r\n");
            self.wbuf.extend_from_slice(name.as_bytes());
            self.wbuf.extend_from_slice(b": ");
            self.wbuf.extend_from_slice(value.as_bytes());
        }
        match form {
            Some(body) => {
                self.wbuf.extend_from_slice(
                    b"\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: ",
                );
                self.wbuf
                    .extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
                self.wbuf.extend_from_slice(b"\r\n\r\n");
                self.wbuf.extend_from_slice(body);
            }
            None => {
                if method != Method::Get {
                    self.wbuf.extend_from_slice(b"\r\nContent-Length: 0");
                }
                self.wbuf.extend_from_slice(b"\r\n\r\n");
            }
        }
        self.stream
            .write_all(&self.wbuf)
            .await
            .map_err(ClientError::Io)?;

        let head = loop {
            if let Some(h) = parse_head(&self.rbuf, false)? {
                break h;
            }
            self.fill().await?;
        };
        self.forget_readiness_if_drained(&head);
        self.closed = head.close;
        let start = head.header_len;
        match head.body {
            BodyKind::Empty => {
                self.consumed = start;
                Ok(Response {
                    status: head.status,
                    body: &[],
                })
            }
            BodyKind::Length(n) => {
                while self.rbuf.len() < start + n {
                    self.fill().await?;
                }
                self.consumed = start + n;
                Ok(Response {
                    status: head.status,
                    body: &self.rbuf[start..start + n],
                })
            }
            BodyKind::Chunked => loop {
                if let Some(used) = decode_chunked(&self.rbuf[start..], &mut self.chunked)? {
                    self.consumed = start + used;
                    return Ok(Response {
                        status: head.status,
                        body: &self.chunked,
                    });
                }
                self.fill().await?;
            },
            BodyKind::UntilClose => {
                loop {
                    match self.fill().await {
                        Ok(()) => {}
                        Err(ClientError::Closed) => break,
                        Err(e) => return Err(e),
                    }
                }
                self.consumed = self.rbuf.len();
                Ok(Response {
                    status: head.status,
                    body: &self.rbuf[start..],
                })
            }
        }
    }

    /// After the last byte of an answer arrived in a single read, the socket is empty and the
    /// server sends nothing until the next request. Tokio still remembers it as readable, so the
    /// next read would be a syscall that fails with EAGAIN before waiting for epoll; clearing
    /// the flag here (no syscall) saves that read on every request, as wrk does by only reading
    /// after epoll reports data. Only done when the buffer holds exactly this answer, so no
    /// readiness is ever lost for data that already arrived.
    fn forget_readiness_if_drained(&self, head: &Head) {
        let complete_len = match head.body {
            BodyKind::Empty => Some(head.header_len),
            BodyKind::Length(n) => Some(head.header_len + n),
            BodyKind::Chunked | BodyKind::UntilClose => None,
        };
        if complete_len == Some(self.rbuf.len()) {
            let _ = self.stream.try_io(tokio::io::Interest::READABLE, || {
                Err::<(), _>(std::io::ErrorKind::WouldBlock.into())
            });
        }
    }

    async fn fill(&mut self) -> Result<(), ClientError> {
        if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 4 {
            self.rbuf.reserve(READ_CHUNK);
        }
        match self.stream.read_buf(&mut self.rbuf).await {
            Ok(0) => Err(ClientError::Closed),
            Ok(_) => Ok(()),
            Err(e) => Err(ClientError::Io(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    #[test]
    fn parses_content_length_heads_and_waits_for_more() {
        let full = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let h = parse_head(full, false).unwrap().unwrap();
        assert_eq!(h.status, 200);
        assert_eq!(h.body, BodyKind::Length(2));
        assert!(!h.close);
        assert_eq!(&full[h.header_len..], b"ok");
        assert_eq!(parse_head(&full[..20], false).unwrap(), None);
        let huge = b"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615\r\n\r\n";
        assert!(parse_head(huge, false).is_err());
        let h = parse_head(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert_eq!(h.body, BodyKind::UntilClose);
        assert!(h.close);
        assert!(parse_head(b"SMTP ready\r\n\r\n", false).is_err());
    }

    #[test]
    fn decodes_chunked_bodies_with_extensions_and_trailers() {
        let body = b"4\r\nWiki\r\n5;x=y\r\npedia\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        let mut out = Vec::new();
        let used = decode_chunked(body, &mut out).unwrap().unwrap();
        assert_eq!(out, b"Wikipedia");
        assert_eq!(&body[used..], b"NEXT");
        // Every strict prefix is incomplete, never an error.
        for cut in 0..used {
            assert_eq!(
                decode_chunked(&body[..cut], &mut out).unwrap(),
                None,
                "{cut}"
            );
        }
        assert!(decode_chunked(b"zz\r\n", &mut out).is_err());
        // A chunk size near usize::MAX must be refused, not overflow the offsets.
        assert!(decode_chunked(b"ffffffffffffffff\r\nx\r\n", &mut out).is_err());
    }

    #[tokio::test]
    async fn keep_alive_exchange_over_a_real_socket() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut buf = vec![0u8; 4096];
            // Two requests on one connection; answer the first with a length, the second
            // chunked and split across writes.
            while seen.windows(4).filter(|w| *w == b"\r\n\r\n").count() < 1 {
                let n = s.read(&mut buf).await.unwrap();
                seen.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await
                .unwrap();
            while seen.windows(4).filter(|w| *w == b"\r\n\r\n").count() < 2 {
                let n = s.read(&mut buf).await.unwrap();
                seen.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab")
                .await
                .unwrap();
            s.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            s.write_all(b"c\r\n0\r\n\r\n").await.unwrap();
            String::from_utf8(seen).unwrap()
        });
        let mut c = Conn::connect(addr, "h:1", "ua", Duration::from_secs(2))
            .await
            .unwrap()
            .with_query("accessToken=t%2B1");
        let r = c
            .send(&Request {
                method: Method::Post,
                target: "/a?x=1".into(),
            })
            .await
            .unwrap();
        assert_eq!((r.status, r.body), (200, &b"ok"[..]));
        let r = c
            .send(&Request {
                method: Method::Get,
                target: "/b".into(),
            })
            .await
            .unwrap();
        assert_eq!((r.status, r.body), (404, &b"abc"[..]));
        assert!(c.reusable());
        let seen = server.await.unwrap();
        assert!(seen.starts_with(
            "POST /a?x=1&accessToken=t%2B1 HTTP/1.1\r\nHost: h:1\r\nUser-Agent: ua\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(seen
            .ends_with("GET /b?accessToken=t%2B1 HTTP/1.1\r\nHost: h:1\r\nUser-Agent: ua\r\n\r\n"));
    }
}
