//! Storage engine benchmark: memory-tier throughput, disk-tier read latency
//! with the data set 10x over the cap, spill throughput, and memory per key
//! against redis-server measured in the same run.
//!
//! Run: `cargo bench --bench storage` (add `-- --keys 200000` for a quicker run).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::Rng;
use strata::storage::{ReadHint, Record, StorageConfig, Store, Tier, Value, Version};

fn open(dir: &Path, maxmemory: u64) -> Store {
    Store::open(StorageConfig {
        data_dir: dir.to_path_buf(),
        maxmemory,
        ..StorageConfig::default()
    })
    .expect("open store")
}

fn rec(v: Vec<u8>) -> Record {
    Record {
        value: Value::Str(v),
        expire_at_ms: None,
        version: Version::default(),
        written_secs: 0,
    }
}

fn value(i: u64, len: usize) -> Vec<u8> {
    let mut v = format!("{i:016}").into_bytes();
    v.resize(len, b'v');
    v
}

fn memory_tier_ops(n: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), 2 << 30);
    let t = Instant::now();
    for i in 0..n {
        store
            .put(0, format!("key:{i}").as_bytes(), rec(value(i, 16)))
            .expect("put");
    }
    let set = n as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut found = 0u64;
    for i in 0..n {
        found += u64::from(
            store
                .read(0, format!("key:{i}").as_bytes(), ReadHint::Normal, |r| {
                    r.is_some()
                })
                .expect("get"),
        );
    }
    let get = n as f64 / t.elapsed().as_secs_f64();
    assert_eq!(found, n);
    println!("memory tier, one thread      SET {set:>12.0} ops/s   GET {get:>12.0} ops/s   ({n} keys, 16-byte values)");
}

fn disk_tier_latency(n_target_bytes: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let maxmemory = 32u64 << 20;
    let store = open(dir.path(), maxmemory);
    let cap = store.stats().tier_cap_bytes;
    // Write until the logical data set is 10x the memory tier's cap.
    let mut i = 0u64;
    let mut logical = 0u64;
    let t = Instant::now();
    while logical < n_target_bytes.max(10 * cap) {
        let key = format!("user:{i:08}");
        store
            .put(0, key.as_bytes(), rec(value(i, 100)))
            .expect("put");
        logical += (key.len() + 100) as u64 + 120;
        i += 1;
    }
    let write_rate = i as f64 / t.elapsed().as_secs_f64();
    store.checkpoint().expect("checkpoint");
    let s = store.stats();
    println!(
        "data set 10x over the cap    {i} keys of 100 B; {} in memory, {} on disk; load {write_rate:.0} writes/s (spilling as it goes)",
        s.entries_memory, s.entries_disk
    );
    let mut rng = rand::rng();
    let mut disk = Histogram::<u64>::new(3).expect("histogram");
    let mut mem = Histogram::<u64>::new(3).expect("histogram");
    for _ in 0..100_000 {
        let k = rng.random_range(0..i);
        let key = format!("user:{k:08}");
        let t = Instant::now();
        let tier = store
            .read(0, key.as_bytes(), ReadHint::Peek, |r| r.map(|(_, t)| t))
            .expect("get");
        let ns = t.elapsed().as_nanos() as u64;
        match tier {
            Some(Tier::Disk) => disk.record(ns).expect("record"),
            Some(Tier::Memory) => mem.record(ns).expect("record"),
            None => panic!("lost {key}"),
        }
    }
    let us = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "disk-tier GET (uniform keys) p50 {:>7.1} us  p99 {:>7.1} us  p99.9 {:>7.1} us   ({} reads)",
        us(&disk, 0.5),
        us(&disk, 0.99),
        us(&disk, 0.999),
        disk.len()
    );
    if !mem.is_empty() {
        println!(
            "memory-tier GET, same run    p50 {:>7.1} us  p99 {:>7.1} us   ({} reads)",
            us(&mem, 0.5),
            us(&mem, 0.99),
            mem.len()
        );
    }
}

