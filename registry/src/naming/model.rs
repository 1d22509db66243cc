//! The naming data model: instances, clusters, service metadata and namespaces.
//!
//! These are plain values shared by the in-memory ephemeral store, the Raft state machine and the
//! HTTP rendering code. Nothing here does I/O or knows about time sources.

use std::collections::BTreeMap;

pub use compact_str::CompactString;
use serde::{Deserialize, Serialize};

pub use super::intern::SharedMetadata;

/// Default cluster name when a request names none.
pub const DEFAULT_CLUSTER: &str = "DEFAULT";
/// Heartbeat interval the server asks clients to use (ms).
pub const DEFAULT_BEAT_INTERVAL_MS: u64 = 5_000;
/// Time without a beat after which an ephemeral instance turns unhealthy (ms).
pub const DEFAULT_BEAT_TIMEOUT_MS: u64 = 15_000;
/// Time without a beat after which an ephemeral instance is removed (ms).
pub const DEFAULT_DELETE_TIMEOUT_MS: u64 = 30_000;

/// Metadata key overriding the beat interval of one instance.
pub const META_BEAT_INTERVAL: &str = "preserved.heart.beat.interval";
/// Metadata key overriding the unhealthy timeout of one instance.
pub const META_BEAT_TIMEOUT: &str = "preserved.heart.beat.timeout";
/// Metadata key overriding the removal timeout of one instance.
pub const META_DELETE_TIMEOUT: &str = "preserved.ip.delete.timeout";
/// Metadata key selecting how instance ids are generated.
pub const META_ID_GENERATOR: &str = "preserved.instance.id.generator";

/// String-to-string metadata, ordered so renders and checksums are stable.
pub type Metadata = BTreeMap<String, String>;

/// Appends to a list that lives as long as its service, growing it by an eighth instead of
/// doubling: a million instances in small services otherwise carry up to half their lists'
/// slots empty (a 10-instance service holds 16 slots of ~130 bytes). Still amortized O(1) per
/// push: a growth copies the list, and comes once per eighth of its length.
pub fn push_compact<T>(list: &mut Vec<T>, item: T) {
    grow_compact(list);
    list.push(item);
}

/// Makes room for one more element the way [`push_compact`] does, for a caller that inserts
/// rather than appends.
pub fn grow_compact<T>(list: &mut Vec<T>) {
    if list.len() == list.capacity() {
        list.reserve_exact(list.len() / 8 + 1);
    }
}

/// Identity of an instance inside one service: one instance per ip, port and cluster.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct InstanceKey {
    /// Address as the client gave it (an IPv4 literal or a host name).
    pub ip: CompactString,
    /// Port the instance serves on.
    pub port: u16,
    /// Cluster the instance belongs to.
    pub cluster: CompactString,
}

impl std::fmt::Display for InstanceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:unknown:{}", self.ip, self.port, self.cluster)
    }
}

/// One registered instance of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    /// Address as the client gave it.
    pub ip: CompactString,
    /// Port.
    pub port: u16,
    /// Cluster name.
    pub cluster: CompactString,
    /// Load-balancing weight, 0.0..=10000.0.
    pub weight: f64,
    /// Health as last judged by beats or checks.
    pub healthy: bool,
    /// Disabled instances are hidden from lists but still count for the protect threshold.
    pub enabled: bool,
    /// Ephemeral (beats, Distro) or persistent (Raft).
    pub ephemeral: bool,
    /// Client metadata, including `preserved.*` keys; shared with instances interned to the
    /// same map (see [`super::intern`]).
    pub metadata: SharedMetadata,
    /// Stable id: `ip#port#cluster#group@@service` or a snowflake-style small integer.
    pub instance_id: CompactString,
    /// Application name the client registered with.
    pub app: CompactString,
    /// Wall-clock ms of the last beat (or registration).
    pub last_beat_ms: u64,
    /// Marked instances are never expired (set by operators in Nacos).
    pub marked: bool,
}

impl Instance {
    /// The instance's identity inside its service.
    pub fn key(&self) -> InstanceKey {
        InstanceKey {
            ip: self.ip.clone(),
            port: self.port,
            cluster: self.cluster.clone(),
        }
    }

    /// Whether this instance has the given identity, without allocating.
    pub fn matches(&self, ip: &str, port: u16, cluster: &str) -> bool {
        self.port == port && self.ip == ip && self.cluster == cluster
    }

    fn meta_ms(&self, key: &str, default: u64) -> u64 {
        self.metadata
            .get(key)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(default)
    }

