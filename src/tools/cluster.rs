//! `strata cluster`: form a cluster from running nodes, and run a local
//! multi-process cluster for development (seed 001's setup script as one
//! command: up, status, test, down, clean).
//!
//! Like the other tools it is a client: it talks to nodes over RESP.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};

use super::client::{encode_command, reply_end};
use crate::commands::Reply;

/// `strata cluster ...`
#[derive(Subcommand, Clone)]
pub enum ClusterCommand {
    /// Form a cluster from running nodes (started with --cluster-port), as
    /// `redis-cli --cluster create` does. Exits 0 once every slot has a leader.
    Create {
        /// Copies of every shard (3 by default; 1 for a test cluster).
        #[arg(long, default_value_t = 3)]
        replicas: usize,
        /// RESP addresses of the nodes (host:port).
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// Start a local cluster of separate processes in DIR and form it.
    /// Running it again on the same DIR restarts the nodes, which rejoin.
    Up(LocalArgs),
    /// Show the local cluster's processes, shards and leaders.
    Status(DirArg),
    /// Write and read keys through every node of the local cluster.
    Test(DirArg),
    /// Stop the local cluster's processes (SIGTERM, then wait).
    Down(DirArg),
    /// Stop the local cluster and delete DIR.
    Clean(DirArg),
}

/// Where a local cluster lives.
#[derive(Args, Clone)]
pub struct DirArg {
    /// The cluster's directory.
    #[arg(long, default_value = "./cluster")]
    pub dir: PathBuf,
}

/// A local cluster's shape.
#[derive(Args, Clone)]
pub struct LocalArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Copies of every shard.
    #[arg(long, default_value_t = 3)]
    pub replicas: usize,
    /// RESP port of the first node; node i uses base+i for RESP,
    /// base+1000+i for HTTP and base+10000+i between nodes.
    #[arg(long, default_value_t = 7001)]
    pub base_port: u16,
    /// The cluster's directory (one sub-directory per node).
    #[arg(long, default_value = "./cluster")]
    pub dir: PathBuf,
    /// Memory cap of each node.
    #[arg(long, default_value = "256mb")]
    pub maxmemory: String,
}

