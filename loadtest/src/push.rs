//! The UDP side of a 1.x subscriber: receives `dom` push packets (gzip when large), acks each
//! one to its sender, and matches the instance lists they carry against the changes the run
//! made, which gives the push latency (change request sent → packet showing it received).

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hdrhistogram::Histogram;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use crate::error::LoadtestError;
use crate::stats::{new_histogram, record_latency};

/// A change to a service the run made and expects to see pushed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// `group@@service`, as push packets name services.
    pub service: String,
    pub ip: Ipv4Addr,
    pub port: u16,
    /// True: the instance was registered (must appear). False: deregistered (must vanish).
    pub appear: bool,
}

/// Why a packet was not understood.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PacketError {
    #[error("gzip: {0}")]
    Gzip(String),
    #[error("not a push packet: {0}")]
    Json(String),
}

/// A decoded push packet.
#[derive(Debug, PartialEq)]
pub struct Packet {
    pub kind: String,
    /// Echoed in the ack exactly as received (Java servers send a number, some a string).
    pub last_ref_time: serde_json::Value,
    /// The service-info JSON, itself a string inside the packet.
    pub data: String,
    pub gzip: bool,
}

/// Decodes one datagram; gzip is detected by its magic bytes, as the Java client does.
pub fn decode_packet(bytes: &[u8]) -> Result<Packet, PacketError> {
    let gzip = bytes.starts_with(&[0x1f, 0x8b]);
    let text: Vec<u8> = if gzip {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .map_err(|e| PacketError::Gzip(e.to_string()))?;
        out
    } else {
        bytes.to_vec()
    };
    #[derive(serde::Deserialize)]
    struct Raw {
        #[serde(rename = "type")]
        kind: String,
        #[serde(rename = "lastRefTime", default)]
        last_ref_time: serde_json::Value,
        #[serde(default)]
        data: String,
    }
    let raw: Raw = serde_json::from_slice(&text).map_err(|e| PacketError::Json(e.to_string()))?;
    Ok(Packet {
        kind: raw.kind,
        last_ref_time: raw.last_ref_time,
        data: raw.data,
        gzip,
    })
}

/// The ack a 1.x client sends back for a packet.
pub fn ack(packet: &Packet) -> Vec<u8> {
    serde_json::json!({"type": "push-ack", "lastRefTime": packet.last_ref_time, "data": ""})
        .to_string()
        .into_bytes()
}

/// Service name and `ip:port` set of a pushed service-info document.
pub fn service_hosts(data: &str) -> Result<(String, HashSet<(String, u16)>), PacketError> {
    #[derive(serde::Deserialize)]
    struct Host {
        ip: String,
        port: u16,
    }
    #[derive(serde::Deserialize)]
    struct Info {
        name: String,
        #[serde(default)]
        hosts: Vec<Host>,
    }
    let info: Info = serde_json::from_str(data).map_err(|e| PacketError::Json(e.to_string()))?;
    Ok((
        info.name,
        info.hosts.into_iter().map(|h| (h.ip, h.port)).collect(),
    ))
}

/// Counters of the push side of a run, as counted and as reported.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PushCounts {
    pub received: u64,
    pub gzip: u64,
    pub acked: u64,
    pub decode_errors: u64,
    /// Changes the run made that should produce a push.
    pub changes: u64,
    /// Changes seen in some push.
    pub observed: u64,
    /// Changes overtaken by a newer change to the same instance before any push showed them
    /// (a debounced server pushes only the latest state).
    pub superseded: u64,
}

/// Counters and latencies of the push side of a run.
#[derive(Clone, Debug)]
pub struct PushStats {
    pub counts: PushCounts,
    pub latency: Histogram<u64>,
}

#[derive(Debug)]
struct TrackerState {
    pending: HashMap<String, Vec<(Change, Instant)>>,
    stats: PushStats,
}

/// Shared between the senders (which note changes) and the UDP task (which observes pushes).
#[derive(Debug)]
pub struct PushTracker {
    state: Mutex<TrackerState>,
}

