//! Operator, health, cluster-view and console-namespace handlers.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::params::Params;
use super::{cluster_param, json, ok, service_key, App};
use crate::naming::model::{InstanceKey, Namespace};
use crate::naming::persistent::Command;
use crate::naming::validate;

/// Reads load average and memory use from procfs off the async workers; zeros elsewhere.
async fn system_load() -> (f64, f64, f64) {
    let load = tokio::fs::read_to_string("/proc/loadavg")
        .await
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0);
    let mem = tokio::fs::read_to_string("/proc/meminfo")
        .await
        .ok()
        .map(|s| {
            let field = |name: &str| -> f64 {
                s.lines()
                    .find(|l| l.starts_with(name))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0.0)
            };
            let total = field("MemTotal:");
            let avail = field("MemAvailable:");
            if total > 0.0 {
                1.0 - avail / total
            } else {
                0.0
            }
        })
        .unwrap_or(0.0);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get() as f64)
        .unwrap_or(1.0);
    // "cpu" is load per core: Nacos reports a usage fraction, and clients only display it.
    ((load / cores).min(1.0), load, mem)
}

/// `GET /operator/metrics`: what Java and Node clients probe for `"status":"UP"`.
pub async fn operator_metrics(State(app): State<Arc<App>>) -> Response {
    // Both counts walk every service: off the async workers (clients poll this route).
    let node = app.node.clone();
    let counts = tokio::task::spawn_blocking(move || (node.counts(), node.owned_counts())).await;
    let ((services, eph, per), (owned_services, owned_instances)) = counts.unwrap_or_default();
    let (cpu, load, mem) = system_load().await;
    let status = if app.node.is_ready() { "UP" } else { "DOWN" };
    json(&serde_json::json!({
        "status": status,
        "serviceCount": services,
        "instanceCount": eph + per,
        "raftNotifyTaskCount": 0,
        "responsibleServiceCount": owned_services,
        "responsibleInstanceCount": owned_instances,
        "cpu": cpu,
        "load": load,
        "mem": mem,
    }))
}

/// `GET /operator/switches`: the switch document with the values this node runs with.
pub async fn switches(State(app): State<Arc<App>>) -> Response {
    let s = app.node.settings();
    json(&serde_json::json!({
        "name": "00-00---000-NACOS_SWITCH_DOMAIN-000---00-00",
        "masters": null,
        "adWeightMap": {},
        "defaultPushCacheMillis": s.push_cache_millis,
        "clientBeatInterval": crate::naming::model::DEFAULT_BEAT_INTERVAL_MS,
        "defaultCacheMillis": s.default_cache_millis,
        "distroThreshold": 0.7,
        "healthCheckEnabled": true,
        "autoChangeHealthCheckEnabled": true,
        "distroEnabled": true,
        "enableStandalone": s.standalone,
        "pushEnabled": s.push.enabled,
        "checkTimes": 3,
        "httpHealthParams": {"max": 5000, "min": 500, "factor": 0.85},
        "tcpHealthParams": {"max": 5000, "min": 1000, "factor": 0.75},
        "mysqlHealthParams": {"max": 3000, "min": 2000, "factor": 0.65},
        "incrementalList": [],
        "serverStatusSynchronizationPeriodMillis": 2000,
        "serviceStatusSynchronizationPeriodMillis": 5000,
        "disableAddIP": false,
        "sendBeatOnly": false,
        "lightBeatEnabled": true,
        "limitedUrlMap": {},
        "distroServerExpiredMillis": 10000,
        "pushGoVersion": "0.1.0",
        "pushJavaVersion": "0.1.0",
        "pushPythonVersion": "0.4.3",
        "pushCVersion": "1.0.12",
        "pushCSharpVersion": "0.9.0",
        "enableAuthentication": false,
        "defaultInstanceEphemeral": true,
        "healthCheckWhiteList": [],
        "checksum": null,
    }))
}

/// `PUT /operator/switches`: nacre's switches come from its config file; say so plainly.
pub async fn update_switch(p: Params) -> Result<Response, ApiError> {
    let entry = p.required("entry")?;
    p.required("value")?;
    Err(ApiError::bad_request(format!(
        "switch '{entry}' cannot be changed at runtime on nacre; set it in the node's config file"
    )))
}

