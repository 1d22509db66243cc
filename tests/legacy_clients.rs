//! Real legacy-client compatibility suite.
//!
//! Starts the real `nacre` binary (`nacre registry --standalone`) on a free loopback port and
//! drives it with the unmodified legacy clients:
//!
//! - Python `nacos-sdk-python` 0.1.x: `compat/python/check_legacy.py` (venv `compat/python/.venv`)
//! - Node `nacos` 2.x (`nacos-naming`): `compat/node/check_legacy.js` (`compat/node/node_modules`)
//!
//! Both are installed by `scripts/install-legacy-clients.sh` (run by `scripts/test.sh`). A
//! missing install is a test failure, never a skip.
//!
//! Each driver prints `PASS name` / `FAIL name: reason` per check and exits non-zero on any
//! failure; the output is echoed here. `NACRE_COMPAT_ONLY=a,b` restricts the scenarios
//! (names from `check_legacy.* --list`), e.g. while debugging one behaviour; `NACRE_TEST_BIN`
//! replaces the binary under test.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nacre_testkit::NodeProcess;

const INSTALL_HINT: &str =
    "run `scripts/install-legacy-clients.sh` (or `scripts/test.sh`, which runs it) first";
const DRIVER_TIMEOUT: Duration = Duration::from_secs(240);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn start_node(tag: &str) -> Result<(tempfile::TempDir, NodeProcess)> {
    let data = tempfile::Builder::new()
        .prefix(&format!("nacre-legacy-{tag}-"))
        .tempdir()?;
    // NACRE_TEST_BIN overrides the binary under test (e.g. a release build or a stand-in).
    let bin = std::env::var_os("NACRE_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_nacre")));
    let mut node = NodeProcess::start(&bin, data.path())?;
    node.wait_ready(Duration::from_secs(30))?;
    Ok((data, node))
}

/// Runs a driver to completion (bounded by DRIVER_TIMEOUT), returns (success, stdout+stderr).
fn run_driver(mut cmd: Command) -> Result<(bool, String)> {
    if let Ok(only) = std::env::var("NACRE_COMPAT_ONLY") {
        cmd.arg("--only").arg(only);
    }
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
    let deadline = Instant::now() + DRIVER_TIMEOUT;
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
        // client libraries log warnings/stack traces to stderr; keep the end of it
        let tail: String = {
            let start = stderr.len().saturating_sub(6000);
            let start = (start..stderr.len())
                .find(|i| stderr.is_char_boundary(*i))
                .unwrap_or(stderr.len());
            stderr[start..].to_string()
        };
        text.push_str(&format!("--- stderr (tail) ---\n{tail}\n"));
    }
    match status {
        Some(st) => Ok((st.success(), format!("{text}--- exit: {st}\n"))),
        None => Ok((
            false,
            format!("{text}--- killed after {DRIVER_TIMEOUT:?}\n"),
        )),
    }
}

fn finish(name: &str, node: &NodeProcess, ok: bool, output: String) -> Result<()> {
    println!("{output}");
    if !ok {
        bail!(
            "{name} legacy-client checks failed (FAIL lines above).\n--- nacre log tail ({}) ---\n{}",
            node.log_path().display(),
            node.log_tail(6000)
        );
    }
    Ok(())
}

#[test]
fn python_legacy_client() -> Result<()> {
    let py = root().join("compat/python/.venv/bin/python");
    if !py.exists() {
        bail!(
            "Python legacy client venv missing ({}): {INSTALL_HINT}",
            py.display()
        );
    }
    let probe = Command::new(&py)
        .args(["-c", "import nacos"])
        .status()
        .with_context(|| format!("running {}", py.display()))?;
    if !probe.success() {
        bail!(
            "nacos-sdk-python is not importable from {}: {INSTALL_HINT}",
            py.display()
        );
    }
    let (_data, node) = start_node("py")?;
    let mut cmd = Command::new(&py);
    cmd.arg(root().join("compat/python/check_legacy.py"))
        .arg("--servers")
        .arg(node.addr().to_string())
        .current_dir(root().join("compat/python"));
    let (ok, output) = run_driver(cmd)?;
    finish("python (nacos-sdk-python 0.1.x)", &node, ok, output)
}

#[test]
fn node_legacy_client() -> Result<()> {
    let dir = root().join("compat/node");
    if !dir.join("node_modules/nacos/package.json").exists()
        || !dir.join("node_modules/nacos-naming/package.json").exists()
    {
        bail!(
            "Node legacy client missing ({}/node_modules): {INSTALL_HINT}",
            dir.display()
        );
    }
    match Command::new("node").arg("--version").output() {
        Ok(o) if o.status.success() => {}
        _ => bail!("`node` is not on PATH; the Node legacy-client suite needs Node.js (20.x)"),
    }
    let (_data, node) = start_node("node")?;
    let mut cmd = Command::new("node");
    cmd.arg(dir.join("check_legacy.js"))
        .arg("--servers")
        .arg(node.addr().to_string())
        .current_dir(&dir);
    let (ok, output) = run_driver(cmd)?;
    finish("node (nacos 2.x / nacos-naming)", &node, ok, output)
}
