//! `/nacos/v1/ns/instance…` handlers: parse and validate, call the node, render.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;

use super::agent::ClientInfo;
use super::beat_body;
use super::error::ApiError;
use super::forward;
use super::list_cache::{Variant, SENTINEL_TIME};
use super::params::Params;
use super::render::{self, ListOptions};
use super::{cluster_param, json, ok, service_key, App};
use crate::naming::model::{Instance, InstanceKey};
use crate::naming::persistent::InstancePatch;
use crate::naming::validate;
use crate::node::{Beat, BeatReply};
use crate::push::Subscriber;

fn instance_key(p: &Params, cluster_names: &[&str]) -> Result<InstanceKey, ApiError> {
    let ip = p.required("ip")?;
    validate::ip(ip)?;
    let port = validate::port("port", p.required("port")?)?;
    Ok(InstanceKey {
        ip: ip.into(),
        port,
        cluster: cluster_param(p, cluster_names)?.into(),
    })
}

fn flag(p: &Params, name: &str, default: bool) -> bool {
    p.opt(name).map(validate::lenient_bool).unwrap_or(default)
}

/// The instance a register / update request describes (id and timestamps are the node's).
fn spec(p: &Params) -> Result<Instance, ApiError> {
    let id = instance_key(p, &["clusterName", "cluster"])?;
    if id.port == 0 {
        return Err(ApiError::bad_request(
            "Param 'port' is out of range: 0 (1-65535)",
        ));
    }
    let weight = match p.opt("weight") {
        Some(w) => validate::weight(w)?,
        None => 1.0,
    };
    let enabled = match p.opt("enabled").or_else(|| p.opt("enable")) {
        Some(v) => validate::lenient_bool(v),
        None => true,
    };
    let metadata = validate::metadata(p.opt("metadata").unwrap_or(""))?;
    Ok(Instance {
        ip: id.ip,
        port: id.port,
        cluster: id.cluster,
        weight,
        healthy: flag(p, "healthy", true),
        enabled,
        ephemeral: flag(p, "ephemeral", true),
        metadata: metadata.into(),
        instance_id: Default::default(),
        app: p.opt("app").unwrap_or("DEFAULT").into(),
        last_beat_ms: 0,
        marked: false,
    })
}

/// `POST /instance`: register.
pub async fn register(State(app): State<Arc<App>>, p: Params) -> Result<Response, ApiError> {
    let key = service_key(&p)?;
    if let Some(r) = forward::to_owner(&app, &key, &p).await {
        return Ok(r);
    }
    let spec = spec(&p)?;
    app.node
        .register(&key, spec, forward::ack(&app, &key, &p))
        .await?;
    Ok(ok())
}

/// `DELETE /instance`: deregister (idempotent).
pub async fn deregister(State(app): State<Arc<App>>, p: Params) -> Result<Response, ApiError> {
    let key = service_key(&p)?;
    if let Some(r) = forward::to_owner(&app, &key, &p).await {
        return Ok(r);
    }
    let id = instance_key(&p, &["clusterName", "cluster"])?;
    app.node
        .deregister(
            &key,
            &id,
            flag(&p, "ephemeral", true),
            forward::ack(&app, &key, &p),
        )
        .await?;
    Ok(ok())
}

/// `PUT /instance`: update (Java ≥ 1.0 clients) or upsert (everyone else).
pub async fn update(State(app): State<Arc<App>>, p: Params) -> Result<Response, ApiError> {
    let key = service_key(&p)?;
    if let Some(r) = forward::to_owner(&app, &key, &p).await {
        return Ok(r);
    }
    let spec = spec(&p)?;
    let must_exist = ClientInfo::parse(p.user_agent()).is_modern_java();
    app.node
        .update(&key, spec, must_exist, forward::ack(&app, &key, &p))
        .await?;
    Ok(ok())
}