fn member_json(app: &App, m: &crate::membership::MemberView) -> serde_json::Value {
    let addr = &m.address;
    let (ip, port) = addr
        .rsplit_once(':')
        .map(|(h, p)| (h.to_string(), p.parse::<u16>().unwrap_or(0)))
        .unwrap_or((addr.clone(), 0));
    // Nacos reports a member that answers but is still starting as STARTING; nacre's probe
    // states map onto Nacos's UP / SUSPICIOUS / DOWN otherwise.
    let state = if m.state == nacre_ring::MemberState::Up && !m.ready {
        "STARTING"
    } else {
        m.state.as_str()
    };
    let fail = app
        .node
        .membership()
        .peer_status(addr)
        .map_or(0, |s| s.failures);
    serde_json::json!({
        "ip": ip,
        "port": port,
        "state": state,
        "extendInfo": {
            "lastRefreshTime": app.node.now_ms(),
            "raftPort": port.saturating_sub(1000).to_string(),
            "version": env!("CARGO_PKG_VERSION"),
            "site": "nacre",
        },
        "address": addr,
        "failAccessCnt": fail,
    })
}

fn members(app: &App) -> Vec<crate::membership::MemberView> {
    app.node.membership().members(app.node.is_ready())
}

/// `GET /operator/servers`: cluster members (`healthy=true`: only those serving).
pub async fn servers(State(app): State<Arc<App>>, p: Params) -> Response {
    let healthy_only = p.opt("healthy").is_some_and(validate::strict_bool);
    let list: Vec<_> = members(&app)
        .iter()
        .filter(|m| !healthy_only || (m.state == nacre_ring::MemberState::Up && m.ready))
        .map(|m| member_json(&app, m))
        .collect();
    json(&serde_json::json!({ "servers": list }))
}

/// `GET /nacos/v1/core/cluster/nodes`: the core member list.
pub async fn core_nodes(State(app): State<Arc<App>>) -> Response {
    let list: Vec<_> = members(&app).iter().map(|m| member_json(&app, m)).collect();
    json(&serde_json::json!({"code": 200, "message": null, "data": list}))
}

/// `GET /nacos/v1/core/cluster/nodes/self`.
pub async fn core_self(State(app): State<Arc<App>>) -> Response {
    let me = members(&app).swap_remove(0);
    json(&serde_json::json!({"code": 200, "message": null, "data": member_json(&app, &me)}))
}

/// `GET /nacos/v1/core/cluster/health`.
pub async fn core_health(State(app): State<Arc<App>>) -> Response {
    let state = if app.node.is_ready() { "UP" } else { "DOWN" };
    json(&serde_json::json!({"code": 200, "message": null, "data": state}))
}

/// `GET /operator/distro/server`: which node is responsible for a service.
pub async fn distro_server(State(app): State<Arc<App>>, p: Params) -> Result<Response, ApiError> {
    let key = service_key(&p)?;
    if !app.node.exists(&key) {
        return Err(ApiError::bad_request("service not found"));
    }
    Ok(json(
        &serde_json::json!({ "responsibleServer": app.node.membership().owner(&key) }),
    ))
}

/// `GET|POST /operator/push/state`: push success counters.
pub async fn push_state(State(app): State<Arc<App>>) -> Response {
    let (succeed, total) = app
        .node
        .push()
        .map(|h| {
            let s = h.state();
            (s.succeed, s.total)
        })
        .unwrap_or((0, 0));
    let ratio = if total == 0 {
        0.0
    } else {
        succeed as f64 / total as f64
    };
    json(&serde_json::json!({"succeed": succeed, "total": total, "ratio": ratio, "reset": false}))
}

/// `GET /health/server`.
pub async fn health_server(State(app): State<Arc<App>>) -> Response {
    let (services, _, _) = app.node.counts();
    json(&serde_json::json!({
        "msg": format!(
            "Hello! I am Nacos-Naming and healthy! total services: raft {services}, local port:{}",
            app.node.settings().listen.port()
        )
    }))
}

/// `GET /health/checkers`: the checker types and their defaults.
pub async fn health_checkers() -> Response {
    json(&serde_json::json!({
        "TCP": {"type": "TCP"},
        "HTTP": {"type": "HTTP", "path": "", "headers": "", "expectedResponseCode": 200},
        "MYSQL": {"type": "MYSQL", "user": null, "pwd": null, "cmd": null},
        "NONE": {"type": "NONE"},
    }))
}

