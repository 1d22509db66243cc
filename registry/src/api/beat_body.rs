//! The `beat` JSON a client sends with every heartbeat (Nacos "RsInfo"), read in one pass.
//!
//! The Python and Node clients (and Java until the server allows light beats) send the whole
//! instance on every beat, yet almost every beat is for an instance the node already holds,
//! and then only its identity (ip, port, cluster) matters. So the text is read straight into
//! the few fields nacre uses, without building a JSON tree: strings are borrowed from the text
//! unless they hold escapes, unknown fields are skipped, and the metadata object is only
//! checked for shape (an object of scalars, as Nacos's `Map<String, String>` accepts) and kept
//! as raw text, turned into a map only if the beat has to register the instance. A malformed
//! body is a 400 whether or not the instance is known.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::error::ApiError;
use crate::naming::validate;
use crate::node::BeatBody;

/// Parses a `beat` parameter; a body that is not a JSON object of the expected kinds is a 400
/// naming it, as Nacos answers.
pub fn parse(raw: &str) -> Result<BeatBody<'_>, ApiError> {
    let bad = || ApiError::bad_request(format!("beat format incorrect: {raw}"));
    // A derived struct would also accept a JSON array of its fields in order; Nacos reads
    // only an object.
    if !raw.trim_start().starts_with('{') {
        return Err(bad());
    }
    let f: Fields<'_> = serde_json::from_str(raw).map_err(|_| bad())?;
    let port = match f.port {
        None => None,
        Some(Port::Number(n)) => Some(u16::try_from(n).map_err(|_| bad())?),
        Some(Port::Text(s)) => Some(validate::port("port", &s)?),
    };
    let metadata = match f.metadata {
        Some(m) => {
            serde_json::from_str::<MetadataShape>(m.get()).map_err(|_| bad())?;
            Some(m)
        }
        None => None,
    };
    Ok(BeatBody {
        ip: f.ip.filter(|s| !s.trim().is_empty()),
        port,
        weight: f.weight,
        cluster: f.cluster,
        metadata,
        ephemeral: f.ephemeral,
    })
}

/// The fields of a beat nacre reads; any other field is skipped unread.
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow, default, deserialize_with = "text")]
    ip: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    port: Option<Port<'a>>,
    #[serde(default)]
    weight: Option<f64>,
    #[serde(borrow, default, deserialize_with = "text")]
    cluster: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    metadata: Option<&'a RawValue>,
    #[serde(default, deserialize_with = "flag")]
    ephemeral: Option<bool>,
}

/// A port as a number or as text (Jackson reads both).
enum Port<'a> {
    Number(u64),
    Text(Cow<'a, str>),
}

impl<'de: 'a, 'a> Deserialize<'de> for Port<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Port<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
                Ok(Port::Number(n))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
                u64::try_from(n)
                    .map(Port::Number)
                    .map_err(|_| E::custom("negative port"))
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Port::Text(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Port::Text(Cow::Owned(s.to_string())))
            }
        }
        d.deserialize_any(V)
    }
}

/// A text field: a string is kept (borrowed when unescaped); any other value reads as absent,
/// as the earlier tree-based reading treated it.
fn text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<Cow<'de, str>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Borrowed(s)))
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(s.to_string())))
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
            while a.next_element::<IgnoredAny>()?.is_some() {}
            Ok(None)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
            while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(None)
        }
    }
    d.deserialize_any(V)
}

/// The ephemeral flag: a boolean, or text read leniently as Nacos does; null is absent.
fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = Option<bool>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a boolean")
        }
        fn visit_bool<E: de::Error>(self, b: bool) -> Result<Self::Value, E> {
            Ok(Some(b))
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
            Ok(Some(validate::lenient_bool(s)))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    d.deserialize_any(V)
}

/// Checks that metadata is an object of scalar values, building nothing: the rule of
/// [`validate::json_metadata`], which converts it (a property test holds the two together).
struct MetadataShape;

impl<'de> Deserialize<'de> for MetadataShape {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MetadataShape;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of strings, numbers and booleans")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                while a.next_entry::<IgnoredAny, Scalar>()?.is_some() {}
                Ok(MetadataShape)
            }
        }
        d.deserialize_map(V)
    }
}