/// `PATCH /instance`: change only the given fields.
pub async fn patch(State(app): State<Arc<App>>, p: Params) -> Result<Response, ApiError> {
    let key = service_key(&p)?;
    if let Some(r) = forward::to_owner(&app, &key, &p).await {
        return Ok(r);
    }
    let id = instance_key(&p, &["clusterName", "cluster"])?;
    let patch = InstancePatch {
        metadata: p.opt("metadata").map(validate::metadata).transpose()?,
        app: p.opt("app").map(str::to_string),
        weight: p.opt("weight").map(validate::weight).transpose()?,
        healthy: p.opt("healthy").map(validate::lenient_bool),
        enabled: p.opt("enabled").map(validate::lenient_bool),
    };
    app.node
        .patch(&key, &id, patch, forward::ack(&app, &key, &p))
        .await?;
    Ok(ok())
}

/// `GET /instance`: one instance's detail.
pub async fn detail(State(app): State<Arc<App>>, p: Params) -> Result<Response, ApiError> {
    let key = service_key(&p)?;
    let id = instance_key(&p, &["clusterName"])?;
    let grouped = key.grouped();
    let view = app
        .node
        .view(&key)
        .ok_or_else(|| ApiError::not_found(format!("no service {grouped} found!")))?;
    let in_cluster: Vec<_> = view
        .instances
        .iter()
        .filter(|i| i.cluster == id.cluster)
        .collect();
    if in_cluster.is_empty() {
        return Err(ApiError::not_found(format!(
            "no ips found for cluster {} in service {grouped}",
            id.cluster
        )));
    }
    let inst = in_cluster
        .iter()
        .find(|i| i.ip == id.ip && i.port == id.port)
        .ok_or_else(|| ApiError::not_found("no matched ip found!"))?;
    Ok(json(&serde_json::json!({
        "service": grouped,
        "ip": inst.ip,
        "port": inst.port,
        "clusterName": inst.cluster,
        "weight": inst.weight,
        "healthy": inst.healthy,
        "instanceId": inst.instance_id,
        "metadata": inst.metadata,
    })))
}

/// Where pushes to a subscriber go: its verified `source`, or the `clientIP` it `claimed`
/// where the node trusts that (or knows nothing better).
fn push_addr(
    app: &App,
    source: Option<IpAddr>,
    claimed: Option<&str>,
    udp_port: u16,
) -> Option<SocketAddr> {
    let claimed: Option<IpAddr> = claimed.and_then(|ip| ip.parse().ok());
    let ip = match (claimed, source) {
        (Some(c), _) if app.node.settings().push.trust_client_ip => c,
        (_, Some(s)) => s,
        (Some(c), None) => c,
        (None, None) => return None,
    };
    Some(SocketAddr::new(ip, udp_port))
}

/// A would-be push subscriber, as a list poll names it (or a gateway's note of one).
struct Wants<'a> {
    key: &'a nacre_ring::ServiceKey,
    clusters: &'a str,
    /// Its verified address, and the `clientIP` it claimed.
    source: Option<IpAddr>,
    claimed: Option<&'a str>,
    udp_port: u16,
    /// Its `User-Agent`, and whether that client version takes pushes.
    agent: &'a str,
    push_capable: bool,
    app: Option<&'a str>,
}

/// Subscribes `w` to pushes if it can take them (a UDP port, a client version that acks
/// pushes, an address to send to) and this node pushes; whether it was subscribed.
fn subscribe(app: &App, w: Wants<'_>) -> bool {
    if w.udp_port == 0 || !w.push_capable || app.node.push().is_none() {
        return false;
    }
    let Some(addr) = push_addr(app, w.source, w.claimed, w.udp_port) else {
        return false;
    };
    app.node.subscribe(Subscriber {
        key: w.key.clone(),
        clusters: w.clusters.to_string(),
        addr,
        agent: w.agent.to_string(),
        app: w.app.unwrap_or("unknown").to_string(),
    });
    true
}

/// Registers the push subscribers a gateway answered from its cache, each as its list poll
/// would have (see [`list`]); returns how many were registered.
pub fn subscribe_noted(app: &App, notes: Vec<nacre_ring::wire::SubscriberNote>) -> usize {
    notes
        .iter()
        .filter(|note| {
            subscribe(
                app,
                Wants {
                    key: &note.key,
                    clusters: &note.clusters,
                    source: note.source,
                    claimed: note.claimed.as_deref(),
                    udp_port: note.udp_port,
                    agent: &note.agent,
                    push_capable: ClientInfo::parse(&note.agent).push_capable(),
                    app: note.app.as_deref(),
                },
            )
        })
        .count()
}

