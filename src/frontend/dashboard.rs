//! The web dashboard at `/dashboard`: one page and its scripts, built
//! into the binary (no CDN), charts drawn with uPlot (MIT, vendored in
//! `dashboard/vendor/`).
//!
//! - `GET /dashboard`, `/dashboard/{asset}`: the page and its assets,
//!   open to all (they hold no data).
//! - `GET /api/dashboard`: one snapshot of everything the page shows.
//! - `GET /api/dashboard/stream`: the same snapshot every two seconds as
//!   server-sent events (`event: snapshot`). `EventSource` can't send
//!   headers, so the key may come as `?apiKey=`.
//!
//! Both data routes need the API key when one is configured; the page
//! asks for it on a 401.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::stream::Stream;
use serde_json::{json, Value};

use super::http::{check_api_key, health_json, topology_json, ApiError};
use crate::node::Node;

type Shared = Arc<Node>;

/// Seconds between two snapshots on the stream.
const EVERY: Duration = Duration::from_secs(2);
/// Samples a snapshot carries for the charts.
const SAMPLES: usize = 180;

const INDEX: &str = include_str!("dashboard/index.html");
const ASSETS: [(&str, &str, &str); 4] = [
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("dashboard/app.css"),
    ),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/vendor/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_str!("dashboard/vendor/uPlot.min.css"),
    ),
];

/// The dashboard's routes.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/dashboard", get(index))
        .route("/dashboard/", get(index))
        .route("/dashboard/{asset}", get(asset))
        .route("/api/dashboard", get(snapshot_route))
        .route("/api/dashboard/stream", get(stream))
}

async fn index() -> Response {
    (
        [
            ("content-type", "text/html; charset=utf-8"),
            ("cache-control", "no-cache"),
        ],
        INDEX,
    )
        .into_response()
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, kind, body)) => ([("content-type", *kind)], *body).into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

async fn snapshot_route(
    State(node): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    check_api_key(&node, &headers, &q)?;
    Ok(Json(snapshot(&node)))
}

async fn stream(
    State(node): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    check_api_key(&node, &headers, &q)?;
    let events = futures_util::stream::unfold((node, true), |(node, first)| async move {
        if !first {
            tokio::select! {
                () = tokio::time::sleep(EVERY) => {}
                () = node.shutdown.cancelled() => return None,
            }
        }
        let event = Event::default()
            .event("snapshot")
            .json_data(snapshot(&node))
            .unwrap_or_else(|_| Event::default().comment("snapshot failed"));
        Some((Ok(event), (node, false)))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// Everything the page shows, in one object.
pub(super) fn snapshot(node: &Node) -> Value {
    let (_, health) = health_json(node);
    let st = node.store.stats();
    let mut samples = node.monitor.samples();
    let drop = samples.len().saturating_sub(SAMPLES);
    samples.drain(..drop);
    let c = &node.pipeline.counters;
    let running = node.pipeline.running.lock().clone();
    let rules = node.monitor.rules();
    let recent: Vec<Value> = node
        .pipeline
        .recent_series
        .lock()
        .iter()
        .rev()
        .map(|s| json!({"tenant": s.tenant, "server_id": s.server_id, "metric": s.metric}))
        .collect();
    json!({
        "timestamp": crate::storage::now_ms(),
        "health": health,
        "tiers": {
            "memory": {"bytes": st.used_bytes, "cap": st.tier_cap_bytes, "keys": st.entries_memory, "hits": st.hits_memory},
            "disk": {"bytes": st.disk_bytes, "keys": st.entries_disk, "hits": st.hits_disk},
            "misses": st.misses,
            "spilled": st.spilled,
            "offloaded": st.offloaded,
            "promotions": st.promotions,
            "maxmemory": st.maxmemory,
        },
        "samples": samples,
        "hotkeys": {
            "threshold_per_min": node.hotkeys.threshold(),
            "keys": node.hotkeys.hot(),
        },
        "topology": topology_json(node),
        "alerts": {
            "recent": node.monitor.alerts(20),
            "firing": rules.iter().filter(|r| r.firing).map(|r| r.rule.name).collect::<Vec<_>>(),
        },
        "workers": {
            "pool": node.pipeline.pool.size(),
            "busy": node.pipeline.pool.busy(),
            "load_factor": node.monitor.load_factor(),
            "waiting": crate::ops::waiting_here(node),
            "partitions": node.monitor.partitions().iter().map(|p| json!({
                "partition": p.partition,
                "length": p.length,
                "lag": p.lag,
                "worker_here": p.worker_here,
                "watermark_ms": running.get(&p.partition).and_then(|s| s.watermark_ms),
            })).collect::<Vec<_>>(),
        },
        "pipeline": {
            "accepted": c.accepted.load(Ordering::Relaxed),
            "rejected": c.rejected.load(Ordering::Relaxed),
            "late": c.late.load(Ordering::Relaxed),
            "dead_lettered": c.dead.load(Ordering::Relaxed),
            "windows": c.windows.load(Ordering::Relaxed),
            "recent_series": recent,
        },
    })
}
