//! What the gateway and the registry nodes say to each other: internal paths, headers and the
//! documents both sides read. Defined once here so the two crates cannot drift apart.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::configs::ConfigKey;
use crate::ServiceKey;

/// Prefix of every node-internal route; the gateway never forwards a client request to one.
pub const INTERNAL_PREFIX: &str = "/nacre/internal/";
/// Header carrying the cluster secret on internal calls.
pub const SECRET_HEADER: &str = "x-nacre-cluster-secret";
/// Prefix of the headers only nacre's own tiers may set; the gateway drops every client-sent
/// header with it before adding its own.
pub const HEADER_PREFIX: &str = "x-nacre-";
/// The client address a gateway (or a node replaying a forwarded write) asserts for a request:
/// where UDP pushes for a subscription go. Believed only with [`ASSERTED_BY_HEADER`].
pub const CLIENT_ADDR_HEADER: &str = "x-nacre-client-addr";
/// Proof for [`CLIENT_ADDR_HEADER`]: the cluster secret. Unlike [`SECRET_HEADER`] it grants
/// nothing but the client address (a proxied client request must not pass as peer traffic).
pub const ASSERTED_BY_HEADER: &str = "x-nacre-asserted-by";
/// Set by a gateway on a client's instance write: the gateway sends that client's reads of the
/// service to the node it picks by the same rule, so that node, when it owns the service, may
/// answer once the write is applied there rather than after its peers acknowledged it (rule
/// V3 in the registry's `distro`). Believed only with [`ASSERTED_BY_HEADER`]; a node
/// forwarding the write to the owner drops it.
pub const OWNER_ROUTED_HEADER: &str = "x-nacre-owner-routed";
/// Set on the 503 a node answers a client request with while it is not ready or has no
/// standing: the gateway then marks the node out of rotation and replays the request on
/// another node (its probes would notice only a moment later; a node restarted under the same
/// name is reached before they do).
pub const NOT_READY_HEADER: &str = "x-nacre-not-ready";
/// A node's liveness and readiness probe, answered with a [`PingReply`].
pub const PING_PATH: &str = "/nacre/internal/member/ping";
/// A node's change feed: a held read answered with a [`FeedPage`].
pub const CHANGES_PATH: &str = "/nacre/internal/changes";
/// Where a gateway hands a node the push subscribers whose list polls it answered from its
/// cache: a JSON array of [`SubscriberNote`]; the answer is how many were registered.
pub const PUSH_SUBSCRIBERS_PATH: &str = "/nacre/internal/push/subscribers";

/// The naming beat (a public Nacos path), relayed by a gateway in batches.
pub const BEAT_PATH: &str = "/nacos/v1/ns/instance/beat";
/// The instance path (a public Nacos path): a register is a `POST` to it, a deregister a
/// `DELETE`.
pub const INSTANCE_PATH: &str = "/nacos/v1/ns/instance";
/// Where a gateway hands a node a batch of client beats (rules R1–R4 of
/// the gateway's `beats`): a JSON array of [`RelayedRequest`], answered with a JSON array of
/// [`RelayedAnswer`], one per request, in order. Each is served exactly as the same request
/// reaching the node's public API would be.
pub const BEATS_PATH: &str = "/nacre/internal/beats";
/// Where a gateway hands a node a batch of instance writes: the same documents as at
/// [`BEATS_PATH`]. A path of its own, so a node that predates relayed writes answers 404 rather
/// than serving a write as a beat, should a gateway take it for a newer one.
pub const WRITES_PATH: &str = "/nacre/internal/writes";

/// Which client request a [`RelayedRequest`] is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RelayedOp {
    /// `PUT` [`BEAT_PATH`] (what every batch carried before writes were relayed).
    #[default]
    Beat,
    /// `POST` [`INSTANCE_PATH`].
    Register,
    /// `DELETE` [`INSTANCE_PATH`].
    Deregister,
}

impl RelayedOp {
    /// The request's method.
    pub fn method(self) -> &'static str {
        match self {
            Self::Beat => "PUT",
            Self::Register => "POST",
            Self::Deregister => "DELETE",
        }
    }

    /// The request's path.
    pub fn path(self) -> &'static str {
        match self {
            Self::Beat => BEAT_PATH,
            Self::Register | Self::Deregister => INSTANCE_PATH,
        }
    }

    /// Whether it changes registry state (a beat only keeps an instance alive, or re-creates
    /// one that expired).
    pub fn is_write(self) -> bool {
        !matches!(self, Self::Beat)
    }

    fn is_beat(&self) -> bool {
        *self == Self::Beat
    }
}