/// Sends one command and returns its reply.
pub fn call(addr: &str, args: &[&[u8]]) -> Result<Reply, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(40))).ok();
    let mut out = Vec::new();
    encode_command(&mut out, args);
    s.write_all(&out).map_err(|e| format!("{addr}: {e}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 << 10];
    loop {
        if let Some((end, _)) = reply_end(&buf, 0) {
            return Ok(Reply::from_resp3(&buf[..end]));
        }
        let n = s.read(&mut chunk).map_err(|e| format!("{addr}: {e}"))?;
        if n == 0 {
            return Err(format!("{addr}: connection closed"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn text(r: &Reply) -> Result<String, String> {
    match r {
        Reply::Bulk(b) => Ok(String::from_utf8_lossy(b).into_owned()),
        Reply::Status(s) | Reply::Verbatim(s) => Ok(s.clone()),
        Reply::Simple(s) => Ok((*s).to_string()),
        Reply::Error(e) => Err(e.clone()),
        other => Err(format!("unexpected reply {other:?}")),
    }
}

fn cluster_state_ok(addr: &str) -> bool {
    call(addr, &[b"CLUSTER", b"INFO"])
        .and_then(|r| text(&r))
        .is_ok_and(|t| t.contains("cluster_state:ok"))
}

/// Forms a cluster of the nodes at `addrs`; returns once every node sees
/// a leader for every shard.
pub fn create(replicas: usize, addrs: &[String]) -> Result<(), String> {
    let mut args: Vec<Vec<u8>> = vec![
        b"CLUSTER".to_vec(),
        b"STRATA-CREATE".to_vec(),
        replicas.to_string().into_bytes(),
    ];
    for addr in addrs {
        let info = text(&call(addr, &[b"CLUSTER", b"STRATA-NODE"])?)
            .map_err(|e| format!("{addr} is not a strata node in cluster mode: {e}"))?;
        args.extend(info.split_whitespace().map(|p| p.as_bytes().to_vec()));
    }
    let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
    let created = text(&call(&addrs[0], &refs)?)?;
    println!("{created}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !addrs.iter().all(|a| cluster_state_ok(a)) {
        if Instant::now() > deadline {
            return Err("the cluster did not elect a leader for every shard within 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("[OK] All 16384 slots covered; every shard has a leader.");
    Ok(())
}

struct LocalNode {
    dir: PathBuf,
    port: u16,
    http: u16,
    cport: u16,
}

impl LocalNode {
    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("strata.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

/// The nodes of the local cluster in `dir`, from its `nodes` file.
fn local_nodes(dir: &Path) -> Result<Vec<LocalNode>, String> {
    let list = std::fs::read_to_string(dir.join("nodes"))
        .map_err(|e| format!("{}: no local cluster here ({e})", dir.display()))?;
    list.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let p: Vec<&str> = l.split_whitespace().collect();
            let num = |i: usize| -> Result<u16, String> {
                p.get(i)
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| format!("bad line in nodes file: {l}"))
            };
            Ok(LocalNode {
                dir: dir.join(p.first().ok_or("empty line")?),
                port: num(1)?,
                http: num(2)?,
                cport: num(3)?,
            })
        })
        .collect()
}

/// `strata cluster up`.
pub fn up(a: &LocalArgs) -> Result<(), String> {
    if a.nodes == 0 || a.replicas == 0 || a.replicas > a.nodes {
        return Err("need at least one node and 1 <= replicas <= nodes".into());
    }
    std::fs::create_dir_all(&a.dir).map_err(|e| e.to_string())?;
    let nodes_file = a.dir.join("nodes");
    if !nodes_file.exists() {
        let mut list = String::new();
        for i in 0..a.nodes {
            let p = a.base_port + i as u16;
            list.push_str(&format!("node-{i} {p} {} {}\n", p + 1000, p + 10000));
        }
        std::fs::write(&nodes_file, list).map_err(|e| e.to_string())?;
    }
    let secret_file = a.dir.join("cluster.secret");
    let secret = match std::fs::read_to_string(&secret_file) {
        Ok(s) => s.trim().to_string(),
        Err(_) => {
            let s = format!("{:032x}", rand::random::<u128>());
            std::fs::write(&secret_file, &s).map_err(|e| e.to_string())?;
            s
        }
    };
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let nodes = local_nodes(&a.dir)?;
    for n in &nodes {
        if n.pid().is_some_and(alive) {
            println!(
                "{} already running (pid {})",
                n.dir.display(),
                n.pid().unwrap_or(0)
            );
            continue;
        }
        std::fs::create_dir_all(&n.dir).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(n.dir.join("strata.log")).map_err(|e| e.to_string())?;
        let child = Command::new(&exe)
            .arg("server")
            .args(["--port", &n.port.to_string()])
            .args(["--http-port", &n.http.to_string()])
            .args(["--cluster-port", &n.cport.to_string()])
            .arg("--data-dir")
            .arg(n.dir.join("data"))
            .args(["--maxmemory", &a.maxmemory])
            .env("STRATA_CLUSTER_SECRET", &secret)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", n.dir.display()))?;
        std::fs::write(n.dir.join("strata.pid"), format!("{}\n", child.id()))
            .map_err(|e| e.to_string())?;
        println!(
            "started {} (pid {}): RESP {} HTTP {} cluster {}",
            n.dir.display(),
            child.id(),
            n.port,
            n.http,
            n.cport
        );
    }
    for n in &nodes {
        let deadline = Instant::now() + Duration::from_secs(30);
        while call(&n.addr(), &[b"PING"]).is_err() {
            if Instant::now() > deadline {
                return Err(format!(
                    "{} did not start; see {}",
                    n.addr(),
                    n.dir.join("strata.log").display()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let formed = call(&nodes[0].addr(), &[b"CLUSTER", b"INFO"])
        .and_then(|r| text(&r))
        .is_ok_and(|t| !t.contains("cluster_known_nodes:0"));
    let addrs: Vec<String> = nodes.iter().map(LocalNode::addr).collect();
    if formed {
        println!("cluster already formed; waiting for every shard to have a leader");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !addrs.iter().all(|a| cluster_state_ok(a)) {
            if Instant::now() > deadline {
                return Err("shards without a leader after 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    } else {
        create(a.replicas, &addrs)?;
    }
    println!("try: redis-cli -c -p {} set foo bar", nodes[0].port);
    Ok(())
}

/// `strata cluster status`.
pub fn status(dir: &Path) -> Result<(), String> {
    let nodes = local_nodes(dir)?;
    let mut any = None;
    for n in &nodes {
        let state = match n.pid() {
            Some(pid) if alive(pid) => {
                any.get_or_insert_with(|| n.addr());
                format!("running (pid {pid})")
            }
            Some(pid) => format!("stopped (pid {pid} gone)"),
            None => "never started".into(),
        };
        println!(
            "{}: RESP {} HTTP {} cluster {}: {state}",
            n.dir.display(),
            n.port,
            n.http,
            n.cport
        );
    }
    let Some(addr) = any else {
        return Err("no node is running".into());
    };
    print!("{}", text(&call(&addr, &[b"CLUSTER", b"INFO"])?)?);
    print!("{}", text(&call(&addr, &[b"CLUSTER", b"NODES"])?)?);
    Ok(())
}

/// `strata cluster test`: every key written through one node reads back
/// through every node.
pub fn test(dir: &Path) -> Result<(), String> {
    let nodes = local_nodes(dir)?;
    let live: Vec<&LocalNode> = nodes
        .iter()
        .filter(|n| n.pid().is_some_and(alive))
        .collect();
    if live.is_empty() {
        return Err("no node is running".into());
    }
    let run = format!("{:08x}", rand::random::<u32>());
    let mut written = 0;
    for (i, n) in live.iter().enumerate() {
        for k in 0..100 {
            let key = format!("test:{run}:{i}:{k}");
            match call(&n.addr(), &[b"SET", key.as_bytes(), key.as_bytes()])? {
                Reply::Simple("OK") => written += 1,
                other => return Err(format!("SET {key} via {}: {other:?}", n.addr())),
            }
        }
    }
    for n in &live {
        for (i, _) in live.iter().enumerate() {
            for k in 0..100 {
                let key = format!("test:{run}:{i}:{k}");
                match call(&n.addr(), &[b"GET", key.as_bytes()])? {
                    Reply::Bulk(v) if v == key.as_bytes() => {}
                    other => return Err(format!("GET {key} via {}: {other:?}", n.addr())),
                }
            }
        }
    }
    println!(
        "[OK] {written} keys written through {} nodes read back through every node",
        live.len()
    );
    Ok(())
}

/// `strata cluster down`.
pub fn down(dir: &Path) -> Result<(), String> {
    let nodes = local_nodes(dir)?;
    for n in &nodes {
        let Some(pid) = n.pid().filter(|&p| alive(p)) else {
            continue;
        };
        let _ = Command::new("kill").arg(pid.to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if alive(pid) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        println!("stopped {} (pid {pid})", n.dir.display());
    }
    Ok(())
}

/// `strata cluster clean`.
pub fn clean(dir: &Path) -> Result<(), String> {
    if dir.join("nodes").exists() {
        down(dir)?;
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {
            println!("removed {}", dir.display());
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// Runs one `strata cluster` subcommand.
pub fn run(cmd: &ClusterCommand) -> Result<(), String> {
    match cmd {
        ClusterCommand::Create { replicas, nodes } => create(*replicas, nodes),
        ClusterCommand::Up(a) => up(a),
        ClusterCommand::Status(d) => status(&d.dir),
        ClusterCommand::Test(d) => test(&d.dir),
        ClusterCommand::Down(d) => down(&d.dir),
        ClusterCommand::Clean(d) => clean(&d.dir),
    }
}
