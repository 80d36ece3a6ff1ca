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
        /// Shards (Raft groups) the slots are split into; 0 means one per
        /// node. More shards than nodes spread evenly over a grown cluster.
        #[arg(long, default_value_t = 0)]
        shards: usize,
        /// RESP addresses of the nodes (host:port).
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// Add a running node (started with --cluster-port, not yet in a
    /// cluster) to the cluster EXISTING belongs to, and move about 1/N of
    /// the shard replicas to it while the cluster serves. Waits until the
    /// moves are done and prints how much data moved.
    AddNode {
        /// RESP address of the new node.
        new: String,
        /// RESP address of any member.
        existing: String,
    },
    /// Move every shard replica off a member, then remove it. Refused if
    /// some shard would have nowhere to go.
    RemoveNode {
        /// The member's id (from CLUSTER NODES or GET /nodes).
        id: String,
        /// RESP address of any member.
        #[arg(long, default_value = "127.0.0.1:7001")]
        via: String,
    },
    /// Even out the shard replicas over the members.
    Rebalance {
        /// RESP address of any member.
        #[arg(long, default_value = "127.0.0.1:7001")]
        via: String,
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

/// `CLUSTER STRATA-NODE` of the node at `addr`: its id and addresses.
fn node_words(addr: &str) -> Result<Vec<Vec<u8>>, String> {
    let info = text(&call(addr, &[b"CLUSTER", b"STRATA-NODE"])?)
        .map_err(|e| format!("{addr} is not a strata node in cluster mode: {e}"))?;
    Ok(info
        .split_whitespace()
        .map(|p| p.as_bytes().to_vec())
        .collect())
}

/// The id and addresses of the cluster-mode node whose RESP address is
/// `addr`.
pub fn describe_node(addr: &str) -> Result<(u64, crate::cluster::PeerNode), String> {
    let words = node_words(addr)?;
    let word = |i: usize| {
        words
            .get(i)
            .map(|w| String::from_utf8_lossy(w).into_owned())
            .ok_or_else(|| format!("{addr}: unexpected CLUSTER STRATA-NODE reply"))
    };
    let id = u64::from_str_radix(&word(0)?, 16).map_err(|e| format!("{addr}: bad node id: {e}"))?;
    Ok((
        id,
        crate::cluster::PeerNode {
            cluster: word(1)?,
            resp: word(2)?,
            http: word(3)?,
        },
    ))
}

/// One field of `CLUSTER INFO` at `addr`.
fn info_field(addr: &str, field: &str) -> Result<String, String> {
    let info = text(&call(addr, &[b"CLUSTER", b"INFO"])?)?;
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_default()
        .trim()
        .to_string())
}

/// Each member's id and RESP address, from `CLUSTER NODES` at `addr`.
fn members(addr: &str) -> Result<Vec<(String, String)>, String> {
    let nodes = text(&call(addr, &[b"CLUSTER", b"NODES"])?)?;
    Ok(nodes
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let id = parts.next()?.to_string();
            let resp = parts.next()?.split('@').next()?.to_string();
            Some((id, resp))
        })
        .collect())
}

