//! What the gateway does with a request, decided from its path and parameters alone (pure).
//!
//! Naming requests carry their service in `serviceName` (or `dom`), `groupName` and
//! `namespaceId`, in the query string or a form body: the same names the nodes read, resolved by
//! the same [`ServiceKey::from_request`], so the gateway hashes exactly the key a node would.

use std::borrow::Cow;

// Node-to-node routes (`INTERNAL_PREFIX`) are never reachable through the gateway.
use nacre_ring::wire::INTERNAL_PREFIX;
use nacre_ring::ServiceKey;

/// Path of the address-server endpoint.
pub const SERVER_LIST_PATH: &str = nacre_config::serverlist::PATH;
/// Path of the gateway's Prometheus metrics.
pub const METRICS_PATH: &str = "/metrics";
/// Liveness of the gateway process.
pub const HEALTH_PATH: &str = "/nacre/gateway/health";
/// Readiness: at least one registry node can take requests.
pub const READY_PATH: &str = "/nacre/gateway/ready";
/// The gateway's state for operators (see [`crate::status`]).
pub const STATUS_PATH: &str = "/nacre/gateway/status";
/// Naming API prefix.
const NAMING_PREFIX: &str = "/nacos/v1/ns/";
/// The cached read.
pub const LIST_PATH: &str = "/nacos/v1/ns/instance/list";
/// Heartbeats: frequent, and they only change a list when they revive an instance, which the
/// change feed reports; they do not invalidate on their own.
pub use nacre_ring::wire::BEAT_PATH;

/// The headers the gateway adds to a client request it hands a node: the client's TCP address
/// as `X-Forwarded-For` (replacing whatever the client sent: it is the only address the
/// gateway knows to be true) and, with the cluster secret, the same address asserted, which
/// the nodes believe and push to. On an `owner_routed` request (an instance write whose
/// client's reads of the service go to the node picked the same way), with the secret, the
/// mark that lets the owner answer without waiting for its peers (rule V3 of the registry's
/// `distro`).
pub fn client_headers(
    ip: std::net::IpAddr,
    secret: Option<&str>,
    owner_routed: bool,
) -> Vec<(&'static str, String)> {
    let ip = ip.to_string();
    let mut out = Vec::with_capacity(4);
    if let Some(secret) = secret {
        out.push((nacre_ring::wire::CLIENT_ADDR_HEADER, ip.clone()));
        out.push((nacre_ring::wire::ASSERTED_BY_HEADER, secret.to_string()));
    }
    out.push(("x-forwarded-for", ip));
    if secret.is_some() && owner_routed {
        out.push((nacre_ring::wire::OWNER_ROUTED_HEADER, "1".to_string()));
    }
    out
}

/// Whether a request with this `Content-Type` carries a form body (none given counts, as the
/// legacy clients send forms without one).
pub fn is_form(content_type: Option<&[u8]>) -> bool {
    content_type.is_none_or(|v| {
        v.get(..33)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"application/x-www-form-urlencoded"))
    })
}

/// Client headers a request handed on in another form (a relayed beat) does not carry: those
/// of the client's connection, the body's framing, the ones [`client_headers`] replaces, and
/// any only nacre's own tiers may set.
pub fn not_relayed(name: &str) -> bool {
    const PER_CONNECTION: [&str; 8] = [
        "connection",
        "keep-alive",
        "content-length",
        "transfer-encoding",
        "te",
        "upgrade",
        "proxy-connection",
        "x-forwarded-for",
    ];
    PER_CONNECTION.iter().any(|h| name.eq_ignore_ascii_case(h))
        || name
            .get(..nacre_ring::wire::HEADER_PREFIX.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(nacre_ring::wire::HEADER_PREFIX))
}

/// Config reads, publishes and deletes.
pub const CONFIGS_PATH: &str = "/nacos/v1/cs/configs";

