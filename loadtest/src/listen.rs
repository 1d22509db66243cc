//! The listener side of `config-listen`: config clients holding long-polls, timed from a
//! publish to the answer that reports it.
//!
//! Each listener watches one config, as the 1.x clients do: it holds
//! `POST /nacos/v1/cs/configs/listener` with the md5 it knows (`Long-Pulling-Timeout: 30000`),
//! and when the answer names the config it reads it (`GET`), takes the new md5 and polls
//! again. The publishes (the measured stream) note when each version of each config was sent
//! in a [`PublishLog`]; a listener that learns of version `v` while it held `s` records the
//! time from the send of version `s + 1` (the first it had not seen) to the answer: what a
//! client waits between a publish and its notification.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::engine::Target;
use crate::nacos::{self, Names};
use crate::stats::{ErrorKind, Stats};

/// The long-poll timeout listeners send (what every 1.x client sends).
const HOLD_MS: &str = "30000";
/// Listeners sharing one loopback source address (of ~28,000 ephemeral ports each).
const LISTENERS_PER_SOURCE: usize = 20_000;
/// How long a listener waits for one answer before it counts a timeout.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(45);

/// When each version of each config was sent.
#[derive(Debug)]
pub struct PublishLog {
    sent: Mutex<Vec<Vec<Option<Instant>>>>,
}

impl PublishLog {
    /// A log for `configs` configs.
    pub fn new(configs: usize) -> PublishLog {
        PublishLog {
            sent: Mutex::new(vec![Vec::new(); configs]),
        }
    }

    /// Notes that version `v` of config `c` is being sent now.
    pub fn sent(&self, c: usize, v: u64) {
        let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(versions) = sent.get_mut(c) {
            let v = v as usize;
            if versions.len() <= v {
                versions.resize(v + 1, None);
            }
            versions[v] = Some(Instant::now());
        }
    }

    /// When version `v` of config `c` was sent.
    pub fn when(&self, c: usize, v: u64) -> Option<Instant> {
        let sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        sent.get(c)?.get(v as usize).copied().flatten()
    }

    /// The newest version of config `c` sent before `before`.
    pub fn newest_before(&self, c: usize, before: Instant) -> Option<u64> {
        let sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        sent.get(c)?
            .iter()
            .enumerate()
            .rev()
            .find(|(_, t)| t.is_some_and(|t| t < before))
            .map(|(v, _)| v as u64)
    }
}

/// The version a config's content carries (`…\nversion=N`, see `Names::config_publish`).
pub fn version_of(content: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(content).ok()?;
    text.rsplit_once("version=")?.1.trim().parse().ok()
}

/// Running listeners.
pub struct Listeners {
    stop: CancellationToken,
    tasks: JoinSet<Result<(Stats, usize, u64), crate::error::LoadtestError>>,
    log: Arc<PublishLog>,
}

impl Listeners {
    /// Starts `count` listeners, listener `i` on config `i % configs`, all knowing version 0.
    pub fn start(
        target: &Target,
        names: Arc<Names>,
        log: Arc<PublishLog>,
        count: usize,
    ) -> Listeners {
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        for i in 0..count {
            let c = i % names.service_count();
            tasks.spawn(listen(
                target.clone(),
                source(target, i),
                names.clone(),
                log.clone(),
                c,
                stop.clone(),
            ));
        }
        Listeners { stop, tasks, log }
    }

    /// Stops the listeners after `grace` (time for the last publishes to arrive) and returns
    /// their stats. A listener still behind a version sent before the grace began counts as a
    /// `missed` error.
    pub async fn finish(mut self, grace: Duration) -> Result<Stats, crate::error::LoadtestError> {
        let cutoff = Instant::now();
        tokio::time::sleep(grace).await;
        self.stop.cancel();
        let mut all = Stats::new()?;
        while let Some(done) = self.tasks.join_next().await {
            let Ok(done) = done else {
                continue;
            };
            let (stats, c, seen) = done?;
            all.merge(&stats)?;
            if self.log.newest_before(c, cutoff).is_some_and(|v| v > seen) {
                all.record_error("notify", ErrorKind::Missed);
            }
        }
        Ok(all)
    }
}

