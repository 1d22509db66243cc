//! What the gateway does with a naming request's parameters, and whether a list request is
//! answered from the cache: decided here once, for pingora's proxy path and for the
//! connection loop (which serves cache hits without pingora, rule E2 of [`crate::edge`]).
//!
//! [`lookup`] answers a cacheable list from the cache when everything allows it: the request
//! is not a subscriber's first contact (rule P1 of [`crate::subscribe`]), the nodes' feeds are
//! followed, the credential was accepted for the service (with auth on), and a fresh answer of
//! the same shape is stored. It changes nothing unless it answers: a caller that gets no
//! answer sends the request to a node, which records the contact then, exactly as if `lookup`
//! had never been asked.

use std::net::IpAddr;
use std::time::Instant;

use http::{header, HeaderMap, Method};
use nacre_ring::wire::SubscriberNote;
use nacre_ring::ServiceKey;

use crate::authmemo::Fingerprint;
use crate::cache::Hit;
use crate::route::{self, Params, Variant};
use crate::subscribe::{Contact, SeenKey};
use crate::upstreams::View;
use crate::Shared;

/// The client kind string nodes format answers by: User-Agent, else Client-Version.
pub fn agent(headers: &HeaderMap) -> &str {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
    };
    get("user-agent")
        .or_else(|| get("client-version"))
        .unwrap_or("")
}

/// What the gateway will do with a naming request, taken from its parameters.
#[derive(Debug)]
pub struct Plan {
    /// The service it names.
    pub key: Option<ServiceKey>,
    /// A write: cached answers of its service must not outlive it.
    pub invalidates: bool,
    /// A cacheable list request.
    pub list: Option<ListPlan>,
}

/// A cacheable list request.
#[derive(Debug)]
pub struct ListPlan {
    /// The answer's shape.
    pub variant: Variant,
    /// The credential a node will read from it.
    pub credential: Option<Fingerprint>,
    /// A push subscriber.
    pub subscriber: Option<Subscription>,
}

/// What a subscribing list request says about its client: enough to tell it apart and, when a
/// note is due, to write it (see [`crate::subscribe`]).
#[derive(Debug)]
pub struct Subscription {
    /// `clientIP` as given, else the TCP peer.
    client: String,
    /// `client` came from `clientIP`.
    claimed: bool,
    /// The TCP peer.
    source: Option<IpAddr>,
    udp: u16,
    app: Option<String>,
}

impl Subscription {
    /// The note that keeps this subscriber alive on `key`'s node when its poll is answered
    /// here. Built only when one is due: most polls need none.
    fn note(&self, key: &ServiceKey, variant: &Variant) -> SubscriberNote {
        SubscriberNote {
            key: key.clone(),
            clusters: variant.clusters.clone(),
            source: self.source,
            claimed: self.claimed.then(|| self.client.clone()),
            udp_port: self.udp,
            agent: variant.agent.clone(),
            app: self.app.clone(),
        }
    }

    /// How the relay tells this subscriber apart on `key`.
    pub fn seen(&self, key: &ServiceKey, variant: &Variant) -> SeenKey {
        SeenKey::of(&self.client, self.udp, key, variant)
    }
}

impl Plan {
    /// The plan of a `method` request to `path` with `headers`, from TCP peer `source`;
    /// `auth`: nodes require credentials (only then is the request's credential read).
    pub fn of(
        params: &Params<'_>,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        source: Option<IpAddr>,
        auth: bool,
    ) -> Plan {
        let key = params.service_key();
        let cacheable = key.is_some() && *method == Method::GET && path == route::LIST_PATH;
        let list = cacheable.then(|| ListPlan {
            variant: params.list_variant(agent(headers)),
            credential: auth
                .then(|| {
                    params.credential(
                        headers
                            .get(header::AUTHORIZATION)
                            .and_then(|v| v.to_str().ok()),
                    )
                })
                .flatten(),
            subscriber: params.udp_port().map(|udp| {
                let claimed = params.client_ip();
                Subscription {
                    client: claimed
                        .map(str::to_string)
                        .or_else(|| source.map(|ip| ip.to_string()))
                        .unwrap_or_default(),
                    claimed: claimed.is_some(),
                    source,
                    udp,
                    app: params.app().map(str::to_string),
                }
            }),
        });
        Plan {
            invalidates: route::invalidates(method, path),
            key,
            list,
        }
    }
}

/// What [`lookup`] found.
#[derive(Debug)]
pub enum Lookup {
    /// The answer, from the cache; the subscriber's contact is recorded and any note due
    /// queued (rule P2).
    Hit(Hit),
    /// A feed is not followed: the cache may not answer (counted as a bypass).
    Bypass,
    /// The request must reach a node.
    Miss,
}

/// Answers the list request `list` of `key` from the cache when everything allows it (see the
/// module doc); nothing changes unless it answers.
pub fn lookup(shared: &Shared, key: &ServiceKey, list: &ListPlan, view: &View) -> Lookup {
    match find(shared, key, list, view) {
        Ok(found) => found.commit(shared),
        Err(other) => other,
    }
}

