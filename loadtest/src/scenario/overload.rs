//! `overload`: a fleet keeps beating while lists come faster than the target serves them,
//! then back off. Every instance beats every 5 s (open loop, as in `mixed`); lists of the
//! fleet's services come at `--rate` for `--overload-for`, then at `--backoff-rate`. Beats
//! answered 20404 and lists missing a beating instance are instances lost; the per-second
//! timeline shows what the target turned away (503) and when it served everything again.

use std::sync::Arc;

use super::{register_all, Shape, Workload};
use crate::engine::{Plan, Planned};
use crate::error::LoadtestError;
use crate::nacos::{Check, Names};
use crate::rate::StreamSpec;
use crate::scenario::mixed::BEAT_SECS;

/// Most connections the beats have to themselves: one per two instances up to this, so a
/// beat waits for the server, never for a free connection in the harness (each real client
/// has its own).
const MAX_BEAT_SENDERS: u64 = 2_000;

struct Overload {
    names: Arc<Names>,
    clients: u64,
    per_service: u64,
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
        Planned {
            op: "list",
            request: self.names.list((k % s) as usize, None),
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
    Ok(Workload {
        setup: vec![register_all(&names, shape)],
        plan: Arc::new(Overload {
            names,
            clients,
            per_service: shape.instances,
        }),
        // Beats ride connections of their own, as a client's beat thread does: they never wait
        // in the harness behind the flood of lists.
        streams: vec![
            StreamSpec::at(Some(clients as f64 / BEAT_SECS))
                .with_own_senders(clients.div_ceil(2).min(MAX_BEAT_SENDERS) as usize),
            lists,
        ],
        listen: None,
    })
}
