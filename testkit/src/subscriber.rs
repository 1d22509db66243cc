//! UDP push subscribers, as the 1.x clients are, and the "no empty push" checker.
//!
//! A [`PushChecker`] holds one UDP socket, the way a Java or Python 1.x client does, and keeps
//! a subscription on every fleet service at every entry point (the gateway and each node): it
//! lists the service with `udpPort` and `clientIP` every [`RESUBSCRIBE`], as the clients'
//! update tasks do, so a node that took a service over learns the subscriber too. Every
//! packet is decoded as a client decodes it (gzip sniffed by its magic bytes), acknowledged
//! with a `push-ack`, and checked: a live fleet instance missing from a pushed list, or shown
//! unhealthy there, is a violation; a push with no instance at all for a service that has
//! live instances is also counted as an *empty push*, the failure that makes a client drop
//! every provider at once.
//!
//! Pushes happen on changes, so the checker makes its own: it registers and deregisters one
//! marker instance per service in turn (every [`CHURN`]), and every such change is pushed to
//! every subscriber of the service with the whole list.

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use crate::fleet::{shown, Fleet, Member, Shown, Targets, Violation};
use crate::http::Clients;

/// How often every subscription is renewed (the servers forget a subscriber after 10 s).
pub const RESUBSCRIBE: Duration = Duration::from_secs(3);
/// How often the marker of one service is registered or deregistered.
pub const CHURN: Duration = Duration::from_millis(300);

/// One pushed list that did not show every live instance.
#[derive(Debug, Clone)]
pub struct PushViolation {
    /// What the push left out (`node` is where the packet came from).
    pub seen: Violation,
    /// The push listed no instance at all.
    pub empty: bool,
}

/// Counters of the checker.
#[derive(Debug, Default)]
pub struct PushCounts {
    /// Push packets received and decoded.
    pub received: AtomicU64,
    /// Packets that were not a push of a fleet service (undecodable, or another service).
    pub ignored: AtomicU64,
    /// Subscriptions renewed (list calls answered 200).
    pub subscribed: AtomicU64,
    /// Marker registrations and deregistrations answered `ok`.
    pub churned: AtomicU64,
}

/// The "no empty push" checker; see the module doc.
#[derive(Debug)]
pub struct PushChecker {
    stop: Arc<AtomicBool>,
    violations: Arc<Mutex<Vec<PushViolation>>>,
    /// What it has seen so far.
    pub counts: Arc<PushCounts>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl PushChecker {
    /// Subscribes to every service of `fleet` at every address of `entry_points`, churns a
    /// marker instance per service through `writers`, and checks every push.
    pub async fn start(
        fleet: &Fleet,
        entry_points: Targets,
        writers: Targets,
    ) -> anyhow::Result<PushChecker> {
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let port = socket.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let violations = Arc::new(Mutex::new(Vec::new()));
        let counts = Arc::new(PushCounts::default());
        let services = fleet.services();
        let live: HashMap<String, Vec<Member>> =
            services.iter().fold(HashMap::new(), |mut by, s| {
                let ms = fleet.members().iter().filter(|m| &m.service == s).cloned();
                by.entry(s.clone()).or_default().extend(ms);
                by
            });
        let started = Instant::now();
        let receiver = tokio::spawn(receive(
            socket,
            live,
            started,
            stop.clone(),
            violations.clone(),
            counts.clone(),
        ));
        let subscriber = tokio::spawn(subscribe(
            services.clone(),
            entry_points,
            port,
            stop.clone(),
            counts.clone(),
        ));
        let churner = tokio::spawn(churn(services, writers, stop.clone(), counts.clone()));
        Ok(PushChecker {
            stop,
            violations,
            counts,
            tasks: vec![receiver, subscriber, churner],
        })
    }

    /// Stops and returns every violation seen.
    pub async fn finish(mut self) -> Vec<PushViolation> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        self.violations
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }
}

