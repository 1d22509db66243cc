//! Property tests of the parsers and the selection logic that every request goes through:
//! form decoding, metadata parsing, service-key resolution and instance selection.
//!
//! Case counts are kept modest so CI stays fast; failures are not persisted to files (the
//! failing input is printed instead).

use std::collections::BTreeMap;

use nacre_registry::api::params::decode_form;
use nacre_registry::naming::model::{Instance, Metadata};
use nacre_registry::naming::select::{select, Selection};
use nacre_registry::naming::validate;
use nacre_ring::{KeyError, ServiceKey, DEFAULT_GROUP, DEFAULT_NAMESPACE};
use proptest::prelude::*;

const CASES: u32 = 256;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn decode(raw: &[u8]) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    decode_form(raw, &mut out).ok().map(|()| out)
}

fn encode(pairs: &[(String, String)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// Bytes biased towards the characters form decoding cares about, so that `%`-escapes,
/// separators and multi-byte UTF-8 show up far more often than in uniform random bytes.
fn form_bytes() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        4 => any::<u8>(),
        2 => prop::sample::select(b"%&=+".to_vec()),
        2 => prop::sample::select(b"0123456789abcdefABCDEF".to_vec()),
        1 => prop::sample::select(vec![0xe4u8, 0xb8, 0xad, 0xc3, 0xa9, 0xff, 0x80]),
    ];
    prop::collection::vec(byte, 0..200)
}

/// Strings made only of valid `%XX` escapes, separators and plain characters.
fn well_formed_form() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        3 => "[a-zA-Z0-9._~*-]{1,6}",
        2 => "%[0-7][0-9a-fA-F]",
        1 => Just("%E4%B8%AD".to_string()),
        1 => Just("%C3%A9".to_string()),
        2 => prop::sample::select(vec!["&", "=", "+"]).prop_map(str::to_string),
    ];
    prop::collection::vec(piece, 0..30).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn decode_form_never_panics(raw in form_bytes()) {
        let _ = decode(&raw);
    }

    #[test]
    fn decode_form_never_panics_on_any_bytes(raw in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode(&raw);
    }

    #[test]
    fn decode_form_inverts_form_urlencoded(
        pairs in prop::collection::vec((any::<String>(), any::<String>()), 0..8)
    ) {
        let encoded = encode(&pairs);
        prop_assert_eq!(decode(encoded.as_bytes()), Some(pairs), "encoded: {}", encoded);
    }

    /// Where the strict decoder accepts input, it agrees with the lenient reference decoder.
    #[test]
    fn decode_form_agrees_with_reference_when_it_accepts(raw in well_formed_form()) {
        if let Some(strict) = decode(raw.as_bytes()) {
            let lenient: Vec<(String, String)> = form_urlencoded::parse(raw.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            prop_assert_eq!(strict, lenient, "raw: {}", raw);
        }
    }

    #[test]
    fn decode_form_agrees_with_reference_on_any_accepted_bytes(raw in form_bytes()) {
        if let Some(strict) = decode(&raw) {
            let lenient: Vec<(String, String)> = form_urlencoded::parse(&raw)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            prop_assert_eq!(strict, lenient);
        }
    }

    #[test]
    fn metadata_never_panics(raw in any::<String>()) {
        let _ = validate::metadata(&raw);
    }

    #[test]
    fn metadata_never_panics_on_json_like_text(raw in r#"[{}\[\]":,=a-z0-9 .\\-]{0,60}"#) {
        let _ = validate::metadata(&raw);
    }

    #[test]
    fn metadata_accepts_any_string_object(
        map in prop::collection::btree_map(any::<String>(), any::<String>(), 0..8)
    ) {
        let json = serde_json::to_string(&map).expect("a string map serialises");
        let parsed: Metadata = validate::metadata(&json)
            .map_err(|e| TestCaseError::fail(format!("{json}: {e}")))?;
        prop_assert_eq!(parsed, map);
    }

    #[test]
    fn metadata_accepts_pretty_printed_objects(
        map in prop::collection::btree_map("[a-z.]{1,12}", "[ -~]{0,12}", 0..6)
    ) {
        let json = serde_json::to_string_pretty(&map).expect("a string map serialises");
        let padded = format!("  {json}\n");
        prop_assert_eq!(validate::metadata(&padded).ok(), Some(map));
    }

    #[test]
    fn service_key_never_panics_and_display_is_consistent(
        namespace in prop::option::of(any::<String>()),
        service in any::<String>(),
        group in prop::option::of(any::<String>()),
    ) {
        match ServiceKey::from_request(namespace.as_deref(), &service, group.as_deref()) {
            Ok(k) => {
                prop_assert!(!k.namespace.is_empty());
                prop_assert!(!k.group.is_empty());
                prop_assert!(!k.service.is_empty());
                prop_assert_eq!(k.grouped(), format!("{}@@{}", k.group, k.service));
                prop_assert_eq!(k.to_string(), format!("{}##{}", k.namespace, k.grouped()));
                prop_assert_eq!(k.ring_bytes(), k.to_string().into_bytes());
            }
            Err(KeyError::Malformed) | Err(KeyError::EmptyGroup) => {
                // Errors come only from blank names, `@@` in the name, or '@' in the group.
                let group_has_at = group
                    .as_deref()
                    .map(str::trim)
                    .is_some_and(|g| !g.is_empty() && g.contains('@'));
                prop_assert!(service.trim().is_empty() || service.contains("@@") || group_has_at);
            }
        }
    }

    #[test]
    fn service_key_from_valid_names(
        namespace in prop::option::of("[a-zA-Z0-9-]{1,16}"),
        group in prop::option::of("[a-zA-Z0-9._:-]{1,16}"),
        service in "[a-zA-Z0-9._:-]{1,24}",
        prefixed in any::<bool>(),
    ) {
        // Either `group@@service` in the name, or the group as its own parameter.
        let (name, group_param) = match (&group, prefixed) {
            (Some(g), true) => (format!("{g}@@{service}"), None),
            _ => (service.clone(), group.as_deref()),
        };
        let k = ServiceKey::from_request(namespace.as_deref(), &name, group_param)
            .map_err(|e| TestCaseError::fail(format!("{name}: {e}")))?;
        let ns = namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE);
        let g = group.as_deref().unwrap_or(DEFAULT_GROUP);
        prop_assert_eq!(&k, &ServiceKey::new(ns, g, service.as_str()));
        prop_assert_eq!(k.grouped(), format!("{g}@@{service}"));
        prop_assert_eq!(k.to_string(), format!("{ns}##{g}@@{service}"));
        // The grouped name resolves back to the same key, whatever group parameter follows it.
        let again = ServiceKey::from_request(Some(ns), &k.grouped(), Some("OTHER_GROUP"))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(again, k);
    }
}

