//! The metric pipeline's HTTP API (seed 004):
//!
//! - `POST /v1/metrics`: a JSON array (or NDJSON, or one object) of
//!   events `{tenant, server_id, metric, value, ts}`. Each is checked on
//!   its own; the good ones are appended to their partitions, the bad
//!   ones listed by index with the reason.
//! - `GET /v1/series`: one-minute points of a series (or of every metric
//!   of a server) over a time range.
//! - `GET /v1/series/stream`: server-sent events, one per window that
//!   closes for a server (or one of its metrics), for live dashboards.
//! - `GET /v1/topics/metrics`: partitions, offsets, lag and watermarks
//!   (admin key).
//! - `GET /v1/tenants`: each tenant's counts on this node.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::Stream;

use axum::body::Bytes as Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::{json, Value};

use super::http::{
    bad, caller_session, check_api_key, error_status, settle, tenant_session, ApiError,
};
use crate::commands::{dispatch, dispatch_pipeline, Reply, Session};
use crate::node::Node;
use crate::pipeline::event::{MetricEvent, SeriesId, Versioned};
use crate::pipeline::schemas::{check_topic, Registered, Unavailable, MAX_SCHEMA_BYTES};
use crate::pipeline::tenants::{Refusal, TenantCounts};
use crate::pipeline::worker::info_field;
use crate::pipeline::{series, Pipeline, TOPIC};
use crate::storage::now_ms;

type Shared = Arc<Node>;

/// The pipeline's routes.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/v1/metrics", post(ingest))
        .route("/v1/series", get(query))
        .route("/v1/series/stream", get(stream))
        .route("/v1/topics/metrics", get(topic))
        .route("/v1/tenants", get(tenants))
        .route("/v1/topics/{topic}/events", post(ingest_topic))
        .route("/v1/schemas", get(schemas_list))
        .route("/v1/schemas/{topic}", get(schema_get).put(schema_put))
}

fn unavailable(e: Unavailable) -> ApiError {
    ApiError(error_status(&e.0), e.0)
}

/// `PUT /v1/schemas/{topic}` (admin key): registers a JSON Schema as the
/// topic's latest version. 201 with the new version, or 200 with the
/// latest one when it already is this schema.
async fn schema_put(
    State(node): State<Shared>,
    Path(topic): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let (only, mut session) = tenant_session(&node)?;
    if only.is_some() {
        return Err(forbidden(
            "schemas are shared by every tenant: the admin key registers them".into(),
        ));
    }
    check_topic(&topic).map_err(bad)?;
    if body.len() > MAX_SCHEMA_BYTES {
        return Err(ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a schema is at most {MAX_SCHEMA_BYTES} bytes of JSON"),
        ));
    }
    let schema: Value =
        serde_json::from_slice(&body).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    let registry = &node.pipeline.schemas;
    let done = registry
        .register(&node, &mut session, &topic, &schema)
        .await
        .map_err(unavailable)?
        .map_err(bad)?;
    settle(&node, &session).await?;
    let (status, version, created) = match done {
        Registered::Created(v) => (StatusCode::CREATED, v, true),
        Registered::Unchanged(v) => (StatusCode::OK, v, false),
    };
    Ok((
        status,
        Json(json!({"topic": topic, "version": version, "created": created})),
    )
        .into_response())
}

/// `GET /v1/schemas`: every topic with a schema, and its latest version.
async fn schemas_list(State(node): State<Shared>) -> Result<Json<Value>, ApiError> {
    let (_, mut session) = tenant_session(&node)?;
    let topics = node
        .pipeline
        .schemas
        .topics(&node, &mut session)
        .await
        .map_err(unavailable)?;
    let list: Vec<Value> = topics
        .into_iter()
        .map(|(topic, version)| json!({"topic": topic, "version": version}))
        .collect();
    Ok(Json(json!({"schemas": list})))
}

