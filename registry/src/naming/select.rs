//! Selection of instances for list queries: cluster filter, protect threshold, health order.

use super::model::Instance;

/// The smallest non-negative integer not yet used as an instance id (Nacos "snowflake" ids).
pub fn smallest_free_id(instances: &[Instance]) -> String {
    let used: std::collections::HashSet<&str> =
        instances.iter().map(|i| i.instance_id.as_str()).collect();
    (0u64..)
        .map(|n| n.to_string())
        .find(|s| !used.contains(s.as_str()))
        .unwrap_or_default()
}
