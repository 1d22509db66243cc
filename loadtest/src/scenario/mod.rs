//! Scenarios: what each one registers first (setup, not measured) and which streams of
//! requests its measured phase sends. One file per scenario; the plans shared by several
//! (bulk registration, subscribing) live here.

mod beat;
mod churn;
mod config;
mod deregister;
mod list;
mod mixed;
mod overload;
mod register;
mod subscribe;

use std::sync::Arc;

use crate::engine::{Plan, Planned};
use crate::error::LoadtestError;
use crate::nacos::{Check, Names, PushAddr, INSTANCE_PORT};
use crate::push::Change;
use crate::rate::StreamSpec;

/// The scenarios `--scenario` accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ScenarioKind {
    /// POST /instance over services × instances keys (new instances first, then
    /// re-registrations).
    Register,
    /// DELETE /instance of each instance registered during setup, once.
    Deregister,
    /// Beats (PUT /instance/beat) of the instances registered during setup: light, or with
    /// the whole beat JSON under `--full-beats`.
    Beat,
    /// GET /instance/list of the services filled during setup.
    List,
    /// List with udpPort (a push subscription) while each service changes once per second;
    /// pushes are received, acked and timed.
    Subscribe,
    /// A fleet: every instance beats every 5 s, its client lists `--dependencies` services
    /// every 10 s (subscribed to pushes). The rate follows from the fleet size.
    Mixed,
    /// Extra instances register and deregister (at `--rate`) while subscribers watch.
    Churn,
    /// A fleet keeps beating (every instance every 5 s) while lists come at `--rate` for
    /// `--overload-for`, then at `--backoff-rate`: whether the target keeps every instance
    /// alive when offered more than it serves, and how soon it serves everything again.
    Overload,
    /// Register services × instances once, then report the target's RSS per instance
    /// (needs `--target-pid`). Instances carry day-long `preserved.*` timeouts in their
    /// metadata (within `--metadata-bytes` when it leaves room), so none expires before it
    /// is listed back.
    Memory,
    /// POST /nacos/v1/cs/configs: a new version of one of `--services` configs each time.
    #[serde(rename = "config-publish")]
    ConfigPublish,
    /// GET /nacos/v1/cs/configs of `--services` configs published during setup.
    #[serde(rename = "config-get")]
    ConfigGet,
    /// `--listeners` config listeners hold long-polls on `--services` configs while new
    /// versions are published at `--rate`; reports the time from a publish to the answer that
    /// tells its listener ("notify").
    #[serde(rename = "config-listen")]
    ConfigListen,
}

impl ScenarioKind {
    pub fn name(self) -> &'static str {
        match self {
            ScenarioKind::Register => "register",
            ScenarioKind::Deregister => "deregister",
            ScenarioKind::Beat => "beat",
            ScenarioKind::List => "list",
            ScenarioKind::Subscribe => "subscribe",
            ScenarioKind::Mixed => "mixed",
            ScenarioKind::Churn => "churn",
            ScenarioKind::Overload => "overload",
            ScenarioKind::Memory => "memory",
            ScenarioKind::ConfigPublish => "config-publish",
            ScenarioKind::ConfigGet => "config-get",
            ScenarioKind::ConfigListen => "config-listen",
        }
    }

    /// Whether the scenario subscribes to UDP pushes.
    pub fn uses_push(self) -> bool {
        matches!(
            self,
            ScenarioKind::Subscribe | ScenarioKind::Mixed | ScenarioKind::Churn
        )
    }
}

/// The size and pace of a run.
#[derive(Clone, Debug)]
pub struct Shape {
    pub services: usize,
    pub instances: u64,
    pub dependencies: usize,
    pub rate: Option<f64>,
    /// Where pushes go (scenarios that subscribe, and overload under `--push-clients`).
    pub push: Option<PushAddr>,
    /// overload: when the lists back off (from the start of the phase, warm-up included) and
    /// to what rate.
    pub backoff: Option<(std::time::Duration, f64)>,
    /// mixed: each client names itself in `clientIP`.
    pub distinct_clients: bool,
}

/// A closed-loop preparation step, run to completion before the measured phase.
pub struct SetupStep {
    pub label: &'static str,
    pub plan: Arc<dyn Plan>,
    pub count: u64,
}

/// Everything a scenario runs against one target.
pub struct Workload {
    pub setup: Vec<SetupStep>,
    pub plan: Arc<dyn Plan>,
    pub streams: Vec<StreamSpec>,
    /// config-listen: the log of what the publishes sent, for the listeners to time against.
    pub listen: Option<Arc<crate::listen::PublishLog>>,
}

/// Builds the workload of `kind`.
pub fn build(
    kind: ScenarioKind,
    names: Arc<Names>,
    shape: &Shape,
) -> Result<Workload, LoadtestError> {
    let push = || {
        shape.push.ok_or_else(|| LoadtestError::InvalidArg {
            flag: "--scenario",
            reason: format!("{} needs a push address", kind.name()),
        })
    };
    Ok(match kind {
        ScenarioKind::Register | ScenarioKind::Memory => register::workload(kind, names, shape),
        ScenarioKind::Deregister => deregister::workload(names, shape),
        ScenarioKind::Beat => beat::workload(names, shape),
        ScenarioKind::List => list::workload(names, shape),
        ScenarioKind::Subscribe => subscribe::workload(names, shape, push()?),
        ScenarioKind::Mixed => mixed::workload(names, shape, push()?)?,
        ScenarioKind::Churn => churn::workload(names, shape, push()?),
        ScenarioKind::Overload => overload::workload(names, shape)?,
        ScenarioKind::ConfigPublish => config::publish(names, shape),
        ScenarioKind::ConfigGet => config::get(names, shape),
        ScenarioKind::ConfigListen => config::listen(names, shape),
    })
}