/// `GET /v1/schemas/{topic}[?version=N]`: a version of the topic's schema
/// (the latest by default).
async fn schema_get(
    State(node): State<Shared>,
    Path(topic): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let (_, mut session) = tenant_session(&node)?;
    let registry = &node.pipeline.schemas;
    let latest = registry
        .latest(&node, &mut session, &topic)
        .await
        .map_err(unavailable)?;
    let not_found = || {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("topic '{topic}' has no schema"),
        )
    };
    let latest = latest.ok_or_else(not_found)?;
    let version = match q.get("version") {
        None => latest,
        Some(v) => v
            .parse::<u32>()
            .map_err(|_| bad("parameter 'version' must be a version number"))?,
    };
    let schema = registry
        .source(&node, &mut session, &topic, version)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| {
            ApiError(
                StatusCode::NOT_FOUND,
                format!("topic '{topic}' has no schema version {version} (latest: {latest})"),
            )
        })?;
    Ok(Json(json!({
        "topic": topic,
        "version": version,
        "latest": latest,
        "schema": schema,
    })))
}

fn forbidden(msg: String) -> ApiError {
    ApiError(StatusCode::FORBIDDEN, msg)
}

/// The events of a request body: a JSON array, a single object, or one
/// object per line (NDJSON). A line that isn't JSON is that event's error.
fn events(body: &[u8]) -> Result<Vec<Result<Value, String>>, ApiError> {
    let trimmed = body.trim_ascii_start();
    match trimmed.first() {
        None => Err(bad("empty body: send a JSON array of events or NDJSON")),
        Some(b'[') => match serde_json::from_slice::<Vec<Value>>(trimmed) {
            Ok(items) => Ok(items.into_iter().map(Ok).collect()),
            Err(e) => Err(bad(format!("invalid JSON: {e}"))),
        },
        Some(_) => Ok(trimmed
            .split(|&c| c == b'\n')
            .filter(|line| !line.trim_ascii().is_empty())
            .map(|line| serde_json::from_slice(line).map_err(|e| format!("invalid JSON: {e}")))
            .collect()),
    }
}

async fn ingest(State(node): State<Shared>, body: Body) -> Result<Response, ApiError> {
    ingest_to(node, TOPIC, body).await
}

/// `POST /v1/topics/{topic}/events`: the same as `/v1/metrics`, for a
/// topic with a registered schema.
async fn ingest_topic(
    State(node): State<Shared>,
    Path(topic): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    ingest_to(node, &topic, body).await
}

