//! `subscribe`: clients list each service with `udpPort` (a push subscription, refreshed by
//! every list) as fast as `--rate` allows, while one marker instance per service appears and
//! vanishes once a second. Each change should reach the UDP listener as a push; its latency is
//! the time from sending the change to receiving a packet that shows it.

use std::sync::Arc;

use super::{change, register_all, subscribe_all, Shape, Workload};
use crate::engine::{Plan, Planned};
use crate::nacos::{Check, Names, PushAddr};
use crate::rate::StreamSpec;

struct Subscribe {
    names: Arc<Names>,
    push: PushAddr,
    /// The marker's instance index: just past the instances registered during setup.
    marker: u64,
}

impl Plan for Subscribe {
    fn plan(&self, stream: usize, k: u64) -> Planned {
        let s = self.names.service_count() as u64;
        if stream == 0 {
            return Planned {
                op: "subscribe",
                request: self.names.list(k as usize, Some(self.push)),
                check: Check::JsonObject,
                change: None,
            };
        }
        let pass = k / s;
        change(
            &self.names,
            (k % s) as usize,
            self.marker,
            pass.is_multiple_of(2),
        )
    }
}

pub(super) fn workload(names: Arc<Names>, shape: &Shape, push: PushAddr) -> Workload {
    let services = names.service_count();
    Workload {
        setup: vec![register_all(&names, shape), subscribe_all(&names, push)],
        plan: Arc::new(Subscribe {
            names,
            push,
            marker: shape.instances,
        }),
        streams: vec![
            StreamSpec::at(shape.rate),
            StreamSpec::at(Some(services as f64)),
        ],
        listen: None,
    }
}
