//! Backups (seed 002's `/backup`, `/restore` and `BACKUP_INTERVAL`): of
//! one node, a snapshot file of both tiers; of a cluster, every shard
//! dumped by its leader at one Raft index, with a manifest, restorable
//! onto a cluster of any size.
//!
//! ```text
//! cluster backup ─> each shard's dump pulled from its leader ─> <backup_dir>/cluster-<ms>.partial/shard-<group>.dump
//!                ─> manifest.json (index, term, slots, keys, bytes, CRC-32 of each dump)
//!                ─> the directory renamed to cluster-<ms>: a backup is there whole or not at all
//! cluster restore ─> the whole backup checked: manifest, slot coverage, sizes, CRCs, every record
//!                    (anything wrong: refused, nothing changed)
//!                 ─> FLUSHALL through every shard's log
//!                 ─> every key RESTOREd through its shard's log, by the cluster's layout as it is now
//! ```

use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::cluster::backup::next_record;
use crate::commands::{dispatch, Reply, Session};
use crate::node::{ClientHandle, Node};
use crate::slot::{slot_of, SLOTS};
use crate::storage::{decode_record, dump, now_ms, CrcWriter};

/// What a cluster backup's manifest says it is.
pub const FORMAT: &str = "strata-cluster-backup";
/// The manifest's layout version.
pub const VERSION: u32 = 1;

/// Name prefix of cluster backups in the backup directory.
const CLUSTER_PREFIX: &str = "cluster-";
/// Suffix of one node's snapshot files.
const NODE_SUFFIX: &str = ".snap";

/// Largest manifest read.
const MANIFEST_MAX: u64 = 16 << 20;

/// Keys being restored at once.
const RESTORE_IN_FLIGHT: usize = 64;

/// A cluster backup's table of contents.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: String,
    /// [`VERSION`].
    pub version: u32,
    /// When it was taken, ms since the epoch.
    pub created_ms: u64,
    /// The cluster's epoch then.
    pub epoch: u64,
    /// Members then.
    pub nodes: usize,
    /// Copies of each shard then.
    pub replicas: usize,
    /// One entry per shard.
    pub shards: Vec<ShardEntry>,
}

/// One shard in a backup.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardEntry {
    /// Its Raft group.
    pub group: u32,
    /// Its slot ranges, inclusive.
    pub slots: Vec<(u16, u16)>,
    /// The log index the dump holds every write up to.
    pub index: u64,
    /// That entry's term.
    pub term: u64,
    /// The dump's file name.
    pub file: String,
    /// Its size.
    pub bytes: u64,
    /// Keys in it.
    pub keys: u64,
    /// CRC-32 of the file.
    pub crc32: u32,
}

/// Why a backup or restore failed.
#[derive(Debug)]
pub enum BackupError {
    /// No such backup.
    NotFound(String),
    /// The backup is damaged, partial or of another format: refused,
    /// nothing changed.
    Damaged(String),
    /// It failed part-way (a shard without a leader, a full disk).
    Failed(String),
}

impl std::fmt::Display for BackupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackupError::NotFound(m) | BackupError::Failed(m) => f.write_str(m),
            BackupError::Damaged(m) => write!(
                f,
                "the backup is damaged or incomplete, so nothing was restored: {m}"
            ),
        }
    }
}

/// Where backups go: `backup_dir`, or `<data_dir>/backups`.
pub fn dir(node: &Node) -> PathBuf {
    let cfg = node.cfg.read();
    cfg.backup_dir
        .clone()
        .unwrap_or_else(|| cfg.storage.data_dir.join("backups"))
}

/// The newest backup of this node's kind (cluster or single node).
pub fn newest(node: &Node) -> Option<String> {
    listed(node).pop()
}

/// This node's kind of backups in the backup directory, oldest first.
fn listed(node: &Node) -> Vec<String> {
    let cluster = node.cluster.get().is_some();
    let Ok(it) = std::fs::read_dir(dir(node)) else {
        return Vec::new();
    };
    let mut found: Vec<(std::time::SystemTime, String)> = it
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let at = e.metadata().and_then(|m| m.modified()).ok()?;
            is_backup(&name, cluster).then_some((at, name))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, n)| n).collect()
}

