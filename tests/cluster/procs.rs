//! Real `strata` processes for cluster tests: start, kill, pause and
//! restart nodes (on loopback, or each in its own network namespace), and
//! the checks the tests share.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::{cmd, Commands};

pub const BIN: &str = env!("CARGO_BIN_EXE_strata");
pub const SECRET: &str = "test-cluster-secret";

/// A free port below the kernel's ephemeral range, so that no outgoing
/// connection (of this test or another) takes it before the node binds it,
/// or while a killed node is down.
/// Ports are never handed out twice in this test process, so a test
/// whose node is down (killed, to be restarted on the same ports) never
/// sees another test's node take them.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    for _ in 0..1000 {
        let port = rand_port();
        let mut taken = HANDED_OUT.lock().expect("ports");
        if !taken.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            taken.push(port);
            return port;
        }
    }
    panic!("no free port");
}

pub fn rand_port() -> u16 {
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

/// One `strata` node process.
pub struct Proc {
    pub dir: PathBuf,
    /// The address it binds and announces.
    pub host: String,
    /// The network namespace it runs in (None: this one).
    pub netns: Option<String>,
    pub port: u16,
    pub http: u16,
    pub cport: u16,
    /// Extra environment for the process.
    pub env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Proc {
    /// A node on loopback, on free ports.
    pub fn new(root: &Path, i: usize) -> Proc {
        Proc {
            dir: root.join(format!("node-{i}")),
            host: "127.0.0.1".into(),
            netns: None,
            port: free_port(),
            http: free_port(),
            cport: free_port(),
            env: Vec::new(),
            child: None,
        }
    }

    /// A node alone in network namespace `ns`, on `host`.
    pub fn in_netns(root: &Path, i: usize, ns: &str, host: &str) -> Proc {
        Proc {
            dir: root.join(format!("node-{i}")),
            host: host.into(),
            netns: Some(ns.into()),
            port: 7001,
            http: 8001,
            cport: 9001,
            env: Vec::new(),
            child: None,
        }
    }

    pub fn start(&mut self) {
        std::fs::create_dir_all(&self.dir).expect("dir");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("log"))
            .expect("log");
        let mut command = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, BIN]);
                c
            }
            None => Command::new(BIN),
        };
        let child = command
            .arg("server")
            .args(["--bind", &self.host])
            .args(["--port", &self.port.to_string()])
            .args(["--http-port", &self.http.to_string()])
            .args(["--cluster-port", &self.cport.to_string()])
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .args(["--maxmemory", "64mb"])
            .env("STRATA_CLUSTER_SECRET", SECRET)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn strata");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.client_opt().is_none() {
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.join("log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                panic!(
                    "node {} did not start; its log ends:\n{}",
                    self.port,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    pub fn client_opt(&self) -> Option<redis::Connection> {
        let mut c = redis::Client::open(format!("redis://{}/", self.addr()))
            .ok()?
            .get_connection_with_timeout(Duration::from_secs(2))
            .ok()?;
        c.set_read_timeout(Some(Duration::from_secs(15))).ok()?;
        cmd("PING").query::<String>(&mut c).ok()?;
        Some(c)
    }

    pub fn client(&self) -> redis::Connection {
        self.client_opt().expect("connect")
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig} failed");
    }

    pub fn kill9(&mut self) {
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

pub fn http_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

/// GET on a node's HTTP API: status and JSON body.
pub fn http_get(p: &Proc, path: &str) -> (u16, serde_json::Value) {
    let mut r = http_agent()
        .get(&format!("http://{}:{}{path}", p.host, p.http))
        .call()
        .expect("http get");
    let status = r.status().as_u16();
    (status, r.body_mut().read_json().unwrap_or_default())
}

/// POST of a JSON body to a node's HTTP API: status and JSON body.
pub fn http_post(p: &Proc, path: &str, body: &str) -> (u16, serde_json::Value) {
    let mut r = http_agent()
        .post(&format!("http://{}:{}{path}", p.host, p.http))
        .header("Content-Type", "application/json")
        .send(body)
        .expect("http post");
    let status = r.status().as_u16();
    (status, r.body_mut().read_json().unwrap_or_default())
}

/// Polls `check` on a node's topology until it holds (bounded).
pub fn wait_topology(
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

pub fn cluster_info(p: &Proc) -> String {
    p.client_opt()
        .and_then(|mut c| cmd("CLUSTER").arg("INFO").query::<String>(&mut c).ok())
        .unwrap_or_default()
}

pub fn wait_ok(nodes: &[&Proc], what: &str) -> Duration {
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
pub fn leader_of(nodes: &[Proc], key: &str) -> usize {
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
    let host: String = redis::from_redis_value(&leader[0]).expect("host");
    let port: u16 = redis::from_redis_value(&leader[1]).expect("port");
    nodes
        .iter()
        .position(|p| p.host == host && p.port == port)
        .expect("leader is a member")
}

/// Held by tests whose assertions are about what clients see while
/// shards move (and by the busiest other test), so those two never share
/// the machine's two cores.
pub fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn start_cluster(root: &Path) -> Vec<Proc> {
    let mut nodes: Vec<Proc> = (0..3).map(|i| Proc::new(root, i)).collect();
    create_cluster(&mut nodes);
    nodes
}

/// Starts `nodes` and forms them into a cluster with `strata cluster
/// create --replicas 3`; returns once every node reports the cluster ok.
pub fn create_cluster(nodes: &mut [Proc]) {
    create_cluster_with(nodes, 3);
}

/// [`create_cluster`] with `replicas` copies of each shard.
pub fn create_cluster_with(nodes: &mut [Proc], replicas: usize) {
    for n in nodes.iter_mut() {
        n.start();
    }
    let out = Command::new(BIN)
        .args(["cluster", "create", "--replicas", &replicas.to_string()])
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
}

/// Writes keys through `via` until told to stop; records what was acknowledged.
pub fn writer(
    via: String,
    prefix: &'static str,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut errors = 0u64;
        let mut seen: Vec<String> = Vec::new();
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
                    let kind = e.code().unwrap_or("io").to_string();
                    if !seen.contains(&kind) {
                        println!("{prefix}: first {kind} error at write {i}: {e}");
                        seen.push(kind);
                    }
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
pub fn get_settled<T: redis::FromRedisValue>(c: &mut redis::Connection, key: &str) -> T {
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
pub fn check_all(nodes: &[Proc], acked: &[String]) {
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

/// A node's `/metrics` exposition.
pub fn metrics_text(p: &Proc) -> String {
    http_agent()
        .get(&format!("http://{}:{}/metrics", p.host, p.http))
        .call()
        .expect("metrics")
        .into_body()
        .read_to_string()
        .expect("metrics body")
}

/// `strata_<name>{group="g"} v` series of a node's `/metrics`, by group.
pub fn group_gauge(p: &Proc, name: &str) -> std::collections::HashMap<u32, u64> {
    let text = metrics_text(p);
    let prefix = format!("strata_{name}{{group=\"");
    text.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| {
            let (group, value) = rest.split_once("\"} ")?;
            Some((group.parse().ok()?, value.trim().parse().ok()?))
        })
        .collect()
}

/// The last log index, on `p`, of the shard that holds `key`.
pub fn last_log_index(p: &Proc, key: &str) -> u64 {
    let mut c = p.client();
    let slot: u16 = cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query(&mut c)
        .expect("keyslot");
    // Shard groups are numbered in slot order, from 1.
    let layout: Vec<Vec<redis::Value>> = cmd("CLUSTER").arg("SLOTS").query(&mut c).expect("slots");
    let mut ranges: Vec<(i64, i64)> = layout
        .iter()
        .filter_map(|r| {
            Some((
                redis::from_redis_value(&r[0]).ok()?,
                redis::from_redis_value(&r[1]).ok()?,
            ))
        })
        .collect();
    ranges.sort_unstable();
    let group = ranges
        .iter()
        .position(|&(a, b)| (a..=b).contains(&i64::from(slot)))
        .expect("slot served") as u32
        + 1;
    group_gauge(p, "raft_last_log_index")[&group]
}
