//! Authentication and authorization against a real node with auth on (rules in
//! `registry/src/auth/mod.rs`), attacked the way Nacos was: no credential, a wrong password, a
//! forged or stale token, a user without permission on the namespace, trust-me headers
//! (CVE-2021-29441) and oddly spelled paths (its bypass). Every refusal must be a 403 that
//! changes nothing.

use std::path::Path;
use std::time::Duration;

use nacre_testkit::http::{Api, Reply};
use nacre_testkit::NodeProcess;

const ADMIN_PASSWORD: &str = "first-admin-pw";

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_nacre"))
}

/// A standalone node with auth on, ready and bootstrapped (the admin can log in).
async fn start(dir: &Path) -> (NodeProcess, Api) {
    let (node, api, _) = NodeProcess::start_with_auth(bin(), dir, ADMIN_PASSWORD, &[])
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    (node, api)
}

async fn login(api: &Api, user: &str, pass: &str) -> Reply {
    api.form(
        "POST",
        "/nacos/v1/auth/login",
        &[("username", user), ("password", pass)],
    )
    .await
}

async fn token(api: &Api, user: &str, pass: &str) -> String {
    let r = login(api, user, pass).await;
    assert_eq!(r.status, 200, "{r:?}");
    r.json()["accessToken"]
        .as_str()
        .expect("a token")
        .to_string()
}

fn register_q<'a>(svc: &'a str, ns: &'a str, ip: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("serviceName", svc),
        ("namespaceId", ns),
        ("ip", ip),
        ("port", "80"),
    ]
}

/// Admin sets up bob with read-write on namespace `ns1` only.
async fn bob(api: &Api, admin: &str) {
    for (method, path, q) in [
        (
            "POST",
            "/nacos/v1/auth/users",
            vec![("username", "bob"), ("password", "bob-pw-123")],
        ),
        (
            "POST",
            "/nacos/v1/auth/roles",
            vec![("role", "dev"), ("username", "bob")],
        ),
        (
            "POST",
            "/nacos/v1/auth/permissions",
            vec![("role", "dev"), ("resource", "ns1:*:*"), ("action", "rw")],
        ),
    ] {
        let mut q = q.clone();
        q.push(("accessToken", admin));
        let r = api.call(method, path, &q).await;
        assert_eq!(r.status, 200, "{method} {path}: {r:?}");
    }
}

#[tokio::test]
async fn login_gives_a_token_clients_can_use_three_ways() {
    let dir = tempfile::tempdir().unwrap();
    let (node, api) = start(dir.path()).await;
    let r = login(&api, "nacos", ADMIN_PASSWORD).await;
    let doc = r.json();
    assert_eq!(doc["tokenTtl"], 18000);
    assert_eq!(doc["globalAdmin"], true);
    let t = doc["accessToken"].as_str().unwrap().to_string();
    // The other login path the Java client uses.
    let again = api
        .form(
            "POST",
            "/nacos/v1/auth/users/login",
            &[("username", "nacos"), ("password", ADMIN_PASSWORD)],
        )
        .await;
    assert_eq!(again.status, 200);

    let q = register_q("authd", "public", "10.0.0.1");
    // No credential: refused, nothing stored.
    let r = api.instance("POST", &q).await;
    assert_eq!((r.status, r.body.as_str()), (403, "unknown user!"));
    // accessToken parameter (Java, Python).
    let mut with_token = q.clone();
    with_token.push(("accessToken", &t));
    assert_eq!(api.instance("POST", &with_token).await.body, "ok");
    // Bearer header.
    let bearer = reqwest::Client::new()
        .get(format!(
            "http://{}/nacos/v1/ns/instance/list?serviceName=authd",
            node.addr()
        ))
        .header("Authorization", format!("Bearer {t}"))
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 200);
    // username + password on every request (the npm client).
    let r = api
        .list(&[
            ("serviceName", "authd"),
            ("username", "nacos"),
            ("password", ADMIN_PASSWORD),
        ])
        .await;
    assert_eq!(r["hosts"][0]["ip"], "10.0.0.1");
    // Open routes stay open.
    for p in [
        "/nacos/v1/console/health/readiness",
        "/nacos/v1/console/health/liveness",
        "/metrics",
    ] {
        assert_eq!(api.call("GET", p, &[]).await.status, 200, "{p}");
    }
}

