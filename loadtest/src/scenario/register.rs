//! `register` (and the registration half of `memory`): POST /instance over the
//! services × instances key space. The first pass creates instances, later passes re-register
//! them (an upsert, which a client does after a 20404 beat answer or on restart).

use std::sync::Arc;

use super::{ScenarioKind, Shape, Workload};
use crate::engine::{Plan, Planned};
use crate::nacos::{Check, Names};
use crate::rate::StreamSpec;

struct Register {
    names: Arc<Names>,
    instances: u64,
}

impl Plan for Register {
    fn plan(&self, _stream: usize, k: u64) -> Planned {
        let s = self.names.service_count() as u64;
        Planned {
            op: "register",
            request: self
                .names
                .register((k % s) as usize, (k / s) % self.instances.max(1)),
            check: Check::OkText,
            change: None,
        }
    }
}

pub(super) fn workload(kind: ScenarioKind, names: Arc<Names>, shape: &Shape) -> Workload {
    let total = shape.services as u64 * shape.instances;
    let stream = match kind {
        // Memory registers each instance exactly once, as fast as the target accepts.
        ScenarioKind::Memory => StreamSpec::closed().limited(total),
        _ => StreamSpec::at(shape.rate),
    };
    Workload {
        setup: Vec::new(),
        plan: Arc::new(Register {
            names,
            instances: shape.instances,
        }),
        streams: vec![stream],
        listen: None,
    }
}
