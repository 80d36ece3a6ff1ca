//! A 3-node cluster of real `strata` processes formed with `strata cluster
//! create`: writes through any node and through a cluster-aware client
//! land on their shard and read back from every node; a shard leader
//! killed with SIGKILL (and one paused with SIGSTOP) under concurrent
//! writes is replaced, and after it returns every acknowledged write is
//! readable and the replicas agree. Times are printed, never asserted.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::{cmd, Commands};

const BIN: &str = env!("CARGO_BIN_EXE_strata");
const SECRET: &str = "test-cluster-secret";

/// A free port below the kernel's ephemeral range, so that no outgoing
/// connection (of this test or another) takes it before the node binds it,
/// or while a killed node is down.
fn free_port() -> u16 {
    for _ in 0..1000 {
        let port = rand_port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port");
}

fn rand_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    20_000 + (h.finish() % 12_000) as u16
}

struct Proc {
    dir: PathBuf,
    port: u16,
    http: u16,
    cport: u16,
    child: Option<Child>,
}

impl Proc {
    fn new(root: &Path, i: usize) -> Proc {
        Proc {
            dir: root.join(format!("node-{i}")),
            port: free_port(),
            http: free_port(),
            cport: free_port(),
            child: None,
        }
    }

    fn start(&mut self) {
        std::fs::create_dir_all(&self.dir).expect("dir");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("log"))
            .expect("log");
        let child = Command::new(BIN)
            .arg("server")
            .args(["--port", &self.port.to_string()])
            .args(["--http-port", &self.http.to_string()])
            .args(["--cluster-port", &self.cport.to_string()])
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .args(["--maxmemory", "64mb"])
            .env("STRATA_CLUSTER_SECRET", SECRET)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn strata");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.client_opt().is_none() {
            assert!(
                Instant::now() < deadline,
                "node {} did not start",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn client_opt(&self) -> Option<redis::Connection> {
        let mut c = redis::Client::open(format!("redis://{}/", self.addr()))
            .ok()?
            .get_connection_with_timeout(Duration::from_secs(2))
            .ok()?;
        c.set_read_timeout(Some(Duration::from_secs(15))).ok()?;
        cmd("PING").query::<String>(&mut c).ok()?;
        Some(c)
    }

    fn client(&self) -> redis::Connection {
        self.client_opt().expect("connect")
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig} failed");
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = Command::new("kill")
                .args(["-CONT", &self.pid().to_string()])
                .status();
        }
        self.kill9();
    }
}

fn http_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

/// GET on a node's HTTP API: status and JSON body.
fn http_get(p: &Proc, path: &str) -> (u16, serde_json::Value) {
    let mut r = http_agent()
        .get(&format!("http://127.0.0.1:{}{path}", p.http))
        .call()
        .expect("http get");
    let status = r.status().as_u16();
    (status, r.body_mut().read_json().unwrap_or_default())
}

/// POST of a JSON body to a node's HTTP API: status and JSON body.
fn http_post(p: &Proc, path: &str, body: &str) -> (u16, serde_json::Value) {
    let mut r = http_agent()
        .post(&format!("http://127.0.0.1:{}{path}", p.http))
        .header("Content-Type", "application/json")
        .send(body)
        .expect("http post");
    let status = r.status().as_u16();
    (status, r.body_mut().read_json().unwrap_or_default())
}