#[tokio::test]
async fn wrong_forged_and_stale_credentials_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, api) = start(dir.path()).await;
    let admin = token(&api, "nacos", ADMIN_PASSWORD).await;
    bob(&api, &admin).await;
    assert_eq!(login(&api, "bob", "wrong").await.status, 403);
    assert_eq!(login(&api, "nobody", "x").await.status, 403);

    let list = |t: String| {
        let api = api.clone();
        async move {
            api.call(
                "GET",
                "/nacos/v1/ns/service/list",
                &[
                    ("pageNo", "1"),
                    ("pageSize", "10"),
                    ("namespaceId", "ns1"),
                    ("accessToken", &t),
                ],
            )
            .await
        }
    };
    let bob_t = token(&api, "bob", "bob-pw-123").await;
    assert_eq!(list(bob_t.clone()).await.status, 200);
    // Forged: the claims swapped for the admin's, the signature kept; and a token-shaped
    // string signed with a key of our own.
    let (_, sig) = bob_t.split_once('.').unwrap();
    let (admin_claims, _) = admin.split_once('.').unwrap();
    for forged in [
        format!("{admin_claims}.{sig}"),
        "eyJ1IjoibmFjb3MiLCJnIjoxLCJlIjo5OTk5OTk5OTk5fQ.c2lnbmVk".to_string(),
        "SecretKey012345678901234567890123456789012345678901234567890123456789".to_string(),
    ] {
        let r = list(forged.clone()).await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (403, "token invalid!"),
            "{forged}"
        );
    }
    // A changed password makes every earlier token stale.
    let r = api
        .call(
            "PUT",
            "/nacos/v1/auth/users",
            &[
                ("username", "bob"),
                ("newPassword", "bob-pw-456"),
                ("accessToken", &admin),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(list(bob_t.clone()).await.status, 403);
    let bob_t2 = token(&api, "bob", "bob-pw-456").await;
    assert_eq!(list(bob_t2.clone()).await.status, 200);
    // A deleted user's tokens are dead, and a new user of that name is someone else.
    let r = api
        .call(
            "DELETE",
            "/nacos/v1/auth/users",
            &[("username", "bob"), ("accessToken", &admin)],
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(list(bob_t2.clone()).await.status, 403);
    // Too many failures lock the name out for a while, even with the right password then.
    for _ in 0..5 {
        assert_eq!(login(&api, "nacos", "guess").await.status, 403);
    }
    let locked = login(&api, "nacos", ADMIN_PASSWORD).await;
    assert_eq!(locked.status, 403);
    assert!(locked.body.contains("too many failed logins"), "{locked:?}");
}

#[tokio::test]
async fn permission_on_one_namespace_gives_nothing_in_another() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, api) = start(dir.path()).await;
    let admin = token(&api, "nacos", ADMIN_PASSWORD).await;
    bob(&api, &admin).await;
    let t = token(&api, "bob", "bob-pw-123").await;
    let with = |mut q: Vec<(&'static str, &'static str)>, t: &str| {
        let t = t.to_string();
        let api = api.clone();
        async move {
            q.push(("accessToken", Box::leak(t.into_boxed_str())));
            api.instance("POST", &q).await
        }
    };
    assert_eq!(
        with(register_q("s", "ns1", "10.0.0.1"), &t).await.body,
        "ok"
    );
    let r = with(register_q("s", "public", "10.0.0.2"), &t).await;
    assert_eq!((r.status, r.body.as_str()), (403, "authorization failed!"));
    // Nothing was stored in `public`.
    let l = api
        .list(&[("serviceName", "s"), ("accessToken", &admin)])
        .await;
    assert_eq!(l["hosts"].as_array().map(Vec::len), Some(0), "{l}");
    // Reads, subscriptions and catalog routes of the other namespace too.
    for (path, q) in [
        ("/nacos/v1/ns/instance/list", vec![("serviceName", "s")]),
        (
            "/nacos/v1/ns/instance/list",
            vec![
                ("serviceName", "s"),
                ("udpPort", "41299"),
                ("clientIP", "127.0.0.1"),
            ],
        ),
        (
            "/nacos/v1/ns/catalog/services",
            vec![("pageNo", "1"), ("pageSize", "10")],
        ),
        (
            "/nacos/v1/ns/service/list",
            vec![("pageNo", "1"), ("pageSize", "10")],
        ),
    ] {
        let mut q = q.clone();
        q.push(("accessToken", &t));
        let r = api.call("GET", path, &q).await;
        assert_eq!(r.status, 403, "{path} {q:?}: {r:?}");
    }
    // Operator writes are the admin's too.
    let r = api
        .call(
            "PUT",
            "/nacos/v1/ns/operator/switches",
            &[
                ("entry", "pushEnabled"),
                ("value", "false"),
                ("accessToken", &t),
            ],
        )
        .await;
    assert_eq!(r.status, 403, "{r:?}");
    // And user management is the admin's.
    let r = api
        .call(
            "POST",
            "/nacos/v1/auth/users",
            &[
                ("username", "eve"),
                ("password", "eve-pw-123"),
                ("accessToken", &t),
            ],
        )
        .await;
    assert_eq!(r.status, 403);
}