/// A string, number, boolean or null, and nothing nested.
struct Scalar;

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Scalar, E> {
                Ok(Scalar)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Scalar, E> {
                Ok(Scalar)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Scalar, E> {
                Ok(Scalar)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Scalar, E> {
                Ok(Scalar)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Scalar, E> {
                Ok(Scalar)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
                Ok(Scalar)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fields_nacre_uses_are_read_and_the_rest_skipped() {
        let b = parse(
            r#"{"ip":"10.0.0.1","port":80,"weight":2,"cluster":"C","metadata":{"a":1,"b":"x","c":true,"d":null},"scheduled":false,"extra":[1,{"y":2}]}"#,
        )
        .unwrap();
        assert_eq!(b.ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(b.port, Some(80));
        assert_eq!(b.weight, Some(2.0));
        assert_eq!(b.cluster.as_deref(), Some("C"));
        let meta = validate::json_metadata_text(b.metadata.unwrap().get()).unwrap();
        assert_eq!(meta.get("a").map(String::as_str), Some("1"));
        assert_eq!(meta.get("c").map(String::as_str), Some("true"));
        assert!(!meta.contains_key("d"));
    }

    #[test]
    fn ports_and_flags_are_read_as_jackson_reads_them() {
        assert_eq!(parse(r#"{"port":"8080"}"#).unwrap().port, Some(8080));
        assert_eq!(parse(r#"{"port":null}"#).unwrap().port, None);
        assert_eq!(
            parse(r#"{"ephemeral":"false"}"#).unwrap().ephemeral,
            Some(false)
        );
        assert_eq!(
            parse(r#"{"ephemeral":true}"#).unwrap().ephemeral,
            Some(true)
        );
        // Escaped text is decoded, and a blank ip is absent.
        assert_eq!(
            parse(r#"{"cluster":"a\u0062"}"#)
                .unwrap()
                .cluster
                .as_deref(),
            Some("ab")
        );
        assert_eq!(parse(r#"{"ip":"  "}"#).unwrap().ip, None);
        // A non-string address reads as absent, as before.
        assert_eq!(parse(r#"{"ip":5}"#).unwrap().ip, None);
    }

    #[test]
    fn malformed_bodies_are_client_errors() {
        for raw in [
            "{",
            "[1]",
            r#"{"port":70000}"#,
            r#"{"port":-1}"#,
            r#"{"port":true}"#,
            r#"{"port":"x"}"#,
            r#"{"weight":"heavy"}"#,
            r#"{"metadata":"x"}"#,
            r#"{"metadata":{"a":{"nested":1}}}"#,
            r#"{"metadata":{"a":[1]}}"#,
            r#"{"ephemeral":1}"#,
            r#"{"ip":"a"} trailing"#,
        ] {
            let e = parse(raw).expect_err(raw);
            assert_eq!(e.status.as_u16(), 400, "{raw}");
        }
    }
}

#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::{parse, MetadataShape};

    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: 256,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    /// A value of the kinds a beat's fields may hold, right or wrong.
    fn value() -> impl Strategy<Value = serde_json::Value> {
        prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(|f| serde_json::json!(f)),
            ".{0,8}".prop_map(serde_json::Value::from),
            Just(serde_json::json!({"k": "v", "n": 1})),
            Just(serde_json::json!([1, "a"])),
        ]
    }

    proptest! {
        #![proptest_config(config())]

        /// Whatever a client puts in `beat`, the answer is a parsed body or a 400; and a
        /// body that parses has metadata that converts.
        #[test]
        fn beat_bodies_parse_or_are_a_client_error(
            fields in prop::collection::btree_map(
                prop::sample::select(vec!["ip", "port", "weight", "cluster", "metadata", "ephemeral", "serviceName", "x"]),
                value(),
                0..7,
            ),
        ) {
            let raw = serde_json::to_string(&fields).unwrap_or_default();
            match parse(&raw) {
                Ok(b) => {
                    if let Some(m) = b.metadata {
                        prop_assert!(crate::naming::validate::json_metadata_text(m.get()).is_some());
                    }
                }
                Err(e) => prop_assert_eq!(e.status.as_u16(), 400),
            }
        }

        /// The shape check and the conversion a registering beat uses state one rule: they
        /// accept exactly the same metadata.
        #[test]
        fn the_metadata_shape_check_agrees_with_the_conversion(
            entries in prop::collection::btree_map(".{0,4}", value(), 0..4),
            top in value(),
        ) {
            for v in [serde_json::json!(entries), top] {
                let text = v.to_string();
                let shaped = serde_json::from_str::<MetadataShape>(&text).is_ok();
                let converts = crate::naming::validate::json_metadata_text(&text).is_some();
                prop_assert_eq!(shaped, converts, "{}", text);
            }
        }

        #[test]
        fn any_text_as_a_beat_is_parsed_or_a_client_error(raw in ".{0,80}") {
            if let Err(e) = parse(&raw) {
                prop_assert_eq!(e.status.as_u16(), 400);
            }
        }
    }
}
