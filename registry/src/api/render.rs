//! JSON shapes of the Nacos 1.x naming API, field for field and in Nacos's order.
//!
//! Legacy clients key their caches on `name` and `clusters` and read `dom`, `hosts`,
//! `cacheMillis`, so these structs are the wire contract: change them only with the reference.

use serde::Serialize;

use crate::naming::model::{Instance, Metadata};
use crate::naming::select::{self, Selection};
use crate::node::ServiceView;
use nacre_ring::ServiceKey;

/// One host in a list response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Host<'a> {
    ip: &'a str,
    port: u16,
    valid: bool,
    healthy: bool,
    marked: bool,
    instance_id: &'a str,
    metadata: &'a Metadata,
    enabled: bool,
    weight: f64,
    cluster_name: &'a str,
    service_name: &'a str,
    ephemeral: bool,
}

/// The list (service-info) response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListResponse<'a> {
    hosts: Vec<Host<'a>>,
    dom: &'a str,
    name: &'a str,
    cache_millis: u64,
    last_ref_time: u64,
    checksum: String,
    #[serde(rename = "useSpecifiedURL")]
    use_specified_url: bool,
    clusters: &'a str,
    env: &'a str,
    metadata: &'a Metadata,
}

/// The list response for a service that does not exist.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MissingListResponse<'a> {
    name: &'a str,
    clusters: &'a str,
    cache_millis: u64,
    hosts: [(); 0],
}

/// Everything a list rendering depends on besides the service itself.
#[derive(Debug, Clone, Copy)]
pub struct ListOptions<'a> {
    /// Raw `clusters` parameter, echoed verbatim.
    pub clusters: &'a str,
    /// Drop unhealthy instances (unless protected).
    pub healthy_only: bool,
    /// `dom` and host `serviceName` use the grouped name (Java ≥ 1.0 clients).
    pub grouped_dom: bool,
    /// `cacheMillis` to report.
    pub cache_millis: u64,
    /// Raw `env` parameter, echoed.
    pub env: &'a str,
    /// Server time (ms) for `lastRefTime`.
    pub now_ms: u64,
}

/// Renders a list response (or the short "missing" shape) to JSON text.
pub fn list_json(key: &ServiceKey, view: Option<&ServiceView>, opts: ListOptions<'_>) -> String {
    let grouped = key.grouped();
    let Some(view) = view else {
        return to_json(&MissingListResponse {
            name: &grouped,
            clusters: opts.clusters,
            cache_millis: opts.cache_millis,
            hosts: [],
        });
    };
    let dom: &str = if opts.grouped_dom {
        &grouped
    } else {
        &key.service
    };
    let clusters = select::parse_clusters(opts.clusters);
    let sel: Selection<'_> = select::select(
        &view.instances,
        &clusters,
        opts.healthy_only,
        view.meta.protect_threshold,
    );
    let hosts = sel
        .hosts
        .iter()
        .map(|h| host(h.instance, h.healthy, dom))
        .collect();
    to_json(&ListResponse {
        hosts,
        dom,
        name: &grouped,
        cache_millis: opts.cache_millis,
        last_ref_time: opts.now_ms,
        checksum: select::checksum(&view.instances),
        use_specified_url: false,
        clusters: opts.clusters,
        env: opts.env,
        metadata: &view.meta.metadata,
    })
}

fn host<'a>(i: &'a Instance, healthy: bool, service_name: &'a str) -> Host<'a> {
    Host {
        ip: &i.ip,
        port: i.port,
        valid: healthy,
        healthy,
        marked: i.marked,
        instance_id: &i.instance_id,
        metadata: &i.metadata,
        enabled: i.enabled,
        weight: i.weight,
        cluster_name: &i.cluster,
        service_name,
        ephemeral: i.ephemeral,
    }
}

/// Full instance JSON as the catalog and admin views show it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FullInstance<'a> {
    instance_id: &'a str,
    ip: &'a str,
    port: u16,
    weight: f64,
    healthy: bool,
    enabled: bool,
    ephemeral: bool,
    cluster_name: &'a str,
    service_name: String,
    metadata: &'a Metadata,
    last_beat: u64,
    marked: bool,
    app: &'a str,
    instance_heart_beat_interval: u64,
    instance_heart_beat_time_out: u64,
    ip_delete_timeout: u64,
}

/// The full JSON of one instance.
pub fn full_instance<'a>(i: &'a Instance, key: &ServiceKey) -> FullInstance<'a> {
    FullInstance {
        instance_id: &i.instance_id,
        ip: &i.ip,
        port: i.port,
        weight: i.weight,
        healthy: i.healthy,
        enabled: i.enabled,
        ephemeral: i.ephemeral,
        cluster_name: &i.cluster,
        service_name: key.grouped(),
        metadata: &i.metadata,
        last_beat: i.last_beat_ms,
        marked: i.marked,
        app: &i.app,
        instance_heart_beat_interval: i.beat_interval_ms(),
        instance_heart_beat_time_out: i.beat_timeout_ms(),
        ip_delete_timeout: i.delete_timeout_ms(),
    }
}

/// Serialises a value that cannot fail to serialise (plain structs, string-keyed maps).
pub fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "{}".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::naming::model::ServiceMeta;

    fn view() -> ServiceView {
        ServiceView {
            meta: ServiceMeta::default(),
            instances: vec![Instance {
                ip: "10.0.0.5".into(),
                port: 8080,
                metadata: Metadata::from([("v".to_string(), "1".to_string())]).into(),
                ..crate::naming::model::test_instance("10.0.0.5", 8080, "DEFAULT", true)
            }],
        }
    }

    fn opts(grouped_dom: bool) -> ListOptions<'static> {
        ListOptions {
            clusters: "",
            healthy_only: false,
            grouped_dom,
            cache_millis: 10_000,
            env: "",
            now_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn list_shape_matches_nacos() {
        let key = ServiceKey::new("public", "DEFAULT_GROUP", "orders");
        let json = list_json(&key, Some(&view()), opts(true));
        let expected_prefix = r#"{"hosts":[{"ip":"10.0.0.5","port":8080,"valid":true,"healthy":true,"marked":false,"instanceId":"10.0.0.5#8080#DEFAULT#DEFAULT_GROUP@@orders","metadata":{"v":"1"},"enabled":true,"weight":1.0,"clusterName":"DEFAULT","serviceName":"DEFAULT_GROUP@@orders","ephemeral":true}],"dom":"DEFAULT_GROUP@@orders","name":"DEFAULT_GROUP@@orders","cacheMillis":10000,"lastRefTime":1700000000000,"checksum":""#;
        assert!(json.starts_with(expected_prefix), "{json}");
        assert!(json.ends_with(r#","useSpecifiedURL":false,"clusters":"","env":"","metadata":{}}"#));
    }

    #[test]
    fn python_gets_bare_dom() {
        let key = ServiceKey::new("public", "DEFAULT_GROUP", "orders");
        let v: serde_json::Value =
            serde_json::from_str(&list_json(&key, Some(&view()), opts(false))).unwrap();
        assert_eq!(v["dom"], "orders");
        assert_eq!(v["name"], "DEFAULT_GROUP@@orders");
        assert_eq!(v["hosts"][0]["serviceName"], "orders");
    }

    #[test]
    fn missing_service_shape() {
        let key = ServiceKey::new("public", "DEFAULT_GROUP", "nope");
        let mut o = opts(true);
        o.clusters = "A,B";
        assert_eq!(
            list_json(&key, None, o),
            r#"{"name":"DEFAULT_GROUP@@nope","clusters":"A,B","cacheMillis":10000,"hosts":[]}"#
        );
    }
}