/// A client's request (a beat, or an instance write), relayed in a batch. Its strings borrow
/// from what they were read from where they can: a gateway writes one from the client's request
/// without copying it, and a node reads one from the batch's bytes copying only what had to be
/// unescaped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayedRequest<'a> {
    /// What it is. Left out for a beat, so a batch of beats reads the same to a node that
    /// predates relayed writes (writes go to [`WRITES_PATH`], which such a node does not
    /// have).
    #[serde(default, skip_serializing_if = "RelayedOp::is_beat")]
    pub op: RelayedOp,
    /// The query string, without `?`.
    #[serde(borrow)]
    pub query: Cow<'a, str>,
    /// The request's headers as the gateway would proxy them (client-sent `x-nacre-*` ones
    /// dropped, the gateway's client-address assertion added, and on a write the
    /// [`OWNER_ROUTED_HEADER`] mark).
    #[serde(borrow, deserialize_with = "borrowed_pairs")]
    pub headers: Vec<TextPair<'a>>,
    /// The body.
    #[serde(borrow)]
    pub body: Cow<'a, str>,
}

/// A header's name and value, each borrowed where it could be.
pub type TextPair<'a> = (Cow<'a, str>, Cow<'a, str>);

/// A header list, borrowing each string the input holds unescaped (serde borrows a `Cow` only
/// where the field itself says so, not inside a tuple in a list).
fn borrowed_pairs<'de: 'a, 'a, D>(d: D) -> Result<Vec<TextPair<'a>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    struct Pair<'a>(#[serde(borrow)] Cow<'a, str>, #[serde(borrow)] Cow<'a, str>);
    let pairs = Vec::<Pair<'a>>::deserialize(d)?;
    Ok(pairs.into_iter().map(|Pair(n, v)| (n, v)).collect())
}

/// A [`RelayedAnswer`] as a node writes it, borrowing from the answers it has made: the same
/// document, without copying a header or a body into strings first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RelayedAnswerRef<'a> {
    /// [`RelayedAnswer::status`].
    pub status: u16,
    /// [`RelayedAnswer::headers`].
    #[serde(serialize_with = "pairs_of")]
    pub headers: &'a [(&'a str, &'a str)],
    /// [`RelayedAnswer::body`].
    pub body: &'a str,
}

fn pairs_of<S: serde::Serializer>(pairs: &&[(&str, &str)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(pairs.iter())
}

/// A node's answer to one [`RelayedRequest`], as a gateway reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayedAnswer {
    /// The HTTP status.
    pub status: u16,
    /// The answer's headers, without the per-connection ones (length, date, connection).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

/// The md5s of configs a gateway lacks: a POST of a [`Md5Query`] answered with a
/// [`Md5Reply`].
pub const CONFIG_MD5_PATH: &str = "/nacre/internal/configs/md5";

/// On a node's answer to a config read: the Raft log index its state was at least as new as
/// when it read. A gateway caching the answer serves it only while its md5 table knows no
/// newer change of the config; it never reaches clients.
pub const CONFIG_REVISION_HEADER: &str = "x-nacre-config-revision";

/// The config listener long-poll (a public Nacos path): a node holds it up to about 30 s,
/// so whoever proxies it must wait longer than for any other answer.
pub const CONFIG_LISTENER_PATH: &str = "/nacos/v1/cs/configs/listener";
/// How long a proxy waits for a [`CONFIG_LISTENER_PATH`] answer: above the longest hold a node
/// grants (120 s) so the node, not the proxy, ends every poll.
pub const CONFIG_LISTENER_READ_TIMEOUT_MS: u64 = 125_000;

/// What a node answers to a probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PingReply {
    /// The node's advertised address.
    pub address: String,
    /// Its Raft id.
    pub node_id: u64,
    /// Whether it serves clients (snapshot loaded, Raft caught up).
    pub ready: bool,
    /// Whether its Raft state has a membership (it belongs to an initialized cluster).
    pub raft_initialized: bool,
    /// Whether it can reach a majority of its cluster that counts it a member (Distro rule
    /// O3): a node without standing answers client writes 503, and gateways route around it.
    #[serde(default = "standing_unknown")]
    pub standing: bool,
    /// The members of its ownership ring: peers compare it with their own (Distro rule E1).
    #[serde(default)]
    pub ring: Vec<String>,
    /// The members it holds DOWN: a node its peers hold down has no standing (rule O3).
    #[serde(default)]
    pub down: Vec<String>,
    /// [`crate::Members::digest`] of its configured member list.
    pub members_digest: u64,
    /// It requires credentials on its API: a gateway then serves a cached answer only to a
    /// credential a node accepted a moment ago for that service (a cached answer must never
    /// skip the node's check).
    #[serde(default)]
    pub auth: bool,
    /// It applies Raft entries that pack several commands (nacre's `Command::Batch`). A leader
    /// packs concurrent writes only once every member says so: during a rolling upgrade an
    /// older member could not read such an entry. Older versions do not send it.
    #[serde(default)]
    pub raft_batches: bool,
    /// It answers beat batches at [`BEATS_PATH`]; a gateway relays beats only to such nodes
    /// (older versions do not send it, and get each beat proxied).
    #[serde(default)]
    pub relays_beats: bool,
    /// It also answers batches of relayed instance writes (registers and deregisters) at
    /// [`WRITES_PATH`]; a gateway relays writes only to nodes that send this.
    #[serde(default)]
    pub relays_writes: bool,
}