/// Renews every subscription at every entry point, every [`RESUBSCRIBE`].
async fn subscribe(
    services: Vec<String>,
    entry_points: Targets,
    port: u16,
    stop: Arc<AtomicBool>,
    counts: Arc<PushCounts>,
) {
    let mut clients = Clients::new(Duration::from_secs(1));
    let port = port.to_string();
    while !stop.load(Ordering::Relaxed) {
        let round = Instant::now();
        for node in entry_points.get() {
            let api = clients.get(node);
            for s in &services {
                let r = api
                    .call(
                        "GET",
                        "/nacos/v1/ns/instance/list",
                        &[
                            ("serviceName", s),
                            ("udpPort", &port),
                            ("clientIP", "127.0.0.1"),
                        ],
                    )
                    .await;
                if r.status == 200 {
                    counts.subscribed.fetch_add(1, Ordering::Relaxed);
                } else {
                    // Down or frozen: the other services would wait on it too.
                    break;
                }
            }
        }
        let rest = RESUBSCRIBE.saturating_sub(round.elapsed());
        sleep_unless_stopped(rest, &stop).await;
    }
}

/// Registers and deregisters one marker instance per service in turn, so every service
/// changes (and is pushed) regularly. A write that fails is tried on the next writer.
async fn churn(
    services: Vec<String>,
    writers: Targets,
    stop: Arc<AtomicBool>,
    counts: Arc<PushCounts>,
) {
    let mut clients = Clients::new(Duration::from_secs(2));
    let mut registered = vec![false; services.len()];
    let mut turn = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let k = turn % services.len().max(1);
        turn += 1;
        let Some(service) = services.get(k) else {
            return;
        };
        let method = if registered[k] { "DELETE" } else { "POST" };
        let ip = format!("10.250.{}.{}", k / 250, k % 250);
        for node in writers.get() {
            let r = clients
                .get(node)
                .instance(
                    method,
                    &[
                        ("serviceName", service),
                        ("ip", &ip),
                        ("port", "1"),
                        // Never beats: long silence timeouts keep it until it is deregistered.
                        (
                            "metadata",
                            r#"{"preserved.heart.beat.timeout":"600000","preserved.ip.delete.timeout":"600000"}"#,
                        ),
                    ],
                )
                .await;
            if r.body == "ok" {
                registered[k] = !registered[k];
                counts.churned.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
        sleep_unless_stopped(CHURN, &stop).await;
    }
}

async fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) {
    let until = Instant::now() + d;
    while !stop.load(Ordering::Relaxed) && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50).min(until - Instant::now())).await;
    }
}

/// Receives, acknowledges and checks every packet until stopped.
async fn receive(
    socket: Arc<UdpSocket>,
    live: HashMap<String, Vec<Member>>,
    started: Instant,
    stop: Arc<AtomicBool>,
    violations: Arc<Mutex<Vec<PushViolation>>>,
    counts: Arc<PushCounts>,
) {
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) {
        let got =
            tokio::time::timeout(Duration::from_millis(200), socket.recv_from(&mut buf)).await;
        let Ok(Ok((n, from))) = got else {
            continue;
        };
        let Some(push) = decode(&buf[..n]) else {
            counts.ignored.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let ack = serde_json::json!({
            "type": "push-ack",
            "lastRefTime": push.seq.to_string(),
            "data": "",
        });
        let _ = socket.send_to(ack.to_string().as_bytes(), from).await;
        let Some(members) = live.get(&push.service) else {
            counts.ignored.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        counts.received.fetch_add(1, Ordering::Relaxed);
        if let Some(v) = check(&push, members, from, started) {
            if let Ok(mut all) = violations.lock() {
                all.push(v);
            }
        }
    }
}

/// A decoded push: the service it names (without its group), the hosts, the sequence number.
#[derive(Debug)]
struct Push {
    service: String,
    hosts: Vec<serde_json::Value>,
    seq: u64,
}

/// Decodes a datagram as a 1.x client does: gunzip when it starts with the gzip magic, then
/// `{"type":"dom","data":"<list answer>","lastRefTime":n}`. `None` for anything else.
fn decode(bytes: &[u8]) -> Option<Push> {
    let text = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut s = String::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_string(&mut s)
            .ok()?;
        s
    } else {
        String::from_utf8(bytes.to_vec()).ok()?
    };
    let packet: serde_json::Value = serde_json::from_str(&text).ok()?;
    if packet["type"] != "dom" && packet["type"] != "service" {
        return None;
    }
    let seq = match &packet["lastRefTime"] {
        serde_json::Value::Number(n) => n.as_u64()?,
        serde_json::Value::String(s) => s.parse().ok()?,
        _ => return None,
    };
    let mut data: serde_json::Value = serde_json::from_str(packet["data"].as_str()?).ok()?;
    let name = data["name"].as_str().or(data["dom"].as_str())?;
    // Modern clients get `group@@service`; older ones the bare name.
    let service = name.rsplit("@@").next().unwrap_or(name).to_string();
    let hosts = match data["hosts"].take() {
        serde_json::Value::Array(a) => a,
        _ => return None,
    };
    Some(Push {
        service,
        hosts,
        seq,
    })
}

