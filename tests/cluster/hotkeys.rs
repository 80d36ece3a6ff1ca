//! Hot keys cached on every node: a key read often through a node that
//! doesn't lead its shard is answered from that node's cache, and a write
//! through any node is seen by the very next read on every node, even when
//! the caching node was paused while the key changed.

use redis::Commands;
use serde_json::Value;

use crate::procs::*;

/// A counter or gauge of a node's `/metrics` (no labels, or the labels
/// given as part of `series`).
fn metric(p: &Proc, series: &str) -> u64 {
    let prefix = format!("strata_{series} ");
    metrics_text(p)
        .lines()
        .find_map(|l| {
            l.strip_prefix(&prefix)
                .map(|v| v.trim().parse::<f64>().unwrap_or(0.0))
        })
        .unwrap_or_else(|| panic!("no series strata_{series}")) as u64
}

fn local_hits(p: &Proc) -> u64 {
    metric(p, "hits_total{tier=\"local_cache\"}")
}

fn http_value(p: &Proc, key: &str) -> (String, Value) {
    let (status, body) = http_get(p, &format!("/get/{key}"));
    assert_eq!(status, 200, "GET /get/{key} on {}: {body}", p.port);
    (
        body["source"].as_str().unwrap_or_default().to_string(),
        body["value"].clone(),
    )
}

#[test]
fn hot_keys_are_cached_on_every_node_and_never_served_stale() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut nodes: Vec<Proc> = (0..3).map(|i| Proc::new(root.path(), i)).collect();
    for n in &mut nodes {
        n.env.push(("HOTKEY_THRESHOLD_PER_MIN".into(), "20".into()));
    }
    create_cluster(&mut nodes);
    let key = "feature:user:42";
    let l = leader_of(&nodes, key);
    let (a, b) = ((l + 1) % 3, (l + 2) % 3);
    let mut via: Vec<redis::Connection> = nodes.iter().map(Proc::client).collect();

    // Read often through a node that doesn't lead the key's shard: it
    // becomes hot there, and is then served from that node's cache.
    let () = via[b].set(key, "v0").expect("set");
    for _ in 0..40 {
        let v: String = get_settled(&mut via[a], key);
        assert_eq!(v, "v0");
    }
    let before = local_hits(&nodes[a]);
    let (source, value) = http_value(&nodes[a], key);
    assert_eq!(value, "v0");
    assert_eq!(source, "local_cache", "a hot key read through node {a}");
    assert!(local_hits(&nodes[a]) > before);
    assert!(metric(&nodes[a], "read_cache_keys") >= 1);
    let hot: Vec<String> = http_get(&nodes[a], "/api/hotkeys").1["hotkeys"]
        .as_array()
        .expect("hotkeys")
        .iter()
        .filter_map(|h| h["key"].as_str().map(str::to_string))
        .collect();
    assert!(
        hot.iter().any(|k| k == key),
        "{key} listed as hot on node {a}: {hot:?}"
    );

    // Every write, through any node, is seen by the next read on every
    // node: the leader has the caching nodes drop the key before it
    // acknowledges the write.
    let hits_before = local_hits(&nodes[a]) + local_hits(&nodes[b]);
    for i in 1..=150 {
        let value = format!("v{i}");
        let writer = [l, a, b][i % 3];
        let () = via[writer].set(key, &value).expect("set");
        for reader in [a, b, l] {
            let got: String = via[reader].get(key).expect("get");
            assert_eq!(
                got, value,
                "read through node {reader} after a write through node {writer}"
            );
            let (_, got) = http_value(&nodes[reader], key);
            assert_eq!(got, value.as_str(), "HTTP read through node {reader}");
        }
    }
    let hits = local_hits(&nodes[a]) + local_hits(&nodes[b]) - hits_before;
    assert!(
        hits >= 150,
        "reads between writes came from the caches ({hits} hits)"
    );
    assert!(metric(&nodes[l], "read_cache_drops_told_total") >= 100);
    println!(
        "150 writes, {hits} cache hits on the other nodes, {} drops told by the leader",
        metric(&nodes[l], "read_cache_drops_told_total")
    );

    // A caching node paused while the key changes: the write waits out
    // its lease, and once it runs again it serves the new value at once.
    for _ in 0..5 {
        http_value(&nodes[a], key);
    }
    nodes[a].signal("-STOP");
    let () = via[l]
        .set(key, "while-paused")
        .expect("a write while a holder is paused");
    std::thread::sleep(std::time::Duration::from_millis(500));
    nodes[a].signal("-CONT");
    let got: String = via[a].get(key).expect("get after resume");
    assert_eq!(got, "while-paused");
    let (_, got) = http_value(&nodes[a], key);
    assert_eq!(got, "while-paused");

    // A cached key's expiry is kept: it is not served past it.
    let brief = "feature:user:43";
    let () = via[l]
        .set_options(
            brief,
            "soon-gone",
            redis::SetOptions::default().with_expiration(redis::SetExpiry::PX(1500)),
        )
        .expect("set px");
    let lb = leader_of(&nodes, brief);
    let reader = (lb + 1) % 3;
    for _ in 0..30 {
        let v: Option<String> = via[reader].get(brief).expect("get");
        assert!(v.is_none() || v.as_deref() == Some("soon-gone"));
    }
    // Set to expire 1.5 s after it was written: gone by now on every
    // node, cached or not.
    std::thread::sleep(std::time::Duration::from_millis(1600));
    for p in [reader, (lb + 2) % 3, lb] {
        let v: Option<String> = via[p].get(brief).expect("get");
        assert_eq!(v, None, "an expired key read through node {p}");
    }
}
