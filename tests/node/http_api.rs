//! The seeds' HTTP APIs, exactly as the seeds' examples use them, plus
//! bad input, the API key and the OpenAPI document.

use crate::common::TestNode;
use serde_json::{json, Value};

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

fn post(node: &TestNode, path: &str, body: &str) -> (u16, Value) {
    let mut r = agent()
        .post(&node.http(path))
        .header("Content-Type", "application/json")
        .send(body)
        .expect("http");
    let status = r.status().as_u16();
    (status, r.body_mut().read_json().unwrap_or(Value::Null))
}

fn get(node: &TestNode, path: &str) -> (u16, Value) {
    let mut r = agent().get(&node.http(path)).call().expect("http");
    let status = r.status().as_u16();
    (status, r.body_mut().read_json().unwrap_or(Value::Null))
}

#[test]
fn seed_000_ingest_and_get() {
    let node = TestNode::start(|_| {});
    let (s, body) = post(
        &node,
        "/ingest",
        r#"{"key":"feature:user:1001","value":{"user_id":1001,"video_id":5001,"ts":1234567890.5,"watch_time":15.2},"ttl_sec":3600,"cache_hint":"none"}"#,
    );
    assert_eq!(s, 200);
    assert_eq!(body["ok"], json!(true));
    assert_eq!(body["stored"], json!("memory"));
    assert!(body["mem_ratio"].as_f64().is_some());
    let keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, vec!["ok", "stored", "mem_ratio"]);

    let (s, body) = get(&node, "/get/feature:user:1001");
    assert_eq!(s, 200);
    assert_eq!(body["ok"], json!(true));
    assert_eq!(body["source"], json!("memory"));
    let stored: Value = serde_json::from_str(body["value"].as_str().unwrap()).unwrap();
    assert_eq!(stored["user_id"], json!(1001));
    assert!(
        stored["_ts"].as_u64().unwrap() > 1_700_000_000,
        "ingest adds _ts"
    );

    // The value is visible to Redis clients too, with its TTL.
    let mut c = node.client();
    let ttl: i64 = redis::cmd("TTL")
        .arg("feature:user:1001")
        .query(&mut c)
        .unwrap();
    assert!((3590..=3600).contains(&ttl));

    // Disk tier and the local hot-key cache report their source.
    node.h()
        .node
        .store
        .demote_key(0, b"feature:user:1001")
        .unwrap();
    assert_eq!(
        get(&node, "/get/feature:user:1001").1["source"],
        json!("disk")
    );
    post(
        &node,
        "/ingest",
        r#"{"key":"hot:1","value":{"a":1},"cache_hint":"hot_read"}"#,
    );
    assert_eq!(get(&node, "/get/hot:1").1["source"], json!("local_cache"));
    // A write through any front end invalidates the cached copy.
    let _: () = redis::cmd("SET")
        .arg("hot:1")
        .arg("changed")
        .query(&mut c)
        .unwrap();
    let (_, body) = get(&node, "/get/hot:1");
    assert_eq!(
        (body["source"].clone(), body["value"].clone()),
        (json!("memory"), json!("changed"))
    );

    let (s, body) = get(&node, "/get/missing");
    assert_eq!(s, 404);
    assert_eq!(body["ok"], json!(false));

    // Collections read back whole, from either tier.
    let run = |c: &mut redis::Connection, args: &[&str]| {
        let mut command = redis::cmd(args[0]);
        for a in &args[1..] {
            command.arg(*a);
        }
        command.query::<redis::Value>(c).unwrap();
    };
    run(&mut c, &["HSET", "h", "f", "v"]);
    run(&mut c, &["RPUSH", "l", "a", "b"]);
    run(&mut c, &["SADD", "s", "m"]);
    run(&mut c, &["ZADD", "z", "1.5", "m"]);
    run(&mut c, &["XADD", "x", "1-1", "f", "v"]);
    node.h().node.store.demote_key(0, b"z").unwrap();
    assert_eq!(get(&node, "/get/z").1["source"], json!("disk"));
    let cases = [
        ("h", json!("hash"), json!({"f": "v"})),
        ("l", json!("list"), json!(["a", "b"])),
        ("s", json!("set"), json!(["m"])),
        ("z", json!("zset"), json!([["m", 1.5]])),
        ("x", json!("stream"), json!([["1-1", ["f", "v"]]])),
    ];
    for (key, kind, value) in cases {
        let (s, body) = get(&node, &format!("/get/{key}"));
        assert_eq!(s, 200, "{body}");
        assert_eq!((&body["type"], &body["value"]), (&kind, &value), "{key}");
    }
}

