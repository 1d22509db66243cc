//! The Nacos 1.x naming requests the scenarios send, and how their answers are judged.
//!
//! Names are derived from the seed alone, so two runs with the same `--seed` touch the same
//! services and instances and two different seeds never collide. Instance addresses are in
//! 127.0.0.0/8: a registry that health-checks instances then probes loopback only.

use std::net::{IpAddr, Ipv4Addr};

use crate::client::{Method, Request};
use crate::stats::ErrorKind;

const NS: &str = "/nacos/v1/ns";
const CS: &str = "/nacos/v1/cs/configs";
/// The group every scenario uses; push packets name services as `group@@service`.
pub const GROUP: &str = "DEFAULT_GROUP";
/// Port of every registered instance; instances differ by address.
pub const INSTANCE_PORT: u16 = 8080;

/// How an answer is judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// A write: 2xx with the body `ok`.
    OkText,
    /// A beat: 2xx JSON whose `code`, if present, is 10200.
    Beat,
    /// A list: 2xx with a JSON object.
    JsonObject,
    /// A list of a service whose instances are all kept alive: 2xx JSON listing at least this
    /// many healthy hosts; fewer is an instance lost.
    Hosts { healthy: u64 },
    /// A config publish: 2xx with the body `true`.
    TrueText,
    /// A config read: 2xx, any body.
    Success,
}

/// Judges one answer.
pub fn check(check: Check, status: u16, body: &[u8]) -> Result<(), ErrorKind> {
    if !(200..300).contains(&status) {
        return Err(ErrorKind::HttpStatus(status));
    }
    match check {
        Check::OkText => {
            if body.trim_ascii() == b"ok" {
                Ok(())
            } else {
                Err(ErrorKind::UnexpectedBody)
            }
        }
        Check::Beat => {
            #[derive(serde::Deserialize)]
            struct BeatReply {
                code: Option<i64>,
            }
            match serde_json::from_slice::<BeatReply>(body) {
                // Nacos before 1.4 answered without a code.
                Ok(BeatReply {
                    code: None | Some(10200),
                }) => Ok(()),
                Ok(BeatReply { code: Some(c) }) => Err(ErrorKind::NacosCode(c)),
                Err(_) => Err(ErrorKind::UnexpectedBody),
            }
        }
        Check::JsonObject => {
            if body.trim_ascii_start().first() == Some(&b'{') {
                Ok(())
            } else {
                Err(ErrorKind::UnexpectedBody)
            }
        }
        Check::Hosts { healthy } => {
            if body.trim_ascii_start().first() != Some(&b'{') {
                Err(ErrorKind::UnexpectedBody)
            } else if count_healthy(body) < healthy {
                Err(ErrorKind::MissingInstances)
            } else {
                Ok(())
            }
        }
        Check::TrueText => {
            if body.trim_ascii() == b"true" {
                Ok(())
            } else {
                Err(ErrorKind::UnexpectedBody)
            }
        }
        Check::Success => Ok(()),
    }
}

/// Counts the healthy hosts of a list answer by their `"healthy":true` member, as both Nacos
/// and r-nacos write it: a scan, not a parse, since the mixed fleet checks thousands of lists a
/// second on the same cores as the server. (Metadata cannot fake it: a quote inside a JSON
/// string is escaped.)
pub fn count_healthy(body: &[u8]) -> u64 {
    memchr::memmem::find_iter(body, br#""healthy":true"#).count() as u64
}

/// Counts the instances in a list answer (setup checks and the memory mode's verification).
pub fn count_hosts(body: &[u8]) -> Option<usize> {
    #[derive(serde::Deserialize)]
    struct List {
        #[serde(default)]
        hosts: Vec<serde::de::IgnoredAny>,
    }
    serde_json::from_slice::<List>(body)
        .ok()
        .map(|l| l.hosts.len())
}

/// The `accessToken` of a login answer.
pub fn access_token(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Login {
        #[serde(rename = "accessToken")]
        access_token: String,
    }
    serde_json::from_slice::<Login>(body)
        .ok()
        .map(|l| l.access_token)
        .filter(|t| !t.is_empty())
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// SplitMix64: a tiny seeded generator, so derived names and padding do not depend on the
/// version of any random-number crate.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Where a subscriber wants its pushes (`clientIP` + `udpPort` of a list request).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PushAddr {
    pub ip: IpAddr,
    pub port: u16,
}

/// The `i`-th loopback address the harness sends from (0 is 127.0.0.1): a push client's of
/// `--push-clients`, or a group of config listeners' (one address has ~28,000 ephemeral ports).
pub fn loopback_source(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, i.saturating_add(1))
}