/// A violation when `push` does not show every live member as healthy.
fn check(
    push: &Push,
    members: &[Member],
    from: SocketAddr,
    started: Instant,
) -> Option<PushViolation> {
    let mut v = Violation {
        at_s: started.elapsed().as_secs_f64(),
        node: from,
        service: push.service.clone(),
        missing: Vec::new(),
        unhealthy: Vec::new(),
    };
    for m in members {
        match shown(&push.hosts, &m.ip) {
            Shown::Missing => v.missing.push(m.ip.clone()),
            Shown::Unhealthy => v.unhealthy.push(m.ip.clone()),
            Shown::Healthy => {}
        }
    }
    (!v.missing.is_empty() || !v.unhealthy.is_empty()).then_some(PushViolation {
        seen: v,
        empty: push.hosts.is_empty() && !members.is_empty(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn packet(data: &serde_json::Value, seq: serde_json::Value) -> Vec<u8> {
        serde_json::json!({"type": "dom", "data": data.to_string(), "lastRefTime": seq})
            .to_string()
            .into_bytes()
    }

    fn member(ip: &str) -> Member {
        Member {
            service: "svc".into(),
            ip: ip.into(),
            port: 1,
        }
    }

    #[test]
    fn decodes_plain_and_gzipped_pushes_with_either_sequence_form() {
        let data = serde_json::json!({"name": "DEFAULT_GROUP@@svc", "hosts": [{"ip": "10.0.0.1", "healthy": true}]});
        let plain = decode(&packet(&data, serde_json::json!(7))).unwrap();
        assert_eq!(
            (plain.service.as_str(), plain.seq, plain.hosts.len()),
            ("svc", 7, 1)
        );
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&packet(&data, serde_json::json!("8")))
            .unwrap();
        let zipped = decode(&gz.finish().unwrap()).unwrap();
        assert_eq!(zipped.seq, 8);
        assert!(decode(b"{\"type\":\"push-ack\"}").is_none());
        assert!(decode(&[0x1f, 0x8b, 0, 1]).is_none());
    }

    #[test]
    fn a_push_missing_or_emptying_a_live_instance_is_a_violation() {
        let from: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let t = Instant::now();
        let push = |hosts: serde_json::Value| Push {
            service: "svc".into(),
            hosts: hosts.as_array().cloned().unwrap(),
            seq: 1,
        };
        let live = [member("10.0.0.1"), member("10.0.0.2")];
        let whole = push(
            serde_json::json!([{"ip": "10.0.0.1", "healthy": true}, {"ip": "10.0.0.2", "healthy": true}, {"ip": "10.9.9.9", "healthy": false}]),
        );
        assert!(check(&whole, &live, from, t).is_none());
        let short = check(&push(serde_json::json!([{"ip": "10.0.0.1", "healthy": true}, {"ip": "10.0.0.2", "healthy": false}])), &live, from, t).unwrap();
        assert_eq!(short.seen.unhealthy, vec!["10.0.0.2"]);
        assert!(!short.empty);
        let empty = check(&push(serde_json::json!([])), &live, from, t).unwrap();
        assert!(empty.empty);
        assert_eq!(empty.seen.missing.len(), 2);
    }
}
