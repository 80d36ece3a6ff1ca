//! The metric pipeline end to end: events in over HTTP (and XADD), one-
//! minute points out of `/v1/series`, checked against aggregates computed
//! here, independently, from the same events.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{q, TestNode};
use crate::metric_model::*;
use crate::server_process::free_port;

#[test]
fn known_events_give_known_points() {
    let node = TestNode::start(|c| {
        c.streams.partitions = 1;
        c.streams.idle_advance_secs = 0;
    });
    let http = node.http("");
    let base = base();
    let evs = events(7, base, 6, 3, 2, true);
    let mut model = Model::default();
    for e in &evs {
        model.offer(e);
    }
    assert!(model.late > 0, "the input has events behind the watermark");
    send(&http, "acme", &evs);
    close_all(&http, base);
    for s in 0..3 {
        for m in 0..2 {
            let (server, metric) = (format!("srv-{s}"), format!("m{m}"));
            let want = model.expected(&server, &metric);
            let got = series_with(&http, "acme", &server, &metric, want.len());
            assert_points(&got, &want);
        }
    }
    // The query by server: every metric, same points.
    let (_, all) = get(&format!("{http}/v1/series?tenant=acme&server_id=srv-1"));
    let metrics: Vec<&str> = all["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["metric"].as_str().unwrap())
        .collect();
    assert_eq!(metrics, ["m0", "m1"]);
    assert_points(
        all["series"][1]["points"].as_array().unwrap(),
        &model.expected("srv-1", "m1"),
    );
    // A time range.
    let (_, some) = get(&format!(
        "{http}/v1/series?tenant=acme&server_id=srv-0&metric=m0&from={}&to={}",
        base + 60,
        base + 120
    ));
    let ts = point_times(some["points"].as_array().unwrap());
    assert_eq!(ts, [base + 60, base + 120]);
    // Late events were counted for their tenant.
    let (_, topic) = get(&format!("{http}/v1/topics/metrics"));
    assert_eq!(
        topic["partition"][0]["late_by_tenant"]["acme"], model.late,
        "{topic}"
    );
    assert_eq!(topic["partition"][0]["lag"], 0, "{topic}");
    // Another tenant sees nothing of these.
    let (_, other) = get(&format!("{http}/v1/series?tenant=other&server_id=srv-1"));
    assert_eq!(other["series"], json!([]));

    // A busy minute: past 64 values the percentiles come from a sketch,
    // within 1% of the exact ones.
    let busy: Vec<Ev> = (0..500)
        .map(|i| Ev {
            server: "busy".into(),
            metric: "lat".into(),
            value: 1.0 + f64::from(i * 37 % 500),
            ts: (base + 3600 + 60) as f64 + f64::from(i) / 10.0,
        })
        .collect();
    send(&http, "acme", &busy);
    let ev = json!([{"tenant": "clock", "server_id": "x", "metric": "tick", "value": 0, "ts": base + 3600 + 200}]);
    post(&format!("{http}/v1/metrics"), &ev.to_string());
    let got = series_with(&http, "acme", "busy", "lat", 1);
    assert_eq!(got[0]["count"], 500);
    assert_eq!(
        (got[0]["min"].as_f64(), got[0]["max"].as_f64()),
        (Some(1.0), Some(500.0))
    );
    for (f, want) in [("p50", 250.0), ("p95", 475.0), ("p99", 495.0)] {
        let v = got[0][f].as_f64().unwrap();
        assert!(
            (v - want).abs() / want < 0.015,
            "{f} = {v}, want about {want}"
        );
    }
}

#[test]
fn bad_events_are_refused_one_by_one_and_bad_entries_dead_lettered() {
    let node = TestNode::start(|c| {
        c.streams.partitions = 1;
        c.streams.idle_advance_secs = 0;
    });
    let http = node.http("");
    let base = base();
    let good = |v: f64, ts: i64| json!({"tenant": "t", "server_id": "s", "metric": "cpu", "value": v, "ts": ts});
    let batch = json!([
        good(1.0, base),
        {"tenant": "t", "server_id": "s", "metric": "cpu", "value": "high", "ts": base},
        good(2.0, base + 1),
        {"tenant": "t", "metric": "cpu", "value": 1, "ts": base},
        "not an object",
        {"tenant": "t", "server_id": "s", "metric": "cpu", "value": 1, "ts": base + 86_400 * 365},
    ]);
    let (status, r) = post(&format!("{http}/v1/metrics"), &batch.to_string());
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["accepted"], 2);
    assert_eq!(r["rejected"], 4);
    let errors: Vec<(u64, &str)> = r["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["index"].as_u64().unwrap(), e["error"].as_str().unwrap()))
        .collect();
    assert_eq!(
        errors,
        [
            (1, "field 'value' must be a number"),
            (3, "missing field 'server_id'"),
            (4, "an event must be a JSON object"),
            (
                5,
                "field 'ts' is more than 300 s ahead of the server's clock"
            ),
        ]
    );
    // NDJSON, with a line that isn't JSON.
    let nd = format!(
        "{}\n{{oops\n\n{}\n",
        good(3.0, base + 2),
        good(4.0, base + 3)
    );
    let (status, r) = post(&format!("{http}/v1/metrics"), &nd);
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        (r["accepted"].as_u64(), r["rejected"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(r["errors"][0]["index"], 1);
    // A body that is all bad: 400 with the same shape; broken JSON: 400.
    let (status, r) = post(&format!("{http}/v1/metrics"), "[1, 2]");
    assert_eq!((status, r["rejected"].as_u64()), (400, Some(2)));
    let (status, r) = post(&format!("{http}/v1/metrics"), "[{");
    assert_eq!(status, 400);
    assert!(
        r["error"].as_str().unwrap().starts_with("invalid JSON"),
        "{r}"
    );

    // Over RESP: an event XADDed to the partition stream counts like one
    // sent over HTTP; a malformed entry goes to the dead letters and the
    // worker carries on.
    let (stream, dead) = first_partition(&http);
    let mut c = node.client();
    let ts = (base + 4).to_string();
    xadd_cpu(&mut c, &stream, "5", &ts);
    xadd_cpu(&mut c, &stream, "NaN", &ts);
    q(&mut c, &["XADD", &stream, "*", "hello", "world"]);
    xadd_cpu(&mut c, &stream, "6", &ts);
    close_all(&http, base);
    let got = series_with(&http, "t", "s", "cpu", 1);
    assert_eq!(got[0]["count"], 6, "{got:?}");
    assert_eq!(got[0]["sum"], 21.0);
    let mut ok = false;
    for _ in 0..100 {
        if let redis::Value::Int(2) = q(&mut c, &["XLEN", &dead]) {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ok, "two entries dead-lettered");
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(&dead)
        .arg("-")
        .arg("+")
        .query(&mut c)
        .unwrap();
    assert_eq!(
        entries[0].1[0],
        ("error".into(), "field 'value' must be a number".into())
    );
    assert_eq!(
        entries[1].1[0],
        ("error".into(), "missing field 'tenant'".into())
    );
    let (_, topic) = get(&format!("{http}/v1/topics/metrics"));
    assert_eq!(topic["partition"][0]["dead_lettered"], 2, "{topic}");
}

#[test]
fn the_ring_keeps_retention_slots_minutes() {
    let node = TestNode::start(|c| {
        c.streams.retention_slots = 5;
        c.streams.idle_advance_secs = 0;
    });
    let http = node.http("");
    let base = base();
    let evs: Vec<Ev> = (0..8)
        .map(|m| Ev {
            server: "s".into(),
            metric: "disk".into(),
            value: m as f64,
            ts: (base + m * 60 + 30) as f64,
        })
        .collect();
    send(&http, "t", &evs);
    let far = json!([{"tenant": "t", "server_id": "s", "metric": "clock", "value": 0, "ts": base + 3600}]);
    post(&format!("{http}/v1/metrics"), &far.to_string());
    // The newest minute closes last; by then the ring holds minutes 3-7.
    let want: Vec<i64> = (3..8).map(|m| base + m * 60).collect();
    let mut ts = Vec::new();
    for _ in 0..200 {
        let got = series_with(&http, "t", "s", "disk", 5);
        ts = point_times(&got);
        if ts.last() == want.last() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(ts, want);
    // A range reaching back before the retained minutes gets those kept.
    let (_, some) = get(&format!(
        "{http}/v1/series?tenant=t&server_id=s&metric=disk&from={base}&to={}",
        base + 4 * 60
    ));
    let ts = point_times(some["points"].as_array().unwrap());
    assert_eq!(ts, [base + 180, base + 240]);
    let (status, _) = get(&format!(
        "{http}/v1/series?tenant=t&server_id=s&from=5&to=1"
    ));
    assert_eq!(status, 400);
    let (status, _) = get(&format!("{http}/v1/series?tenant=t"));
    assert_eq!(status, 400);
}

fn spawn(dir: &std::path::Path, port: u16, http: u16) -> std::process::Child {
    let cfg = dir.join("strata.toml");
    std::fs::write(
        &cfg,
        "[streams]\npartitions = 1\nidle_advance_secs = 0\n[storage]\nappendfsync = \"always\"\n",
    )
    .unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
        .args([
            "server",
            "--port",
            &port.to_string(),
            "--http-port",
            &http.to_string(),
        ])
        .arg("--config")
        .arg(&cfg)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn strata")
}

fn wait_http(http: &str) {
    for _ in 0..200 {
        if agent().get(&format!("{http}/health")).call().is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("strata did not serve HTTP at {http}");
}

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_worker_killed_mid_window_restarts_without_double_counting() {
    let dir = tempfile::tempdir().unwrap();
    let (port, http_port) = (free_port(), free_port());
    let http = format!("http://127.0.0.1:{http_port}");
    let base = base();
    let evs = events(11, base, 8, 2, 2, true);
    let mut model = Model::default();
    for e in &evs {
        model.offer(e);
    }
    let half = evs.len() / 2;

    let mut child = Killed(spawn(dir.path(), port, http_port));
    wait_http(&http);
    send(&http, "acme", &evs[..half]);
    // Wait until the worker has read everything, with windows still open
    // and some already stored: then kill it mid-window.
    let mut status = Value::Null;
    for _ in 0..200 {
        let (_, t) = get(&format!("{http}/v1/topics/metrics"));
        status = t["partition"][0].clone();
        if status["lag"] == 0 && status["open_windows"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(status["lag"], 0, "{status}");
    assert!(status["open_windows"].as_u64().unwrap() > 0, "{status}");
    assert!(status["windows_stored"].as_u64().unwrap() > 0, "{status}");
    child.0.kill().unwrap();
    child.0.wait().unwrap();

    let _child = Killed(spawn(dir.path(), port, http_port));
    wait_http(&http);
    send(&http, "acme", &evs[half..]);
    close_all(&http, base);
    for s in 0..2 {
        for m in 0..2 {
            let (server, metric) = (format!("srv-{s}"), format!("m{m}"));
            let want = model.expected(&server, &metric);
            let got = series_with(&http, "acme", &server, &metric, want.len());
            assert_points(&got, &want);
        }
    }
    let (_, t) = get(&format!("{http}/v1/topics/metrics"));
    assert_eq!(
        t["partition"][0]["late_by_tenant"]["acme"], model.late,
        "{t}"
    );
}

/// The `ts` of each point of a series answer.
fn point_times(points: &[Value]) -> Vec<i64> {
    points.iter().map(|p| p["ts"].as_i64().unwrap()).collect()
}

/// XADDs a `cpu` event of tenant `t`, server `s` straight to a partition stream.
fn xadd_cpu(c: &mut redis::Connection, stream: &str, value: &str, ts: &str) {
    q(
        c,
        &[
            "XADD",
            stream,
            "*",
            "tenant",
            "t",
            "server_id",
            "s",
            "metric",
            "cpu",
            "value",
            value,
            "ts",
            ts,
        ],
    );
}

/// Reads an SSE stream's `data:` lines into a channel.
fn sse(url: String) -> std::sync::mpsc::Receiver<Value> {
    let (tx, rx) = std::sync::mpsc::channel();
    let resp = agent().get(&url).call().expect("stream");
    assert_eq!(resp.status().as_u16(), 200);
    std::thread::spawn(move || {
        use std::io::BufRead;
        let reader = std::io::BufReader::new(resp.into_body().into_reader());
        for line in reader.lines() {
            let Ok(line) = line else { return };
            if let Some(data) = line.strip_prefix("data:") {
                if let Ok(v) = serde_json::from_str(data.trim()) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

#[test]
fn a_live_stream_sends_each_window_as_it_closes() {
    let node = TestNode::start(|c| {
        c.streams.partitions = 1;
        c.streams.idle_advance_secs = 0;
    });
    let http = node.http("");
    let base = base();
    // A window that closed before the stream opened is not news.
    let old = json!([{"tenant": "acme", "server_id": "srv-1", "metric": "cpu", "value": 9.0, "ts": base - 600}]);
    assert_eq!(post(&format!("{http}/v1/metrics"), &old.to_string()).0, 200);
    let tick = json!([{"tenant": "clock", "server_id": "x", "metric": "tick", "value": 0, "ts": base - 60}]);
    assert_eq!(
        post(&format!("{http}/v1/metrics"), &tick.to_string()).0,
        200
    );
    series_with(&http, "acme", "srv-1", "cpu", 1);

    let live = sse(format!(
        "{http}/v1/series/stream?tenant=acme&server_id=srv-1"
    ));
    std::thread::sleep(Duration::from_millis(1500));
    let evs = json!([
        {"tenant": "acme", "server_id": "srv-1", "metric": "cpu", "value": 1.0, "ts": base + 1},
        {"tenant": "acme", "server_id": "srv-1", "metric": "cpu", "value": 3.0, "ts": base + 2},
        {"tenant": "acme", "server_id": "srv-1", "metric": "mem", "value": 7.0, "ts": base + 3},
        {"tenant": "acme", "server_id": "srv-2", "metric": "cpu", "value": 5.0, "ts": base + 4},
    ]);
    assert_eq!(post(&format!("{http}/v1/metrics"), &evs.to_string()).0, 200);
    close_all(&http, base);
    let mut got = Vec::new();
    while got.len() < 2 {
        let ev = live
            .recv_timeout(Duration::from_secs(30))
            .expect("a point within 30 s of its window closing");
        got.push(ev);
    }
    got.sort_by(|a, b| a["metric"].as_str().cmp(&b["metric"].as_str()));
    assert_eq!(got[0]["metric"], "cpu");
    assert_eq!(got[0]["server_id"], "srv-1");
    assert_eq!(got[0]["point"]["ts"], base);
    assert_eq!(got[0]["point"]["count"], 2);
    assert_eq!(got[0]["point"]["min"], 1.0);
    assert_eq!(got[0]["point"]["max"], 3.0);
    assert_eq!(got[1]["metric"], "mem");
    assert_eq!(got[1]["point"]["avg"], 7.0);
    // Nothing else: not the old window, not another server's.
    assert!(live.recv_timeout(Duration::from_millis(2500)).is_err());

    // With `from`, stored points come first; `metric` narrows it.
    let replay = sse(format!(
        "{http}/v1/series/stream?tenant=acme&server_id=srv-1&metric=cpu&from={}",
        base - 900
    ));
    let first = replay
        .recv_timeout(Duration::from_secs(10))
        .expect("replayed");
    let second = replay
        .recv_timeout(Duration::from_secs(10))
        .expect("replayed");
    assert_eq!(first["point"]["ts"], base - 600);
    assert_eq!(second["point"]["ts"], base);
    let (status, _) = get(&format!("{http}/v1/series/stream?server_id=srv-1"));
    assert_eq!(status, 400);
}