/// Nodes that do not report their standing (older versions) are taken to have it.
fn standing_unknown() -> bool {
    true
}

/// One answer of the change feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedPage {
    /// The incarnation the cursor belongs to.
    pub epoch: u64,
    /// Pass this back as `cursor` for the next page.
    pub cursor: u64,
    /// The reader missed events (cursor too old or from another epoch): it must drop
    /// everything it derived from this node.
    pub reset: bool,
    /// Services changed after the given cursor (a service may appear more than once).
    pub keys: Vec<ServiceKey>,
    /// Wall-clock time (ms) of the newest change in `keys` or `configs`, 0 when empty.
    pub newest_ms: u64,
    /// Configs changed after the given cursor, with their new md5 (older nodes send none).
    #[serde(default)]
    pub configs: Vec<ConfigChange>,
}

/// A config's md5 as of a Raft log index.
///
/// Every node applies every config change, so a gateway hears of one change from each node it
/// follows, and from a fetch; it keeps the answer with the highest `revision` (a lagging node
/// must not take a key back to an older md5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigChange {
    /// Which config.
    pub key: ConfigKey,
    /// Its md5 after the change ([`crate::configs::MISSING_MD5`] once deleted).
    pub md5: String,
    /// The Raft log index the md5 is current as of.
    pub revision: u64,
    /// The config has a beta: some clients see other content (a gateway sends its listeners
    /// and reads to a node, which knows who they are).
    #[serde(default)]
    pub beta: bool,
}

/// Which configs' md5s a gateway asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Md5Query {
    /// The keys, at most [`crate::configs::MAX_LISTENED`].
    pub keys: Vec<ConfigKey>,
}