/// Checks a batch of `topic`'s events and appends the good ones.
async fn ingest_to(node: Shared, topic: &str, body: Body) -> Result<Response, ApiError> {
    let (only, mut session) = tenant_session(&node)?;
    let schema = node
        .pipeline
        .schemas
        .current(&node, &mut session, topic)
        .await
        .map_err(unavailable)?;
    let schema = match schema.as_deref() {
        None if topic != TOPIC => {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("no topic '{topic}': register its schema with PUT /v1/schemas/{topic}"),
            ))
        }
        None => None,
        Some(Ok(compiled)) => Some(compiled),
        Some(Err(why)) => return Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, why.clone())),
    };
    let mut items = events(&body)?;
    if let Some(t) = &only {
        // A tenant's key writes its own events; `tenant` may be left out.
        for (i, item) in items.iter_mut().enumerate() {
            let Ok(Value::Object(ev)) = item else {
                continue;
            };
            match ev.get("tenant") {
                None => {
                    ev.insert("tenant".into(), Value::String(t.clone()));
                }
                Some(Value::String(other)) if other != t => {
                    return Err(forbidden(format!(
                        "event {i} is of tenant '{other}'; this key writes only tenant '{t}' (nothing was stored)"
                    )));
                }
                Some(_) => {}
            }
        }
    }
    let now = now_ms() as i64;
    let layout = &node.pipeline.layout;
    let mut errors = Vec::new();
    let mut checked: Vec<Checked> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let judged = item.as_ref().map_err(Clone::clone).and_then(|v| {
            let ev = MetricEvent::from_json(v, now)?;
            let fields = match schema {
                None => ev
                    .fields(v.get("ts").and_then(Value::as_f64).unwrap_or_default())
                    .to_vec(),
                Some(compiled) => {
                    compiled.check(v)?;
                    Versioned::fields(topic, compiled.version, v).to_vec()
                }
            };
            Ok((ev, fields))
        });
        match judged {
            Ok((ev, fields)) => {
                let p = layout.partition_of(&ev.series.tenant, &ev.series.server_id);
                let mut cmd = vec![
                    Bytes::from_static(b"XADD"),
                    Bytes::from(layout.stream(p)),
                    Bytes::from_static(b"*"),
                ];
                for (f, v) in fields {
                    cmd.push(Bytes::from_static(f.as_bytes()));
                    cmd.push(Bytes::from(v));
                }
                checked.push(Checked {
                    index: i,
                    series: ev.series,
                    cmd,
                });
            }
            Err(why) => errors.push((i, why, false)),
        }
    }
    // Every tenant's quota has room for its events, or nothing is stored.
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for c in &checked {
        *want.entry(c.series.tenant.clone()).or_default() += 1;
    }
    let quotas = node.cfg.read().streams.tenants.clone();
    if let Err(refusal) = node.pipeline.tenants.admit(&quotas, &want, Instant::now()) {
        for (t, n) in &want {
            node.pipeline.tenants.count(
                t,
                TenantCounts {
                    throttled: *n,
                    ..TenantCounts::default()
                },
            );
        }
        return Ok(refused(&quotas, refusal));
    }
    let mut per_tenant: BTreeMap<String, TenantCounts> = BTreeMap::new();
    let capped = cap_series(&node, &mut session, &quotas, &checked).await?;
    checked.retain(|c| match capped.get(&c.index) {
        None => true,
        Some(why) => {
            errors.push((c.index, why.clone(), false));
            per_tenant
                .entry(c.series.tenant.clone())
                .or_default()
                .rejected += 1;
            false
        }
    });
    let (cmds, placed): (Vec<_>, Vec<_>) = checked
        .into_iter()
        .map(|c| (c.cmd, (c.index, c.series.tenant)))
        .unzip();
    let mut replies = Vec::with_capacity(cmds.len());
    dispatch_pipeline(&node, &mut session, &cmds, &mut replies).await;
    // Nothing is acknowledged before it is as durable as promised.
    settle(&node, &session).await?;
    let mut accepted = 0u64;
    for ((index, tenant), reply) in placed.into_iter().zip(replies) {
        let counts = per_tenant.entry(tenant).or_default();
        match reply {
            Reply::Error(e) => {
                let unavailable = error_status(&e) != StatusCode::BAD_REQUEST;
                errors.push((index, e, unavailable));
                counts.rejected += 1;
            }
            _ => {
                accepted += 1;
                counts.accepted += 1;
            }
        }
    }
    // Events refused at the door count for the key's tenant, when known.
    let refused_here = errors.len() as u64 - per_tenant.values().map(|c| c.rejected).sum::<u64>();
    if let (Some(t), true) = (only, refused_here > 0) {
        per_tenant.entry(t).or_default().rejected += refused_here;
    }
    for (t, c) in per_tenant {
        node.pipeline.tenants.count(&t, c);
    }
    errors.sort_by_key(|e| e.0);
    let rejected = errors.len() as u64;
    let counters = &node.pipeline.counters;
    Pipeline::count(&counters.accepted, accepted);
    Pipeline::count(&counters.rejected, rejected);
    let status = if accepted > 0 || items.is_empty() {
        StatusCode::OK
    } else if errors.iter().any(|e| e.2) {
        // Refused for want of a quorum or a healthy log: try again.
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::BAD_REQUEST
    };
    let errors: Vec<Value> = errors
        .into_iter()
        .map(|(index, error, _)| json!({"index": index, "error": error}))
        .collect();
    Ok((
        status,
        Json(json!({"accepted": accepted, "rejected": rejected, "errors": errors})),
    )
        .into_response())
}