impl PushTracker {
    pub fn new() -> Result<PushTracker, LoadtestError> {
        Ok(PushTracker {
            state: Mutex::new(TrackerState {
                pending: HashMap::new(),
                stats: PushStats {
                    counts: PushCounts::default(),
                    latency: new_histogram()?,
                },
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TrackerState> {
        match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Called just before the change request is sent. A newer change to the same instance
    /// replaces an unobserved older one: only the latest state can show up in a push.
    pub fn note_change(&self, change: Change, sent: Instant) {
        let mut st = self.lock();
        st.stats.counts.changes += 1;
        let TrackerState { pending, stats } = &mut *st;
        let list = pending.entry(change.service.clone()).or_default();
        let before = list.len();
        list.retain(|(c, _)| !(c.ip == change.ip && c.port == change.port));
        stats.counts.superseded += (before - list.len()) as u64;
        list.push((change, sent));
    }

    /// Matches a pushed service state against the pending changes of that service.
    pub fn observe(&self, service: &str, hosts: &HashSet<(String, u16)>, at: Instant) {
        let mut st = self.lock();
        let TrackerState { pending, stats } = &mut *st;
        let Some(list) = pending.get_mut(service) else {
            return;
        };
        list.retain(|(c, sent)| {
            let present = hosts.contains(&(c.ip.to_string(), c.port));
            if present == c.appear {
                stats.counts.observed += 1;
                record_latency(&mut stats.latency, at.saturating_duration_since(*sent));
                false
            } else {
                true
            }
        });
    }

    fn count_packet(&self, gzip: bool, acked: bool) {
        let mut st = self.lock();
        st.stats.counts.received += 1;
        st.stats.counts.gzip += u64::from(gzip);
        st.stats.counts.acked += u64::from(acked);
    }

    fn count_decode_error(&self) {
        let mut st = self.lock();
        st.stats.counts.received += 1;
        st.stats.counts.decode_errors += 1;
    }

    pub fn snapshot(&self) -> PushStats {
        self.lock().stats.clone()
    }
}

/// Receives pushes on `socket` until `stop` fires; owned and awaited by the run.
pub async fn listen(socket: Arc<UdpSocket>, tracker: Arc<PushTracker>, stop: CancellationToken) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, from): (usize, SocketAddr) = tokio::select! {
            _ = stop.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(v) => v,
                // ICMP errors from an earlier ack surface here on Linux; keep listening.
                Err(_) => continue,
            },
        };
        let at = Instant::now();
        match decode_packet(&buf[..n]) {
            Ok(packet) => {
                let acked = socket.send_to(&ack(&packet), from).await.is_ok();
                tracker.count_packet(packet.gzip, acked);
                if packet.kind == "dom" || packet.kind == "service" {
                    match service_hosts(&packet.data) {
                        Ok((name, hosts)) => tracker.observe(&name, &hosts, at),
                        Err(_) => tracker.count_decode_error(),
                    }
                }
            }
            Err(_) => tracker.count_decode_error(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Duration;

    fn dom_packet(hosts: &[&str]) -> String {
        let hosts: Vec<serde_json::Value> = hosts
            .iter()
            .map(|ip| serde_json::json!({"ip": ip, "port": 8080, "healthy": true}))
            .collect();
        let data = serde_json::json!({"name": "DEFAULT_GROUP@@s", "hosts": hosts}).to_string();
        serde_json::json!({"type": "dom", "data": data, "lastRefTime": 123456789012345u64})
            .to_string()
    }

    #[test]
    fn decodes_plain_and_gzip_packets_and_acks_with_the_same_ref_time() {
        let plain = dom_packet(&["127.0.0.1"]);
        let p = decode_packet(plain.as_bytes()).unwrap();
        assert!(!p.gzip);
        assert_eq!(p.kind, "dom");
        let a: serde_json::Value = serde_json::from_slice(&ack(&p)).unwrap();
        assert_eq!(
            a,
            serde_json::json!({"type":"push-ack","lastRefTime":123456789012345u64,"data":""})
        );

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(plain.as_bytes()).unwrap();
        let q = decode_packet(&gz.finish().unwrap()).unwrap();
        assert!(q.gzip);
        assert_eq!(q.data, p.data);
        let (name, hosts) = service_hosts(&q.data).unwrap();
        assert_eq!(name, "DEFAULT_GROUP@@s");
        assert!(hosts.contains(&("127.0.0.1".to_string(), 8080)));

        assert!(decode_packet(b"\x1f\x8bnot gzip").is_err());
        assert!(decode_packet(b"hello").is_err());
    }

    #[test]
    fn a_change_is_observed_once_its_state_is_pushed() {
        let t = PushTracker::new().unwrap();
        let t0 = Instant::now();
        let ip = Ipv4Addr::new(127, 0, 0, 9);
        let change = |appear| Change {
            service: "DEFAULT_GROUP@@s".into(),
            ip,
            port: 8080,
            appear,
        };
        t.note_change(change(true), t0);
        let none = HashSet::new();
        let with: HashSet<(String, u16)> = [("127.0.0.9".to_string(), 8080)].into();
        // A push of the old state does not count.
        t.observe("DEFAULT_GROUP@@s", &none, t0 + Duration::from_millis(10));
        assert_eq!(t.snapshot().counts.observed, 0);
        t.observe("DEFAULT_GROUP@@s", &with, t0 + Duration::from_millis(60));
        let s = t.snapshot();
        assert_eq!((s.counts.changes, s.counts.observed), (1, 1));
        assert_eq!(s.latency.max() / 1000, 60);
        // The vanishing is matched by a push without it.
        t.note_change(change(false), t0);
        t.observe("DEFAULT_GROUP@@s", &with, t0);
        assert_eq!(t.snapshot().counts.observed, 1);
        t.observe("DEFAULT_GROUP@@s", &none, t0);
        assert_eq!(t.snapshot().counts.observed, 2);
        // Appear then vanish before any push: the first is superseded, never observed.
        t.note_change(change(true), t0);
        t.note_change(change(false), t0);
        let s = t.snapshot();
        assert_eq!(
            (s.counts.changes, s.counts.observed, s.counts.superseded),
            (4, 2, 1)
        );
    }
}
