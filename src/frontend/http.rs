//! The HTTP API: the seeds' endpoints with their paths, fields and response
//! shapes, plus `/metrics` and `/openapi.json`. Every data operation runs
//! as a command through [`crate::commands::execute`], exactly as a RESP
//! client's would.
//!
//! - seed 000: `POST /ingest`, `GET /get/{key}`
//! - seed 002: `/data`, `/health`, `/nodes`, `/backup`, `/restore`, `/rebalance`
//! - seed 003: `POST /api/write`, `GET /api/read/{key}`, `GET /api/coordinator/topology`,
//!   `GET /api/coordinator/nodes/{key}`
//!
//! In cluster mode every node serves all of them: requests are routed
//! like a RESP client's, and the cluster endpoints describe the whole
//! cluster as this node sees it.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes as Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::{json, Value as Json_};

use super::resp::Reply;
use crate::cluster::{Admin, Cluster, ClusterError, MemberView};
use crate::commands::{dispatch, storage_error, warm_cache, Session};
use crate::metrics::{CmdLabels, HttpLabels};
use crate::node::{ClientHandle, Node};
use crate::ops;
use crate::storage::{now_ms, Tier};

type Shared = Arc<Node>;

/// An error response: `{"ok":false,"success":false,"error":"..."}`, so that
/// clients of every seed find the field they check.
pub struct ApiError(pub(super) StatusCode, pub(super) String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.0,
            Json(json!({"ok": false, "success": false, "error": self.1})),
        )
            .into_response()
    }
}

pub(super) fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

fn not_found(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, msg.into())
}

/// Builds the router for `node`.
pub fn router(node: Shared) -> Router {
    let limit = node.cfg.read().http_body_limit;
    Router::new()
        .route("/ingest", post(ingest))
        .route("/get/{*key}", get(get_key))
        .route("/data", post(data_put))
        .route("/data/{*key}", get(data_get).delete(data_delete))
        .route("/health", get(health))
        .route("/nodes", get(nodes_list).post(nodes_register))
        .route("/nodes/{id}", get(node_get).delete(node_delete))
        .route("/backup", post(backup))
        .route("/restore", post(restore))
        .route("/rebalance", post(rebalance))
        .route("/api/write", post(api_write))
        .route("/api/read/{*key}", get(api_read))
        .route("/api/coordinator/topology", get(topology))
        .route("/api/coordinator/nodes/{*key}", get(key_nodes))
        .route("/admin/flush", post(admin_flush))
        .route("/admin/config", get(admin_config))
        .route("/metrics", get(metrics))
        .route("/api/hotkeys", get(hotkeys))
        .route("/openapi.json", get(openapi))
        .merge(super::pipeline_api::routes())
        .merge(super::monitoring::routes())
        .merge(super::dashboard::routes())
        .layer(middleware::from_fn_with_state(node.clone(), identify))
        .layer(middleware::from_fn_with_state(node.clone(), track))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(node)
}

async fn track(State(node): State<Shared>, req: Request, next: Next) -> Response {
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = req.method().to_string();
    let started = Instant::now();
    let resp = next.run(req).await;
    node.metrics
        .http_seconds
        .get_or_create(&CmdLabels { cmd: path.clone() })
        .observe(started.elapsed().as_secs_f64());
    node.metrics
        .http_requests
        .get_or_create(&HttpLabels {
            path,
            method,
            status: resp.status().as_u16(),
        })
        .inc();
    resp
}

/// Who an HTTP request acts as, for the ACL.
#[derive(Clone)]
enum Caller {
    /// No key: the `default` user, when it needs no password.
    Anonymous,
    /// A key from `http_api_keys`: that user.
    User(Arc<crate::acl::User>),
    /// The admin `api_key`: trusted like the node itself.
    Admin,
    /// A key of this tenant of the metric pipeline: its events and series
    /// only.
    Tenant(String),
    /// A key that matches nothing, or whose user is off or gone.
    Refused(String),
}

tokio::task_local! {
    /// The caller of the request being served.
    static CALLER: Caller;
}

fn caller_of(node: &Node, headers: &HeaderMap, query: Option<&str>) -> Caller {
    let from_query = || {
        query?.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == "apiKey").then(|| v.to_string())
        })
    };
    let given = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(from_query);
    let Some(key) = given else {
        return Caller::Anonymous;
    };
    let cfg = node.cfg.read();
    if let Some(name) = cfg.http_api_keys.get(&key) {
        return match node.acl.user(name) {
            Some(u) if u.enabled => Caller::User(u),
            _ => Caller::Refused(format!(
                "the API key's user '{name}' is off or does not exist"
            )),
        };
    }
    if cfg.api_key.as_deref() == Some(key.as_str()) {
        return Caller::Admin;
    }
    if let Some(t) = crate::pipeline::tenants::tenant_of(&cfg.streams.tenants, &key) {
        return Caller::Tenant(t.to_string());
    }
    Caller::Refused("invalid API key".into())
}

/// Finds out who the request acts as, for the commands it runs.
async fn identify(State(node): State<Shared>, req: Request, next: Next) -> Response {
    let caller = caller_of(&node, req.headers(), req.uri().query());
    CALLER.scope(caller, next.run(req)).await
}

