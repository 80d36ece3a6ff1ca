//! Growing and shrinking a running cluster of real processes: a 4th node
//! joins a 3-node cluster under steady writes with `strata cluster
//! add-node`, and an original node leaves with `strata cluster
//! remove-node`. Every acknowledged write reads back from every remaining
//! node, the joining node receives about a quarter of the key copies, and
//! the removed node is told it is no longer a member and drops its data.
//! Refusals (a removal with nowhere to move, bad requests) change nothing.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::procs::*;
use redis::cmd;

fn strata(args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN).args(args).output().expect("run strata");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("strata {}:\n{text}", args.join(" "));
    (out.status.success(), text)
}

/// Keys in a node's own store.
fn local_keys(p: &Proc) -> u64 {
    let info: String = cmd("INFO")
        .arg("keyspace")
        .query(&mut p.client())
        .expect("info");
    info.lines()
        .filter_map(|l| {
            l.split_once(":keys=")?
                .1
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

fn myid(p: &Proc) -> String {
    cmd("CLUSTER")
        .arg("MYID")
        .query(&mut p.client())
        .expect("myid")
}

#[test]
fn nodes_join_and_leave_under_writes_and_nothing_is_lost() {
    let _alone = exclusive();
    let root = tempfile::tempdir().expect("tempdir");
    let mut nodes = start_cluster(root.path());

    // Three nodes, three replicas each: a removal has nowhere to go.
    let (ok, out) = strata(&[
        "cluster",
        "remove-node",
        &myid(&nodes[1]),
        "--via",
        &nodes[0].addr(),
    ]);
    assert!(!ok && out.contains("add a node first"), "{out}");
    let id1 = myid(&nodes[1]);
    let r = http_agent()
        .delete(&format!(
            "http://{}:{}/nodes/{}",
            nodes[0].host,
            nodes[0].http,
            &id1[id1.len() - 16..]
        ))
        .call()
        .expect("delete");
    assert_eq!(
        r.status().as_u16(),
        409,
        "a removal with nowhere to go is refused"
    );
    let (s, body) = http_post(&nodes[0], "/nodes", "{\"addr\": 1}");
    assert_eq!(s, 400, "{body}");
    let (s, _) = http_post(&nodes[0], "/nodes", "not json");
    assert_eq!(s, 400);
    let r = http_agent()
        .delete(&format!(
            "http://{}:{}/nodes/00000000deadbeef",
            nodes[0].host, nodes[0].http
        ))
        .call()
        .expect("delete");
    assert_eq!(r.status().as_u16(), 404);
    assert!(cluster_info(&nodes[0]).contains("strata_moves_planned:0"));

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = [("grow-a", 0usize), ("grow-b", 2)]
        .into_iter()
        .map(|(prefix, via)| writer(nodes[via].addr(), prefix, stop.clone(), acked.clone()))
        .collect();
    std::thread::sleep(Duration::from_secs(1));

    // Join: the new node receives whole shard replicas, about 1/4 of the
    // key copies, while the writers go on.
    let mut fourth = Proc::new(root.path(), 3);
    fourth.start();
    let started = Instant::now();
    let (ok, out) = strata(&["cluster", "add-node", &fourth.addr(), &nodes[0].addr()]);
    assert!(ok, "add-node failed: {out}");
    println!("join took {:?}", started.elapsed());
    assert!(out.contains("2 shard replicas will move to it"), "{out}");
    nodes.push(fourth);
    let refs: Vec<&Proc> = nodes.iter().collect();
    wait_ok(&refs, "after the join");
    let copies: Vec<u64> = nodes.iter().map(local_keys).collect();
    let share = copies[3] as f64 / copies.iter().sum::<u64>() as f64;
    println!("key copies per node after the join: {copies:?}; the new node holds {share:.3}");
    assert!(
        (0.15..0.35).contains(&share),
        "joining node's share {share}"
    );
    let info = cluster_info(&nodes[3]);
    assert!(
        info.contains("strata_member:yes") && info.contains("strata_moves_pending:0"),
        "{info}"
    );
    let metrics = http_agent()
        .get(&format!(
            "http://{}:{}/metrics",
            nodes[3].host, nodes[3].http
        ))
        .call()
        .expect("metrics")
        .body_mut()
        .read_to_string()
        .expect("metrics text");
    for line in [
        "strata_cluster_moves_done_total 2",
        "strata_cluster_moves_pending 0",
        "strata_cluster_member 1",
    ] {
        assert!(metrics.contains(line), "{line} missing from /metrics");
    }
    let id = myid(&nodes[3]);
    let (s, me) = http_get(&nodes[3], &format!("/nodes/{}", &id[id.len() - 16..]));
    assert_eq!(s, 200, "{me}");
    assert!(me["keys"].as_u64() >= Some(copies[3]), "{me}");
    let shards = |k: &str| me[k].as_array().map_or(0, Vec::len);
    assert_eq!(
        shards("replicates_shards") + shards("leads_shards"),
        2,
        "{me}"
    );

    // Leave: an original node's replicas move to the others first.
    std::thread::sleep(Duration::from_millis(500));
    let leaving = myid(&nodes[1]);
    let (_, before) = http_get(
        &nodes[1],
        &format!("/nodes/{}", &leaving[leaving.len() - 16..]),
    );
    let led = before["leads_shards"].as_array().map_or(0, Vec::len);
    let started = Instant::now();
    let (ok, out) = strata(&[
        "cluster",
        "remove-node",
        &leaving,
        "--via",
        &nodes[0].addr(),
    ]);
    assert!(ok, "remove-node failed: {out}");
    println!("leave took {:?}", started.elapsed());
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let errors: Vec<u64> = writers
        .into_iter()
        .map(|w| w.join().expect("writer"))
        .collect();
    let removed = nodes.remove(1);
    let acked = acked.lock().expect("acked").clone();
    println!(
        "{} writes acknowledged; writer errors (retried): {errors:?}",
        acked.len()
    );
    assert!(acked.len() > 100, "the writers made progress");
    // Shards changed leaders and replicas under them: requests were held
    // or re-routed, never refused.
    assert_eq!(errors, vec![0, 0], "clients saw errors during the moves");

    // A shard it led was handed to another replica before it left
    // (removed while leading, it would have stepped down mid-write).
    let log = std::fs::read_to_string(removed.dir.join("log")).unwrap_or_default();
    let handed = log.matches("handed the shard's leadership over").count();
    println!("the leaving node led {led} shards and handed over {handed}");
    assert!(handed >= led, "led {led} shards, handed over {handed}");

    // The removed node knows it, and keeps no copy of any shard.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(cluster_info(&removed).contains("strata_member:removed") && local_keys(&removed) == 0) {
        assert!(
            Instant::now() < deadline,
            "removed node: {} keys, {}",
            local_keys(&removed),
            cluster_info(&removed)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(cluster_info(&removed).contains("cluster_state:fail"));
    for p in &nodes {
        let info = cluster_info(p);
        assert!(info.contains("cluster_known_nodes:3"), "{info}");
    }
    let refs: Vec<&Proc> = nodes.iter().collect();
    wait_ok(&refs, "after the leave");
    check_all(&nodes, &acked);
    // Every shard is back at three replicas, one per remaining node.
    for p in &nodes {
        let info = cluster_info(p);
        assert!(info.contains("strata_shards_replicated_here:3"), "{info}");
    }
    // Once the moves are done the leaderships are evened out too: three
    // shards, one led by each node.
    let led = |p: &Proc| {
        let id = myid(p);
        let (_, me) = http_get(p, &format!("/nodes/{}", &id[id.len() - 16..]));
        me["leads_shards"].as_array().map_or(0, Vec::len)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let counts: Vec<usize> = nodes.iter().map(led).collect();
        if counts == [1, 1, 1] {
            let handoffs: usize = nodes
                .iter()
                .map(|p| {
                    std::fs::read_to_string(p.dir.join("log"))
                        .unwrap_or_default()
                        .matches("handed the shard's leadership over")
                        .count()
                })
                .sum();
            println!("leaderships even; the remaining nodes made {handoffs} handoffs");
            break;
        }
        assert!(Instant::now() < deadline, "shards led per node: {counts:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_member_down_too_long_is_replaced_and_told_so_when_it_returns() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut nodes: Vec<Proc> = (0..4).map(|i| Proc::new(root.path(), i)).collect();
    for n in &mut nodes {
        n.env = vec![("STRATA_NODE_DOWN_AFTER".into(), "3".into())];
    }
    create_cluster(&mut nodes);
    let mut acked = Vec::new();
    let mut c = nodes[0].client();
    for i in 0..400 {
        let key = format!("heal:{i}");
        let _: () = redis::Commands::set(&mut c, &key, &key).expect("set");
        acked.push(key);
    }
    let mut gone = nodes.remove(3);
    let gone_id = myid(&gone);
    gone.kill9();
    let killed = Instant::now();

    // Its replicas are rebuilt on the three others, then it is removed.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let info = cluster_info(&nodes[0]);
        if info.contains("cluster_known_nodes:3") && info.contains("strata_moves_pending:0") {
            break;
        }
        assert!(Instant::now() < deadline, "not replaced: {info}");
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("member down at 3 s replaced after {:?}", killed.elapsed());
    let refs: Vec<&Proc> = nodes.iter().collect();
    wait_ok(&refs, "after the replacement");
    for p in &nodes {
        let info = cluster_info(p);
        // Four shards, three replicas each, on three nodes.
        assert!(info.contains("strata_shards_replicated_here:4"), "{info}");
    }
    check_all(&nodes, &acked);

    // Back again, it learns it is no longer a member and serves nothing.
    gone.start();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(cluster_info(&gone).contains("strata_member:removed") && local_keys(&gone) == 0) {
        assert!(
            Instant::now() < deadline,
            "returning node: {} keys, {}",
            local_keys(&gone),
            cluster_info(&gone)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let e = redis::Commands::get::<_, Option<String>>(&mut gone.client(), "heal:1").unwrap_err();
    assert_eq!(e.code(), Some("CLUSTERDOWN"), "{e}");
    let members: String = cmd("CLUSTER")
        .arg("NODES")
        .query(&mut nodes[0].client())
        .expect("nodes");
    assert!(!members.contains(&gone_id), "{members}");
}
