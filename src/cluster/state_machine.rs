//! A Raft group's state machine is the node's tiered store.
//!
//! Each committed entry is applied inside one storage apply batch whose
//! mark is the entry's log id (plus the group's membership, and for the
//! metadata group the whole cluster layout), so after a crash the store
//! says exactly which entry it holds last and Raft resumes after it.
//! Shard writes execute through the node's ordinary command path at the
//! time the leader stamped on them.
//!
//! A snapshot is the store itself: building one is a checkpoint, and its
//! log id is the mark the checkpoint made durable. The data sent to a
//! follower that fell behind the log is the group's slots, both tiers,
//! dumped when it is needed.

use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, EntryPayload, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError,
    StorageIOError,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::types::{join_replies, ClusterMeta, LogId, Membership, RaftTypes, Request, META_GROUP};
use crate::storage::{with_clock, Store};

type Entry = openraft::Entry<RaftTypes>;
type SResult<T> = Result<T, StorageError<u64>>;

/// Executes a replicated write command against this node's store.
pub trait Apply: Send + Sync + 'static {
    /// Runs `args` in database `db`; returns the RESP3-encoded reply.
    fn apply(&self, db: u8, args: &[Bytes]) -> Bytes;
}

/// Snapshots installed from leaders on this node since it started: how
/// many, and their bytes (a joining replica's copy arrives this way).
#[derive(Debug, Default)]
pub struct Installed {
    /// Snapshots installed.
    pub count: AtomicU64,
    /// Their total size.
    pub bytes: AtomicU64,
}

/// What the store records with every applied entry.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Mark {
    applied: Option<LogId>,
    membership: Membership,
    /// The cluster layout (metadata group only).
    meta: Option<ClusterMeta>,
}

/// The writes of one entry.
enum Writes {
    One(u8, Vec<Bytes>),
    /// One client's pipeline; the reply is a RESP3 array.
    Pipeline(u8, Vec<Vec<Bytes>>),
    /// Commands of several clients; the replies are framed one by one.
    Group(Vec<(u8, Vec<Bytes>)>),
}

impl Writes {
    fn apply(&self, applier: &dyn Apply) -> Bytes {
        match self {
            Writes::One(db, args) => applier.apply(*db, args),
            Writes::Pipeline(db, cmds) => {
                let mut out = format!("*{}\r\n", cmds.len()).into_bytes();
                for args in cmds {
                    out.extend_from_slice(&applier.apply(*db, args));
                }
                Bytes::from(out)
            }
            Writes::Group(cmds) => {
                join_replies(cmds.iter().map(|(db, args)| applier.apply(*db, args)))
            }
        }
    }
}

fn sm_err(e: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::write_state_machine(AnyError::error(e.to_string())).into()
}

/// One group's state machine.
#[derive(Clone)]
pub struct GroupSm {
    group: u32,
    store: Store,
    applier: Arc<dyn Apply>,
    /// Slot ranges of a shard group (empty for the metadata group).
    slots: Vec<(u16, u16)>,
    mark: Mark,
    /// Where the metadata group publishes each new layout.
    layout: Option<watch::Sender<ClusterMeta>>,
    /// Counts snapshots installed from a leader.
    installed: Arc<Installed>,
    /// Where snapshot transfers are staged.
    snap_dir: PathBuf,
}

impl GroupSm {
    /// The state machine of shard `group`, owning `slots`.
    pub fn shard(
        group: u32,
        store: Store,
        applier: Arc<dyn Apply>,
        slots: Vec<(u16, u16)>,
        installed: Arc<Installed>,
        snap_dir: PathBuf,
    ) -> Self {
        let mark = read_mark(&store.mark(group));
        GroupSm {
            group,
            store,
            applier,
            slots,
            mark,
            layout: None,
            installed,
            snap_dir,
        }
    }

    /// The state machine of the metadata group; layouts go to `layout`.
    pub fn meta(
        store: Store,
        applier: Arc<dyn Apply>,
        layout: watch::Sender<ClusterMeta>,
        installed: Arc<Installed>,
        snap_dir: PathBuf,
    ) -> Self {
        let mark = read_mark(&store.mark(META_GROUP));
        if let Some(m) = &mark.meta {
            layout.send_replace(m.clone());
        }
        GroupSm {
            group: META_GROUP,
            store,
            applier,
            slots: Vec::new(),
            mark,
            layout: Some(layout),
            installed,
            snap_dir,
        }
    }
}

