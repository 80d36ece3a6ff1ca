//! Tenants of the metric pipeline: a tenant's key writes and reads only
//! its own events and series, its quota of events a second answers 429
//! with Retry-After (and stores nothing), and its counts show at
//! `/v1/tenants` and in `/metrics`.

use serde_json::{json, Value};

use crate::common::TestNode;
use crate::metric_model::agent;
use strata::pipeline::tenants::TenantConfig;

const ADMIN: &str = "admin-key-0001";
const ACME: &str = "acme-key-0001";
const GLOBEX: &str = "globex-key-001";

fn call(
    method: &str,
    url: &str,
    key: Option<&str>,
    body: Option<&str>,
) -> (u16, Option<String>, Value) {
    let a = agent();
    let mut r = match (method, body) {
        ("PUT", Some(b)) => {
            let mut req = a.put(url).header("content-type", "application/json");
            if let Some(k) = key {
                req = req.header("x-api-key", k);
            }
            req.send(b).expect("put")
        }
        ("POST", Some(b)) => {
            let mut req = a.post(url).header("content-type", "application/json");
            if let Some(k) = key {
                req = req.header("x-api-key", k);
            }
            req.send(b).expect("post")
        }
        _ => {
            let mut req = a.get(url);
            if let Some(k) = key {
                req = req.header("x-api-key", k);
            }
            req.call().expect("get")
        }
    };
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (
        status,
        retry,
        r.body_mut().read_json().unwrap_or(Value::Null),
    )
}

fn batch(tenant: Option<&str>, n: usize, server: &str) -> String {
    let evs: Vec<Value> = (0..n)
        .map(|i| {
            let mut e = json!({"server_id": server, "metric": "cpu", "value": i as f64, "ts": 1_795_000_000 + i});
            if let Some(t) = tenant {
                e["tenant"] = json!(t);
            }
            e
        })
        .collect();
    Value::Array(evs).to_string()
}

#[test]
fn a_tenant_key_reaches_only_its_tenant_and_its_quota_throttles() {
    let node = TestNode::start(|c| {
        c.api_key = Some(ADMIN.into());
        c.streams.tenants.insert(
            "acme".into(),
            TenantConfig {
                api_keys: vec![ACME.into()],
                events_per_sec: 5,
                burst_secs: 2,
                max_series: 0,
            },
        );
        c.streams.tenants.insert(
            "globex".into(),
            TenantConfig {
                api_keys: vec![GLOBEX.into()],
                ..TenantConfig::default()
            },
        );
    });
    let url = |p: &str| node.http(p);
    let metrics = url("/v1/metrics");

    // No key, or a wrong one: refused.
    assert_eq!(
        call("POST", &metrics, None, Some(&batch(Some("acme"), 1, "a"))).0,
        401
    );
    assert_eq!(
        call(
            "POST",
            &metrics,
            Some("wrong-key-000"),
            Some(&batch(Some("acme"), 1, "a"))
        )
        .0,
        401
    );

    // A tenant's own events, with or without the tenant named.
    let (status, _, body) = call("POST", &metrics, Some(ACME), Some(&batch(None, 3, "a1")));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 3);
    let (status, _, body) = call(
        "POST",
        &metrics,
        Some(ACME),
        Some(&batch(Some("acme"), 2, "a1")),
    );
    assert_eq!(
        (status, body["accepted"].as_u64()),
        (200, Some(2)),
        "{body}"
    );

    // Another tenant's event in the batch: 403, and nothing of it stored.
    let mut mixed: Vec<Value> = serde_json::from_str(&batch(Some("acme"), 2, "a2")).unwrap();
    mixed.push(json!({"tenant": "globex", "server_id": "g1", "metric": "cpu", "value": 1.0, "ts": 1_795_000_000}));
    let (status, _, body) = call(
        "POST",
        &metrics,
        Some(ACME),
        Some(&Value::Array(mixed).to_string()),
    );
    assert_eq!(status, 403, "{body}");

    // Reads: own series yes, another tenant's no; the topic is the admin's.
    let q = |t: &str| url(&format!("/v1/series?tenant={t}&server_id=a1&metric=cpu"));
    assert_eq!(call("GET", &q("acme"), Some(ACME), None).0, 200);
    assert_eq!(call("GET", &q("globex"), Some(ACME), None).0, 403);
    assert_eq!(call("GET", &q("acme"), Some(GLOBEX), None).0, 403);
    assert_eq!(call("GET", &q("acme"), Some(ADMIN), None).0, 200);
    // Schemas: every tenant reads them, only the admin registers them.
    let schema = r#"{"required": ["unit"]}"#;
    assert_eq!(
        call("PUT", &url("/v1/schemas/disk"), Some(ACME), Some(schema)).0,
        403
    );
    assert_eq!(
        call("PUT", &url("/v1/schemas/disk"), None, Some(schema)).0,
        401
    );
    assert_eq!(
        call("PUT", &url("/v1/schemas/disk"), Some(ADMIN), Some(schema)).0,
        201
    );
    assert_eq!(
        call("GET", &url("/v1/schemas/disk"), Some(GLOBEX), None).0,
        200
    );
    let live = url("/v1/series/stream?tenant=globex&server_id=g1");
    assert_eq!(call("GET", &live, Some(ACME), None).0, 403);
    assert_ne!(
        call("GET", &url("/v1/topics/metrics"), Some(ACME), None).0,
        200
    );
    assert_eq!(
        call("GET", &url("/v1/topics/metrics"), Some(ADMIN), None).0,
        200
    );
    // A tenant's key reaches nothing outside the pipeline.
    assert_eq!(call("GET", &url("/data/anything"), Some(ACME), None).0, 403);

    // The quota: 5 a second, 2 s of it saved up = 10. 5 were taken above.
    let (status, _, body) = call("POST", &metrics, Some(ACME), Some(&batch(None, 11, "a3")));
    assert_eq!(status, 413, "more than the bucket ever holds: {body}");
    let mut throttled = None;
    for _ in 0..3 {
        let (status, retry, body) = call("POST", &metrics, Some(ACME), Some(&batch(None, 9, "a3")));
        if status == 429 {
            throttled = Some((retry, body));
            break;
        }
        assert_eq!(status, 200, "{body}");
    }
    let (retry, body) = throttled.expect("the quota throttles a tenant that keeps sending");
    let secs: u64 = retry.expect("Retry-After").parse().expect("seconds");
    assert!((1..=2).contains(&secs), "Retry-After {secs}");
    assert_eq!(body["retry_after_secs"], secs);
    // Globex has no quota.
    for _ in 0..3 {
        assert_eq!(
            call("POST", &metrics, Some(GLOBEX), Some(&batch(None, 50, "g1"))).0,
            200
        );
    }

    // Counts: a tenant sees its own, the admin every tenant's.
    let (_, _, own) = call("GET", &url("/v1/tenants"), Some(ACME), None);
    let own = own["tenants"].as_array().unwrap().clone();
    assert_eq!(own.len(), 1, "{own:?}");
    assert_eq!(own[0]["tenant"], "acme");
    assert!(own[0]["accepted"].as_u64().unwrap() >= 5);
    assert!(own[0]["throttled"].as_u64().unwrap() >= 9);
    let (_, _, all) = call("GET", &url("/v1/tenants"), Some(ADMIN), None);
    let globex = all["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tenant"] == "globex")
        .cloned()
        .expect("globex listed");
    assert_eq!(globex["accepted"], 150);
    let text = agent()
        .get(&url("/metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(
        text.contains("strata_tenant_events_total{tenant=\"acme\",outcome=\"throttled\"}"),
        "tenant counters in /metrics"
    );
}

