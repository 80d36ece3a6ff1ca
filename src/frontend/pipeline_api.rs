//! The metric pipeline's HTTP API (seed 004):
//!
//! - `POST /v1/metrics`: a JSON array (or NDJSON, or one object) of
//!   events `{tenant, server_id, metric, value, ts}`. Each is checked on
//!   its own; the good ones are appended to their partitions, the bad
//!   ones listed by index with the reason.
//! - `GET /v1/series`: one-minute points of a series (or of every metric
//!   of a server) over a time range.
//! - `GET /v1/topics/metrics`: partitions, offsets, lag and watermarks
//!   (admin key).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes as Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::{json, Value};

use super::http::{bad, caller_session, check_api_key, error_status, settle, ApiError};
use crate::commands::{dispatch, dispatch_pipeline, Reply, Session};
use crate::node::Node;
use crate::pipeline::event::{MetricEvent, SeriesId};
use crate::pipeline::worker::info_field;
use crate::pipeline::{series, Pipeline, TOPIC};
use crate::storage::now_ms;

type Shared = Arc<Node>;

/// The pipeline's routes.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/v1/metrics", post(ingest))
        .route("/v1/series", get(query))
        .route("/v1/topics/metrics", get(topic))
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
    let items = events(&body)?;
    let now = now_ms() as i64;
    let layout = &node.pipeline.layout;
    let mut errors = Vec::new();
    let mut cmds = Vec::with_capacity(items.len());
    let mut index_of = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let checked = item.as_ref().map_err(Clone::clone).and_then(|v| {
            let ev = MetricEvent::from_json(v, now)?;
            let ts = v.get("ts").and_then(Value::as_f64).unwrap_or_default();
            Ok((ev, ts))
        });
        match checked {
            Ok((ev, ts)) => {
                let p = layout.partition_of(&ev.series.tenant, &ev.series.server_id);
                let mut cmd = vec![
                    Bytes::from_static(b"XADD"),
                    Bytes::from(layout.stream(p)),
                    Bytes::from_static(b"*"),
                ];
                for (f, v) in ev.fields(ts) {
                    cmd.push(Bytes::from_static(f.as_bytes()));
                    cmd.push(Bytes::from(v));
                }
                cmds.push(cmd);
                index_of.push(i);
            }
            Err(why) => errors.push((i, why, false)),
        }
    }
    let mut session = caller_session(&node)?;
    let mut replies = Vec::with_capacity(cmds.len());
    dispatch_pipeline(&node, &mut session, &cmds, &mut replies).await;
    // Nothing is acknowledged before it is as durable as promised.
    settle(&node, &session).await?;
    let mut accepted = 0u64;
    for (k, reply) in replies.into_iter().enumerate() {
        match reply {
            Reply::Error(e) => {
                let unavailable = error_status(&e) != StatusCode::BAD_REQUEST;
                errors.push((index_of[k], e, unavailable));
            }
            _ => accepted += 1,
        }
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
    let tenant = required(&q, "tenant")?;
    let server_id = required(&q, "server_id")?;
    let from = time_param(&q, "from", i64::MIN)?;
    let to = time_param(&q, "to", i64::MAX)?;
    if from > to {
        return Err(bad("'from' is after 'to'"));
    }
    let mut session = caller_session(&node)?;
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

async fn topic(
    State(node): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    check_api_key(&node, &headers, &q)?;
    let mut session = caller_session(&node)?;
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
