//! Wire format of the Nacos 1.x UDP push (reference §13, pitfalls 6).
//!
//! Outgoing: `{"type":"dom","data":"<list response as a JSON string>","lastRefTime":<seq>}`,
//! gzip-compressed when the UTF-8 JSON is 1024 bytes or more (clients sniff the gzip magic).
//! Incoming: the client's acknowledgement, `{"type":"push-ack","lastRefTime":"123","data":""}`,
//! where `lastRefTime` is a string (Java) or a number (Node). Anything that is not a well-formed
//! `push-ack` decodes to [`Incoming::Other`] or [`Incoming::Garbage`]; decoding never panics.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use serde::Serialize;

/// Packets of this many UTF-8 bytes or more are gzip-compressed (Nacos `UdpPushService`).
pub const GZIP_THRESHOLD: usize = 1024;

/// Largest value a JavaScript client can hold exactly in a double (2^53).
pub const MAX_SAFE_SEQ: u64 = 1 << 53;

/// Upper bound on a decompressed incoming datagram; acks are tiny, anything larger is garbage.
const MAX_INFLATED: u64 = 64 * 1024;

/// The two gzip magic bytes, as Nacos clients test for them.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Issues `lastRefTime` values: unique per datagram made (one render, sent to every subscriber
/// of its shape), increasing, and far below 2^53.
///
/// Seeded from wall-clock milliseconds so that a restarted server does not reuse recent
/// sequence numbers (as long as it pushes fewer than ~1000 packets per millisecond of uptime).
#[derive(Debug)]
pub struct SeqGen {
    next: AtomicU64,
}

impl SeqGen {
    /// A generator seeded from the current wall-clock time in milliseconds.
    pub fn from_wall_clock() -> Self {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(0))
            .unwrap_or(0);
        Self::starting_at(ms)
    }

    /// A generator whose first value is `seed` (clamped to `1..2^53`).
    pub fn starting_at(seed: u64) -> Self {
        Self {
            next: AtomicU64::new(seed.clamp(1, MAX_SAFE_SEQ - 1)),
        }
    }

    /// The next sequence number; wraps back to 1 instead of reaching 2^53.
    pub fn next_seq(&self) -> u64 {
        let step = |cur: u64| Some(if cur + 1 >= MAX_SAFE_SEQ { 1 } else { cur + 1 });
        match self
            .next
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, step)
        {
            Ok(cur) | Err(cur) => cur,
        }
    }
}

#[derive(Serialize)]
struct DomPacket<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    data: &'a str,
    #[serde(rename = "lastRefTime")]
    last_ref_time: u64,
}

/// Encodes one push datagram carrying `data` (the rendered list response) under `seq`.
///
/// Returns the bytes to send: plain UTF-8 JSON, or its gzip when it is ≥ [`GZIP_THRESHOLD`].
pub fn encode_push(data: &str, seq: u64) -> std::io::Result<Vec<u8>> {
    let json = serde_json::to_vec(&DomPacket {
        kind: "dom",
        data,
        last_ref_time: seq,
    })?;
    if json.len() < GZIP_THRESHOLD {
        return Ok(json);
    }
    let mut enc = GzEncoder::new(Vec::with_capacity(json.len() / 3), Compression::default());
    enc.write_all(&json)?;
    enc.finish()
}

/// Returns the datagram's bytes, gunzipped when they start with the gzip magic.
///
/// `None` when the gzip stream is corrupt or inflates beyond 64 KiB.
pub fn maybe_gunzip(bytes: &[u8]) -> Option<Vec<u8>> {
    if !bytes.starts_with(&GZIP_MAGIC) {
        return Some(bytes.to_vec());
    }
    let mut out = Vec::new();
    GzDecoder::new(bytes)
        .take(MAX_INFLATED + 1)
        .read_to_end(&mut out)
        .ok()?;
    if out.len() as u64 > MAX_INFLATED {
        return None;
    }
    Some(out)
}

/// A datagram received on the push socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A client acknowledged the packet sent under this `lastRefTime`.
    PushAck { last_ref_time: u64 },
    /// Valid JSON with some other `type` (`dump-ack`, `unknown-ack`, ...); ignored by the hub.
    Other(String),
    /// Not JSON, not an object, no usable `type`/`lastRefTime`, or a corrupt gzip stream.
    Garbage,
}

/// Decodes an incoming datagram. Never panics, whatever the bytes.
pub fn decode_incoming(bytes: &[u8]) -> Incoming {
    let Some(plain) = maybe_gunzip(bytes) else {
        return Incoming::Garbage;
    };
    let Ok(serde_json::Value::Object(obj)) = serde_json::from_slice::<serde_json::Value>(&plain)
    else {
        return Incoming::Garbage;
    };
    let Some(kind) = obj.get("type").and_then(|t| t.as_str()) else {
        return Incoming::Garbage;
    };
    if kind != "push-ack" {
        return Incoming::Other(kind.to_owned());
    }
    match obj.get("lastRefTime").and_then(parse_ref_time) {
        Some(last_ref_time) => Incoming::PushAck { last_ref_time },
        None => Incoming::Garbage,
    }
}

