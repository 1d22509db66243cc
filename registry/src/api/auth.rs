//! The HTTP side of auth (rules in [`crate::auth`]): the guard every public route passes
//! through, login, and the user, role and permission APIs of Nacos 1.x.
//!
//! The guard reads the credential the way Nacos does (`Authorization: Bearer`, then the
//! `accessToken` parameter, then `username` + `password` parameters, which the npm client
//! sends on every request), decides what the route needs from one table ([`required`]), and
//! answers 403 with Nacos's messages when the caller does not have it. Requests carrying the
//! cluster secret are peers replaying what another node already checked.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use nacre_ring::{ServiceKey, DEFAULT_GROUP, DEFAULT_NAMESPACE};

use super::error::ApiError;
use super::params::{decode_form, is_form, Params};
use super::{json, App};
use crate::auth::model::Permission;
use crate::auth::{password, token, AuthCommand, AuthState};
use crate::naming::persistent::Command;

/// What a route needs from its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// Anyone (login, liveness, readiness, metrics).
    Open,
    /// Any authenticated user.
    User,
    /// An administrator.
    Admin,
    /// A permission on a resource: `r` or `w`.
    Resource(String, char),
}

/// The one table of what each route needs (rule A1). `pairs` are the request's query and
/// form parameters. Paths not named here need at least a user: nothing passes for being
/// unknown.
pub fn required(method: &Method, path: &str, pairs: &[(String, String)]) -> Need {
    let read = *method == Method::GET;
    match path {
        "/nacos/v1/auth/login"
        | "/nacos/v1/auth/users/login"
        | "/nacos/v1/console/health/liveness"
        | "/nacos/v1/console/health/readiness"
        | "/metrics" => Need::Open,
        // The console's files hold no data; the calls the page makes are checked.
        p if nacre_console::asset(p).is_some() => Need::Open,
        p if p.starts_with("/nacos/v1/auth/") => Need::Admin,
        "/nacos/v1/console/namespaces" if read => Need::User,
        "/nacos/v1/console/namespaces" => Need::Admin,
        p if p.starts_with("/nacos/v1/ns/operator/") || p.starts_with("/nacos/v1/ns/ops/") => {
            if read {
                Need::User
            } else {
                Need::Admin
            }
        }
        "/nacos/v1/ns/health/server" | "/nacos/v1/ns/health/checkers" => Need::User,
        p if p.starts_with("/nacos/v1/ns/") => {
            Need::Resource(naming_resource(pairs), if read { 'r' } else { 'w' })
        }
        // The listener is a read, though clients POST it.
        super::configs::LISTENER_PATH => Need::Resource(config_resource(pairs), 'r'),
        p if p.starts_with("/nacos/v1/cs/") => {
            Need::Resource(config_resource(pairs), if read { 'r' } else { 'w' })
        }
        _ => Need::User,
    }
}

/// The first non-blank value of parameter `k`, trimmed.
fn param<'a>(pairs: &'a [(String, String)], k: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(n, _)| n == k)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// `namespace:group:naming/service` for a naming request; what it does not name is `*`.
fn naming_resource(pairs: &[(String, String)]) -> String {
    let get = |k: &str| param(pairs, k);
    let name = get("serviceName").or_else(|| get("dom"));
    match name.map(|n| ServiceKey::from_request(get("namespaceId"), n, get("groupName"))) {
        Some(Ok(k)) => format!("{}:{}:naming/{}", k.namespace, k.group, k.service),
        // A malformed name is the handler's 400 to give, once the caller may ask at all.
        _ => format!(
            "{}:{}:naming/*",
            get("namespaceId").unwrap_or(DEFAULT_NAMESPACE),
            get("groupName").unwrap_or(if name.is_some() { DEFAULT_GROUP } else { "*" })
        ),
    }
}

