//! `/nacos/v1/ns/service…`, `/catalog/services|service` and `/cluster` handlers.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;

use super::error::ApiError;
use super::params::Params;
use super::{json, ok, service_key, App};
use crate::naming::model::{ClusterMeta, HealthChecker, Selector, ServiceMeta};
use crate::naming::persistent::ServiceUpdate;
use crate::naming::{select, validate};
use crate::node::ServiceView;
use nacre_ring::{ServiceKey, DEFAULT_GROUP, DEFAULT_NAMESPACE};

fn selector(raw: &str) -> Result<Selector, ApiError> {
    let bad = || ApiError::bad_request(format!("selector format incorrect: {raw}"));
    let v: serde_json::Value = serde_json::from_str(raw).map_err(|_| bad())?;
    match v.get("type").and_then(|t| t.as_str()) {
        Some(t) if t.eq_ignore_ascii_case("none") => Ok(Selector::None),
        Some(t) if t.eq_ignore_ascii_case("label") => {
            let expression = v
                .get("expression")
                .and_then(|e| e.as_str())
                .ok_or_else(bad)?;
            Ok(Selector::Label {
                expression: expression.to_string(),
            })
        }
        _ => Err(bad()),
    }
}

fn threshold(p: &Params, required: bool) -> Result<f64, ApiError> {
    let raw = if required {
        Some(p.required("protectThreshold")?)
    } else {
        p.opt("protectThreshold")
    };
    raw.map(|v| validate::fraction("protectThreshold", v).map_err(ApiError::from))
        .unwrap_or(Ok(0.0))
}

/// `POST /service`: create.
pub async fn create(State(app): State<Arc<App>>, p: Params) -> Result<Response, ApiError> {
    let key = service_key(&p)?;
    let meta = ServiceMeta {
        protect_threshold: threshold(&p, false)?,
        metadata: validate::metadata(p.opt("metadata").unwrap_or(""))?,
        selector: p
            .opt("selector")
            .map(selector)
            .transpose()?
            .unwrap_or_default(),
        ..ServiceMeta::default()
    };
    app.node.create_service(&key, meta).await?;
    Ok(ok())
}

/// `DELETE /service`: delete with all instances.
pub async fn delete(State(app): State<Arc<App>>, p: Params) -> Result<Response, ApiError> {
    let key = service_key(&p)?;
    app.node.delete_service(&key).await?;
    Ok(ok())
}

/// `PUT /service`: update threshold, metadata and selector.
pub async fn update(State(app): State<Arc<App>>, p: Params) -> Result<Response, ApiError> {
    let key = service_key(&p)?;
    let update = ServiceUpdate {
        protect_threshold: threshold(&p, true)?,
        metadata: validate::metadata(p.get("metadata").unwrap_or(""))?,
        selector: p.opt("selector").map(selector).transpose()?,
    };
    app.node.update_service(&key, update).await?;
    Ok(ok())
}

fn cluster_json(name: &str, c: &ClusterMeta, key: &ServiceKey) -> serde_json::Value {
    serde_json::json!({
        "name": name,
        "healthChecker": c.health_checker,
        "defaultPort": 80,
        "defaultCheckPort": c.check_port,
        "useIPPort4Check": c.use_instance_port,
        "metadata": c.metadata,
        "serviceName": key.grouped(),
    })
}

fn clusters_json(view: &ServiceView, key: &ServiceKey) -> Vec<serde_json::Value> {
    view.cluster_names()
        .iter()
        .filter_map(|n| view.cluster_meta(n).map(|c| cluster_json(n, &c, key)))
        .collect()
}

fn found(app: &App, key: &ServiceKey) -> Result<ServiceView, ApiError> {
    app.node
        .view(key)
        .ok_or_else(|| ApiError::not_found(format!("service {} is not found!", key.grouped())))
}

/// `GET /service`: detail.
pub async fn detail(State(app): State<Arc<App>>, p: Params) -> Result<Response, ApiError> {
    let key = service_key(&p)?;
    let view = found(&app, &key)?;
    Ok(json(&serde_json::json!({
        "name": key.service,
        "namespaceId": key.namespace,
        "protectThreshold": view.meta.protect_threshold,
        "metadata": view.meta.metadata,
        "selector": view.meta.selector,
        "groupName": key.group,
        "clusters": clusters_json(&view, &key),
    })))
}

fn page(p: &Params) -> Result<(usize, usize), ApiError> {
    let page_no = validate::positive("pageNo", p.required("pageNo")?, 1_000_000)? as usize;
    let page_size = validate::positive("pageSize", p.required("pageSize")?, 10_000)? as usize;
    Ok(((page_no - 1).saturating_mul(page_size), page_size))
}

