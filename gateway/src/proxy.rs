//! The pingora `ProxyHttp` glue: each phase hands its decision to [`crate::route`],
//! [`crate::upstreams`] or [`crate::cache`] and keeps only per-request state here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use http::header;
use nacre_ring::configs::ConfigKey;
use nacre_ring::wire::{CONFIG_LISTENER_PATH, CONFIG_LISTENER_READ_TIMEOUT_MS, HEADER_PREFIX};
use nacre_ring::wire::{CONFIG_REVISION_HEADER, NOT_READY_HEADER};
use nacre_ring::ServiceKey;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::authmemo::Fingerprint;
use crate::cache::{Stored, Ticket};
use crate::configs::reads::Read;
use crate::configs::PollRequest;
use crate::lists::{self, Lookup, Plan};
use crate::metrics::RouteLabel;
use crate::route::{self, Local, Params, Variant};
use crate::upstreams::{Tried, Upstream, View};
use crate::Shared;

/// Largest form body the gateway reads to find the service (pingora's retry buffer: a body
/// it reads must be replayable to the node).
pub const MAX_ROUTED_BODY: usize = 64 * 1024;
/// Largest answer kept for the cache; bigger ones are passed through uncached.
const MAX_CACHED_ANSWER: usize = 8 * 1024 * 1024;
/// What nodes answer JSON with (a cached answer looks exactly like a fresh one).
/// Largest config listener body: 10,000 keys of the longest names, percent-encoded.
const MAX_LISTENER_BODY: usize = 8 * 1024 * 1024;
pub(crate) const JSON: &str = "application/json;charset=UTF-8";
/// The content type of the gateway's own plain-text answers.
pub(crate) const TEXT: &str = "text/plain; charset=utf-8";

/// The proxy service.
#[derive(Debug, Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
}

impl Gateway {
    /// A proxy over `shared`.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

/// A list answer being fetched for the cache.
#[derive(Debug)]
struct Fill {
    variant: Variant,
    ticket: Ticket,
    body: BytesMut,
    ok: bool,
    /// The credential the request carried: a node's 200 proves it for this service.
    credential: Option<Fingerprint>,
}

/// Per-request state.
#[derive(Debug)]
pub struct Ctx {
    route: RouteLabel,
    key: Option<ServiceKey>,
    invalidates: bool,
    fill: Option<Fill>,
    /// The view the request is routed in, taken once: `tried` indexes into it, so retries
    /// must not switch to a newer one.
    view: Option<Arc<View>>,
    tried: Tried,
    upstream: Option<Arc<Upstream>>,
    started: Option<Instant>,
    /// A config long-poll: the node holds it, so its read timeout is the long one.
    long_poll: bool,
    /// A config read being fetched for the cache.
    config_fill: Option<ConfigFill>,
    /// A config write: cached config reads must not outlive it.
    config_write: bool,
}

/// A config read being fetched for the cache (rule L7 of [`crate::configs`]).
#[derive(Debug)]
struct ConfigFill {
    key: ConfigKey,
    ticket: crate::configs::reads::Ticket,
    /// The answer's status, headers, md5 and revision (its body comes in `body`), once it is
    /// known to be cacheable.
    head: Option<Read>,
    body: BytesMut,
}

impl Ctx {
    fn new() -> Self {
        Self {
            route: RouteLabel::Any,
            key: None,
            invalidates: false,
            fill: None,
            view: None,
            tried: Tried::default(),
            upstream: None,
            started: None,
            long_poll: false,
            config_fill: None,
            config_write: false,
        }
    }
}

/// Headers of a node's config read that are not replayed from the cache (the length is the
/// gateway's own; the rest are per connection).
const NOT_REPLAYED: [http::header::HeaderName; 4] = [
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::CONNECTION,
    header::DATE,
];

/// What of a node's config read is kept for the cache (rule L7 of [`crate::configs`]): status
/// 200 with its `Content-MD5`, or 404 (md5 `""`), with the revision the node read at; `None`
/// for anything else.
fn cacheable_config_answer(r: &ResponseHeader) -> Option<Read> {
    let text = |name: &str| r.headers.get(name).and_then(|v| v.to_str().ok());
    let revision = text(CONFIG_REVISION_HEADER)?.parse::<u64>().ok()?;
    let status = r.status.as_u16();
    let md5 = match status {
        200 => text("content-md5")?.to_string(),
        404 => String::new(),
        _ => return None,
    };
    let headers = r
        .headers
        .iter()
        .filter(|(name, _)| {
            !NOT_REPLAYED.contains(name)
                && name.as_str() != "keep-alive"
                && !name.as_str().starts_with(HEADER_PREFIX)
        })
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    Some(Read {
        status,
        headers,
        body: Bytes::new(),
        md5,
        revision,
    })
}

/// Writes a complete answer from the gateway itself.
async fn respond(
    session: &mut Session,
    status: u16,
    content_type: &str,
    body: Bytes,
) -> Result<()> {
    respond_with(session, status, content_type, body, &[]).await
}

/// [`respond`] with `extra` headers.
async fn respond_with(
    session: &mut Session,
    status: u16,
    content_type: impl TryInto<header::HeaderValue>,
    body: Bytes,
    extra: &[(&str, &str)],
) -> Result<()> {
    let mut h = ResponseHeader::build(status, Some(2 + extra.len()))?;
    h.insert_header(header::CONTENT_TYPE, content_type)?;
    h.insert_header(
        header::CONTENT_LENGTH,
        itoa::Buffer::new().format(body.len()),
    )?;
    for (name, value) in extra {
        h.insert_header(name.to_string(), *value)?;
    }
    session.write_response_header(Box::new(h), false).await?;
    session.write_response_body(Some(body), true).await
}

fn is_form(req: &RequestHeader) -> bool {
    route::is_form(req.headers.get(header::CONTENT_TYPE).map(|v| v.as_bytes()))
}

/// Whether the request announces a body.
fn has_body(req: &RequestHeader) -> bool {
    let declared = req
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(n) => n > 0,
        None => req.headers.contains_key(header::TRANSFER_ENCODING),
    }
}

