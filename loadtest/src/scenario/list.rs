//! `list`: GET /instance/list of the services filled during setup, round-robin, without a
//! push subscription (a polling client).

use std::sync::Arc;

use super::{register_all, Shape, Workload};
use crate::engine::{Plan, Planned};
use crate::nacos::{Check, Names};
use crate::rate::StreamSpec;

struct List {
    names: Arc<Names>,
    check: Check,
}

impl Plan for List {
    fn plan(&self, _stream: usize, k: u64) -> Planned {
        Planned {
            op: "list",
            request: self.names.list(k as usize, None),
            check: self.check,
            change: None,
        }
    }
}

pub(super) fn workload(names: Arc<Names>, shape: &Shape) -> Workload {
    // Nothing beats here: only instances kept alive (`--keep-alive`) must all stay listed.
    let check = if names.kept_alive() {
        Check::Hosts {
            healthy: shape.instances,
        }
    } else {
        Check::JsonObject
    };
    Workload {
        setup: vec![register_all(&names, shape)],
        plan: Arc::new(List { names, check }),
        streams: vec![StreamSpec::at(shape.rate)],
        listen: None,
    }
}
