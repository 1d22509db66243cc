//! `churn`: a pool of extra instances (as many per service as `--instances-per-service`)
//! registers and deregisters in turn at `--rate` while every service has a push subscriber
//! (refreshed every 2 s, as a Java client re-lists). Shows write throughput under push fan-out
//! and the push latency of appearing and vanishing instances.

use std::sync::Arc;

use super::{change, register_all, subscribe_all, Shape, Workload};
use crate::engine::{Plan, Planned};
use crate::nacos::{Check, Names, PushAddr};
use crate::rate::StreamSpec;

/// How often each service's subscription is refreshed; Nacos drops a subscriber not refreshed
/// for 10 s.
const REFRESH_SECS: f64 = 2.0;

struct Churn {
    names: Arc<Names>,
    push: PushAddr,
    instances: u64,
}

impl Plan for Churn {
    fn plan(&self, stream: usize, k: u64) -> Planned {
        let s = self.names.service_count() as u64;
        if stream == 1 {
            return Planned {
                op: "subscribe",
                request: self.names.list(k as usize, Some(self.push)),
                check: Check::JsonObject,
                change: None,
            };
        }
        let pool = s * self.instances.max(1);
        let (pass, pos) = (k / pool, k % pool);
        // Churning instances are numbered after the stable ones.
        let key = self.instances + pos / s;
        change(&self.names, (pos % s) as usize, key, pass.is_multiple_of(2))
    }
}

pub(super) fn workload(names: Arc<Names>, shape: &Shape, push: PushAddr) -> Workload {
    let services = names.service_count() as f64;
    Workload {
        setup: vec![register_all(&names, shape), subscribe_all(&names, push)],
        plan: Arc::new(Churn {
            names,
            push,
            instances: shape.instances,
        }),
        streams: vec![
            StreamSpec::at(shape.rate),
            StreamSpec::at(Some(services / REFRESH_SECS)),
        ],
        listen: None,
    }
}