fn spill_throughput(n: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), 2 << 30);
    for i in 0..n {
        store
            .put(0, format!("key:{i}").as_bytes(), rec(value(i, 100)))
            .expect("put");
    }
    let bytes = store.stats().used_bytes;
    let t = Instant::now();
    let moved = store.spill_all().expect("spill");
    let secs = t.elapsed().as_secs_f64();
    println!(
        "spill to disk                {:>12.0} entries/s  {:>8.1} MiB/s of accounted memory ({moved} entries)",
        moved as f64 / secs,
        bytes as f64 / secs / (1 << 20) as f64
    );
}

fn strata_bytes_per_key(n: u64) -> (f64, f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), 8 << 30);
    std::thread::sleep(Duration::from_millis(200));
    let before = strata::metrics::process_rss_bytes();
    for i in 0..n {
        let w = store
            .put(0, format!("key:{i:07}").as_bytes(), rec(value(i, 16)))
            .expect("put");
        // As the server does after each batch of requests.
        if i % 64 == 0 {
            store.sync(w.lsn.expect("lsn")).expect("sync");
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let rss = (strata::metrics::process_rss_bytes() - before) as f64 / n as f64;
    let accounted = store.stats().used_bytes as f64 / n as f64;
    (accounted, rss)
}

struct RedisRef(Child, u16);

impl Drop for RedisRef {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis_bytes_per_key(n: u64) -> Option<(f64, f64)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
            "--enable-debug-command",
            "yes",
        ])
        .stdout(Stdio::null())
        .spawn()
        .ok()?;
    let guard = RedisRef(child, port);
    let client = redis::Client::open(format!("redis://127.0.0.1:{}/", guard.1)).ok()?;
    let mut c = None;
    for _ in 0..100 {
        if let Ok(conn) = client.get_connection() {
            c = Some(conn);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut c = c?;
    let info = |c: &mut redis::Connection, field: &str| -> Option<f64> {
        let text: String = redis::cmd("INFO").arg("memory").query(c).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .and_then(|v| v.trim().parse().ok())
    };
    let (used0, rss0) = (
        info(&mut c, "used_memory")?,
        info(&mut c, "used_memory_rss")?,
    );
    let _: () = redis::cmd("DEBUG")
        .arg("POPULATE")
        .arg(n)
        .arg("key")
        .arg(16)
        .query(&mut c)
        .ok()?;
    std::thread::sleep(Duration::from_millis(500));
    let (used1, rss1) = (
        info(&mut c, "used_memory")?,
        info(&mut c, "used_memory_rss")?,
    );
    Some(((used1 - used0) / n as f64, (rss1 - rss0) / n as f64))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n = args
        .iter()
        .position(|a| a == "--keys")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(1_000_000);
    if args.iter().any(|a| a == "--bytes-per-key-child") {
        // Runs in a fresh process so freed memory of earlier phases can't
        // hide this phase's growth.
        let (acc, rss) = strata_bytes_per_key(n);
        println!("{acc} {rss}");
        return;
    }
    println!("strata storage benchmark ({n} keys where a count applies)\n");
    memory_tier_ops(n);
    spill_throughput(n / 2);
    disk_tier_latency(0);
    let out = Command::new(std::env::current_exe().expect("bench binary"))
        .args(["--bytes-per-key-child", "--keys", &n.to_string()])
        .output()
        .expect("run child");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut nums = text
        .split_whitespace()
        .filter_map(|v| v.parse::<f64>().ok());
    let (acc, rss) = (
        nums.next().unwrap_or(f64::NAN),
        nums.next().unwrap_or(f64::NAN),
    );
    println!("\nmemory per key, {n} keys of 16-byte values:");
    println!("  strata        accounted {acc:>6.1} B/key   RSS {rss:>6.1} B/key");
    match redis_bytes_per_key(n) {
        Some((used, rss_r)) => {
            println!("  redis-server  used_memory {used:>4.1} B/key   RSS {rss_r:>6.1} B/key");
            println!("  ratio strata/redis: accounted/used_memory {:.2}, RSS {:.2}", acc / used, rss / rss_r);
        }
        None => println!("  redis-server not found on PATH: reference skipped (scripts/bench-vs-redis.sh installs it)"),
    }
}