/// Keys in this node's own store (every database), from `INFO keyspace`.
fn local_keys(addr: &str) -> u64 {
    call(addr, &[b"INFO", b"keyspace"])
        .and_then(|r| text(&r))
        .map(|t| {
            t.lines()
                .filter_map(|l| {
                    l.split_once(":keys=")?
                        .1
                        .split(',')
                        .next()?
                        .parse::<u64>()
                        .ok()
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Key copies held by each member (by RESP address).
fn key_copies(via: &str) -> Result<Vec<(String, u64)>, String> {
    Ok(members(via)?
        .into_iter()
        .map(|(_, resp)| {
            let keys = local_keys(&resp);
            (resp, keys)
        })
        .collect())
}

/// Whose data a membership change moves, for its report.
enum Moving {
    /// A joining node (RESP address): everything it ends up holding.
    To(String),
    /// A leaving node (id): everything it held.
    From(String),
    /// A rebalance: the copies the receivers gained.
    Around,
}

fn same_id(a: &str, b: &str) -> bool {
    a.trim_start_matches('0')
        .eq_ignore_ascii_case(b.trim_start_matches("0x").trim_start_matches('0'))
}

/// Sends a membership change to `via`, then follows the moves it planned
/// until none is left, printing progress; then reports how many key
/// copies moved, against the ideal share (one node's).
fn change_members(via: &str, args: &[&[u8]], moving: Moving) -> Result<(), String> {
    let before = key_copies(via)?;
    let leaving_addr = match &moving {
        Moving::From(id) => members(via)?
            .into_iter()
            .find(|(m, _)| same_id(m, id))
            .map(|(_, addr)| addr),
        _ => None,
    };
    println!("{}", text(&call(via, args)?)?);
    let deadline = Instant::now() + Duration::from_secs(24 * 3600);
    let mut last = String::new();
    loop {
        let pending: u64 = info_field(via, "strata_moves_pending")?
            .parse()
            .unwrap_or(0);
        let leaving: u64 = info_field(via, "strata_nodes_leaving")?
            .parse()
            .unwrap_or(0);
        let line = format!(
            "moves done {} of {} planned; pending {pending}; current: {}",
            info_field(via, "strata_moves_done")?,
            info_field(via, "strata_moves_planned")?,
            match info_field(via, "strata_move_current")? {
                c if c.is_empty() => "none".to_string(),
                c => c,
            }
        );
        if line != last {
            println!("{line}");
            last = line;
        }
        if pending == 0 && leaving == 0 {
            break;
        }
        if Instant::now() > deadline {
            return Err("moves did not finish within a day".into());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let after = key_copies(via)?;
    for (addr, keys) in &after {
        println!("  {addr}: {keys} keys");
    }
    let count = |list: &[(String, u64)], addr: &str| {
        list.iter().find(|(a, _)| a == addr).map_or(0, |(_, k)| *k)
    };
    let sum = |list: &[(String, u64)]| list.iter().map(|(_, k)| k).sum::<u64>();
    let (moved, of) = match &moving {
        Moving::To(addr) => (count(&after, addr), sum(&after)),
        Moving::From(_) => (leaving_addr.map_or(0, |a| count(&before, &a)), sum(&before)),
        Moving::Around => (
            after
                .iter()
                .map(|(a, k)| k.saturating_sub(count(&before, a)))
                .sum(),
            sum(&after),
        ),
    };
    // A joining node's ideal share is 1/N of the grown cluster; a leaving
    // node's, 1/N of the cluster it leaves.
    let n = after.len().max(before.len()).max(1);
    println!(
        "[OK] moved about {moved} key copies, {:.1}% of the {of} held; ideal: one node's share, {:.1}%",
        100.0 * moved as f64 / of.max(1) as f64,
        100.0 / n as f64
    );
    Ok(())
}

/// `strata cluster add-node NEW EXISTING`.
pub fn add_node(new: &str, existing: &str) -> Result<(), String> {
    let known: u64 = info_field(new, "cluster_known_nodes")?.parse().unwrap_or(0);
    if known > 0 {
        return Err(format!("{new} is already part of a cluster"));
    }
    let mut args: Vec<Vec<u8>> = vec![b"CLUSTER".to_vec(), b"STRATA-ADD-NODE".to_vec()];
    args.extend(node_words(new)?);
    let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
    change_members(existing, &refs, Moving::To(new.to_string()))
}

fn cluster_state_ok(addr: &str) -> bool {
    call(addr, &[b"CLUSTER", b"INFO"])
        .and_then(|r| text(&r))
        .is_ok_and(|t| t.contains("cluster_state:ok"))
}

/// Forms a cluster of the nodes at `addrs`; returns once every node sees
/// a leader for every shard.
pub fn create(replicas: usize, shards: usize, addrs: &[String]) -> Result<(), String> {
    let mut args: Vec<Vec<u8>> = vec![
        b"CLUSTER".to_vec(),
        b"STRATA-CREATE".to_vec(),
        replicas.to_string().into_bytes(),
        shards.to_string().into_bytes(),
    ];
    for addr in addrs {
        args.extend(node_words(addr)?);
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
        create(a.replicas, 0, &addrs)?;
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
        ClusterCommand::Create {
            replicas,
            shards,
            nodes,
        } => create(*replicas, *shards, nodes),
        ClusterCommand::AddNode { new, existing } => add_node(new, existing),
        ClusterCommand::RemoveNode { id, via } => {
            let args: [&[u8]; 3] = [b"CLUSTER", b"STRATA-REMOVE-NODE", id.as_bytes()];
            change_members(via, &args, Moving::From(id.clone()))
        }
        ClusterCommand::Rebalance { via } => {
            change_members(via, &[b"CLUSTER", b"STRATA-REBALANCE"], Moving::Around)
        }
        ClusterCommand::Up(a) => up(a),
        ClusterCommand::Status(d) => status(&d.dir),
        ClusterCommand::Test(d) => test(&d.dir),
        ClusterCommand::Down(d) => down(&d.dir),
        ClusterCommand::Clean(d) => clean(&d.dir),
    }
}
