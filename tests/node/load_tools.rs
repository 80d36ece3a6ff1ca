//! `strata bench` and `strata generate` against a live in-process node:
//! argument validation, and bounded runs whose counts add up.

use std::process::Command;

use crate::common::TestNode;
use serde_json::Value;

fn strata(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .output()
        .expect("run strata")
}

fn last_json(out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().expect("output")).expect("last line is JSON")
}

fn info_field(c: &mut redis::Connection, field: &str) -> u64 {
    let text: String = redis::cmd("INFO").query(c).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

#[test]
fn bad_arguments_are_refused_by_name() {
    let cases: &[(&[&str], &str)] = &[
        (&["bench", "--clients", "0"], "--clients"),
        (&["bench", "--pipeline", "0"], "--pipeline"),
        (&["bench", "--read-ratio", "1.5"], "--read-ratio"),
        (&["bench", "--dist", "zipf:-1"], "zipf"),
        (&["bench", "--dist", "gaussian"], "unknown key distribution"),
        (&["bench", "--requests", "0"], "--requests"),
        (&["bench", "--workload", "ingest-get"], "--target http"),
        (&["bench", "--workload", "api-read-write"], "--target http"),
        (&["bench", "--rate=-5"], "--rate"),
        (&["generate", "--rps", "0"], "--rps"),
        (&["generate", "--hotkey-ratio", "2"], "HOTKEY_RATIO"),
        (&["generate", "--url", "ftp://x"], "INGESTOR_URL"),
    ];
    for (args, want) in cases {
        let out = strata(args);
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // The seed's environment variables are read too.
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["generate"])
        .env("RPS", "fast")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("fast"));
}

#[test]
fn bench_counts_add_up_over_resp_and_http() {
    let node = TestNode::start(|_| {});
    let port = node.h().resp_addr.port().to_string();
    let mut c = node.client();
    let before = info_field(&mut c, "total_commands_processed");
    let r = last_json(&strata(&[
        "bench",
        "--port",
        &port,
        "--requests",
        "3000",
        "-c",
        "4",
        "-P",
        "4",
        "--quiet",
        "--json",
    ]));
    assert_eq!(r["requests"], 3000);
    assert_eq!(r["errors"], 0);
    assert!(r["p50_ms"].as_f64().unwrap() <= r["p99_ms"].as_f64().unwrap());
    // Every request reached the server (plus the INFO calls of this test).
    let after = info_field(&mut c, "total_commands_processed");
    assert_eq!(after - before, 3000 + 1);

    let r = last_json(&strata(&[
        "bench",
        "--port",
        &port,
        "--requests",
        "1000",
        "-c",
        "2",
        "--workload",
        "hget-hset",
        "--dist",
        "zipf:0.9",
        "--quiet",
        "--json",
    ]));
    assert_eq!(
        (r["requests"].as_u64(), r["errors"].as_u64()),
        (Some(1000), Some(0))
    );

    // Open loop at a fixed rate.
    let r = last_json(&strata(&[
        "bench",
        "--port",
        &port,
        "--requests",
        "400",
        "-c",
        "2",
        "--rate",
        "2000",
        "--quiet",
        "--json",
    ]));
    assert_eq!(r["requests"], 400);
    assert_eq!(r["open_loop"], true);

    let http = node.h().http_addr.port().to_string();
    let r = last_json(&strata(&[
        "bench",
        "--target",
        "http",
        "--port",
        &http,
        "--workload",
        "ingest-get",
        "--requests",
        "600",
        "-c",
        "3",
        "--read-ratio",
        "0",
        "--quiet",
        "--json",
    ]));
    assert_eq!(
        (r["requests"].as_u64(), r["errors"].as_u64()),
        (Some(600), Some(0))
    );
}

#[test]
fn generate_honours_the_hot_ratio() {
    let node = TestNode::start(|_| {});
    let url = format!("http://{}", node.h().http_addr);
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args([
            "generate",
            "--count",
            "2000",
            "--hot-keys",
            "10",
            "--keyspace",
            "1000000000",
            "--json",
        ])
        .env("INGESTOR_URL", &url)
        .env("RPS", "4000")
        .env("HOTKEY_RATIO", "0.3")
        .output()
        .unwrap();
    let r = last_json(&out);
    assert_eq!(
        (r["sent"].as_u64(), r["ok"].as_u64(), r["failed"].as_u64()),
        (Some(2000), Some(2000), Some(0))
    );
    let hot = r["hot"].as_u64().unwrap() as f64 / 2000.0;
    assert!((0.25..=0.35).contains(&hot), "hot share {hot}");
    // Hot events share 10 keys; cold ones are (almost surely) distinct.
    let keys: i64 = redis::cmd("DBSIZE").query(&mut node.client()).unwrap();
    let cold = 2000 - r["hot"].as_i64().unwrap();
    assert!(
        keys >= cold && keys <= cold + 10,
        "{keys} keys for {cold} cold events"
    );

    // Seed 004's agents: metric events in batches to /v1/metrics, some
    // broken on purpose, which the server refuses one by one.
    let r = last_json(&strata(&[
        "generate",
        "--url",
        &url,
        "--shape",
        "metric",
        "--servers",
        "5",
        "--metrics",
        "4",
        "--batch-interval",
        "0",
        "--batch-size",
        "7",
        "--count",
        "100",
        "--bad-ratio",
        "0.2",
        "--late-ratio",
        "0.1",
        "--json",
    ]));
    let (sent, ok, rejected) = (
        r["sent"].as_u64().unwrap(),
        r["ok"].as_u64().unwrap(),
        r["rejected"].as_u64().unwrap(),
    );
    assert!(sent >= 100, "{r}");
    assert_eq!(ok + rejected, sent, "{r}");
    assert!(rejected > 0 && ok > rejected, "{r}");
    assert_eq!(r["failed"], 0, "{r}");
    assert!(r["batches"].as_u64().unwrap() >= sent.div_ceil(7), "{r}");
    let topic: serde_json::Value = ureq::get(&format!("{url}/v1/topics/metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    assert_eq!(topic["node"]["accepted"], ok, "{topic}");
    assert_eq!(topic["node"]["rejected"], rejected, "{topic}");
}

#[test]
fn generate_retries_then_gives_up_on_a_dead_server() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let r = last_json(&strata(&[
        "generate",
        "--url",
        &url,
        "--count",
        "3",
        "--rps",
        "100",
        "--max-retries",
        "2",
        "--backoff-ms",
        "5",
        "--connections",
        "1",
        "--json",
    ]));
    assert_eq!(
        (
            r["sent"].as_u64(),
            r["ok"].as_u64(),
            r["failed"].as_u64(),
            r["retried"].as_u64()
        ),
        (Some(3), Some(0), Some(3), Some(6))
    );
}