/// Runs one command as the HTTP client and makes its writes durable.
async fn exec(node: &Shared, args: Vec<Bytes>) -> Result<(Reply, Option<Tier>), ApiError> {
    exec_with(node, args, |_| {})
        .await
        .map(|(r, s)| (r, s.last_tier))
}

/// [`exec`] with the session set up by `prepare`; returns the session too.
async fn exec_with(
    node: &Shared,
    args: Vec<Bytes>,
    prepare: impl FnOnce(&mut Session),
) -> Result<(Reply, Session), ApiError> {
    let mut session = caller_session(node)?;
    prepare(&mut session);
    // The same path as a RESP client's: routed to the key's shard leader
    // in cluster mode.
    let reply = dispatch(node, &mut session, &args).await;
    settle(node, &session).await?;
    if let Reply::Error(msg) = &reply {
        return Err(ApiError(error_status(msg), msg.clone()));
    }
    Ok((reply, session))
}

/// A session acting as the request's caller (see [`identify`]).
pub(super) fn caller_session(node: &Node) -> Result<Session, ApiError> {
    let handle = Arc::new(ClientHandle::new(0, "http".into(), String::new(), 0));
    let mut session = Session::new(handle, true);
    session.acl_generation = node.acl.generation();
    match CALLER.try_with(Caller::clone).unwrap_or(Caller::Admin) {
        Caller::Admin => {}
        Caller::User(u) => session.user = Some(u),
        Caller::Anonymous => {
            session.user = node.acl.user("default");
            if !node.acl.default_open() {
                return Err(ApiError(
                    StatusCode::UNAUTHORIZED,
                    "authentication required: send an API key (X-API-Key header or ?apiKey=)"
                        .into(),
                ));
            }
        }
        Caller::Refused(why) => return Err(ApiError(StatusCode::UNAUTHORIZED, why)),
        Caller::Tenant(t) => {
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                format!("the key of tenant '{t}' only reaches the metric pipeline (/v1/metrics, /v1/series)"),
            ))
        }
    }
    Ok(session)
}

/// For the metric pipeline's endpoints: the tenant the caller is limited
/// to (None: every tenant), and a session to run its commands. With
/// tenants configured, a tenant's or the admin key is required.
pub(super) fn tenant_session(node: &Node) -> Result<(Option<String>, Session), ApiError> {
    let caller = CALLER.try_with(Caller::clone).unwrap_or(Caller::Admin);
    let tenants_on = !node.cfg.read().streams.tenants.is_empty();
    match caller {
        Caller::Tenant(t) => {
            let handle = Arc::new(ClientHandle::new(0, "http".into(), String::new(), 0));
            Ok((Some(t), Session::new(handle, true)))
        }
        Caller::Anonymous if tenants_on => Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "this node has tenants: send a tenant's or the admin API key (X-API-Key header or ?apiKey=)"
                .into(),
        )),
        _ => Ok((None, caller_session(node)?)),
    }
}

/// Makes the session's writes durable before they are acknowledged.
pub(super) async fn settle(node: &Node, session: &Session) -> Result<(), ApiError> {
    if let Some(lsn) = session.pending_lsn {
        if let Err(e) = super::make_durable(&node.store, lsn).await {
            let Reply::Error(msg) = storage_error(e) else {
                unreachable!("storage_error returns an error reply")
            };
            return Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, msg));
        }
    }
    Ok(())
}

/// The HTTP status of a command's error reply.
pub(super) fn error_status(msg: &str) -> StatusCode {
    let unavailable = ["MISCONF", "NOQUORUM", "CLUSTERDOWN", "TRYAGAIN"];
    if unavailable.iter().any(|p| msg.starts_with(p)) {
        StatusCode::SERVICE_UNAVAILABLE
    } else if msg.starts_with("NOPERM") {
        StatusCode::FORBIDDEN
    } else {
        StatusCode::BAD_REQUEST
    }
}

fn args(parts: &[&[u8]]) -> Vec<Bytes> {
    parts.iter().map(|p| Bytes::copy_from_slice(p)).collect()
}

fn parse_json(body: &[u8]) -> Result<serde_json::Map<String, Json_>, ApiError> {
    match serde_json::from_slice::<Json_>(body) {
        Ok(Json_::Object(m)) => Ok(m),
        Ok(_) => Err(bad("request body must be a JSON object")),
        Err(e) => Err(bad(format!("invalid JSON: {e}"))),
    }
}

fn str_field<'a>(m: &'a serde_json::Map<String, Json_>, name: &str) -> Result<&'a str, ApiError> {
    match m.get(name) {
        Some(Json_::String(s)) if !s.is_empty() => Ok(s),
        Some(Json_::String(_)) => Err(bad(format!("field '{name}' must not be empty"))),
        Some(_) => Err(bad(format!("field '{name}' must be a string"))),
        None => Err(bad(format!("missing field '{name}'"))),
    }
}

fn opt_u64(m: &serde_json::Map<String, Json_>, name: &str) -> Result<Option<u64>, ApiError> {
    match m.get(name) {
        None | Some(Json_::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| bad(format!("field '{name}' must be a non-negative integer"))),
    }
}