fn is_backup(name: &str, cluster: bool) -> bool {
    if cluster {
        name.starts_with(CLUSTER_PREFIX) && !name.ends_with(".partial")
    } else {
        name.ends_with(NODE_SUFFIX)
    }
}

/// Takes a backup of the whole cluster into the backup directory;
/// returns its name and manifest.
pub async fn take_cluster(
    node: &Node,
    name: Option<String>,
) -> Result<(String, Manifest), BackupError> {
    let cluster = node
        .cluster
        .get()
        .ok_or_else(|| BackupError::Failed("not in cluster mode".into()))?;
    let layout: crate::cluster::ClusterMeta = (*cluster.layout()).clone();
    if layout.shards.is_empty() {
        return Err(BackupError::Failed("the cluster is not created yet".into()));
    }
    let name = name.unwrap_or_else(|| format!("{CLUSTER_PREFIX}{}", now_ms()));
    let root = dir(node);
    let fin = root.join(&name);
    if fin.exists() {
        return Err(BackupError::Failed(format!(
            "a backup named '{name}' exists"
        )));
    }
    let tmp = root.join(format!("{name}.partial"));
    let _ = std::fs::remove_dir_all(&tmp);
    let failed = |e: std::io::Error| BackupError::Failed(format!("writing the backup: {e}"));
    std::fs::create_dir_all(&tmp).map_err(failed)?;
    let result = async {
        let mut shards = Vec::new();
        for shard in &layout.shards {
            let file = format!("shard-{}.dump", shard.group);
            let path = tmp.join(&file);
            let f = std::fs::File::create(&path).map_err(failed)?;
            let mut out = CrcWriter::new(std::io::BufWriter::with_capacity(1 << 20, f));
            let dumped = cluster
                .dump_shard(shard.group, &mut out)
                .await
                .map_err(|e| BackupError::Failed(format!("shard {}: {e}", shard.group)))?;
            out.flush().map_err(failed)?;
            let (inner, crc, bytes) = out.finish();
            inner
                .into_inner()
                .map_err(|e| failed(e.into_error()))?
                .sync_all()
                .map_err(failed)?;
            let slots = shard.slots.clone();
            let check = {
                let (path, slots) = (path.clone(), slots.clone());
                let databases = node.store.databases();
                tokio::task::spawn_blocking(move || count_records(&path, &slots, databases))
                    .await
                    .map_err(|e| BackupError::Failed(e.to_string()))?
            };
            let keys = check.map_err(|e| {
                BackupError::Failed(format!(
                    "shard {}'s dump reads back wrong: {e}",
                    shard.group
                ))
            })?;
            shards.push(ShardEntry {
                group: shard.group,
                slots,
                index: dumped.index,
                term: dumped.term,
                file,
                bytes,
                keys,
                crc32: crc,
            });
        }
        let manifest = Manifest {
            format: FORMAT.into(),
            version: VERSION,
            created_ms: now_ms(),
            epoch: layout.epoch,
            nodes: layout.nodes.len(),
            replicas: layout.replicas,
            shards,
        };
        let text =
            serde_json::to_vec_pretty(&manifest).map_err(|e| BackupError::Failed(e.to_string()))?;
        let mpath = tmp.join("manifest.json");
        std::fs::write(&mpath, text).map_err(failed)?;
        std::fs::File::open(&mpath)
            .and_then(|f| f.sync_all())
            .map_err(failed)?;
        std::fs::rename(&tmp, &fin).map_err(failed)?;
        if let Ok(d) = std::fs::File::open(&root) {
            let _ = d.sync_all();
        }
        Ok(manifest)
    }
    .await;
    match result {
        Ok(m) => {
            node.metrics.backups_ok.fetch_add(1, Ordering::Relaxed);
            node.metrics
                .last_backup_ms
                .store(m.created_ms, Ordering::Relaxed);
            tracing::info!(
                backup = %name,
                shards = m.shards.len(),
                keys = m.shards.iter().map(|s| s.keys).sum::<u64>(),
                "cluster backup taken"
            );
            Ok((name, m))
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            node.metrics.backups_failed.fetch_add(1, Ordering::Relaxed);
            tracing::error!(backup = %name, error = %e, "cluster backup failed");
            Err(e)
        }
    }
}

