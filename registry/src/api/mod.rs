//! The HTTP edge of a registry node: routes, shared parameter helpers and middleware.
//!
//! Handlers parse and validate parameters, call [`crate::node::Node`], and render; they never
//! touch a store directly. Two middlewares wrap every route: per-route metrics, and the Nacos
//! status gate that answers 503 while the node is not ready.

pub mod admin;
pub mod agent;
pub mod auth;
pub mod beat_body;
pub mod configs;
pub mod console;
pub mod error;
pub mod forward;
pub mod instance;
pub mod internal;
pub mod list_cache;
pub mod params;
pub mod relay;
pub mod render;
pub mod service;
pub mod source;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Router;
use nacre_ring::ServiceKey;

use crate::naming::model::DEFAULT_CLUSTER;
use crate::naming::validate;
use crate::node::Node;
use error::ApiError;
use params::Params;

/// Shared state of the HTTP layer.
pub struct App {
    /// The node's domain facade.
    pub node: Arc<Node>,
    /// The cluster secret internal callers must present.
    pub secret: String,
    /// Rendered list answers.
    pub lists: list_cache::ListCache,
    /// Fires when the node stops: held requests (the change feed) answer at once.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Failed logins per user and per address (rule A6 in [`crate::auth`]).
    pub login_throttle: crate::auth::throttle::LoginThrottle,
    /// Passwords proven recently (see [`crate::auth::password::Verified`]).
    pub verified: crate::auth::password::Verified,
    /// Wakes parked config listeners.
    pub configs: crate::configs::watch::ConfigWatch,
}

/// Plain `ok`, the body Nacos clients compare write answers with.
pub fn ok() -> Response {
    "ok".into_response()
}

/// A JSON answer.
pub fn json<T: serde::Serialize>(v: &T) -> Response {
    json_text(render::to_json(v))
}

/// `pageNo` (default 1) and `pageSize` (default 100, capped) of a paged listing, and Nacos's
/// `Page` document around one page of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Page number, from 1.
    pub no: usize,
    /// Items per page.
    pub size: usize,
}

impl Page {
    /// The page `p` asks for; a `pageSize` above `max_size` is cut to it.
    pub fn of(p: &params::Params, max_size: usize) -> Result<Page, ApiError> {
        let num = |name: &str, default: u64| -> Result<u64, ApiError> {
            match p.opt(name) {
                None => Ok(default),
                Some(v) => Ok(crate::naming::validate::positive(name, v, u32::MAX.into())?),
            }
        };
        Ok(Page {
            no: num("pageNo", 1)? as usize,
            size: (num("pageSize", 100)? as usize).min(max_size),
        })
    }

    /// This page's items out of `all`.
    pub fn slice<T>(&self, all: impl Iterator<Item = T>) -> impl Iterator<Item = T> {
        all.skip((self.no - 1).saturating_mul(self.size))
            .take(self.size)
    }

    /// The `Page` document: `items` (this page's) out of `total`.
    pub fn answer<T: serde::Serialize>(&self, total: usize, items: Vec<T>) -> Response {
        json(&serde_json::json!({
            "totalCount": total,
            "pageNumber": self.no,
            "pagesAvailable": total.div_ceil(self.size),
            "pageItems": items,
        }))
    }
}

/// A JSON answer from already serialised text.
pub fn json_text(body: String) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json;charset=UTF-8")],
        body,
    )
        .into_response()
}

/// The service a request names: `serviceName` (legacy `dom`), grouped with `groupName`, in
/// `namespaceId`.
pub fn service_key(p: &Params) -> Result<ServiceKey, ApiError> {
    let name = p
        .opt("serviceName")
        .or_else(|| p.opt("dom"))
        .ok_or_else(|| ApiError::bad_request("Param 'serviceName' is required."))?;
    Ok(ServiceKey::from_request(
        p.opt("namespaceId"),
        name,
        p.opt("groupName"),
    )?)
}

/// The first non-blank of the named cluster parameters, validated, defaulting to `DEFAULT`.
pub fn cluster_param(p: &Params, names: &[&str]) -> Result<String, ApiError> {
    match names.iter().find_map(|n| p.opt(n)) {
        Some(c) => {
            validate::cluster_name(c)?;
            Ok(c.to_string())
        }
        None => Ok(DEFAULT_CLUSTER.to_string()),
    }
}