/// The local address listener `i` connects from: towards an IPv4 loopback target, 127.0.0.1
/// for the first [`LISTENERS_PER_SOURCE`], then 127.0.0.2, and so on (100,000 listeners need
/// five); elsewhere the system's choice.
fn source(target: &Target, i: usize) -> Option<std::net::IpAddr> {
    let std::net::IpAddr::V4(ip) = target.addr.ip() else {
        return None;
    };
    let k = u8::try_from(i / LISTENERS_PER_SOURCE).ok()?;
    (ip.is_loopback() && k > 0).then(|| crate::nacos::loopback_source(k).into())
}

/// One listener on config `c`; returns its stats, its config and the newest version it saw.
async fn listen(
    target: Target,
    source: Option<std::net::IpAddr>,
    names: Arc<Names>,
    log: Arc<PublishLog>,
    c: usize,
    stop: CancellationToken,
) -> Result<(Stats, usize, u64), crate::error::LoadtestError> {
    let mut stats = Stats::new()?;
    let mut seen = 0u64;
    let mut md5 = String::new();
    let mut conn = None;
    let get = names.config_get(c);
    let listen_target = "/nacos/v1/cs/configs/listener";
    while !stop.is_cancelled() {
        let c_conn = match conn.as_mut() {
            Some(c) => c,
            None => match target.connect_from(source, target.timeout).await {
                Ok(new) => conn.insert(new),
                Err(_) => {
                    stats.record_error("notify", ErrorKind::Connect);
                    sleep_or_stop(&stop, Duration::from_millis(200)).await;
                    continue;
                }
            },
        };
        // The first poll learns the md5 of version 0 by reading the config.
        if md5.is_empty() {
            match tokio::time::timeout(target.timeout, c_conn.send(&get)).await {
                Ok(Ok(r)) if r.status == 200 => {
                    md5 = md5_hex(r.body);
                    seen = version_of(r.body).unwrap_or(0);
                }
                _ => {
                    conn = None;
                    stats.record_error("notify", ErrorKind::Protocol);
                    sleep_or_stop(&stop, Duration::from_millis(200)).await;
                }
            }
            continue;
        }
        let form = format!(
            "Listening-Configs={}",
            nacos::encode(&names.config_listen_entry(c, &md5))
        );
        let answer = tokio::select! {
            _ = stop.cancelled() => break,
            a = tokio::time::timeout(
                ANSWER_TIMEOUT,
                c_conn.send_form(listen_target, &[("Long-Pulling-Timeout", HOLD_MS)], form.as_bytes()),
            ) => a,
        };
        let answered = Instant::now();
        let changed = match answer {
            Ok(Ok(r)) if r.status == 200 => !r.body.trim_ascii().is_empty(),
            Ok(Ok(r)) => {
                stats.record_error("notify", ErrorKind::HttpStatus(r.status));
                conn = None;
                continue;
            }
            Ok(Err(_)) => {
                stats.record_error("notify", ErrorKind::Protocol);
                conn = None;
                continue;
            }
            Err(_) => {
                stats.record_error("notify", ErrorKind::Timeout);
                conn = None;
                continue;
            }
        };
        if !changed {
            continue;
        }
        let Some(c_conn) = conn.as_mut() else {
            continue;
        };
        match tokio::time::timeout(target.timeout, c_conn.send(&get)).await {
            Ok(Ok(r)) if r.status == 200 => {
                let version = version_of(r.body).unwrap_or(seen);
                if version > seen {
                    if let Some(sent) = log.when(c, seen + 1) {
                        stats.record_ok("notify", answered.saturating_duration_since(sent));
                    }
                    seen = version;
                }
                md5 = md5_hex(r.body);
            }
            _ => {
                stats.record_error("notify", ErrorKind::Protocol);
                conn = None;
            }
        }
    }
    Ok((stats, c, seen))
}

async fn sleep_or_stop(stop: &CancellationToken, d: Duration) {
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}

fn md5_hex(body: &[u8]) -> String {
    use md5::{Digest, Md5};
    format!("{:x}", Md5::digest(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_the_content() {
        assert_eq!(version_of(b"pad\nversion=12"), Some(12));
        assert_eq!(version_of(b"no version"), None);
    }

    #[test]
    fn the_log_answers_when_each_version_was_sent() {
        let log = PublishLog::new(2);
        log.sent(1, 0);
        log.sent(1, 2);
        assert!(log.when(1, 0).is_some() && log.when(1, 1).is_none());
        assert_eq!(log.newest_before(1, Instant::now()), Some(2));
        assert_eq!(log.newest_before(0, Instant::now()), None);
        log.sent(9, 0);
    }
}