/// Reads a dump through, checking every record; returns how many.
fn count_records(path: &Path, slots: &[(u16, u16)], databases: usize) -> Result<u64, String> {
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut r = BufReader::with_capacity(1 << 20, f);
    let mut keys = 0;
    while let Some((db, key, rec)) = next_record(&mut r)? {
        if db >= databases {
            return Err(format!("a key of database {db}, of {databases}"));
        }
        let slot = slot_of(&key);
        if !slots.iter().any(|&(a, b)| (a..=b).contains(&slot)) {
            return Err(format!("key in slot {slot}, outside the shard's slots"));
        }
        decode_record(&rec).map_err(|e| format!("a damaged record: {e}"))?;
        keys += 1;
    }
    Ok(keys)
}

/// Checks a whole cluster backup; returns its manifest.
pub fn verify(path: &Path, databases: usize) -> Result<Manifest, BackupError> {
    let damaged = BackupError::Damaged;
    let mpath = path.join("manifest.json");
    let meta = std::fs::metadata(&mpath).map_err(|e| damaged(format!("manifest.json: {e}")))?;
    if meta.len() > MANIFEST_MAX {
        return Err(damaged("manifest.json is too large".into()));
    }
    let text = std::fs::read(&mpath).map_err(|e| damaged(format!("manifest.json: {e}")))?;
    let m: Manifest =
        serde_json::from_slice(&text).map_err(|e| damaged(format!("manifest.json: {e}")))?;
    if m.format != FORMAT || m.version != VERSION {
        return Err(damaged(format!(
            "manifest.json is format {} version {}, not {FORMAT} version {VERSION}",
            m.format, m.version
        )));
    }
    // Every slot exactly once.
    let mut ranges: Vec<(u16, u16)> = m.shards.iter().flat_map(|s| s.slots.clone()).collect();
    ranges.sort_unstable();
    let mut next = 0u32;
    for &(a, b) in &ranges {
        if u32::from(a) != next || b < a {
            return Err(damaged(format!(
                "the shards' slots don't cover 0-{} exactly once (at slot {next})",
                SLOTS - 1
            )));
        }
        next = u32::from(b) + 1;
    }
    if next != u32::from(SLOTS) {
        return Err(damaged(format!(
            "slots {next}-{} are in no shard",
            SLOTS - 1
        )));
    }
    for s in &m.shards {
        let plain = s.file.starts_with("shard-")
            && s.file
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !plain {
            return Err(damaged(format!(
                "shard {} names file '{}'",
                s.group, s.file
            )));
        }
        let fpath = path.join(&s.file);
        let len = std::fs::metadata(&fpath)
            .map_err(|e| damaged(format!("{}: {e}", s.file)))?
            .len();
        if len != s.bytes {
            return Err(damaged(format!(
                "{} is {len} bytes, the manifest says {}",
                s.file, s.bytes
            )));
        }
        let mut f = std::fs::File::open(&fpath).map_err(|e| damaged(format!("{}: {e}", s.file)))?;
        let mut crc = crc32fast::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f
                .read(&mut buf)
                .map_err(|e| damaged(format!("{}: {e}", s.file)))?;
            if n == 0 {
                break;
            }
            crc.update(&buf[..n]);
        }
        if crc.finalize() != s.crc32 {
            return Err(damaged(format!(
                "{}'s CRC-32 doesn't match the manifest",
                s.file
            )));
        }
        let keys = count_records(&fpath, &s.slots, databases)
            .map_err(|e| damaged(format!("{}: {e}", s.file)))?;
        if keys != s.keys {
            return Err(damaged(format!(
                "{} holds {keys} keys, the manifest says {}",
                s.file, s.keys
            )));
        }
    }
    Ok(m)
}

/// What a restore did.
#[derive(Debug, Clone, Serialize)]
pub struct Restored {
    /// Keys written (keys already expired are not).
    pub keys: u64,
    /// Shards of the backup.
    pub shards: usize,
}

