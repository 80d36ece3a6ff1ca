//! The schema registry: a topic's JSON Schema is checked at the door and
//! again by the worker, against the version each entry names; an entry
//! that fails goes to the dead letters and the worker carries on.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{q, TestNode};
use crate::metric_model::*;

fn errors(r: &Value) -> Vec<(u64, String)> {
    r["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["index"].as_u64().unwrap(),
                e["error"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_topic_schema_is_checked_at_the_door_and_by_the_worker() {
    let node = TestNode::start(|c| {
        c.streams.partitions = 1;
        c.streams.idle_advance_secs = 0;
    });
    let http = node.http("");
    let base = base();
    let v1 = json!({
        "type": "object",
        "properties": {
            "unit": {"enum": ["pct", "ms"]},
            "value": {"maximum": 100},
        },
        "required": ["unit"],
    });

    // Registering: a new version, then the same schema again.
    let (status, r) = put(&format!("{http}/v1/schemas/cpu"), &v1.to_string());
    assert_eq!(
        (status, &r),
        (201, &json!({"topic": "cpu", "version": 1, "created": true}))
    );
    let (status, r) = put(&format!("{http}/v1/schemas/cpu"), &v1.to_string());
    assert_eq!(
        (status, &r["version"], &r["created"]),
        (200, &json!(1), &json!(false))
    );
    // Refused, and nothing registered: not JSON, not a schema, a bad name.
    let (status, r) = put(&format!("{http}/v1/schemas/cpu"), "{oops");
    assert_eq!(status, 400, "{r}");
    let (status, r) = put(&format!("{http}/v1/schemas/cpu"), r#"{"type": "nothing"}"#);
    assert_eq!(status, 400, "{r}");
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .starts_with("not a valid JSON Schema"),
        "{r}"
    );
    let (status, r) = put(&format!("{http}/v1/schemas/cpu"), "[1]");
    assert_eq!(status, 400, "{r}");
    let (status, _) = put(&format!("{http}/v1/schemas/a@b"), &v1.to_string());
    assert_eq!(status, 400);
    let (_, list) = get(&format!("{http}/v1/schemas"));
    assert_eq!(list, json!({"schemas": [{"topic": "cpu", "version": 1}]}));
    let (status, got) = get(&format!("{http}/v1/schemas/cpu"));
    assert_eq!(status, 200);
    assert_eq!(got["schema"], v1);
    let (status, _) = get(&format!("{http}/v1/schemas/cpu?version=7"));
    assert_eq!(status, 404);
    let (status, r) = post(&format!("{http}/v1/topics/nope/events"), "[]");
    assert_eq!(status, 404, "{r}");

    // At the door: the built-in schema, then the topic's.
    let ev = |value: Value, unit: &str, ts: i64| json!({"tenant": "t", "server_id": "s", "metric": "cpu", "value": value, "ts": ts, "unit": unit});
    let batch = json!([
        ev(json!(50), "pct", base),
        ev(json!(50), "x", base),
        ev(json!(150), "pct", base),
        ev(json!("high"), "pct", base),
        {"tenant": "t", "server_id": "s", "metric": "cpu", "value": 1, "ts": base},
    ]);
    let (status, r) = post(&format!("{http}/v1/topics/cpu/events"), &batch.to_string());
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        (r["accepted"].as_u64(), r["rejected"].as_u64()),
        (Some(1), Some(4))
    );
    let errs = errors(&r);
    assert_eq!(errs.iter().map(|e| e.0).collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert!(
        errs[0]
            .1
            .starts_with("schema version 1 of topic 'cpu': /unit: "),
        "{errs:?}"
    );
    assert!(
        errs[1]
            .1
            .contains("/value: 150 is greater than the maximum of 100"),
        "{errs:?}"
    );
    assert_eq!(errs[2].1, "field 'value' must be a number");
    assert!(
        errs[3].1.contains("\"unit\" is a required property"),
        "{errs:?}"
    );

    // Version 2 allows more; the door now checks against it.
    let v2 =
        json!({"type": "object", "properties": {"value": {"maximum": 1000}}, "required": ["unit"]});
    let (status, r) = put(&format!("{http}/v1/schemas/cpu"), &v2.to_string());
    assert_eq!((status, &r["version"]), (201, &json!(2)));
    let (status, r) = post(
        &format!("{http}/v1/topics/cpu/events"),
        &json!([ev(json!(500), "ms", base + 1)]).to_string(),
    );
    assert_eq!((status, r["accepted"].as_u64()), (200, Some(1)), "{r}");

    // The worker checks each entry against the version it names: an
    // entry XADDed over RESP naming version 1 with a value only version 2
    // allows is dead-lettered; naming 2 it counts; naming 9 (no such
    // version) or with broken JSON, dead-lettered.
    let (stream, dead) = first_partition(&http);
    let mut c = node.client();
    let event = ev(json!(400), "ms", base + 2).to_string();
    for (version, body) in [
        ("1", event.as_str()),
        ("2", &event),
        ("9", &event),
        ("2", "{"),
    ] {
        q(
            &mut c,
            &[
                "XADD", &stream, "*", "topic", "cpu", "schema", version, "event", body,
            ],
        );
    }
    close_all(&http, base);
    let got = series_with(&http, "t", "s", "cpu", 1);
    assert_eq!(got[0]["count"], 3, "{got:?}");
    assert_eq!(got[0]["sum"], 950.0);
    assert_eq!(got[0]["max"], 500.0);
    let mut entries: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for _ in 0..100 {
        entries = redis::cmd("XRANGE")
            .arg(&dead)
            .arg("-")
            .arg("+")
            .query(&mut c)
            .unwrap();
        if entries.len() >= 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let why: Vec<&str> = entries.iter().map(|e| e.1[0].1.as_str()).collect();
    assert_eq!(why.len(), 3, "{why:?}");
    assert!(
        why[0].contains(
            "schema version 1 of topic 'cpu': /value: 400 is greater than the maximum of 100"
        ),
        "{why:?}"
    );
    assert_eq!(
        why[1],
        "topic 'cpu' has no schema version 9 in the registry"
    );
    assert!(why[2].starts_with("field 'event' is not JSON"), "{why:?}");

    // The built-in topic can have a schema too: /v1/metrics then checks it.
    let strict = json!({"properties": {"metric": {"pattern": "^[a-z]+$"}}});
    let (status, _) = put(&format!("{http}/v1/schemas/metrics"), &strict.to_string());
    assert_eq!(status, 201);
    let batch = json!([
        {"tenant": "t", "server_id": "s", "metric": "disk", "value": 1, "ts": base},
        {"tenant": "t", "server_id": "s", "metric": "Disk-1", "value": 1, "ts": base},
    ]);
    let (_, r) = post(&format!("{http}/v1/metrics"), &batch.to_string());
    assert_eq!(
        (r["accepted"].as_u64(), r["rejected"].as_u64()),
        (Some(1), Some(1)),
        "{r}"
    );
    assert!(
        errors(&r)[0]
            .1
            .contains("schema version 1 of topic 'metrics': /metric: "),
        "{r}"
    );
}
