//! A node that was down while its shards' logs moved past it and were
//! truncated catches up by installing a snapshot of the shard's slots:
//! after a restart it holds every write made while it was away, none of
//! the keys deleted meanwhile, and keeps them through another crash.

use std::time::{Duration, Instant};

use crate::procs::*;
use redis::{cmd, Commands};

fn counter(p: &Proc, name: &str) -> u64 {
    let text = metrics_text(p);
    let line = format!("strata_{name}_total ");
    text.lines()
        .find_map(|l| l.strip_prefix(&line))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

/// Runs a write through `c`, retrying while a shard elects a leader.
fn settled(c: &mut redis::Connection, what: &redis::Cmd) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match what.query::<redis::Value>(c) {
            Ok(_) => return,
            Err(e) if matches!(e.code(), Some("CLUSTERDOWN" | "TRYAGAIN" | "NOQUORUM")) => {
                assert!(Instant::now() < deadline, "write: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("write: {e}"),
        }
    }
}

/// Waits until `p`'s own replica (READONLY) holds `want` and none of `gone`.
fn wait_replica(p: &Proc, want: &[(String, String)], gone: &[String]) {
    let mut c = p.client();
    let _: () = cmd("READONLY").query(&mut c).expect("readonly");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let wrong = want
            .iter()
            .filter(|(k, v)| c.get::<_, Option<String>>(k).ok().flatten().as_ref() != Some(v))
            .count()
            + gone
                .iter()
                .filter(|k| c.exists::<_, bool>(*k).unwrap_or(true))
                .count();
        if wrong == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {} still has {wrong} keys wrong",
            p.port
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn lagging_node_catches_up_from_a_snapshot() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut nodes: Vec<Proc> = (0..3).map(|i| Proc::new(root.path(), i)).collect();
    for n in &mut nodes {
        // Snapshot every 100 entries, so the log is truncated quickly.
        n.env = vec![("STRATA_RAFT_SNAPSHOT_EVERY".into(), "100".into())];
    }
    create_cluster(&mut nodes);

    // Keys the absent node will have seen, some of them later deleted
    // or overwritten.
    let mut c = nodes[0].client();
    for i in 0..300 {
        settled(&mut c, cmd("SET").arg(format!("before:{i}")).arg("old"));
    }
    let behind = group_gauge(&nodes[2], "raft_applied_index");
    assert!(behind.len() > 1, "node 2 replicates no shard: {behind:?}");
    nodes[2].kill9();

    let mut want = Vec::new();
    let mut gone = Vec::new();
    for i in 0..300 {
        let key = format!("before:{i}");
        match i % 3 {
            0 => {
                settled(&mut c, cmd("DEL").arg(&key));
                gone.push(key);
            }
            1 => {
                settled(&mut c, cmd("SET").arg(&key).arg("new"));
                want.push((key, "new".to_string()));
            }
            _ => want.push((key, "old".to_string())),
        }
    }
    for i in 0..1500 {
        let (key, value) = (format!("during:{i}"), format!("v{i}"));
        settled(&mut c, cmd("SET").arg(&key).arg(&value));
        want.push((key, value));
    }
    let _: () = cmd("HSET")
        .arg("during:hash")
        .arg("f")
        .arg("v")
        .query(&mut c)
        .expect("hset");

    // The live replicas have truncated their logs past what node 2 holds.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let purged = group_gauge(&nodes[0], "raft_purged_index");
        let lagging: Vec<u32> = behind
            .iter()
            .filter(|(g, idx)| **g != 0 && purged.get(g).is_some_and(|p| *p > **idx))
            .map(|(g, _)| *g)
            .collect();
        if lagging.len() == behind.len() - 1 {
            println!("shards truncated past node 2: {lagging:?} (purged {purged:?}, node 2 had {behind:?})");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "logs not truncated: purged {purged:?}, node 2 had {behind:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let start = Instant::now();
    nodes[2].start();
    wait_replica(&nodes[2], &want, &gone);
    println!("node 2 caught up in {:?}", start.elapsed());
    let installed = counter(&nodes[2], "raft_snapshots_installed");
    assert!(installed >= 1, "node 2 caught up without a snapshot");
    println!("node 2 installed {installed} snapshots");
    let mut c2 = nodes[2].client();
    let _: () = cmd("READONLY").query(&mut c2).expect("readonly");
    let h: Option<String> = c2.hget("during:hash", "f").expect("hget");
    assert_eq!(h.as_deref(), Some("v"));

    // What the snapshot installed is durable: it survives another crash.
    nodes[2].kill9();
    nodes[2].start();
    wait_replica(&nodes[2], &want, &gone);
    let refs: Vec<&Proc> = nodes.iter().collect();
    wait_ok(&refs, "after the second restart");
}