#[test]
fn seed_002_data_nodes_backup_restore() {
    let node = TestNode::start(|_| {});
    let (s, body) = post(
        &node,
        "/data",
        r#"{"key":"user1", "value":"John Doe", "ttl": 3600}"#,
    );
    assert_eq!(s, 200, "{body}");
    let (s, body) = get(&node, "/data/user1");
    assert_eq!(s, 200);
    assert_eq!(
        (body["key"].clone(), body["value"].clone()),
        (json!("user1"), json!("John Doe"))
    );
    let mut r = agent().delete(&node.http("/data/user1")).call().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.body_mut().read_json::<Value>().unwrap()["deleted"],
        json!(true)
    );
    assert_eq!(get(&node, "/data/user1").0, 404);
    assert_eq!(
        agent()
            .delete(&node.http("/data/user1"))
            .call()
            .unwrap()
            .status()
            .as_u16(),
        404
    );

    let (s, body) = get(&node, "/health");
    assert_eq!(s, 200);
    assert_eq!(body["status"], json!("healthy"));
    let (_, nodes) = get(&node, "/nodes");
    let id = nodes["nodes"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(get(&node, &format!("/nodes/{id}")).0, 200);
    assert_eq!(get(&node, "/nodes/nope").0, 404);
    let (s, body) = post(&node, "/rebalance", "");
    assert_eq!((s, body["moved_keys"].clone()), (200, json!(0)));

    for i in 0..20 {
        post(
            &node,
            "/data",
            &format!(r#"{{"key":"k{i}","value":"v{i}"}}"#),
        );
    }
    let (s, body) = post(&node, "/backup", "");
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["keys"], json!(20));
    post(&node, "/data", r#"{"key":"k0","value":"changed"}"#);
    post(&node, "/data", r#"{"key":"later","value":"x"}"#);
    let (s, body) = post(&node, "/restore", "");
    assert_eq!(s, 200, "{body}");
    assert_eq!(get(&node, "/data/k0").1["value"], json!("v0"));
    assert_eq!(get(&node, "/data/later").0, 404);
    // Path tricks are refused.
    assert_eq!(
        post(&node, "/restore", r#"{"file":"../../etc/passwd"}"#).0,
        400
    );
    assert_eq!(post(&node, "/restore", r#"{"file":"nope.snap"}"#).0, 404);
}

#[test]
fn seed_003_write_read_topology() {
    let node = TestNode::start(|_| {});
    let (s, body) = post(
        &node,
        "/api/write",
        r#"{"key":"user-123","content":"User log data"}"#,
    );
    assert_eq!(s, 200);
    assert_eq!(body["success"], json!(true));
    assert_eq!(body["key"], json!("user-123"));
    assert!(body["latencyMs"].is_u64());
    assert_eq!(body["nodes"].as_array().unwrap().len(), 1);
    let (s, body) = get(&node, "/api/read/user-123");
    assert_eq!(s, 200);
    assert_eq!(body["success"], json!(true));
    assert_eq!(body["data"]["key"], json!("user-123"));
    assert_eq!(body["data"]["content"], json!("User log data"));
    assert!(body["data"]["version"].as_u64().unwrap() > 1_700_000_000_000);
    let ts = body["data"]["timestamp"].as_str().unwrap();
    assert!(
        ts.len() == 20 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
        "{ts}"
    );
    assert_eq!(body["replicas"], json!(1));
    assert_eq!(get(&node, "/api/read/nope").0, 404);
    let (s, topo) = get(&node, "/api/coordinator/topology");
    assert_eq!(s, 200);
    assert_eq!(topo["nodes"].as_array().unwrap().len(), 1);
    let (s, set) = get(&node, "/api/coordinator/nodes/user-123?count=3");
    assert_eq!(s, 200, "{set}");
    assert_eq!(set["nodes"].as_array().unwrap().len(), 1);
    assert_eq!(set["nodes"][0]["id"], set["leader"]);
    assert_eq!(get(&node, "/api/coordinator/nodes/user-123?count=0").0, 400);
    // A single node's own copy is never stale; bad query values are refused.
    let (s, body) = get(&node, "/api/read/user-123?stale=true");
    assert_eq!((s, body["stale"].clone()), (200, json!(false)));
    assert_eq!(get(&node, "/api/read/user-123?replicas=2").0, 400);
    assert_eq!(get(&node, "/api/read/user-123?stale=maybe").0, 400);
}

#[test]
fn bad_input_gets_clear_errors() {
    let node = TestNode::start(|c| c.http_body_limit = 64 * 1024);
    let cases = [
        ("/ingest", "{not json", "invalid JSON"),
        ("/ingest", r#"[1,2]"#, "JSON object"),
        ("/ingest", r#"{"value":{}}"#, "missing field 'key'"),
        (
            "/ingest",
            r#"{"key":"k","value":"flat"}"#,
            "field 'value' must be a JSON object",
        ),
        (
            "/ingest",
            r#"{"key":"k","value":{},"ttl_sec":-1}"#,
            "ttl_sec",
        ),
        (
            "/data",
            r#"{"key":5,"value":"x"}"#,
            "field 'key' must be a string",
        ),
        ("/api/write", r#"{"key":"k"}"#, "missing field 'content'"),
    ];
    for (path, body, want) in cases {
        let (s, resp) = post(&node, path, body);
        assert_eq!(s, 400, "{path} {body}");
        let msg = resp["error"].as_str().unwrap_or_default();
        assert!(msg.contains(want), "{path} {body}: {msg}");
    }
    let big = format!(
        r#"{{"key":"k","value":{{"blob":"{}"}}}}"#,
        "x".repeat(100 * 1024)
    );
    assert_eq!(post(&node, "/ingest", &big).0, 413);
    // Nothing was stored by any of them.
    let mut c = node.client();
    assert_eq!(redis::cmd("DBSIZE").query::<i64>(&mut c).unwrap(), 0);
    assert_eq!(get(&node, "/health").0, 200);
}

#[test]
fn admin_endpoints_need_the_api_key() {
    let node = TestNode::start(|c| c.api_key = Some("k3y".into()));
    post(&node, "/data", r#"{"key":"a","value":"1"}"#);
    for path in ["/backup", "/restore", "/admin/flush"] {
        assert_eq!(post(&node, path, "").0, 401, "{path}");
        let mut r = agent()
            .post(&node.http(path))
            .header("X-API-Key", "wrong")
            .send("")
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
        assert!(r.body_mut().read_json::<Value>().unwrap()["error"]
            .as_str()
            .unwrap()
            .contains("API key"));
    }
    assert_eq!(
        get(&node, "/data/a").1["value"],
        json!("1"),
        "refused calls changed nothing"
    );
    assert_eq!(get(&node, "/admin/config").0, 401);
    let r = agent()
        .post(&node.http("/backup"))
        .header("X-API-Key", "k3y")
        .send("")
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let mut r = agent()
        .get(&node.http("/admin/config?apiKey=k3y"))
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.body_mut().read_json::<Value>().unwrap()["api_key"],
        json!("********")
    );
    assert_eq!(post(&node, "/admin/flush?apiKey=k3y", "").0, 200);
    assert_eq!(get(&node, "/data/a").0, 404);
}

#[test]
fn metrics_and_openapi() {
    let node = TestNode::start(|_| {});
    let mut c = node.client();
    let _: () = redis::cmd("SET").arg("a").arg("1").query(&mut c).unwrap();
    let _: String = redis::cmd("GET").arg("a").query(&mut c).unwrap();
    let text = agent()
        .get(&node.http("/metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    for series in [
        "strata_commands_total{cmd=\"set\"} 1",
        "strata_command_duration_seconds_bucket{",
        "strata_memory_used_bytes",
        "strata_memory_cap_bytes",
        "strata_entries{tier=\"memory\"} 1",
        "strata_hits_total{tier=\"memory\"} 1",
        "strata_spilled_total",
        "strata_offloaded_total",
        "strata_promotions_total",
        "strata_expired_total",
        "strata_wal_bytes_total",
        "strata_wal_fsync_seconds_total",
        "strata_disk_written_bytes_total ",
        "strata_disk_pieces_written_total 0",
        "strata_disk_layouts_written_total 0",
        "strata_connected_clients 1",
        "strata_health_score ",
        "strata_health_component_score{component=\"writes\"} 100",
        "strata_hot_keys 0",
        "strata_tracking_clients 0",
    ] {
        assert!(text.contains(series), "metrics lack {series}");
    }
    assert!(text.ends_with("# EOF\n"));
    if cfg!(target_os = "linux") {
        for series in [
            "strata_disk_free_ratio ",
            "strata_system_memory_available_ratio ",
            "strata_load_per_core ",
        ] {
            assert!(text.contains(series), "metrics lack {series}");
        }
    }
    let (s, doc) = get(&node, "/openapi.json");
    assert_eq!(s, 200);
    assert_eq!(doc["openapi"], json!("3.0.3"));
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/ingest",
        "/get/{key}",
        "/data",
        "/data/{key}",
        "/health",
        "/nodes",
        "/nodes/{id}",
        "/backup",
        "/restore",
        "/rebalance",
        "/api/write",
        "/api/read/{key}",
        "/api/coordinator/topology",
        "/api/coordinator/nodes/{key}",
        "/admin/flush",
        "/admin/config",
        "/metrics",
        "/openapi.json",
        "/api/monitoring",
        "/api/alerts",
        "/api/dashboard",
        "/dashboard",
        "/v1/schemas",
        "/v1/schemas/{topic}",
        "/v1/topics/{topic}/events",
    ] {
        assert!(paths.contains_key(p), "openapi lacks {p}");
    }
    // Every documented operation is routed: a 404 must come from the
    // handler (with a JSON error), never from the router.
    for (p, ops) in paths {
        let concrete = p
            .replace("{key}", "x")
            .replace("{id}", "x")
            .replace("{topic}", "x");
        for method in ops.as_object().unwrap().keys() {
            let url = node.http(&concrete);
            let r = match method.as_str() {
                "get" => agent().get(&url).call(),
                "post" => agent().post(&url).send(""),
                "put" => agent().put(&url).send(""),
                "delete" => agent().delete(&url).call(),
                other => panic!("undocumented method {other}"),
            }
            .unwrap();
            let status = r.status().as_u16();
            if p.ends_with("/stream") {
                // An endless event stream (or, without its parameters,
                // their error): the status is enough.
                assert!(matches!(status, 200 | 400), "{method} {p}: {status}");
                continue;
            }
            let body = r.into_body().read_to_string().unwrap_or_default();
            assert_ne!(status, 405, "{method} {p} not routed");
            assert!(
                status != 404 || body.contains("error"),
                "{method} {p}: router 404"
            );
        }
    }
}

#[test]
fn health_reports_a_score_from_its_components() {
    let node = TestNode::start(|_| {});
    let (s, body) = get(&node, "/health");
    assert_eq!(s, 200);
    let score = body["health_score"].as_u64().expect("a score");
    assert!(score <= 100, "{body}");
    let band = match score {
        90.. => "healthy",
        70..=89 => "warning",
        _ => "critical",
    };
    assert_eq!(body["health_status"], json!(band), "{body}");
    let parts = body["health_components"].as_array().expect("components");
    let part = |name: &str| {
        parts
            .iter()
            .find(|p| p["name"] == json!(name))
            .unwrap_or_else(|| panic!("no {name} in {body}"))
            .clone()
    };
    assert_eq!(part("writes")["score"], json!(100));
    assert_eq!(part("reachability")["detail"], json!("single node"));
    // The weights of what was measured add up, and the score is their
    // weighted mean.
    let total: u64 = parts.iter().map(|p| p["weight"].as_u64().unwrap()).sum();
    let weighted: u64 = parts
        .iter()
        .map(|p| p["weight"].as_u64().unwrap() * p["score"].as_u64().unwrap())
        .sum();
    let mean = (weighted as f64 / total as f64).round() as i64;
    assert!((mean - score as i64).abs() <= 1, "{body}");
    assert!(total >= 70 && total <= 110, "{body}");
    // On Linux the machine's disk, memory and load are measured.
    if cfg!(target_os = "linux") {
        for name in ["disk", "system_memory", "load"] {
            part(name);
        }
    }
}
