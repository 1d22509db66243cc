//! CPU time and resident memory of a process, read from `/proc/<pid>/stat` (utime + stime)
//! and `/proc/<pid>/status` (VmRSS). Used for the target server (`--target-pid`) and for the
//! load generator itself, so a report can say how many requests each side got per CPU-second.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::error::LoadtestError;

/// One reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcSample {
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
    pub rss_bytes: u64,
}

/// utime + stime from the text of `/proc/<pid>/stat`. The command name (field 2) may contain
/// spaces and parentheses, so fields are counted after the *last* `)`.
pub fn parse_stat(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After ")": state is field 3; utime and stime are fields 14 and 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// VmRSS in bytes from the text of `/proc/<pid>/status`.
pub fn parse_vmrss(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Reads both files of `pid` (async: `/proc` reads are cheap but still syscalls on a worker).
pub async fn sample(pid: u32) -> Result<ProcSample, LoadtestError> {
    let err = |reason: String| LoadtestError::Proc { pid, reason };
    let stat = tokio::fs::read_to_string(format!("/proc/{pid}/stat"))
        .await
        .map_err(|e| err(e.to_string()))?;
    let status = tokio::fs::read_to_string(format!("/proc/{pid}/status"))
        .await
        .map_err(|e| err(e.to_string()))?;
    Ok(ProcSample {
        cpu_ticks: parse_stat(&stat).ok_or_else(|| err("unparseable stat".into()))?,
        rss_bytes: parse_vmrss(&status).ok_or_else(|| err("no VmRSS".into()))?,
    })
}

/// `pid`'s sample with the CPU of `also` (a cluster's other processes) added to it.
pub async fn sample_with(pid: u32, also: &[u32]) -> Result<ProcSample, LoadtestError> {
    let mut s = sample(pid).await?;
    for p in also {
        s.cpu_ticks += sample(*p).await?.cpu_ticks;
    }
    Ok(s)
}

/// Clock ticks per second (`getconf CLK_TCK`); Linux uses 100 on every common architecture,
/// which is the answer if `getconf` is missing.
pub async fn clock_ticks() -> u64 {
    let out = tokio::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .await;
    out.ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// Tracks the peak RSS of a process while a phase runs.
#[derive(Debug)]
pub struct RssWatch {
    peak: Arc<AtomicU64>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl RssWatch {
    /// Samples every `every` until [`RssWatch::finish`].
    pub fn start(pid: u32, every: Duration) -> RssWatch {
        let peak = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let peak = peak.clone();
            let stop = stop.clone();
            async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tick.tick() => {}
                    }
                    if let Ok(s) = sample(pid).await {
                        peak.fetch_max(s.rss_bytes, Ordering::Relaxed);
                    }
                }
            }
        });
        RssWatch { peak, stop, task }
    }

    /// Stops sampling and returns the peak RSS seen (0 if never readable).
    pub async fn finish(self) -> u64 {
        self.stop.cancel();
        let _ = self.task.await;
        self.peak.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_even_with_a_hostile_command_name() {
        let stat = "4242 (we ird) (x)) S 1 4242 4242 0 -1 4194560 1000 0 0 0 1234 567 0 0 20 0 8 0 100 1000000 300 18446744073709551615";
        assert_eq!(parse_stat(stat), Some(1234 + 567));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn parses_vmrss_in_bytes() {
        let status = "Name:\tnacre\nVmPeak:\t  100 kB\nVmRSS:\t   56320 kB\nThreads:\t9\n";
        assert_eq!(parse_vmrss(status), Some(56_320 * 1024));
        assert_eq!(parse_vmrss("Name: x\n"), None);
    }

    #[tokio::test]
    async fn samples_this_process() {
        let s = sample(std::process::id()).await.unwrap();
        assert!(s.rss_bytes > 0);
        assert!(clock_ticks().await > 0);
        assert!(sample(u32::MAX).await.is_err());
    }
}