fn client_ip(session: &Session) -> Option<std::net::IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

impl Gateway {
    /// The refusal for a client over its rate limit. Liveness, readiness and metrics stay
    /// open: probes and scrapers come from few addresses and must not be refused.
    fn over_rate(&self, session: &Session) -> Option<String> {
        self.shared.limiter.as_ref()?;
        let path = session.req_header().uri.path();
        if matches!(
            route::local(path),
            Some(Local::Health | Local::Ready | Local::Metrics)
        ) {
            return None;
        }
        self.shared.over_rate(client_ip(session)?)
    }

    async fn serve_local(&self, session: &mut Session, local: Local) -> Result<()> {
        let shared = &self.shared;
        match local {
            Local::ServerList => self.server_list(session).await,
            Local::Metrics => {
                shared.cache.sync();
                shared
                    .metrics
                    .config_keys
                    .set(i64::try_from(shared.config_md5s.len()).unwrap_or(i64::MAX));
                shared
                    .metrics
                    .cache_services
                    .set(i64::try_from(shared.cache.services()).unwrap_or(i64::MAX));
                let text = shared.metrics.render();
                respond(session, 200, "text/plain; version=0.0.4", Bytes::from(text)).await
            }
            Local::Health => {
                respond(
                    session,
                    200,
                    JSON,
                    Bytes::from_static(b"{\"status\":\"UP\"}"),
                )
                .await
            }
            Local::Ready => {
                let view = shared.upstreams.view();
                let n = view.upstreams().iter().filter(|u| u.is_usable()).count();
                // With the cache off no feed is needed, so every needed one is followed.
                let followed = view.feeds_ok() || !shared.cache.enabled();
                let body = Bytes::from(format!(
                    "{{\"status\":\"{}\",\"nodes\":{n},\"feedsFollowed\":{followed},\"cache\":{}}}",
                    if n > 0 { "UP" } else { "DOWN" },
                    shared.cache.enabled()
                ));
                respond(session, if n > 0 { 200 } else { 503 }, JSON, body).await
            }
            Local::Hidden => respond(session, 404, TEXT, Bytes::from_static(b"not found")).await,
            Local::Status => {
                let auth = session
                    .req_header()
                    .headers
                    .get(header::AUTHORIZATION)
                    .cloned();
                let status = crate::status::status(shared, auth.as_ref()).await;
                let body = serde_json::to_vec(&status).unwrap_or_default();
                respond(session, 200, JSON, Bytes::from(body)).await
            }
            Local::Console(asset) => {
                let body = Bytes::from_static(asset.body);
                let headers = nacre_console::HEADERS;
                respond_with(session, 200, asset.content_type, body, &headers).await
            }
        }
    }

