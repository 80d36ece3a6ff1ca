//! Operations on a 3-node cluster: every member scores the cluster's
//! health from the others' scores; a member paused with SIGSTOP fires
//! `cluster_node_down` on the others, which reaches their webhook, shows
//! in the cluster health as unreachable, and resolves once it is back.

use redis::Commands;
use serde_json::Value;

use crate::alert_kit::{wait_for, Webhook};
use crate::procs::*;

fn alerts(p: &Proc) -> Vec<Value> {
    http_get(p, "/api/alerts").1["alerts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn a_paused_member_fires_cluster_node_down_and_resolves_when_back() {
    let _alone = exclusive();
    let hook = Webhook::start(0);
    let root = tempfile::tempdir().expect("tempdir");
    let mut nodes: Vec<Proc> = (0..3).map(|i| Proc::new(root.path(), i)).collect();
    for n in &mut nodes {
        n.env
            .push(("STRATA_MONITORING_INTERVAL_SECS".into(), "1".into()));
        n.env
            .push(("STRATA_ALERT_WEBHOOK_URL".into(), hook.url.clone()));
    }
    create_cluster(&mut nodes);
    let ids: Vec<String> = nodes
        .iter()
        .map(|p| {
            http_get(p, "/health").1["node_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();

    // Every member sees all three answer.
    for p in &nodes {
        let health = wait_for(30, "the cluster health with 3 members", || {
            let h = http_get(p, "/health").1["cluster_health"].clone();
            let all = h["nodes"].as_array().is_some_and(|n| {
                n.len() == 3 && n.iter().all(|m| m["reachable"] == Value::Bool(true))
            });
            all.then_some(h)
        });
        assert!(health["score"].as_u64().unwrap() <= 100);
    }
    let (_, topo) = http_get(&nodes[1], "/api/monitoring?action=redis_cluster");
    assert_eq!(topo["data"]["nodes"].as_array().unwrap().len(), 3);
    assert!(topo["data"]["shards"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["leader"].is_string()));
    assert!(
        !alerts(&nodes[0])
            .iter()
            .any(|a| a["rule"] == "cluster_node_down"),
        "a healthy cluster raises no cluster_node_down"
    );

    // Pause one member.
    nodes[2].signal("-STOP");
    let fired = wait_for(60, "cluster_node_down on node 0", || {
        alerts(&nodes[0])
            .into_iter()
            .find(|a| a["rule"] == "cluster_node_down" && a["status"] == "firing")
    });
    assert_eq!(fired["severity"], "high");
    assert_eq!(fired["node_id"].as_str().unwrap(), ids[0]);
    println!("cluster_node_down: {}", fired["message"]);
    let from_node0 = wait_for(30, "the webhook to get node 0's alert", || {
        hook.received("cluster_node_down", "firing")
            .into_iter()
            .find(|b| b["alert"]["node_id"].as_str() == Some(ids[0].as_str()))
    });
    assert_eq!(from_node0["alert"]["id"], fired["id"]);
    let health = wait_for(30, "node 2 unreachable in the cluster health", || {
        let h = http_get(&nodes[0], "/health").1["cluster_health"].clone();
        let down = h["nodes"].as_array()?.iter().any(|m| {
            m["id"].as_str() == Some(ids[2].as_str()) && m["reachable"] == Value::Bool(false)
        });
        down.then_some(h)
    });
    println!("cluster health with a member paused: {health}");
    assert!(
        health["score"].as_u64().unwrap() <= 89,
        "a member down leaves the cluster at most at warning: {health}"
    );
    // The others still serve writes (a majority is up).
    let mut c = nodes[0].client();
    for i in 0..20 {
        let () = c
            .set(format!("ops:{i}"), i)
            .expect("write with one member paused");
    }

    // Back: the rule resolves.
    nodes[2].signal("-CONT");
    wait_for(60, "cluster_node_down to resolve on node 0", || {
        alerts(&nodes[0])
            .into_iter()
            .find(|a| a["rule"] == "cluster_node_down" && a["status"] == "resolved")
    });
    wait_for(30, "the webhook to get the resolution", || {
        hook.received("cluster_node_down", "resolved")
            .into_iter()
            .next()
    });
}