/// An event that passed the schemas: its index in the batch, its series
/// and the command that appends it.
struct Checked {
    index: usize,
    series: SeriesId,
    cmd: Vec<Bytes>,
}

/// The events (by index in the batch) whose series would go past their
/// tenant's `max_series`, with the reason.
async fn cap_series(
    node: &Node,
    session: &mut Session,
    quotas: &crate::pipeline::tenants::TenantsConfig,
    checked: &[Checked],
) -> Result<BTreeMap<usize, String>, ApiError> {
    let mut by_tenant: BTreeMap<&str, Vec<&SeriesId>> = BTreeMap::new();
    for s in checked.iter().map(|c| &c.series) {
        if quotas.get(&s.tenant).is_some_and(|t| t.max_series > 0) {
            let list = by_tenant.entry(&s.tenant).or_default();
            if !list.contains(&s) {
                list.push(s);
            }
        }
    }
    let mut out = BTreeMap::new();
    if by_tenant.is_empty() {
        return Ok(out);
    }
    let horizon = series_horizon_ms(node);
    for (tenant, list) in by_tenant {
        let cap = quotas[tenant].max_series;
        let list: Vec<SeriesId> = list.into_iter().cloned().collect();
        let ok = node
            .pipeline
            .series_cap
            .admit(node, session, tenant, cap, horizon, &list)
            .await
            .map_err(unavailable)?;
        for (s, _) in list.iter().zip(ok).filter(|(_, ok)| !ok) {
            for c in checked.iter().filter(|c| c.series == *s) {
                out.insert(
                    c.index,
                    format!(
                        "tenant '{tenant}' has its maximum of {cap} live series; this event would start another ({} of {})",
                        s.metric, s.server_id
                    ),
                );
            }
        }
    }
    Ok(out)
}

/// How long a series stays live after its last event: its ring's span.
fn series_horizon_ms(node: &Node) -> u64 {
    u64::from(node.cfg.read().streams.retention_slots) * series::STEP as u64 * 1000
}

/// The answer to a batch a tenant's quota can't take.
fn refused(quotas: &crate::pipeline::tenants::TenantsConfig, r: Refusal) -> Response {
    match r {
        Refusal::Wait(wait) => {
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", secs.to_string())],
                Json(json!({
                    "error": format!("over the tenant's quota of events a second; retry after {secs} s (nothing was stored)"),
                    "retry_after_secs": secs,
                })),
            )
                .into_response()
        }
        Refusal::TooBig { tenant, burst } => {
            let rate = quotas.get(&tenant).map_or(0, |t| t.events_per_sec);
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                Json(json!({
                    "error": format!("the batch has more events of tenant '{tenant}' than its quota ever admits at once ({burst}: {rate} a second, burst_secs of them saved up); send smaller batches (nothing was stored)"),
                })),
            )
                .into_response()
        }
    }
}

/// `GET /v1/tenants`: each tenant's counts on this node (a tenant's key
/// sees its own).
async fn tenants(State(node): State<Shared>) -> Result<Json<Value>, ApiError> {
    let (only, mut session) = tenant_session(&node)?;
    let configured = node.cfg.read().streams.tenants.clone();
    let mut counts = node.pipeline.tenants.counts();
    for t in configured.keys() {
        counts.entry(t.clone()).or_default();
    }
    let horizon = series_horizon_ms(&node);
    let mut list = Vec::new();
    for (t, c) in counts {
        if only.as_ref().is_some_and(|o| *o != t) {
            continue;
        }
        let quota = configured.get(&t);
        // Live series are counted where a cap makes the door keep them.
        let series = match quota.filter(|q| q.max_series > 0) {
            None => None,
            Some(_) => Some(
                node.pipeline
                    .series_cap
                    .live(&node, &mut session, &t, horizon)
                    .await
                    .map_err(unavailable)?,
            ),
        };
        list.push(json!({
            "tenant": t,
            "accepted": c.accepted,
            "rejected": c.rejected,
            "throttled": c.throttled,
            "events_per_sec": quota.map(|q| q.events_per_sec),
            "burst_secs": quota.map(|q| q.burst_secs),
            "max_series": quota.map(|q| q.max_series),
            "live_series": series,
        }));
    }
    Ok(Json(json!({"tenants": list})))
}