/// `namespace:group:config/dataId` for a config request (the public namespace, `""` on the
/// wire, is `public` here as in naming resources); what it does not name is `*`.
fn config_resource(pairs: &[(String, String)]) -> String {
    let get = |k: &str| param(pairs, k);
    // An import names its target namespace `namespace`, everything else `tenant`.
    let named = if get("import") == Some("true") {
        get("namespace")
    } else {
        get("tenant")
    };
    let tenant = match crate::configs::model::normalize_tenant(named) {
        "" => DEFAULT_NAMESPACE,
        t => t,
    };
    format!(
        "{tenant}:{}:config/{}",
        get("group").unwrap_or("*"),
        get("dataId").unwrap_or("*")
    )
}

/// A credential as a request carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Credential {
    Token(String),
    Password(String, String),
    None,
}

fn credential(headers: &HeaderMap, pairs: &[(String, String)]) -> Credential {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.trim().is_empty())
    };
    if let Some(t) = bearer.or_else(|| get("accessToken")) {
        return Credential::Token(t.to_string());
    }
    match (get("username"), get("password")) {
        (Some(u), Some(p)) => Credential::Password(u.to_string(), p.to_string()),
        _ => Credential::None,
    }
}

/// The node's clock in seconds (tokens expire by it).
fn now_s(app: &App) -> u64 {
    app.node.now_ms() / 1000
}

/// The user a credential proves, or the 403 to answer.
async fn identify(app: &App, cred: Credential, source: &str) -> Result<String, ApiError> {
    match cred {
        Credential::None => Err(ApiError::forbidden("unknown user!")),
        Credential::Token(t) => {
            let now = now_s(app);
            with_auth(app, |st| {
                let key = st
                    .key
                    .as_deref()
                    .and_then(token::key_bytes)
                    .ok_or_else(|| ApiError::forbidden("token invalid!"))?;
                let claims =
                    token::verify(&key, &t, now).map_err(|e| ApiError::forbidden(e.to_string()))?;
                match st.users.get(&claims.user) {
                    Some(u) if u.generation == claims.generation => Ok(claims.user),
                    Some(_) => Err(ApiError::forbidden("token invalid!")),
                    None => Err(ApiError::forbidden("user not found!")),
                }
            })
        }
        Credential::Password(user, pass) => check_password(app, &user, &pass, source).await,
    }
}

/// Checks a password against the stored hash, throttled per user and per address (A6).
async fn check_password(
    app: &App,
    user: &str,
    pass: &str,
    source: &str,
) -> Result<String, ApiError> {
    let keys = [format!("u:{user}"), format!("ip:{source}")];
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let now = app.node.now_ms();
    if app.login_throttle.locked(&keys, now) {
        return Err(ApiError::forbidden(
            "too many failed logins; retry in a minute",
        ));
    }
    let found = with_auth(app, |st| {
        st.users
            .get(user)
            .map(|u| (u.password_hash.clone(), u.generation))
    });
    if let Some((_, generation)) = &found {
        if app.verified.known(user, pass, *generation, now) {
            return Ok(user.to_string());
        }
    }
    let hash = found.as_ref().map(|(h, _)| h.clone());
    let (pass_owned, stored) = (pass.to_string(), hash.clone());
    // Argon2 is slow on purpose: off the async workers. An unknown user costs the same.
    let ok = tokio::task::spawn_blocking(move || match stored {
        Some(h) => password::check(&pass_owned, &h),
        None => {
            let _ = password::hash(&pass_owned);
            false
        }
    })
    .await
    .unwrap_or(false);
    if ok {
        app.login_throttle.succeeded(keys[0]);
        if let Some((_, generation)) = found {
            app.verified.remember(user, pass, generation, now);
        }
        Ok(user.to_string())
    } else {
        app.login_throttle.failed(&keys, now);
        Err(ApiError::forbidden(if hash.is_some() {
            "unknown user!"
        } else {
            "user not found!"
        }))
    }
}

/// Runs `f` on the replicated auth state, in place (no copy of users and permissions per
/// request).
fn with_auth<R>(app: &App, f: impl FnOnce(&AuthState) -> R) -> R {
    app.node.persistent().read(|s| f(s.auth()))
}