#[tokio::test]
async fn cve_style_headers_and_odd_paths_never_grant_access() {
    let dir = tempfile::tempdir().unwrap();
    let (node, api) = start(dir.path()).await;
    // The admin's token first: the attacks below send `username` and `password` (the new
    // user's), which count as failed logins and lock this address out of logging in.
    let admin = token(&api, "nacos", ADMIN_PASSWORD).await;
    let client = reqwest::Client::new();
    let base = format!("http://{}", node.addr());
    // CVE-2021-29441: a server User-Agent; the 1.4.1 identity header; both at once.
    for (name, value) in [
        ("User-Agent", "Nacos-Server"),
        ("serverIdentity", "security"),
        ("x-nacre-cluster-secret", "guessed-secret-0123456789"),
    ] {
        let r = client
            .post(format!(
                "{base}/nacos/v1/auth/users?username=evil&password=evil-pw-123"
            ))
            .header(name, value)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{name}: {value}");
        let r = client
            .get(format!("{base}/nacos/v1/auth/users?pageNo=1&pageSize=9"))
            .header(name, value)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{name}: {value}");
    }
    // The 1.4.1 bypass: paths the router would not map must not pass unchecked.
    for path in [
        "//nacos/v1/auth/users?username=evil&password=evil-pw-123",
        "/nacos/v1/auth/users/?username=evil&password=evil-pw-123",
        "/nacos/v1/auth//users?username=evil&password=evil-pw-123",
        "/nacos/v1/auth%2Fusers?username=evil&password=evil-pw-123",
        "/nacos/v1/auth/users;x=y?username=evil&password=evil-pw-123",
        "/NACOS/v1/auth/users?username=evil&password=evil-pw-123",
        "/nacos/v1/ns//instance/list?serviceName=s",
        "/nacos/v1/ns/instance/list/?serviceName=s",
    ] {
        let r = client.post(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 403, "{path}");
    }
    // Nothing was created.
    let users = api
        .call("GET", "/nacos/v1/auth/users", &[("accessToken", &admin)])
        .await
        .json();
    assert_eq!(users["totalCount"], 1, "{users}");
}