/// `GET /instance/list`: the service-info document legacy clients poll.
pub async fn list(State(app): State<Arc<App>>, p: Params) -> Result<Response, ApiError> {
    let key = service_key(&p)?;
    let clusters = p.get("clusters").unwrap_or("");
    let healthy_only = p.opt("healthyOnly").is_some_and(validate::strict_bool);
    let udp_port = match p.opt("udpPort") {
        Some(v) => validate::port("udpPort", v)?,
        None => 0,
    };
    let agent = ClientInfo::parse(p.user_agent());
    let settings = app.node.settings();
    let mut cache_millis = settings.default_cache_millis;
    // Checked first: most polls do not subscribe, and need not verify their source.
    let subscribed = udp_port > 0
        && agent.push_capable()
        && subscribe(
            &app,
            Wants {
                key: &key,
                clusters,
                source: super::source::verified_source(&app, &p),
                claimed: p.opt("clientIP"),
                udp_port,
                agent: p.user_agent(),
                push_capable: true,
                app: p.opt("app"),
            },
        );
    if subscribed {
        cache_millis = settings.push_cache_millis;
    }
    let env = p.get("env").unwrap_or("");
    let variant = Variant {
        clusters,
        healthy_only,
        grouped_dom: agent.is_modern_java(),
        cache_millis,
        env,
    };
    // The generation is read before the view: a change racing this render bumps it past
    // what the cached copy is tagged with, so the copy is never served after the change.
    let generation = app.node.changes().generation(&key);
    let now_ms = app.node.now_ms();
    if let Some(body) = app.lists.get(&key, variant, generation, now_ms) {
        return Ok(super::json_text(body));
    }
    let view = app.node.view(&key);
    if view.as_ref().is_some_and(|v| !v.meta.enabled) {
        return Err(ApiError::internal("service is disabled now."));
    }
    let body = render::list_json(
        &key,
        view.as_ref(),
        ListOptions {
            clusters,
            healthy_only,
            grouped_dom: variant.grouped_dom,
            cache_millis,
            env,
            now_ms: SENTINEL_TIME,
        },
    );
    let body = app.lists.put(key, variant, generation, body, now_ms);
    Ok(super::json_text(body))
}

