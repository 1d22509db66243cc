//! Identity types every nacre tier agrees on.
//!
//! A service is named by `(namespace, group, service)`; the gateway and every registry node must
//! derive exactly the same key from a request, or routing and ownership disagree. The same holds
//! for a config's key and the config listener protocol ([`configs`]), which both tiers serve.
//! This crate does no I/O (its async parts are in-process: a wake-up signal and the read turns
//! of [`turns`]), so it can be shared by the gateway, the nodes and the tests.

use std::fmt;

use serde::{Deserialize, Serialize};

pub mod configs;
mod member;
mod ring;
pub mod turns;
pub mod wire;

pub use member::{Member, MemberState, Members};
pub use ring::{Ring, VNODES};

/// The namespace a request lands in when it names none.
pub const DEFAULT_NAMESPACE: &str = "public";
/// The group a service belongs to when its name carries no `group@@` prefix.
pub const DEFAULT_GROUP: &str = "DEFAULT_GROUP";
/// Separator between group and service in Nacos's grouped names.
pub const GROUP_SEPARATOR: &str = "@@";
/// Separator between namespace and grouped name in keys (Nacos uses the same).
pub const NAMESPACE_SEPARATOR: &str = "##";

/// Why a service name could not be turned into a [`ServiceKey`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// `group@@` was present but nothing followed it, or the name was empty.
    #[error("Param 'serviceName' is illegal, it should be format as 'groupName@@serviceName'")]
    Malformed,
    /// The group part of `group@@service` was empty.
    #[error("Param 'serviceName' is illegal, groupName can't be empty")]
    EmptyGroup,
}

/// The identity of one service inside the registry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServiceKey {
    /// Namespace id (`public` by default). Any string isolates data; no aliasing.
    pub namespace: String,
    /// Group name (`DEFAULT_GROUP` by default).
    pub group: String,
    /// Bare service name, without the group prefix.
    pub service: String,
}

impl ServiceKey {
    /// Builds a key from already separated parts.
    pub fn new(
        namespace: impl Into<String>,
        group: impl Into<String>,
        service: impl Into<String>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            group: group.into(),
            service: service.into(),
        }
    }

    /// Resolves the names a Nacos client sends into a key, following Nacos's grouping rule:
    /// a `group@@` prefix inside `service_name` wins over `group_name`, which defaults to
    /// `DEFAULT_GROUP`; namespace defaults to `public`. Blank values count as absent.
    pub fn from_request(
        namespace: Option<&str>,
        service_name: &str,
        group_name: Option<&str>,
    ) -> Result<Self, KeyError> {
        let namespace = non_blank(namespace).unwrap_or(DEFAULT_NAMESPACE);
        let service_name = service_name.trim();
        if service_name.is_empty() {
            return Err(KeyError::Malformed);
        }
        match service_name.split_once(GROUP_SEPARATOR) {
            Some((group, service)) => {
                if service.is_empty() {
                    return Err(KeyError::Malformed);
                }
                if group.is_empty() {
                    return Err(KeyError::EmptyGroup);
                }
                Ok(Self::new(namespace, group, service))
            }
            None => {
                let group = non_blank(group_name).unwrap_or(DEFAULT_GROUP);
                // A group ending in '@' would make an ambiguous `a@@@svc` grouped name.
                if group.contains('@') {
                    return Err(KeyError::Malformed);
                }
                Ok(Self::new(namespace, group, service_name))
            }
        }
    }

    /// The grouped wire name, `group@@service`.
    pub fn grouped(&self) -> String {
        format!("{}{}{}", self.group, GROUP_SEPARATOR, self.service)
    }

    /// The bytes the consistent-hash ring hashes: `namespace##group@@service`. Spelled out
    /// here, not left to a `Hash` impl, so every binary version agrees on them.
    pub fn ring_bytes(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}{}{}{}",
            self.namespace, NAMESPACE_SEPARATOR, self.group, GROUP_SEPARATOR, self.service
        )
    }
}

fn non_blank(v: Option<&str>) -> Option<&str> {
    v.map(str::trim).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_name_gets_default_group_and_namespace() {
        let k = ServiceKey::from_request(None, "orders", None).unwrap();
        assert_eq!(k, ServiceKey::new("public", "DEFAULT_GROUP", "orders"));
        assert_eq!(k.grouped(), "DEFAULT_GROUP@@orders");
        assert_eq!(k.to_string(), "public##DEFAULT_GROUP@@orders");
    }

    #[test]
    fn prefix_wins_over_group_param() {
        let k = ServiceKey::from_request(Some("dev"), "G1@@orders", Some("G2")).unwrap();
        assert_eq!(k, ServiceKey::new("dev", "G1", "orders"));
        let k = ServiceKey::from_request(Some(" "), "orders", Some("G2")).unwrap();
        assert_eq!(k, ServiceKey::new("public", "G2", "orders"));
    }

    #[test]
    fn malformed_names_are_rejected() {
        assert_eq!(
            ServiceKey::from_request(None, "@@orders", None),
            Err(KeyError::EmptyGroup)
        );
        assert_eq!(
            ServiceKey::from_request(None, "G@@", None),
            Err(KeyError::Malformed)
        );
        assert_eq!(
            ServiceKey::from_request(None, "  ", None),
            Err(KeyError::Malformed)
        );
        assert_eq!(
            ServiceKey::from_request(None, "svc", Some("a@")),
            Err(KeyError::Malformed)
        );
    }

    #[test]
    fn ring_bytes_are_stable() {
        let k = ServiceKey::new("public", "DEFAULT_GROUP", "orders");
        assert_eq!(k.ring_bytes(), b"public##DEFAULT_GROUP@@orders".to_vec());
    }
}
