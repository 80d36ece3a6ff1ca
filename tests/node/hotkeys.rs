//! Hot keys: a skewed load makes the hottest key show at `/api/hotkeys`,
//! in INFO and through OBJECT FREQ, so `redis-cli --hotkeys` finds it.

use crate::common::{q, qe, TestNode};
use redis::Value;

fn int(v: Value) -> i64 {
    match v {
        Value::Int(i) => i,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_skewed_load_shows_its_hot_key() {
    let node = TestNode::start(|c| {
        c.hotkey_threshold_per_min = 100;
        c.api_key = Some("ops".into());
    });
    let mut c = node.client();
    for i in 0..300 {
        q(&mut c, &["SET", &format!("cold:{i}"), "v"]);
    }
    q(&mut c, &["HSET", "hot:profile", "f", "v"]);
    // A zipf-like mix: one key takes most of the reads.
    for i in 0..600 {
        q(&mut c, &["HGET", "hot:profile", "f"]);
        if i % 3 == 0 {
            q(&mut c, &["GET", &format!("cold:{}", i % 300)]);
        }
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent.get(&node.http("/api/hotkeys")).call().unwrap();
    assert_eq!(r.status().as_u16(), 401, "the monitoring key is required");
    let _ = r.body_mut().read_to_string();
    let mut r = agent
        .get(&node.http("/api/hotkeys?apiKey=ops"))
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body: serde_json::Value = r.body_mut().read_json().unwrap();
    let hot = body["hotkeys"].as_array().expect("a list");
    assert_eq!(hot.len(), 1, "{body}");
    assert_eq!(hot[0]["key"], "hot:profile");
    assert!(hot[0]["per_min"].as_u64().unwrap() >= 601, "{body}");
    assert_eq!(body["threshold_per_min"], 100);

    let info: String = redis::cmd("INFO").arg("hotkeys").query(&mut c).unwrap();
    assert!(info.contains("hotkeys:1"), "{info}");
    assert!(info.contains("key=hot:profile"), "{info}");
    let hot_freq = int(q(&mut c, &["OBJECT", "FREQ", "hot:profile"]));
    let cold_freq = int(q(&mut c, &["OBJECT", "FREQ", "cold:7"]));
    assert!(hot_freq > cold_freq, "{hot_freq} vs {cold_freq}");
    assert_eq!(q(&mut c, &["OBJECT", "FREQ", "missing"]), Value::Nil);

    match std::process::Command::new("redis-cli")
        .args(["-p", &node.h().resp_addr.port().to_string(), "--hotkeys"])
        .output()
    {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{text}");
            assert!(text.contains("hot:profile"), "{text}");
        }
        Err(e) => println!("skipped redis-cli --hotkeys: redis-cli is not installed ({e})"),
    }

    // Off: OBJECT FREQ says so, as Redis does without an LFU policy.
    q(&mut c, &["CONFIG", "SET", "hotkey-threshold-per-min", "0"]);
    assert!(qe(&mut c, &["OBJECT", "FREQ", "hot:profile"]).contains("LFU maxmemory policy"));
}