/// Restores cluster backup `name` onto this cluster, whatever its size:
/// the cluster's contents become the backup's.
pub async fn restore_cluster(node: &Arc<Node>, name: &str) -> Result<Restored, BackupError> {
    let path = dir(node).join(name);
    if !path.is_dir() {
        return Err(BackupError::NotFound(format!("no cluster backup '{name}'")));
    }
    let databases = node.store.databases();
    let manifest = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || verify(&path, databases))
            .await
            .map_err(|e| BackupError::Failed(e.to_string()))??
    };
    let failed = |what: String| BackupError::Failed(format!("restore failed part-way: {what}"));
    let reply = run(node, 0, vec![Bytes::from_static(b"FLUSHALL")]).await;
    if let Reply::Error(e) = reply {
        return Err(BackupError::Failed(format!(
            "emptying the cluster first: {e}"
        )));
    }
    let mut restored = 0u64;
    for s in &manifest.shards {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<(usize, Vec<Bytes>), String>>(1024);
        let fpath = path.join(&s.file);
        let reader = tokio::task::spawn_blocking(move || {
            let send = |item| tx.blocking_send(item).is_ok();
            let f = match std::fs::File::open(&fpath) {
                Ok(f) => f,
                Err(e) => return send(Err(e.to_string())),
            };
            let mut r = BufReader::with_capacity(1 << 20, f);
            loop {
                let item = match next_record(&mut r) {
                    Ok(None) => return true,
                    Ok(Some((db, key, rec))) => match decode_record(&rec) {
                        Ok(rec) => Ok((db, restore_args(key, &rec))),
                        Err(e) => Err(e.to_string()),
                    },
                    Err(e) => Err(e),
                };
                let stop = item.is_err();
                if !send(item) || stop {
                    return false;
                }
            }
        });
        let answers = tokio_stream_of(rx)
            .map(|item| async move {
                let (db, args) = item?;
                let key = String::from_utf8_lossy(&args[1]).into_owned();
                match run(node, db, args).await {
                    Reply::Error(e) => Err(format!("key '{key}': {e}")),
                    _ => Ok(()),
                }
            })
            .buffer_unordered(RESTORE_IN_FLIGHT);
        let mut answers = std::pin::pin!(answers);
        while let Some(answer) = answers.next().await {
            answer.map_err(failed)?;
            restored += 1;
        }
        reader.await.map_err(|e| failed(e.to_string()))?;
    }
    // RESTORE creates nothing for a key already expired.
    tracing::info!(backup = %name, keys = restored, "cluster backup restored");
    Ok(Restored {
        keys: restored,
        shards: manifest.shards.len(),
    })
}

/// RESTORE key ttl payload REPLACE ABSTTL for one record.
fn restore_args(key: Vec<u8>, rec: &crate::storage::Record) -> Vec<Bytes> {
    vec![
        Bytes::from_static(b"RESTORE"),
        Bytes::from(key),
        Bytes::from(rec.expire_at_ms.unwrap_or(0).to_string()),
        Bytes::from(dump(rec)),
        Bytes::from_static(b"REPLACE"),
        Bytes::from_static(b"ABSTTL"),
    ]
}

/// A receiver as a stream.
fn tokio_stream_of<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|t| (t, rx)) })
}

/// Runs one command as the node's administrator, routed like a client's.
async fn run(node: &Node, db: usize, args: Vec<Bytes>) -> Reply {
    let handle = Arc::new(ClientHandle::new(0, "backup".into(), String::new(), 3));
    let mut s = Session::new(handle, true);
    s.db = db;
    dispatch(node, &mut s, &args).await
}

/// Takes one node's snapshot into the backup directory.
pub async fn take_node(
    node: &Node,
    name: Option<String>,
) -> Result<crate::storage::SnapshotInfo, BackupError> {
    let name = name.unwrap_or_else(|| format!("backup-{}{NODE_SUFFIX}", now_ms()));
    let root = dir(node);
    let store = node.store.clone();
    let taken = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&root)?;
        store
            .snapshot_to(&root.join(name))
            .map_err(std::io::Error::other)
    })
    .await
    .map_err(|e| BackupError::Failed(e.to_string()))?
    .map_err(|e| BackupError::Failed(e.to_string()));
    match &taken {
        Ok(_) => {
            node.metrics.backups_ok.fetch_add(1, Ordering::Relaxed);
            node.metrics
                .last_backup_ms
                .store(now_ms(), Ordering::Relaxed);
        }
        Err(_) => {
            node.metrics.backups_failed.fetch_add(1, Ordering::Relaxed);
        }
    }
    taken
}

