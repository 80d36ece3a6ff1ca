//! Cluster backups: a loaded 3-node cluster is backed up through one
//! node's HTTP API; damaged and partial copies of the backup are refused
//! and change nothing; then the cluster is wiped and the backup restored
//! onto a 2-node cluster with a different shard layout, which ends up
//! with exactly the same contents.

use std::collections::BTreeMap;
use std::process::Command;

use redis::Commands;

use crate::alert_kit::wait_for;
use crate::procs::*;

/// Every key's type, content and whether it has a TTL.
fn contents(c: &mut redis::Connection, keys: &[String]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for k in keys {
        let kind: String = redis::cmd("TYPE").arg(k).query(c).expect("type");
        let body = match kind.as_str() {
            "string" => c.get::<_, String>(k).expect("get"),
            "hash" => {
                let m: BTreeMap<String, String> = c.hgetall(k).expect("hgetall");
                format!("{m:?}")
            }
            "list" => format!(
                "{:?}",
                c.lrange::<_, Vec<String>>(k, 0, -1).expect("lrange")
            ),
            "set" => {
                let mut m: Vec<String> = c.smembers(k).expect("smembers");
                m.sort();
                format!("{m:?}")
            }
            "zset" => format!(
                "{:?}",
                c.zrange_withscores::<_, Vec<(String, f64)>>(k, 0, -1)
                    .expect("zrange")
            ),
            "none" => "absent".into(),
            other => panic!("unexpected type {other} of {k}"),
        };
        let ttl: i64 = c.ttl(k).expect("ttl");
        let ttl = match ttl {
            -1 => "no ttl",
            t if t > 3000 => "ttl about an hour",
            _ => "other ttl",
        };
        out.insert(k.clone(), format!("{kind} {body} ({ttl})"));
    }
    out
}

fn load(c: &mut redis::Connection) -> Vec<String> {
    let mut keys = Vec::new();
    let mut pipe = redis::pipe();
    for i in 0..2000 {
        let k = format!("backup:{i}");
        match i % 5 {
            0 => pipe.set(&k, format!("value-{i}")).ignore(),
            1 => pipe.set_ex(&k, format!("expiring-{i}"), 3600).ignore(),
            2 => pipe
                .hset_multiple(&k, &[("a", i.to_string()), ("b", "x".repeat(i % 50))])
                .ignore(),
            3 => pipe.rpush(&k, &[i, i + 1, i + 2]).ignore(),
            _ => pipe
                .zadd_multiple(&k, &[(1.5, "one"), (i as f64, "two")])
                .ignore(),
        };
        if i % 7 == 0 {
            pipe.sadd(format!("backup:set:{i}"), &["p", "q", "r"])
                .ignore();
            keys.push(format!("backup:set:{i}"));
        }
        keys.push(k);
        if i % 200 == 199 {
            let () = pipe.query(c).expect("load");
            pipe = redis::pipe();
        }
    }
    keys
}

fn post(p: &Proc, path: &str, body: &str) -> (u16, serde_json::Value) {
    http_post(p, path, body)
}

/// Copies backup `name` of node `from` into `to`'s backup directory as
/// `as_name`.
fn copy_backup(from: &Proc, name: &str, to: &Proc, as_name: &str) -> std::path::PathBuf {
    let src = from.dir.join("data").join("backups").join(name);
    let dst_root = to.dir.join("data").join("backups");
    std::fs::create_dir_all(&dst_root).expect("backups dir");
    let dst = dst_root.join(as_name);
    let ok = Command::new("cp")
        .arg("-r")
        .arg(&src)
        .arg(&dst)
        .status()
        .expect("cp");
    assert!(ok.success(), "cp -r {} {}", src.display(), dst.display());
    dst
}