/// The request's parameters (query, then a form body), and the request rebuilt with its body.
async fn read_pairs(app: &App, req: Request) -> Result<(Vec<(String, String)>, Request), ApiError> {
    let limit = app.node.settings().max_body_bytes;
    let (parts, body) = req.into_parts();
    let mut pairs = Vec::new();
    if let Some(q) = parts.uri.query() {
        decode_form(q.as_bytes(), &mut pairs)?;
    }
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::too_large(limit))?;
    if is_form(&parts.headers) && !bytes.is_empty() {
        // A body that is not a form is the handler's to refuse; the guard reads what it can.
        let _ = decode_form(&bytes, &mut pairs);
    }
    Ok((pairs, Request::from_parts(parts, Body::from(bytes))))
}

/// Middleware on every public route (rule A1).
pub async fn guard(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    if !app.node.settings().auth.enabled || crate::peer::secret_matches(req.headers(), &app.secret)
    {
        return next.run(req).await;
    }
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let (pairs, req) = match read_pairs(&app, req).await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let need = required(&method, &path, &pairs);
    if need == Need::Open {
        return next.run(req).await;
    }
    // Throttled by the same address login uses: behind a gateway, the client's, not the
    // gateway's (one client's failures must not lock out everyone behind it).
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<crate::listener::PeerAddr>>()
        .map(|c| c.0.addr);
    let source = super::source::source_of(&app, req.headers(), peer)
        .map(|ip| ip.to_string())
        .unwrap_or_default();
    let user = match identify(&app, credential(req.headers(), &pairs), &source).await {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    let allowed = with_auth(&app, |st| match &need {
        Need::Open | Need::User => true,
        Need::Admin => st.is_admin(&user),
        Need::Resource(resource, action) => st.permits(&user, resource, *action),
    });
    if !allowed {
        return ApiError::forbidden("authorization failed!").into_response();
    }
    // A handler touching more than the request names (a clone reads configs by id) checks
    // the rest against the same user.
    let mut req = req;
    req.extensions_mut().insert(Caller(user));
    next.run(req).await
}

/// The user the guard let through (absent when auth is off or for peers).
#[derive(Debug, Clone)]
pub struct Caller(pub String);

/// Whether `caller` may read config `key` (always, when auth is off: no caller).
pub fn may_read_config(
    app: &App,
    caller: Option<&Caller>,
    key: &crate::configs::ConfigKey,
) -> bool {
    let Some(Caller(user)) = caller else {
        return true;
    };
    let tenant = if key.tenant.is_empty() {
        DEFAULT_NAMESPACE
    } else {
        key.tenant.as_str()
    };
    let resource = format!("{tenant}:{}:config/{}", key.group, key.data_id);
    with_auth(app, |st| st.permits(user, &resource, 'r'))
}

/// `POST /nacos/v1/auth/login` (and `/nacos/v1/auth/users/login`).
pub async fn login(State(app): State<Arc<App>>, p: Params) -> Result<Response, ApiError> {
    let user = p.required("username")?;
    let pass = p.required("password")?;
    let source = super::source::verified_source(&app, &p)
        .map(|ip| ip.to_string())
        .unwrap_or_default();
    let user = check_password(&app, user, pass, &source).await?;
    let (key, generation, admin) = with_auth(&app, |st| {
        (
            st.key.as_deref().and_then(token::key_bytes),
            st.users.get(&user).map_or(0, |u| u.generation),
            st.is_admin(&user),
        )
    });
    let key = key.ok_or_else(|| ApiError::unavailable("auth is starting; retry shortly"))?;
    let ttl = app.node.settings().auth.token_ttl_s;
    let t = token::sign(
        &key,
        &token::Claims {
            user: user.clone(),
            generation,
            expires_s: now_s(&app) + ttl,
        },
    );
    let mut r = json(&serde_json::json!({
        "accessToken": t,
        "tokenTtl": ttl,
        "globalAdmin": admin,
    }));
    if let Ok(v) = HeaderValue::from_str(&format!("Bearer {t}")) {
        r.headers_mut().insert(header::AUTHORIZATION, v);
    }
    Ok(r)
}

fn ok_message(msg: &str) -> Response {
    json(&serde_json::json!({ "code": 200, "message": msg, "data": null }))
}

/// A user or role name: 1–64 visible characters.
fn name<'a>(p: &'a Params, param: &str) -> Result<&'a str, ApiError> {
    let v = p.required(param)?;
    if v.len() > 64 || !v.chars().all(|c| !c.is_control() && !c.is_whitespace()) {
        return Err(ApiError::bad_request(format!(
            "{param} must be 1 to 64 visible characters"
        )));
    }
    Ok(v)
}

