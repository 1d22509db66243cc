//! Child-process plumbing shared by [`crate::NodeProcess`] and
//! [`crate::gateway::GatewayProcess`]: output appended to a log file, the log's tail for
//! failure messages, and `kill -9` with reaping.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};

/// Spawns `cmd` with stdin closed and stdout/stderr appended to `log`.
pub(crate) fn spawn_logged(cmd: &mut Command, log: &Path) -> Result<Child> {
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let err = out.try_clone()?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .with_context(|| format!("spawning {cmd:?}"))
}

/// The last `max_bytes` of `log` (lossy UTF-8; empty when unreadable).
pub(crate) fn log_tail(log: &Path, max_bytes: usize) -> String {
    let mut buf = Vec::new();
    if let Ok(mut f) = File::open(log) {
        let _ = f.read_to_end(&mut buf);
    }
    let start = buf.len().saturating_sub(max_bytes);
    String::from_utf8_lossy(&buf[start..]).into_owned()
}

/// SIGKILLs the child if it still runs (std's `Child::kill` is SIGKILL on Unix) and reaps
/// it; `None` afterwards. No-op without a child.
pub(crate) fn kill9(child: &mut Option<Child>) -> Result<()> {
    if let Some(mut c) = child.take() {
        if c.try_wait()?.is_none() {
            c.kill().context("killing the child")?;
        }
        c.wait().context("reaping the child")?;
    }
    Ok(())
}
