//! Persistent writes with their history, and the checkers over it.
//!
//! The ledger registers persistent instances (`ephemeral=false`, so through Raft) of one
//! service, each with a new IP, through a node picked in turn (failing over to the next one on
//! an error, as clients do). Every write is recorded with its call and return times and its
//! outcome: `ok` (acknowledged), or unknown (no answer or an error: it may or may not have
//! happened). A reader lists the service on every node again and again.
//!
//! The model is a grow-only set written by one sequential client through a replicated log,
//! read from any node's applied state (reads are local, so a node cut off may be behind; they
//! are not linearizable and this does not pretend they are). What must hold for every read of
//! every node:
//! - *never back in time*: the set a node shows never shrinks ([`Regression`]);
//! - *no phantom*: every element was written, by a call made before the read returned;
//! - *log order*: a node showing a write shows every write acknowledged before that write was
//!   called (its log entry is later than theirs, and nodes apply in log order);
//!
//! and at the end, once the cluster settled: every acknowledged write is listed by every node
//! ([`Ledger::missing_on`]), and no write is half-visible — an unknown write is listed by every
//! node or by none ([`Ledger::half_visible`]).

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

/// A read that no sequential execution of the writes explains.
#[derive(Debug, Clone)]
pub struct Anomaly {
    /// Seconds since start.
    pub at_s: f64,
    /// The node.
    pub node: SocketAddr,
    /// Elements never written, or written by a call made after the read returned.
    pub phantoms: Vec<String>,
    /// Writes acknowledged before a listed write was called, yet not listed.
    pub out_of_order: Vec<String>,
}

#[derive(Debug, Default)]
struct State {
    /// Every write called so far, in call order (the writer is sequential), with its call time.
    issued: Vec<(String, f64)>,
    /// Position of each written IP in `issued`.
    position: BTreeMap<String, usize>,
    writes: Vec<Write>,
    seen: BTreeMap<SocketAddr, BTreeSet<String>>,
    regressions: Vec<Regression>,
    anomalies: Vec<Anomaly>,
}

impl State {
    /// The anomaly `listed` (read from `node`, returned at `returned_s`) shows, if any.
    fn judge(
        &self,
        node: SocketAddr,
        listed: &BTreeSet<String>,
        returned_s: f64,
    ) -> Option<Anomaly> {
        let mut phantoms = Vec::new();
        let mut latest = None;
        for ip in listed {
            match self.position.get(ip) {
                Some(&k) if self.issued[k].1 <= returned_s => {
                    latest = latest.max(Some(k));
                }
                _ => phantoms.push(ip.clone()),
            }
        }
        // Writes before position `latest` returned before it was called (one sequential
        // writer); the acknowledged ones among them are in the log before it.
        let out_of_order: Vec<String> = self
            .writes
            .iter()
            .take(latest.unwrap_or(0))
            .filter(|w| w.acked && !listed.contains(&w.ip))
            .map(|w| w.ip.clone())
            .collect();
        (!phantoms.is_empty() || !out_of_order.is_empty()).then_some(Anomaly {
            at_s: returned_s,
            node,
            phantoms,
            out_of_order,
        })
    }
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
                    if let Ok(mut st) = state.lock() {
                        let k = st.issued.len();
                        st.issued.push((ip.clone(), call_s));
                        st.position.insert(ip.clone(), k);
                    }
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
                        let returned_s = started.elapsed().as_secs_f64();
                        if let Ok(mut st) = state.lock() {
                            if let Some(a) = st.judge(node, &now, returned_s) {
                                st.anomalies.push(a);
                            }
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

    /// Reads that no sequential execution of the writes explains (phantoms, out of log order).
    pub fn anomalies(&self) -> Vec<Anomaly> {
        self.state
            .lock()
            .map(|s| s.anomalies.clone())
            .unwrap_or_default()
    }

    /// Writes listed by some of `nodes` but not by all (call after [`Ledger::stop`] and once
    /// the cluster settled); `None` when a node does not answer.
    pub async fn half_visible(&self, nodes: &[SocketAddr]) -> Option<Vec<String>> {
        let mut sets = Vec::new();
        for n in nodes {
            let api = Api::new(*n).with_timeout(Duration::from_secs(1));
            sets.push(read(&api, &self.service).await?);
        }
        let union: BTreeSet<&String> = sets.iter().flatten().collect();
        Some(
            union
                .into_iter()
                .filter(|ip| !sets.iter().all(|s| s.contains(*ip)))
                .cloned()
                .collect(),
        )
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

#[cfg(test)]
mod tests {
    use super::*;

    fn state(writes: &[(&str, f64, f64, bool)]) -> State {
        let mut st = State::default();
        for (k, (ip, call, ret, acked)) in writes.iter().enumerate() {
            st.issued.push((ip.to_string(), *call));
            st.position.insert(ip.to_string(), k);
            st.writes.push(Write {
                ip: ip.to_string(),
                call_s: *call,
                return_s: *ret,
                acked: *acked,
            });
        }
        st
    }

    fn set(ips: &[&str]) -> BTreeSet<String> {
        ips.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_prefix_of_the_log_is_a_valid_read_and_a_gap_or_a_phantom_is_not() {
        let node: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let st = state(&[
            ("a", 0.0, 1.0, true),
            ("b", 1.0, 2.0, false),
            ("c", 2.0, 3.0, true),
        ]);
        // Stale but ordered: fine. An unknown write may be missing.
        assert!(st.judge(node, &set(&["a"]), 5.0).is_none());
        assert!(st.judge(node, &set(&["a", "c"]), 5.0).is_none());
        assert!(st.judge(node, &set(&[]), 5.0).is_none());
        // `c` without the acknowledged `a` before it.
        let gap = st.judge(node, &set(&["c"]), 5.0).unwrap();
        assert_eq!(gap.out_of_order, vec!["a"]);
        // Never written, and written only after the read returned.
        let ph = st.judge(node, &set(&["a", "zz"]), 5.0).unwrap();
        assert_eq!(ph.phantoms, vec!["zz"]);
        let early = st.judge(node, &set(&["a", "b"]), 0.5).unwrap();
        assert_eq!(early.phantoms, vec!["b"]);
    }
}
