//! A 3-node cluster of real `strata` processes formed with `strata cluster
//! create`: writes through any node and through a cluster-aware client
//! land on their shard and read back from every node; a shard leader
//! killed with SIGKILL (and one paused with SIGSTOP) under concurrent
//! writes is replaced, and after it returns every acknowledged write is
//! readable and the replicas agree. Times are printed, never asserted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::procs::*;
use redis::{cmd, Commands};

#[test]
fn writes_route_and_survive_leader_kill_and_pause() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut nodes = start_cluster(root.path());

    // Simple clients: any node serves any key (forwarded to the leader).
    for (i, p) in nodes.iter().enumerate() {
        let mut c = p.client();
        for k in 0..50 {
            let _: () = c
                .set(format!("plain:{i}:{k}"), k)
                .expect("set via any node");
        }
    }
    for p in &nodes {
        let mut c = p.client();
        for i in 0..3 {
            for k in 0..50 {
                let v: i64 = c.get(format!("plain:{i}:{k}")).expect("get via any node");
                assert_eq!(v, k);
            }
        }
    }
    // A pipeline: runs of writes to one shard travel as one Raft entry;
    // replies come back in order, errors included.
    let mut c = nodes[0].client();
    let mut pipe = redis::pipe();
    for k in 0..64 {
        pipe.cmd("SET").arg(format!("{{p}}:{k}")).arg(k).ignore();
    }
    pipe.cmd("INCR").arg("{p}:3");
    pipe.cmd("GET").arg("{p}:3");
    pipe.cmd("SET").arg("elsewhere").arg("x");
    let (incr, get, other): (i64, String, String) = pipe.query(&mut c).expect("pipeline");
    assert_eq!((incr, get.as_str(), other.as_str()), (4, "4", "OK"));
    let e = cmd("HSET")
        .arg("{p}:3")
        .arg("f")
        .arg("v")
        .query::<i64>(&mut c)
        .unwrap_err();
    assert_eq!(e.code(), Some("WRONGTYPE"));
    for p in &nodes {
        let mut c = p.client();
        for k in 0..64 {
            let v: i64 = c.get(format!("{{p}}:{k}")).expect("get pipelined");
            assert_eq!(v, if k == 3 { 4 } else { k });
        }
    }
    // Concurrent clients' writes to one shard are committed together;
    // each client still gets its own reply, errors included.
    let lead = leader_of(&nodes, "{grp}");
    let _: () = nodes[lead].client().set("{grp}:str", "x").expect("set");
    let entries_before = last_log_index(&nodes[lead], "{grp}");
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let addr = nodes[lead].addr();
            std::thread::spawn(move || {
                let mut c = redis::Client::open(format!("redis://{addr}/"))
                    .expect("client")
                    .get_connection()
                    .expect("connect");
                let mut seen = Vec::new();
                for _ in 0..100 {
                    seen.push(c.incr::<_, _, i64>("{grp}:n", 1).expect("incr"));
                    let e = c.incr::<_, _, i64>("{grp}:str", 1).unwrap_err();
                    assert!(e.to_string().contains("not an integer"), "{e}");
                }
                seen
            })
        })
        .collect();
    let mut all = Vec::new();
    for w in workers {
        let seen = w.join().expect("worker");
        assert!(seen.windows(2).all(|p| p[0] < p[1]), "{seen:?}");
        all.extend(seen);
    }
    all.sort_unstable();
    assert_eq!(all, (1..=1600).collect::<Vec<i64>>());
    println!(
        "3200 concurrent writes to one shard took {} log entries",
        last_log_index(&nodes[lead], "{grp}") - entries_before
    );
    for p in &nodes {
        let v: i64 = p.client().get("{grp}:n").expect("get");
        assert_eq!(v, 1600);
    }
    // Lists replicate like any other type; a move between slots is refused.
    for p in &nodes {
        let _: i64 = p.client().rpush("{q}:jobs", p.port).expect("rpush");
    }
    for p in &nodes {
        let jobs: Vec<u16> = p.client().lrange("{q}:jobs", 0, -1).expect("lrange");
        assert_eq!(jobs, nodes.iter().map(|n| n.port).collect::<Vec<_>>());
    }
    let moved: Option<u16> = cmd("LMOVE")
        .arg("{q}:jobs")
        .arg("{q}:active")
        .arg("LEFT")
        .arg("RIGHT")
        .query(&mut nodes[2].client())
        .expect("lmove within a slot");
    assert_eq!(moved, Some(nodes[0].port));
    let e = cmd("LMOVE")
        .arg("{q}:jobs")
        .arg("elsewhere")
        .arg("LEFT")
        .arg("RIGHT")
        .query::<redis::Value>(&mut nodes[1].client())
        .unwrap_err();
    assert_eq!(e.code(), Some("CROSSSLOT"), "{e}");
    // SPOP picks at random, yet every replica removes the same members:
    // the pick is drawn from a generator seeded by the log entry.
    let members: Vec<u32> = (0..50).collect();
    let _: i64 = nodes[0].client().sadd("{q}:seen", &members).expect("sadd");
    let popped: Vec<u32> = cmd("SPOP")
        .arg("{q}:seen")
        .arg(20)
        .query(&mut nodes[1].client())
        .expect("spop");
    assert_eq!(popped.len(), 20);
    let mut want: Vec<u32> = members
        .iter()
        .copied()
        .filter(|m| !popped.contains(m))
        .collect();
    want.sort_unstable();
    for p in &nodes {
        let mut c = p.client();
        let _: () = cmd("READONLY").query(&mut c).expect("readonly");
        let mut local: Vec<u32> = Vec::new();
        for _ in 0..100 {
            local = c.smembers("{q}:seen").expect("smembers");
            local.sort_unstable();
            if local == want {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(
            local, want,
            "replica on port {} popped other members",
            p.port
        );
    }
    // A replicated pop answers a RESP2 client in RESP2's shape.
    let _: i64 = nodes[0]
        .client()
        .zadd_multiple("{q}:delayed", &[(1, "a"), (2, "b"), (3, "c")])
        .expect("zadd");
    let flat: Vec<String> = cmd("ZPOPMIN")
        .arg("{q}:delayed")
        .arg(2)
        .query(&mut nodes[2].client())
        .expect("zpopmin");
    assert_eq!(flat, ["a", "1", "b", "2"]);
    // The HTTP API works from any node too.
    for (i, p) in nodes.iter().enumerate() {
        let body = format!(r#"{{"key":"http-{i}","content":"via node {i}"}}"#);
        let resp = ureq::post(&format!("http://127.0.0.1:{}/api/write", p.http))
            .header("Content-Type", "application/json")
            .send(body.as_bytes())
            .expect("api/write");
        assert_eq!(resp.status(), 200);
    }
    for p in &nodes {
        for i in 0..3 {
            let text = ureq::get(&format!("http://127.0.0.1:{}/api/read/http-{i}", p.http))
                .call()
                .expect("api/read")
                .into_body()
                .read_to_string()
                .expect("body");
            assert!(text.contains(&format!("via node {i}")), "{text}");
        }
    }
    // Seed 003's cluster view from every node: members up, a leader for
    // every shard, the metadata term as generationId.
    for p in &nodes {
        let topo = wait_topology(p, "all up", |t| {
            t["nodes"]
                .as_array()
                .is_some_and(|n| n.len() == 3 && n.iter().all(|m| m["status"] == "UP"))
                && t["shards"]
                    .as_array()
                    .is_some_and(|s| s.len() == 3 && s.iter().all(|s| s["leader"].is_string()))
        });
        assert!(topo["generationId"].as_u64().unwrap_or(0) >= 1, "{topo}");
        assert_eq!(topo["replicationFactor"], 3);
        assert_eq!(topo["writeQuorum"], 2);
        let (s, health) = http_get(p, "/health");
        assert_eq!(s, 200, "{health}");
        assert_eq!(health["status"], "healthy", "{health}");
        assert_eq!(health["cluster"]["state"], "ok", "{health}");
        let (s, list) = http_get(p, "/nodes");
        assert_eq!((s, list["mode"].as_str()), (200, Some("cluster")));
        let ids: Vec<String> = list["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .map(|n| n["id"].as_str().expect("id").to_string())
            .collect();
        assert_eq!(ids.len(), 3);
        assert_eq!(http_get(p, &format!("/nodes/{}", ids[2])).0, 200);
        // A write names the replicas that have it: at least a majority.
        let (s, w) = http_post(
            p,
            "/api/write",
            r#"{"key":"user-123","content":"User log data"}"#,
        );
        assert_eq!(s, 200, "{w}");
        let holders = w["nodes"].as_array().expect("nodes");
        assert!(holders.len() >= 2, "{w}");
        assert!(holders.iter().all(|h| ids.iter().any(|i| h == i)), "{w}");
        let (s, r) = http_get(p, "/api/read/user-123");
        assert_eq!(s, 200, "{r}");
        assert_eq!(
            (r["replicas"].as_u64(), r["stale"].as_bool()),
            (Some(2), Some(false))
        );
        // The replica set of a key, leader first, matches CLUSTER SLOTS.
        let (s, set) = http_get(p, "/api/coordinator/nodes/user-123?count=3");
        assert_eq!(s, 200, "{set}");
        assert_eq!(set["nodes"].as_array().map(Vec::len), Some(3), "{set}");
        assert_eq!(set["nodes"][0]["id"], set["leader"], "{set}");
        let leader = &nodes[leader_of(&nodes, "user-123")];
        assert_eq!(
            set["nodes"][0]["address"].as_str(),
            Some(leader.addr().as_str()),
            "{set}"
        );
    }
    // Expired keys are reclaimed on every replica (their leader deletes
    // them through the log), not just hidden.
    let dbsize = |p: &Proc| -> i64 { cmd("DBSIZE").query(&mut p.client()).expect("dbsize") };
    let before: Vec<i64> = nodes.iter().map(dbsize).collect();
    let mut c = nodes[0].client();
    for k in 0..300 {
        let _: () = cmd("SET")
            .arg(format!("short:{k}"))
            .arg(k)
            .arg("PX")
            .arg(300)
            .query(&mut c)
            .expect("set px");
    }
    let written: Vec<i64> = nodes.iter().map(dbsize).collect();
    let started = Instant::now();
    while nodes.iter().map(dbsize).collect::<Vec<_>>() != before {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "expired keys not reclaimed: DBSIZE {:?} -> {written:?} -> {:?}",
            before,
            nodes.iter().map(dbsize).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "300 keys with a 300 ms TTL: DBSIZE {before:?} -> {written:?} -> {before:?} on every node after {:?}",
        started.elapsed()
    );
    // FLUSHALL from any node empties every shard on every replica.
    let mut c = nodes[1].client();
    let e = cmd("FLUSHALL")
        .arg("LATER")
        .query::<()>(&mut c)
        .unwrap_err();
    assert!(e.to_string().contains("syntax"), "{e}");
    let _: () = cmd("FLUSHALL").query(&mut c).expect("flushall");
    let started = Instant::now();
    while nodes.iter().map(dbsize).any(|n| n != 0) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "FLUSHALL left keys: {:?}",
            nodes.iter().map(dbsize).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let v: Option<i64> = c.get("plain:0:1").expect("get after flush");
    assert_eq!(v, None);
    // A cluster-aware client routes by CLUSTER SLOTS and MOVED.
    let cc = redis::cluster::ClusterClient::new(
        nodes
            .iter()
            .map(|p| format!("redis://{}/", p.addr()))
            .collect::<Vec<_>>(),
    )
    .expect("cluster client");
    let mut cc = cc.get_connection().expect("cluster connection");
    for k in 0..200 {
        let _: () = cc.set(format!("aware:{k}"), k).expect("cluster set");
    }
    for k in 0..200 {
        let v: i64 = cc.get(format!("aware:{k}")).expect("cluster get");
        assert_eq!(v, k);
    }
    // Multi-key commands need one slot; hash tags make that possible.
    let mut c = nodes[0].client();
    let e = cmd("MSET")
        .arg("a")
        .arg(1)
        .arg("b")
        .arg(2)
        .query::<()>(&mut c)
        .unwrap_err();
    assert_eq!(e.code(), Some("CROSSSLOT"));
    let _: () = cmd("MSET")
        .arg("{u1}.a")
        .arg(1)
        .arg("{u1}.b")
        .arg(2)
        .query(&mut c)
        .expect("mset");
    // A client that asked for the topology is redirected, not served.
    let victim_key = "failover:probe";
    let leader = leader_of(&nodes, victim_key);
    let other = (leader + 1) % 3;
    let mut aware = nodes[other].client();
    let _: Vec<redis::Value> = cmd("CLUSTER")
        .arg("SLOTS")
        .query(&mut aware)
        .expect("slots");
    let e = cmd("SET")
        .arg(victim_key)
        .arg(1)
        .query::<()>(&mut aware)
        .unwrap_err();
    assert_eq!(e.code(), Some("MOVED"), "{e}");
    assert!(
        e.to_string().contains(&nodes[leader].port.to_string()),
        "{e}"
    );

    // kill -9 the shard leader under concurrent writes through another node.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let w = writer(nodes[other].addr(), "kill", stop.clone(), acked.clone());
    std::thread::sleep(Duration::from_millis(1500));
    let killed_at = Instant::now();
    nodes[leader].kill9();
    let mut c = nodes[other].client();
    let served_again = loop {
        if c.set::<_, _, String>(victim_key, "after").is_ok() {
            break killed_at.elapsed();
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(30),
            "no new leader within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    println!("kill -9 of the leader: its slots took writes again after {served_again:?}");
    std::thread::sleep(Duration::from_millis(1000));
    nodes[leader].start();
    let refs: Vec<&Proc> = nodes.iter().collect();
    let back = wait_ok(&refs, "after restart");
    println!("restarted node rejoined; every shard led again after {back:?}");
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::Relaxed);
    let errors = w.join().expect("writer");
    let acked_kill = acked.lock().expect("acked").clone();
    println!(
        "{} writes acknowledged, {errors} refused or failed during the failover",
        acked_kill.len()
    );
    assert!(acked_kill.len() > 100, "too few writes acknowledged");
    check_all(&nodes, &acked_kill);

    // SIGSTOP the (new) leader: a long pause must not leave two leaders
    // acknowledging writes; after SIGCONT it rejoins as a follower.
    let leader = leader_of(&nodes, victim_key);
    let other = (leader + 1) % 3;
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let w = writer(nodes[other].addr(), "pause", stop.clone(), acked.clone());
    std::thread::sleep(Duration::from_millis(1000));
    nodes[leader].signal("-STOP");
    let paused_at = Instant::now();
    let mut c = nodes[other].client();
    let served_again = loop {
        if c.set::<_, _, String>(victim_key, "paused").is_ok() {
            break paused_at.elapsed();
        }
        assert!(
            paused_at.elapsed() < Duration::from_secs(30),
            "no new leader within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    println!("SIGSTOP of the leader: its slots took writes again after {served_again:?}");
    std::thread::sleep(Duration::from_millis(2000));
    nodes[leader].signal("-CONT");
    wait_ok(&refs, "after SIGCONT");
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::Relaxed);
    let errors = w.join().expect("writer");
    let acked_pause = acked.lock().expect("acked").clone();
    println!(
        "{} writes acknowledged, {errors} refused or failed around the pause",
        acked_pause.len()
    );
    check_all(&nodes, &acked_pause);
    check_all(&nodes, &acked_kill[..acked_kill.len().min(500)]);
}

#[test]
fn no_quorum_refuses_writes_and_stale_reads_work_on_request() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut nodes = start_cluster(root.path());
    // Every write fsynced in the Raft log before it is acknowledged.
    for p in &nodes {
        let _: () = cmd("CONFIG")
            .arg("SET")
            .arg("appendfsync")
            .arg("always")
            .query(&mut p.client())
            .expect("config set");
    }
    let mut c = nodes[0].client();
    for k in 0..100 {
        let _: () = c.set(format!("q:{k}"), k).expect("set");
    }
    let (s, w) = http_post(
        &nodes[0],
        "/api/write",
        r#"{"key":"q:rec","content":"before"}"#,
    );
    assert_eq!(s, 200, "{w}");
    // Let every replica apply them.
    std::thread::sleep(Duration::from_millis(500));
    nodes[1].kill9();
    nodes[2].kill9();
    // Past an election timeout, the survivor knows it has no majority.
    std::thread::sleep(Duration::from_millis(2000));
    let mut c = nodes[0].client();
    let started = Instant::now();
    let e = c.set::<_, _, ()>("q:new", 1).unwrap_err();
    println!(
        "write without a quorum refused after {:?}: {e}",
        started.elapsed()
    );
    let code = e.code().unwrap_or_default().to_string();
    assert!(
        ["NOQUORUM", "CLUSTERDOWN"].contains(&code.as_str()),
        "unexpected error {e}"
    );
    // The HTTP API refuses the same way, and serves the local copy on request.
    let (s, w) = http_post(&nodes[0], "/api/write", r#"{"key":"q:http","content":"x"}"#);
    assert_eq!((s, w["success"].as_bool()), (503, Some(false)), "{w}");
    let (s, r) = http_get(&nodes[0], "/api/read/q:rec");
    assert_eq!(s, 503, "{r}");
    let (s, r) = http_get(&nodes[0], "/api/read/q:rec?stale=true");
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["data"]["content"], "before", "{r}");
    assert_eq!(
        (r["replicas"].as_u64(), r["stale"].as_bool()),
        (Some(1), Some(true))
    );
    assert_eq!(http_get(&nodes[0], "/api/read/q:rec?replicas=1").0, 200);
    let (s, health) = http_get(&nodes[0], "/health");
    assert_eq!(
        (s, health["status"].as_str()),
        (200, Some("degraded")),
        "{health}"
    );
    assert_eq!(
        health["cluster"]["nodes_down"].as_array().map(Vec::len),
        Some(2),
        "{health}"
    );
    let topo = wait_topology(&nodes[0], "two down", |t| {
        t["nodes"]
            .as_array()
            .is_some_and(|n| n.iter().filter(|m| m["status"] == "DOWN").count() == 2)
    });
    println!("topology without a quorum: {topo}");
    // The default read needs a majority too; READONLY serves the local copy.
    let _: () = cmd("READONLY").query(&mut c).expect("readonly");
    for k in 0..100 {
        let v: Option<i64> = c.get(format!("q:{k}")).expect("stale read");
        assert_eq!(v, Some(k), "q:{k}");
    }
    // The refused write was never applied anywhere.
    let v: Option<i64> = c.get("q:new").expect("get");
    assert_eq!(v, None);
    // Garbage on the cluster port changes nothing.
    {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", nodes[0].cport)).expect("connect");
        let _ = s.write_all(b"*1\r\n$4\r\nPING\r\n garbage garbage garbage garbage garbage garbage garbage garbage garbage");
    }
    // The majority comes back: writes are accepted again, nothing lost.
    nodes[1].start();
    nodes[2].start();
    let refs: Vec<&Proc> = nodes.iter().collect();
    wait_ok(&refs, "after quorum returns");
    let mut c = nodes[0].client();
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.set::<_, _, ()>("q:new", 1).is_err() {
        assert!(
            Instant::now() < deadline,
            "writes not accepted after the quorum returned"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let keys: Vec<String> = (0..100).map(|k| format!("q:{k}")).collect();
    for p in &nodes {
        let mut c = p.client();
        for (k, key) in keys.iter().enumerate() {
            let v: Option<i64> = get_settled(&mut c, key);
            assert_eq!(v, Some(k as i64), "{key} via {}", p.port);
        }
    }
}
