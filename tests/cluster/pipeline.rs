//! The metric pipeline on a 3-node cluster: events sent to any node land
//! on their partitions' shards, each partition's worker runs on its
//! shard's leader, and when that leader is killed mid-window the worker
//! moves with the leadership and the series come out exactly as a model
//! computed from the same events says.

use std::time::Duration;

use serde_json::{json, Value};

use crate::metric_model::*;
use crate::procs::{create_cluster, leader_of, wait_ok, Proc};

fn url(p: &Proc) -> String {
    format!("http://{}:{}", p.host, p.http)
}

/// One event per server far ahead, so every partition holding one of
/// these servers closes its earlier windows.
fn close_partitions(http: &str, base: i64, servers: usize) {
    let evs: Vec<Value> = (0..servers)
        .map(|s| json!({"tenant": "acme", "server_id": format!("srv-{s}"), "metric": "tick", "value": 0, "ts": base + 3600}))
        .collect();
    let (status, r) = post(
        &format!("{http}/v1/metrics"),
        &Value::Array(evs).to_string(),
    );
    assert_eq!(status, 200, "{r}");
}

#[test]
fn workers_follow_their_partitions_leaders_through_a_failover() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster_with(root.path());
    let base = base();
    let servers = 12;
    let evs = events(23, base, 6, servers, 1, false);
    let mut model = Model::default();
    for e in &evs {
        model.offer(e);
    }
    assert_eq!(model.late, 0);
    // A schema for the topic, registered through one node: every node's
    // door and every worker (wherever the registry's shard is) check the
    // events against it.
    let schema = json!({"properties": {"value": {"type": "number"}}, "not": {"required": ["bad"]}});
    let (status, r) = put(
        &format!("{}/v1/schemas/metrics", url(&nodes[1])),
        &schema.to_string(),
    );
    assert_eq!((status, &r["version"]), (201, &json!(1)), "{r}");
    let bad = json!([{"tenant": "acme", "server_id": "srv-0", "metric": "m0", "value": 1, "ts": base, "bad": true}]);
    let (status, r) = post(&format!("{}/v1/metrics", url(&nodes[2])), &bad.to_string());
    assert_eq!(status, 400, "{r}");
    let why = r["errors"][0]["error"].as_str().unwrap_or_default();
    assert!(
        why.starts_with("schema version 1 of topic 'metrics'"),
        "{r}"
    );
    let half = evs.len() / 2;
    send(&url(&nodes[0]), "acme", &evs[..half]);

    // The workers run where the partitions' leaders are: each node
    // reports the partitions it aggregates, and together they are the
    // partitions that hold data, each exactly once.
    let (_, topic) = get(&format!("{}/v1/topics/metrics", url(&nodes[1])));
    let busy: Vec<(usize, String)> = topic["partition"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["length"].as_u64().unwrap_or(0) > 0)
        .map(|p| {
            (
                p["partition"].as_u64().unwrap() as usize,
                p["stream"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(busy.len() > 1, "{topic}");
    for (p, stream) in &busy {
        let leader = leader_of(&nodes, stream);
        let mut here = Vec::new();
        for _ in 0..100 {
            here = nodes
                .iter()
                .map(|n| {
                    let (_, t) = get(&format!("{}/v1/topics/metrics", url(n)));
                    t["partition"][*p]["worker_here"] == true
                })
                .collect();
            if here.iter().filter(|h| **h).count() == 1 && here[leader] {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            here[leader] && here.iter().filter(|h| **h).count() == 1,
            "partition {p}: {here:?}, leader {leader}"
        );
    }

    // Kill the leader of a busy partition mid-window.
    let victim = leader_of(&nodes, &busy[0].1);
    for _ in 0..200 {
        let (_, t) = get(&format!("{}/v1/topics/metrics", url(&nodes[victim])));
        let p = &t["partition"][busy[0].0];
        if p["lag"] == 0 && p["open_windows"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    nodes[victim].kill9();
    let alive: Vec<&Proc> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(_, n)| n)
        .collect();
    wait_ok(&alive, "after the kill");
    let via = url(alive[0]);
    send_retrying(&via, &evs[half..]);
    close_partitions(&via, base, servers);
    for s in 0..servers {
        let server = format!("srv-{s}");
        let want = model.expected(&server, "m0");
        let got = series_with(&url(alive[1]), "acme", &server, "m0", want.len());
        assert_points(&got, &want);
    }
    nodes[victim].start();
}

/// Sends events, retrying a batch the cluster refused while a shard was
/// electing its new leader (503). A retried batch may have been partly
/// stored, so batches are single events here: an event is either
/// acknowledged once or retried until it is.
fn send_retrying(http: &str, evs: &[Ev]) {
    for e in evs {
        let body = Value::Array(vec![e.json("acme")]).to_string();
        let mut ok = false;
        for _ in 0..100 {
            let (status, r) = post(&format!("{http}/v1/metrics"), &body);
            if status == 200 && r["accepted"] == 1 {
                ok = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(ok, "event never accepted");
    }
}

fn start_cluster_with(root: &std::path::Path) -> Vec<Proc> {
    // Only events move the watermarks here, not quiet time.
    let mut nodes: Vec<Proc> = (0..3).map(|i| Proc::new(root, i)).collect();
    for n in &mut nodes {
        n.env
            .push(("STRATA_STREAMS_IDLE_ADVANCE_SECS".into(), "0".into()));
    }
    create_cluster(&mut nodes);
    nodes
}
