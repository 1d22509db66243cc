//! Runs an external driver script (a legacy client, the browser) to completion with a time
//! bound, collecting what it printed, for the suites that hand a real client the wheel.

use std::io::Read;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// Runs `cmd` (stdin closed) until it exits or `timeout` passes (then kills it). Returns
/// whether it succeeded and a transcript: the command, its stdout, the tail of its stderr
/// (client libraries log warnings and stack traces there) and how it ended.
pub fn run_driver(mut cmd: Command, timeout: Duration) -> Result<(bool, String)> {
    let desc = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {desc}"))?;
    let mut out = child.stdout.take().context("stdout pipe")?;
    let mut err = child.stderr.take().context("stderr pipe")?;
    let out_t = thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break Some(st);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(200));
    };
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    let mut text = format!("$ {desc}\n{stdout}");
    if !stderr.trim().is_empty() {
        let start = stderr.len().saturating_sub(6000);
        let start = (start..stderr.len())
            .find(|i| stderr.is_char_boundary(*i))
            .unwrap_or(stderr.len());
        text.push_str(&format!("--- stderr (tail) ---\n{}\n", &stderr[start..]));
    }
    match status {
        Some(st) => Ok((st.success(), format!("{text}--- exit: {st}\n"))),
        None => Ok((false, format!("{text}--- killed after {timeout:?}\n"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_driver_is_judged_by_its_exit_and_bounded_in_time() -> Result<()> {
        let mut ok = Command::new("sh");
        ok.args(["-c", "echo PASS a; echo oops >&2"]);
        let (passed, text) = run_driver(ok, Duration::from_secs(10))?;
        assert!(
            passed && text.contains("PASS a") && text.contains("oops"),
            "{text}"
        );
        let mut bad = Command::new("sh");
        bad.args(["-c", "exit 3"]);
        assert!(!run_driver(bad, Duration::from_secs(10))?.0);
        let mut slow = Command::new("sleep");
        slow.arg("30");
        let (passed, text) = run_driver(slow, Duration::from_millis(300))?;
        assert!(!passed && text.contains("killed after"), "{text}");
        Ok(())
    }
}