#[test]
fn a_cluster_backup_restores_onto_a_different_node_count_and_damage_is_refused() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut nodes: Vec<Proc> = (0..3).map(|i| Proc::new(root.path(), i)).collect();
    create_cluster(&mut nodes);
    let mut c = nodes[0].client();
    let keys = load(&mut c);
    let before = contents(&mut c, &keys);
    assert_eq!(before.len(), keys.len());

    // Back up through a node; every shard is dumped by its leader.
    let (status, taken) = post(&nodes[1], "/backup", "");
    assert_eq!(status, 200, "{taken}");
    let name = taken["file"].as_str().expect("file").to_string();
    assert_eq!(taken["keys"].as_u64(), Some(keys.len() as u64), "{taken}");
    let shards = taken["shards"].as_u64().expect("shards");
    assert!(shards >= 3, "{taken}");
    for s in taken["manifest"]["shards"]
        .as_array()
        .expect("manifest shards")
    {
        assert!(
            s["index"].as_u64().unwrap() > 0,
            "each shard at a Raft index: {s}"
        );
    }
    println!(
        "backup {name}: {shards} shards, {} keys, {} bytes",
        taken["keys"], taken["bytes"]
    );

    // A damaged copy (one byte flipped) and a partial one (a shard file
    // missing) are refused whole, and the cluster is unchanged.
    let damaged = copy_backup(&nodes[1], &name, &nodes[1], "cluster-damaged");
    let victim = damaged.join("shard-1.dump");
    let mut bytes = std::fs::read(&victim).expect("shard file");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x5a;
    std::fs::write(&victim, bytes).expect("flip a byte");
    let (status, refused) = post(&nodes[1], "/restore", r#"{"file":"cluster-damaged"}"#);
    assert_eq!(status, 400, "{refused}");
    assert!(refused.to_string().contains("CRC"), "{refused}");
    let partial = copy_backup(&nodes[1], &name, &nodes[1], "cluster-partial");
    std::fs::remove_file(partial.join("shard-2.dump")).expect("remove a shard");
    let (status, refused) = post(&nodes[1], "/restore", r#"{"file":"cluster-partial"}"#);
    assert_eq!(status, 400, "{refused}");
    let (status, _) = post(&nodes[1], "/restore", r#"{"file":"cluster-nonesuch"}"#);
    assert_eq!(status, 404);
    let (status, _) = post(&nodes[1], "/restore", r#"{"file":"../../etc"}"#);
    assert_eq!(status, 400);
    assert_eq!(
        contents(&mut c, &keys),
        before,
        "a refused restore changed nothing"
    );

    // Lose the whole cluster; restore onto a new one of 2 nodes, whose
    // shards split the slots differently.
    let _ = c;
    for n in &mut nodes {
        n.kill9();
    }
    let root2 = tempfile::tempdir().expect("tempdir");
    let mut fresh: Vec<Proc> = (0..2).map(|i| Proc::new(root2.path(), i)).collect();
    for n in &mut fresh {
        // Periodic backups, taken by the metadata leader.
        n.env.push(("BACKUP_INTERVAL".into(), "2".into()));
        n.env.push(("STRATA_BACKUP_KEEP".into(), "3".into()));
    }
    create_cluster_with(&mut fresh, 2);
    copy_backup(&nodes[1], &name, &fresh[0], &name);
    let mut c2 = fresh[1].client();
    let () = c2.set("stray", "not in the backup").expect("set");
    let (status, done) = post(&fresh[0], "/restore", &format!(r#"{{"file":"{name}"}}"#));
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["keys"].as_u64(), Some(keys.len() as u64), "{done}");
    assert_eq!(
        contents(&mut c2, &keys),
        before,
        "the restored cluster holds what was backed up"
    );
    let stray: Option<String> = c2.get("stray").expect("get");
    assert_eq!(stray, None, "a restore replaces the cluster's contents");

    // A periodic backup after the restore holds the restored keys, and
    // no more than `backup_keep` are kept.
    let want = keys.len() as u64;
    let periodic = wait_for(60, "a periodic backup of the restored cluster", || {
        fresh.iter().find_map(|p| {
            let dir = p.dir.join("data").join("backups");
            let entries = std::fs::read_dir(&dir).ok()?;
            entries.filter_map(|e| e.ok()).find_map(|e| {
                let m = std::fs::read(e.path().join("manifest.json")).ok()?;
                let m: serde_json::Value = serde_json::from_slice(&m).ok()?;
                let keys: u64 = m["shards"]
                    .as_array()?
                    .iter()
                    .filter_map(|s| s["keys"].as_u64())
                    .sum();
                (keys == want && e.file_name() != name.as_str()).then(|| dir.clone())
            })
        })
    });
    std::thread::sleep(std::time::Duration::from_secs(7));
    let kept = std::fs::read_dir(&periodic)
        .expect("backups")
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with("cluster-") && !n.ends_with(".partial")
        })
        .count();
    assert!(kept <= 3, "{kept} backups kept, backup_keep is 3");
}
