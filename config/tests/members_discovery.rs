//! Member discovery against real sources on this machine: a file in a temp dir, an address
//! server on 127.0.0.1, and the resolver for `localhost`. Nothing here talks to another host.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use nacre_config::members::{Discovery, MemberSource};
use nacre_config::ConfigError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const TICK: Duration = Duration::from_millis(50);
const WAIT: Duration = Duration::from_secs(10);

fn list(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

async fn wait_for(rx: &mut watch::Receiver<Vec<String>>, want: &[&str]) {
    let want = list(want);
    let seen = tokio::time::timeout(WAIT, rx.wait_for(|l| *l == want))
        .await
        .is_ok_and(|r| r.is_ok());
    assert!(seen, "list never became {want:?}; last {:?}", *rx.borrow());
}

/// Several polls pass and the list stays `want`.
async fn stays(d: &Discovery, want: &[&str]) {
    tokio::time::sleep(TICK * 8).await;
    assert_eq!(d.current(), list(want));
}

async fn stop(d: Discovery, shutdown: &CancellationToken) {
    let mut rx = d.subscribe();
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), d.stopped())
        .await
        .expect("discovery stops promptly");
    assert!(rx.changed().await.is_err(), "channel closes once stopped");
}

#[tokio::test]
async fn static_list_is_normalised_and_stops() {
    let shutdown = CancellationToken::new();
    let d = Discovery::start(
        MemberSource::Static(list(&["10.0.0.2", "10.0.0.1:8848", "10.0.0.2:8848"])),
        TICK,
        shutdown.clone(),
    )
    .await
    .unwrap();
    assert_eq!(d.current(), ["10.0.0.1:8848", "10.0.0.2:8848"]);
    assert_eq!(*d.subscribe().borrow(), ["10.0.0.1:8848", "10.0.0.2:8848"]);
    stop(d, &shutdown).await;
}

#[tokio::test]
async fn bad_static_list_and_zero_interval_fail() {
    let shutdown = CancellationToken::new();
    let e = Discovery::start(
        MemberSource::Static(list(&["10.0.0.1:0"])),
        TICK,
        shutdown.clone(),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("10.0.0.1:0"), "{e}");
    let e = Discovery::start(MemberSource::Static(vec![]), TICK, shutdown.clone())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no member"), "{e}");
    let e = Discovery::start(
        MemberSource::Static(list(&["a:1"])),
        Duration::ZERO,
        shutdown,
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("interval"), "{e}");
}

#[tokio::test]
async fn file_changes_are_followed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster.conf");
    std::fs::write(
        &path,
        "# members\n10.0.0.1:8848\n10.0.0.2:8848 # second\n10.0.0.3\n",
    )
    .unwrap();
    let shutdown = CancellationToken::new();
    let d = Discovery::start(MemberSource::File(path.clone()), TICK, shutdown.clone())
        .await
        .unwrap();
    assert_eq!(
        d.current(),
        ["10.0.0.1:8848", "10.0.0.2:8848", "10.0.0.3:8848"]
    );
    let mut rx = d.subscribe();

    // An in-place edit: a fourth member joins.
    std::fs::write(&path, "10.0.0.1\n10.0.0.2\n10.0.0.3\n10.0.0.4:8848\n").unwrap();
    wait_for(
        &mut rx,
        &[
            "10.0.0.1:8848",
            "10.0.0.2:8848",
            "10.0.0.3:8848",
            "10.0.0.4:8848",
        ],
    )
    .await;

    // An editor's atomic save (write a temp file, rename over): one member leaves.
    let tmp = dir.path().join(".cluster.conf.swp");
    std::fs::write(&tmp, "10.0.0.1, 10.0.0.3\n10.0.0.4\n").unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    wait_for(
        &mut rx,
        &["10.0.0.1:8848", "10.0.0.3:8848", "10.0.0.4:8848"],
    )
    .await;

    // Broken, empty or missing files keep the last good list.
    let good = ["10.0.0.1:8848", "10.0.0.3:8848", "10.0.0.4:8848"];
    std::fs::write(&path, "10.0.0.1\n10.0.0.9:99999\n").unwrap();
    stays(&d, &good).await;
    std::fs::write(&path, "").unwrap();
    stays(&d, &good).await;
    std::fs::remove_file(&path).unwrap();
    stays(&d, &good).await;

    // Back again.
    std::fs::write(&path, "10.0.0.5:8848\n").unwrap();
    wait_for(&mut rx, &["10.0.0.5:8848"]).await;
    stop(d, &shutdown).await;
}

#[tokio::test]
async fn same_length_rewrite_is_seen_eventually() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster.conf");
    std::fs::write(&path, "10.0.0.1\n").unwrap();
    let shutdown = CancellationToken::new();
    let d = Discovery::start(MemberSource::File(path.clone()), TICK, shutdown.clone())
        .await
        .unwrap();
    let mut rx = d.subscribe();
    // Same length, possibly within the same mtime tick: caught at the latest by the forced
    // re-read.
    std::fs::write(&path, "10.0.0.2\n").unwrap();
    wait_for(&mut rx, &["10.0.0.2:8848"]).await;
    stop(d, &shutdown).await;
}

