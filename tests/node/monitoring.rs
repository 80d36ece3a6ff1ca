//! Operations on one node: an alert fired for real (the memory tier filled
//! past 80%) reaches the alert history, `/metrics` and a webhook that
//! fails first (so the retry is exercised), and stays quiet through its
//! cooldown; seed 001's monitoring API answers every action, refuses a
//! wrong key (401) and a bad body (400) and then changes nothing.

use std::time::Duration;

use serde_json::{json, Value};

use crate::alert_kit::{wait_for, Webhook};
use crate::common::TestNode;

const KEY: &str = "monitor-key";

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

fn get(node: &TestNode, path: &str) -> (u16, Value) {
    let mut r = agent().get(&node.http(path)).call().expect("http");
    let status = r.status().as_u16();
    (status, r.body_mut().read_json().unwrap_or(Value::Null))
}

fn post(node: &TestNode, body: &str) -> (u16, Value) {
    post_as(node, body, None)
}

/// POSTs `body`, with the key in a header when given.
fn post_as(node: &TestNode, body: &str, key: Option<&str>) -> (u16, Value) {
    let mut req = agent()
        .post(&node.http("/api/monitoring"))
        .header("content-type", "application/json");
    if let Some(k) = key {
        req = req.header("X-API-Key", k);
    }
    let mut r = req.send(body).expect("http");
    let status = r.status().as_u16();
    (status, r.body_mut().read_json().unwrap_or(Value::Null))
}

fn metrics_text(node: &TestNode) -> String {
    agent()
        .get(&node.http("/metrics"))
        .call()
        .expect("http")
        .body_mut()
        .read_to_string()
        .expect("metrics")
}

fn action(node: &TestNode, action: &str) -> Value {
    let (s, body) = get(
        node,
        &format!("/api/monitoring?action={action}&apiKey={KEY}"),
    );
    assert_eq!(s, 200, "{action}: {body}");
    assert_eq!(body["success"], json!(true), "{action}");
    body["data"].clone()
}

fn act(node: &TestNode, mut body: Value) -> Value {
    body["apiKey"] = json!(KEY);
    let (s, answer) = post(node, &body.to_string());
    assert_eq!(s, 200, "{body}: {answer}");
    answer["data"].clone()
}