fn mem_ratio(node: &Node) -> f64 {
    let s = node.store.stats();
    let r = s.used_bytes as f64 / s.tier_cap_bytes.max(1) as f64;
    (r * 1000.0).round() / 1000.0
}

pub(super) fn check_api_key(
    node: &Node,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<(), ApiError> {
    let Some(want) = node.cfg.read().api_key.clone() else {
        return Ok(());
    };
    let given = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| query.get("apiKey").cloned());
    match given {
        Some(g) if g == want => Ok(()),
        Some(_) => Err(ApiError(StatusCode::UNAUTHORIZED, "invalid API key".into())),
        None => Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "missing API key (X-API-Key header or ?apiKey=)".into(),
        )),
    }
}

// ---- seed 000: the ingestor ----

async fn ingest(State(node): State<Shared>, body: Body) -> Result<Json<Json_>, ApiError> {
    let m = parse_json(&body)?;
    let key = str_field(&m, "key")?;
    let mut value = match m.get("value") {
        Some(Json_::Object(v)) => v.clone(),
        Some(_) => return Err(bad("field 'value' must be a JSON object")),
        None => return Err(bad("missing field 'value'")),
    };
    let ttl = opt_u64(&m, "ttl_sec")?.unwrap_or(3600);
    let hint = match m.get("cache_hint") {
        None | Some(Json_::Null) => "none",
        Some(Json_::String(s)) => s.as_str(),
        Some(_) => return Err(bad("field 'cache_hint' must be a string")),
    };
    value.insert("_ts".into(), json!(now_ms() / 1000));
    let text = Json_::Object(value).to_string();
    let mut cmd: Vec<&[u8]> = vec![b"SET", key.as_bytes(), text.as_bytes()];
    let ttl_s = ttl.to_string();
    if ttl > 0 {
        cmd.extend_from_slice(&[b"EX", ttl_s.as_bytes()]);
    }
    let (_, tier) = exec(&node, args(&cmd)).await?;
    if hint == "hot_read" && node.cluster.get().is_some() {
        // Cached under a lease from the key's shard leader, which drops it
        // from here when the key changes.
        let (node, key) = (node.clone(), Bytes::copy_from_slice(key.as_bytes()));
        tokio::spawn(async move { warm_cache(&node, 0, key).await });
    } else if hint == "hot_read" && node.local_cache.enabled() {
        node.local_cache.put(
            key.as_bytes(),
            text,
            (ttl > 0).then(|| now_ms() + ttl * 1000),
        );
    }
    Ok(Json(
        json!({"ok": true, "stored": tier.unwrap_or(Tier::Memory).as_str(), "mem_ratio": mem_ratio(&node)}),
    ))
}

async fn get_key(
    State(node): State<Shared>,
    Path(key): Path<String>,
) -> Result<Json<Json_>, ApiError> {
    let cached = match node.cluster.get() {
        None => node.local_cache.get(key.as_bytes()),
        Some(_) => None,
    };
    if let Some(v) = cached {
        node.metrics
            .local_cache_hits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return Ok(Json(
            json!({"ok": true, "source": "local_cache", "value": v}),
        ));
    }
    let got = match exec_with(&node, args(&[b"GET", key.as_bytes()]), |_| {}).await {
        Ok((reply, s)) if s.local_cache_hit => Ok((reply, "local_cache")),
        Ok((reply, s)) => Ok((reply, s.last_tier.unwrap_or(Tier::Memory).as_str())),
        Err(ApiError(_, e)) if e.starts_with("WRONGTYPE") => Ok((Reply::Error(e), "memory")),
        Err(e) => Err(e),
    };
    let (reply, source) = got?;
    match reply {
        Reply::Bulk(v) => Ok(Json(
            json!({"ok": true, "source": source, "value": String::from_utf8_lossy(&v)}),
        )),
        Reply::Error(_) => {
            // A collection: its whole content, as JSON.
            let (kind, _) = exec(&node, args(&[b"TYPE", key.as_bytes()])).await?;
            let kind = match kind {
                Reply::Simple(t) => t.to_string(),
                Reply::Status(t) => t,
                _ => String::new(),
            };
            let read: &[&[u8]] = match kind.as_str() {
                "hash" => &[b"HGETALL"],
                "list" => &[b"LRANGE", b"0", b"-1"],
                "set" => &[b"SMEMBERS"],
                "zset" => &[b"ZRANGE", b"0", b"-1", b"WITHSCORES"],
                "stream" => &[b"XRANGE", b"-", b"+"],
                _ => return Err(not_found(format!("key '{key}' not found"))),
            };
            let mut cmd: Vec<&[u8]> = vec![read[0], key.as_bytes()];
            cmd.extend_from_slice(&read[1..]);
            let (value, tier) = exec(&node, args(&cmd)).await?;
            Ok(Json(json!({
                "ok": true,
                "source": tier.unwrap_or(Tier::Memory).as_str(),
                "type": kind,
                "value": reply_json(&value),
            })))
        }
        _ => Err(not_found(format!("key '{key}' not found"))),
    }
}