#[test]
fn a_tenant_has_at_most_max_series_live_series() {
    const SMALL: &str = "small-key-0001";
    let node = TestNode::start(|c| {
        c.api_key = Some(ADMIN.into());
        c.streams.tenants.insert(
            "small".into(),
            TenantConfig {
                api_keys: vec![SMALL.into()],
                max_series: 3,
                ..TenantConfig::default()
            },
        );
    });
    let metrics = node.http("/v1/metrics");
    let ev = |server: &str, metric: &str| json!({"server_id": server, "metric": metric, "value": 1.0, "ts": 1_795_000_000});
    let body = json!([
        ev("s1", "cpu"),
        ev("s1", "mem"),
        ev("s2", "cpu"),
        ev("s1", "cpu")
    ]);
    let (status, _, r) = call("POST", &metrics, Some(SMALL), Some(&body.to_string()));
    assert_eq!((status, r["accepted"].as_u64()), (200, Some(4)), "{r}");
    // A fourth series is refused, event by event; the known ones still pass,
    // whichever key sends them.
    let body = json!([
        ev("s2", "cpu"),
        ev("s3", "cpu"),
        ev("s3", "cpu"),
        ev("s1", "mem")
    ]);
    let (status, _, r) = call("POST", &metrics, Some(SMALL), Some(&body.to_string()));
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        (r["accepted"].as_u64(), r["rejected"].as_u64()),
        (Some(2), Some(2)),
        "{r}"
    );
    let errors = r["errors"].as_array().unwrap();
    assert_eq!(
        (errors[0]["index"].as_u64(), errors[1]["index"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(
        errors[0]["error"],
        "tenant 'small' has its maximum of 3 live series; this event would start another (cpu of s3)"
    );
    let mut admin_ev = ev("s4", "cpu");
    admin_ev["tenant"] = json!("small");
    let (_, _, r) = call(
        "POST",
        &metrics,
        Some(ADMIN),
        Some(&json!([admin_ev]).to_string()),
    );
    assert_eq!(r["rejected"], 1, "{r}");
    let (_, _, t) = call("GET", &node.http("/v1/tenants"), Some(SMALL), None);
    assert_eq!(
        (
            &t["tenants"][0]["live_series"],
            &t["tenants"][0]["max_series"]
        ),
        (&json!(3), &json!(3)),
        "{t}"
    );
    assert!(t["tenants"][0]["rejected"].as_u64().unwrap() >= 2, "{t}");

    // A series whose ring has aged out no longer counts: age one by hand
    // (its last event long ago), and a new series takes its place.
    let mut c = node.client();
    let key = "strata:tenant-series:small";
    let aged: i64 = redis::cmd("ZADD")
        .arg(key)
        .arg("XX")
        .arg("CH")
        .arg(1)
        .arg("s1:mem")
        .query(&mut c)
        .unwrap();
    assert_eq!(aged, 1);
    let (_, _, r) = call(
        "POST",
        &metrics,
        Some(SMALL),
        Some(&json!([ev("s3", "cpu")]).to_string()),
    );
    assert_eq!(r["accepted"], 1, "{r}");
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .query(&mut c)
        .unwrap();
    let mut members = members;
    members.sort();
    assert_eq!(members, ["s1:cpu", "s2:cpu", "s3:cpu"]);
}
