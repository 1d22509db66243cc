//! Selection of instances for list queries: cluster filter, protect threshold, health order.
//!
//! Mirrors Nacos 1.x `doSrvIpxt`: healthy instances first, then unhealthy; disabled instances
//! are hidden but still count towards the threshold; when the healthy share is at or below the
//! protect threshold every instance is reported healthy so that clients do not pile onto the
//! few survivors.

use md5::{Digest, Md5};

use super::model::Instance;

/// One instance as a list query reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Selected<'a> {
    /// The stored instance.
    pub instance: &'a Instance,
    /// Health as reported (forced true under protection).
    pub healthy: bool,
}

/// The result of a selection.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Selection<'a> {
    /// Instances to report, healthy first.
    pub hosts: Vec<Selected<'a>>,
    /// The protect threshold was reached.
    pub protected: bool,
    /// Whether any instance matched the cluster filter (before health/enabled filtering).
    pub any_matched: bool,
}

/// Splits a `clusters` query value into names; empty means all clusters.
pub fn parse_clusters(raw: &str) -> Vec<&str> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// Selects instances for a list query.
pub fn select<'a>(
    instances: impl IntoIterator<Item = &'a Instance>,
    clusters: &[&str],
    healthy_only: bool,
    protect_threshold: f64,
) -> Selection<'a> {
    let matched: Vec<&Instance> = instances
        .into_iter()
        .filter(|i| clusters.is_empty() || clusters.contains(&i.cluster.as_str()))
        .collect();
    if matched.is_empty() {
        return Selection::default();
    }
    let healthy_count = matched.iter().filter(|i| i.healthy).count();
    // Nacos compares as float: `healthy / total <= threshold`.
    let protected = (healthy_count as f32 / matched.len() as f32) <= protect_threshold as f32;
    let mut hosts = Vec::with_capacity(matched.len());
    for want_healthy in [true, false] {
        if healthy_only && !want_healthy && !protected {
            continue;
        }
        for inst in &matched {
            let bucket = protected || inst.healthy;
            if bucket != want_healthy || !inst.enabled {
                continue;
            }
            hosts.push(Selected {
                instance: inst,
                healthy: bucket,
            });
        }
    }
    Selection {
        hosts,
        protected,
        any_matched: true,
    }
}

/// A stable checksum of a service's instances (clients do not verify it; caches may).
pub fn checksum<'a>(instances: impl IntoIterator<Item = &'a Instance>) -> String {
    let mut parts: Vec<String> = instances
        .into_iter()
        .map(|i| {
            format!(
                "{}:{}_{}_{}_{}_{},",
                i.ip, i.port, i.weight, i.healthy, i.enabled, i.cluster
            )
        })
        .collect();
    parts.sort_unstable();
    let mut h = Md5::new();
    for p in &parts {
        h.update(p.as_bytes());
    }
    format!("{:x}", h.finalize())
}

/// The smallest non-negative integer not yet used as an instance id (Nacos "snowflake" ids).
pub fn smallest_free_id(instances: &[Instance]) -> String {
    let used: std::collections::HashSet<&str> =
        instances.iter().map(|i| i.instance_id.as_str()).collect();
    (0u64..)
        .map(|n| n.to_string())
        .find(|s| !used.contains(s.as_str()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(ip: &str, cluster: &str, healthy: bool, enabled: bool) -> Instance {
        Instance {
            healthy,
            enabled,
            ..crate::naming::model::test_instance(ip, 80, cluster, true)
        }
    }

    fn ips(s: &Selection<'_>) -> Vec<(String, bool)> {
        s.hosts
            .iter()
            .map(|h| (h.instance.ip.to_string(), h.healthy))
            .collect()
    }

    #[test]
    fn healthy_first_and_healthy_only() {
        let all = vec![
            inst("a", "DEFAULT", false, true),
            inst("b", "DEFAULT", true, true),
            inst("c", "DEFAULT", true, true),
        ];
        let s = select(&all, &[], false, 0.0);
        assert_eq!(
            ips(&s),
            vec![("b".into(), true), ("c".into(), true), ("a".into(), false)]
        );
        let s = select(&all, &[], true, 0.0);
        assert_eq!(ips(&s), vec![("b".into(), true), ("c".into(), true)]);
    }

    #[test]
    fn nothing_healthy_with_default_threshold_returns_all_as_healthy() {
        let all = vec![
            inst("a", "DEFAULT", false, true),
            inst("b", "DEFAULT", false, true),
        ];
        let s = select(&all, &[], true, 0.0);
        assert!(s.protected);
        assert_eq!(ips(&s), vec![("a".into(), true), ("b".into(), true)]);
    }

    #[test]
    fn threshold_is_inclusive() {
        let all = vec![
            inst("a", "DEFAULT", true, true),
            inst("b", "DEFAULT", false, true),
        ];
        // 1/2 <= 0.5 → protected.
        assert!(select(&all, &[], true, 0.5).protected);
        assert!(!select(&all, &[], true, 0.49).protected);
        assert_eq!(select(&all, &[], true, 0.49).hosts.len(), 1);
    }

    #[test]
    fn disabled_hidden_but_counted() {
        let all = vec![
            inst("a", "DEFAULT", true, false),
            inst("b", "DEFAULT", false, true),
        ];
        // healthy share 1/2 counts the disabled one; threshold 0.4 not reached.
        let s = select(&all, &[], false, 0.4);
        assert!(!s.protected);
        assert_eq!(ips(&s), vec![("b".into(), false)]);
    }

    #[test]
    fn cluster_filter() {
        let all = vec![inst("a", "C1", true, true), inst("b", "C2", true, true)];
        let s = select(&all, &parse_clusters("C2, ,"), false, 0.0);
        assert_eq!(ips(&s), vec![("b".into(), true)]);
        let s = select(&all, &parse_clusters("C3"), false, 0.0);
        assert!(!s.any_matched);
    }

    #[test]
    fn checksum_ignores_order() {
        let a = vec![inst("a", "D", true, true), inst("b", "D", true, true)];
        let b = vec![inst("b", "D", true, true), inst("a", "D", true, true)];
        assert_eq!(checksum(&a), checksum(&b));
        assert_ne!(checksum(&a), checksum(&a[..1]));
    }
}
