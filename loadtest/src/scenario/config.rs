//! `config-publish`, `config-get` and `config-listen`: the config center's write, read and
//! notification paths over `--services` configs of about `--config-bytes` bytes. Publishes
//! cycle through the configs, each publish a new version (new content, new md5, one history
//! entry); reads cycle through configs published once during setup; listeners (see
//! [`crate::listen`]) time each publish to its notification.

use std::sync::Arc;

use super::{SetupStep, Shape, Workload};
use crate::engine::{Plan, Planned};
use crate::listen::PublishLog;
use crate::nacos::{Check, Names};
use crate::rate::StreamSpec;

struct Publish {
    names: Arc<Names>,
    op: &'static str,
    /// Versions start here (config-listen publishes after the setup's version 0).
    first_version: u64,
    /// config-listen: where each publish notes its send time.
    log: Option<Arc<PublishLog>>,
}

impl Plan for Publish {
    fn plan(&self, _stream: usize, k: u64) -> Planned {
        let n = self.names.service_count() as u64;
        let (c, v) = ((k % n) as usize, k / n + self.first_version);
        if let Some(log) = &self.log {
            log.sent(c, v);
        }
        Planned {
            op: self.op,
            request: self.names.config_publish(c, v),
            check: Check::TrueText,
            change: None,
        }
    }
}

fn publish_all(names: &Arc<Names>) -> SetupStep {
    SetupStep {
        label: "publish configs",
        plan: Arc::new(Publish {
            names: names.clone(),
            op: "setup-publish",
            first_version: 0,
            log: None,
        }),
        count: names.service_count() as u64,
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
            first_version: 0,
            log: None,
        }),
        streams: vec![StreamSpec::at(shape.rate)],
        listen: None,
    }
}

pub(super) fn get(names: Arc<Names>, shape: &Shape) -> Workload {
    Workload {
        setup: vec![publish_all(&names)],
        plan: Arc::new(Get { names }),
        streams: vec![StreamSpec::at(shape.rate)],
        listen: None,
    }
}

pub(super) fn listen(names: Arc<Names>, shape: &Shape) -> Workload {
    let log = Arc::new(PublishLog::new(names.service_count()));
    Workload {
        setup: vec![publish_all(&names)],
        plan: Arc::new(Publish {
            names,
            op: "config-publish",
            first_version: 1,
            log: Some(log.clone()),
        }),
        streams: vec![StreamSpec::at(shape.rate)],
        listen: Some(log),
    }
}