/// A 3-node cluster with auth on behind a gateway, with a client of the gateway and the
/// administrator's token.
async fn behind_a_gateway(
    root: &Path,
) -> (
    nacre_testkit::cluster::TestCluster,
    nacre_testkit::gateway::GatewayProcess,
    Api,
    String,
) {
    use nacre_testkit::cluster::ClusterOptions;
    use nacre_testkit::gateway::GatewayProcess;
    let opts = ClusterOptions::new(3)
        .fast()
        .with_env("NACRE_AUTH_ENABLED", "true")
        .with_env("NACRE_AUTH_ADMIN_PASSWORD", ADMIN_PASSWORD);
    let (c, gw) = GatewayProcess::with_cluster(bin(), root, opts, Duration::from_secs(60))
        .expect("cluster and gateway");
    let api = Api::new(gw.addr());
    let admin = api
        .login_when_ready("nacos", ADMIN_PASSWORD, Duration::from_secs(60))
        .await
        .expect("admin login");
    (c, gw, api, admin)
}

/// Behind a gateway: a cached list answer is served only to a credential a node accepted for
/// that service within the last second. Without a credential, with a wrong password, or with
/// the token of a user without permission, the answer cached for someone else is refused; a
/// deleted user's token stops being served within a second; and the gateway passes
/// credentials through to the nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_never_serves_a_cached_answer_past_the_check() {
    let root = tempfile::tempdir().unwrap();
    let (mut c, gw, api, admin) = behind_a_gateway(root.path()).await;
    let mut q = register_q("cached", "public", "10.0.0.9");
    q.push(("accessToken", &admin));
    assert_eq!(api.instance("POST", &q).await.body, "ok");
    let hits = || {
        let api = api.clone();
        async move {
            api.metric("nacre_gateway_cache_total{result=\"hit\"}")
                .await
        }
    };
    let list = |q: Vec<(&'static str, String)>| {
        let api = api.clone();
        async move {
            let mut q2: Vec<(&str, &str)> = vec![("serviceName", "cached")];
            q2.extend(q.iter().map(|(k, v)| (*k, v.as_str())));
            api.call("GET", "/nacos/v1/ns/instance/list", &q2).await
        }
    };
    for _ in 0..5 {
        let r = list(vec![("accessToken", admin.clone())]).await;
        assert_eq!(r.json()["hosts"][0]["ip"], "10.0.0.9", "{r:?}");
    }
    assert!(
        hits().await >= 1.0,
        "the admin's repeated lists are cache hits"
    );
    // Others get the node's answer, not the cached one.
    bob(&api, &admin).await;
    let bob_t = token(&api, "bob", "bob-pw-123").await;
    for q in [
        vec![],
        vec![("accessToken", "forged.token".to_string())],
        vec![
            ("username", "nacos".to_string()),
            ("password", "wrong".to_string()),
        ],
        vec![("accessToken", bob_t.clone())],
        vec![("accessToken", " ".to_string())],
    ] {
        let r = list(q.clone()).await;
        assert_eq!(r.status, 403, "{q:?}: {r:?}");
    }
    // Carol may read public; once deleted, her token is refused within a second, cached
    // answer or not.
    for (method, path, q) in [
        (
            "POST",
            "/nacos/v1/auth/users",
            vec![("username", "carol"), ("password", "carol-pw-1")],
        ),
        (
            "POST",
            "/nacos/v1/auth/roles",
            vec![("role", "reader"), ("username", "carol")],
        ),
        (
            "POST",
            "/nacos/v1/auth/permissions",
            vec![
                ("role", "reader"),
                ("resource", "public:*:*"),
                ("action", "r"),
            ],
        ),
    ] {
        let mut q = q.clone();
        q.push(("accessToken", &admin));
        assert_eq!(api.call(method, path, &q).await.status, 200, "{path}");
    }
    let carol = token(&api, "carol", "carol-pw-1").await;
    for _ in 0..3 {
        assert_eq!(list(vec![("accessToken", carol.clone())]).await.status, 200);
    }
    let r = api
        .call(
            "DELETE",
            "/nacos/v1/auth/users",
            &[("username", "carol"), ("accessToken", &admin)],
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    tokio::time::sleep(nacre_gateway::authmemo::MEMO_TTL + Duration::from_millis(200)).await;
    let r = list(vec![("accessToken", carol)]).await;
    assert_eq!(r.status, 403, "a deleted user: {r:?}");
    drop(gw);
    c.kill9(0).unwrap();
}

