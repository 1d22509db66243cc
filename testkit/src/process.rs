//! Child-process plumbing shared by [`crate::NodeProcess`] and
//! [`crate::gateway::GatewayProcess`]: output appended to a log file, the log's tail for
//! failure messages, `kill -9` with reaping, SIGTERM with a wait, SIGSTOP / SIGCONT pauses,
//! and polling a readiness endpoint.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

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
pub fn log_tail(log: &Path, max_bytes: usize) -> String {
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

/// Sends SIGTERM (what Kubernetes sends a pod it stops) and waits up to `timeout` for the
/// child to exit on its own; reaps it and returns its status. Errors without a running child,
/// or when it outlives `timeout` (it is left running: the caller decides).
pub(crate) fn terminate(
    child: &mut Option<Child>,
    what: &str,
    timeout: Duration,
) -> Result<std::process::ExitStatus> {
    let c = child
        .as_mut()
        .with_context(|| format!("{what} not running"))?;
    let pid = nix::unistd::Pid::from_raw(i32::try_from(c.id()).context("pid out of range")?);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)
        .with_context(|| format!("sending SIGTERM to {pid}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = c.try_wait()? {
            *child = None;
            return Ok(st);
        }
        if Instant::now() >= deadline {
            bail!("{what} did not exit within {timeout:?} of SIGTERM");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) the child, as a long GC pause, a VM freeze or a
/// starved process would: its sockets stay open and the kernel still accepts connections for
/// it, but it answers nothing until resumed.
pub(crate) fn set_paused(child: &Option<Child>, paused: bool) -> Result<()> {
    let Some(c) = child else {
        bail!("no running child to pause or resume");
    };
    let pid = nix::unistd::Pid::from_raw(i32::try_from(c.id()).context("pid out of range")?);
    let sig = if paused {
        nix::sys::signal::Signal::SIGSTOP
    } else {
        nix::sys::signal::Signal::SIGCONT
    };
    nix::sys::signal::kill(pid, sig).with_context(|| format!("sending {sig} to {pid}"))
}

/// What [`wait_ready`] polls.
pub(crate) struct Readiness<'a> {
    /// Names the process in errors ("nacre", "gateway").
    pub what: &'a str,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The path answering 200 with JSON.
    pub path: &'a str,
    /// Whether an answer means ready.
    pub ready: &'a dyn Fn(&serde_json::Value) -> bool,
    /// Its log, for failure messages.
    pub log: &'a Path,
}

/// Polls `r.path` until `r.ready` accepts its JSON answer, failing early (with the log tail)
/// when the child exits or was killed, and at `timeout`.
pub(crate) fn wait_ready(
    child: &mut Option<Child>,
    r: &Readiness<'_>,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let Some(c) = child.as_mut() else {
            bail!(
                "{} on {} is not running (killed and not restarted)",
                r.what,
                r.addr
            );
        };
        if let Some(status) = c.try_wait()? {
            bail!(
                "{} exited ({status}) before becoming ready on {}; log tail:\n{}",
                r.what,
                r.addr,
                log_tail(r.log, 4000)
            );
        }
        let last = match crate::http_get(r.addr, r.path, Duration::from_secs(2)) {
            Ok((200, body)) => match serde_json::from_str::<serde_json::Value>(&body) {
                Ok(v) if (r.ready)(&v) => return Ok(()),
                Ok(_) => format!("200 but not ready: {body}"),
                Err(e) => format!("200 but not JSON ({e}): {body}"),
            },
            Ok((code, body)) => format!("HTTP {code}: {body}"),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= deadline {
            bail!(
                "{} on {} not ready within {timeout:?} (last probe: {last}); log tail:\n{}",
                r.what,
                r.addr,
                log_tail(r.log, 4000)
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
}