    /// `GET /nacos/serverlist`: the advertised gateways, held when asked (rule E2 of
    /// `nacre_config::serverlist`). The list is fixed for the gateway's life, so a held read
    /// ends at its deadline or when the gateway stops.
    async fn server_list(&self, session: &mut Session) -> Result<()> {
        use nacre_config::serverlist::{Hold, DIGEST_HEADER};
        let shared = &self.shared;
        let req = session.req_header();
        let asked = req.headers.get(DIGEST_HEADER).and_then(|v| v.to_str().ok());
        if let Some(hold) = Hold::of(req.uri.query(), asked) {
            if !hold.answer_now(&shared.server_list_digest) {
                tokio::select! {
                    () = tokio::time::sleep(hold.wait) => {}
                    () = shared.stopping.cancelled() => {}
                }
            }
        }
        let digest = [(DIGEST_HEADER, shared.server_list_digest.as_str())];
        respond_with(session, 200, TEXT, shared.server_list.clone(), &digest).await
    }

    /// A config read answered from the cache, or marked to fill it; a config write marked to
    /// drop the cached reads (rule L7 of [`crate::configs`]). Always `Ok(true)` when answered.
    async fn config_request(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let shared = &self.shared;
        let Some(reads) = &shared.config_reads else {
            return Ok(false);
        };
        let req = session.req_header();
        if req.method != http::Method::GET {
            ctx.config_write = true;
            return Ok(false);
        }
        let Some(key) = route::cacheable_config_read(
            req.uri.query().unwrap_or(""),
            req.headers.contains_key("vipserver-tag"),
        ) else {
            return Ok(false);
        };
        if shared.auth_required() || !ctx.view.insert(shared.upstreams.view()).feeds_ok() {
            return Ok(false);
        }
        if let Some(read) = reads.get(&key, &shared.config_md5s) {
            shared.metrics.config_read_hits.inc();
            ctx.route = RouteLabel::Cache;
            let mut h = ResponseHeader::build(read.status, Some(read.headers.len() + 1))?;
            for (name, value) in &read.headers {
                h.append_header(name.clone(), value.clone())?;
            }
            h.insert_header(
                header::CONTENT_LENGTH,
                itoa::Buffer::new().format(read.body.len()),
            )?;
            session.write_response_header(Box::new(h), false).await?;
            session
                .write_response_body(Some(read.body.clone()), true)
                .await?;
            return Ok(true);
        }
        shared.metrics.config_read_misses.inc();
        ctx.config_fill = Some(ConfigFill {
            key,
            ticket: reads.begin(),
            head: None,
            body: BytesMut::new(),
        });
        Ok(false)
    }

    /// Answers a config listener poll at the gateway (see [`crate::configs`]).
    async fn hold_listener(&self, session: &mut Session) -> Result<()> {
        self.shared.metrics.config_listeners_proxied.inc();
        let mut body = BytesMut::new();
        while let Some(chunk) = session.as_downstream_mut().read_request_body().await? {
            if body.len() + chunk.len() > MAX_LISTENER_BODY {
                // The rest of the body is unread: the connection cannot carry another request.
                session.set_keepalive(None);
                let msg = format!("request body over {MAX_LISTENER_BODY} bytes");
                return respond(session, 413, TEXT, Bytes::from(msg)).await;
            }
            body.extend_from_slice(&chunk);
        }
        let client = client_ip(session);
        let req = session.req_header();
        let query = req.uri.query().unwrap_or("");
        let parsed = PollRequest::parse(query, body.freeze(), &req.headers, client);
        let answer = crate::configs::poll::answer(&self.shared, parsed).await;
        let extra = answer.headers();
        respond_with(
            session,
            answer.status,
            answer.content_type,
            answer.body,
            extra,
        )
        .await
    }