fn namespace(p: &Params) -> &str {
    p.opt("namespaceId").unwrap_or(DEFAULT_NAMESPACE)
}

/// `GET /service/list`: names in a group, paged, group prefix stripped.
pub async fn list(State(app): State<Arc<App>>, p: Params) -> Result<Response, ApiError> {
    let (start, size) = page(&p)?;
    let group = p.opt("groupName").unwrap_or(DEFAULT_GROUP);
    let keys = app.node.service_keys(Some(namespace(&p)));
    let names: Vec<String> = keys
        .iter()
        .filter(|k| group == "*" || k.group == group)
        .map(|k| {
            if group == "*" {
                k.grouped()
            } else {
                k.service.clone()
            }
        })
        .collect();
    let doms: Vec<&String> = names.iter().skip(start).take(size).collect();
    Ok(json(
        &serde_json::json!({ "count": names.len(), "doms": doms }),
    ))
}

/// `GET /service/names`: grouped names per namespace.
pub async fn names(State(app): State<Arc<App>>, p: Params) -> Result<Response, ApiError> {
    let expr = p.opt("expr");
    let keys = app.node.service_keys(p.opt("namespaceId"));
    let mut out: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for k in keys {
        let g = k.grouped();
        if expr.is_some_and(|e| !g.contains(e)) {
            continue;
        }
        out.entry(k.namespace).or_default().push(g);
    }
    Ok(json(
        &serde_json::json!({ "count": out.len(), "services": out }),
    ))
}

/// `GET /service/subscribers`: UDP push subscribers of a service.
pub async fn subscribers(State(app): State<Arc<App>>, p: Params) -> Result<Response, ApiError> {
    let key = service_key(&p)?;
    let page_no = p
        .opt("pageNo")
        .map(|v| validate::positive("pageNo", v, 1_000_000))
        .transpose()?
        .unwrap_or(1) as usize;
    let page_size = p
        .opt("pageSize")
        .map(|v| validate::positive("pageSize", v, 10_000))
        .transpose()?
        .unwrap_or(1000) as usize;
    let subs = app
        .node
        .push()
        .map(|h| h.subscribers_of(&key))
        .unwrap_or_default();
    let list: Vec<serde_json::Value> = subs
        .iter()
        .skip((page_no - 1).saturating_mul(page_size))
        .take(page_size)
        .map(|s| {
            serde_json::json!({
                "addrStr": s.addr.to_string(),
                "agent": s.agent,
                "app": s.app,
                "ip": s.addr.ip().to_string(),
                "port": s.addr.port(),
                "namespaceId": key.namespace,
                "serviceName": key.grouped(),
                "cluster": s.clusters,
            })
        })
        .collect();
    Ok(json(
        &serde_json::json!({ "subscribers": list, "count": subs.len() }),
    ))
}

/// `GET /catalog/services`: console service list with counts.
pub async fn catalog_services(
    State(app): State<Arc<App>>,
    p: Params,
) -> Result<Response, ApiError> {
    let (start, size) = page(&p)?;
    let name_filter = p.opt("serviceNameParam");
    let group_filter = p.opt("groupNameParam");
    let has_ip_count = p.opt("hasIpCount").is_some_and(validate::strict_bool);
    let with_instances = p.opt("withInstances").is_some_and(validate::strict_bool);
    let mut rows = Vec::new();
    for key in app.node.service_keys(Some(namespace(&p))) {
        if name_filter.is_some_and(|f| !key.service.contains(f))
            || group_filter.is_some_and(|f| !key.group.contains(f))
        {
            continue;
        }
        let Some(view) = app.node.view(&key) else {
            continue;
        };
        if has_ip_count && view.instances.is_empty() {
            continue;
        }
        rows.push((key, view));
    }
    let count = rows.len();
    // nacre's addition for operators: the member owning each service on the ring.
    let ring = app.node.membership().ring();
    let page: Vec<serde_json::Value> = rows
        .iter()
        .skip(start)
        .take(size)
        .map(|(key, view)| {
            if with_instances {
                let mut cluster_map = serde_json::Map::new();
                for c in view.cluster_names() {
                    let hosts: Vec<_> = view
                        .instances
                        .iter()
                        .filter(|i| i.cluster == c)
                        .map(|i| {
                            serde_json::json!({"ip": i.ip, "port": i.port, "valid": i.healthy,
                            "healthy": i.healthy, "weight": i.weight, "enabled": i.enabled,
                            "metadata": i.metadata})
                        })
                        .collect();
                    cluster_map.insert(c, serde_json::json!({ "hosts": hosts }));
                }
                serde_json::json!({
                    "serviceName": key.service,
                    "groupName": key.group,
                    "metadata": view.meta.metadata,
                    "clusterMap": cluster_map,
                })
            } else {
                let healthy = view.instances.iter().filter(|i| i.healthy).count();
                let protected = !view.instances.is_empty()
                    && select::select(&view.instances, &[], false, view.meta.protect_threshold)
                        .protected;
                serde_json::json!({
                    "name": key.service,
                    "groupName": key.group,
                    "clusterCount": view.cluster_names().len(),
                    "ipCount": view.instances.len(),
                    "healthyInstanceCount": healthy,
                    "triggerFlag": protected.to_string(),
                    "owner": ring.owner(key),
                })
            }
        })
        .collect();
    if with_instances {
        return Ok(json(&page));
    }
    Ok(json(
        &serde_json::json!({ "count": count, "serviceList": page }),
    ))
}

