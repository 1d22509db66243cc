//! The config listener protocol (rule C6 in [`super`]): parsing `Listening-Configs`, how long
//! to hold a request, and writing the list of changed keys.
//!
//! Entries are `dataId ^2 group ^2 md5 [^2 tenant] ^1` (U+0002, U+0001). The reply names each
//! changed entry as `dataId %02 group [%02 tenant] %01`, URL-encoded as Java's `URLEncoder`
//! does, with the tenant exactly as the client sent it (clients match replies against their
//! own keys), then one `\n`.

use std::time::Duration;

use super::{ConfigKey, ParamError, MAX_LISTENED};

/// Shortest hold of a listener (Nacos's fixed 10 s floor).
pub const MIN_HOLD: Duration = Duration::from_secs(10);
/// Longest hold, whatever the client asks (clients send 30 s); proxies in front of a node wait
/// [`crate::wire::CONFIG_LISTENER_READ_TIMEOUT_MS`], a little longer.
pub const MAX_HOLD: Duration = Duration::from_secs(120);
/// Answer this much before the client's timeout, so load balancers do not cut the poll.
pub const HOLD_MARGIN: Duration = Duration::from_millis(500);
/// The header naming the client's poll timeout (ms).
pub const TIMEOUT_HEADER: &str = "Long-Pulling-Timeout";
/// The header asking for an answer at once.
pub const NO_HANGUP_HEADER: &str = "Long-Pulling-Timeout-No-Hangup";
/// The header naming the tag a config client reads (rule C7 of the node's config API).
pub const TAG_HEADER: &str = "Vipserver-Tag";

/// The client headers a node reads from a listener poll: its hold ([`TIMEOUT_HEADER`],
/// [`NO_HANGUP_HEADER`]), its tag ([`TAG_HEADER`]), its credential (`Authorization`) and how
/// its body is encoded (`Content-Type`). A gateway that passes a poll to a node passes these
/// and no other header of the client's (the Java client sends eight more, which a parked poll
/// would otherwise keep for 30 s); a node that starts reading another one from a poll must
/// add it here.
pub const READ_HEADERS: [&str; 5] = [
    TIMEOUT_HEADER,
    NO_HANGUP_HEADER,
    TAG_HEADER,
    "Authorization",
    "Content-Type",
];

/// Whether a node reads the header `name` from a listener poll ([`READ_HEADERS`]; names
/// compare without case).
pub fn is_read_header(name: &str) -> bool {
    READ_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// How long a listener may be held, from its [`TIMEOUT_HEADER`] and [`NO_HANGUP_HEADER`]
/// values: `max(10 s, timeout − 500 ms)`, bounded; `None` to answer at once (no timeout:
/// short polling; or no-hang-up).
pub fn hold(timeout: Option<&str>, no_hangup: Option<&str>) -> Option<Duration> {
    if no_hangup.is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return None;
    }
    let asked = timeout?.trim().parse::<u64>().ok()?;
    Some(
        Duration::from_millis(asked)
            .saturating_sub(HOLD_MARGIN)
            .clamp(MIN_HOLD, MAX_HOLD),
    )
}

const FIELD: char = '\u{2}';
const ENTRY: char = '\u{1}';

/// Nacos's listener-query document, `{"collectStatus":200,"lisentersGroupkeyStatus":{client:
/// md5}}` (the misspelling is Nacos's, kept for its tools), from the parked `listeners`.
pub fn listeners_document(listeners: &[super::watch::Listener]) -> String {
    let map: std::collections::BTreeMap<&str, &str> = listeners
        .iter()
        .map(|l| (l.client.as_str(), l.md5.as_str()))
        .collect();
    let status = serde_json::json!({ "collectStatus": 200, "lisentersGroupkeyStatus": map });
    status.to_string()
}

/// Merges listener-query documents (a gateway's own and its nodes'): the union of their
/// clients. `None` when one is not such a document.
pub fn merge_listeners_documents<'a>(
    docs: impl IntoIterator<Item = &'a str>,
) -> Option<Vec<super::watch::Listener>> {
    let mut out = Vec::new();
    for doc in docs {
        let v: serde_json::Value = serde_json::from_str(doc).ok()?;
        for (client, md5) in v.get("lisentersGroupkeyStatus")?.as_object()? {
            out.push(super::watch::Listener {
                client: client.clone(),
                md5: md5.as_str().unwrap_or("").to_string(),
            });
        }
    }
    out.sort();
    out.dedup();
    Some(out)
}

/// One listened key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listened {
    /// The config it names.
    pub key: ConfigKey,
    /// The md5 the client holds (`""` for none).
    pub md5: String,
    /// `dataId` as sent.
    data_id: String,
    /// `group` as sent.
    group: String,
    /// `tenant` as sent (absent in the three-field form).
    tenant: Option<String>,
}

/// Parses a `Listening-Configs` value; `tenant` is the separate form field some clients (npm)
/// send, used when an entry has no tenant of its own.
pub fn parse(value: &str, tenant: Option<&str>) -> Result<Vec<Listened>, ParamError> {
    let mut out = Vec::new();
    for entry in value.split(ENTRY).filter(|e| !e.is_empty()) {
        if out.len() == MAX_LISTENED {
            return Err(ParamError(format!(
                "invalid Listening-Configs: more than {MAX_LISTENED} keys"
            )));
        }
        let fields: Vec<&str> = entry.split(FIELD).collect();
        if !(3..=4).contains(&fields.len()) {
            return Err(ParamError(format!(
                "invalid Listening-Configs entry: {} fields, expected dataId, group, md5 and an optional tenant",
                fields.len()
            )));
        }
        let sent_tenant = fields.get(3).map(|t| t.to_string());
        let key = ConfigKey::new(fields[0], fields[1], sent_tenant.as_deref().or(tenant))?;
        let md5 = match fields[2] {
            "null" => "",
            m => m,
        };
        out.push(Listened {
            key,
            md5: md5.to_string(),
            data_id: fields[0].to_string(),
            group: fields[1].to_string(),
            tenant: sent_tenant,
        });
    }
    Ok(out)
}