/// Every name and request a run uses.
#[derive(Clone, Debug)]
pub struct Names {
    seed: u64,
    namespace: String,
    services: Vec<String>,
    /// Already encoded `&metadata=...`, or empty.
    metadata_param: String,
    /// The metadata JSON object as registered (`{}` without metadata).
    metadata_json: String,
    /// Size asked of each instance's metadata JSON.
    metadata_bytes: usize,
    /// Metadata carries day-long `preserved.*` timeouts.
    kept_alive: bool,
    /// Beats carry the whole `beat` JSON.
    full_beats: bool,
    ephemeral: bool,
    /// Already encoded filler of the config scenarios' content.
    config_pad: String,
}

impl Names {
    pub fn new(
        seed: u64,
        namespace: &str,
        services: usize,
        metadata_bytes: usize,
        ephemeral: bool,
    ) -> Names {
        let services = (0..services)
            .map(|i| format!("lt{seed}-svc{i:05}"))
            .collect();
        Names {
            seed,
            namespace: namespace.to_string(),
            services,
            kept_alive: false,
            metadata_param: String::new(),
            metadata_json: String::new(),
            metadata_bytes,
            full_beats: false,
            ephemeral,
            config_pad: encode(&filler(seed, 256)),
        }
        .with_metadata()
    }

    /// Fills in the metadata parameter and JSON from the size and keep-alive asked for.
    fn with_metadata(mut self) -> Names {
        let json = metadata_json(self.seed, self.metadata_bytes, self.kept_alive);
        self.metadata_param = json
            .as_ref()
            .map(|j| format!("&metadata={}", encode(j)))
            .unwrap_or_default();
        self.metadata_json = json.unwrap_or_else(|| "{}".into());
        self
    }

    /// Instances carry `preserved.*` timeouts of a day, so they outlive a registration run
    /// that sends no beats (the memory scenario at a million instances takes longer than the
    /// default 30 s removal timeout).
    pub fn with_kept_alive(mut self, kept: bool) -> Names {
        self.kept_alive = kept;
        self.with_metadata()
    }

    /// Config content of about `bytes` bytes (the config scenarios).
    pub fn with_config_bytes(mut self, bytes: usize) -> Names {
        self.config_pad = encode(&filler(self.seed, bytes));
        self
    }

    /// Whether instances carry the keep-alive timeouts (they outlive a run without beats).
    pub fn kept_alive(&self) -> bool {
        self.kept_alive
    }

    /// Beats carry the whole `beat` JSON instead of query parameters only.
    pub fn with_full_beats(mut self, full: bool) -> Names {
        self.full_beats = full;
        self
    }

    /// `dataId=…&group=…[&tenant=…]` of config `c`.
    fn config_key(&self, c: usize) -> String {
        let tenant = if self.namespace == "public" {
            String::new()
        } else {
            format!("&tenant={}", encode(&self.namespace))
        };
        format!(
            "dataId={}.properties&group={GROUP}{tenant}",
            self.service(c)
        )
    }

    /// Publishes version `v` of config `c` (query parameters, as the Python client sends
    /// them); each version's content differs, so its md5 does.
    pub fn config_publish(&self, c: usize, v: u64) -> Request {
        Request {
            method: Method::Post,
            target: format!(
                "{CS}?{}&type=properties&content={}%0Aversion%3D{v}",
                self.config_key(c),
                self.config_pad
            ),
        }
    }

