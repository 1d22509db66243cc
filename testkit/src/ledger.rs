//! Persistent writes with their history, and the checkers over it: no acknowledged write lost
//! and none half-visible, and no node's reads going back in time.
//!
//! The ledger registers persistent instances (`ephemeral=false`, so through Raft) of one
//! service, each with a new IP, through a node picked in turn (failing over to the next one on
//! an error, as clients do). Every write is recorded with its call and return times and its
//! outcome: `ok` (acknowledged), or unknown (no answer or an error: it may or may not have
//! happened). A reader lists the service on every node again and again: the set a node shows
//! must never shrink (writes only add), and at the end every acknowledged write must be
//! listed by every node.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::fleet::Targets;
use crate::http::{ips_of, Api, Clients};

/// One write as the client saw it.
#[derive(Debug, Clone)]
pub struct Write {
    /// The instance IP written.
    pub ip: String,
    /// Seconds since the ledger started, when the call was made.
    pub call_s: f64,
    /// When it returned.
    pub return_s: f64,
    /// Acknowledged (`ok`); otherwise unknown.
    pub acked: bool,
}

/// A read that went back in time: a node listed fewer writes than it had before.
#[derive(Debug, Clone)]
pub struct Regression {
    /// Seconds since start.
    pub at_s: f64,
    /// The node.
    pub node: SocketAddr,
    /// Writes it showed before and now lacks.
    pub lost: Vec<String>,
}

#[derive(Debug, Default)]
struct State {
    writes: Vec<Write>,
    seen: BTreeMap<SocketAddr, BTreeSet<String>>,
    regressions: Vec<Regression>,
}

/// The running ledger: a writer and a reader task.
#[derive(Debug)]
pub struct Ledger {
    service: String,
    stop: Arc<AtomicBool>,
    state: Arc<Mutex<State>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Ledger {
    /// Starts writing to `service` every `every` through `writers`, and reading it from
    /// `readers` every `every`.
    pub fn start(service: &str, writers: Targets, readers: Targets, every: Duration) -> Ledger {
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(Mutex::new(State::default()));
        let started = Instant::now();
        let writer = {
            let (stop, state, service) = (stop.clone(), state.clone(), service.to_string());
            tokio::spawn(async move {
                let mut clients = Clients::new(Duration::from_secs(3));
                let mut n: u32 = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    // Loopback addresses: the owner health-checks persistent instances, and no probe may
                    // leave the machine.
                    let ip = format!("127.{}.{}.{}", 200 + n / 65_536, (n / 256) % 256, n % 256);
                    let nodes = writers.get();
                    let call_s = started.elapsed().as_secs_f64();
                    let mut acked = false;
                    for k in 0..nodes.len() {
                        let addr = nodes[(n as usize + k) % nodes.len()];
                        let r = clients
                            .get(addr)
                            .instance(
                                "POST",
                                &[
                                    ("serviceName", service.as_str()),
                                    ("ip", ip.as_str()),
                                    ("port", "80"),
                                    ("ephemeral", "false"),
                                ],
                            )
                            .await;
                        if r.status == 200 && r.body == "ok" {
                            acked = true;
                            break;
                        }
                    }
                    let w = Write {
                        ip,
                        call_s,
                        return_s: started.elapsed().as_secs_f64(),
                        acked,
                    };
                    if let Ok(mut st) = state.lock() {
                        st.writes.push(w);
                    }
                    tokio::time::sleep(every).await;
                }
            })
        };
        let reader = {
            let (stop, state, service) = (stop.clone(), state.clone(), service.to_string());
            tokio::spawn(async move {
                let mut clients = Clients::new(Duration::from_secs(1));
                while !stop.load(Ordering::Relaxed) {
                    for node in readers.get() {
                        let Some(now) = read(&clients.get(node), &service).await else {
                            continue;
                        };
                        if let Ok(mut st) = state.lock() {
                            let before = st.seen.entry(node).or_default().clone();
                            let lost: Vec<String> = before.difference(&now).cloned().collect();
                            if !lost.is_empty() {
                                st.regressions.push(Regression {
                                    at_s: started.elapsed().as_secs_f64(),
                                    node,
                                    lost,
                                });
                            }
                            st.seen.insert(node, now);
                        }
                    }
                    tokio::time::sleep(every).await;
                }
            })
        };
        Ledger {
            service: service.to_string(),
            stop,
            state,
            tasks: vec![writer, reader],
        }
    }

    /// Stops writing and reading.
    pub async fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }

    /// Every write so far.
    pub fn writes(&self) -> Vec<Write> {
        self.state
            .lock()
            .map(|s| s.writes.clone())
            .unwrap_or_default()
    }

    /// Reads that went back in time.
    pub fn regressions(&self) -> Vec<Regression> {
        self.state
            .lock()
            .map(|s| s.regressions.clone())
            .unwrap_or_default()
    }

    /// Acknowledged writes that `node` does not list (call after [`Ledger::stop`] and once
    /// the cluster settled); `None` when the node does not answer.
    pub async fn missing_on(&self, node: SocketAddr) -> Option<Vec<String>> {
        let api = Api::new(node).with_timeout(Duration::from_secs(1));
        let listed = read(&api, &self.service).await?;
        Some(
            self.writes()
                .into_iter()
                .filter(|w| w.acked && !listed.contains(&w.ip))
                .map(|w| w.ip)
                .collect(),
        )
    }
}

/// The IPs `api`'s node lists for `service`, or `None` without a whole list answer.
async fn read(api: &Api, service: &str) -> Option<BTreeSet<String>> {
    Some(ips_of(&api.listed(service).await?).into_iter().collect())
}