/// A reply as JSON: strings, numbers, arrays, objects for maps, and
/// `[member, score]` pairs.
fn reply_json(r: &Reply) -> Json_ {
    match r {
        Reply::Bulk(b) => Json_::String(String::from_utf8_lossy(b).into_owned()),
        Reply::Simple(s) => Json_::String((*s).to_string()),
        Reply::Status(s) | Reply::Verbatim(s) | Reply::Error(s) => Json_::String(s.clone()),
        Reply::Int(n) => json!(n),
        Reply::Double(d) | Reply::Coord(d) => json!(d),
        Reply::Nil | Reply::NilArray => Json_::Null,
        Reply::Array(items) | Reply::Set(items) | Reply::Push(items) | Reply::Many(items) => {
            Json_::Array(items.iter().map(reply_json).collect())
        }
        Reply::Map(pairs) => Json_::Object(
            pairs
                .iter()
                .map(|(k, v)| {
                    let key = match reply_json(k) {
                        Json_::String(s) => s,
                        other => other.to_string(),
                    };
                    (key, reply_json(v))
                })
                .collect(),
        ),
        Reply::Pairs(pairs) | Reply::Keyed(pairs) => Json_::Array(
            pairs
                .iter()
                .map(|(k, v)| Json_::Array(vec![reply_json(k), reply_json(v)]))
                .collect(),
        ),
    }
}

// ---- seed 002: the distributed cache ----

async fn data_put(State(node): State<Shared>, body: Body) -> Result<Json<Json_>, ApiError> {
    let m = parse_json(&body)?;
    let key = str_field(&m, "key")?;
    let value = match m.get("value") {
        Some(Json_::String(s)) => s.clone(),
        Some(Json_::Null) | None => return Err(bad("missing field 'value'")),
        Some(other) => other.to_string(),
    };
    let ttl = opt_u64(&m, "ttl")?.filter(|&t| t > 0);
    let ttl_s = ttl.map(|t| t.to_string()).unwrap_or_default();
    let mut cmd: Vec<&[u8]> = vec![b"SET", key.as_bytes(), value.as_bytes()];
    if ttl.is_some() {
        cmd.extend_from_slice(&[b"EX", ttl_s.as_bytes()]);
    }
    let (_, tier) = exec(&node, args(&cmd)).await?;
    Ok(Json(
        json!({"key": key, "value": value, "ttl": ttl, "stored": tier.unwrap_or(Tier::Memory).as_str()}),
    ))
}

async fn data_get(
    State(node): State<Shared>,
    Path(key): Path<String>,
) -> Result<Json<Json_>, ApiError> {
    let (reply, tier) = exec(&node, args(&[b"GET", key.as_bytes()])).await?;
    match reply {
        Reply::Bulk(v) => Ok(Json(
            json!({"key": key, "value": String::from_utf8_lossy(&v), "source": tier.unwrap_or(Tier::Memory).as_str()}),
        )),
        _ => Err(not_found(format!("key '{key}' not found"))),
    }
}

async fn data_delete(
    State(node): State<Shared>,
    Path(key): Path<String>,
) -> Result<Json<Json_>, ApiError> {
    let (reply, _) = exec(&node, args(&[b"DEL", key.as_bytes()])).await?;
    match reply {
        Reply::Int(1) => Ok(Json(json!({"key": key, "deleted": true}))),
        _ => Err(not_found(format!("key '{key}' not found"))),
    }
}

async fn health(State(node): State<Shared>) -> Response {
    let (code, body) = health_json(&node);
    (code, Json(body)).into_response()
}

/// `GET /health`'s status and body.
pub(super) fn health_json(node: &Node) -> (StatusCode, Json_) {
    let s = node.store.stats();
    let keys: u64 = (0..node.store.databases())
        .map(|db| node.store.dbsize(db))
        .sum();
    let healthy = s.poisoned.is_none();
    let mut problems: Vec<String> = Vec::new();
    if let Some(why) = &s.poisoned {
        problems.push(format!("writes refused after a failed log write: {why}"));
    }
    let mut body = json!({
        "node_id": node.node_id,
        "mode": if node.cluster.get().is_some() { "cluster" } else { "single" },
        "uptime_secs": node.started.elapsed().as_secs(),
        "keys": keys,
        "mem_ratio": mem_ratio(node),
        "memory_entries": s.entries_memory,
        "disk_entries": s.entries_disk,
        "write_poisoned": s.poisoned,
    });
    if let Some(cluster) = node.cluster.get() {
        let members = cluster.member_views();
        let meta = cluster.layout().clone();
        let leaderless: Vec<u32> = meta
            .shards
            .iter()
            .filter(|sh| cluster.leader_of(sh).is_none())
            .map(|sh| sh.group)
            .collect();
        let down: Vec<String> = members
            .iter()
            .filter(|m| !m.up)
            .map(|m| hex(m.id))
            .collect();
        if meta.shards.is_empty() {
            problems.push("the cluster has not been created".into());
        }
        if !leaderless.is_empty() {
            problems.push(format!("shards without a leader: {leaderless:?}"));
        }
        if !down.is_empty() {
            problems.push(format!("members not reachable: {}", down.join(", ")));
        }
        body["cluster"] = json!({
            "state": if meta.shards.is_empty() || !leaderless.is_empty() { "fail" } else { "ok" },
            "generationId": cluster.generation(),
            "epoch": meta.epoch,
            "nodes": members.len(),
            "nodes_up": members.iter().filter(|m| m.up).count(),
            "nodes_down": down,
            "shards": meta.shards.len(),
            "shards_without_leader": leaderless,
        });
    }
    body["status"] = json!(if problems.is_empty() {
        "healthy"
    } else {
        "degraded"
    });
    body["problems"] = json!(problems);
    let sys = crate::ops::system_now(node);
    let h = crate::ops::node_health(node, &s, &sys);
    body["health_score"] = json!(h.score);
    body["health_status"] = json!(h.status);
    body["health_components"] = json!(h.components);
    if let Some(c) = node.monitor.cluster_health() {
        body["cluster_health"] = json!(c);
    }
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, body)
}