    /// Reads a form body so its parameters can route the request; pingora replays it to the
    /// node from its retry buffer.
    async fn read_form_body(&self, session: &mut Session) -> Result<Option<Bytes>> {
        session.as_downstream_mut().enable_retry_buffering();
        let mut body = BytesMut::new();
        while let Some(chunk) = session.as_downstream_mut().read_request_body().await? {
            if body.len() + chunk.len() > MAX_ROUTED_BODY {
                return Ok(None);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Some(body.freeze()))
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::new()
    }

    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {
        // pingora's default adds a (disabled) compression module that still runs its filters on
        // every request; nodes answer uncompressed and so does the gateway.
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        if let Some(refusal) = self.over_rate(session) {
            ctx.route = RouteLabel::Local;
            respond(session, 429, TEXT, Bytes::from(refusal)).await?;
            return Ok(true);
        }
        let path = session.req_header().uri.path();
        if let Some(local) = route::local(path) {
            ctx.route = RouteLabel::Local;
            self.serve_local(session, local).await?;
            return Ok(true);
        }
        if path == CONFIG_LISTENER_PATH {
            if session.req_header().method == http::Method::GET {
                ctx.route = RouteLabel::Edge;
                let req = session.req_header();
                let query = req.uri.query().unwrap_or("").to_string();
                let a = crate::configs::listeners::query(&self.shared, &query, &req.headers).await;
                respond_with(session, a.status, a.content_type, a.body, &[]).await?;
                return Ok(true);
            }
            if session.req_header().method == http::Method::POST
                && self.shared.settings.hold_config_listeners
            {
                ctx.route = RouteLabel::Edge;
                self.hold_listener(session).await?;
                return Ok(true);
            }
            ctx.long_poll = true;
            return Ok(false);
        }
        if path == route::CONFIGS_PATH {
            return self.config_request(session, ctx).await;
        }
        if route::is_auth(path) {
            ctx.route = RouteLabel::Owner;
            ctx.key = Some(route::auth_key());
            return Ok(false);
        }
        if !route::is_naming(path) {
            return Ok(false);
        }
        let req = session.req_header();
        let query = req.uri.query().unwrap_or("");
        let params = Params::parse(query.as_bytes(), None);
        let auth = self.shared.auth_required();
        let source = client_ip(session);
        let plan_of = |params: &Params<'_>, req: &RequestHeader| {
            Plan::of(
                params,
                &req.method,
                req.uri.path(),
                &req.headers,
                source,
                auth,
            )
        };
        let plan = if params.has_service() || !(has_body(req) && is_form(req)) {
            plan_of(&params, req)
        } else {
            // The service is only in the form body: read it (the common case needs no copy
            // of the query, this one does, since reading borrows the session).
            let query = query.to_string();
            let Some(body) = self.read_form_body(session).await? else {
                ctx.route = RouteLabel::Local;
                // The rest of the body is unread: the connection cannot carry another request.
                session.set_keepalive(None);
                let msg = format!("request body over {MAX_ROUTED_BODY} bytes");
                respond(session, 413, TEXT, Bytes::from(msg)).await?;
                return Ok(true);
            };
            plan_of(
                &Params::parse(query.as_bytes(), Some(&body)),
                session.req_header(),
            )
        };
        let Some(key) = plan.key else {
            return Ok(false);
        };
        ctx.route = RouteLabel::Owner;
        ctx.invalidates = plan.invalidates;
        let shared = &self.shared;
        // With auth on, only a request with a credential may be answered from (or fill) the
        // cache, and only once a node accepted that credential for this service (see
        // `authmemo`).
        let Some(list) = plan
            .list
            .filter(|l| shared.cache.enabled() && (!auth || l.credential.is_some()))
        else {
            ctx.key = Some(key);
            return Ok(false);
        };
        let view = ctx.view.insert(shared.upstreams.view());
        match lists::lookup(shared, &key, &list, view) {
            Lookup::Hit(answer) => {
                shared.metrics.cache_hits.inc();
                ctx.route = RouteLabel::Cache;
                respond(session, 200, JSON, answer.to_bytes()).await?;
                return Ok(true);
            }
            Lookup::Bypass => {
                shared.metrics.cache_bypassed.inc();
                lists::reaching_node(shared, &key, &list);
                ctx.key = Some(key);
                return Ok(false);
            }
            Lookup::Miss => lists::reaching_node(shared, &key, &list),
        }
        shared.metrics.cache_misses.inc();
        ctx.fill = Some(Fill {
            variant: list.variant,
            ticket: shared.cache.begin(&key),
            body: BytesMut::new(),
            ok: false,
            credential: list.credential,
        });
        ctx.key = Some(key);
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let shared = &self.shared;
        let view = ctx.view.get_or_insert_with(|| shared.upstreams.view());
        if ctx.tried.any() {
            shared.metrics.retries.inc();
        }
        let up = shared
            .upstreams
            .pick(view, ctx.key.as_ref(), &mut ctx.tried)
            .ok_or_else(|| {
                Error::explain(ErrorType::HTTPStatus(503), "no registry node is ready")
            })?;
        let mut peer = Box::new(up.peer.clone());
        if ctx.long_poll {
            peer.options.read_timeout =
                Some(Duration::from_millis(CONFIG_LISTENER_READ_TIMEOUT_MS));
        }
        ctx.upstream = Some(up);
        ctx.started = Some(Instant::now());
        Ok(peer)
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // Only nacre's tiers set `x-nacre-*` headers: drop whatever a client sent.
        let foreign: Vec<_> = upstream_request
            .headers
            .keys()
            .filter(|k| k.as_str().starts_with(HEADER_PREFIX))
            .cloned()
            .collect();
        for name in foreign {
            upstream_request.remove_header(&name);
        }
        if let Some(ip) = client_ip(session) {
            let secret = self.shared.settings.cluster_secret.as_deref();
            // A write's reads of the service come to the node this write went to, by the same
            // pick: the owner need not wait for its peers (rule V3).
            let owner_routed = ctx.key.is_some() && ctx.invalidates;
            for (name, value) in route::client_headers(ip, secret, owner_routed) {
                upstream_request.insert_header(name, value)?;
            }
        }
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, _ctx: &mut Ctx) -> FailToProxy {
        // pingora's default answers an empty body; say what happened, as Nacos answers do.
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            _ => match e.esource() {
                ErrorSource::Upstream => 502,
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    _ => 400,
                },
                ErrorSource::Internal | ErrorSource::Unset => 500,
            },
        };
        if code > 0 {
            let why = match code {
                503 => "no registry node is ready".to_string(),
                502 => "no registry node answered".to_string(),
                400 => "malformed request".to_string(),
                _ => format!("gateway error: {}", e.etype().as_str()),
            };
            if let Err(err) = session
                .respond_error_with_body(code, Bytes::from(why))
                .await
            {
                tracing::debug!(error = %err, "cannot answer the client");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(up) = &ctx.upstream {
            tracing::debug!(upstream = %up.name, error = %e, "connect failed; trying the next node");
            up.mark_unusable();
        }
        e.set_retry(true);
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        // Every Nacos v1 naming write is idempotent (register and update are upserts,
        // deregister of a missing instance is fine, beats carry no counter), so a request whose
        // pooled connection turned out dead is replayed like a GET would be — as long as its
        // whole body is still at hand.
        let what = after_proxy_error(
            e.esource(),
            e.etype(),
            client_reused,
            session.as_downstream().retry_buffer_truncated(),
        );
        let mut e = e.more_context(format!("Peer: {peer}"));
        match what {
            ProxyError::GiveUp => e.set_retry(false),
            ProxyError::NodeGone => {
                if let Some(up) = &ctx.upstream {
                    up.mark_unusable();
                }
                e.set_retry(true);
            }
            ProxyError::ReplayIfStale => e.retry.decide_reuse(client_reused),
        }
        e
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if upstream_response.status == 503
            && upstream_response.headers.contains_key(NOT_READY_HEADER)
        {
            // The node is not ready (restarted under the same name, or without standing):
            // out of rotation until a probe says otherwise, and the request replayed on the
            // next node while nothing has reached the client yet.
            if let Some(up) = &ctx.upstream {
                up.mark_unusable();
            }
            if !session.as_downstream().retry_buffer_truncated() {
                let mut e = Error::explain(
                    ErrorType::HTTPStatus(503),
                    "the node is not ready; trying the next one",
                );
                e.set_retry(true);
                return Err(e);
            }
        }
        if let Some(key) = ctx.key.as_ref().filter(|_| ctx.invalidates) {
            crate::lists::written(&self.shared, key);
        }
        if let Some(fill) = &mut ctx.fill {
            fill.ok = upstream_response.status == 200;
            fill.body.clear();
        }
        if let Some(fill) = &mut ctx.config_fill {
            fill.head = cacheable_config_answer(upstream_response);
            fill.body.clear();
        }
        // Only the gateway reads it.
        upstream_response.remove_header(CONFIG_REVISION_HEADER);
        if ctx.config_write {
            if let Some(reads) = &self.shared.config_reads {
                // Before the writer hears "ok": its next read must not find the old content.
                reads.written();
            }
        }
        Ok(())
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        if let (Some(fill), Some(chunk)) = (&mut ctx.config_fill, body.as_ref()) {
            if fill.head.is_some() {
                if fill.body.len() + chunk.len() > crate::configs::reads::MAX_CACHED_READ {
                    fill.head = None;
                    fill.body = BytesMut::new();
                } else {
                    fill.body.extend_from_slice(chunk);
                }
            }
        }
        if let (Some(fill), Some(chunk)) = (&mut ctx.fill, body.as_ref()) {
            if fill.ok {
                if fill.body.len() + chunk.len() > MAX_CACHED_ANSWER {
                    fill.ok = false;
                    fill.body = BytesMut::new();
                } else {
                    fill.body.extend_from_slice(chunk);
                }
            }
        }
        Ok(None)
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let shared = &self.shared;
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        shared.metrics.request(ctx.route, status);
        if let (Some(up), Some(started)) = (&ctx.upstream, ctx.started) {
            up.latency.observe(started.elapsed().as_secs_f64());
        }
        if e.is_some() {
            return;
        }
        if let (Some(fill), Some(reads)) = (ctx.config_fill.take(), &shared.config_reads) {
            if let Some(head) = fill.head.filter(|h| h.status == status) {
                let read = Read {
                    body: fill.body.freeze(),
                    ..head
                };
                if reads.store(fill.ticket, fill.key, read) {
                    shared.metrics.config_read_stores.inc();
                }
            }
        }
        if let Some(fill) = ctx.fill.take() {
            if fill.ok && status == 200 {
                match shared
                    .cache
                    .store(fill.ticket, fill.variant, fill.body.freeze())
                {
                    Stored::Yes => shared.metrics.cache_stores.inc(),
                    Stored::Stale => shared.metrics.cache_stale_skips.inc(),
                }
                // The node checked this credential and answered: it may read this service.
                if let (Some(c), Some(key), true) =
                    (fill.credential, ctx.key.as_ref(), shared.auth_everywhere())
                {
                    shared.auth_memo.accepted(c, key);
                }
            }
        }
    }
}