fn read_mark(bytes: &Option<Vec<u8>>) -> Mark {
    bytes
        .as_deref()
        .and_then(|b| bincode::deserialize(b).ok())
        .unwrap_or_default()
}

/// Index of the last entry of `group` that `store` holds.
pub(super) fn applied_index(store: &Store, group: u32) -> Option<u64> {
    read_mark(&store.mark(group)).applied.map(|l| l.index)
}

fn snapshot_id(group: u32, applied: &Option<LogId>) -> String {
    format!(
        "g{group}-{}-{:x}",
        applied.map_or(0, |l| l.index),
        rand::random::<u32>()
    )
}

/// A read-write file for one snapshot transfer in `dir`, already
/// unlinked: it disappears when the last handle to it closes.
pub(super) fn scratch_file(dir: &Path) -> std::io::Result<std::fs::File> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{:016x}.snap", rand::random::<u64>()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}

/// Writes every record of `slots` in every database to `out`:
/// `db(1) key_len(4) key rec_len(4) rec` repeated. Returns the bytes written.
fn dump_slots(store: &Store, slots: &[(u16, u16)], out: impl Write) -> Result<u64, String> {
    let mut out = BufWriter::with_capacity(1 << 20, out);
    let mut written = 0u64;
    for db in 0..store.databases() {
        for &range in slots {
            let mut cursor = 0;
            loop {
                let (next, items) = store
                    .export_slots(db, range, cursor, 512)
                    .map_err(|e| e.to_string())?;
                for (key, rec) in items {
                    let head = [db as u8];
                    for part in [
                        &head[..],
                        &(key.len() as u32).to_le_bytes(),
                        &key,
                        &(rec.len() as u32).to_le_bytes(),
                        &rec,
                    ] {
                        out.write_all(part).map_err(|e| e.to_string())?;
                        written += part.len() as u64;
                    }
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
    }
    out.flush().map_err(|e| e.to_string())?;
    Ok(written)
}

/// Deletes every key of `slots` in every database, in apply batches of
/// `group` that carry `mark`.
fn clear_slots(store: &Store, group: u32, slots: &[(u16, u16)], mark: &[u8]) -> Result<(), String> {
    for db in 0..store.databases() {
        for &(first, last) in slots {
            loop {
                let (_, items) = store
                    .scan_slots(db, first, last, 0, 1000)
                    .map_err(|e| e.to_string())?;
                if items.is_empty() {
                    break;
                }
                store.apply_batch(group, mark, || {
                    items
                        .iter()
                        .try_for_each(|item| store.delete(db, &item.key).map(|_| ()))
                        .map_err(|e| e.to_string())
                })?;
            }
        }
    }
    Ok(())
}

/// Drops this node's copy of shard `group` (its `slots`) once it no
/// longer replicates it: the keys, then the group's mark, which is left
/// empty. A crash part-way leaves the mark in place, and the next start
/// finishes the job (see [`holds_data`]).
pub(super) fn forget_shard(store: &Store, group: u32, slots: &[(u16, u16)]) -> Result<(), String> {
    let mark = store.mark(group).unwrap_or_default();
    clear_slots(store, group, slots, &mark)?;
    store.apply_batch(group, &[], || ());
    store.sync_all().map_err(|e| e.to_string())
}

/// Whether the store holds data of shard `group` (a mark of it that
/// [`forget_shard`] hasn't emptied).
pub(super) fn holds_data(store: &Store, group: u32) -> bool {
    store.mark(group).is_some_and(|m| !m.is_empty())
}

/// Bytes of records imported per apply batch while installing a snapshot.
const INSTALL_BATCH_BYTES: usize = 4 << 20;

/// Replaces the contents of `slots` with a dump made by [`dump_slots`],
/// read from `data`, in apply batches of bounded size. Every batch but
/// the last carries the group's previous mark `old`, the last one `new`:
/// a crash part-way leaves the store claiming its old position, and the
/// leader sends the snapshot again, which starts by clearing the slots.
fn load_slots(
    store: &Store,
    group: u32,
    slots: &[(u16, u16)],
    data: impl Read,
    old: &[u8],
    new: &[u8],
) -> Result<(), String> {
    clear_slots(store, group, slots, old)?;
    let mut data = BufReader::with_capacity(1 << 20, data);
    let mut pending: Vec<DumpRecord> = Vec::new();
    let mut pending_bytes = 0;
    loop {
        let record = read_record(&mut data)?;
        if let Some((_, key, rec)) = &record {
            pending_bytes += key.len() + rec.len();
        }
        let last = record.is_none();
        pending.extend(record);
        if last || pending_bytes >= INSTALL_BATCH_BYTES {
            let mark = if last { new } else { old };
            store.apply_batch(group, mark, || {
                pending
                    .drain(..)
                    .try_for_each(|(db, key, rec)| store.import(db, &key, &rec))
                    .map_err(|e| e.to_string())
            })?;
            pending_bytes = 0;
        }
        if last {
            return Ok(());
        }
    }
}

use super::backup::DumpRecord;

/// The next record of a dump, or None at its end.
pub(super) fn read_record(data: &mut impl Read) -> Result<Option<DumpRecord>, String> {
    let mut db = [0u8; 1];
    match data.read_exact(&mut db) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.to_string()),
    }
    let mut part = || -> Result<Vec<u8>, String> {
        let mut len = [0u8; 4];
        data.read_exact(&mut len)
            .map_err(|_| "truncated snapshot".to_string())?;
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_RECORD {
            return Err(format!("snapshot record of {len} bytes is too large"));
        }
        let mut buf = vec![0u8; len];
        data.read_exact(&mut buf)
            .map_err(|_| "truncated snapshot".to_string())?;
        Ok(buf)
    };
    let key = part()?;
    let rec = part()?;
    Ok(Some((db[0] as usize, key, rec)))
}

/// No key or record in a snapshot is larger than this.
const MAX_RECORD: usize = 1 << 30;

/// A snapshot's data: the metadata group's layout, or a shard's slots
/// dumped to a scratch file. Runs between applies, so the contents match
/// the group's mark exactly.
async fn snapshot_data(sm: &GroupSm) -> SResult<tokio::fs::File> {
    let (store, slots, dir) = (sm.store.clone(), sm.slots.clone(), sm.snap_dir.clone());
    let layout = match &sm.mark.meta {
        Some(meta) => Some(bincode::serialize(meta).map_err(sm_err)?),
        None => None,
    };
    let file = tokio::task::spawn_blocking(move || -> Result<std::fs::File, String> {
        let mut file = scratch_file(&dir).map_err(|e| format!("snapshot file: {e}"))?;
        match layout {
            Some(bytes) => file.write_all(&bytes).map_err(|e| e.to_string())?,
            None => {
                dump_slots(&store, &slots, &mut file)?;
            }
        }
        file.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
        Ok(file)
    })
    .await
    .map_err(sm_err)?
    .map_err(sm_err)?;
    Ok(tokio::fs::File::from_std(file))
}

impl RaftSnapshotBuilder<RaftTypes> for GroupSm {
    async fn build_snapshot(&mut self) -> SResult<Snapshot<RaftTypes>> {
        // A snapshot is a checkpoint: the mark it makes durable is the
        // point up to which Raft may discard its log.
        let store = self.store.clone();
        let group = self.group;
        let durable = tokio::task::spawn_blocking(move || {
            store.checkpoint().map(|()| store.durable_mark(group))
        })
        .await
        .map_err(sm_err)?
        .map_err(sm_err)?;
        let mark = read_mark(&durable);
        // The data is produced when a follower needs it (see
        // `get_current_snapshot`); the snapshot built here only tells Raft
        // how far the store is durable.
        let dir = self.snap_dir.clone();
        let file = tokio::task::spawn_blocking(move || scratch_file(&dir))
            .await
            .map_err(sm_err)?
            .map_err(sm_err)?;
        Ok(Snapshot {
            meta: SnapshotMeta {
                last_log_id: mark.applied,
                last_membership: mark.membership.clone(),
                snapshot_id: snapshot_id(self.group, &mark.applied),
            },
            snapshot: Box::new(tokio::fs::File::from_std(file)),
        })
    }
}

impl RaftStateMachine<RaftTypes> for GroupSm {
    type SnapshotBuilder = GroupSm;

    async fn applied_state(&mut self) -> SResult<(Option<LogId>, Membership)> {
        Ok((self.mark.applied, self.mark.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> SResult<Vec<Bytes>>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let (store, applier, group) = (self.store.clone(), self.applier.clone(), self.group);
        let mut mark = self.mark.clone();
        let (mark, replies, layout_changed) = tokio::task::spawn_blocking(move || {
            let mut replies = Vec::with_capacity(entries.len());
            let mut layout_changed = false;
            for entry in entries {
                mark.applied = Some(entry.log_id);
                // Every replica applies this entry with the same random seed.
                let entry_seed = entry.log_id.index;
                let command = match entry.payload {
                    EntryPayload::Blank => None,
                    EntryPayload::Membership(m) => {
                        mark.membership = Membership::new(Some(entry.log_id), m);
                        None
                    }
                    EntryPayload::Normal(Request::Layout(meta)) => {
                        if group == META_GROUP {
                            mark.meta = Some(meta);
                            layout_changed = true;
                        }
                        None
                    }
                    EntryPayload::Normal(Request::Command { db, at_ms, args }) => {
                        Some((at_ms, Writes::One(db, args)))
                    }
                    EntryPayload::Normal(Request::Batch { db, at_ms, cmds }) => {
                        Some((at_ms, Writes::Pipeline(db, cmds)))
                    }
                    EntryPayload::Normal(Request::Group { at_ms, cmds }) => {
                        Some((at_ms, Writes::Group(cmds)))
                    }
                };
                let bytes = bincode::serialize(&mark).map_err(sm_err)?;
                let reply = store.apply_batch(group, &bytes, || match &command {
                    Some((at_ms, writes)) => {
                        with_clock(*at_ms, entry_seed, || writes.apply(&*applier))
                    }
                    None => Bytes::new(),
                });
                replies.push(reply);
            }
            Ok::<_, StorageError<u64>>((mark, replies, layout_changed))
        })
        .await
        .map_err(sm_err)??;
        if layout_changed {
            if let (Some(tx), Some(meta)) = (&self.layout, &mark.meta) {
                tx.send_replace(meta.clone());
            }
        }
        self.mark = mark;
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> SResult<Box<tokio::fs::File>> {
        let dir = self.snap_dir.clone();
        let file = tokio::task::spawn_blocking(move || scratch_file(&dir))
            .await
            .map_err(sm_err)?
            .map_err(sm_err)?;
        Ok(Box::new(tokio::fs::File::from_std(file)))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, super::types::PeerNode>,
        snapshot: Box<tokio::fs::File>,
    ) -> SResult<()> {
        let mut file = snapshot.into_std().await;
        let mut mark = Mark {
            applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            meta: None,
        };
        let old = bincode::serialize(&self.mark).map_err(sm_err)?;
        let (store, group, slots) = (self.store.clone(), self.group, self.slots.clone());
        let (mark, size) = tokio::task::spawn_blocking(move || -> Result<_, String> {
            let size = file.seek(SeekFrom::End(0)).map_err(|e| e.to_string())?;
            file.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
            if group == META_GROUP {
                let layout: ClusterMeta = bincode::deserialize_from(BufReader::new(&mut file))
                    .map_err(|e| e.to_string())?;
                mark.meta = Some(layout);
            }
            let new = bincode::serialize(&mark).map_err(|e| e.to_string())?;
            if group == META_GROUP {
                store.apply_batch(group, &new, || ());
            } else {
                load_slots(&store, group, &slots, file, &old, &new)?;
            }
            store.sync_all().map_err(|e| e.to_string())?;
            Ok((mark, size))
        })
        .await
        .map_err(sm_err)?
        .map_err(sm_err)?;
        if let (Some(tx), Some(layout)) = (&self.layout, &mark.meta) {
            tx.send_replace(layout.clone());
        }
        tracing::info!(
            group = self.group,
            index = mark.applied.map_or(0, |l| l.index),
            bytes = size,
            "installed a snapshot from the leader"
        );
        self.installed.count.fetch_add(1, Ordering::Relaxed);
        self.installed.bytes.fetch_add(size, Ordering::Relaxed);
        self.mark = mark;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> SResult<Option<Snapshot<RaftTypes>>> {
        if self.mark.applied.is_none() {
            return Ok(None);
        }
        let data = snapshot_data(self).await?;
        Ok(Some(Snapshot {
            meta: SnapshotMeta {
                last_log_id: self.mark.applied,
                last_membership: self.mark.membership.clone(),
                snapshot_id: snapshot_id(self.group, &self.mark.applied),
            },
            snapshot: Box::new(data),
        }))
    }
}