#[tokio::test]
async fn file_must_load_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let missing = dir.path().join("absent.conf");
    let e = Discovery::start(MemberSource::File(missing), TICK, shutdown.clone())
        .await
        .unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }), "{e}");

    let bad = dir.path().join("bad.conf");
    std::fs::write(&bad, "10.0.0.1\n\n10.0.0.2:http\n").unwrap();
    let e = Discovery::start(MemberSource::File(bad), TICK, shutdown.clone())
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("bad.conf line 3") && msg.contains("10.0.0.2:http"),
        "{msg}"
    );

    let empty = dir.path().join("empty.conf");
    std::fs::write(&empty, "# nobody yet\n").unwrap();
    let e = Discovery::start(MemberSource::File(empty), TICK, shutdown)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no member"), "{e}");
}

/// What the fake address server answers: status and body.
type Answer = Arc<Mutex<(u16, String)>>;

/// A minimal HTTP/1.1 server on 127.0.0.1 answering every request with the current `Answer`.
async fn address_server(answer: Answer) -> String {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let (status, body) = answer.lock().expect("answer lock").clone();
                let resp = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(resp.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    format!("http://{addr}/nacos/serverlist")
}

#[tokio::test]
async fn endpoint_is_polled_and_failures_keep_the_list() {
    let answer: Answer = Arc::new(Mutex::new((200, "10.0.0.2:8848\r\n10.0.0.1".into())));
    let url = address_server(answer.clone()).await;
    let shutdown = CancellationToken::new();
    let d = Discovery::start(MemberSource::Endpoint(url), TICK, shutdown.clone())
        .await
        .unwrap();
    assert_eq!(d.current(), ["10.0.0.1:8848", "10.0.0.2:8848"]);
    let mut rx = d.subscribe();

    *answer.lock().unwrap() = (200, "10.0.0.1:8848\n10.0.0.2:8848\n10.0.0.3:8848\n".into());
    wait_for(
        &mut rx,
        &["10.0.0.1:8848", "10.0.0.2:8848", "10.0.0.3:8848"],
    )
    .await;

    let good = ["10.0.0.1:8848", "10.0.0.2:8848", "10.0.0.3:8848"];
    *answer.lock().unwrap() = (500, "10.0.0.9".into());
    stays(&d, &good).await;
    *answer.lock().unwrap() = (200, String::new());
    stays(&d, &good).await;
    *answer.lock().unwrap() = (200, "<html>not a list</html>".into());
    stays(&d, &good).await;

    *answer.lock().unwrap() = (200, "10.0.0.3:8848".into());
    wait_for(&mut rx, &["10.0.0.3:8848"]).await;
    stop(d, &shutdown).await;
}

#[tokio::test]
async fn endpoint_failing_at_start_gives_empty_list_then_follows() {
    let answer: Answer = Arc::new(Mutex::new((500, String::new())));
    let url = address_server(answer.clone()).await;
    let shutdown = CancellationToken::new();
    let d = Discovery::start(MemberSource::Endpoint(url), TICK, shutdown.clone())
        .await
        .unwrap();
    assert!(d.current().is_empty());
    let mut rx = d.subscribe();
    *answer.lock().unwrap() = (200, "10.0.0.7".into());
    wait_for(&mut rx, &["10.0.0.7:8848"]).await;
    stop(d, &shutdown).await;
}

#[tokio::test]
async fn endpoint_url_is_checked() {
    let shutdown = CancellationToken::new();
    for url in [
        "not a url",
        "https://127.0.0.1:1/nacos/serverlist",
        "127.0.0.1:8080",
    ] {
        let e = Discovery::start(MemberSource::Endpoint(url.into()), TICK, shutdown.clone())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("members_endpoint"), "{url}: {e}");
    }
}

#[tokio::test]
async fn dns_localhost_resolves() {
    let shutdown = CancellationToken::new();
    let d = tokio::time::timeout(
        WAIT,
        Discovery::start(
            MemberSource::Dns {
                name: "localhost".into(),
                port: 18848,
            },
            TICK,
            shutdown.clone(),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    let members = d.current();
    assert!(
        members.contains(&"127.0.0.1:18848".to_string()),
        "{members:?}"
    );
    assert!(
        members
            .iter()
            .all(|m| m == "127.0.0.1:18848" || m == "[::1]:18848"),
        "{members:?}"
    );
    stays(&d, &members.iter().map(String::as_str).collect::<Vec<_>>()).await;
    stop(d, &shutdown).await;
}

#[tokio::test]
async fn dns_unresolvable_name_starts_empty() {
    let shutdown = CancellationToken::new();
    let d = tokio::time::timeout(
        WAIT,
        Discovery::start(
            MemberSource::Dns {
                name: "nonexistent.invalid".into(),
                port: 8848,
            },
            TICK,
            shutdown.clone(),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(d.current().is_empty());
    stop(d, &shutdown).await;
}

#[tokio::test]
async fn dns_target_is_checked() {
    let shutdown = CancellationToken::new();
    let e = Discovery::start(
        MemberSource::Dns {
            name: "bad name".into(),
            port: 8848,
        },
        TICK,
        shutdown.clone(),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("members_dns"), "{e}");
    let e = Discovery::start(
        MemberSource::Dns {
            name: "localhost".into(),
            port: 0,
        },
        TICK,
        shutdown,
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("port"), "{e}");
}
