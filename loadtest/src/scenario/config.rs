//! `config-publish` and `config-get`: the config center's write and read paths over
//! `--services` configs of about `--config-bytes` bytes. Publishes cycle through the configs,
//! each publish a new version (new content, new md5, one history entry); reads cycle through
//! configs published once during setup.

use std::sync::Arc;

use super::{SetupStep, Shape, Workload};
use crate::engine::{Plan, Planned};
use crate::nacos::{Check, Names};
use crate::rate::StreamSpec;

struct Publish {
    names: Arc<Names>,
    op: &'static str,
}

impl Plan for Publish {
    fn plan(&self, _stream: usize, k: u64) -> Planned {
        let n = self.names.service_count() as u64;
        Planned {
            op: self.op,
            request: self.names.config_publish((k % n) as usize, k / n),
            check: Check::TrueText,
            change: None,
        }
    }
}

struct Get {
    names: Arc<Names>,
}

impl Plan for Get {
    fn plan(&self, _stream: usize, k: u64) -> Planned {
        Planned {
            op: "config-get",
            request: self.names.config_get(k as usize),
            check: Check::Success,
            change: None,
        }
    }
}

pub(super) fn publish(names: Arc<Names>, shape: &Shape) -> Workload {
    Workload {
        setup: Vec::new(),
        plan: Arc::new(Publish {
            names,
            op: "config-publish",
        }),
        streams: vec![StreamSpec::at(shape.rate)],
    }
}

pub(super) fn get(names: Arc<Names>, shape: &Shape) -> Workload {
    let count = names.service_count() as u64;
    Workload {
        setup: vec![SetupStep {
            label: "publish configs",
            plan: Arc::new(Publish {
                names: names.clone(),
                op: "setup-publish",
            }),
            count,
        }],
        plan: Arc::new(Get { names }),
        streams: vec![StreamSpec::at(shape.rate)],
    }
}