/// `PUT /instance/beat`: heartbeat.
pub async fn beat(State(app): State<Arc<App>>, p: Params) -> Result<Response, ApiError> {
    let key = service_key(&p)?;
    if let Some(r) = forward::to_owner(&app, &key, &p).await {
        return Ok(r);
    }
    let body = p.opt("beat").map(beat_body::parse).transpose()?;
    let cluster = match p.opt("clusterName") {
        Some(c) => {
            validate::cluster_name(c)?;
            c
        }
        None => crate::naming::model::DEFAULT_CLUSTER,
    };
    let port = match p.opt("port") {
        Some(v) => validate::port("port", v)?,
        None => 0,
    };
    let beat = Beat {
        ip: p.opt("ip").unwrap_or(""),
        port,
        cluster,
        body,
    };
    let reply = app
        .node
        .beat(&key, beat, forward::ack(&app, &key, &p))
        .await?;
    // Formatted directly: the answer to every beat, too hot to build a JSON tree for.
    Ok(super::json_text(match reply {
        BeatReply::Ok { interval_ms } => format!(
            r#"{{"clientBeatInterval":{interval_ms},"code":10200,"lightBeatEnabled":true}}"#
        ),
        BeatReply::NotFound { interval_ms } => {
            format!(r#"{{"clientBeatInterval":{interval_ms},"code":20404}}"#)
        }
    }))
}

/// `GET|POST /instance/statuses?key=[ns##]group@@svc`: health flags, used by peers.
pub async fn statuses(State(app): State<Arc<App>>, p: Params) -> Result<Response, ApiError> {
    let raw = p.required("key")?;
    let (ns, grouped) = raw
        .split_once(nacre_ring::NAMESPACE_SEPARATOR)
        .unwrap_or((nacre_ring::DEFAULT_NAMESPACE, raw));
    let key = nacre_ring::ServiceKey::from_request(Some(ns), grouped, None)?;
    let view = app
        .node
        .view(&key)
        .ok_or_else(|| ApiError::not_found(format!("service: {grouped} not found.")))?;
    let ips: Vec<String> = view
        .instances
        .iter()
        .map(|i| format!("{}:{}_{}", i.ip, i.port, i.healthy))
        .collect();
    Ok(json(&serde_json::json!({ "ips": ips })))
}

fn batch_targets(raw: &str) -> Result<Vec<(InstanceKey, bool)>, ApiError> {
    let bad = || ApiError::bad_request(format!("instances format incorrect: {raw}"));
    let v: serde_json::Value = serde_json::from_str(raw).map_err(|_| bad())?;
    let arr = v.as_array().ok_or_else(bad)?;
    let mut out = Vec::with_capacity(arr.len());
    for item in arr {
        let ip = item.get("ip").and_then(|v| v.as_str()).ok_or_else(bad)?;
        validate::ip(ip)?;
        let port = item
            .get("port")
            .and_then(|v| v.as_u64())
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(bad)?;
        let cluster = item
            .get("clusterName")
            .and_then(|v| v.as_str())
            .unwrap_or(crate::naming::model::DEFAULT_CLUSTER);
        validate::cluster_name(cluster)?;
        let ephemeral = match item.get("ephemeral") {
            None | Some(serde_json::Value::Null) => true,
            Some(serde_json::Value::Bool(b)) => *b,
            Some(serde_json::Value::String(s)) => validate::lenient_bool(s),
            Some(_) => return Err(bad()),
        };
        out.push((
            InstanceKey {
                ip: ip.into(),
                port,
                cluster: cluster.into(),
            },
            ephemeral,
        ));
    }
    Ok(out)
}

async fn batch_metadata(app: &App, p: &Params, remove: bool) -> Result<Response, ApiError> {
    let key = service_key(p)?;
    let metadata = validate::metadata(p.required("metadata")?)?;
    let targets = p.opt("instances").map(batch_targets).transpose()?;
    let kinds = match p.opt("consistencyType") {
        None => (true, true),
        Some(t) if t.eq_ignore_ascii_case("ephemeral") => (true, false),
        Some(t) if t.eq_ignore_ascii_case("persist") => (false, true),
        Some(t) => {
            return Err(ApiError::bad_request(format!(
                "consistencyType must be 'ephemeral' or 'persist', current: {t}"
            )))
        }
    };
    let updated = app
        .node
        .batch_metadata(&key, targets, kinds, &metadata, remove)
        .await?;
    Ok(json(&serde_json::json!({ "updated": updated })))
}

/// `PUT /instance/metadata/batch`: merge metadata keys into many instances.
pub async fn batch_update_metadata(
    State(app): State<Arc<App>>,
    p: Params,
) -> Result<Response, ApiError> {
    batch_metadata(&app, &p, false).await
}

/// `DELETE /instance/metadata/batch`: remove metadata keys from many instances.
pub async fn batch_delete_metadata(
    State(app): State<Arc<App>>,
    p: Params,
) -> Result<Response, ApiError> {
    batch_metadata(&app, &p, true).await
}

/// `GET /nacos/v1/ns/catalog/instances`: full instances of one cluster, paged.
pub async fn catalog_instances(
    State(app): State<Arc<App>>,
    p: Params,
) -> Result<Response, ApiError> {
    let key = service_key(&p)?;
    let cluster = p.required("clusterName")?;
    let page_no = validate::positive("pageNo", p.required("pageNo")?, 1_000_000)? as usize;
    let page_size = validate::positive("pageSize", p.required("pageSize")?, 10_000)? as usize;
    let view = app
        .node
        .view(&key)
        .ok_or_else(|| ApiError::not_found(format!("service {} is not found!", key.grouped())))?;
    if view.cluster_meta(cluster).is_none() {
        return Err(ApiError::not_found(format!(
            "cluster {cluster} is not found!"
        )));
    }
    let all: Vec<_> = view
        .instances
        .iter()
        .filter(|i| i.cluster == cluster)
        .collect();
    let list: Vec<_> = all
        .iter()
        .skip((page_no - 1).saturating_mul(page_size))
        .take(page_size)
        .map(|i| render::full_instance(i, &key))
        .collect();
    Ok(json(
        &serde_json::json!({ "list": list, "count": all.len() }),
    ))
}
