//! Client classification by `User-Agent`, as Nacos 1.x does it.
//!
//! The client type decides how list responses name the service (`dom`), whether a list query
//! registers a UDP push subscriber, and whether `PUT /instance` is an update or an upsert.

/// The kinds of client Nacos distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    /// `Nacos-Java-Client` (the Node client sends this too).
    Java,
    /// `Nacos-DNS`.
    Dns,
    /// The C family: `Nacos-C-Client`, `unit-nginx`, `vip-client4cpp`.
    C,
    /// `Nacos-Go-Client`.
    Go,
    /// `Nacos-CSharp-Client`.
    CSharp,
    /// `Nacos-Server` (a peer).
    Server,
    /// Anything else (the Python SDK among them).
    Unknown,
}

/// A classified client: kind and version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientInfo {
    /// Kind.
    pub kind: ClientKind,
    /// Version as (major, minor, patch); zeros when absent.
    pub version: (u32, u32, u32),
}

impl ClientInfo {
    /// Classifies a User-Agent (or Client-Version) string.
    pub fn parse(ua: &str) -> Self {
        const PREFIXES: [(&str, ClientKind); 9] = [
            ("Nacos-Java-Client", ClientKind::Java),
            ("Nacos-DNS", ClientKind::Dns),
            ("Nacos-C-Client", ClientKind::C),
            ("Nacos-SDK-Java", ClientKind::Java),
            ("Nacos-Server", ClientKind::Server),
            ("unit-nginx", ClientKind::C),
            ("vip-client4cpp", ClientKind::C),
            ("Nacos-Go-Client", ClientKind::Go),
            ("Nacos-CSharp-Client", ClientKind::CSharp),
        ];
        let kind = PREFIXES
            .iter()
            .find(|(p, _)| ua.starts_with(p))
            .map(|(_, k)| *k)
            .unwrap_or(ClientKind::Unknown);
        let version = ua
            .split_once(":v")
            .map(|(_, v)| parse_version(v))
            .unwrap_or((0, 0, 0));
        Self { kind, version }
    }

    /// Java ≥ 1.0.0 (this includes the Node client): grouped `dom`, strict update semantics.
    pub fn is_modern_java(&self) -> bool {
        self.kind == ClientKind::Java && self.version >= (1, 0, 0)
    }

    /// Whether Nacos would register this client for UDP push.
    pub fn push_capable(&self) -> bool {
        let min = match self.kind {
            ClientKind::Java => (0, 1, 0),
            ClientKind::Dns => (0, 4, 3),
            ClientKind::C => (1, 0, 12),
            ClientKind::Go => (0, 1, 0),
            ClientKind::CSharp => (0, 9, 0),
            ClientKind::Server | ClientKind::Unknown => return false,
        };
        self.version >= min
    }
}

fn parse_version(v: &str) -> (u32, u32, u32) {
    let mut it = v
        .split(['.', '-'])
        .map(|p| p.trim().parse::<u32>().unwrap_or(0));
    (
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_legacy_clients() {
        let java = ClientInfo::parse("Nacos-Java-Client:v1.4.2");
        assert!(java.is_modern_java() && java.push_capable());
        let node = ClientInfo::parse("Nacos-Java-Client:v1.0.0");
        assert!(node.is_modern_java() && node.push_capable());
        let py = ClientInfo::parse("Nacos-Python-Client:v0.1.16");
        assert_eq!(py.kind, ClientKind::Unknown);
        assert!(!py.push_capable() && !py.is_modern_java());
        let old = ClientInfo::parse("Nacos-Java-Client:v0.9.0");
        assert!(!old.is_modern_java() && old.push_capable());
        assert!(!ClientInfo::parse("Nacos-DNS:v0.4.2").push_capable());
        assert!(ClientInfo::parse("Nacos-DNS:v0.4.3").push_capable());
    }
}
