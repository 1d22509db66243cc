//! The binary's command line: `nacre up` serves and stops cleanly on Ctrl-C; bad settings stop
//! start-up with the offending key named.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nacre_testkit::{free_loopback_addr, http_get, METRICS_PATH};

const BIN: &str = env!("CARGO_BIN_EXE_nacre");

#[test]
fn up_serves_and_stops_cleanly_on_sigint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let addr = free_loopback_addr().expect("free port");
    let data = dir.path().join("data");
    let mut child = Command::new(BIN)
        .args(["up", "--listen", &addr.to_string(), "--data"])
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn nacre up");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((200, body)) = http_get(addr, METRICS_PATH, Duration::from_secs(2)) {
            if body.contains("\"status\":\"UP\"") {
                break;
            }
        }
        assert!(Instant::now() < deadline, "nacre up never became ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        data.join("nacre.db").exists(),
        "no SQLite file under --data"
    );
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "nacre up did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "exit status {exit:?}");
}

#[test]
fn bad_settings_fail_loudly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(BIN)
        .args([
            "registry",
            "--standalone",
            "--listen",
            "127.0.0.1:0",
            "--data",
        ])
        .arg(dir.path())
        .env("NACRE_MAX_BODY_BYTES", "lots")
        .output()
        .expect("run nacre");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("NACRE_MAX_BODY_BYTES") && err.contains("lots"),
        "{err}"
    );

    let cfg = dir.path().join("nacre.toml");
    std::fs::write(&cfg, "max_body_byts = 10\n").expect("write config");
    let out = Command::new(BIN)
        .args(["registry", "--standalone", "--config"])
        .arg(&cfg)
        .output()
        .expect("run nacre");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max_body_byts"), "{err}");
}
