//! A small async HTTP client for the Nacos API, shared by the integration suites.
//!
//! Requests are sent the way legacy clients send them: parameters in the query string or in a
//! form body, with a chosen User-Agent, so tests exercise the same parsing paths.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The `hosts` of an instance-list answer (empty when `body` is not one).
pub fn listed_hosts(body: &str) -> Vec<serde_json::Value> {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|mut j| match j["hosts"].take() {
            serde_json::Value::Array(a) => Some(a),
            _ => None,
        })
        .unwrap_or_default()
}

/// The `hosts` of an instance-list answer, or `None` when `body` is not one (a body cut short
/// by a timeout must not read as an empty list).
pub fn list_document(body: &str) -> Option<Vec<serde_json::Value>> {
    let mut j = serde_json::from_str::<serde_json::Value>(body).ok()?;
    match j["hosts"].take() {
        serde_json::Value::Array(a) => Some(a),
        _ => None,
    }
}

/// The IPs of `hosts`, sorted.
pub fn ips_of(hosts: &[serde_json::Value]) -> Vec<String> {
    let mut ips: Vec<String> = hosts
        .iter()
        .filter_map(|h| h["ip"].as_str().map(str::to_string))
        .collect();
    ips.sort();
    ips
}

/// Polls `f` every 20 ms until it yields `Some`, for at most `timeout`; the error names `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            anyhow::bail!("{what}: not within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a test needs from an answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Body as text.
    pub body: String,
    /// Response headers (names in lower case), in order.
    pub headers: Vec<(String, String)>,
}

impl Reply {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON (panics with the body on failure: test-only).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }
}

/// One [`Api`] per node with a given timeout, kept across calls (with its pooled
/// connections) as a real client keeps them; the workloads and checkers share this.
#[derive(Debug)]
pub struct Clients {
    timeout: Duration,
    by_node: std::collections::HashMap<SocketAddr, Api>,
}

impl Clients {
    /// No clients yet; each gets `timeout` per request.
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            by_node: std::collections::HashMap::new(),
        }
    }

    /// The client of `node` (a cheap clone sharing its connections).
    pub fn get(&mut self, node: SocketAddr) -> Api {
        let timeout = self.timeout;
        self.by_node
            .entry(node)
            .or_insert_with(|| Api::new(node).with_timeout(timeout))
            .clone()
    }
}

/// A client bound to one node.
#[derive(Debug, Clone)]
pub struct Api {
    base: String,
    client: reqwest::Client,
    user_agent: String,
}