/// The md5s of a [`Md5Query`]'s keys, in its order, all as of one revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Md5Reply {
    /// The Raft log index the node had applied when it read them.
    pub revision: u64,
    /// One per key ([`crate::configs::MISSING_MD5`] for a config that does not exist).
    pub md5s: Vec<String>,
    /// One per key: whether it has a beta (see [`ConfigChange::beta`]).
    #[serde(default)]
    pub betas: Vec<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ping_from_a_node_that_predates_standing_reads_as_standing() {
        let old = r#"{"address":"10.0.0.1:8848","node_id":7,"ready":true,"raft_initialized":true,"members_digest":1}"#;
        let p: PingReply = serde_json::from_str(old).unwrap();
        assert!(p.standing);
        assert!(p.ring.is_empty() && p.down.is_empty());
    }

    #[test]
    fn nacre_headers_share_the_header_prefix() {
        for h in [
            SECRET_HEADER,
            CLIENT_ADDR_HEADER,
            ASSERTED_BY_HEADER,
            CONFIG_REVISION_HEADER,
        ] {
            assert!(h.starts_with(HEADER_PREFIX), "{h}");
        }
    }

    #[test]
    fn internal_paths_share_the_internal_prefix() {
        for p in [
            PING_PATH,
            CHANGES_PATH,
            CONFIG_MD5_PATH,
            BEATS_PATH,
            WRITES_PATH,
            PUSH_SUBSCRIBERS_PATH,
        ] {
            assert!(p.starts_with(INTERNAL_PREFIX), "{p}");
        }
    }

    /// Relayed requests read back as written, borrowing what needs no unescaping and copying
    /// what does; a node's borrowed answers read back as the gateway's owned ones.
    #[test]
    fn relayed_documents_read_and_write_the_same_borrowed_or_not() {
        let sent = vec![
            RelayedRequest {
                op: RelayedOp::Beat,
                query: "serviceName=s&beat=%7B%22ip%22%7D".into(),
                headers: vec![
                    ("user-agent".into(), "Nacos-Python-Client:v0.1.5".into()),
                    ("x-odd".into(), String::from("quote \" and tab\t").into()),
                ],
                body: "a=1".into(),
            },
            RelayedRequest {
                op: RelayedOp::Deregister,
                query: "".into(),
                headers: vec![],
                body: "héllo \\ there".into(),
            },
        ];
        let text = serde_json::to_vec(&sent).unwrap();
        let read: Vec<RelayedRequest<'_>> = serde_json::from_slice(&text).unwrap();
        assert_eq!(read, sent);
        assert!(
            matches!(read[0].query, Cow::Borrowed(_)),
            "nothing to unescape"
        );
        assert!(matches!(read[0].headers[0].1, Cow::Borrowed(_)));
        assert!(
            matches!(read[0].headers[1].1, Cow::Owned(_)),
            "escapes are copied out"
        );
        assert!(matches!(read[1].body, Cow::Owned(_)));

        let headers = [("content-type", "application/json")];
        let made = [
            RelayedAnswerRef {
                status: 200,
                headers: &headers,
                body: "{\"code\":10200}",
            },
            RelayedAnswerRef {
                status: 400,
                headers: &[],
                body: "caused: \"x\"\n",
            },
        ];
        let text = serde_json::to_vec(&made).unwrap();
        let got: Vec<RelayedAnswer> = serde_json::from_slice(&text).unwrap();
        assert_eq!(got.len(), 2);
        for (g, m) in got.iter().zip(&made) {
            assert_eq!(g.status, m.status);
            assert_eq!(g.body, m.body);
            let want: Vec<(String, String)> = m
                .headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
            assert_eq!(g.headers, want);
        }
    }

    /// A beat is written without `op` and a document without `op` reads as a beat, so beat
    /// batches read the same to nodes and gateways from before relayed writes, both ways.
    #[test]
    fn a_relayed_beat_reads_the_same_to_versions_before_relayed_writes() {
        let beat = RelayedRequest {
            op: RelayedOp::Beat,
            query: "serviceName=s".into(),
            headers: vec![],
            body: "".into(),
        };
        let text = serde_json::to_string(&beat).unwrap();
        assert!(!text.contains("op"), "{text}");
        let old = r#"{"query":"serviceName=s","headers":[],"body":""}"#;
        assert_eq!(serde_json::from_str::<RelayedRequest>(old).unwrap(), beat);
        let write = RelayedRequest {
            op: RelayedOp::Register,
            ..beat
        };
        let text = serde_json::to_string(&write).unwrap();
        assert!(text.contains(r#""op":"register""#), "{text}");
        assert_eq!(
            serde_json::from_str::<RelayedRequest>(&text).unwrap(),
            write
        );
        let ping = r#"{"address":"a","node_id":1,"ready":true,"raft_initialized":true,"members_digest":0,"relays_beats":true}"#;
        let ping: PingReply = serde_json::from_str(ping).unwrap();
        assert!(
            ping.relays_beats && !ping.relays_writes,
            "older nodes take no writes"
        );
    }
}

/// A push subscriber whose list poll a gateway answered from its cache: the node registers (or
/// refreshes) it exactly as if the poll had reached it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriberNote {
    /// The service listed.
    pub key: ServiceKey,
    /// `clusters` as the client gave it.
    pub clusters: String,
    /// The client's address as the gateway saw it (its TCP peer).
    pub source: Option<std::net::IpAddr>,
    /// `clientIP` as the client wrote it: used only by a node that trusts it.
    pub claimed: Option<String>,
    /// `udpPort`.
    pub udp_port: u16,
    /// The client's User-Agent.
    pub agent: String,
    /// `app`, when given.
    pub app: Option<String>,
}
