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

use std::io::Cursor;
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

use super::types::{ClusterMeta, LogId, Membership, RaftTypes, Request, META_GROUP};
use crate::storage::{with_clock, Store};

type Entry = openraft::Entry<RaftTypes>;
type SResult<T> = Result<T, StorageError<u64>>;

/// Executes a replicated write command against this node's store.
pub trait Apply: Send + Sync + 'static {
    /// Runs `args` in database `db`; returns the RESP3-encoded reply.
    fn apply(&self, db: u8, args: &[Bytes]) -> Bytes;
}

/// What the store records with every applied entry.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Mark {
    applied: Option<LogId>,
    membership: Membership,
    /// The cluster layout (metadata group only).
    meta: Option<ClusterMeta>,
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
    installed: Arc<AtomicU64>,
}

impl GroupSm {
    /// The state machine of shard `group`, owning `slots`.
    pub fn shard(
        group: u32,
        store: Store,
        applier: Arc<dyn Apply>,
        slots: Vec<(u16, u16)>,
        installed: Arc<AtomicU64>,
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
        }
    }

    /// The state machine of the metadata group; layouts go to `layout`.
    pub fn meta(
        store: Store,
        applier: Arc<dyn Apply>,
        layout: watch::Sender<ClusterMeta>,
        installed: Arc<AtomicU64>,
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
        }
    }
}

fn read_mark(bytes: &Option<Vec<u8>>) -> Mark {
    bytes
        .as_deref()
        .and_then(|b| bincode::deserialize(b).ok())
        .unwrap_or_default()
}

fn snapshot_id(group: u32, applied: &Option<LogId>) -> String {
    format!(
        "g{group}-{}-{:x}",
        applied.map_or(0, |l| l.index),
        rand::random::<u32>()
    )
}

/// Every record of `slots` in every database, as one buffer:
/// `db(1) key_len(4) key rec_len(4) rec` repeated.
fn dump_slots(
    store: &Store,
    slots: &[(u16, u16)],
) -> Result<Vec<u8>, crate::storage::StorageError> {
    let mut out = Vec::new();
    for db in 0..store.databases() {
        for &(a, b) in slots {
            for slot in a..=b {
                let mut cursor = 0;
                loop {
                    let (next, items) = store.export_slot(db, slot, cursor, 512)?;
                    for (key, rec) in items {
                        out.push(db as u8);
                        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
                        out.extend_from_slice(&key);
                        out.extend_from_slice(&(rec.len() as u32).to_le_bytes());
                        out.extend_from_slice(&rec);
                    }
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
            }
        }
    }
    Ok(out)
}

/// Replaces the contents of `slots` with a dump made by [`dump_slots`].
fn load_slots(store: &Store, slots: &[(u16, u16)], data: &[u8]) -> Result<(), String> {
    for db in 0..store.databases() {
        for &(a, b) in slots {
            for slot in a..=b {
                loop {
                    let (_, items) = store
                        .export_slot(db, slot, 0, 512)
                        .map_err(|e| e.to_string())?;
                    if items.is_empty() {
                        break;
                    }
                    for (key, _) in items {
                        store.delete(db, &key).map_err(|e| e.to_string())?;
                    }
                }
            }
        }
    }
    let mut pos = 0usize;
    let take = |pos: &mut usize, n: usize| -> Result<&[u8], String> {
        let end = pos
            .checked_add(n)
            .filter(|&e| e <= data.len())
            .ok_or("truncated snapshot")?;
        let s = &data[*pos..end];
        *pos = end;
        Ok(s)
    };
    while pos < data.len() {
        let db = take(&mut pos, 1)?[0] as usize;
        let klen =
            u32::from_le_bytes(take(&mut pos, 4)?.try_into().map_err(|_| "bad length")?) as usize;
        let key = take(&mut pos, klen)?.to_vec();
        let rlen =
            u32::from_le_bytes(take(&mut pos, 4)?.try_into().map_err(|_| "bad length")?) as usize;
        let rec = take(&mut pos, rlen)?;
        store.import(db, &key, rec).map_err(|e| e.to_string())?;
    }
    Ok(())
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
        let data = match &mark.meta {
            Some(meta) => bincode::serialize(meta).map_err(sm_err)?,
            None => Vec::new(),
        };
        Ok(Snapshot {
            meta: SnapshotMeta {
                last_log_id: mark.applied,
                last_membership: mark.membership.clone(),
                snapshot_id: snapshot_id(self.group, &mark.applied),
            },
            snapshot: Box::new(Cursor::new(data)),
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
                        Some((db, at_ms, vec![args], false))
                    }
                    EntryPayload::Normal(Request::Batch { db, at_ms, cmds }) => {
                        Some((db, at_ms, cmds, true))
                    }
                };
                let bytes = bincode::serialize(&mark).map_err(sm_err)?;
                let reply = store.apply_batch(group, &bytes, || match &command {
                    Some((db, at_ms, cmds, as_array)) => with_clock(*at_ms, || {
                        if !as_array {
                            return cmds
                                .first()
                                .map_or_else(Bytes::new, |a| applier.apply(*db, a));
                        }
                        let mut out = format!("*{}\r\n", cmds.len()).into_bytes();
                        for args in cmds {
                            out.extend_from_slice(&applier.apply(*db, args));
                        }
                        Bytes::from(out)
                    }),
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

    async fn begin_receiving_snapshot(&mut self) -> SResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, super::types::PeerNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> SResult<()> {
        let data = snapshot.into_inner();
        let size = data.len();
        let mut mark = Mark {
            applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            meta: None,
        };
        if self.group == META_GROUP {
            let layout: ClusterMeta = bincode::deserialize(&data).map_err(sm_err)?;
            mark.meta = Some(layout);
        }
        let bytes = bincode::serialize(&mark).map_err(sm_err)?;
        let (store, group, slots) = (self.store.clone(), self.group, self.slots.clone());
        tokio::task::spawn_blocking(move || {
            store.apply_batch(group, &bytes, || {
                if group == META_GROUP {
                    Ok(())
                } else {
                    load_slots(&store, &slots, &data)
                }
            })
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
        self.installed.fetch_add(1, Ordering::Relaxed);
        self.mark = mark;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> SResult<Option<Snapshot<RaftTypes>>> {
        if self.mark.applied.is_none() {
            return Ok(None);
        }
        // Runs between applies, so the dump matches the mark exactly.
        let data = match &self.mark.meta {
            Some(meta) => bincode::serialize(meta).map_err(sm_err)?,
            None => {
                let (store, slots) = (self.store.clone(), self.slots.clone());
                tokio::task::spawn_blocking(move || dump_slots(&store, &slots))
                    .await
                    .map_err(sm_err)?
                    .map_err(sm_err)?
            }
        };
        Ok(Some(Snapshot {
            meta: SnapshotMeta {
                last_log_id: self.mark.applied,
                last_membership: self.mark.membership.clone(),
                snapshot_id: snapshot_id(self.group, &self.mark.applied),
            },
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}
