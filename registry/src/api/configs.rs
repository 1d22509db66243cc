//! `/nacos/v1/cs/*`: the config center's HTTP edge. Handlers read parameters, call the domain
//! ([`crate::configs`]) or propose a command through Raft, and write Nacos's answers; the
//! rules live in the domain module.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::auth::Caller;
use super::error::ApiError;
use super::params::Params;
use super::{json, App, Page};
use crate::configs::listen::{self, Listened};
use crate::configs::model::{self, wildcard_match, Reader, Shown, Target};
use crate::configs::transfer;
use crate::configs::{
    ConfigCommand, ConfigItem, ConfigKey, ConfigMeta, HistoryEntry, Publish, MAX_CONTENT,
};

/// Read, publish, delete and search.
pub const CONFIGS_PATH: &str = "/nacos/v1/cs/configs";
/// The long-poll.
pub const LISTENER_PATH: &str = nacre_ring::wire::CONFIG_LISTENER_PATH;
/// Largest publish body: the content limit, percent-encoded, plus room for the other fields.
pub const PUBLISH_BODY_LIMIT: usize = 3 * MAX_CONTENT + 64 * 1024;

/// Largest page of a search or history listing.
const MAX_PAGE_SIZE: usize = 1000;

use nacre_ring::configs::{LISTENER_CONTENT_TYPE, NO_CACHE};

fn key_of(p: &Params) -> Result<ConfigKey, ApiError> {
    Ok(ConfigKey::new(
        p.required("dataId")?,
        p.required("group")?,
        p.get("tenant"),
    )?)
}

/// `GET /configs`: the raw content with Nacos's headers, 404 `config data not exist`; with
/// `search=` the paged search.
pub async fn get(State(app): State<Arc<App>>, p: Params) -> Result<Response, ApiError> {
    if let Some(mode) = p.opt("search") {
        return search(&app, &p, mode);
    }
    if p.opt("export") == Some("true") {
        return export(&app, &p);
    }
    let key = key_of(&p)?;
    if p.opt("beta") == Some("true") {
        return Ok(query_beta(&app, &key));
    }
    let tag = tag_of(&p)?;
    let ip = super::source::verified_source(&app, &p).map(|ip| ip.to_string());
    let auto_tag = vipserver_tag(&p);
    let reader = Reader {
        ip: ip.as_deref(),
        auto_tag: auto_tag.as_deref(),
    };
    let (revision, found) = app.node.persistent().read_at(|st| {
        let configs = st.configs();
        match &tag {
            Some(t) => configs.tag(&key, t).map(|c| (c.clone(), None)),
            None => configs.read(&key, reader).map(|(c, shown)| {
                let extra = match shown {
                    Shown::Main => None,
                    Shown::Beta => Some(("isBeta", "true".to_string())),
                    Shown::AutoTag(t) => Some(("Vipserver-Tag", t.to_string())),
                };
                (c.clone(), extra)
            }),
        }
    });
    let mut r = match found {
        Some((c, extra)) => {
            let mut r = content_answer(c);
            if let Some(v) = extra.and_then(|(n, v)| Some((n, HeaderValue::from_str(&v).ok()?))) {
                r.headers_mut().insert(v.0, v.1);
            }
            r
        }
        None => not_exist(),
    };
    // What a gateway caching the answer checks it against (see `nacre_ring::wire`).
    r.headers_mut().insert(
        nacre_ring::wire::CONFIG_REVISION_HEADER,
        HeaderValue::from(revision),
    );
    Ok(r)
}

/// The `tag` parameter of a tag-variant read, publish or delete (rule C1's characters, at most
/// 16); `None` when blank.
fn tag_of(p: &Params) -> Result<Option<String>, ApiError> {
    match p.opt("tag") {
        None => Ok(None),
        Some(t) => {
            nacre_ring::configs::check_name("tag", t, model::MAX_TAG)?;
            Ok(Some(t.to_string()))
        }
    }
}