/// Polls `check` on a node's topology until it holds (bounded).
fn wait_topology(
    p: &Proc,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (s, topo) = http_get(p, "/api/coordinator/topology");
        if s == 200 && check(&topo) {
            return topo;
        }
        assert!(Instant::now() < deadline, "{what}: topology {topo}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn cluster_info(p: &Proc) -> String {
    p.client_opt()
        .and_then(|mut c| cmd("CLUSTER").arg("INFO").query::<String>(&mut c).ok())
        .unwrap_or_default()
}

fn wait_ok(nodes: &[&Proc], what: &str) -> Duration {
    let start = Instant::now();
    while !nodes
        .iter()
        .all(|p| cluster_info(p).contains("cluster_state:ok"))
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{what}: cluster not ok after 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

/// The node (index) leading the shard of `key`, from CLUSTER SLOTS.
fn leader_of(nodes: &[Proc], key: &str) -> usize {
    let mut c = nodes[0].client();
    let slot: u16 = cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query(&mut c)
        .expect("keyslot");
    let slots: Vec<(u16, u16, Vec<redis::Value>)> = {
        let v: Vec<redis::Value> = cmd("CLUSTER").arg("SLOTS").query(&mut c).expect("slots");
        v.into_iter()
            .map(|e| {
                let redis::Value::Array(parts) = e else {
                    panic!("slot entry {e:?}")
                };
                let a: u16 = redis::from_redis_value(&parts[0]).expect("start");
                let b: u16 = redis::from_redis_value(&parts[1]).expect("end");
                (a, b, parts[2..].to_vec())
            })
            .collect()
    };
    let (_, _, owners) = slots
        .iter()
        .find(|(a, b, _)| (*a..=*b).contains(&slot))
        .expect("slot covered");
    let redis::Value::Array(leader) = &owners[0] else {
        panic!("owner {owners:?}")
    };
    let port: u16 = redis::from_redis_value(&leader[1]).expect("port");
    nodes
        .iter()
        .position(|p| p.port == port)
        .expect("leader is a member")
}

fn start_cluster(root: &Path) -> Vec<Proc> {
    let mut nodes: Vec<Proc> = (0..3).map(|i| Proc::new(root, i)).collect();
    for n in &mut nodes {
        n.start();
    }
    let out = Command::new(BIN)
        .args(["cluster", "create", "--replicas", "3"])
        .args(nodes.iter().map(Proc::addr))
        .output()
        .expect("strata cluster create");
    assert!(
        out.status.success(),
        "cluster create failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let refs: Vec<&Proc> = nodes.iter().collect();
    wait_ok(&refs, "after create");
    nodes
}

/// Writes keys through `via` until told to stop; records what was acknowledged.
fn writer(
    via: String,
    prefix: &'static str,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut errors = 0u64;
        let mut conn: Option<redis::Connection> = None;
        for i in 0..200_000u64 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            if conn.is_none() {
                conn = redis::Client::open(format!("redis://{via}/"))
                    .ok()
                    .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)).ok());
                if let Some(c) = &mut conn {
                    let _ = c.set_read_timeout(Some(Duration::from_secs(15)));
                }
            }
            let Some(c) = conn.as_mut() else {
                errors += 1;
                std::thread::sleep(Duration::from_millis(50));
                continue;
            };
            let key = format!("{prefix}:{i}");
            match c.set::<_, _, String>(&key, &key) {
                Ok(ok) if ok == "OK" => acked.lock().expect("acked").push(key),
                Ok(other) => panic!("unexpected SET reply {other}"),
                Err(e) => {
                    errors += 1;
                    if e.is_io_error() || e.is_timeout() {
                        conn = None;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        errors
    })
}

/// GET that retries the answers an election in progress gives, bounded.
fn get_settled<T: redis::FromRedisValue>(c: &mut redis::Connection, key: &str) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match c.get(key) {
            Ok(v) => return v,
            Err(e) if matches!(e.code(), Some("CLUSTERDOWN" | "TRYAGAIN" | "NOQUORUM")) => {
                assert!(Instant::now() < deadline, "{key}: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("{key}: {e}"),
        }
    }
}

/// Every acknowledged key reads back through every node, with the leader
/// path and from each node's own replica (READONLY).
fn check_all(nodes: &[Proc], acked: &[String]) {
    for p in nodes {
        let mut c = p.client();
        for key in acked {
            let v: Option<String> = get_settled(&mut c, key);
            assert_eq!(
                v.as_deref(),
                Some(key.as_str()),
                "{key} lost (read via {})",
                p.port
            );
        }
    }
    // Replicas converge: each node's own copy has every key once caught up.
    for p in nodes {
        let mut c = p.client();
        let _: () = cmd("READONLY").query(&mut c).expect("readonly");
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut missing = acked.len();
        while missing > 0 && Instant::now() < deadline {
            missing = acked
                .iter()
                .filter(|k| {
                    c.get::<_, Option<String>>(*k).ok().flatten().as_deref() != Some(k.as_str())
                })
                .count();
            if missing > 0 {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        assert_eq!(
            missing, 0,
            "node {} is missing {missing} keys on its own replica",
            p.port
        );
    }
}

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