/// `PUT /health` and `PUT /health/instance`: set health by hand (checker `NONE` only).
pub async fn set_health(State(app): State<Arc<App>>, p: Params) -> Result<Response, ApiError> {
    let key = service_key(&p)?;
    let ip = p.required("ip")?;
    validate::ip(ip)?;
    let port = validate::port("port", p.required("port")?)?;
    let healthy = p
        .opt("healthy")
        .or_else(|| p.opt("valid"))
        .ok_or_else(|| ApiError::bad_request("Param 'healthy' is required."))?;
    let id = InstanceKey {
        ip: ip.into(),
        port,
        cluster: cluster_param(&p, &["clusterName"])?.into(),
    };
    app.node
        .set_health(&key, &id, validate::lenient_bool(healthy))
        .await?;
    Ok(ok())
}

/// `GET /nacos/v1/console/health/liveness`.
pub async fn liveness() -> &'static str {
    "OK"
}

/// `GET /nacos/v1/console/health/readiness`.
pub async fn readiness(State(app): State<Arc<App>>) -> Response {
    if app.node.is_ready() {
        "OK".into_response()
    } else {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "Naming is not in readiness",
        )
            .into_response()
    }
}

/// `GET /metrics`: Prometheus exposition.
pub async fn prometheus(State(app): State<Arc<App>>) -> Response {
    app.node.refresh_gauges();
    let config = &app.node.metrics().config;
    let stored = app.node.persistent().read(|st| st.configs().count());
    config.with_label_values(&["configs"]).set(stored as i64);
    config
        .with_label_values(&["parked_listeners"])
        .set(app.configs.parked() as i64);
    config
        .with_label_values(&["listened_keys"])
        .set(app.configs.watched_keys() as i64);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.node.metrics().render(),
    )
        .into_response()
}

const QUOTA: u32 = 200;

fn namespace_json(id: &str, name: &str, desc: &str, kind: u8) -> serde_json::Value {
    serde_json::json!({
        "namespace": id,
        "namespaceShowName": name,
        "namespaceDesc": desc,
        "quota": QUOTA,
        "configCount": 0,
        "type": kind,
    })
}

fn check_namespace_id(id: &str) -> Result<(), ApiError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !ok {
        return Err(ApiError::bad_request(format!(
            "namespaceId [{id}] must be 1-128 characters of letters, digits, '_' or '-'"
        )));
    }
    Ok(())
}

fn check_namespace_name(name: &str, desc: &str) -> Result<(), ApiError> {
    if name.chars().count() > 128 || name.chars().any(|c| "@#$%^&*".contains(c)) {
        return Err(ApiError::bad_request(format!(
            "namespaceName [{name}] must be at most 128 characters without @#$%^&*"
        )));
    }
    if desc.chars().count() > 256 {
        return Err(ApiError::bad_request(
            "namespaceDesc must be at most 256 characters",
        ));
    }
    Ok(())
}

/// `GET /nacos/v1/console/namespaces`: list, detail (`show=all`) or existence check.
pub async fn namespaces(State(app): State<Arc<App>>, p: Params) -> Result<Response, ApiError> {
    if p.opt("checkNamespaceIdExist")
        .is_some_and(validate::strict_bool)
    {
        let id = p.required("customNamespaceId")?;
        let exists =
            id == nacre_ring::DEFAULT_NAMESPACE || app.node.namespaces().iter().any(|n| n.id == id);
        return Ok(json(&exists));
    }
    if p.opt("show") == Some("all") {
        let id = p.opt("namespaceId").unwrap_or("");
        if id.is_empty() || id == nacre_ring::DEFAULT_NAMESPACE {
            return Ok(json(&namespace_json("", "public", "Public Namespace", 0)));
        }
        let ns = app
            .node
            .namespaces()
            .into_iter()
            .find(|n| n.id == id)
            .ok_or_else(|| ApiError::not_found(format!("namespace {id} is not found!")))?;
        return Ok(json(&namespace_json(&ns.id, &ns.show_name, &ns.desc, 2)));
    }
    let mut data = vec![namespace_json("", "public", "Public Namespace", 0)];
    data.extend(
        app.node
            .namespaces()
            .iter()
            .map(|n| namespace_json(&n.id, &n.show_name, &n.desc, 2)),
    );
    Ok(json(
        &serde_json::json!({"code": 200, "message": null, "data": data}),
    ))
}