/// Deletes all but the newest `keep` backups of this node's kind.
pub fn prune(node: &Node, keep: usize) -> usize {
    let root = dir(node);
    let names = listed(node);
    let extra = names.len().saturating_sub(keep);
    for n in &names[..extra] {
        let p = root.join(n);
        let gone = if p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        if let Err(e) = gone {
            tracing::warn!(backup = %n, error = %e, "could not delete an old backup");
        }
    }
    extra
}

/// Takes a backup every `backup_interval_secs` and keeps the newest
/// `backup_keep`. In a cluster the metadata leader takes them, so there
/// is one backup per interval however many nodes run.
pub async fn periodic(node: Arc<Node>) {
    loop {
        let every = node.cfg.read().backup_interval_secs;
        if every == 0 {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(every)) => {}
            () = node.shutdown.cancelled() => return,
        }
        let taken = match node.cluster.get() {
            Some(c) if c.meta_leader() != Some(c.id) || c.layout().shards.is_empty() => continue,
            Some(_) => take_cluster(&node, None).await.map(|_| ()),
            None => take_node(&node, None).await.map(|_| ()),
        };
        match taken {
            Ok(()) => {
                let keep = node.cfg.read().backup_keep.max(1);
                let gone = prune(&node, keep);
                tracing::info!(deleted = gone, keep, "periodic backup taken");
            }
            Err(e) => tracing::error!(error = %e, "periodic backup failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(slots: Vec<Vec<(u16, u16)>>) -> Manifest {
        Manifest {
            format: FORMAT.into(),
            version: VERSION,
            created_ms: 0,
            epoch: 1,
            nodes: 3,
            replicas: 3,
            shards: slots
                .into_iter()
                .enumerate()
                .map(|(i, slots)| ShardEntry {
                    group: i as u32 + 1,
                    slots,
                    index: 0,
                    term: 0,
                    file: format!("shard-{}.dump", i + 1),
                    bytes: 0,
                    keys: 0,
                    crc32: crc32fast::hash(&[]),
                })
                .collect(),
        }
    }

    fn write(dir: &Path, m: &Manifest) {
        std::fs::write(dir.join("manifest.json"), serde_json::to_vec(m).unwrap()).unwrap();
        for s in &m.shards {
            std::fs::write(dir.join(&s.file), b"").unwrap();
        }
    }

    #[test]
    fn a_backup_must_cover_every_slot_once() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            &manifest(vec![vec![(0, 8000)], vec![(8001, 16383)]]),
        );
        assert!(verify(d.path(), 16).is_ok());
        for bad in [
            vec![vec![(0, 8000)], vec![(8002, 16383)]],
            vec![vec![(0, 8001)], vec![(8001, 16383)]],
            vec![vec![(0, 8000)]],
        ] {
            let d = tempfile::tempdir().unwrap();
            write(d.path(), &manifest(bad.clone()));
            assert!(
                matches!(verify(d.path(), 16), Err(BackupError::Damaged(_))),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn a_missing_or_altered_file_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let m = manifest(vec![vec![(0, 16383)]]);
        write(d.path(), &m);
        std::fs::write(d.path().join("shard-1.dump"), b"x").unwrap();
        let e = verify(d.path(), 16).unwrap_err();
        assert!(e.to_string().contains("bytes"), "{e}");
        std::fs::remove_file(d.path().join("shard-1.dump")).unwrap();
        assert!(matches!(verify(d.path(), 16), Err(BackupError::Damaged(_))));
        let mut other = m.clone();
        other.shards[0].file = "../etc/passwd".into();
        let d2 = tempfile::tempdir().unwrap();
        std::fs::write(
            d2.path().join("manifest.json"),
            serde_json::to_vec(&other).unwrap(),
        )
        .unwrap();
        assert!(matches!(
            verify(d2.path(), 16),
            Err(BackupError::Damaged(_))
        ));
        std::fs::write(d2.path().join("manifest.json"), b"{not json").unwrap();
        assert!(matches!(
            verify(d2.path(), 16),
            Err(BackupError::Damaged(_))
        ));
    }
}