fn self_node(node: &Node) -> Json_ {
    json!({
        "id": node.node_id,
        "address": node.resp_addr.get().map(|a| a.to_string()),
        "http_address": node.http_addr.get().map(|a| a.to_string()),
        "status": "up",
        "role": "primary",
        "slots": [[0, crate::slot::SLOTS - 1]],
        "keys": (0..node.store.databases()).map(|db| node.store.dbsize(db)).sum::<u64>(),
    })
}

fn hex(id: u64) -> String {
    format!("{id:016x}")
}

/// A cluster member as `/nodes` shows it.
fn member_json(node: &Node, cluster: &Cluster, m: &MemberView) -> Json_ {
    let meta = cluster.layout();
    let slots: Vec<(u16, u16)> = meta
        .shards
        .iter()
        .filter(|s| m.leads.contains(&s.group))
        .flat_map(|s| s.slots.iter().copied())
        .collect();
    let mut v = json!({
        "id": hex(m.id),
        "address": m.node.resp,
        "http_address": m.node.http,
        "cluster_address": m.node.cluster,
        "status": if m.up { "up" } else { "down" },
        "role": if m.leads.is_empty() { "replica" } else { "primary" },
        "leads_shards": m.leads,
        "replicates_shards": m.follows,
        "slots": slots,
        "self": m.id == cluster.id,
    });
    if m.id == cluster.id {
        let stats = node.store.stats();
        v["keys"] = json!((0..node.store.databases())
            .map(|db| node.store.dbsize(db))
            .sum::<u64>());
        v["memory_bytes"] = json!(stats.used_bytes);
        v["disk_bytes"] = json!(stats.disk_bytes);
        v["member"] = json!(cluster.is_member());
    }
    v
}

async fn nodes_list(State(node): State<Shared>) -> Json<Json_> {
    match node.cluster.get() {
        Some(cluster) => {
            let nodes: Vec<Json_> = cluster
                .member_views()
                .iter()
                .map(|m| member_json(&node, cluster, m))
                .collect();
            Json(json!({"nodes": nodes, "mode": "cluster"}))
        }
        None => Json(json!({"nodes": [self_node(&node)], "mode": "single"})),
    }
}

/// A membership change's outcome: 202 with the plan, or the refusal.
fn admin_reply(r: Result<String, ClusterError>) -> Result<(StatusCode, Json<Json_>), ApiError> {
    match r {
        Ok(plan) => Ok((
            StatusCode::ACCEPTED,
            Json(json!({"success": true, "message": plan})),
        )),
        Err(e @ (ClusterError::Admin(_) | ClusterError::Create(_))) => {
            Err(ApiError(StatusCode::CONFLICT, e.to_string()))
        }
        Err(e) => Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
    }
}

/// POST /nodes `{"address": "host:port"}` (the new node's RESP address):
/// adds a running node to the cluster; replicas move to it in the
/// background (follow them in CLUSTER INFO or `strata cluster status`).
async fn nodes_register(
    State(node): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    body: Body,
) -> Result<(StatusCode, Json<Json_>), ApiError> {
    check_api_key(&node, &headers, &q)?;
    let Some(cluster) = node.cluster.get() else {
        return Err(ApiError(
            StatusCode::CONFLICT,
            "this node runs in single-node mode; start nodes with --cluster-port to form a cluster"
                .into(),
        ));
    };
    let m = optional_body(&body)?;
    let Some(addr) = m.get("address").and_then(Json_::as_str).map(str::to_string) else {
        return Err(bad(
            "expected {\"address\": \"host:port\"}, the new node's RESP address",
        ));
    };
    let (id, peer) =
        tokio::task::spawn_blocking(move || crate::tools::cluster::describe_node(&addr))
            .await
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
            .map_err(bad)?;
    admin_reply(cluster.admin(Admin::AddNode(id, peer)).await)
}