impl Api {
    /// A client for the node at `addr`, identifying as the Java 1.4 client.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            base: format!("http://{addr}"),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            user_agent: "Nacos-Java-Client:v1.4.2".to_string(),
        }
    }

    /// The same client connecting from local address `ip` (a loopback address other than
    /// 127.0.0.1 makes a second, distinguishable client on one machine).
    pub fn with_local_address(mut self, ip: std::net::IpAddr) -> Self {
        self.client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .local_address(ip)
            .build()
            .unwrap_or_default();
        self
    }

    /// `method path?query` with this client's `User-Agent`.
    fn request(&self, method: &str, path: &str, query: &[(&str, &str)]) -> reqwest::RequestBuilder {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
        self.client
            .request(m, format!("{}{}", self.base, path))
            .header("User-Agent", &self.user_agent)
            .query(query)
    }

    /// [`Api::call`] with request headers.
    pub async fn call_with_headers(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = self.request(method, path, query);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        finish(req.send().await).await
    }

    /// The same client with another per-request timeout (a frozen node never answers; a
    /// checker must move on).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .unwrap_or_default();
        self
    }

    /// The same client with another User-Agent.
    pub fn with_agent(mut self, ua: &str) -> Self {
        self.user_agent = ua.to_string();
        self
    }

    /// Logs in as `user` once the server can say yes (auth bootstrapped, node ready), trying
    /// every 500 ms for at most `timeout`: failed logins count towards the lockout, so the
    /// attempts are spaced. Returns the access token.
    pub async fn login_when_ready(
        &self,
        user: &str,
        password: &str,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self
                .form(
                    "POST",
                    "/nacos/v1/auth/login",
                    &[("username", user), ("password", password)],
                )
                .await;
            if r.status == 200 {
                let doc: serde_json::Value = serde_json::from_str(&r.body)?;
                return doc["accessToken"]
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| anyhow::anyhow!("login answer without a token: {}", r.body));
            }
            if Instant::now() >= deadline {
                anyhow::bail!("{user} could not log in within {timeout:?}: {r:?}");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The sum of every sample of the Prometheus metric lines starting with `name` (give
    /// labels too, e.g. `nacre_forwards_total{result="forwarded"}`, to pick one series).
    pub async fn metric(&self, name: &str) -> f64 {
        self.call("GET", "/metrics", &[])
            .await
            .body
            .lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// The node's ephemeral data as `GET /nacre/v1/cluster` reports it: (services,
    /// fingerprint), or `None` without an answer.
    pub async fn ephemeral_fingerprint(&self) -> Option<(u64, String)> {
        let r = self.call("GET", "/nacre/v1/cluster", &[]).await;
        if r.status != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&r.body).ok()?;
        Some((
            v["ephemeral"]["services"].as_u64()?,
            v["ephemeral"]["fingerprint"].as_str()?.to_string(),
        ))
    }

    /// The `hosts` listed for `service`, or `None` without a whole list answer (no answer, a
    /// non-200 one, or a body cut short).
    pub async fn listed(&self, service: &str) -> Option<Vec<serde_json::Value>> {
        let r = self
            .call(
                "GET",
                "/nacos/v1/ns/instance/list",
                &[("serviceName", service)],
            )
            .await;
        if r.status != 200 {
            return None;
        }
        list_document(&r.body)
    }

    /// The `hosts` listed for `service` (empty without a list answer).
    pub async fn hosts(&self, service: &str) -> Vec<serde_json::Value> {
        self.listed(service).await.unwrap_or_default()
    }

    /// The IPs listed for `service`, sorted (empty on a non-200 answer).
    pub async fn ips(&self, service: &str) -> Vec<String> {
        ips_of(&self.hosts(service).await)
    }

    /// `GET /nacos/v1/ns/instance/list` with the given query, parsed as JSON.
    pub async fn list(&self, query: &[(&str, &str)]) -> serde_json::Value {
        self.call("GET", "/nacos/v1/ns/instance/list", query)
            .await
            .json()
    }

    /// `method /nacos/v1/ns/instance` with the given query.
    pub async fn instance(&self, method: &str, query: &[(&str, &str)]) -> Reply {
        self.call(method, "/nacos/v1/ns/instance", query).await
    }

    /// Switches the `DEFAULT` cluster of `service` to the `NONE` checker (probes stop) and
    /// sets `ip:port` unhealthy by hand, as an operator would; asserts both answers are `ok`.
    pub async fn mark_unhealthy_by_hand(&self, service: &str, ip: &str, port: &str) {
        let r = self
            .call(
                "PUT",
                "/nacos/v1/ns/cluster",
                &[
                    ("serviceName", service),
                    ("clusterName", "DEFAULT"),
                    ("checkPort", "80"),
                    ("useInstancePort4Check", "true"),
                    ("healthChecker", r#"{"type":"NONE"}"#),
                ],
            )
            .await;
        assert_eq!(r.body, "ok", "switching {service} to the NONE checker");
        let r = self
            .call(
                "PUT",
                "/nacos/v1/ns/health/instance",
                &[
                    ("serviceName", service),
                    ("ip", ip),
                    ("port", port),
                    ("healthy", "false"),
                ],
            )
            .await;
        assert_eq!(r.body, "ok", "marking {ip}:{port} unhealthy");
    }

    /// Sends `method path?query` with no body.
    pub async fn call(&self, method: &str, path: &str, query: &[(&str, &str)]) -> Reply {
        self.send(method, path, query, None).await
    }

    /// Sends `method path` with the parameters in a form body.
    pub async fn form(&self, method: &str, path: &str, form: &[(&str, &str)]) -> Reply {
        self.send(method, path, &[], Some(form)).await
    }

    /// `GET /nacos/v1/cs/configs` (`tenant` only when given).
    pub async fn config(&self, data_id: &str, group: &str, tenant: Option<&str>) -> Reply {
        let mut q = vec![("dataId", data_id), ("group", group)];
        q.extend(tenant.map(|t| ("tenant", t)));
        self.call("GET", "/nacos/v1/cs/configs", &q).await
    }

    /// `POST /nacos/v1/cs/configs` with a form body, as the npm client sends it.
    pub async fn publish_config(
        &self,
        data_id: &str,
        group: &str,
        tenant: Option<&str>,
        content: &str,
    ) -> Reply {
        let mut f = vec![("dataId", data_id), ("group", group), ("content", content)];
        f.extend(tenant.map(|t| ("tenant", t)));
        self.form("POST", "/nacos/v1/cs/configs", &f).await
    }

    /// `POST /nacos/v1/cs/configs/listener` with `Listening-Configs` and, when given, the
    /// `Long-Pulling-Timeout` header (ms) the clients send.
    pub async fn listen_configs(&self, listening: &str, timeout_ms: Option<u64>) -> Reply {
        self.listen_configs_with(listening, timeout_ms, &[]).await
    }

    /// [`Api::listen_configs`] with `query` parameters too (e.g. `accessToken`).
    pub async fn listen_configs_with(
        &self,
        listening: &str,
        timeout_ms: Option<u64>,
        query: &[(&str, &str)],
    ) -> Reply {
        let mut req = self
            .client
            .post(format!("{}/nacos/v1/cs/configs/listener", self.base))
            .header("User-Agent", &self.user_agent)
            .query(query)
            .form(&[("Listening-Configs", listening)]);
        if let Some(t) = timeout_ms {
            req = req
                .header("Long-Pulling-Timeout", t.to_string())
                .timeout(Duration::from_millis(t + 10_000));
        }
        finish(req.send().await).await
    }

    /// `GET path_and_query` with the body as bytes (a binary answer, such as an export's zip):
    /// status, headers (lower-case names), body.
    pub async fn get_bytes(&self, path_and_query: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
        match self.request("GET", path_and_query, &[]).send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let headers = header_pairs(resp.headers());
                let body = resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
                (status, headers, body)
            }
            Err(e) => (0, Vec::new(), e.to_string().into_bytes()),
        }
    }

    /// `POST path_and_query` with a `multipart/form-data` body: `fields` as text parts, then
    /// `file` (name, bytes) as a file part, as a browser uploads a file.
    pub async fn upload(
        &self,
        path_and_query: &str,
        fields: &[(&str, &str)],
        file: Option<(&str, &[u8])>,
    ) -> Reply {
        const BOUNDARY: &str = "----nacre-testkit-boundary-7d2f";
        let mut body = Vec::new();
        for (name, value) in fields {
            body.extend_from_slice(
                format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                    .as_bytes(),
            );
        }
        if let Some((filename, data)) = file {
            body.extend_from_slice(
                format!(
                    "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\nContent-Type: application/zip\r\n\r\n"
                )
                .as_bytes(),
            );
            body.extend_from_slice(data);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
        self.raw(
            "POST",
            path_and_query,
            &format!("multipart/form-data; boundary={BOUNDARY}"),
            body,
        )
        .await
    }

    /// Sends raw bytes as the body with the given content type.
    pub async fn raw(&self, method: &str, path_and_query: &str, ct: &str, body: Vec<u8>) -> Reply {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
        let r = self
            .client
            .request(m, format!("{}{}", self.base, path_and_query))
            .header("User-Agent", &self.user_agent)
            .header("Content-Type", ct)
            .body(body)
            .send()
            .await;
        finish(r).await
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        form: Option<&[(&str, &str)]>,
    ) -> Reply {
        let mut req = self.request(method, path, query);
        if let Some(f) = form {
            req = req.form(f);
        }
        finish(req.send().await).await
    }
}

/// A response's headers as (lower-case name, value) pairs.
fn header_pairs(h: &reqwest::header::HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

async fn finish(r: reqwest::Result<reqwest::Response>) -> Reply {
    match r {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let headers = header_pairs(resp.headers());
            let body = resp.text().await.unwrap_or_default();
            Reply {
                status,
                body,
                headers,
            }
        }
        Err(e) => Reply {
            status: 0,
            body: format!("transport error: {e}"),
            headers: Vec::new(),
        },
    }
}

/// One HTTP/1.1 response read from a raw connection: status, headers (lower-cased names), body
/// (panics on anything else: test-only).
pub async fn read_response(
    conn: &mut tokio::io::BufReader<tokio::net::TcpStream>,
) -> (u16, Vec<(String, String)>, String) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let mut line = String::new();
    conn.read_line(&mut line).await.expect("status line");
    let status: u16 = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        conn.read_line(&mut h).await.expect("header line");
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').expect("name: value");
        headers.push((k.to_ascii_lowercase(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map_or(0, |(_, v)| v.parse().expect("a length"));
    let mut body = vec![0; len];
    conn.read_exact(&mut body).await.expect("the body");
    (status, headers, String::from_utf8(body).expect("utf-8"))
}
