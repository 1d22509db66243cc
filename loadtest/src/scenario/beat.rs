//! `beat`: heartbeats (PUT /instance/beat) of the instances registered during setup,
//! round-robin: light (query parameters only) or, with `--full-beats`, carrying the whole
//! beat JSON as the Python and Node clients send. A 20404 answer (instance unknown) is an
//! error.

use std::sync::Arc;

use super::{register_all, Shape, Workload};
use crate::engine::{Plan, Planned};
use crate::nacos::{Check, Names};
use crate::rate::StreamSpec;

struct Beat {
    names: Arc<Names>,
    instances: u64,
}

impl Plan for Beat {
    fn plan(&self, _stream: usize, k: u64) -> Planned {
        let s = self.names.service_count() as u64;
        Planned {
            op: "beat",
            request: self
                .names
                .beat((k % s) as usize, (k / s) % self.instances.max(1)),
            check: Check::Beat,
            change: None,
        }
    }
}

pub(super) fn workload(names: Arc<Names>, shape: &Shape) -> Workload {
    Workload {
        setup: vec![register_all(&names, shape)],
        plan: Arc::new(Beat {
            names,
            instances: shape.instances,
        }),
        streams: vec![StreamSpec::at(shape.rate)],
        listen: None,
    }
}
