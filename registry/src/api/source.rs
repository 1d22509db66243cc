//! Where a request verifiably comes from, for UDP pushes and client addresses.
//!
//! The TCP peer, unless the request carries a client address asserted by someone holding the
//! cluster secret: the gateway, which proxies every client request and so is every client's
//! TCP peer, or a node replaying a forwarded write. Nothing a client can write by itself
//! counts: not `X-Forwarded-For`, not `clientIP`, not a `x-nacre-client-addr` without the
//! proof (which the gateway strips from client requests anyway).

use std::net::{IpAddr, SocketAddr};

use axum::http::{HeaderMap, HeaderValue};
use nacre_ring::wire::{ASSERTED_BY_HEADER, CLIENT_ADDR_HEADER};

use super::params::Params;
use super::App;
use crate::peer::header_matches;

/// The verified source address of `p`; `None` only when the server recorded no TCP peer.
pub fn verified_source(app: &App, p: &Params) -> Option<IpAddr> {
    source_of(app, &p.headers, p.peer)
}

/// The verified source of a request with `headers` from TCP peer `peer` (for middleware,
/// which has no [`Params`]).
pub fn source_of(app: &App, headers: &HeaderMap, peer: Option<SocketAddr>) -> Option<IpAddr> {
    asserted(headers, &app.secret).or_else(|| peer.map(|a| a.ip()))
}

/// The client address asserted in `headers`, if the assertion carries the cluster secret.
fn asserted(headers: &HeaderMap, secret: &str) -> Option<IpAddr> {
    if !header_matches(headers, ASSERTED_BY_HEADER, secret) {
        return None;
    }
    headers
        .get(CLIENT_ADDR_HEADER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Sets the assertion that the request in `headers` comes from `source` (replaces any value a
/// client sent).
pub fn assert_source(headers: &mut HeaderMap, source: IpAddr, secret: &str) {
    if let (Ok(addr), Ok(proof)) = (
        HeaderValue::from_str(&source.to_string()),
        HeaderValue::from_str(secret),
    ) {
        headers.insert(CLIENT_ADDR_HEADER, addr);
        headers.insert(ASSERTED_BY_HEADER, proof);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef";

    #[test]
    fn an_asserted_address_counts_only_with_the_secret() {
        let mut h = HeaderMap::new();
        h.insert(CLIENT_ADDR_HEADER, HeaderValue::from_static("10.1.2.3"));
        assert_eq!(asserted(&h, SECRET), None, "no proof");
        h.insert(
            ASSERTED_BY_HEADER,
            HeaderValue::from_static("0123456789abcdeX"),
        );
        assert_eq!(asserted(&h, SECRET), None, "wrong proof");
        assert_source(&mut h, "10.9.9.9".parse().unwrap(), SECRET);
        assert_eq!(asserted(&h, SECRET), Some("10.9.9.9".parse().unwrap()));
        // An empty configured secret trusts nobody.
        assert_eq!(asserted(&h, ""), None);
    }

    #[test]
    fn x_forwarded_for_is_not_a_source() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("10.6.6.6"));
        assert_eq!(asserted(&h, SECRET), None);
    }
}