fn naming_routes() -> Router<Arc<App>> {
    Router::new()
        .route(
            "/instance",
            get(instance::detail)
                .post(instance::register)
                .put(instance::update)
                .patch(instance::patch)
                .delete(instance::deregister),
        )
        .route("/instance/list", get(instance::list))
        .route("/instance/beat", put(instance::beat))
        .route(
            "/instance/metadata/batch",
            put(instance::batch_update_metadata).delete(instance::batch_delete_metadata),
        )
        .route(
            "/instance/statuses",
            get(instance::statuses).post(instance::statuses),
        )
        .route(
            "/service",
            get(service::detail)
                .post(service::create)
                .put(service::update)
                .delete(service::delete),
        )
        .route("/service/list", get(service::list))
        .route("/service/names", get(service::names))
        .route("/service/subscribers", get(service::subscribers))
        .route("/catalog/services", get(service::catalog_services))
        .route("/catalog/service", get(service::catalog_service))
        .route(
            "/catalog/instances",
            get(instance::catalog_instances).post(instance::catalog_instances),
        )
        .route("/cluster", put(service::update_cluster))
        .route("/health", put(admin::set_health))
        .route("/health/instance", put(admin::set_health))
        .route("/health/server", get(admin::health_server))
        .route("/health/checkers", get(admin::health_checkers))
        .nest("/operator", operator_routes())
        .nest("/ops", operator_routes())
}

fn operator_routes() -> Router<Arc<App>> {
    Router::new()
        .route("/metrics", get(admin::operator_metrics))
        .route("/switches", get(admin::switches).put(admin::update_switch))
        .route("/servers", get(admin::servers))
        .route(
            "/push/state",
            get(admin::push_state).post(admin::push_state),
        )
        .route("/distro/server", get(admin::distro_server))
}

/// Builds the node's full router. `internal` carries `/nacre/internal/…` routes (Raft).
pub fn router(app: Arc<App>, internal: Router) -> Router {
    let public = Router::new()
        .nest("/nacos/v1/ns", naming_routes())
        .route(
            "/nacos/v1/console/namespaces",
            get(admin::namespaces)
                .post(admin::create_namespace)
                .put(admin::update_namespace)
                .delete(admin::delete_namespace),
        )
        .route("/nacos/v1/console/health/liveness", get(admin::liveness))
        .route("/nacos/v1/console/health/readiness", get(admin::readiness))
        .route("/nacos/v1/core/cluster/nodes", get(admin::core_nodes))
        .route("/nacos/v1/core/cluster/nodes/self", get(admin::core_self))
        .route("/nacos/v1/core/cluster/health", get(admin::core_health))
        .route("/nacre/v1/cluster", get(admin::nacre_cluster))
        .route("/nacos/v1/auth/login", axum::routing::post(auth::login))
        .route(
            "/nacos/v1/auth/users/login",
            axum::routing::post(auth::login),
        )
        .route(
            "/nacos/v1/auth/users",
            get(auth::users)
                .post(auth::users)
                .put(auth::users)
                .delete(auth::users),
        )
        .route(
            "/nacos/v1/auth/roles",
            get(auth::roles).post(auth::roles).delete(auth::roles),
        )
        .route(
            "/nacos/v1/auth/permissions",
            get(auth::permissions)
                .post(auth::permissions)
                .delete(auth::permissions),
        )
        .route(
            configs::CONFIGS_PATH,
            get(configs::get)
                .post(configs::publish)
                .delete(configs::delete),
        )
        .route(
            configs::LISTENER_PATH,
            axum::routing::post(configs::listen).get(configs::listeners),
        )
        .route("/nacos/v1/cs/history", get(configs::history))
        .route("/nacos/v1/cs/history/previous", get(configs::previous))
        .route("/metrics", get(admin::prometheus))
        .route("/nacos", get(console::asset))
        .route("/nacos/", get(console::asset))
        .route("/nacos/index.html", get(console::asset))
        .route("/nacos/console/{file}", get(console::asset))
        .fallback(unknown_api)
        .method_not_allowed_fallback(wrong_method)
        .layer(axum::middleware::from_fn_with_state(app.clone(), gate))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            auth::guard,
        ));
    // Rule G2 is off unless configured: then requests do not pass the layer at all.
    let public = if app.node.overload().sheds() {
        public.layer(axum::middleware::from_fn_with_state(app.clone(), shed))
    } else {
        public
    };
    let public = public
        .layer(axum::middleware::from_fn_with_state(app.clone(), track))
        .with_state(app.clone());
    let secret: Arc<str> = Arc::from(app.secret.as_str());
    let beats = relay::routes(app.clone(), public.clone());
    public
        .merge(internal)
        .merge(internal::routes(app))
        .merge(beats)
        // Outermost: decides whether a connection from the peer reserve is served at all.
        .layer(axum::middleware::from_fn_with_state(
            secret,
            crate::listener::admit_reserve,
        ))
}

/// Unknown paths answer 404 and known paths with an unsupported method 405, both with the
/// Spring-style error document Nacos sends (`no such api:<METHOD>:<path>`). Nacos itself says
/// 501 here; a client mistake must never look like a server failure, and legacy clients only
/// branch on 2xx vs not.
async fn unknown_api(State(app): State<Arc<App>>, method: Method, req: Request) -> Response {
    answer_unknown(&app, StatusCode::NOT_FOUND, method, req.uri().path())
}