/// The tag a client's `Vipserver-Tag` header names (rule C7).
fn vipserver_tag(p: &Params) -> Option<String> {
    p.headers
        .get(listen::TAG_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
}

/// The addresses of a beta publish's `betaIps` header (or parameter); `None` when blank.
fn beta_ips(p: &Params) -> Result<Option<Vec<String>>, ApiError> {
    let raw = p
        .headers
        .get("betaIps")
        .and_then(|v| v.to_str().ok())
        .or_else(|| p.get("betaIps"))
        .map(str::trim)
        .filter(|v| !v.is_empty());
    let Some(raw) = raw else {
        return Ok(None);
    };
    let ips = raw
        .split(',')
        .map(str::trim)
        .filter(|ip| !ip.is_empty())
        .map(|ip| {
            ip.parse::<std::net::IpAddr>()
                .map(|a| a.to_string())
                .map_err(|_| {
                    ApiError::bad_request(format!("invalid betaIps: {ip:?} is not an IP address"))
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if ips.is_empty() || ips.len() > model::MAX_BETA_IPS {
        return Err(ApiError::bad_request(format!(
            "invalid betaIps: 1 to {} addresses",
            model::MAX_BETA_IPS
        )));
    }
    Ok(Some(ips))
}

/// `GET /configs?beta=true` (the console's beta query): Nacos's `RestResult` with the beta, or
/// `null` data when there is none.
fn query_beta(app: &App, key: &ConfigKey) -> Response {
    let data = app.node.persistent().read(|st| {
        st.configs().beta(key).map(|b| {
            serde_json::json!({
                "id": b.item.id,
                "dataId": key.data_id,
                "group": key.group,
                "tenant": key.tenant,
                "content": b.item.content,
                "md5": b.item.md5,
                "appName": b.item.meta.app_name,
                "type": b.item.meta.kind,
                "betaIps": b.ips.join(","),
            })
        })
    });
    json(&serde_json::json!({"code": 200, "message": "query beta ok", "data": data}))
}

fn not_exist() -> Response {
    let mut r = (StatusCode::NOT_FOUND, "config data not exist\n").into_response();
    set_headers(r.headers_mut(), LISTENER_CONTENT_TYPE, &NO_CACHE);
    r
}

fn content_answer(c: ConfigItem) -> Response {
    let content_type = match c.meta.kind.as_str() {
        "json" => "application/json;charset=UTF-8",
        "xml" => "application/xml;charset=UTF-8",
        "html" => "text/html;charset=UTF-8",
        _ => "text/plain;charset=UTF-8",
    };
    let modified = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_millis(c.modified_ms));
    let mut r = c.content.into_response();
    let h = r.headers_mut();
    set_headers(h, content_type, &NO_CACHE);
    for (name, value) in [
        ("Config-Type", c.meta.kind.as_str()),
        ("Content-MD5", c.md5.as_str()),
        ("Last-Modified", modified.as_str()),
    ] {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    }
    r
}

fn set_headers(
    h: &mut HeaderMap,
    content_type: &'static str,
    extra: &[(&'static str, &'static str)],
) {
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    for (name, value) in extra {
        h.insert(
            header::HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
}

fn search(app: &App, p: &Params, mode: &str) -> Result<Response, ApiError> {
    let blur = match mode {
        "accurate" => false,
        "blur" => true,
        other => {
            return Err(ApiError::bad_request(format!(
                "invalid search: {other} (accurate or blur)"
            )))
        }
    };
    let page = Page::of(p, MAX_PAGE_SIZE)?;
    let tenant = model::normalize_tenant(p.get("tenant")).to_string();
    let data_id = p.get("dataId").unwrap_or("").to_string();
    let group = p.get("group").unwrap_or("").to_string();
    let matches = |pattern: &str, v: &str| {
        pattern.is_empty()
            || if blur {
                wildcard_match(pattern, v)
            } else {
                pattern == v
            }
    };
    let (total, items) = app.node.persistent().read(|st| {
        let all: Vec<(&ConfigKey, &ConfigItem)> = st
            .configs()
            .records()
            .filter(|(k, _)| k.tenant == tenant)
            .filter(|(k, _)| matches(&data_id, &k.data_id) && matches(&group, &k.group))
            .filter_map(|(k, r)| r.current.as_ref().map(|c| (k, c)))
            .collect();
        let items: Vec<serde_json::Value> = page
            .slice(all.iter())
            .map(|(k, c)| {
                serde_json::json!({
                    "id": c.id,
                    "dataId": k.data_id,
                    "group": k.group,
                    "content": c.content,
                    "md5": c.md5,
                    "tenant": k.tenant,
                    "appName": c.meta.app_name,
                    "type": c.meta.kind,
                })
            })
            .collect();
        (all.len(), items)
    });
    Ok(page.answer(total, items))
}

/// Who made a change: `src_user` as sent, and the verified source address.
fn source(app: &App, p: &Params) -> (String, String) {
    (
        p.get("src_user").unwrap_or("").to_string(),
        super::source::verified_source(app, p)
            .map(|ip| ip.to_string())
            .unwrap_or_default(),
    )
}

/// `GET /configs?export=true` (the console's export): the zip of the configs of `tenant`
/// (all, those with the `ids` given, or those matching `group`, `dataId` (`*` wildcards) and
/// `appName`), rule C8.
fn export(app: &App, p: &Params) -> Result<Response, ApiError> {
    let tenant = model::normalize_tenant(p.get("tenant")).to_string();
    let ids = match p.opt("ids") {
        None => None,
        Some(v) => Some(
            v.split(',')
                .map(|s| s.trim().parse::<u64>())
                .collect::<Result<Vec<u64>, _>>()
                .map_err(|_| {
                    ApiError::bad_request("invalid ids: expected comma-separated numbers")
                })?,
        ),
    };
    let (group, data_id, app_name) = (p.opt("group"), p.opt("dataId"), p.opt("appName"));
    let zip = app.node.persistent().read(|st| {
        let items: Vec<transfer::Exported<'_>> = st
            .configs()
            .records()
            .filter(|(k, _)| k.tenant == tenant)
            .filter_map(|(k, r)| r.current.as_ref().map(|c| (k, c)))
            .filter(|(k, c)| match &ids {
                Some(ids) => ids.contains(&c.id),
                None => {
                    group.is_none_or(|g| wildcard_match(g, &k.group))
                        && data_id.is_none_or(|d| wildcard_match(d, &k.data_id))
                        && app_name.is_none_or(|a| a == c.meta.app_name)
                }
            })
            .map(|(k, c)| transfer::Exported {
                group: &k.group,
                data_id: &k.data_id,
                content: &c.content,
                app_name: &c.meta.app_name,
            })
            .collect();
        transfer::export_zip(&items)
    });
    let zip = zip.map_err(ApiError::internal)?;
    let name = format!(
        "attachment;filename=nacos_config_export_{}.zip",
        export_stamp(wall_ms())
    );
    let mut r = zip.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/zip"),
    );
    if let Ok(v) = HeaderValue::from_str(&name) {
        r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(r)
}

/// `yyyyMMddHHmmss` (UTC) of `ms`, as Nacos names export files.
fn export_stamp(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's `civil_from_days`).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}{:02}{:02}{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// A field of a multipart import: from the query string first, then the form's text fields.
struct Upload {
    file: Option<bytes::Bytes>,
    fields: Vec<(String, String)>,
}

/// Reads the multipart body of an import (`file`, and text fields such as `policy`).
async fn upload(p: &Params) -> Result<Upload, ApiError> {
    let content_type = p
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let boundary = multer::parse_boundary(content_type).map_err(|_| {
        ApiError::bad_request("an import is a multipart/form-data upload with a `file`")
    })?;
    let body = p.raw.body.clone();
    let stream = futures::stream::once(async move { Ok::<_, std::convert::Infallible>(body) });
    let mut form = multer::Multipart::new(stream, boundary);
    let mut up = Upload {
        file: None,
        fields: Vec::new(),
    };
    let bad = |e: multer::Error| ApiError::bad_request(format!("malformed multipart body: {e}"));
    while let Some(field) = form.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or("").to_string();
        if name == "file" {
            up.file = Some(field.bytes().await.map_err(bad)?);
        } else {
            let text = field.text().await.map_err(bad)?;
            up.fields.push((name, text));
        }
    }
    Ok(up)
}

/// A refused import: Nacos's result code in the body, 400.
fn import_refused(code: u32, message: String) -> Response {
    let mut r = json(&serde_json::json!({
        "code": code,
        "message": message,
        "data": {"succCount": 0},
    }));
    *r.status_mut() = StatusCode::BAD_REQUEST;
    r
}

/// `POST /configs?import=true` (the console's import, rule C8): a multipart `file` (an
/// export's zip) into `namespace`, with `policy` for configs that exist; answers Nacos's
/// `RestResult` with `succCount`, `skipCount` and the `failData` / `skipData` keys.
async fn import(app: &App, p: &Params) -> Result<Response, ApiError> {
    let up = upload(p).await?;
    let field = |name: &str| {
        p.get(name).map(str::to_string).or_else(|| {
            up.fields
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.trim().to_string())
        })
    };
    let (tenant, policy) = match batch_target(
        app,
        field("namespace").as_deref(),
        field("policy").as_deref(),
    )? {
        Ok(t) => t,
        Err(refused) => return Ok(refused),
    };
    let Some(file) = up.file else {
        return Ok(import_refused(100_005, "no `file` in the upload".into()));
    };
    let imported = match transfer::read_zip(&file, &tenant) {
        Ok(items) => items,
        Err(e) => return Ok(import_refused(e.code(), e.to_string())),
    };
    let src_user = field("src_user").unwrap_or_default();
    let (_, src_ip) = source(app, p);
    let time_ms = wall_ms();
    let mut seen = std::collections::HashSet::new();
    let mut items = Vec::with_capacity(imported.len());
    for i in imported {
        // The same config twice in one file: the first one counts.
        if !seen.insert(i.key.clone()) {
            continue;
        }
        if let Err(e) = model::check_publish(
            &i.content,
            Some(&i.kind),
            None,
            None,
            Some(&i.app_name),
            Some(&src_user),
        ) {
            return Ok(import_refused(
                100_003,
                format!("{}/{}: {e}", i.key.group, i.key.data_id),
            ));
        }
        items.push(Publish {
            key: i.key,
            content: i.content,
            meta: ConfigMeta {
                kind: i.kind,
                app_name: i.app_name,
                src_user: src_user.clone(),
                src_ip: src_ip.clone(),
                ..ConfigMeta::default()
            },
            time_ms,
            cas_md5: None,
            target: Target::Main,
        });
    }
    run_batch(app, items, policy, "import").await
}

/// The namespace an import or a clone writes into (it must exist: else the refusal to answer)
/// and its policy for configs that exist (`ABORT` when not given).
fn batch_target(
    app: &App,
    namespace: Option<&str>,
    policy: Option<&str>,
) -> Result<Result<(String, transfer::Policy), Response>, ApiError> {
    let tenant = model::normalize_tenant(namespace).to_string();
    if !tenant.is_empty()
        && app
            .node
            .persistent()
            .read(|st| st.namespace(&tenant).is_none())
    {
        return Ok(Err(import_refused(
            100_001,
            format!("namespace {tenant} does not exist"),
        )));
    }
    let policy = match policy.map(str::trim).filter(|v| !v.is_empty()) {
        None => transfer::Policy::Abort,
        Some(v) => transfer::Policy::parse(v)
            .ok_or_else(|| ApiError::bad_request("invalid policy: ABORT, SKIP or OVERWRITE"))?,
    };
    Ok(Ok((tenant, policy)))
}

/// Proposes an import (or a clone) of `items` and answers what the apply did to each.
async fn run_batch(
    app: &App,
    items: Vec<Publish>,
    policy: transfer::Policy,
    op: &str,
) -> Result<Response, ApiError> {
    let keys: Vec<ConfigKey> = items.iter().map(|i| i.key.clone()).collect();
    let published: std::collections::HashSet<ConfigKey> = app
        .node
        .propose_config(ConfigCommand::Import { items, policy })
        .await?
        .into_iter()
        .collect();
    count_write(app, op);
    Ok(batch_answer(&keys, &published, policy, &format!("{op} ok")))
}

/// Nacos's `RestResult` for an import or a clone: what the apply did to each config, in
/// order: published, or (abort) failed from the first one it stopped at, or (skip) skipped.
fn batch_answer(
    keys: &[ConfigKey],
    published: &std::collections::HashSet<ConfigKey>,
    policy: transfer::Policy,
    message: &str,
) -> Response {
    let entry = |k: &ConfigKey| serde_json::json!({"dataId": k.data_id, "group": k.group});
    let (mut succ, mut fail, mut skip) = (0, Vec::new(), Vec::new());
    for k in keys {
        if published.contains(k) && fail.is_empty() {
            succ += 1;
        } else if policy == transfer::Policy::Abort {
            fail.push(entry(k));
        } else {
            skip.push(entry(k));
        }
    }
    let mut data = serde_json::json!({"succCount": succ, "skipCount": skip.len()});
    if !fail.is_empty() {
        data["failData"] = serde_json::Value::Array(fail);
    }
    if !skip.is_empty() {
        data["skipData"] = serde_json::Value::Array(skip);
    }
    json(&serde_json::json!({"code": 200, "message": message, "data": data}))
}

/// One config a clone copies: its id, and optionally a new data id and group.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct CloneOf {
    cfg_id: u64,
    #[serde(default)]
    data_id: Option<String>,
    #[serde(default)]
    group: Option<String>,
}

/// `POST /configs?clone=true&tenant=NS` (the console's clone, rule C8): a JSON list of
/// `{cfgId, dataId, group}` copied into `tenant` as an import of them would be; the caller must
/// be able to read every source.
async fn clone_configs(
    app: &App,
    caller: Option<&Caller>,
    p: &Params,
) -> Result<Response, ApiError> {
    let wanted: Vec<CloneOf> = serde_json::from_slice(&p.raw.body).map_err(|e| {
        ApiError::bad_request(format!(
            "invalid clone body: expected [{{cfgId, dataId, group}}]: {e}"
        ))
    })?;
    if wanted.is_empty() {
        return Ok(import_refused(100_006, "no config selected".into()));
    }
    let (tenant, policy) = match batch_target(app, p.get("tenant"), p.opt("policy"))? {
        Ok(t) => t,
        Err(refused) => return Ok(refused),
    };
    let sources: Vec<(ConfigKey, ConfigItem)> = app.node.persistent().read(|st| {
        st.configs()
            .records()
            .filter_map(|(k, r)| r.current.as_ref().map(|c| (k, c)))
            .filter(|(_, c)| wanted.iter().any(|w| w.cfg_id == c.id))
            .map(|(k, c)| (k.clone(), c.clone()))
            .collect()
    });
    if sources.is_empty() {
        return Ok(import_refused(
            100_005,
            "none of the ids names a config".into(),
        ));
    }
    let (src_user, src_ip) = source(app, p);
    let time_ms = wall_ms();
    let mut items = Vec::with_capacity(sources.len());
    let mut seen = std::collections::HashSet::new();
    for (from, c) in sources {
        if !super::auth::may_read_config(app, caller, &from) {
            return Err(ApiError::forbidden("authorization failed!"));
        }
        let w = wanted.iter().find(|w| w.cfg_id == c.id);
        let pick = |given: Option<&String>, was: &str| {
            given
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
                .unwrap_or(was)
                .to_string()
        };
        let data_id = pick(w.and_then(|w| w.data_id.as_ref()), &from.data_id);
        let group = pick(w.and_then(|w| w.group.as_ref()), &from.group);
        let key = ConfigKey::new(&data_id, &group, Some(&tenant))?;
        if !seen.insert(key.clone()) {
            continue;
        }
        items.push(Publish {
            key,
            content: c.content,
            meta: ConfigMeta {
                src_user: src_user.clone(),
                src_ip: src_ip.clone(),
                ..c.meta
            },
            time_ms,
            cas_md5: None,
            target: Target::Main,
        });
    }
    run_batch(app, items, policy, "clone").await
}

/// `POST /configs`: publish; answers `true`. With `import=true` an import, with
/// `clone=true` a clone.
pub async fn publish(
    State(app): State<Arc<App>>,
    caller: Option<axum::Extension<Caller>>,
    p: Params,
) -> Result<Response, ApiError> {
    if p.opt("import") == Some("true") {
        return import(&app, &p).await;
    }
    if p.opt("clone") == Some("true") {
        return clone_configs(&app, caller.as_ref().map(|c| &c.0), &p).await;
    }
    let key = key_of(&p)?;
    // A beta wins over a tag, as in Nacos.
    let target = match (beta_ips(&p)?, tag_of(&p)?) {
        (Some(ips), _) => Target::Beta(ips),
        (None, Some(tag)) => Target::Tag(tag),
        (None, None) => Target::Main,
    };
    let content = p
        .untrimmed("content")
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ApiError::bad_request("Param 'content' is required."))?;
    let kind = model::check_publish(
        content,
        p.opt("type"),
        p.opt("desc"),
        p.opt("config_tags"),
        p.opt("appName"),
        p.opt("src_user"),
    )?;
    let cas_md5 = p
        .headers
        .get("casMd5")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| p.get("casMd5").map(str::to_string));
    let (src_user, src_ip) = source(&app, &p);
    let cmd = ConfigCommand::Publish(Publish {
        key,
        content: content.to_string(),
        meta: ConfigMeta {
            kind,
            app_name: p.get("appName").unwrap_or("").to_string(),
            desc: p.get("desc").unwrap_or("").to_string(),
            tags: p.get("config_tags").unwrap_or("").to_string(),
            src_user,
            src_ip,
        },
        time_ms: wall_ms(),
        cas_md5,
        target,
    });
    app.node.propose_config(cmd).await?;
    count_write(&app, "publish");
    Ok(json_true())
}

/// `DELETE /configs`: by key (answers `true`), or `delType=ids&ids=1,2` (answers Nacos's
/// `RestResult`).
pub async fn delete(State(app): State<Arc<App>>, p: Params) -> Result<Response, ApiError> {
    let (src_user, src_ip) = source(&app, &p);
    let stop_beta = p.opt("beta") == Some("true");
    let of = match (stop_beta, tag_of(&p)?) {
        (true, _) => Target::Beta(Vec::new()),
        (false, Some(tag)) => Target::Tag(tag),
        (false, None) => Target::Main,
    };
    let by_ids = p.opt("delType") == Some("ids");
    let targets = if by_ids {
        let ids = p
            .required("ids")?
            .split(',')
            .map(|s| s.trim().parse::<u64>())
            .collect::<Result<Vec<u64>, _>>()
            .map_err(|_| ApiError::bad_request("invalid ids: expected comma-separated numbers"))?;
        app.node.persistent().read(|st| {
            st.configs()
                .records()
                .filter_map(|(k, r)| r.current.as_ref().map(|c| (k, c.id)))
                .filter(|(_, id)| ids.contains(id))
                .map(|(k, id)| (k.clone(), Some(id)))
                .collect::<Vec<_>>()
        })
    } else {
        vec![(key_of(&p)?, None)]
    };
    if !targets.is_empty() {
        app.node
            .propose_config(ConfigCommand::Delete {
                targets,
                src_user,
                src_ip,
                time_ms: wall_ms(),
                of,
            })
            .await?;
        count_write(&app, "delete");
    }
    Ok(if stop_beta {
        json(&serde_json::json!({"code": 200, "message": "stop beta ok", "data": true}))
    } else if by_ids {
        json(&serde_json::json!({"code": 200, "message": null, "data": true}))
    } else {
        json_true()
    })
}

fn count_write(app: &App, op: &str) {
    app.node
        .metrics()
        .config_writes
        .with_label_values(&[op])
        .inc();
}

fn json_true() -> Response {
    super::json_text("true".to_string())
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How long a listener may be held (rule C6), from its headers.
fn hold_of(headers: &HeaderMap) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    listen::hold(
        header(listen::TIMEOUT_HEADER),
        header(listen::NO_HANGUP_HEADER),
    )
}

/// `GET /configs/listener` (Nacos's listener query): the clients whose long-polls on one
/// config are parked on this node, with the md5 each holds.
pub async fn listeners(State(app): State<Arc<App>>, p: Params) -> Result<Response, ApiError> {
    let key = key_of(&p)?;
    let parked = app.configs.listeners(&key);
    Ok(super::json_text(
        nacre_ring::configs::listen::listeners_document(&parked),
    ))
}

/// `POST /configs/listener`: answers the listened keys whose md5 differs, at once or as soon
/// as one changes within the hold; an empty body when none did.
pub async fn listen(State(app): State<Arc<App>>, p: Params) -> Result<Response, ApiError> {
    let listened = listen::parse_request(p.untrimmed("Listening-Configs"), p.get("tenant"))?;
    // Each key is compared with what this client would read (rule C7).
    let ip = super::source::verified_source(&app, &p).map(|ip| ip.to_string());
    let auto_tag = vipserver_tag(&p);
    let reader = Reader {
        ip: ip.as_deref(),
        auto_tag: auto_tag.as_deref(),
    };
    // Register before the first comparison: a change applied in between still wakes us.
    let interest = app.configs.interest_from(
        ip.as_deref().unwrap_or(""),
        listened.iter().map(|l| (l.key.clone(), l.md5.clone())),
    );
    let changed = |app: &App| -> Vec<Listened> {
        app.node.persistent().read(|st| {
            listened
                .iter()
                .filter(|l| st.configs().md5_for(&l.key, reader) != l.md5)
                .cloned()
                .collect()
        })
    };
    let mut now = changed(&app);
    if let (true, Some(hold)) = (now.is_empty(), hold_of(&p.headers)) {
        let deadline = tokio::time::Instant::now() + hold;
        loop {
            tokio::select! {
                _ = interest.changed() => {}
                _ = tokio::time::sleep_until(deadline) => break,
                _ = app.shutdown.cancelled() => break,
            }
            now = changed(&app);
            if !now.is_empty() {
                break;
            }
        }
    }
    drop(interest);
    let mut r = listen::reply(&now).into_response();
    set_headers(r.headers_mut(), LISTENER_CONTENT_TYPE, &NO_CACHE);
    Ok(r)
}

fn history_json(k: &ConfigKey, h: &HistoryEntry) -> serde_json::Value {
    serde_json::json!({
        "id": h.nid,
        "lastId": -1,
        "dataId": k.data_id,
        "group": k.group,
        "tenant": k.tenant,
        "appName": h.app_name,
        "md5": h.md5,
        "content": h.content,
        "srcIp": h.src_ip,
        "srcUser": h.src_user,
        "opType": h.op.to_string(),
        "createdTime": h.created_ms,
        "lastModifiedTime": h.modified_ms,
    })
}

/// `GET /history`: `?nid=` one entry; `?search=accurate&dataId&group[&tenant]` a page, newest
/// first.
pub async fn history(State(app): State<Arc<App>>, p: Params) -> Result<Response, ApiError> {
    if let Some(nid) = p.opt("nid") {
        let nid = nid
            .parse::<u64>()
            .map_err(|_| ApiError::bad_request(format!("invalid nid: {nid}")))?;
        return one_entry(&app, |st| st.history_entry(nid));
    }
    let key = key_of(&p)?;
    let page = Page::of(&p, MAX_PAGE_SIZE)?;
    let (total, items) = app.node.persistent().read(|st| {
        let history = st.configs().record(&key).map(|r| &r.history);
        let total = history.map_or(0, |h| h.len());
        let items: Vec<serde_json::Value> = page
            .slice(history.into_iter().flat_map(|h| h.iter().rev()))
            .map(|h| history_json(&key, h))
            .collect();
        (total, items)
    });
    Ok(page.answer(total, items))
}

/// `GET /history/previous?id=`: the entry before history entry `id` of the same config.
pub async fn previous(State(app): State<Arc<App>>, p: Params) -> Result<Response, ApiError> {
    let id = p.required("id")?;
    let id = id
        .parse::<u64>()
        .map_err(|_| ApiError::bad_request(format!("invalid id: {id}")))?;
    one_entry(&app, |st| st.previous_entry(id))
}

fn one_entry(
    app: &App,
    find: impl FnOnce(&crate::configs::ConfigState) -> Option<(&ConfigKey, &HistoryEntry)>,
) -> Result<Response, ApiError> {
    app.node
        .persistent()
        .read(|st| find(st.configs()).map(|(k, h)| history_json(k, h)))
        .map(|v| json(&v))
        .ok_or_else(|| ApiError::not_found("history not exist"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_files_are_named_by_their_utc_time() {
        assert_eq!(export_stamp(784_111_777_000), "19941106084937");
        assert_eq!(export_stamp(0), "19700101000000");
        assert_eq!(export_stamp(1_709_164_800_999), "20240229000000");
    }
}