/// Setup: register every (service, instance) pair, service-major so all services fill evenly.
struct RegisterAll {
    names: Arc<Names>,
}

impl Plan for RegisterAll {
    fn plan(&self, _stream: usize, k: u64) -> Planned {
        let s = self.names.service_count() as u64;
        Planned {
            op: "setup-register",
            request: self.names.register((k % s) as usize, k / s),
            check: Check::OkText,
            change: None,
        }
    }
}

fn register_all(names: &Arc<Names>, shape: &Shape) -> SetupStep {
    SetupStep {
        label: "register instances",
        plan: Arc::new(RegisterAll {
            names: names.clone(),
        }),
        count: shape.services as u64 * shape.instances,
    }
}

/// Setup: one subscribing list per service, so pushes flow from the first measured change.
struct SubscribeAll {
    names: Arc<Names>,
    push: PushAddr,
}

impl Plan for SubscribeAll {
    fn plan(&self, _stream: usize, k: u64) -> Planned {
        Planned {
            op: "setup-subscribe",
            request: self.names.list(k as usize, Some(self.push)),
            check: Check::JsonObject,
            change: None,
        }
    }
}

fn subscribe_all(names: &Arc<Names>, push: PushAddr) -> SetupStep {
    SetupStep {
        label: "subscribe",
        plan: Arc::new(SubscribeAll {
            names: names.clone(),
            push,
        }),
        count: names.service_count() as u64,
    }
}

/// Registers (`appear`) or deregisters instance `key` of service `s`, telling the push
/// tracker to expect the change.
fn change(names: &Names, s: usize, key: u64, appear: bool) -> Planned {
    let change = Some(Change {
        service: names.grouped(s),
        ip: Names::ip(key),
        port: INSTANCE_PORT,
        appear,
    });
    if appear {
        Planned {
            op: "register",
            request: names.register(s, key),
            check: Check::OkText,
            change,
        }
    } else {
        Planned {
            op: "deregister",
            request: names.deregister(s, key),
            check: Check::OkText,
            change,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn shape() -> Shape {
        Shape {
            services: 3,
            instances: 4,
            dependencies: 2,
            rate: None,
            push: Some(PushAddr {
                ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                port: 5555,
            }),
            backoff: None,
            distinct_clients: false,
        }
    }

    #[test]
    fn setup_registers_every_pair_exactly_once() {
        let names = Arc::new(Names::new(1, "public", 3, 0, true));
        let step = register_all(&names, &shape());
        assert_eq!(step.count, 12);
        let mut targets: Vec<String> = (0..step.count)
            .map(|k| step.plan.plan(0, k).request.target)
            .collect();
        targets.sort();
        targets.dedup();
        assert_eq!(targets.len(), 12);
    }

    #[test]
    fn every_scenario_builds_and_plans_its_streams() {
        let names = Arc::new(Names::new(1, "public", 3, 0, true));
        for kind in [
            ScenarioKind::Register,
            ScenarioKind::Deregister,
            ScenarioKind::Beat,
            ScenarioKind::List,
            ScenarioKind::Subscribe,
            ScenarioKind::Mixed,
            ScenarioKind::Churn,
            ScenarioKind::Overload,
            ScenarioKind::Memory,
            ScenarioKind::ConfigPublish,
            ScenarioKind::ConfigGet,
            ScenarioKind::ConfigListen,
        ] {
            let mut shape = shape();
            if kind == ScenarioKind::Overload {
                shape.rate = Some(100.0);
            }
            let w = build(kind, names.clone(), &shape).unwrap();
            let api = match kind {
                ScenarioKind::ConfigPublish
                | ScenarioKind::ConfigGet
                | ScenarioKind::ConfigListen => "/nacos/v1/cs/configs?",
                _ => "/nacos/v1/ns/instance",
            };
            for (i, _) in w.streams.iter().enumerate() {
                let p = w.plan.plan(i, 7);
                assert!(p.request.target.starts_with(api), "{kind:?}");
            }
        }
    }

    #[test]
    fn config_publishes_give_each_version_new_content() {
        let names = Arc::new(Names::new(1, "ns-1", 3, 0, true).with_config_bytes(16));
        let w = build(ScenarioKind::ConfigPublish, names, &shape()).unwrap();
        let (a, b) = (
            w.plan.plan(0, 1).request.target,
            w.plan.plan(0, 4).request.target,
        );
        assert!(
            a.contains("tenant=ns-1") && a.contains("version%3D0"),
            "{a}"
        );
        assert!(b.contains("version%3D1"), "same config, next version: {b}");
        assert_eq!(a.split("&content").next(), b.split("&content").next());
    }
}