    /// The `Listening-Configs` entry of config `c` held at `md5` (`dataId ^2 group ^2 md5
    /// ^2 tenant ^1`, as the Python client writes it), not yet encoded.
    pub fn config_listen_entry(&self, c: usize, md5: &str) -> String {
        let tenant = if self.namespace == "public" {
            ""
        } else {
            self.namespace.as_str()
        };
        format!(
            "{}.properties\u{2}{GROUP}\u{2}{md5}\u{2}{tenant}\u{1}",
            self.service(c)
        )
    }

    /// Reads config `c`.
    pub fn config_get(&self, c: usize) -> Request {
        Request {
            method: Method::Get,
            target: format!("{CS}?{}", self.config_key(c)),
        }
    }

    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    /// The bare service name of service `s` (wraps around).
    pub fn service(&self, s: usize) -> &str {
        &self.services[s % self.services.len()]
    }

    /// `DEFAULT_GROUP@@<service>`, the name push packets carry.
    pub fn grouped(&self, s: usize) -> String {
        format!("{GROUP}@@{}", self.service(s))
    }

    /// The address of instance `i` of any service: 127.x.y.z counting from 127.0.0.1.
    pub fn ip(i: u64) -> Ipv4Addr {
        let n = i.wrapping_add(1) & 0x00FF_FFFF;
        Ipv4Addr::new(127, (n >> 16) as u8, (n >> 8) as u8, n as u8)
    }

    /// A deterministic pick among `n` for (`a`, `b`): which services a fleet client depends on.
    pub fn pick(&self, a: u64, b: u64, n: usize) -> usize {
        let mut st = self.seed ^ a.wrapping_mul(0x100_0000_01B3) ^ (b << 32);
        (splitmix64(&mut st) % n.max(1) as u64) as usize
    }

    fn common(&self, s: usize) -> String {
        format!(
            "serviceName={}&groupName={GROUP}&namespaceId={}",
            self.service(s),
            encode(&self.namespace)
        )
    }

    pub fn register(&self, s: usize, i: u64) -> Request {
        Request {
            method: Method::Post,
            target: format!(
                "{NS}/instance?{}&ip={}&port={INSTANCE_PORT}&clusterName=DEFAULT&weight=1.0&enable=true&healthy=true&ephemeral={}{}",
                self.common(s),
                Self::ip(i),
                self.ephemeral,
                self.metadata_param
            ),
        }
    }

    pub fn deregister(&self, s: usize, i: u64) -> Request {
        Request {
            method: Method::Delete,
            target: format!(
                "{NS}/instance?{}&ip={}&port={INSTANCE_PORT}&clusterName=DEFAULT&ephemeral={}",
                self.common(s),
                Self::ip(i),
                self.ephemeral
            ),
        }
    }

    /// A beat of instance `i` of service `s`: light (query parameters, as the Java client
    /// sends once the server said `lightBeatEnabled`), or with the whole `beat` JSON as the
    /// Java client builds it (`BeatInfo`) and the Python and Node clients send on every beat.
    pub fn beat(&self, s: usize, i: u64) -> Request {
        let body = if self.full_beats {
            let json = format!(
                r#"{{"port":{INSTANCE_PORT},"ip":"{}","weight":1.0,"serviceName":"{}","cluster":"DEFAULT","metadata":{},"scheduled":false,"period":5000,"stopped":false}}"#,
                Self::ip(i),
                self.grouped(s),
                self.metadata_json
            );
            format!("&beat={}", encode(&json))
        } else {
            String::new()
        };
        Request {
            method: Method::Put,
            target: format!(
                "{NS}/instance/beat?{}&ip={}&port={INSTANCE_PORT}&clusterName=DEFAULT{body}",
                self.common(s),
                Self::ip(i)
            ),
        }
    }

    /// A list query; with `push`, it also (re)subscribes `push` to UDP pushes.
    pub fn list(&self, s: usize, push: Option<PushAddr>) -> Request {
        self.list_from(s, push, None)
    }