/// The config a `GET` of [`CONFIGS_PATH`] reads, when its answer may be cached: not a search,
/// not a tag variant (`tag` or the `Vipserver-Tag` header), and a valid key (a bad one goes to
/// a node for its 400).
pub fn cacheable_config_read(
    query: &str,
    tag_header: bool,
) -> Option<nacre_ring::configs::ConfigKey> {
    let special = form_urlencoded::parse(query.as_bytes())
        .any(|(k, _)| matches!(k.as_ref(), "search" | "tag" | "export" | "show"));
    if tag_header || special {
        return None;
    }
    config_key(query)
}

/// The config a query string names (`dataId`, `group`, `tenant`; first value wins, as the
/// nodes read them), when it names a valid one.
pub fn config_key(query: &str) -> Option<nacre_ring::configs::ConfigKey> {
    let (mut data_id, mut group, mut tenant) = (None, None, None);
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        let slot = match k.as_ref() {
            "dataId" => &mut data_id,
            "group" => &mut group,
            "tenant" => &mut tenant,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(v);
        }
    }
    nacre_ring::configs::ConfigKey::new(data_id?.trim(), group?.trim(), tenant.as_deref()).ok()
}

/// Auth API prefix (login, users, roles, permissions).
const AUTH_PREFIX: &str = "/nacos/v1/auth/";

/// Whether `path` is an auth call. Every gateway sends these to the node owning
/// [`auth_key`], so one node's failed-login throttle sees every attempt that came through the
/// gateway tier (round-robin would give a guesser one allowance per node).
pub fn is_auth(path: &str) -> bool {
    path.starts_with(AUTH_PREFIX)
}

/// The routing key of auth calls: a fixed name in no namespace a client can use, the same in
/// every gateway replica.
pub fn auth_key() -> ServiceKey {
    ServiceKey {
        namespace: String::new(),
        group: String::new(),
        service: "nacre:auth".into(),
    }
}

/// Requests the gateway answers itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    /// `GET /nacos/serverlist`.
    ServerList,
    /// `GET /metrics`.
    Metrics,
    /// Liveness.
    Health,
    /// Readiness.
    Ready,
    /// `/nacre/internal/…`: 404.
    Hidden,
    /// [`STATUS_PATH`].
    Status,
    /// A file of the web console (served from the binary, like the nodes serve it).
    Console(nacre_console::Asset),
}

/// The gateway's own endpoints, by path.
pub fn local(path: &str) -> Option<Local> {
    match path {
        SERVER_LIST_PATH => Some(Local::ServerList),
        METRICS_PATH => Some(Local::Metrics),
        HEALTH_PATH => Some(Local::Health),
        READY_PATH => Some(Local::Ready),
        STATUS_PATH => Some(Local::Status),
        p if p.starts_with(INTERNAL_PREFIX) => Some(Local::Hidden),
        p => nacre_console::asset(p).map(Local::Console),
    }
}

/// Whether `path` is a naming call that may name its service only in a form body.
pub fn is_naming(path: &str) -> bool {
    path.starts_with(NAMING_PREFIX)
}

/// Whether a request changes registry state (and so invalidates its service's answers).
pub fn invalidates(method: &http::Method, path: &str) -> bool {
    let writes = matches!(
        *method,
        http::Method::POST | http::Method::PUT | http::Method::DELETE | http::Method::PATCH
    );
    writes && path != BEAT_PATH
}

/// The parameters the gateway reads, from a query string and an optional form body.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Params<'a> {
    service_name: Option<Cow<'a, str>>,
    dom: Option<Cow<'a, str>>,
    group_name: Option<Cow<'a, str>>,
    namespace: Option<Cow<'a, str>>,
    clusters: Option<Cow<'a, str>>,
    healthy_only: Option<Cow<'a, str>>,
    env: Option<Cow<'a, str>>,
    udp_port: Option<Cow<'a, str>>,
    client_ip: Option<Cow<'a, str>>,
    app: Option<Cow<'a, str>>,
    access_token: Option<Cow<'a, str>>,
    username: Option<Cow<'a, str>>,
    password: Option<Cow<'a, str>>,
    ephemeral: Option<Cow<'a, str>>,
}