/// Runs a read as the caller.
async fn read(node: &Node, session: &mut Session, args: &[&[u8]]) -> Result<Reply, ApiError> {
    let args: Vec<Bytes> = args.iter().map(|a| Bytes::copy_from_slice(a)).collect();
    match dispatch(node, session, &args).await {
        Reply::Error(e) => Err(ApiError(error_status(&e), e)),
        r => Ok(r),
    }
}

/// Bulk strings of an array, map or set reply, in order.
fn bulks(r: Reply) -> Vec<Bytes> {
    let items = match r {
        Reply::Array(a) | Reply::Set(a) => a,
        Reply::Map(m) => m.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        _ => Vec::new(),
    };
    items
        .into_iter()
        .filter_map(|i| match i {
            Reply::Bulk(b) => Some(b),
            _ => None,
        })
        .collect()
}

fn time_param(q: &HashMap<String, String>, name: &str, default: i64) -> Result<i64, ApiError> {
    match q.get(name) {
        None => Ok(default),
        Some(v) => v
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .map(|x| x.floor() as i64)
            .ok_or_else(|| bad(format!("parameter '{name}' must be epoch seconds"))),
    }
}

fn required<'a>(q: &'a HashMap<String, String>, name: &str) -> Result<&'a str, ApiError> {
    match q.get(name).map(String::as_str) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(bad(format!("missing parameter '{name}'"))),
    }
}

async fn points(
    node: &Node,
    session: &mut Session,
    s: &SeriesId,
    from: i64,
    to: i64,
) -> Result<Vec<Value>, ApiError> {
    let key = node.pipeline.layout.series(s);
    let raw = bulks(read(node, session, &[b"HGETALL", key.as_bytes()]).await?);
    let stored: Vec<_> = raw
        .chunks_exact(2)
        .filter_map(|kv| series::decode(&kv[1]))
        .collect();
    let slots = node.cfg.read().streams.retention_slots;
    Ok(series::select(stored, slots, from, to)
        .iter()
        .map(series::to_json)
        .collect())
}

async fn query(
    State(node): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let (only, mut session) = tenant_session(&node)?;
    let tenant = required(&q, "tenant")?;
    if let Some(t) = only.as_ref().filter(|t| *t != tenant) {
        return Err(forbidden(format!(
            "this key reads only tenant '{t}', not '{tenant}'"
        )));
    }
    let server_id = required(&q, "server_id")?;
    let from = time_param(&q, "from", i64::MIN)?;
    let to = time_param(&q, "to", i64::MAX)?;
    if from > to {
        return Err(bad("'from' is after 'to'"));
    }
    let series_of = |metric: &str| SeriesId {
        tenant: tenant.to_string(),
        server_id: server_id.to_string(),
        metric: metric.to_string(),
    };
    if let Some(metric) = q.get("metric").filter(|m| !m.is_empty()) {
        let pts = points(&node, &mut session, &series_of(metric), from, to).await?;
        return Ok(Json(json!({
            "tenant": tenant,
            "server_id": server_id,
            "metric": metric,
            "step": series::STEP,
            "points": pts,
        })));
    }
    let index = node.pipeline.layout.metric_index(tenant, server_id);
    let mut metrics: Vec<String> =
        bulks(read(&node, &mut session, &[b"SMEMBERS", index.as_bytes()]).await?)
            .iter()
            .map(|m| String::from_utf8_lossy(m).into_owned())
            .collect();
    metrics.sort();
    let mut out = Vec::with_capacity(metrics.len());
    for m in metrics {
        let pts = points(&node, &mut session, &series_of(&m), from, to).await?;
        out.push(json!({"metric": m, "points": pts}));
    }
    Ok(Json(json!({
        "tenant": tenant,
        "server_id": server_id,
        "step": series::STEP,
        "series": out,
    })))
}