/// Parses a listener request's `Listening-Configs` (`value`, `None` when the parameter is
/// missing) and `tenant` parameters: at least one key is required.
pub fn parse_request(
    value: Option<&str>,
    tenant: Option<&str>,
) -> Result<Vec<Listened>, ParamError> {
    let value = value.ok_or_else(|| ParamError("Param 'Listening-Configs' is required.".into()))?;
    let listened = parse(value, tenant)?;
    if listened.is_empty() {
        return Err(ParamError("invalid Listening-Configs: no keys".into()));
    }
    Ok(listened)
}

/// The reply body naming `changed` (empty when nothing changed).
pub fn reply<'a>(changed: impl IntoIterator<Item = &'a Listened>) -> String {
    let mut body = String::new();
    for l in changed {
        encode_into(&mut body, &l.data_id);
        body.push_str("%02");
        encode_into(&mut body, &l.group);
        if let Some(t) = l.tenant.as_deref().filter(|t| !t.trim().is_empty()) {
            body.push_str("%02");
            encode_into(&mut body, t);
        }
        body.push_str("%01");
    }
    if !body.is_empty() {
        body.push('\n');
    }
    body
}

/// `application/x-www-form-urlencoded` as Java's `URLEncoder` writes it.
fn encode_into(out: &mut String, s: &str) {
    for b in s.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'*' | b'_' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c6_the_hold_is_the_timeout_less_half_a_second_within_bounds() {
        assert_eq!(
            hold(Some("30000"), None),
            Some(Duration::from_millis(29_500))
        );
        assert_eq!(hold(Some("3000"), None), Some(MIN_HOLD));
        assert_eq!(hold(Some("9999999"), None), Some(MAX_HOLD));
        assert_eq!(hold(None, None), None, "no header: short polling");
        assert_eq!(hold(Some("x"), None), None);
        assert_eq!(hold(Some("30000"), Some("true")), None);
        assert_eq!(
            hold(Some("30000"), Some("false")),
            Some(Duration::from_millis(29_500))
        );
    }

    #[test]
    fn proxies_wait_longer_than_the_longest_hold() {
        assert!(Duration::from_millis(crate::wire::CONFIG_LISTENER_READ_TIMEOUT_MS) > MAX_HOLD);
    }

    #[test]
    fn c6_three_and_four_field_entries_parse_and_null_md5_is_none() {
        let v = "a\u{2}G\u{2}abc\u{1}b\u{2}G\u{2}null\u{2}\u{1}c\u{2}G\u{2}\u{2}ns-1\u{1}";
        let l = parse(v, None).unwrap();
        assert_eq!(l.len(), 3);
        assert_eq!((l[0].key.data_id.as_str(), l[0].md5.as_str()), ("a", "abc"));
        assert_eq!((l[1].key.tenant.as_str(), l[1].md5.as_str()), ("", ""));
        assert_eq!(l[2].key.tenant, "ns-1");
        // The separate tenant field applies to entries without one.
        let l = parse("a\u{2}G\u{2}x\u{1}", Some("ns-2")).unwrap();
        assert_eq!(l[0].key.tenant, "ns-2");
    }

    #[test]
    fn c6_malformed_entries_and_too_many_keys_are_refused() {
        for bad in [
            "a\u{2}G\u{1}",
            "a\u{2}G\u{2}m\u{2}t\u{2}x\u{1}",
            "a b\u{2}G\u{2}m\u{1}",
            "a\u{2}G/x\u{2}m\u{1}",
        ] {
            assert!(parse(bad, None).is_err(), "{bad:?}");
        }
        let many: String = (0..=MAX_LISTENED)
            .map(|i| format!("d{i}\u{2}G\u{2}m\u{1}"))
            .collect();
        assert!(parse(&many, None).is_err());
        let max: String = (0..MAX_LISTENED)
            .map(|i| format!("d{i}\u{2}G\u{2}m\u{1}"))
            .collect();
        assert_eq!(parse(&max, None).unwrap().len(), MAX_LISTENED);
        assert!(parse("", None).unwrap().is_empty());
        assert!(
            parse_request(Some(""), None).is_err(),
            "a request names a key"
        );
        assert!(parse_request(None, None).is_err());
        assert_eq!(
            parse_request(Some("a\u{2}G\u{2}\u{1}"), None)
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn c6_the_reply_echoes_the_tenant_as_sent_and_encodes_like_java() {
        let l = parse(
            "a.b\u{2}G:1\u{2}m\u{2}\u{1}c\u{2}G\u{2}m\u{2}public\u{1}d\u{2}G\u{2}m\u{1}",
            None,
        )
        .unwrap();
        assert_eq!(
            reply(&l),
            "a.b%02G%3A1%01c%02G%02public%01d%02G%01\n",
            "an empty tenant is left out, `public` is echoed"
        );
        assert_eq!(reply(&[]), "");
    }
}