/// Behind a gateway a beat is relayed to its node in a batch, and there it passes the same
/// auth check as a beat sent to the node itself (rule B1 of the node's `api::relay`: with auth
/// on, a relayed beat goes through the router): no credential or another namespace's user is
/// a 403 that beats nothing, the admin's token beats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_the_gateway_a_relayed_beat_needs_a_credential() {
    let root = tempfile::tempdir().unwrap();
    let (mut c, gw, api, admin) = behind_a_gateway(root.path()).await;
    let mut q = register_q("beaten", "public", "10.0.0.8");
    q.push(("accessToken", &admin));
    assert_eq!(api.instance("POST", &q).await.body, "ok");
    bob(&api, &admin).await;
    let bob_t = token(&api, "bob", "bob-pw-123").await;
    let relayed = "nacre_gateway_beats_relayed_total";
    let before = api.metric(relayed).await;
    let routed = "nacre_relayed_requests_total{via=\"router\"}";
    let routed_before = c.metric_sum(routed).await;
    let beat = |extra: Vec<(&'static str, String)>| {
        let api = api.clone();
        async move {
            let mut q: Vec<(&str, &str)> = register_q("beaten", "public", "10.0.0.8");
            q.extend(extra.iter().map(|(k, v)| (*k, v.as_str())));
            api.call("PUT", "/nacos/v1/ns/instance/beat", &q).await
        }
    };
    for extra in [vec![], vec![("accessToken", bob_t.clone())]] {
        let r = beat(extra.clone()).await;
        assert_eq!(r.status, 403, "{extra:?}: {r:?}");
    }
    let r = beat(vec![("accessToken", admin.clone())]).await;
    assert_eq!(
        (r.status, r.json()["code"].clone()),
        (200, 10200.into()),
        "{r:?}"
    );
    assert_eq!(
        api.metric(relayed).await,
        before + 3.0,
        "all three beats went in batches"
    );
    assert_eq!(
        c.metric_sum(routed).await,
        routed_before + 3.0,
        "with auth on, each passed the node's router (rule B1)"
    );
    drop(gw);
    c.kill9(0).unwrap();
}

/// A token past its lifetime is refused ("token expired!") and changes nothing; logging in
/// again gives a working one.
#[tokio::test]
async fn an_expired_token_is_refused_and_a_new_login_works() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, api, admin) = NodeProcess::start_with_auth(
        bin(),
        dir.path(),
        ADMIN_PASSWORD,
        &[("NACRE_AUTH_TOKEN_TTL_S", "5")],
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    let mut q = register_q("expiring", "public", "10.0.0.7");
    q.push(("accessToken", &admin));
    assert_eq!(api.instance("POST", &q).await.body, "ok");
    tokio::time::sleep(Duration::from_millis(6_500)).await;
    let mut q = register_q("expiring", "public", "10.0.0.8");
    q.push(("accessToken", &admin));
    let r = api.instance("POST", &q).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (403, "token expired!"),
        "{r:?}"
    );
    let fresh = token(&api, "nacos", ADMIN_PASSWORD).await;
    let l = api
        .list(&[("serviceName", "expiring"), ("accessToken", &fresh)])
        .await;
    let ips: Vec<_> = l["hosts"]
        .as_array()
        .map(|h| h.iter().map(|i| i["ip"].clone()).collect())
        .unwrap_or_default();
    assert_eq!(ips, vec![serde_json::json!("10.0.0.7")], "{l}");
}