/// How often a live series stream looks for windows that closed.
const STREAM_EVERY: Duration = Duration::from_secs(1);

/// One client's live series stream.
struct Watch {
    node: Shared,
    tenant: String,
    server_id: String,
    metric: Option<String>,
    /// Newest point sent per metric (epoch seconds).
    sent: HashMap<String, i64>,
    /// Points at or after this go out on the first look (None: only
    /// windows that close after the stream opened).
    from: Option<i64>,
    /// The partition's count of stored windows at the last look.
    windows: Option<u64>,
    ready: std::collections::VecDeque<Event>,
}

impl Watch {
    /// Reads the server's series when its partition stored windows since
    /// the last look, and queues every point not sent yet.
    async fn look(&mut self) -> Result<(), ApiError> {
        let node = self.node.clone();
        let layout = &node.pipeline.layout;
        let mut session = caller_session(&node)?;
        let p = layout.partition_of(&self.tenant, &self.server_id);
        let windows = match read(&node, &mut session, &[b"GET", layout.state(p).as_bytes()]).await?
        {
            Reply::Bulk(raw) => serde_json::from_slice::<Value>(&raw)
                .ok()
                .and_then(|v| v.get("windows").and_then(Value::as_u64)),
            _ => None,
        };
        let first = self.windows.is_none() && self.sent.is_empty();
        if !first && windows == self.windows {
            return Ok(());
        }
        self.windows = windows.or(Some(0));
        let metrics = match &self.metric {
            Some(m) => vec![m.clone()],
            None => {
                let index = layout.metric_index(&self.tenant, &self.server_id);
                bulks(read(&node, &mut session, &[b"SMEMBERS", index.as_bytes()]).await?)
                    .iter()
                    .map(|m| String::from_utf8_lossy(m).into_owned())
                    .collect()
            }
        };
        for metric in metrics {
            let id = SeriesId {
                tenant: self.tenant.clone(),
                server_id: self.server_id.clone(),
                metric: metric.clone(),
            };
            let after = self.sent.get(&metric).copied();
            let since = after.map_or(self.from.unwrap_or(i64::MIN), |t| t + 1);
            let pts = points(&node, &mut session, &id, since, i64::MAX).await?;
            let newest = pts.iter().filter_map(|p| p["ts"].as_i64()).max();
            if let Some(t) = newest {
                self.sent.insert(metric.clone(), t);
            }
            if first && self.from.is_none() {
                // Windows closed before the stream opened are not news.
                continue;
            }
            for point in pts {
                let ts = point["ts"].as_i64().unwrap_or_default();
                let data = json!({
                    "tenant": self.tenant,
                    "server_id": self.server_id,
                    "metric": metric,
                    "point": point,
                });
                self.ready.push_back(
                    Event::default()
                        .event("point")
                        .id(ts.to_string())
                        .data(data.to_string()),
                );
            }
        }
        Ok(())
    }
}