/// `GET /catalog/service`: console service detail.
pub async fn catalog_service(State(app): State<Arc<App>>, p: Params) -> Result<Response, ApiError> {
    let key = service_key(&p)?;
    let view = found(&app, &key)?;
    Ok(json(&serde_json::json!({
        "service": {
            "name": key.service,
            "protectThreshold": view.meta.protect_threshold,
            "groupName": key.group,
            "selector": view.meta.selector,
            "metadata": view.meta.metadata,
        },
        "clusters": clusters_json(&view, &key),
    })))
}

/// `PUT /cluster`: set a cluster's health-check settings.
pub async fn update_cluster(State(app): State<Arc<App>>, p: Params) -> Result<Response, ApiError> {
    let key = service_key(&p)?;
    let cluster = p.required("clusterName")?;
    validate::cluster_name(cluster)?;
    let check_port = validate::port("checkPort", p.required("checkPort")?)?;
    let use_port = validate::lenient_bool(p.required("useInstancePort4Check")?);
    let raw = p.required("healthChecker")?;
    let checker: HealthChecker = serde_json::from_str(raw)
        .map_err(|e| ApiError::bad_request(format!("healthChecker format incorrect: {e}")))?;
    if let Some(path) = &checker.path {
        validate::checker_path(path)?;
    }
    if let Some(h) = &checker.headers {
        validate::checker_headers(h)?;
    }
    if !["TCP", "HTTP", "MYSQL", "NONE"]
        .iter()
        .any(|t| t.eq_ignore_ascii_case(&checker.kind))
    {
        return Err(ApiError::bad_request(format!(
            "unknown health checker type: {}",
            checker.kind
        )));
    }
    let meta = ClusterMeta {
        health_checker: HealthChecker {
            kind: checker.kind.to_ascii_uppercase(),
            ..checker
        },
        check_port,
        use_instance_port: use_port,
        metadata: validate::metadata(p.opt("metadata").unwrap_or(""))?,
    };
    app.node
        .update_cluster(&key, cluster.to_string(), meta)
        .await?;
    Ok(ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors() {
        assert_eq!(selector(r#"{"type":"none"}"#).unwrap(), Selector::None);
        assert!(matches!(
            selector(r#"{"type":"label","expression":"a=b"}"#).unwrap(),
            Selector::Label { .. }
        ));
        assert!(selector("nope").is_err());
        assert!(selector(r#"{"type":"weird"}"#).is_err());
    }
}

#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::selector;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

        /// Whatever a client sends as `selector`, it is a selector or a 400.
        #[test]
        fn selectors_parse_or_are_a_client_error(raw in r#"[{}\[\]":, a-zA-Z0-9=.-]{0,60}"#) {
            if let Err(e) = selector(&raw) {
                prop_assert_eq!(e.status.as_u16(), 400);
            }
        }

        #[test]
        fn typed_selectors_with_any_expression_parse_or_are_a_client_error(
            kind in prop_oneof![
                Just("none".to_string()),
                Just("label".to_string()),
                Just("LABEL".to_string()),
                ".{0,6}",
            ],
            expression in prop::option::of(".{0,30}"),
        ) {
            let raw = serde_json::json!({"type": kind, "expression": expression}).to_string();
            match selector(&raw) {
                Ok(_) => {}
                Err(e) => prop_assert_eq!(e.status.as_u16(), 400),
            }
        }
    }
}