/// Behind a gateway, failed logins lock out the client that made them (the address the
/// gateway asserts), not the gateway's address: another client behind the same gateway still
/// logs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_the_gateway_failed_logins_lock_out_their_client_only() {
    let root = tempfile::tempdir().unwrap();
    let (mut c, gw, _api, _admin) = behind_a_gateway(root.path()).await;
    let from = |last: u8| {
        reqwest::Client::builder()
            .local_address(std::net::IpAddr::from([127, 0, 0, last]))
            .build()
            .unwrap()
    };
    let login = |client: reqwest::Client, user: &'static str, pass: &'static str| {
        let url = format!("http://{}/nacos/v1/auth/login", gw.addr());
        async move {
            let r = client
                .post(url)
                .form(&[("username", user), ("password", pass)])
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        }
    };
    // Different made-up users, so only the address can be what locks.
    for user in ["u1", "u2", "u3", "u4", "u5"] {
        assert_eq!(login(from(31), user, "guess").await.0, 403);
    }
    let (status, body) = login(from(31), "nacos", ADMIN_PASSWORD).await;
    assert_eq!(status, 403);
    assert!(body.contains("too many failed logins"), "{body}");
    let (status, body) = login(from(32), "nacos", ADMIN_PASSWORD).await;
    assert_eq!(status, 200, "another client behind the gateway: {body}");
    c.kill9(0).unwrap();
}

/// Configs are under the same model: permission on `ns1` lets a user publish, read and listen
/// to configs in tenant `ns1` and nothing in the public namespace; without credentials
/// nothing at all.
#[tokio::test]
async fn config_permissions_follow_the_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, api) = start(dir.path()).await;
    let admin = token(&api, "nacos", ADMIN_PASSWORD).await;
    bob(&api, &admin).await;
    let t = token(&api, "bob", "bob-pw-123").await;
    let publish = |tenant: Option<&'static str>, tok: Option<String>| {
        let api = api.clone();
        async move {
            let mut q = vec![
                ("dataId".to_string(), "app.yaml".to_string()),
                ("group".to_string(), "G".to_string()),
                ("content".to_string(), "a: 1".to_string()),
            ];
            q.extend(tenant.map(|t| ("tenant".to_string(), t.to_string())));
            q.extend(tok.map(|t| ("accessToken".to_string(), t)));
            let q: Vec<(&str, &str)> = q.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            api.call("POST", "/nacos/v1/cs/configs", &q).await
        }
    };
    assert_eq!(publish(Some("ns1"), Some(t.clone())).await.body, "true");
    for (tenant, tok) in [(None, Some(t.clone())), (Some("ns1"), None)] {
        let r = publish(tenant, tok.clone()).await;
        assert_eq!(r.status, 403, "{tenant:?} {:?}: {r:?}", tok.is_some());
    }
    let read = |tenant: &'static str| {
        let api = api.clone();
        let t = t.clone();
        async move {
            api.call(
                "GET",
                "/nacos/v1/cs/configs",
                &[
                    ("dataId", "app.yaml"),
                    ("group", "G"),
                    ("tenant", tenant),
                    ("accessToken", &t),
                ],
            )
            .await
        }
    };
    assert_eq!(read("ns1").await.body, "a: 1");
    assert_eq!(read("public").await.status, 403);
    // The listener names no group or data id: the tenant decides.
    for (tenant, want) in [("ns1", 200), ("", 403)] {
        let r = api
            .form(
                "POST",
                &format!("/nacos/v1/cs/configs/listener?accessToken={t}"),
                &[
                    (
                        "Listening-Configs",
                        &format!("app.yaml\u{2}G\u{2}\u{2}{tenant}\u{1}"),
                    ),
                    ("tenant", tenant),
                ],
            )
            .await;
        assert_eq!(r.status, want, "listener in {tenant:?}: {r:?}");
    }
    // An import is judged by the namespace it writes into: bob may not import into public.
    let import = |ns: &'static str| {
        let (api, t) = (api.clone(), t.clone());
        async move {
            api.upload(
                &format!("/nacos/v1/cs/configs?import=true&namespace={ns}&accessToken={t}"),
                &[],
                Some(("x.zip", b"not a zip".as_slice())),
            )
            .await
        }
    };
    assert_eq!(import("public").await.status, 403);
    // A clone into ns1 (now created) of a config bob cannot read (in public) is refused too.
    let r = api
        .call(
            "POST",
            "/nacos/v1/console/namespaces",
            &[
                ("customNamespaceId", "ns1"),
                ("namespaceName", "ns1"),
                ("namespaceDesc", ""),
                ("accessToken", &admin),
            ],
        )
        .await;
    assert_eq!(r.body, "true", "{r:?}");
    assert_eq!(
        api.call(
            "POST",
            "/nacos/v1/cs/configs",
            &[
                ("dataId", "hidden"),
                ("group", "G"),
                ("content", "s3cret"),
                ("accessToken", &admin)
            ],
        )
        .await
        .body,
        "true"
    );
    let hidden = api
        .call(
            "GET",
            "/nacos/v1/cs/configs",
            &[
                ("search", "accurate"),
                ("dataId", "hidden"),
                ("group", "G"),
                ("pageNo", "1"),
                ("pageSize", "10"),
                ("accessToken", &admin),
            ],
        )
        .await
        .json()["pageItems"][0]["id"]
        .as_u64()
        .unwrap();
    let r = api
        .raw(
            "POST",
            &format!("/nacos/v1/cs/configs?clone=true&tenant=ns1&accessToken={t}"),
            "application/json",
            format!(r#"[{{"cfgId": {hidden}}}]"#).into_bytes(),
        )
        .await;
    assert_eq!(
        r.status, 403,
        "a clone must not read around permissions: {r:?}"
    );
    // Into ns1 bob may import: past the permission check, the file itself is refused.
    let r = import("ns1").await;
    assert_eq!(
        (r.status, r.json()["code"].clone()),
        (400, 100_004.into()),
        "{r:?}"
    );
    // Nothing was published in public.
    let r = api
        .call(
            "GET",
            "/nacos/v1/cs/configs",
            &[
                ("dataId", "app.yaml"),
                ("group", "G"),
                ("accessToken", &admin),
            ],
        )
        .await;
    assert_eq!(r.status, 404, "{r:?}");
}