/// An answer [`find`] found in the cache, not yet given.
#[derive(Debug)]
pub struct Found<'a> {
    answer: Hit,
    /// The note due to the subscriber's node (rule P2).
    note: Option<(&'a Subscription, SeenKey, &'a ServiceKey, &'a Variant)>,
    now: Instant,
}

impl Found<'_> {
    /// Gives the answer: records the contact and queues the note due, if any; `Miss` when the
    /// note cannot be queued (rule P3: the subscriber is forgotten, and its poll goes to the
    /// node, which records it).
    pub fn commit(self, shared: &Shared) -> Lookup {
        if let Some((sub, seen, key, variant)) = self.note {
            // Had it expired since it was read, the note registers it all the same.
            shared.relay.record(&seen, self.now);
            if !shared.relay.offer(sub.note(key, variant), seen) {
                return Lookup::Miss;
            }
        }
        Lookup::Hit(self.answer)
    }
}

/// [`lookup`] without its effects: the answer the cache may give, to be given by
/// [`Found::commit`] (a caller may still refuse the request in between), or why not.
pub fn find<'a>(
    shared: &Shared,
    key: &'a ServiceKey,
    list: &'a ListPlan,
    view: &View,
) -> Result<Found<'a>, Lookup> {
    let now = Instant::now();
    let seen = list.subscriber.as_ref().map(|sub| {
        let seen = sub.seen(key, &list.variant);
        let contact = shared.relay.peek(&seen, now);
        (sub, seen, contact)
    });
    if matches!(seen, Some((_, _, Contact::Poll))) {
        return Err(Lookup::Miss);
    }
    if !view.feeds_ok() {
        return Err(Lookup::Bypass);
    }
    let accepted = !shared.auth_required()
        || list
            .credential
            .is_some_and(|c| shared.auth_memo.allows(c, key));
    let Some(answer) = accepted
        .then(|| shared.cache.get(key, &list.variant, crate::now_ms()))
        .flatten()
    else {
        return Err(Lookup::Miss);
    };
    let note = match seen {
        Some((sub, seen, Contact::Note)) => Some((sub, seen, key, &list.variant)),
        _ => None,
    };
    Ok(Found { answer, note, now })
}

/// Drops the cached answers of `key` after a write to it through the gateway (proxied or
/// relayed), before the write's client hears its answer: its next read must not find the old
/// one.
pub fn written(shared: &Shared, key: &ServiceKey) {
    if shared.cache.invalidate(key) {
        shared.metrics.invalidations_write.inc();
    }
}

/// Records that a subscriber's list request goes to its node (rules P1, P2: the node hears of
/// it now).
pub fn reaching_node(shared: &Shared, key: &ServiceKey, list: &ListPlan) {
    if let Some(sub) = &list.subscriber {
        shared
            .relay
            .contact(&sub.seen(key, &list.variant), Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::shared;
    use bytes::Bytes;
    use std::sync::Arc;

    fn plan(query: &str) -> (ServiceKey, ListPlan) {
        let params = Params::parse(query.as_bytes(), None);
        let plan = Plan::of(
            &params,
            &Method::GET,
            route::LIST_PATH,
            &HeaderMap::new(),
            Some("10.0.0.1".parse().unwrap()),
            false,
        );
        (plan.key.unwrap(), plan.list.unwrap())
    }

    /// A gateway with one node whose feed is followed, and its view.
    fn followed() -> (Shared, Arc<View>) {
        let s = shared(&[(1, true)]);
        let view = s.upstreams.view();
        view.upstreams()[0].set_feed_ok(true);
        (s, view)
    }

    fn store(s: &Shared, key: &ServiceKey, list: &ListPlan, body: &'static [u8]) {
        let ticket = s.cache.begin(key);
        s.cache
            .store(ticket, list.variant.clone(), Bytes::from_static(body));
    }

    #[test]
    fn a_lookup_that_does_not_answer_changes_nothing_and_a_node_contact_is_recorded() {
        let (s, view) = followed();
        let (key, list) = plan("serviceName=s&udpPort=9&clientIP=10.0.0.9");
        store(&s, &key, &list, b"{\"hosts\":[]}");
        let seen = list.subscriber.as_ref().unwrap().seen(&key, &list.variant);

        // A first contact is not answered here (rule P1), and leaves the subscriber unseen.
        assert!(matches!(lookup(&s, &key, &list, &view), Lookup::Miss));
        assert_eq!(s.relay.peek(&seen, Instant::now()), Contact::Poll);
        // Once the poll reached the node, later polls are answered from the cache.
        reaching_node(&s, &key, &list);
        assert!(matches!(lookup(&s, &key, &list, &view), Lookup::Hit(_)));
        // Not while a feed is not followed.
        view.upstreams()[0].set_feed_ok(false);
        assert!(matches!(lookup(&s, &key, &list, &view), Lookup::Bypass));
    }

    #[test]
    fn an_answer_found_is_given_only_when_committed() {
        let (s, view) = followed();
        let (key, list) = plan("serviceName=s");
        assert!(matches!(find(&s, &key, &list, &view), Err(Lookup::Miss)));
        store(&s, &key, &list, b"{}");
        let found = find(&s, &key, &list, &view).unwrap();
        assert!(matches!(found.commit(&s), Lookup::Hit(b) if &b.to_bytes()[..] == b"{}"));
    }
}