/// `POST /nacos/v1/console/namespaces`: create (`customNamespaceId` optional → a UUID).
pub async fn create_namespace(
    State(app): State<Arc<App>>,
    p: Params,
) -> Result<Response, ApiError> {
    let name = p.required("namespaceName")?;
    let desc = p.opt("namespaceDesc").unwrap_or("");
    check_namespace_name(name, desc)?;
    let id = match p.opt("customNamespaceId") {
        Some(id) => id.to_string(),
        None => uuid::Uuid::new_v4().to_string(),
    };
    check_namespace_id(&id)?;
    app.node
        .namespace_command(Command::CreateNamespace(Namespace {
            id,
            show_name: name.to_string(),
            desc: desc.to_string(),
        }))
        .await?;
    Ok(json(&true))
}

/// `PUT /nacos/v1/console/namespaces`: rename / describe.
pub async fn update_namespace(
    State(app): State<Arc<App>>,
    p: Params,
) -> Result<Response, ApiError> {
    let id = p.required("namespace")?;
    let name = p.required("namespaceShowName")?;
    let desc = p.opt("namespaceDesc").unwrap_or("");
    check_namespace_name(name, desc)?;
    if id == nacre_ring::DEFAULT_NAMESPACE {
        return Err(ApiError::bad_request(
            "the public namespace cannot be changed",
        ));
    }
    app.node
        .namespace_command(Command::UpdateNamespace(Namespace {
            id: id.to_string(),
            show_name: name.to_string(),
            desc: desc.to_string(),
        }))
        .await?;
    Ok(json(&true))
}

/// `DELETE /nacos/v1/console/namespaces`.
pub async fn delete_namespace(
    State(app): State<Arc<App>>,
    p: Params,
) -> Result<Response, ApiError> {
    let id = p.required("namespaceId")?;
    if id == nacre_ring::DEFAULT_NAMESPACE {
        return Err(ApiError::bad_request(
            "the public namespace cannot be deleted",
        ));
    }
    app.node
        .namespace_command(Command::DeleteNamespace { id: id.to_string() })
        .await?;
    Ok(json(&true))
}

/// `GET /nacre/v1/cluster`: nacre's own cluster view: Raft leader and state, members with
/// their probe states, the ownership ring, and a fingerprint of the ephemeral data (equal on
/// nodes that hold the same).
pub async fn nacre_cluster(State(app): State<Arc<App>>) -> Response {
    let st = app.node.persistent().status();
    let me = app.node.membership().self_addr().to_string();
    let ring = app.node.membership().ring();
    let members: Vec<_> = members(&app)
        .into_iter()
        .map(|m| {
            serde_json::json!({
                "address": m.address,
                "state": m.state,
                "ready": m.ready,
                "inRing": m.in_ring,
                "self": m.is_self,
            })
        })
        .collect();
    // O(instances): off the async workers.
    let node = app.node.clone();
    let (services, instances, fingerprint) =
        tokio::task::spawn_blocking(move || node.distro().store().fingerprint())
            .await
            .unwrap_or_default();
    let replication: Vec<_> = app
        .node
        .distro()
        .cluster()
        .map(|c| c.replicator.backlogs())
        .unwrap_or_default()
        .into_iter()
        .map(|b| serde_json::json!({ "peer": b.peer, "queueDepth": b.depth, "lagMs": b.oldest_ms }))
        .collect();
    json(&serde_json::json!({
        "self": me,
        "standalone": app.node.membership().is_standalone(),
        "replication": replication,
        "ephemeral": {
            "services": services,
            "instances": instances,
            "fingerprint": format!("{fingerprint:016x}"),
        },
        "ready": app.node.is_ready(),
        "leader": st.leader,
        "term": st.term,
        "role": st.role,
        "commitIndex": st.commit_index,
        "lastApplied": st.last_applied,
        "snapshots": { "built": st.snapshots_built, "installed": st.snapshots_installed },
        "raftMembers": st.members.values().collect::<Vec<_>>(),
        "raftNodes": st
            .members
            .iter()
            .map(|(id, addr)| serde_json::json!({ "id": id, "addr": addr }))
            .collect::<Vec<_>>(),
        "ring": ring.members().to_vec(),
        "members": members,
    }))
}