    /// Beat interval asked of the client (ms), honouring the per-instance override.
    pub fn beat_interval_ms(&self) -> u64 {
        self.meta_ms(META_BEAT_INTERVAL, DEFAULT_BEAT_INTERVAL_MS)
    }

    /// Silence after which the instance turns unhealthy (ms).
    pub fn beat_timeout_ms(&self) -> u64 {
        self.meta_ms(META_BEAT_TIMEOUT, DEFAULT_BEAT_TIMEOUT_MS)
    }

    /// Silence after which the instance is removed (ms).
    pub fn delete_timeout_ms(&self) -> u64 {
        self.meta_ms(META_DELETE_TIMEOUT, DEFAULT_DELETE_TIMEOUT_MS)
    }

    /// The id generator the client asked for (`simple` unless `snowflake`).
    pub fn uses_snowflake_ids(&self) -> bool {
        self.metadata
            .get(META_ID_GENERATOR)
            .is_some_and(|v| v == "snowflake")
    }
}

/// How a cluster's persistent instances are health-checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthChecker {
    /// `TCP`, `HTTP`, `MYSQL` or `NONE`.
    #[serde(rename = "type")]
    pub kind: String,
    /// HTTP checker: path to GET.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// HTTP checker: extra headers, `k:v|k:v`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<String>,
    /// HTTP checker: status code that means healthy.
    #[serde(
        default,
        rename = "expectedResponseCode",
        skip_serializing_if = "Option::is_none"
    )]
    pub expected_response_code: Option<u16>,
}

impl Default for HealthChecker {
    fn default() -> Self {
        Self {
            kind: "TCP".to_string(),
            path: None,
            headers: None,
            expected_response_code: None,
        }
    }
}

/// Per-cluster settings of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterMeta {
    /// Health checker for persistent instances.
    pub health_checker: HealthChecker,
    /// Port probed when `use_instance_port` is false.
    pub check_port: u16,
    /// Probe each instance's own port.
    pub use_instance_port: bool,
    /// Cluster metadata.
    pub metadata: Metadata,
}

impl Default for ClusterMeta {
    fn default() -> Self {
        Self {
            health_checker: HealthChecker::default(),
            check_port: 80,
            use_instance_port: true,
            metadata: Metadata::new(),
        }
    }
}

/// A service selector (Nacos `none` or `label`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Selector {
    /// No filtering.
    #[default]
    None,
    /// Label expression, e.g. `CONSUMER.label.a = PROVIDER.label.a`.
    Label {
        /// The expression as given.
        expression: String,
    },
}

/// Service-level settings kept in the persistent store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceMeta {
    /// Fraction of healthy instances at or below which all are returned as healthy.
    pub protect_threshold: f64,
    /// Service metadata.
    pub metadata: Metadata,
    /// Selector.
    pub selector: Selector,
    /// Disabled services answer list queries with an error.
    pub enabled: bool,
    /// Explicitly configured clusters (others exist implicitly through their instances).
    pub clusters: BTreeMap<String, ClusterMeta>,
}

impl Default for ServiceMeta {
    fn default() -> Self {
        Self {
            protect_threshold: 0.0,
            metadata: Metadata::new(),
            selector: Selector::None,
            enabled: true,
            clusters: BTreeMap::new(),
        }
    }
}

/// A user-created namespace (the `public` namespace is implicit and cannot be changed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    /// Namespace id, used as `namespaceId` by clients.
    pub id: String,
    /// Display name.
    pub show_name: String,
    /// Description.
    pub desc: String,
}

/// A plain healthy, enabled instance for tests across modules.
#[cfg(test)]
pub(crate) fn test_instance(ip: &str, port: u16, cluster: &str, ephemeral: bool) -> Instance {
    Instance {
        ip: ip.into(),
        port,
        cluster: cluster.into(),
        weight: 1.0,
        healthy: true,
        enabled: true,
        ephemeral,
        metadata: SharedMetadata::default(),
        instance_id: format!("{ip}#{port}#{cluster}#DEFAULT_GROUP@@orders").into(),
        app: "DEFAULT".into(),
        last_beat_ms: 0,
        marked: false,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn compact_pushes_leave_at_most_an_eighth_of_the_list_empty() {
        let mut v = Vec::new();
        for i in 0..10_000u32 {
            super::push_compact(&mut v, i);
            assert!(
                v.capacity() <= v.len() + v.len() / 8 + 1,
                "{} of {}",
                v.len(),
                v.capacity()
            );
        }
        assert_eq!(v.iter().copied().sum::<u32>(), (0..10_000u32).sum::<u32>());
    }
}