/// A new password: 1–256 bytes.
fn new_password<'a>(p: &'a Params, param: &str) -> Result<&'a str, ApiError> {
    let v = p.required(param)?;
    if v.len() > 256 {
        return Err(ApiError::bad_request(format!("{param} is too long")));
    }
    Ok(v)
}

async fn hash_of(pass: &str) -> Result<String, ApiError> {
    let pass = pass.to_string();
    tokio::task::spawn_blocking(move || password::hash(&pass))
        .await
        .ok()
        .flatten()
        .ok_or_else(|| ApiError::internal("password hashing failed"))
}

/// Proposes `cmd` through Raft and answers Nacos's `{"code":200,"message":…}` once applied.
async fn command(app: &App, cmd: AuthCommand, done: &str) -> Result<Response, ApiError> {
    app.node.namespace_command(Command::Auth(cmd)).await?;
    Ok(ok_message(done))
}

/// One page of `items` in Nacos's page document.
fn page<T: serde::Serialize>(p: &Params, items: Vec<T>) -> Result<Response, ApiError> {
    let page = super::Page::of(p, 1_000)?;
    let total = items.len();
    Ok(page.answer(total, page.slice(items.into_iter()).collect()))
}

/// `GET|POST|PUT|DELETE /nacos/v1/auth/users`.
pub async fn users(
    State(app): State<Arc<App>>,
    method: Method,
    p: Params,
) -> Result<Response, ApiError> {
    match method {
        Method::GET => {
            let users: Vec<_> = with_auth(&app, |st| {
                st.users
                    .keys()
                    .map(|u| serde_json::json!({ "username": u, "password": "" }))
                    .collect()
            });
            page(&p, users)
        }
        Method::POST => {
            let user = name(&p, "username")?.to_string();
            let hash = hash_of(new_password(&p, "password")?).await?;
            command(
                &app,
                AuthCommand::CreateUser {
                    username: user,
                    password_hash: hash,
                },
                "create user ok!",
            )
            .await
        }
        Method::PUT => {
            let user = name(&p, "username")?.to_string();
            let hash = hash_of(new_password(&p, "newPassword")?).await?;
            command(
                &app,
                AuthCommand::SetPassword {
                    username: user,
                    password_hash: hash,
                },
                "update user ok!",
            )
            .await
        }
        _ => {
            let user = name(&p, "username")?.to_string();
            command(
                &app,
                AuthCommand::DeleteUser { username: user },
                "delete user ok!",
            )
            .await
        }
    }
}

/// `GET|POST|DELETE /nacos/v1/auth/roles`.
pub async fn roles(
    State(app): State<Arc<App>>,
    method: Method,
    p: Params,
) -> Result<Response, ApiError> {
    match method {
        Method::GET => {
            let only = p.opt("username");
            let roles: Vec<_> = with_auth(&app, |st| {
                st.roles
                    .iter()
                    .filter(|(_, u)| only.is_none_or(|o| o == u))
                    .map(|(r, u)| serde_json::json!({ "role": r, "username": u }))
                    .collect()
            });
            page(&p, roles)
        }
        Method::POST => {
            let (role, user) = (name(&p, "role")?, name(&p, "username")?);
            command(
                &app,
                AuthCommand::AddRole {
                    role: role.to_string(),
                    username: user.to_string(),
                },
                "add role ok!",
            )
            .await
        }
        _ => {
            let role = name(&p, "role")?.to_string();
            let user = p.opt("username").map(str::to_string);
            command(
                &app,
                AuthCommand::DeleteRole {
                    role,
                    username: user,
                },
                "delete role ok!",
            )
            .await
        }
    }
}

