//! Seed 001's monitoring API and the alert history.
//!
//! - `GET /api/monitoring?apiKey=K[&action=A]`: the overall status, or
//!   one of `system_metrics`, `redis_cluster`, `redis_performance`,
//!   `queue_metrics`, `scaling_status`, `health_check`.
//! - `POST /api/monitoring` with `{"action": ..., "apiKey": ...}`:
//!   `start_monitoring` / `stop_monitoring` (`intervalMinutes`),
//!   `start_autoscaling` / `stop_autoscaling` (`intervalMinutes`),
//!   `manual_scale` (`queueName`, `targetWorkers`, `reason`),
//!   `update_scaling_config` (`queueName` and any of `minWorkers`,
//!   `maxWorkers`, `targetWaitingJobs`, `scaleUpThreshold`,
//!   `scaleDownThreshold`, `cooldownPeriod` in minutes, `enabled`).
//! - `GET /api/alerts[?limit=N]`: recent alerts, newest first, and the
//!   rules with their state.
//!
//! The key is `CRON_API_KEY` (or `api_key`), in the query, the
//! `X-API-Key` header or the body. Answers are `{"success": true,
//! "data": ..., "timestamp": ms}`; errors `{"success": false, "error"}`
//! with 400 (bad body) or 401 (wrong or missing key), and change nothing.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes as Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use super::http::{bad, check_api_key, health_json, topology_json, ApiError};
use crate::node::Node;
use crate::ops::MAX_INTERVAL;
use crate::pipeline::scaling::{ScalingConfig, MAX_POOL};
use crate::pipeline::TOPIC;
use crate::storage::now_ms;

type Shared = Arc<Node>;

/// The monitoring routes.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/monitoring", get(read).post(act))
        .route("/api/alerts", get(alerts))
}

fn answer(data: Value) -> Json<Value> {
    Json(json!({"success": true, "data": data, "timestamp": now_ms()}))
}

async fn read(
    State(node): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    check_api_key(&node, &headers, &q)?;
    let data = match q.get("action").map(String::as_str) {
        None | Some("") | Some("status") => overall(&node),
        Some("system_metrics") => system_metrics(&node),
        Some("redis_cluster") => topology_json(&node),
        Some("redis_performance") => performance(&node),
        Some("queue_metrics") => queue_metrics(&node),
        Some("scaling_status") => scaling_status(&node),
        Some("health_check") => health_json(&node).1,
        Some(other) => {
            return Err(bad(format!(
                "unknown action {other:?}: use system_metrics, redis_cluster, redis_performance, queue_metrics, scaling_status or health_check"
            )))
        }
    };
    Ok(answer(data))
}

async fn alerts(
    State(node): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    check_api_key(&node, &headers, &q)?;
    let limit = match q.get("limit") {
        None => 100,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| bad("limit must be a positive number"))?,
    };
    let rules = node.monitor.rules();
    Ok(Json(json!({
        "alerts": node.monitor.alerts(limit),
        "firing": rules.iter().filter(|r| r.firing).map(|r| r.rule.name).collect::<Vec<_>>(),
        "rules": rules,
        "webhook": {
            "url": node.cfg.read().alert_webhook_url,
            "sent": node.monitor.webhook_sent.load(Ordering::Relaxed),
            "failed": node.monitor.webhook_failed.load(Ordering::Relaxed),
        },
    })))
}

fn overall(node: &Node) -> Value {
    let (status, health) = health_json(node);
    let (mon, every) = node.monitor.monitoring();
    let (scale, scale_every) = node.monitor.autoscaling();
    let rules = node.monitor.rules();
    json!({
        "status": if status.is_success() { health["health_status"].clone() } else { json!("critical") },
        "health": {
            "score": health["health_score"],
            "status": health["health_status"],
            "cluster": health.get("cluster_health"),
        },
        "node_id": node.node_id,
        "uptime_secs": node.started.elapsed().as_secs(),
        "monitoring": {"running": mon, "intervalMinutes": every.as_secs_f64() / 60.0},
        "autoscaling": {"running": scale, "intervalMinutes": scale_every.as_secs_f64() / 60.0},
        "alerts": {
            "firing": rules.iter().filter(|r| r.firing).map(|r| r.rule.name).collect::<Vec<_>>(),
            "recent": node.monitor.alerts(5),
        },
    })
}

fn system_metrics(node: &Node) -> Value {
    let s = crate::ops::system_now(node);
    let used = s.memory_total.saturating_sub(s.memory_available);
    json!({
        "cpu": {
            "usage_percent": s.cpu_percent,
            "cores": s.cores,
            "load_average": s.load_average,
            "load_per_core": s.load_per_core(),
        },
        "memory": {
            "total": s.memory_total,
            "available": s.memory_available,
            "used": used,
            "usage_percent": if s.memory_total > 0 { 100.0 * used as f64 / s.memory_total as f64 } else { 0.0 },
        },
        "disk": {
            "path": node.store.config().data_dir,
            "total": s.disk_total,
            "available": s.disk_available,
            "usage_percent": s.disk_free().map(|f| 100.0 * (1.0 - f)),
        },
        "network": {
            "received_bytes": s.network_received,
            "transmitted_bytes": s.network_transmitted,
            "rx_bytes_per_sec": s.network_rx_per_sec,
            "tx_bytes_per_sec": s.network_tx_per_sec,
        },
        "process": {
            "pid": std::process::id(),
            "rss_bytes": s.process_rss,
            "uptime_secs": node.started.elapsed().as_secs(),
        },
        "system_uptime_secs": s.system_uptime_secs,
    })
}