/// `lastRefTime` as Java (`"123"`) or Node (`123`, possibly `123.0` from a double) sends it.
fn parse_ref_time(v: &serde_json::Value) -> Option<u64> {
    match v {
        serde_json::Value::String(s) => s.trim().parse::<u64>().ok(),
        serde_json::Value::Number(n) => n.as_u64().or_else(|| {
            let f = n.as_f64()?;
            // Exact integral doubles below 2^53 only.
            let safe = f >= 0.0 && f.fract() == 0.0 && f < MAX_SAFE_SEQ as f64;
            safe.then_some(f as u64)
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_push(bytes: &[u8]) -> serde_json::Value {
        let plain = maybe_gunzip(bytes).expect("gunzip");
        serde_json::from_slice(&plain).expect("json")
    }

    #[test]
    fn small_packet_is_plain_json_with_string_data() {
        let data = r#"{"hosts":[],"dom":"DEFAULT_GROUP@@orders","cacheMillis":10000}"#;
        let bytes = encode_push(data, 42).expect("encode");
        assert!(bytes.len() < GZIP_THRESHOLD);
        assert_eq!(bytes[0], b'{');
        let v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(v["type"], "dom");
        assert_eq!(v["lastRefTime"], 42);
        // `data` is a JSON string, not a nested object (pitfall 6).
        assert_eq!(v["data"].as_str(), Some(data));
    }

    #[test]
    fn large_packet_is_gzipped_and_roundtrips() {
        let hosts: Vec<String> = (0..100)
            .map(|i| format!(r#"{{"ip":"10.0.0.{i}","port":8080}}"#))
            .collect();
        let data = format!(r#"{{"hosts":[{}]}}"#, hosts.join(","));
        let bytes = encode_push(&data, 7).expect("encode");
        assert_eq!(&bytes[..2], &GZIP_MAGIC);
        let v = decode_push(&bytes);
        assert_eq!(v["type"], "dom");
        assert_eq!(v["lastRefTime"], 7);
        assert_eq!(v["data"].as_str(), Some(data.as_str()));
    }

    #[test]
    fn threshold_is_inclusive() {
        // Find a data length whose packet is exactly 1024 bytes: it must be gzipped.
        let overhead = encode_push("", 1).expect("encode").len();
        let exact = "x".repeat(GZIP_THRESHOLD - overhead);
        let bytes = encode_push(&exact, 1).expect("encode");
        assert_eq!(&bytes[..2], &GZIP_MAGIC);
        let below = "x".repeat(GZIP_THRESHOLD - overhead - 1);
        let bytes = encode_push(&below, 1).expect("encode");
        assert_eq!(bytes.len(), GZIP_THRESHOLD - 1);
        assert_eq!(bytes[0], b'{');
    }

    #[test]
    fn ack_accepts_string_and_number() {
        let java = br#"{"type": "push-ack", "lastRefTime":"123456789012345", "data":""}"#;
        assert_eq!(
            decode_incoming(java),
            Incoming::PushAck {
                last_ref_time: 123_456_789_012_345
            }
        );
        let node = br#"{"type":"push-ack","lastRefTime":123456789012345,"data":""}"#;
        assert_eq!(
            decode_incoming(node),
            Incoming::PushAck {
                last_ref_time: 123_456_789_012_345
            }
        );
        let double = br#"{"type":"push-ack","lastRefTime":12345.0,"data":""}"#;
        assert_eq!(
            decode_incoming(double),
            Incoming::PushAck {
                last_ref_time: 12345
            }
        );
    }

    #[test]
    fn gzipped_ack_is_accepted() {
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(br#"{"type":"push-ack","lastRefTime":"9"}"#)
            .expect("write");
        let gz = enc.finish().expect("finish");
        assert_eq!(decode_incoming(&gz), Incoming::PushAck { last_ref_time: 9 });
    }

    #[test]
    fn other_types_and_garbage_never_panic() {
        assert_eq!(
            decode_incoming(br#"{"type":"dump-ack","lastRefTime":"1","data":"{}"}"#),
            Incoming::Other("dump-ack".into())
        );
        let garbage: &[&[u8]] = &[
            b"",
            b"\x1f\x8b",
            b"\x1f\x8b\x08\x00garbage",
            b"\xff\xfe\x00",
            b"null",
            b"[1,2]",
            b"{}",
            br#"{"type":1}"#,
            br#"{"type":"push-ack"}"#,
            br#"{"type":"push-ack","lastRefTime":"abc"}"#,
            br#"{"type":"push-ack","lastRefTime":-1}"#,
            br#"{"type":"push-ack","lastRefTime":1.5}"#,
            br#"{"type":"push-ack","lastRefTime":1e300}"#,
            br#"{"type":"push-ack","lastRefTime":[1]}"#,
        ];
        for g in garbage {
            assert_eq!(decode_incoming(g), Incoming::Garbage, "{g:?}");
        }
    }

    #[test]
    fn gzip_bomb_is_rejected() {
        let mut enc = GzEncoder::new(Vec::new(), Compression::best());
        enc.write_all(&vec![b' '; 1024 * 1024]).expect("write");
        let gz = enc.finish().expect("finish");
        assert!(gz.len() < 65_000);
        assert_eq!(maybe_gunzip(&gz), None);
        assert_eq!(decode_incoming(&gz), Incoming::Garbage);
    }

    #[test]
    fn seq_is_unique_increasing_and_below_2_pow_53() {
        let g = SeqGen::from_wall_clock();
        let a = g.next_seq();
        let b = g.next_seq();
        assert!(b > a);
        assert!(b < MAX_SAFE_SEQ);
        // Seeded from wall-clock milliseconds: well above zero.
        assert!(a > 1_600_000_000_000);

        let g = SeqGen::starting_at(MAX_SAFE_SEQ - 1);
        assert_eq!(g.next_seq(), MAX_SAFE_SEQ - 1);
        assert_eq!(g.next_seq(), 1);
        assert_eq!(g.next_seq(), 2);
        assert_eq!(SeqGen::starting_at(0).next_seq(), 1);
    }
}