/// `GET|POST|DELETE /nacos/v1/auth/permissions`.
pub async fn permissions(
    State(app): State<Arc<App>>,
    method: Method,
    p: Params,
) -> Result<Response, ApiError> {
    if method == Method::GET {
        let only = p.opt("role");
        let items: Vec<_> = with_auth(&app, |st| {
            st.permissions
                .iter()
                .filter(|x| only.is_none_or(|o| o == x.role))
                .map(|x| serde_json::json!({ "role": x.role, "resource": x.resource, "action": x.action }))
                .collect()
        });
        return page(&p, items);
    }
    let role = name(&p, "role")?.to_string();
    let resource = p.required("resource")?;
    if resource.len() > 512 || resource.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "resource must be at most 512 characters",
        ));
    }
    let action = p.required("action")?;
    if !matches!(action, "r" | "w" | "rw") {
        return Err(ApiError::bad_request("action must be r, w or rw"));
    }
    let perm = Permission {
        role,
        resource: resource.to_string(),
        action: action.to_string(),
    };
    if method == Method::POST {
        command(&app, AuthCommand::AddPermission(perm), "add permission ok!").await
    } else {
        command(
            &app,
            AuthCommand::DeletePermission(perm),
            "delete permission ok!",
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a1_every_path_needs_something_and_naming_needs_its_resource() {
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(required(&post, "/nacos/v1/auth/login", &[]), Need::Open);
        assert_eq!(required(&get, "/nacos/v1/auth/users", &[]), Need::Admin);
        assert_eq!(required(&post, "/nacos/v1/auth/users/", &[]), Need::Admin);
        // The console's files are open; a name that is not one of them is not.
        assert_eq!(required(&get, "/nacos/", &[]), Need::Open);
        assert_eq!(required(&get, "/nacos/console/console.js", &[]), Need::Open);
        assert_eq!(required(&get, "/nacos/console/other.js", &[]), Need::User);
        assert_eq!(
            required(
                &get,
                "/nacos/v1/ns/instance/list",
                &pairs(&[("serviceName", "g@@s"), ("namespaceId", "n1")])
            ),
            Need::Resource("n1:g:naming/s".into(), 'r')
        );
        assert_eq!(
            required(
                &post,
                "/nacos/v1/ns/instance",
                &pairs(&[("serviceName", "s")])
            ),
            Need::Resource("public:DEFAULT_GROUP:naming/s".into(), 'w')
        );
        assert_eq!(
            required(
                &get,
                "/nacos/v1/ns/service/list",
                &pairs(&[("namespaceId", "n1")])
            ),
            Need::Resource("n1:*:naming/*".into(), 'r')
        );
        // Odd spellings never fall through to "open".
        for p in [
            "//nacos/v1/auth/login",
            "/nacos/v1/auth/login/",
            "/NACOS/v1/auth/login",
            "/nacos/v1/auth%2Flogin",
            "/nacos/v1/auth/login;x=y",
            "/nacre/v1/cluster",
            "/unknown",
        ] {
            assert_ne!(required(&post, p, &[]), Need::Open, "{p}");
        }
        assert_eq!(
            required(&put(), "/nacos/v1/ns/operator/switches", &[]),
            Need::Admin
        );
    }

    fn put() -> Method {
        Method::PUT
    }

    #[test]
    fn credentials_are_found_as_nacos_finds_them() {
        let mut h = HeaderMap::new();
        assert_eq!(credential(&h, &[]), Credential::None);
        let p = pairs(&[("username", "u"), ("password", "p")]);
        assert_eq!(
            credential(&h, &p),
            Credential::Password("u".into(), "p".into())
        );
        let p2 = pairs(&[("accessToken", "t1"), ("username", "u"), ("password", "p")]);
        assert_eq!(credential(&h, &p2), Credential::Token("t1".into()));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t0"));
        assert_eq!(credential(&h, &p2), Credential::Token("t0".into()));
        // `access_token` is not `accessToken` (alibaba/nacos#2616).
        let wrong = pairs(&[("access_token", "t")]);
        assert_eq!(credential(&HeaderMap::new(), &wrong), Credential::None);
    }
}
