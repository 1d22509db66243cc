//! Validation and parsing of values clients send: booleans, numbers, names, addresses,
//! weights and metadata. Error texts follow Nacos so that operators recognise them.

use super::error::NamingError;
use super::model::Metadata;

/// Largest accepted instance weight.
pub const MAX_WEIGHT: f64 = 10_000.0;

/// Nacos's lenient boolean (`true/on/yes/y/t`, any case); anything else is false.
pub fn lenient_bool(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "true" | "on" | "yes" | "y" | "t"
    )
}

/// Nacos's strict boolean: only `true` (any case) is true.
pub fn strict_bool(v: &str) -> bool {
    v.trim().eq_ignore_ascii_case("true")
}

fn number_error(v: &str) -> NamingError {
    NamingError::bad(format!("For input string: \"{v}\""))
}

/// Parses a port: a number in 0..=65535 (0 only where the caller allows it).
pub fn port(name: &str, v: &str) -> Result<u16, NamingError> {
    let n: i64 = v.trim().parse().map_err(|_| number_error(v))?;
    u16::try_from(n)
        .map_err(|_| NamingError::bad(format!("Param '{name}' is out of range: {n} (0-65535)")))
}

/// Parses a weight and checks Nacos's range.
pub fn weight(v: &str) -> Result<f64, NamingError> {
    let w: f64 = v.trim().parse().map_err(|_| number_error(v))?;
    check_weight(w)?;
    Ok(w)
}

/// Checks a weight against Nacos's range.
pub fn check_weight(w: f64) -> Result<(), NamingError> {
    if !(0.0..=MAX_WEIGHT).contains(&w) {
        return Err(NamingError::bad(
            "instance format invalid: The weights range from 0.0 to 10000.0",
        ));
    }
    Ok(())
}

/// Parses a float parameter such as `protectThreshold`, requiring 0.0..=1.0.
pub fn fraction(name: &str, v: &str) -> Result<f64, NamingError> {
    let f: f64 = v.trim().parse().map_err(|_| number_error(v))?;
    if !(0.0..=1.0).contains(&f) {
        return Err(NamingError::bad(format!(
            "Param '{name}' must be between 0.0 and 1.0, current: {v}"
        )));
    }
    Ok(f)
}

/// Parses a positive integer parameter such as `pageNo`.
pub fn positive(name: &str, v: &str, max: u64) -> Result<u64, NamingError> {
    let n: i64 = v.trim().parse().map_err(|_| number_error(v))?;
    if n < 1 || n as u64 > max {
        return Err(NamingError::bad(format!(
            "Param '{name}' is out of range: {n} (1-{max})"
        )));
    }
    Ok(n as u64)
}

/// Checks a cluster name: `[0-9a-zA-Z-]+` (no underscore, no dot).
pub fn cluster_name(v: &str) -> Result<(), NamingError> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(NamingError::bad(format!(
            "cluster name can only have these characters: 0-9a-zA-Z-, current: {v}"
        )));
    }
    Ok(())
}

/// Checks a grouped service name: `[0-9a-zA-Z@.:_-]+`.
pub fn service_name(grouped: &str) -> Result<(), NamingError> {
    let ok = !grouped.is_empty()
        && grouped
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'@' | b'.' | b':' | b'_' | b'-'));
    if !ok {
        return Err(NamingError::bad(format!(
            "dom name can only have these characters: 0-9a-zA-Z-._:, current: {grouped}"
        )));
    }
    Ok(())
}

/// Longest HTTP health-check path accepted.
pub const MAX_CHECKER_PATH: usize = 512;
/// Longest HTTP health-check `headers` value accepted.
pub const MAX_CHECKER_HEADERS: usize = 1024;

/// Checks an HTTP health checker's path. It goes verbatim into the request line of a probe
/// the node sends, so it must be a path only: starting with `/`, visible ASCII (no space, CR,
/// LF or other control byte, which would let a client make nodes send arbitrary bytes), and
/// bounded.
pub fn checker_path(v: &str) -> Result<(), NamingError> {
    let ok = v.starts_with('/')
        && v.len() <= MAX_CHECKER_PATH
        && v.bytes().all(|b| b.is_ascii_graphic());
    if !ok {
        return Err(NamingError::bad(format!(
            "healthChecker.path must be a path of at most {MAX_CHECKER_PATH} visible ASCII characters starting with '/'"
        )));
    }
    Ok(())
}

/// Checks an HTTP health checker's `headers` (`k:v|k:v`): printable ASCII without CR or LF,
/// bounded.
pub fn checker_headers(v: &str) -> Result<(), NamingError> {
    let ok = v.len() <= MAX_CHECKER_HEADERS && v.bytes().all(|b| b == b' ' || b.is_ascii_graphic());
    if !ok {
        return Err(NamingError::bad(format!(
            "healthChecker.headers must be at most {MAX_CHECKER_HEADERS} printable ASCII characters"
        )));
    }
    Ok(())
}