#[test]
fn a_full_memory_tier_fires_an_alert_that_reaches_the_webhook_once_per_cooldown() {
    let hook = Webhook::start(1);
    let node = TestNode::start(|c| {
        c.api_key = Some(KEY.into());
        c.storage.maxmemory = 4 << 20;
        // Spill only above 95%, so the tier sits past the 80% rule.
        c.storage.overflow_ratio = 0.95;
        c.storage.spill_low_ratio = 0.9;
        c.storage.offload_force_ratio = 0.97;
        c.monitoring.interval_secs = 0.3;
        c.alert_webhook_url = Some(hook.url.clone());
    });
    let (s, _) = get(&node, "/api/alerts");
    assert_eq!(s, 401, "the alert history needs the key");
    let (_, body) = get(&node, &format!("/api/alerts?apiKey={KEY}"));
    assert_eq!(body["alerts"], json!([]), "nothing fired on an empty node");
    assert_eq!(body["rules"].as_array().unwrap().len(), 8);

    let mut c = node.client();
    let value = "v".repeat(100);
    for batch in 0..6 {
        let mut pipe = redis::pipe();
        for i in 0..5000 {
            pipe.cmd("SET")
                .arg(format!("k:{batch}:{i}"))
                .arg(&value)
                .ignore();
        }
        let () = pipe.query(&mut c).expect("writes");
    }

    let alert = wait_for(30, "high_memory to fire", || {
        let (_, body) = get(&node, &format!("/api/alerts?apiKey={KEY}"));
        body["alerts"]
            .as_array()?
            .iter()
            .find(|a| a["rule"] == "high_memory" && a["status"] == "firing")
            .cloned()
    });
    assert_eq!(alert["severity"], "medium");
    assert_eq!(alert["threshold"], json!(0.8));
    assert!(alert["value"].as_f64().unwrap() > 0.8, "{alert}");
    assert!(
        alert["message"].as_str().unwrap().contains("of its cap"),
        "{alert}"
    );

    // The webhook answered 500 first; the retry delivered the same alert.
    let delivered = wait_for(30, "the webhook delivery", || {
        let got = hook.received("high_memory", "firing");
        (!got.is_empty()).then_some(got)
    });
    assert_eq!(delivered[0]["alert"]["id"], alert["id"]);
    assert_eq!(delivered[0]["source"], "strata");

    // Several more ticks with the tier still full: the 15-minute cooldown
    // keeps the rule quiet.
    std::thread::sleep(Duration::from_millis(1500));
    let (_, body) = get(&node, &format!("/api/alerts?apiKey={KEY}"));
    let fired = body["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["rule"] == "high_memory" && a["status"] == "firing")
        .count();
    assert_eq!(fired, 1, "{body}");
    let rule = body["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "high_memory")
        .unwrap()
        .clone();
    assert_eq!(rule["firing"], json!(true));
    assert!(rule["suppressed"].as_u64().unwrap() >= 1, "{rule}");
    assert_eq!(body["firing"], json!(["high_memory"]));
    assert_eq!(hook.received("high_memory", "firing").len(), 1);

    let metrics = metrics_text(&node);
    assert!(
        metrics.contains("strata_alerts_fired_total{rule=\"high_memory\",severity=\"medium\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("strata_alert_firing{rule=\"high_memory\"} 1"));
    assert!(metrics.contains("strata_alert_webhook_deliveries_total{outcome=\"sent\"} 1"));

    // The health score counts the full tier.
    let (_, health) = get(&node, "/health");
    let memory = health["health_components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "memory_tier")
        .unwrap()
        .clone();
    assert!(memory["score"].as_u64().unwrap() < 100, "{memory}");
}

#[test]
fn the_monitoring_api_answers_seed_001s_actions() {
    let node = TestNode::start(|c| {
        c.api_key = Some(KEY.into());
        c.monitoring.interval_secs = 0.3;
    });
    let mut c = node.client();
    for i in 0..200 {
        let () = redis::cmd("SET").arg(i).arg(i).query(&mut c).unwrap();
        let _: Option<String> = redis::cmd("GET").arg(i).query(&mut c).unwrap();
    }

    // The key: missing, wrong (query, header, body) are 401.
    assert_eq!(get(&node, "/api/monitoring").0, 401);
    assert_eq!(get(&node, "/api/monitoring?apiKey=nope").0, 401);
    let r = agent()
        .get(&node.http("/api/monitoring?action=system_metrics"))
        .header("X-API-Key", KEY)
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "the key in a header works");
    let (s, body) = post(&node, r#"{"action":"stop_monitoring","apiKey":"nope"}"#);
    assert_eq!((s, body["success"].clone()), (401, json!(false)));
    assert_eq!(action(&node, "")["monitoring"]["running"], json!(true));

    let overall = action(&node, "");
    assert!(overall["health"]["score"].as_u64().unwrap() <= 100);
    assert_eq!(overall["monitoring"]["running"], json!(true));

    let sys = action(&node, "system_metrics");
    assert!(sys["cpu"]["cores"].as_u64().unwrap() >= 1);
    assert!(sys["memory"]["total"].as_u64().unwrap() > 0);
    assert!(sys["disk"]["total"].as_u64().unwrap() > 0);
    assert!(sys["process"]["rss_bytes"].as_u64().unwrap() > 0);
    assert!(sys["cpu"]["load_average"].as_array().unwrap().len() == 3);

    let cluster = action(&node, "redis_cluster");
    assert_eq!(cluster["shards"][0]["slots"], json!([[0, 16383]]));
    assert_eq!(cluster["nodes"][0]["status"], "UP");

    let perf = wait_for(10, "latency percentiles", || {
        let p = action(&node, "redis_performance");
        (!p["latency_seconds"].is_null()).then_some(p)
    });
    // The 200 GETs hit memory (the aggregation workers' own reads of
    // state keys that don't exist yet are misses).
    assert!(
        perf["tiers"]["memory"]["hits"].as_u64().unwrap() >= 200,
        "{perf}"
    );
    assert!(
        perf["hit_ratio"]["memory"].as_f64().unwrap() > 0.0,
        "{perf}"
    );
    assert!(
        perf["latency_seconds"]["p99"].as_f64().unwrap() > 0.0,
        "{perf}"
    );
    assert!(perf["commands_total"].as_u64().unwrap() >= 400);
    assert!(perf["ping_seconds"].as_f64().is_some(), "{perf}");

    let queues = action(&node, "queue_metrics");
    assert_eq!(queues["queues"][0]["queueName"], "metrics");
    assert_eq!(
        queues["queues"][0]["partitionDetails"]
            .as_array()
            .unwrap()
            .len(),
        16
    );

    let scaling = action(&node, "scaling_status");
    let q = &scaling["queues"][0];
    assert_eq!(q["queueName"], "metrics");
    assert_eq!(q["currentWorkers"], json!(16), "{scaling}");
    assert_eq!(q["maxWorkers"], json!(16));

    let health = action(&node, "health_check");
    // Seven components, and the workers' once the monitor has looked.
    let parts = health["health_components"].as_array().unwrap();
    assert_eq!(parts.len(), 8, "{health}");
    let workers = parts.iter().find(|p| p["name"] == "workers").unwrap();
    assert_eq!(workers["detail"], "16 of 16 partitions' workers keep up");

    // A body that is not JSON can't carry the key: 401 without a header.
    assert_eq!(post(&node, "not json").0, 401);
    // Bad bodies: 400, nothing changes.
    for bad in [
        "not json",
        "[1,2]",
        r#"{"apiKey":"monitor-key"}"#,
        r#"{"action":"reboot","apiKey":"monitor-key"}"#,
        r#"{"action":"manual_scale","apiKey":"monitor-key","targetWorkers":3}"#,
        r#"{"action":"manual_scale","apiKey":"monitor-key","queueName":"metrics","targetWorkers":0}"#,
        r#"{"action":"manual_scale","apiKey":"monitor-key","queueName":"metrics","targetWorkers":"3"}"#,
        r#"{"action":"start_monitoring","apiKey":"monitor-key","intervalMinutes":-1}"#,
        r#"{"action":"update_scaling_config","apiKey":"monitor-key","queueName":"metrics","minWorkers":9,"maxWorkers":8}"#,
    ] {
        let (s, body) = post_as(&node, bad, Some(KEY));
        assert_eq!(s, 400, "{bad}: {body}");
        assert_eq!(body["success"], json!(false));
    }
    let (s, _) = post(
        &node,
        r#"{"action":"manual_scale","apiKey":"monitor-key","queueName":"emails","targetWorkers":3}"#,
    );
    assert_eq!(s, 404);
    assert_eq!(
        get(&node, &format!("/api/monitoring?action=nope&apiKey={KEY}")).0,
        400
    );
    let q = &action(&node, "scaling_status")["queues"][0];
    assert_eq!(q["currentWorkers"], json!(16), "bad bodies changed nothing");
    assert_eq!(q["maxWorkers"], json!(16));

    // Monitoring and autoscaling stop and start.
    act(&node, json!({"action": "stop_monitoring"}));
    assert_eq!(action(&node, "")["monitoring"]["running"], json!(false));
    let started = act(
        &node,
        json!({"action": "start_monitoring", "intervalMinutes": 0.01}),
    );
    assert_eq!(started["intervalMinutes"], json!(0.01));
    assert_eq!(action(&node, "")["monitoring"]["running"], json!(true));
    act(&node, json!({"action": "stop_autoscaling"}));
    assert_eq!(action(&node, "scaling_status")["running"], json!(false));

    // Manual scaling, then a new config.
    let scaled = act(
        &node,
        json!({"action": "manual_scale", "queueName": "metrics", "targetWorkers": 3, "reason": "High traffic expected"}),
    );
    assert_eq!(
        (
            scaled["previousWorkers"].clone(),
            scaled["currentWorkers"].clone()
        ),
        (json!(16), json!(3))
    );
    let status = action(&node, "scaling_status");
    assert_eq!(status["history"][0]["source"], "manual");
    assert_eq!(status["history"][0]["reason"], "High traffic expected");
    assert_eq!(status["queues"][0]["currentWorkers"], json!(3));
    let updated = act(
        &node,
        json!({"action": "update_scaling_config", "queueName": "metrics", "minWorkers": 2, "maxWorkers": 8, "targetWaitingJobs": 50, "cooldownPeriod": 0}),
    );
    assert_eq!(updated["config"]["maxWorkers"], json!(8));
    assert_eq!(updated["config"]["targetWaitingJobs"], json!(50));

    // The autoscaler, run every 0.3 s: nothing waits and the pool is idle,
    // so it steps down to minWorkers.
    act(
        &node,
        json!({"action": "start_autoscaling", "intervalMinutes": 0.005}),
    );
    let status = wait_for(20, "the autoscaler to reach minWorkers", || {
        let s = action(&node, "scaling_status");
        (s["queues"][0]["currentWorkers"] == json!(2)).then_some(s)
    });
    assert_eq!(status["history"][0]["source"], "auto");
    assert_eq!(status["running"], json!(true));
    let metrics = metrics_text(&node);
    assert!(
        metrics.contains("strata_aggregation_workers{state=\"pool\"} 2"),
        "{metrics}"
    );
}