fn performance(node: &Node) -> Value {
    let st = node.store.stats();
    let samples = node.monitor.samples();
    let reads = st.hits_memory + st.hits_disk + st.misses;
    let ratio = |n: u64| {
        if reads == 0 {
            0.0
        } else {
            n as f64 / reads as f64
        }
    };
    json!({
        "ops_per_sec": samples.last().map_or(0.0, |s| s.ops_per_sec),
        "commands_total": node.total_commands.load(Ordering::Relaxed),
        "latency_seconds": node.monitor.latency(),
        "ping_seconds": node.monitor.probe_secs(),
        "connected_clients": node.clients.lock().len(),
        "hit_ratio": {
            "memory": ratio(st.hits_memory),
            "disk": ratio(st.hits_disk),
            "miss": ratio(st.misses),
        },
        "tiers": {
            "memory": {"keys": st.entries_memory, "bytes": st.used_bytes, "cap_bytes": st.tier_cap_bytes, "hits": st.hits_memory},
            "disk": {"keys": st.entries_disk, "bytes": st.disk_bytes, "hits": st.hits_disk},
        },
        "spilled": st.spilled,
        "offloaded": st.offloaded,
        "promotions": st.promotions,
        "misses": st.misses,
    })
}

fn queue_metrics(node: &Node) -> Value {
    let c = &node.pipeline.counters;
    let parts = node.monitor.partitions();
    let running = node.pipeline.running.lock().clone();
    json!({
        "queues": [{
            "queueName": TOPIC,
            "partitions": parts.len(),
            "waiting": parts.iter().map(|p| p.lag).sum::<u64>(),
            "length": parts.iter().map(|p| p.length).sum::<u64>(),
            "active": node.pipeline.pool.busy(),
            "workers": node.pipeline.pool.size(),
            "accepted": c.accepted.load(Ordering::Relaxed),
            "rejected": c.rejected.load(Ordering::Relaxed),
            "late": c.late.load(Ordering::Relaxed),
            "deadLettered": c.dead.load(Ordering::Relaxed),
            "windowsStored": c.windows.load(Ordering::Relaxed),
            "partitionDetails": parts.iter().map(|p| json!({
                "partition": p.partition,
                "stream": p.stream,
                "length": p.length,
                "lag": p.lag,
                "committed": p.committed,
                "workerHere": p.worker_here,
                "watermark_ms": running.get(&p.partition).and_then(|s| s.watermark_ms),
            })).collect::<Vec<_>>(),
        }],
    })
}

fn scaling_json(node: &Node, cfg: &ScalingConfig, partitions: usize) -> Value {
    let (min, max) = cfg.bounds(partitions);
    json!({
        "queueName": TOPIC,
        "currentWorkers": node.pipeline.pool.size(),
        "activeWorkers": node.pipeline.pool.busy(),
        "minWorkers": min,
        "maxWorkers": max,
        "targetWaitingJobs": cfg.target_waiting,
        "scaleUpThreshold": cfg.scale_up_threshold,
        "scaleDownThreshold": cfg.scale_down_threshold,
        "cooldownPeriod": cfg.cooldown_secs as f64 / 60.0,
        "enabled": cfg.enabled,
        "waitingJobs": crate::ops::waiting_here(node),
        "loadFactor": node.monitor.load_factor(),
    })
}

fn scaling_status(node: &Node) -> Value {
    let (cfg, partitions) = {
        let c = node.cfg.read();
        (c.streams.scaling.clone(), c.streams.partitions as usize)
    };
    let (on, every) = node.monitor.autoscaling();
    json!({
        "running": on,
        "intervalMinutes": every.as_secs_f64() / 60.0,
        "queues": [scaling_json(node, &cfg, partitions)],
        "history": node.pipeline.pool.actions.lock().iter().rev().cloned().collect::<Vec<_>>(),
    })
}

/// The body's fields, with the key checked (body, header or query).
fn body_fields(
    node: &Node,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
    body: &[u8],
) -> Result<Map<String, Value>, ApiError> {
    let parsed: Result<Value, _> = serde_json::from_slice(body);
    let key = match &parsed {
        Ok(Value::Object(m)) => m.get("apiKey").and_then(Value::as_str),
        _ => None,
    };
    let mut q = q.clone();
    if let Some(k) = key {
        q.entry("apiKey".into()).or_insert_with(|| k.to_string());
    }
    // The key first: a caller without it learns nothing about the body.
    check_api_key(node, headers, &q)?;
    match parsed {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(bad("the body must be a JSON object")),
        Err(e) => Err(bad(format!("invalid JSON: {e}"))),
    }
}