async fn wrong_method(State(app): State<Arc<App>>, method: Method, req: Request) -> Response {
    answer_unknown(
        &app,
        StatusCode::METHOD_NOT_ALLOWED,
        method,
        req.uri().path(),
    )
}

fn answer_unknown(app: &App, status: StatusCode, method: Method, path: &str) -> Response {
    error::error_document(
        status,
        &format!("no such api:{method}:{path}"),
        path,
        app.node.now_ms(),
    )
}

/// Nacos's status gate: while the node is not ready, naming requests get 503 so clients move
/// to another server. A ready node cut off from the majority of its cluster still serves
/// reads, but answers instance writes 503 too (rule O3 in [`crate::distro`]): a beat it took
/// could reach no owner the cluster agrees on, and the majority would expire that instance.
/// Peers (holding the cluster secret) and the health probe pass.
async fn gate(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    match gate_refusal(&app, req.method(), req.uri().path(), req.headers()) {
        Some((message, marker)) => marked_refusal(message, marker),
        None => next.run(req).await,
    }
}

/// What [`gate`] answers a request instead of serving it: the message and the marker header
/// of its 503; `None` when it passes.
fn gate_refusal(
    app: &App,
    method: &Method,
    path: &str,
    headers: &axum::http::HeaderMap,
) -> Option<(&'static str, &'static str)> {
    let gated = (path.starts_with("/nacos/v1/ns/") || path.starts_with("/nacos/v1/cs/"))
        && !path.ends_with("/operator/metrics")
        && !path.ends_with("/ops/metrics");
    if !gated {
        return None;
    }
    // Read only when a rule needs it: most requests are neither forwarded nor refused.
    let peer = || crate::peer::secret_matches(headers, &app.secret);
    if !app.node.distro().is_loaded()
        && headers.contains_key(crate::peer::FORWARDED_HEADER)
        && peer()
    {
        // Rule S2: a forwarded write would meet an empty store here; the forwarder has the data.
        return Some((
            "this node is still loading its start-up data",
            crate::peer::NOT_LOADED_HEADER,
        ));
    }
    let refusal = if !app.node.is_ready() {
        "server is DOWNnow, please try again later!"
    } else if method != Method::GET
        && path.starts_with("/nacos/v1/ns/instance")
        && !app.node.has_standing()
    {
        "this server is cut off from the majority of its cluster; please try another one"
    } else {
        return None;
    };
    // Only a peer holding the cluster secret gets past; a User-Agent proves nothing.
    (!peer()).then_some((refusal, nacre_ring::wire::NOT_READY_HEADER))
}

/// Marks a read turned away under overload, so [`track`] counts it without logging it.
#[derive(Debug, Clone, Copy)]
struct Shed;

/// Rule G2 of [`crate::overload`]: while the node runs late, a share of client reads is
/// answered 503 at once, before authentication, parsing or rendering, so the CPU left goes to
/// beats and writes.
async fn shed(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    if crate::overload::sheddable(req.method(), req.uri().path()) && app.node.overload().shed_next()
    {
        return shed_answer(&app);
    }
    next.run(req).await
}

/// The 503 of a read turned away under rule G2 of [`crate::overload`]: Nacos's status, a
/// `Retry-After`, counted.
fn shed_answer(app: &App) -> Response {
    app.node.metrics().overload_shed.inc();
    let mut r = ApiError::unavailable(crate::overload::SHED_BODY).into_response();
    r.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from_static("1"),
    );
    r.extensions_mut().insert(Shed);
    r
}

/// The gate's 503, with the `marker` header telling nacre's other tier what to do about it
/// (apply the write itself, or try another node).
fn marked_refusal(message: &str, marker: &'static str) -> Response {
    let mut r = ApiError::unavailable(message).into_response();
    r.headers_mut()
        .insert(marker, axum::http::HeaderValue::from_static("1"));
    r
}

/// Counts and times every request by its route template.
async fn track(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = req.method().clone();
    let api = format!("{method} {route}");
    let start = Instant::now();
    let resp = next.run(req).await;
    let shed = resp.extensions().get::<Shed>().is_some();
    record(&app, &api, resp.status(), start, shed);
    resp
}

/// What [`track`] records of one served request: `api` is its method and route template.
fn record(app: &App, api: &str, status: StatusCode, start: Instant, shed: bool) {
    let m = app.node.metrics();
    m.latency
        .with_label_values(&[api])
        .observe(start.elapsed().as_secs_f64());
    m.requests.with_label_values(&[api, status.as_str()]).inc();
    if status.is_server_error() && !shed {
        tracing::warn!(%api, %status, "request failed");
    }
}