impl<'a> Params<'a> {
    /// Reads the parameters of `query` then `body` (first value wins, as the servlet map
    /// the nodes mimic does).
    pub fn parse(query: &'a [u8], body: Option<&'a [u8]>) -> Self {
        let mut p = Params::default();
        for part in [Some(query), body].into_iter().flatten() {
            for (k, v) in form_urlencoded::parse(part) {
                let slot = match k.as_ref() {
                    "serviceName" => &mut p.service_name,
                    "dom" => &mut p.dom,
                    "groupName" => &mut p.group_name,
                    "namespaceId" => &mut p.namespace,
                    "clusters" => &mut p.clusters,
                    "healthyOnly" => &mut p.healthy_only,
                    "env" => &mut p.env,
                    "udpPort" => &mut p.udp_port,
                    "clientIP" => &mut p.client_ip,
                    "app" => &mut p.app,
                    "accessToken" => &mut p.access_token,
                    "username" => &mut p.username,
                    "password" => &mut p.password,
                    "ephemeral" => &mut p.ephemeral,
                    _ => continue,
                };
                if slot.is_none() {
                    *slot = Some(v);
                }
            }
        }
        p
    }

    /// `serviceName`, else the legacy `dom`, as the nodes read them (blank counts as absent).
    fn name(&self) -> Option<&str> {
        fn given<'b>(v: &'b Option<Cow<'_, str>>) -> Option<&'b str> {
            v.as_deref().filter(|s| !s.is_empty())
        }
        given(&self.service_name).or_else(|| given(&self.dom))
    }

    /// Whether a service name was given (in the parameters read so far).
    pub fn has_service(&self) -> bool {
        self.name().is_some()
    }

    /// The service the request names, as a node resolves it; `None` when absent or malformed
    /// (the node then answers the client's mistake).
    pub fn service_key(&self) -> Option<ServiceKey> {
        let name = self.name()?;
        ServiceKey::from_request(self.namespace.as_deref(), name, self.group_name.as_deref()).ok()
    }

    /// The part of a list request that shapes the answer besides the service, with the
    /// client's `agent` (User-Agent, or Client-Version when that is empty).
    pub fn list_variant(&self, agent: &str) -> Variant {
        let s = |v: &Option<Cow<'a, str>>| v.as_deref().unwrap_or("").to_string();
        Variant {
            clusters: s(&self.clusters),
            healthy_only: s(&self.healthy_only),
            env: s(&self.env),
            agent: agent.to_string(),
            subscribes: self.udp_port().is_some(),
        }
    }

    /// `udpPort` when the client asks for pushes (a valid, non-zero port).
    pub fn udp_port(&self) -> Option<u16> {
        self.udp_port
            .as_deref()
            .and_then(|p| p.trim().parse::<u16>().ok())
            .filter(|p| *p > 0)
    }

    /// The credential a node reads from this request, fingerprinted; `authorization` is the
    /// `Authorization` header. The rules are the nodes' exactly (a `Bearer` token, else the
    /// first `accessToken`, else the first `username` and `password`; blank values count as
    /// absent), or a node could accept one credential and the memo record another. A value
    /// that was not valid UTF-8 (the nodes refuse it) yields no credential.
    pub fn credential(&self, authorization: Option<&str>) -> Option<crate::authmemo::Fingerprint> {
        fn given<'b>(v: &'b Option<Cow<'_, str>>) -> Option<&'b str> {
            v.as_deref().filter(|v| !v.trim().is_empty())
        }
        let bearer = authorization
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let token = bearer.or_else(|| given(&self.access_token));
        let (user, password) = (given(&self.username), given(&self.password));
        if [token, user, password]
            .into_iter()
            .flatten()
            .any(|v| v.contains(char::REPLACEMENT_CHARACTER))
        {
            return None;
        }
        crate::authmemo::fingerprint(token, user, password)
    }