async fn node_get(
    State(node): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<Json_>, ApiError> {
    if let Some(cluster) = node.cluster.get() {
        return cluster
            .member_views()
            .iter()
            .find(|m| hex(m.id) == id)
            .map(|m| Json(member_json(&node, cluster, m)))
            .ok_or_else(|| not_found(format!("no node '{id}'")));
    }
    if id == node.node_id {
        Ok(Json(self_node(&node)))
    } else {
        Err(not_found(format!("no node '{id}'")))
    }
}

/// DELETE /nodes/{id}: moves the member's replicas away, then removes it.
async fn node_delete(
    State(node): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Json_>), ApiError> {
    check_api_key(&node, &headers, &q)?;
    if let Some(cluster) = node.cluster.get() {
        let member = cluster
            .member_views()
            .iter()
            .find(|m| hex(m.id) == id)
            .map(|m| m.id)
            .ok_or_else(|| not_found(format!("no node '{id}'")))?;
        return admin_reply(cluster.admin(Admin::RemoveNode(member)).await);
    }
    if id == node.node_id {
        Err(ApiError(
            StatusCode::CONFLICT,
            "can't remove the only node".into(),
        ))
    } else {
        Err(not_found(format!("no node '{id}'")))
    }
}

/// Backup file names are plain names inside the backup directory.
fn backup_name(m: &serde_json::Map<String, Json_>) -> Result<Option<String>, ApiError> {
    match m.get("file") {
        None | Some(Json_::Null) => Ok(None),
        Some(Json_::String(s))
            if !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                && !s.starts_with('.') =>
        {
            Ok(Some(s.clone()))
        }
        Some(_) => Err(bad(
            "field 'file' must be a plain file name (letters, digits, '-', '_', '.')",
        )),
    }
}

fn optional_body(body: &[u8]) -> Result<serde_json::Map<String, Json_>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        Ok(serde_json::Map::new())
    } else {
        parse_json(body)
    }
}

async fn backup(
    State(node): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    body: Body,
) -> Result<Json<Json_>, ApiError> {
    check_api_key(&node, &headers, &q)?;
    let m = optional_body(&body)?;
    let name = backup_name(&m)?;
    if node.cluster.get().is_some() {
        let (name, manifest) = ops::backup::take_cluster(&node, name)
            .await
            .map_err(backup_error)?;
        return Ok(Json(json!({
            "success": true,
            "file": name,
            "shards": manifest.shards.len(),
            "keys": manifest.shards.iter().map(|s| s.keys).sum::<u64>(),
            "bytes": manifest.shards.iter().map(|s| s.bytes).sum::<u64>(),
            "manifest": manifest,
        })));
    }
    let info = ops::backup::take_node(&node, name)
        .await
        .map_err(backup_error)?;
    Ok(Json(
        json!({"success": true, "file": info.path.file_name().map(|f| f.to_string_lossy().into_owned()), "keys": info.keys, "bytes": info.bytes}),
    ))
}

fn backup_error(e: ops::backup::BackupError) -> ApiError {
    use ops::backup::BackupError;
    let status = match &e {
        BackupError::NotFound(_) => StatusCode::NOT_FOUND,
        BackupError::Damaged(_) => StatusCode::BAD_REQUEST,
        BackupError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError(status, e.to_string())
}

async fn restore(
    State(node): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    body: Body,
) -> Result<Json<Json_>, ApiError> {
    check_api_key(&node, &headers, &q)?;
    let m = optional_body(&body)?;
    let name = match backup_name(&m)? {
        Some(n) => n,
        None => ops::backup::newest(&node).ok_or_else(|| not_found("no backups yet"))?,
    };
    if node.cluster.get().is_some() {
        let done = ops::backup::restore_cluster(&node, &name)
            .await
            .map_err(backup_error)?;
        return Ok(Json(
            json!({"success": true, "file": name, "keys": done.keys, "shards": done.shards}),
        ));
    }
    let path = ops::backup::dir(&node).join(&name);
    if !path.is_file() {
        return Err(not_found(format!("no backup '{name}'")));
    }
    let store = node.store.clone();
    let info = tokio::task::spawn_blocking(move || store.restore_from(&path))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| bad(e.to_string()))?;
    node.local_cache.clear();
    Ok(Json(
        json!({"success": true, "file": name, "keys": info.keys}),
    ))
}

