//! Every class of malformed request gets a Nacos-style 4xx naming the problem, never a 5xx or a
//! crash, and nothing already stored changes.

use std::path::Path;
use std::time::Duration;

use nacre_testkit::http::Api;
use nacre_testkit::NodeProcess;

const INSTANCE: &str = "/nacos/v1/ns/instance";

async fn snapshot(api: &Api) -> serde_json::Value {
    let mut l = api.list(&[("serviceName", "stable")]).await;
    // lastRefTime is the server clock; everything else must be identical.
    l.as_object_mut()
        .expect("list is an object")
        .remove("lastRefTime");
    let svc = api
        .call("GET", "/nacos/v1/ns/service", &[("serviceName", "stable")])
        .await
        .json();
    serde_json::json!({ "list": l, "service": svc })
}

#[tokio::test]
async fn malformed_requests_get_clear_4xx_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProcess::start(Path::new(env!("CARGO_BIN_EXE_nacre")), dir.path()).unwrap();
    node.wait_ready(Duration::from_secs(30)).unwrap();
    let api = Api::new(node.addr());
    for (ip, eph) in [("10.0.0.1", "true"), ("127.0.0.2", "false")] {
        let r = api
            .instance(
                "POST",
                &[
                    ("serviceName", "stable"),
                    ("ip", ip),
                    ("port", "80"),
                    ("ephemeral", eph),
                    ("metadata", r#"{"k":"v"}"#),
                ],
            )
            .await;
        assert_eq!(r.body, "ok");
    }
    let before = snapshot(&api).await;

    let base = |extra: &[(&'static str, &'static str)]| {
        let mut v = vec![
            ("serviceName", "stable"),
            ("ip", "10.0.0.1"),
            ("port", "80"),
        ];
        for (k, val) in extra {
            v.retain(|(kk, _)| kk != k);
            v.push((k, val));
        }
        v
    };

    struct Case {
        name: &'static str,
        method: &'static str,
        params: Vec<(&'static str, &'static str)>,
        status: u16,
        body_has: &'static str,
    }
    let cases = vec![
        Case {
            name: "missing serviceName",
            method: "POST",
            params: vec![("ip", "10.0.0.1"), ("port", "80")],
            status: 400,
            body_has: "Param 'serviceName' is required.",
        },
        Case {
            name: "missing ip",
            method: "POST",
            params: vec![("serviceName", "stable"), ("port", "80")],
            status: 400,
            body_has: "Param 'ip' is required.",
        },
        Case {
            name: "non-numeric port",
            method: "POST",
            params: base(&[("port", "abc")]),
            status: 400,
            body_has: "For input string: \"abc\"",
        },
        Case {
            name: "port out of range",
            method: "POST",
            params: base(&[("port", "70000")]),
            status: 400,
            body_has: "out of range",
        },
        Case {
            name: "weight out of range",
            method: "PUT",
            params: base(&[("weight", "20000")]),
            status: 400,
            body_has: "The weights range from 0.0 to 10000.0",
        },
        Case {
            name: "bad ip",
            method: "POST",
            params: base(&[("ip", "10.0.0.999")]),
            status: 400,
            body_has: "Your IP address is spelled incorrectly",
        },
        Case {
            name: "bad cluster name",
            method: "POST",
            params: base(&[("clusterName", "my_cluster")]),
            status: 400,
            body_has: "cluster name can only have these characters",
        },
        Case {
            name: "malformed metadata",
            method: "PUT",
            params: base(&[("metadata", "{not json")]),
            status: 400,
            body_has: "metadata format incorrect",
        },
        Case {
            name: "malformed grouped name",
            method: "POST",
            params: base(&[("serviceName", "@@stable")]),
            status: 400,
            body_has: "groupName can't be empty",
        },
        Case {
            name: "illegal service characters",
            method: "POST",
            params: base(&[("serviceName", "sta ble")]),
            status: 400,
            body_has: "dom name can only have these characters",
        },
        Case {
            name: "malformed beat json",
            method: "PUT",
            params: vec![("serviceName", "stable"), ("beat", "{\"ip\":")],
            status: 400,
            body_has: "beat format incorrect",
        },
        Case {
            name: "beat port out of range",
            method: "PUT",
            params: vec![
                ("serviceName", "stable"),
                ("beat", r#"{"ip":"10.0.0.1","port":99999}"#),
            ],
            status: 400,
            body_has: "beat format incorrect",
        },
        Case {
            name: "protect threshold out of range",
            method: "PUT",
            params: vec![("serviceName", "stable"), ("protectThreshold", "3")],
            status: 400,
            body_has: "protectThreshold",
        },
    ];
    for c in &cases {
        let path = match (c.name, c.method) {
            (n, _) if n.starts_with("malformed beat") || n.starts_with("beat port") => {
                "/nacos/v1/ns/instance/beat"
            }
            (n, _) if n.starts_with("protect") => "/nacos/v1/ns/service",
            _ => INSTANCE,
        };
        let r = api.call(c.method, path, &c.params).await;
        assert_eq!(r.status, c.status, "{}: {}", c.name, r.body);
        assert!(r.body.contains(c.body_has), "{}: {}", c.name, r.body);
    }

    // Invalid UTF-8 in the query string and in a form body.
    let r = api
        .raw(
            "POST",
            "/nacos/v1/ns/instance?serviceName=%ff%fe&ip=10.0.0.1&port=80",
            "text/plain",
            vec![],
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("UTF-8"), "{}", r.body);
    let r = api
        .raw(
            "POST",
            INSTANCE,
            "application/x-www-form-urlencoded",
            b"serviceName=stable&ip=10.0.0.1&port=80&metadata=\xff\xfe".to_vec(),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = api
        .raw(
            "POST",
            "/nacos/v1/ns/instance?serviceName=stable&ip=10.0.0.1&port=80&metadata=%zz",
            "text/plain",
            vec![],
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);

    // Oversized body → 413.
    let mut big = b"serviceName=stable&ip=10.0.0.1&port=80&metadata=".to_vec();
    big.extend(std::iter::repeat_n(b'a', 2 * 1024 * 1024));
    let r = api
        .raw("POST", INSTANCE, "application/x-www-form-urlencoded", big)
        .await;
    assert_eq!(r.status, 413, "{}", r.body);

    // Unknown API → 404 and unknown method → 405, with Nacos's error document.
    let r = api.call("GET", "/nacos/v1/ns/no/such/thing", &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json()["message"],
        "no such api:GET:/nacos/v1/ns/no/such/thing"
    );
    let r = api.call("POST", "/nacos/v1/ns/instance/list", &[]).await;
    assert_eq!(r.status, 405);
    assert_eq!(
        r.json()["message"],
        "no such api:POST:/nacos/v1/ns/instance/list"
    );

    // Nothing stored changed, and the node still answers.
    assert_eq!(snapshot(&api).await, before);
    assert!(node.try_exit_status().unwrap().is_none(), "node died");
    let m = api.call("GET", "/metrics", &[]).await.body;
    assert!(
        !m.lines()
            .any(|l| l.starts_with("nacre_http_requests_total") && l.contains("status=\"5")),
        "a client mistake produced a 5xx:\n{m}"
    );
}

/// A health checker's path and headers go into the request line and headers of probes the
/// node sends: CR/LF, spaces or a full URL there are refused with 400 (a client cannot make
/// nodes send bytes of its choosing), and the stored checker is unchanged.
#[tokio::test]
async fn a_health_checker_cannot_smuggle_bytes_into_a_probe() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProcess::start(Path::new(env!("CARGO_BIN_EXE_nacre")), dir.path()).unwrap();
    node.wait_ready(Duration::from_secs(30)).unwrap();
    let api = Api::new(node.addr());
    let r = api
        .instance(
            "POST",
            &[
                ("serviceName", "probed"),
                ("ip", "127.0.0.2"),
                ("port", "80"),
                ("ephemeral", "false"),
            ],
        )
        .await;
    assert_eq!(r.body, "ok");
    let set = |checker: &'static str| {
        let api = api.clone();
        async move {
            api.call(
                "PUT",
                "/nacos/v1/ns/cluster",
                &[
                    ("serviceName", "probed"),
                    ("clusterName", "DEFAULT"),
                    ("checkPort", "80"),
                    ("useInstancePort4Check", "true"),
                    ("healthChecker", checker),
                ],
            )
            .await
        }
    };
    let checker = |api: Api| async move {
        api.call("GET", "/nacos/v1/ns/service", &[("serviceName", "probed")])
            .await
            .json()["clusters"]
            .to_string()
    };
    let before = checker(api.clone()).await;
    for (bad, says) in [
        (
            r#"{"type":"HTTP","path":"/ok HTTP/1.0\r\nHost: x\r\n\r\nGET /evil"}"#,
            "healthChecker.path",
        ),
        (r#"{"type":"HTTP","path":"/a\nb"}"#, "healthChecker.path"),
        (
            r#"{"type":"HTTP","path":"http://10.9.9.9/x"}"#,
            "healthChecker.path",
        ),
        (
            r#"{"type":"HTTP","path":"/ok","headers":"X-A:1\r\nX-Evil:2"}"#,
            "healthChecker.headers",
        ),
        (r#"{"type":"SMTP"}"#, "unknown health checker type"),
    ] {
        let r = set(bad).await;
        assert_eq!(r.status, 400, "{bad}: {r:?}");
        assert!(r.body.contains(says), "{bad}: {}", r.body);
    }
    assert_eq!(checker(api.clone()).await, before, "nothing stored");
    // A plain path is taken.
    let r = set(r#"{"type":"HTTP","path":"/health?x=1","headers":"X-A:1|X-B:2"}"#).await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"), "{r:?}");
    assert!(checker(api).await.contains("/health?x=1"));
    assert!(node.try_exit_status().unwrap().is_none(), "node died");
}
