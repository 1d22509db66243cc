//! `mixed`: a realistic fleet. Every registered instance belongs to a client that beats it
//! every 5 s and lists `--dependencies` services (picked from the seed) every 10 s with a push
//! subscription, as a Java 1.4 client polling at `cacheMillis`. Both streams are open-loop,
//! so the rate is the fleet's, not `--rate`.

use std::sync::Arc;

use super::{register_all, Shape, Workload};
use crate::engine::{Plan, Planned};
use crate::error::LoadtestError;
use crate::nacos::{Check, Names, PushAddr};
use crate::rate::StreamSpec;

/// Java client beat period.
pub const BEAT_SECS: f64 = 5.0;
/// Java client poll period once subscribed (`cacheMillis` = 10 s).
pub const LIST_SECS: f64 = 10.0;

struct Mixed {
    names: Arc<Names>,
    push: PushAddr,
    clients: u64,
    dependencies: u64,
    /// Instances per service: every one beats, so every list must show them all healthy.
    per_service: u64,
    /// Each client names itself in `clientIP`.
    distinct_clients: bool,
}

impl Plan for Mixed {
    fn plan(&self, stream: usize, k: u64) -> Planned {
        let s = self.names.service_count() as u64;
        let client = k % self.clients;
        if stream == 0 {
            // Client c owns instance c (service c % s, index c / s), as set up.
            return Planned {
                op: "beat",
                request: self.names.beat((client % s) as usize, client / s),
                check: Check::Beat,
                change: None,
            };
        }
        let dep = (k / self.clients) % self.dependencies;
        let service = self.names.pick(client, dep, s as usize);
        Planned {
            op: "list",
            request: self.names.list_from(
                service,
                Some(self.push),
                self.distinct_clients.then(|| Names::ip(client)),
            ),
            check: Check::Hosts {
                healthy: self.per_service,
            },
            change: None,
        }
    }
}

pub(super) fn workload(
    names: Arc<Names>,
    shape: &Shape,
    push: PushAddr,
) -> Result<Workload, LoadtestError> {
    if shape.rate.is_some() {
        return Err(LoadtestError::InvalidArg {
            flag: "--rate",
            reason: "mixed derives its rate from the fleet (instances / 5 s beats + \
                     instances × dependencies / 10 s lists); size it with --services and \
                     --instances-per-service"
                .into(),
        });
    }
    let clients = (shape.services as u64 * shape.instances).max(1);
    let dependencies = shape.dependencies.max(1) as u64;
    Ok(Workload {
        setup: vec![register_all(&names, shape)],
        plan: Arc::new(Mixed {
            names,
            push,
            clients,
            dependencies,
            per_service: shape.instances,
            distinct_clients: shape.distinct_clients,
        }),
        streams: vec![
            StreamSpec::at(Some(clients as f64 / BEAT_SECS)),
            StreamSpec::at(Some((clients * dependencies) as f64 / LIST_SECS)),
        ],
        listen: None,
    })
}