async fn rebalance(
    State(node): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<(StatusCode, Json<Json_>), ApiError> {
    check_api_key(&node, &headers, &q)?;
    if let Some(cluster) = node.cluster.get() {
        return admin_reply(cluster.admin(Admin::Rebalance).await);
    }
    Ok((
        StatusCode::OK,
        Json(json!({
            "success": true,
            "moved_keys": 0,
            "nodes": 1,
            "message": format!("single node {} owns all {} slots; nothing to move", node.node_id, crate::slot::SLOTS),
        })),
    ))
}

// ---- seed 003: the replicated storage cluster ----

fn rfc3339(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

async fn api_write(State(node): State<Shared>, body: Body) -> Result<Json<Json_>, ApiError> {
    let started = Instant::now();
    let m = parse_json(&body)?;
    let key = str_field(&m, "key")?;
    let content = match m.get("content") {
        Some(Json_::String(s)) => s.clone(),
        Some(_) => return Err(bad("field 'content' must be a string")),
        None => return Err(bad("missing field 'content'")),
    };
    let version = now_ms();
    let (v, ts) = (version.to_string(), rfc3339(version));
    let (_, session) = exec_with(
        &node,
        args(&[
            b"HSET",
            key.as_bytes(),
            b"content",
            content.as_bytes(),
            b"version",
            v.as_bytes(),
            b"timestamp",
            ts.as_bytes(),
        ]),
        |s| s.want_holders = true,
    )
    .await?;
    let nodes: Vec<String> = match (node.cluster.get(), session.holders) {
        (Some(_), Some(ids)) => ids.into_iter().map(hex).collect(),
        _ => vec![node.node_id.clone()],
    };
    Ok(Json(
        json!({"success": true, "key": key, "latencyMs": started.elapsed().as_millis() as u64, "nodes": nodes}),
    ))
}

/// Whether a read asks for the local copy (seed 003's R=1 fallback):
/// `?stale=true` or `?replicas=1`.
fn stale_requested(q: &HashMap<String, String>) -> Result<bool, ApiError> {
    let stale = match q.get("stale").map(String::as_str) {
        None | Some("false" | "0") => false,
        Some("true" | "1" | "") => true,
        Some(other) => return Err(bad(format!("'stale' must be true or false, not '{other}'"))),
    };
    let one = match q.get("replicas").map(String::as_str) {
        None => false,
        Some("1") => true,
        Some(other) => {
            return Err(bad(format!(
                "'replicas' may only be 1 (a possibly stale read of one replica), not '{other}'"
            )))
        }
    };
    Ok(stale || one)
}

async fn api_read(
    State(node): State<Shared>,
    Path(key): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Json_>, ApiError> {
    let started = Instant::now();
    let stale_ok = stale_requested(&q)?;
    // How many replicas stand behind the answer: a read on a leader is
    // confirmed by a majority (lease or round trip); a stale read is the
    // local replica's own copy.
    let (replicas, stale) = match node.cluster.get() {
        None => (1, false),
        Some(cluster) => {
            let shard = cluster
                .shard_of(crate::slot::slot_of(key.as_bytes()))
                .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
            if stale_ok && cluster.replicates(shard.group) {
                (1, true)
            } else {
                (shard.replicas.len() / 2 + 1, false)
            }
        }
    };
    let (reply, _) = exec_with(
        &node,
        args(&[
            b"HMGET",
            key.as_bytes(),
            b"content",
            b"version",
            b"timestamp",
        ]),
        |s| s.readonly = stale,
    )
    .await?;
    let Reply::Array(items) = reply else {
        return Err(not_found(format!("key '{key}' not found")));
    };
    let text = |i: usize| match items.get(i) {
        Some(Reply::Bulk(b)) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    };
    let Some(content) = text(0) else {
        return Err(not_found(format!("key '{key}' not found")));
    };
    let version = text(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Ok(Json(json!({
        "success": true,
        "key": key,
        "data": {"key": key, "content": content, "version": version, "timestamp": text(2)},
        "latencyMs": started.elapsed().as_millis() as u64,
        "replicas": replicas,
        "stale": stale,
    })))
}

async fn topology(State(node): State<Shared>) -> Json<Json_> {
    Json(topology_json(&node))
}

/// Seed 003's topology: members, shards and their leaders.
pub(super) fn topology_json(node: &Node) -> Json_ {
    if let Some(cluster) = node.cluster.get() {
        let meta = cluster.layout().clone();
        let members = cluster.member_views();
        let nodes: Vec<Json_> = members
            .iter()
            .map(|m| {
                let roles: Vec<Json_> = meta
                    .shards
                    .iter()
                    .filter(|s| s.replicas.contains(&m.id))
                    .map(|s| {
                        json!({
                            "shard": s.group,
                            "role": if m.leads.contains(&s.group) { "LEADER" } else { "FOLLOWER" },
                        })
                    })
                    .collect();
                json!({
                    "id": hex(m.id),
                    "address": m.node.resp,
                    "httpAddress": m.node.http,
                    "status": if m.up { "UP" } else { "DOWN" },
                    "role": if m.leads.is_empty() { "FOLLOWER" } else { "LEADER" },
                    "shards": roles,
                })
            })
            .collect();
        let shards: Vec<Json_> = meta
            .shards
            .iter()
            .map(|s| {
                let leader = cluster.leader_of(s).map(|(id, _)| hex(id));
                json!({
                    "id": s.group,
                    "slots": s.slots,
                    "leader": leader,
                    "replicas": cluster.replicas_leader_first(s).into_iter().map(hex).collect::<Vec<_>>(),
                })
            })
            .collect();
        let quorum = meta.replicas / 2 + 1;
        return json!({
            "nodes": nodes,
            "shards": shards,
            "leader": cluster.meta_leader().map(hex),
            "generationId": cluster.generation(),
            "epoch": meta.epoch,
            "replicationFactor": meta.replicas,
            "writeQuorum": quorum,
            "readQuorum": quorum,
            "slots": crate::slot::SLOTS,
        });
    }
    json!({
        "shards": [{"id": 0, "slots": [[0, crate::slot::SLOTS - 1]], "leader": node.node_id, "replicas": [node.node_id]}],
        "generationId": 0,
        "nodes": [{"id": node.node_id, "address": node.resp_addr.get().map(|a| a.to_string()), "status": "UP", "role": "LEADER"}],
        "leader": node.node_id,
        "replicationFactor": 1,
        "writeQuorum": 1,
        "readQuorum": 1,
        "slots": crate::slot::SLOTS,
    })
}

/// The replica set of a key, leader first (seed 003's consistent-hash
/// lookup; here the key's slot decides its shard).
async fn key_nodes(
    State(node): State<Shared>,
    Path(key): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Json_>, ApiError> {
    let count = match q.get("count") {
        None => 3,
        Some(c) => match c.parse::<usize>() {
            Ok(n) if n >= 1 => n,
            _ => {
                return Err(bad(format!(
                    "'count' must be a positive integer, not '{c}'"
                )))
            }
        },
    };
    let slot = crate::slot::slot_of(key.as_bytes());
    let Some(cluster) = node.cluster.get() else {
        return Ok(Json(json!({
            "key": key,
            "slot": slot,
            "shard": 0,
            "leader": node.node_id,
            "nodes": [{
                "id": node.node_id,
                "address": node.resp_addr.get().map(|a| a.to_string()),
                "status": "UP",
            }],
        })));
    };
    let shard = cluster
        .shard_of(slot)
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let ids = cluster.replicas_leader_first(&shard);
    let layout = cluster.layout().clone();
    let nodes: Vec<Json_> = ids
        .iter()
        .take(count)
        .map(|id| {
            json!({
                "id": hex(*id),
                "address": layout.nodes.get(id).map(|n| n.resp.clone()),
                "status": if cluster.is_up(*id) { "UP" } else { "DOWN" },
            })
        })
        .collect();
    Ok(Json(json!({
        "key": key,
        "slot": slot,
        "shard": shard.group,
        "leader": cluster.leader_of(&shard).map(|(id, _)| hex(id)),
        "nodes": nodes,
    })))
}

// ---- admin and monitoring ----

async fn admin_flush(
    State(node): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Json_>, ApiError> {
    check_api_key(&node, &headers, &q)?;
    exec(&node, args(&[b"FLUSHALL"])).await?;
    Ok(Json(json!({"success": true})))
}

async fn admin_config(
    State(node): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Json_>, ApiError> {
    check_api_key(&node, &headers, &q)?;
    let mut cfg = serde_json::to_value(&*node.cfg.read())
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    for secret in ["requirepass", "api_key", "cluster_secret"] {
        if cfg.get(secret).is_some_and(|v| !v.is_null()) {
            cfg[secret] = json!("********");
        }
    }
    Ok(Json(cfg))
}

/// The keys used more than `hotkey_threshold_per_min` times in the
/// current or the last full minute, hottest first (seed 000's hotkey
/// manager).
async fn hotkeys(
    State(node): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Json_>, ApiError> {
    check_api_key(&node, &headers, &q)?;
    Ok(Json(json!({
        "threshold_per_min": node.hotkeys.threshold(),
        "hotkeys": node.hotkeys.hot(),
    })))
}

async fn metrics(State(node): State<Shared>) -> Response {
    let groups = node.cluster.get().map(|c| c.group_stats());
    let stats = node.store.stats();
    let sys = crate::ops::system_now(&node);
    let health = crate::ops::node_health(&node, &stats, &sys);
    let monitored = node.monitor.system();
    let gauges = crate::metrics::NodeGauges {
        health_score: health.score,
        health_components: health
            .components
            .iter()
            .map(|c| (c.name, c.score))
            .collect(),
        hot_keys: node.hotkeys.hot().len(),
        tracking_clients: node.tracking.stats().clients,
        disk_free: sys.disk_free(),
        system_memory_free: sys.memory_free(),
        load_per_core: sys.load_per_core(),
        alerts_fired: node.monitor.fired(),
        alerts_firing: node
            .monitor
            .rules()
            .iter()
            .map(|r| (r.rule.name, r.firing))
            .collect(),
        webhook_sent: node.monitor.webhook_sent.load(Ordering::Relaxed),
        webhook_failed: node.monitor.webhook_failed.load(Ordering::Relaxed),
        workers_pool: u64::from(node.pipeline.pool.size()),
        workers_busy: node.pipeline.pool.busy() as u64,
        topic_lag: crate::ops::waiting_here(&node),
        pipeline_events: {
            let c = &node.pipeline.counters;
            [&c.accepted, &c.rejected, &c.late, &c.dead, &c.windows]
                .map(|n| n.load(Ordering::Relaxed))
        },
        tenant_events: node
            .pipeline
            .tenants
            .counts()
            .into_iter()
            .map(|(t, c)| (t, [c.accepted, c.rejected, c.throttled]))
            .collect(),
        cluster_health: node.monitor.cluster_health().map(|c| c.score),
        cpu_percent: monitored.as_ref().map(|m| m.cpu_percent),
        network: monitored.map(|m| (m.network_received, m.network_transmitted)),
    };
    let text = node.metrics.render(&stats, groups.as_ref(), &gauges);
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn openapi() -> Response {
    (
        [("content-type", "application/json")],
        super::openapi::DOCUMENT,
    )
        .into_response()
}