fn minutes(m: &Map<String, Value>, field: &str) -> Result<Option<f64>, ApiError> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(x)
                if x.is_finite()
                    && x * 60.0 >= crate::ops::MIN_INTERVAL
                    && x * 60.0 <= MAX_INTERVAL =>
            {
                Ok(Some(x * 60.0))
            }
            _ => Err(bad(format!(
                "{field} must be a number of minutes from 0.004 (0.2 s) to 1440"
            ))),
        },
    }
}

fn uint(m: &Map<String, Value>, field: &str, max: u64) -> Result<Option<u64>, ApiError> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|n| *n <= max)
            .map(Some)
            .ok_or_else(|| bad(format!("{field} must be a whole number from 0 to {max}"))),
    }
}

fn number(m: &Map<String, Value>, field: &str) -> Result<Option<f64>, ApiError> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|x| x.is_finite() && *x >= 0.0)
            .map(Some)
            .ok_or_else(|| bad(format!("{field} must be a number of 0 or more"))),
    }
}

fn queue(m: &Map<String, Value>) -> Result<(), ApiError> {
    match m.get("queueName") {
        Some(Value::String(q)) if q == TOPIC => Ok(()),
        Some(Value::String(q)) => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no queue {q:?}: the topic with workers is {TOPIC:?}"),
        )),
        _ => Err(bad("queueName must be given, as a string")),
    }
}

async fn act(
    State(node): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let m = body_fields(&node, &headers, &q, &body)?;
    let action = match m.get("action") {
        Some(Value::String(a)) => a.as_str(),
        _ => return Err(bad("action must be given, as a string")),
    };
    let data = match action {
        "start_monitoring" => {
            let every = minutes(&m, "intervalMinutes")?;
            node.monitor.set_monitoring(true, every);
            let (_, every) = node.monitor.monitoring();
            json!({"message": "monitoring started", "intervalMinutes": every.as_secs_f64() / 60.0})
        }
        "stop_monitoring" => {
            node.monitor.set_monitoring(false, None);
            json!({"message": "monitoring stopped"})
        }
        "start_autoscaling" => {
            let every = minutes(&m, "intervalMinutes")?;
            node.monitor.set_autoscaling(true, every);
            let (_, every) = node.monitor.autoscaling();
            json!({"message": "autoscaling started", "intervalMinutes": every.as_secs_f64() / 60.0})
        }
        "stop_autoscaling" => {
            node.monitor.set_autoscaling(false, None);
            json!({"message": "autoscaling stopped"})
        }
        "manual_scale" => {
            queue(&m)?;
            let target = uint(&m, "targetWorkers", u64::from(MAX_POOL))?
                .filter(|n| *n >= 1)
                .ok_or_else(|| bad(format!("targetWorkers must be from 1 to {MAX_POOL}")))?;
            let reason = match m.get("reason") {
                None | Some(Value::Null) => "manual".to_string(),
                Some(Value::String(r)) => r.clone(),
                Some(_) => return Err(bad("reason must be a string")),
            };
            let pool = &node.pipeline.pool;
            let from = pool.size();
            pool.resize(target as u32, reason.clone(), "manual");
            json!({"queueName": TOPIC, "previousWorkers": from, "currentWorkers": pool.size(), "reason": reason})
        }
        "update_scaling_config" => {
            queue(&m)?;
            let mut cfg = node.cfg.read().streams.scaling.clone();
            if let Some(v) = uint(&m, "minWorkers", u64::from(MAX_POOL))? {
                cfg.min_workers = v as u32;
            }
            if let Some(v) = uint(&m, "maxWorkers", u64::from(MAX_POOL))? {
                cfg.max_workers = v as u32;
            }
            if let Some(v) = uint(&m, "targetWaitingJobs", u64::MAX)? {
                cfg.target_waiting = v;
            }
            if let Some(v) = number(&m, "scaleUpThreshold")? {
                cfg.scale_up_threshold = v;
            }
            if let Some(v) = number(&m, "scaleDownThreshold")? {
                cfg.scale_down_threshold = v;
            }
            if let Some(v) = number(&m, "cooldownPeriod")? {
                cfg.cooldown_secs = (v * 60.0).round() as u64;
            }
            match m.get("enabled") {
                None | Some(Value::Null) => {}
                Some(Value::Bool(b)) => cfg.enabled = *b,
                Some(_) => return Err(bad("enabled must be true or false")),
            }
            cfg.validate().map_err(|(f, why)| bad(format!("{f}: {why}")))?;
            let partitions = {
                let mut c = node.cfg.write();
                c.streams.scaling = cfg.clone();
                c.streams.partitions as usize
            };
            json!({"message": "scaling config updated", "config": scaling_json(&node, &cfg, partitions)})
        }
        other => {
            return Err(bad(format!(
                "unknown action {other:?}: use start_monitoring, stop_monitoring, start_autoscaling, stop_autoscaling, manual_scale or update_scaling_config"
            )))
        }
    };
    Ok(answer(data))
}