const SELECT_CLUSTERS: [&str; 3] = ["DEFAULT", "C1", "C2"];

/// (cluster index, healthy, enabled) for each generated instance.
fn instances() -> impl Strategy<Value = Vec<Instance>> {
    prop::collection::vec(
        (0..SELECT_CLUSTERS.len(), any::<bool>(), any::<bool>()),
        0..40,
    )
    .prop_map(|specs| {
        specs
            .into_iter()
            .enumerate()
            .map(|(n, (c, healthy, enabled))| Instance {
                ip: format!("10.0.{}.{}", n / 256, n % 256).into(),
                port: 8080,
                cluster: SELECT_CLUSTERS[c].into(),
                weight: 1.0,
                healthy,
                enabled,
                ephemeral: true,
                metadata: Metadata::new().into(),
                instance_id: n.to_string().into(),
                app: "DEFAULT".into(),
                last_beat_ms: 0,
                marked: false,
            })
            .collect()
    })
}

/// A cluster filter: empty (all clusters) or a few names, possibly unknown or repeated.
fn cluster_filter() -> impl Strategy<Value = Vec<&'static str>> {
    prop::collection::vec(
        prop::sample::select(vec!["DEFAULT", "C1", "C2", "UNKNOWN"]),
        0..3,
    )
}

fn threshold() -> impl Strategy<Value = f64> {
    prop_oneof![Just(0.0), Just(0.5), Just(1.0), 0.0..=1.0f64]
}

fn check_selection(
    all: &[Instance],
    clusters: &[&str],
    healthy_only: bool,
    sel: &Selection<'_>,
) -> Result<(), TestCaseError> {
    let hosts = &sel.hosts;
    prop_assert!(hosts.len() <= all.len());
    prop_assert!(
        hosts.iter().all(|h| h.instance.enabled),
        "disabled reported"
    );
    let first_unhealthy = hosts.iter().position(|h| !h.healthy).unwrap_or(hosts.len());
    prop_assert!(
        hosts[first_unhealthy..].iter().all(|h| !h.healthy),
        "a healthy host follows an unhealthy one"
    );
    if healthy_only && !sel.protected {
        prop_assert!(
            hosts.iter().all(|h| h.healthy),
            "unhealthy host under healthyOnly"
        );
    }
    if sel.protected {
        prop_assert!(
            hosts.iter().all(|h| h.healthy),
            "protected but unhealthy reported"
        );
    } else {
        prop_assert!(hosts.iter().all(|h| h.healthy == h.instance.healthy));
    }
    let wanted = |i: &Instance| clusters.is_empty() || clusters.contains(&i.cluster.as_str());
    prop_assert!(
        hosts.iter().all(|h| wanted(h.instance)),
        "cluster filter ignored"
    );
    prop_assert_eq!(sel.any_matched, all.iter().any(&wanted));
    // Each instance is reported at most once.
    let mut ids: Vec<&str> = hosts
        .iter()
        .map(|h| h.instance.instance_id.as_str())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    prop_assert_eq!(ids.len(), hosts.len());
    // Without healthyOnly (or under protection) every enabled matching instance is reported.
    if !healthy_only || sel.protected {
        let expected = all.iter().filter(|i| i.enabled && wanted(i)).count();
        prop_assert_eq!(hosts.len(), expected);
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn select_invariants(
        all in instances(),
        clusters in cluster_filter(),
        healthy_only in any::<bool>(),
        protect_threshold in threshold(),
    ) {
        let sel = select(&all, &clusters, healthy_only, protect_threshold);
        check_selection(&all, &clusters, healthy_only, &sel)?;
    }
}

/// A map with a repeated key is still a JSON object of strings: the last value wins, as with
/// Jackson.
#[test]
fn metadata_duplicate_keys_last_wins() {
    let m = validate::metadata(r#"{"a":"1","a":"2"}"#).unwrap();
    assert_eq!(m, BTreeMap::from([("a".to_string(), "2".to_string())]));
}

/// `%` must be followed by exactly two hex digits; `u8::from_str_radix` alone also accepts a
/// leading `+`, which would decode `%+1` to the byte 0x01.
#[test]
fn decode_form_rejects_signed_escapes() {
    assert_eq!(decode(b"a=%+1"), None);
    assert_eq!(decode(b"a%+f=1"), None);
}