    /// [`list`](Self::list) by a client that names itself `client` in `clientIP` (the push
    /// listener's address when `None`).
    pub fn list_from(&self, s: usize, push: Option<PushAddr>, client: Option<Ipv4Addr>) -> Request {
        let sub = match (push, client) {
            (Some(p), Some(c)) => format!("&udpPort={}&clientIP={c}", p.port),
            (Some(p), None) => format!("&udpPort={}&clientIP={}", p.port, p.ip),
            (None, _) => String::new(),
        };
        Request {
            method: Method::Get,
            target: format!(
                "{NS}/instance/list?{}&clusters=&healthyOnly=false{sub}",
                self.common(s)
            ),
        }
    }
}

/// `bytes` seeded alphanumeric characters (at least one).
fn filler(seed: u64, bytes: usize) -> String {
    const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut st = seed;
    (0..bytes.max(1))
        .map(|_| ALNUM[(splitmix64(&mut st) % ALNUM.len() as u64) as usize] as char)
        .collect()
}

/// The `preserved.*` entries that keep an instance registered for a day without beats.
const KEEP_ALIVE: &str =
    r#""preserved.heart.beat.timeout":"86400000","preserved.ip.delete.timeout":"86400000""#;

/// A metadata JSON object about `bytes` long with seeded filler (or the keep-alive entries
/// and filler, at least those entries); `None` when neither is asked for.
fn metadata_json(seed: u64, bytes: usize, kept_alive: bool) -> Option<String> {
    if kept_alive {
        let frame = format!(r#"{{{KEEP_ALIVE},"lt.pad":""}}"#).len();
        if bytes <= frame {
            return Some(format!("{{{KEEP_ALIVE}}}"));
        }
        let pad = filler(seed, bytes - frame);
        return Some(format!(r#"{{{KEEP_ALIVE},"lt.pad":"{pad}"}}"#));
    }
    if bytes == 0 {
        return None;
    }
    let frame = r#"{"lt.pad":""}"#.len();
    let pad = filler(seed, bytes.saturating_sub(frame));
    Some(format!(r#"{{"lt.pad":"{pad}"}}"#))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_deterministic_per_seed() {
        let a = Names::new(7, "public", 3, 64, true);
        let b = Names::new(7, "public", 3, 64, true);
        let c = Names::new(8, "public", 3, 64, true);
        assert_eq!(a.register(2, 5), b.register(2, 5));
        assert_ne!(a.register(2, 5), c.register(2, 5));
        assert_eq!(a.service(4), "lt7-svc00001");
        assert_eq!(a.grouped(0), "DEFAULT_GROUP@@lt7-svc00000");
        assert_eq!(a.pick(3, 1, 10), b.pick(3, 1, 10));
    }

    #[test]
    fn a_distinct_client_names_itself_and_others_name_the_push_listener() {
        let n = Names::new(1, "public", 3, 0, false);
        let push = Some(PushAddr {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 4_000,
        });
        let own = n.list_from(0, push, Some(Names::ip(41))).target;
        assert!(own.ends_with("&udpPort=4000&clientIP=127.0.0.42"), "{own}");
        let shared = n.list(0, push).target;
        assert!(
            shared.ends_with("&udpPort=4000&clientIP=127.0.0.1"),
            "{shared}"
        );
    }

    #[test]
    fn instance_addresses_stay_in_loopback() {
        assert_eq!(Names::ip(0), Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(Names::ip(255), Ipv4Addr::new(127, 0, 1, 0));
        assert_eq!(Names::ip(99_999), Ipv4Addr::new(127, 1, 134, 160));
        assert!(Names::ip(u64::MAX).is_loopback());
    }

    #[test]
    fn metadata_has_the_requested_size() {
        let json = metadata_json(1, 200, false).unwrap();
        assert_eq!(json.len(), 200);
        assert!(serde_json::from_str::<serde_json::Value>(&json)
            .unwrap()
            .is_object());
        assert_eq!(metadata_json(1, 0, false), None);
        // Kept alive: the same size when there is room, the timeouts always.
        for bytes in [0, 50, 200] {
            let json = metadata_json(1, bytes, true).unwrap();
            let v: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert_eq!(v["preserved.ip.delete.timeout"], "86400000");
            assert_eq!(v["preserved.heart.beat.timeout"], "86400000");
            if bytes == 200 {
                assert_eq!(json.len(), 200);
            }
        }
    }

    #[test]
    fn a_full_beat_carries_the_registered_metadata_as_json() {
        let n = Names::new(1, "public", 1, 64, true).with_full_beats(true);
        let param = |target: &str, name: &str| {
            let query = target.split_once('?').unwrap().1;
            form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        let v: serde_json::Value =
            serde_json::from_str(&param(&n.beat(0, 2).target, "beat").unwrap()).unwrap();
        assert_eq!(v["ip"], "127.0.0.3");
        assert_eq!(v["port"], INSTANCE_PORT);
        assert_eq!(v["serviceName"], "DEFAULT_GROUP@@lt1-svc00000");
        let meta = param(&n.register(0, 2).target, "metadata").unwrap();
        assert_eq!(v["metadata"].to_string(), meta);
        assert!(!Names::new(1, "public", 1, 64, true)
            .beat(0, 2)
            .target
            .contains("beat="));
    }

    #[test]
    fn a_login_answer_gives_its_token() {
        let body = br#"{"accessToken":"abc.def","tokenTtl":18000,"globalAdmin":true}"#;
        assert_eq!(access_token(body).as_deref(), Some("abc.def"));
        assert_eq!(access_token(br#"{"accessToken":""}"#), None);
        assert_eq!(access_token(b"unknown user!"), None);
    }

    #[test]
    fn answers_are_judged_like_a_nacos_client_would() {
        assert_eq!(check(Check::OkText, 200, b"ok"), Ok(()));
        assert_eq!(
            check(Check::OkText, 200, b"caused: x"),
            Err(ErrorKind::UnexpectedBody)
        );
        assert_eq!(
            check(Check::OkText, 503, b"ok"),
            Err(ErrorKind::HttpStatus(503))
        );
        assert_eq!(
            check(
                Check::Beat,
                200,
                br#"{"clientBeatInterval":5000,"code":10200}"#
            ),
            Ok(())
        );
        assert_eq!(
            check(
                Check::Beat,
                200,
                br#"{"clientBeatInterval":5000,"code":20404}"#
            ),
            Err(ErrorKind::NacosCode(20404))
        );
        assert_eq!(check(Check::JsonObject, 200, b" {\"hosts\":[]}"), Ok(()));
        let two = br#"{"hosts":[{"ip":"a","healthy":true},{"ip":"b","healthy":true},{"ip":"c","healthy":false}]}"#;
        assert_eq!(count_healthy(two), 2);
        assert_eq!(check(Check::Hosts { healthy: 2 }, 200, two), Ok(()));
        assert_eq!(
            check(Check::Hosts { healthy: 3 }, 200, two),
            Err(ErrorKind::MissingInstances)
        );
        // A value that merely mentions it does not count.
        let meta = br#"{"hosts":[{"metadata":{"k":"\"healthy\":true"},"healthy":false}]}"#;
        assert_eq!(count_healthy(meta), 0);
        assert_eq!(
            count_hosts(br#"{"hosts":[{"ip":"1"},{"ip":"2"}]}"#),
            Some(2)
        );
        assert_eq!(count_hosts(br#"{"name":"x"}"#), Some(0));
    }

    #[test]
    fn requests_carry_the_java_client_parameters() {
        let n = Names::new(1, "dev ns", 1, 0, true);
        let r = n.beat(0, 0);
        assert_eq!(r.method, Method::Put);
        assert_eq!(
            r.target,
            "/nacos/v1/ns/instance/beat?serviceName=lt1-svc00000&groupName=DEFAULT_GROUP&namespaceId=dev%20ns&ip=127.0.0.1&port=8080&clusterName=DEFAULT"
        );
        let l = n.list(
            0,
            Some(PushAddr {
                ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                port: 4000,
            }),
        );
        assert!(l.target.ends_with("&udpPort=4000&clientIP=127.0.0.1"));
    }
}