    /// Whether an instance write is surely of an ephemeral instance: `ephemeral` absent, blank
    /// or `true` (a node's default is ephemeral; any other value is left to the node to read).
    pub fn surely_ephemeral(&self) -> bool {
        self.ephemeral
            .as_deref()
            .map(str::trim)
            .is_none_or(|v| v.is_empty() || v.eq_ignore_ascii_case("true"))
    }

    /// `clientIP`, when given.
    pub fn client_ip(&self) -> Option<&str> {
        self.client_ip.as_deref().filter(|s| !s.is_empty())
    }

    /// `app`, when given.
    pub fn app(&self) -> Option<&str> {
        self.app.as_deref().filter(|s| !s.is_empty())
    }
}

/// Everything in a list request besides the service that changes the answer. `udpPort` and
/// `clientIP` do not, except that a subscribing client of a push-capable kind is told a longer
/// `cacheMillis`: `subscribes` keeps those answers apart. The agent decides the answer's
/// format (grouped `dom` for modern Java clients).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Variant {
    /// `clusters` as given.
    pub clusters: String,
    /// `healthyOnly` as given.
    pub healthy_only: String,
    /// `env` as given.
    pub env: String,
    /// User-Agent (or Client-Version).
    pub agent: String,
    /// `udpPort` > 0.
    pub subscribes: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_surely_ephemeral_writes_count_as_ephemeral() {
        for q in [
            "serviceName=s",
            "serviceName=s&ephemeral=",
            "serviceName=s&ephemeral=true",
            "serviceName=s&ephemeral=%20TRUE",
            "serviceName=s&ephemeral=true&ephemeral=false",
        ] {
            assert!(Params::parse(q.as_bytes(), None).surely_ephemeral(), "{q}");
        }
        for q in [
            "serviceName=s&ephemeral=false",
            "serviceName=s&ephemeral=0",
            "serviceName=s&ephemeral=yes",
        ] {
            assert!(!Params::parse(q.as_bytes(), None).surely_ephemeral(), "{q}");
        }
        let body = b"ephemeral=false";
        assert!(!Params::parse(b"serviceName=s", Some(body)).surely_ephemeral());
    }

    #[test]
    fn a_query_names_a_config_or_nothing() {
        let k = config_key("dataId=a.yaml&group=G&tenant=t1");
        assert_eq!(
            k,
            nacre_ring::configs::ConfigKey::new("a.yaml", "G", Some("t1")).ok()
        );
        assert!(config_key("dataId=a.yaml").is_none());
        assert!(config_key("dataId=&group=G").is_none());
        assert!(cacheable_config_read("dataId=a&group=G", false).is_some());
        assert!(cacheable_config_read("dataId=a&group=G&search=blur", false).is_none());
        assert!(cacheable_config_read("dataId=a&group=G", true).is_none());
    }

    #[test]
    fn auth_calls_share_one_fixed_key_that_no_client_service_can_have() {
        assert!(is_auth("/nacos/v1/auth/login"));
        assert!(is_auth("/nacos/v1/auth/users/login"));
        assert!(!is_auth("/nacos/v1/ns/instance"));
        assert_eq!(auth_key(), auth_key());
        // Client keys always name a namespace (`public` at least).
        assert_eq!(auth_key().namespace, "");
    }

    #[test]
    fn only_plain_config_reads_are_cacheable() {
        let key = cacheable_config_read("dataId=a.yaml&group=G&tenant=ns-1", false).unwrap();
        assert_eq!(
            (key.data_id.as_str(), key.tenant.as_str()),
            ("a.yaml", "ns-1")
        );
        assert_eq!(
            cacheable_config_read("dataId=a&group=G&tenant=public", false)
                .unwrap()
                .tenant,
            ""
        );
        for q in [
            "dataId=a&group=G&tag=t",
            "dataId=a&group=G&search=accurate",
            "dataId=a&group=",
            "dataId=a%20b&group=G",
            "group=G",
        ] {
            assert!(cacheable_config_read(q, false).is_none(), "{q}");
        }
        assert!(cacheable_config_read("dataId=a&group=G", true).is_none());
    }

    #[test]
    fn local_paths() {
        assert_eq!(local("/nacos/serverlist"), Some(Local::ServerList));
        assert_eq!(local("/metrics"), Some(Local::Metrics));
        assert_eq!(local("/nacre/internal/changes"), Some(Local::Hidden));
        assert_eq!(local("/nacos/v1/ns/instance/list"), None);
        assert_eq!(local(STATUS_PATH), Some(Local::Status));
        assert!(matches!(local("/nacos/"), Some(Local::Console(_))));
        assert!(matches!(
            local("/nacos/console/console.js"),
            Some(Local::Console(_))
        ));
        // Not a console file: passed to a node, which answers it.
        assert_eq!(local("/nacos/console/missing.js"), None);
    }

    #[test]
    fn the_key_is_the_one_a_node_resolves() {
        let p = Params::parse(
            b"serviceName=G%40%40svc&namespaceId=dev&groupName=ignored",
            None,
        );
        assert_eq!(p.service_key(), Some(ServiceKey::new("dev", "G", "svc")));
        let p = Params::parse(b"serviceName=svc", None);
        assert_eq!(
            p.service_key(),
            Some(ServiceKey::new("public", "DEFAULT_GROUP", "svc"))
        );
        let p = Params::parse(b"", Some(b"ip=1.1.1.1&serviceName=svc&groupName=B"));
        assert_eq!(p.service_key(), Some(ServiceKey::new("public", "B", "svc")));
        assert_eq!(Params::parse(b"serviceName=@@x", None).service_key(), None);
        assert_eq!(Params::parse(b"ip=1", None).service_key(), None);
    }

    #[test]
    fn query_values_win_over_the_body_and_dom_is_a_fallback() {
        let p = Params::parse(b"serviceName=a", Some(b"serviceName=b"));
        assert_eq!(p.service_key().unwrap().service, "a");
        let p = Params::parse(b"dom=d", None);
        assert_eq!(p.service_key().unwrap().service, "d");
        let p = Params::parse(b"dom=d&serviceName=s", None);
        assert_eq!(p.service_key().unwrap().service, "s");
    }

    #[test]
    fn variants_ignore_push_addresses_but_not_the_answer_shape() {
        let a = Params::parse(b"serviceName=s&udpPort=5000&clientIP=1.2.3.4", None);
        let b = Params::parse(b"serviceName=s&udpPort=6000&clientIP=5.6.7.8", None);
        assert_eq!(a.list_variant("ua"), b.list_variant("ua"));
        let c = Params::parse(b"serviceName=s&udpPort=0", None);
        assert_ne!(a.list_variant("ua"), c.list_variant("ua"));
        assert_ne!(a.list_variant("ua"), a.list_variant("other"));
        let d = Params::parse(b"serviceName=s&healthyOnly=true", None);
        assert_ne!(c.list_variant("ua"), d.list_variant("ua"));
    }

    #[test]
    fn a_relayed_request_invalidates_exactly_when_it_is_a_write() {
        use nacre_ring::wire::RelayedOp;
        for op in [RelayedOp::Beat, RelayedOp::Register, RelayedOp::Deregister] {
            let method = http::Method::from_bytes(op.method().as_bytes()).unwrap();
            assert_eq!(invalidates(&method, op.path()), op.is_write(), "{op:?}");
        }
    }

    #[test]
    fn writes_except_beats_invalidate() {
        assert!(invalidates(&http::Method::POST, "/nacos/v1/ns/instance"));
        assert!(invalidates(&http::Method::DELETE, "/nacos/v1/ns/instance"));
        assert!(!invalidates(&http::Method::PUT, BEAT_PATH));
        assert!(!invalidates(&http::Method::GET, LIST_PATH));
    }
}
