//! `deregister`: DELETE /instance of every instance registered during setup, each once, so
//! every request removes a real instance. The phase ends early when all are gone.

use std::sync::Arc;

use super::{register_all, Shape, Workload};
use crate::engine::{Plan, Planned};
use crate::nacos::{Check, Names};
use crate::rate::StreamSpec;

struct Deregister {
    names: Arc<Names>,
}

impl Plan for Deregister {
    fn plan(&self, _stream: usize, k: u64) -> Planned {
        let s = self.names.service_count() as u64;
        Planned {
            op: "deregister",
            request: self.names.deregister((k % s) as usize, k / s),
            check: Check::OkText,
            change: None,
        }
    }
}

pub(super) fn workload(names: Arc<Names>, shape: &Shape) -> Workload {
    let total = shape.services as u64 * shape.instances;
    Workload {
        setup: vec![register_all(&names, shape)],
        plan: Arc::new(Deregister { names }),
        streams: vec![StreamSpec::at(shape.rate).limited(total)],
        listen: None,
    }
}
