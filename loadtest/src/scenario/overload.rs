//! `overload`: a fleet keeps beating while lists come faster than the target serves them,
//! then back off. Every instance beats every 5 s (open loop, as in `mixed`); lists of the
//! fleet's services come at `--rate` for `--overload-for`, then at `--backoff-rate`. Beats
//! answered 20404 and lists missing a beating instance are instances lost; the per-second
//! timeline shows what the target turned away (503) and when it served everything again.
//!
//! With `--push-clients N`, pushes compete with the flood too: every list subscribes to pushes,
//! the harness's connections come from N client addresses in turn (a node records a
//! subscriber at the address its list came from, as a gateway asserts it), and one marker
//! instance per service appears and vanishes once a second (as in `subscribe`), so each change
//! is pushed to up to N subscribers of its service. The report's push line says how many changes
//! were seen and how late the first packet showing each came (from whichever client got it
//! first), and how many packets all the clients received and acked. The marker is healthy
//! while it is registered, so a list then counts one healthy instance more than the fleet:
//! with pushes, an instance lost is told by its beat answered 20404, not by a list one short.

use std::sync::Arc;

use super::{change, register_all, Shape, Workload};
use crate::engine::{Plan, Planned};
use crate::error::LoadtestError;
use crate::nacos::{Check, Names, PushAddr};
use crate::rate::StreamSpec;
use crate::scenario::mixed::BEAT_SECS;

/// Most connections the beats have to themselves: one per two instances up to this, so a
/// beat waits for the server, never for a free connection in the harness (each real client
/// has its own).
const MAX_BEAT_SENDERS: u64 = 2_000;

/// Connections the marker changes have to themselves (`--push-clients`).
const CHANGE_SENDERS: usize = 64;

struct Overload {
    names: Arc<Names>,
    clients: u64,
    per_service: u64,
    /// `--push-clients`: lists subscribe to pushes at this port (the address a node records is
    /// the one the list came from: the harness's connections take the clients' addresses in
    /// turn).
    push: Option<PushAddr>,
}

impl Plan for Overload {
    fn plan(&self, stream: usize, k: u64) -> Planned {
        let s = self.names.service_count() as u64;
        if stream == 0 {
            let client = k % self.clients;
            return Planned {
                op: "beat",
                request: self.names.beat((client % s) as usize, client / s),
                check: Check::Beat,
                change: None,
            };
        }
        if stream == 2 {
            // The marker: just past the instances registered during setup, so no beat keeps
            // it and no list counts on it.
            let pass = k / s;
            return change(
                &self.names,
                (k % s) as usize,
                self.per_service,
                pass.is_multiple_of(2),
            );
        }
        Planned {
            op: "list",
            request: self.names.list((k % s) as usize, self.push),
            check: Check::Hosts {
                healthy: self.per_service,
            },
            change: None,
        }
    }
}

pub(super) fn workload(names: Arc<Names>, shape: &Shape) -> Result<Workload, LoadtestError> {
    let Some(rate) = shape.rate else {
        return Err(LoadtestError::InvalidArg {
            flag: "--rate",
            reason: "overload needs the list rate to offer".into(),
        });
    };
    let clients = (shape.services as u64 * shape.instances).max(1);
    let mut lists = StreamSpec::at(Some(rate));
    if let Some((after, backoff)) = shape.backoff {
        lists = lists.then_at(after, backoff);
    }
    // A push address is there only with `--push-clients`: the harness listens for nothing
    // else in this scenario.
    let push = shape.push;
    // Beats ride connections of their own, as a client's beat thread does: they never wait in
    // the harness behind the flood of lists.
    let mut streams = vec![
        StreamSpec::at(Some(clients as f64 / BEAT_SECS))
            .with_own_senders(clients.div_ceil(2).min(MAX_BEAT_SENDERS) as usize),
        lists,
    ];
    if push.is_some() {
        // Changes too have connections of their own: a change the harness could not send in
        // time would leave its marker registered, unbeaten, to expire.
        streams.push(
            StreamSpec::at(Some(names.service_count() as f64)).with_own_senders(CHANGE_SENDERS),
        );
    }
    Ok(Workload {
        setup: vec![register_all(&names, shape)],
        plan: Arc::new(Overload {
            names,
            clients,
            per_service: shape.instances,
            push,
        }),
        streams,
        listen: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    /// The shape of a run, with a push address as `--push-clients` gives it.
    fn shape(push_clients: bool) -> Shape {
        Shape {
            services: 3,
            instances: 4,
            dependencies: 1,
            rate: Some(100.0),
            push: push_clients.then_some(PushAddr {
                ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                port: 5555,
            }),
            backoff: None,
            distinct_clients: false,
        }
    }

    #[test]
    fn without_push_clients_lists_do_not_subscribe_and_nothing_changes() {
        let names = Arc::new(Names::new(1, "public", 3, 0, true));
        let w = workload(names, &shape(false)).unwrap();
        assert_eq!(w.streams.len(), 2);
        assert!(!w.plan.plan(1, 5).request.target.contains("udpPort"));
    }

    #[test]
    fn with_push_clients_lists_subscribe_and_a_marker_comes_and_goes() {
        let names = Arc::new(Names::new(1, "public", 3, 0, true));
        let w = workload(names.clone(), &shape(true)).unwrap();
        assert_eq!(w.streams.len(), 3, "beats, lists, changes");
        assert!(w.plan.plan(1, 5).request.target.contains("udpPort=5555"));
        // One change per service per pass, the marker registered on even passes and
        // deregistered on odd ones; it is past the fleet's instances, so no beat keeps it.
        let (appear, vanish) = (w.plan.plan(2, 1), w.plan.plan(2, 4));
        assert_eq!((appear.op, vanish.op), ("register", "deregister"));
        let (a, v) = (appear.change.unwrap(), vanish.change.unwrap());
        assert_eq!((a.service, a.ip), (v.service, v.ip));
        assert_eq!((a.appear, v.appear), (true, false));
        assert_eq!(a.ip, Names::ip(4), "the marker is instance 4 of 0..4");
        assert_eq!(crate::nacos::loopback_source(0), Ipv4Addr::LOCALHOST);
        assert_eq!(
            crate::nacos::loopback_source(15),
            Ipv4Addr::new(127, 0, 0, 16)
        );
    }
}
