//! `list`: GET /instance/list of the services filled during setup, round-robin, without a
//! push subscription (a polling client).

use std::sync::Arc;

use super::{register_all, Shape, Workload};
use crate::engine::{Plan, Planned};
use crate::nacos::{Check, Names};
use crate::rate::StreamSpec;

struct List {
    names: Arc<Names>,
}

impl Plan for List {
    fn plan(&self, _stream: usize, k: u64) -> Planned {
        Planned {
            op: "list",
            request: self.names.list(k as usize, None),
            check: Check::JsonObject,
            change: None,
        }
    }
}

pub(super) fn workload(names: Arc<Names>, shape: &Shape) -> Workload {
    Workload {
        setup: vec![register_all(&names, shape)],
        plan: Arc::new(List { names }),
        streams: vec![StreamSpec::at(shape.rate)],
        listen: None,
    }
}