/// `GET /v1/series/stream?tenant=T&server_id=S[&metric=M][&from=F]`:
/// server-sent events, `event: point` with `{tenant, server_id, metric,
/// point}`, one per window that closes (and, with `from`, the points
/// already stored from then on). The node serving the stream reads the
/// series where they live, so it works on any node of a cluster and
/// through failovers.
async fn stream(
    State(node): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let (only, _) = tenant_session(&node)?;
    let tenant = required(&q, "tenant")?.to_string();
    if let Some(t) = only.as_ref().filter(|t| **t != tenant) {
        return Err(forbidden(format!(
            "this key reads only tenant '{t}', not '{tenant}'"
        )));
    }
    let server_id = required(&q, "server_id")?.to_string();
    let from = match q.get("from") {
        Some(_) => Some(time_param(&q, "from", 0)?),
        None => None,
    };
    let watch = Watch {
        node,
        tenant,
        server_id,
        metric: q.get("metric").filter(|m| !m.is_empty()).cloned(),
        sent: HashMap::new(),
        from,
        windows: None,
        ready: std::collections::VecDeque::new(),
    };
    let events = futures_util::stream::unfold((watch, true), |(mut w, first)| async move {
        if let Some(ev) = w.ready.pop_front() {
            return Some((Ok(ev), (w, first)));
        }
        if !first {
            tokio::time::sleep(STREAM_EVERY).await;
        }
        let ev = match w.look().await {
            Ok(()) => w
                .ready
                .pop_front()
                .unwrap_or_else(|| Event::default().comment("")),
            // Between leaders, say: look again at the next tick.
            Err(ApiError(_, why)) => Event::default().comment(why),
        };
        Some((Ok(ev), (w, false)))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

async fn topic(
    State(node): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    check_api_key(&node, &headers, &q)?;
    let (only, mut session) = tenant_session(&node)?;
    if only.is_some() {
        return Err(forbidden(
            "the topic's partitions are shared by every tenant: the admin key reads them".into(),
        ));
    }
    let layout = &node.pipeline.layout;
    let cfg = node.cfg.read().streams.clone();
    let here = node.pipeline.running.lock().clone();
    let mut parts = Vec::with_capacity(layout.partitions());
    for p in 0..layout.partitions() {
        let stream = layout.stream(p);
        let length = match read(&node, &mut session, &[b"XLEN", stream.as_bytes()]).await? {
            Reply::Int(n) => n,
            _ => 0,
        };
        let state: Value =
            match read(&node, &mut session, &[b"GET", layout.state(p).as_bytes()]).await? {
                Reply::Bulk(raw) => serde_json::from_slice(&raw).unwrap_or(Value::Null),
                _ => Value::Null,
            };
        let added = match read(
            &node,
            &mut session,
            &[b"XINFO", b"STREAM", stream.as_bytes()],
        )
        .await
        {
            Ok(info) => info_field(&info, "entries-added").unwrap_or(0),
            Err(_) => 0,
        };
        let read_n = state.get("read").and_then(Value::as_u64).unwrap_or(0);
        let late: u64 = state
            .get("late")
            .and_then(Value::as_object)
            .map_or(0, |m| m.values().filter_map(Value::as_u64).sum());
        parts.push(json!({
            "partition": p,
            "stream": stream,
            "length": length,
            "committed": state.get("pos").cloned().unwrap_or(Value::Null),
            "lag": added.saturating_sub(read_n),
            "watermark_ms": here.get(&p).and_then(|s| s.watermark_ms),
            "open_windows": here.get(&p).map(|s| s.open_windows),
            "worker_here": here.contains_key(&p),
            "late": late,
            "late_by_tenant": state.get("late").cloned().unwrap_or(json!({})),
            "dead_lettered": state.get("dead").cloned().unwrap_or(json!(0)),
            "dead_letter_stream": layout.dead(p),
            "windows_stored": state.get("windows").cloned().unwrap_or(json!(0)),
        }));
    }
    let c = &node.pipeline.counters;
    let n = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    Ok(Json(json!({
        "topic": TOPIC,
        "partitions": layout.partitions(),
        "allowed_lateness_secs": cfg.allowed_lateness_secs,
        "retention_slots": cfg.retention_slots,
        "log_retention_secs": cfg.log_retention_secs,
        "log_retention_max_len": cfg.log_retention_max_len,
        "node": {
            "accepted": n(&c.accepted),
            "rejected": n(&c.rejected),
            "late": n(&c.late),
            "dead_lettered": n(&c.dead),
            "windows_stored": n(&c.windows),
        },
        "partition": parts,
    })))
}