/// What a failed proxied request means for its node and whether it is replayed.
#[derive(Debug, PartialEq, Eq)]
enum ProxyError {
    /// Not replayed: its body is no longer at hand, or the error came from the client's side
    /// (it hung up or half-closed, timed out, sent a malformed or over-long request). Nothing
    /// there is the node's fault, so it stays in rotation: before this rule, an overloaded
    /// gateway's clients giving up on proxied lists took the nodes out of rotation one by
    /// one, and beats had nowhere to go.
    GiveUp,
    /// A fresh connection to the node closed or reset before any answer: the node is going
    /// away (or a proxy in front of it could not reach it). Out of rotation, as a refused
    /// connect would be, and the request replayed on the next node.
    NodeGone,
    /// A pooled connection failed: replayed if it may have been stale (pingora's rule).
    ReplayIfStale,
}

/// The rule of [`Gateway::error_while_proxy`] for an error from `source`.
fn after_proxy_error(
    source: &ErrorSource,
    kind: &ErrorType,
    client_reused: bool,
    body_truncated: bool,
) -> ProxyError {
    let closed = matches!(
        kind,
        ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
    );
    if body_truncated || *source == ErrorSource::Downstream {
        ProxyError::GiveUp
    } else if closed && !client_reused {
        ProxyError::NodeGone
    } else {
        ProxyError::ReplayIfStale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_that_hangs_up_leaves_its_node_in_rotation_and_nothing_is_replayed() {
        use ErrorSource::{Downstream, Upstream};
        use ErrorType::{ConnectionClosed, ReadError, ReadTimedout};
        for kind in [ConnectionClosed, ReadError, ReadTimedout] {
            assert_eq!(
                after_proxy_error(&Downstream, &kind, false, false),
                ProxyError::GiveUp,
                "{kind:?}"
            );
        }
        assert_eq!(
            after_proxy_error(&Upstream, &ConnectionClosed, false, false),
            ProxyError::NodeGone
        );
        assert_eq!(
            after_proxy_error(&Upstream, &ReadError, true, false),
            ProxyError::ReplayIfStale
        );
        assert_eq!(
            after_proxy_error(&Upstream, &ConnectionClosed, false, true),
            ProxyError::GiveUp,
            "a body no longer at hand cannot be replayed"
        );
    }
}