/// Rule L6 of the gateway's config listeners: with auth on, a node checks each poll's
/// credential before the gateway holds it. No credential and a forged token get the node's
/// 403; the administrator's poll is held by the gateway (no node holds it) and fires on a
/// publish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_the_gateway_a_config_listener_is_checked_by_a_node_then_held_at_the_edge() {
    let root = tempfile::tempdir().unwrap();
    let (c, _gw, api, admin) = behind_a_gateway(root.path()).await;
    let publish = |content: &'static str| {
        let (api, admin) = (api.clone(), admin.clone());
        async move {
            api.call(
                "POST",
                "/nacos/v1/cs/configs",
                &[
                    ("dataId", "l6"),
                    ("group", "G"),
                    ("content", content),
                    ("accessToken", &admin),
                ],
            )
            .await
        }
    };
    assert_eq!(publish("v1").await.body, "true");
    let entry = format!(
        "l6\u{2}G\u{2}{}\u{1}",
        nacre_registry::configs::md5_hex("v1")
    );
    for path in [
        "/nacos/v1/cs/configs/listener".to_string(),
        "/nacos/v1/cs/configs/listener?accessToken=forged".to_string(),
    ] {
        let r = api
            .form("POST", &path, &[("Listening-Configs", &entry)])
            .await;
        assert_eq!(r.status, 403, "{path}: {r:?}");
    }
    let held = {
        let (api, admin, entry) = (api.clone(), admin.clone(), entry.clone());
        tokio::spawn(async move {
            api.listen_configs_with(&entry, Some(30_000), &[("accessToken", &admin)])
                .await
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while api.metric("nacre_gateway_config_listeners").await != 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "never held at the gateway"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for i in 0..c.len() {
        let parked = Api::new(c.node(i).addr())
            .metric("nacre_config{field=\"parked_listeners\"}")
            .await;
        assert_eq!(parked, 0.0, "node {i} holds a listener");
    }
    assert_eq!(publish("v2").await.body, "true");
    let r = held.await.unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "l6%02G%01\n"), "{r:?}");
}