/// Checks an instance address: digit-and-dot strings must be valid IPv4; host names pass.
pub fn ip(v: &str) -> Result<(), NamingError> {
    let bad =
        || NamingError::bad("instance format invalid: Your IP address is spelled incorrectly");
    if v.is_empty() || v.len() > 255 || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    if v.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && v.parse::<std::net::Ipv4Addr>().is_err()
    {
        return Err(bad());
    }
    Ok(())
}

/// Parses metadata: a JSON object (scalar values coerced to strings) or legacy `k1=v1,k2=v2`.
pub fn metadata(raw: &str) -> Result<Metadata, NamingError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(Metadata::new());
    }
    let bad = || NamingError::bad(format!("metadata format incorrect:{raw}"));
    if raw.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(raw).map_err(|_| bad())?;
        return json_metadata(&v).ok_or_else(bad);
    }
    let mut out = Metadata::new();
    for pair in raw.split(',') {
        let (k, v) = pair.split_once('=').ok_or_else(bad)?;
        let k = k.trim();
        if k.is_empty() {
            return Err(bad());
        }
        out.insert(k.to_string(), v.trim().to_string());
    }
    Ok(out)
}

/// Converts a JSON object into metadata, coercing numbers and booleans to strings as Jackson
/// does; `None` when the value is not an object or holds nested values.
pub fn json_metadata(v: &serde_json::Value) -> Option<Metadata> {
    let obj = v.as_object()?;
    let mut out = Metadata::new();
    for (k, v) in obj {
        let s = match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            serde_json::Value::Null => continue,
            _ => return None,
        };
        out.insert(k.clone(), s);
    }
    Some(out)
}

/// [`json_metadata`] of JSON text; `None` when it is not such an object.
pub fn json_metadata_text(raw: &str) -> Option<Metadata> {
    json_metadata(&serde_json::from_str(raw).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checker_paths_and_headers_cannot_smuggle_bytes_into_a_probe() {
        assert!(checker_path("/health").is_ok());
        assert!(checker_path("/a?b=c&d=%20").is_ok());
        for bad in [
            "",
            "health",
            "/h HTTP/1.0\r\nHost: evil\r\n\r\n",
            "/h\nX: y",
            "/h\r",
            "/a b",
            "http://evil/",
            "/\u{e9}",
        ] {
            assert!(checker_path(bad).is_err(), "{bad:?}");
        }
        assert!(checker_path(&format!("/{}", "a".repeat(MAX_CHECKER_PATH))).is_err());
        assert!(checker_headers("a:b|c: d").is_ok());
        assert!(checker_headers("a:b\r\nX:y").is_err());
        assert!(checker_headers(&"a".repeat(MAX_CHECKER_HEADERS + 1)).is_err());
    }

    #[test]
    fn booleans() {
        for t in ["true", "True", "ON", "yes", "y", "T"] {
            assert!(lenient_bool(t), "{t}");
        }
        for f in ["false", "False", "0", "", "nope"] {
            assert!(!lenient_bool(f), "{f}");
        }
        assert!(strict_bool("TRUE"));
        assert!(!strict_bool("yes"));
    }

    #[test]
    fn numbers() {
        assert_eq!(port("port", "8080"), Ok(8080));
        assert_eq!(
            port("port", "abc"),
            Err(NamingError::bad("For input string: \"abc\""))
        );
        assert!(port("port", "70000").is_err());
        assert!(port("port", "-1").is_err());
        assert!(weight("10000.5").is_err());
        assert!(weight("-0.1").is_err());
        assert_eq!(weight("0.5"), Ok(0.5));
        assert!(weight("NaN").is_err());
        assert!(fraction("protectThreshold", "1.5").is_err());
    }

    #[test]
    fn names() {
        assert!(cluster_name("DEFAULT").is_ok());
        assert!(cluster_name("None").is_ok());
        assert!(cluster_name("a_b").is_err());
        assert!(cluster_name("a.b").is_err());
        assert!(service_name("DEFAULT_GROUP@@orders.v1:x").is_ok());
        assert!(service_name("DEFAULT_GROUP@@or ders").is_err());
    }

    #[test]
    fn addresses() {
        assert!(ip("10.0.0.1").is_ok());
        assert!(ip("my-host.local").is_ok());
        assert!(ip("10.0.0.300").is_err());
        assert!(ip("10.0.0").is_err());
        assert!(ip("").is_err());
    }

    #[test]
    fn metadata_forms() {
        let m = metadata(r#"{"a":"1","b":2,"c":true}"#).unwrap();
        assert_eq!(m.get("b").map(String::as_str), Some("2"));
        assert_eq!(m.get("c").map(String::as_str), Some("true"));
        let m = metadata("k1=v1,k2=v2").unwrap();
        assert_eq!(m.len(), 2);
        assert!(metadata("{not json").is_err());
        assert!(metadata(r#"{"a":{"b":1}}"#).is_err());
        assert!(metadata("novalue").is_err());
        assert!(metadata("").unwrap().is_empty());
    }
}
