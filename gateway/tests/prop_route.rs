//! Property tests of the gateway's request reading: every client request's path, query and
//! body pass through these before anything else, so no input may panic them, and the service
//! they resolve must be the one a node would resolve from the same parameters.

use nacre_gateway::route::{is_naming, local, Params};
use nacre_ring::ServiceKey;
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn form_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        3 => prop::sample::select(vec!["serviceName=", "dom=", "groupName=", "namespaceId=", "udpPort=", "clientIP=", "clusters=", "healthyOnly="]).prop_map(|s| s.as_bytes().to_vec()),
        3 => "[a-zA-Z0-9@%._-]{0,8}".prop_map(String::into_bytes),
        2 => prop::sample::select(vec!["&", "=", "+", "%", "%2", "%ZZ", "@@", "##"]).prop_map(|s| s.as_bytes().to_vec()),
        1 => prop::collection::vec(any::<u8>(), 0..6),
    ];
    prop::collection::vec(piece, 0..20).prop_map(|v| v.concat())
}

fn path() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        3 => prop::sample::select(vec!["/nacos", "/v1", "/ns", "/instance", "/list", "/nacre", "/internal", "/serverlist", "/metrics"]).prop_map(str::to_string),
        2 => prop::sample::select(vec!["/", "//", "%2F", ";", ".", "..", "/.."]).prop_map(str::to_string),
        1 => ".{0,6}",
    ];
    prop::collection::vec(piece, 0..8).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn request_reading_never_panics(query in form_bytes(), body in prop::option::of(form_bytes()), p in path()) {
        let params = Params::parse(&query, body.as_deref());
        let _ = params.has_service();
        let _ = params.udp_port();
        let _ = params.client_ip();
        let _ = params.list_variant("Nacos-Java-Client:v1.4.1");
        let _ = local(&p);
        let _ = is_naming(&p);
        // The gateway routes by the key a node would derive from the same parameters.
        if let Some(key) = params.service_key() {
            let pairs: Vec<(String, String)> = form_urlencoded::parse(&query)
                .chain(body.as_deref().map(form_urlencoded::parse).into_iter().flatten())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            let first = |n: &str| pairs.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
            let name = first("serviceName").filter(|s| !s.is_empty())
                .or_else(|| first("dom").filter(|s| !s.is_empty()));
            let again = ServiceKey::from_request(first("namespaceId"), name.unwrap_or_default(), first("groupName"));
            prop_assert_eq!(Some(key), again.ok());
        }
    }

    /// Paths under the internal prefix are never served or forwarded to a node for a client.
    #[test]
    fn internal_paths_stay_hidden(rest in "[a-z/]{0,20}") {
        let p = format!("/nacre/internal/{rest}");
        prop_assert!(local(&p).is_some(), "{}", p);
    }
}
