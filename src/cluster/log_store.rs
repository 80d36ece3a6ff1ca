//! The Raft log of every group on a node, in one fjall database
//! (`<data_dir>/raft`): entries keyed by (group, index), and each group's
//! vote, committed and purged positions.
//!
//! This log is the durability log for replicated data: an entry is
//! acknowledged to Raft once it is as durable as `appendfsync` promises
//! (fsynced before the acknowledgement under `always`, within a second
//! under `everysec`). A vote is always fsynced before it is answered, as
//! Raft's safety requires.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, LogState, RaftLogReader, StorageError, StorageIOError, Vote};

use super::state_machine::applied_index;
use super::types::{LogId, RaftTypes};
use crate::storage::{AppendFsync, Store};

type Entry = openraft::Entry<RaftTypes>;
type SResult<T> = Result<T, StorageError<u64>>;

/// The node's Raft log database, shared by all its groups.
pub struct RaftDb {
    db: Database,
    log: Keyspace,
    state: Keyspace,
    /// The `appendfsync` policy, as an `AppendFsync` discriminant.
    fsync: AtomicU8,
}

fn fsync_code(p: AppendFsync) -> u8 {
    match p {
        AppendFsync::Always => 0,
        AppendFsync::Everysec => 1,
        AppendFsync::No => 2,
    }
}

fn io_err(e: impl std::error::Error + 'static) -> AnyError {
    AnyError::new(&e)
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError<u64> {
    StorageIOError::write_logs(io_err(e)).into()
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError<u64> {
    StorageIOError::read_logs(io_err(e)).into()
}

fn entry_key(group: u32, index: u64) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..4].copy_from_slice(&group.to_be_bytes());
    k[4..].copy_from_slice(&index.to_be_bytes());
    k
}

fn state_key(group: u32, what: u8) -> [u8; 5] {
    let mut k = [0u8; 5];
    k[..4].copy_from_slice(&group.to_be_bytes());
    k[4] = what;
    k
}

const VOTE: u8 = b'v';
const COMMITTED: u8 = b'c';
const PURGED: u8 = b'p';

impl RaftDb {
    /// Opens (or creates) the log database under `dir`.
    pub fn open(dir: &Path, fsync: AppendFsync) -> Result<Arc<RaftDb>, fjall::Error> {
        let db = Database::builder(dir).manual_journal_persist(true).open()?;
        let log = db.keyspace("log", || {
            KeyspaceCreateOptions::default().manual_journal_persist(true)
        })?;
        let state = db.keyspace("state", || {
            KeyspaceCreateOptions::default().manual_journal_persist(true)
        })?;
        Ok(Arc::new(RaftDb {
            db,
            log,
            state,
            fsync: AtomicU8::new(fsync_code(fsync)),
        }))
    }

    /// Changes the fsync policy (CONFIG SET appendfsync).
    pub fn set_fsync(&self, p: AppendFsync) {
        self.fsync.store(fsync_code(p), Ordering::Relaxed);
    }

    /// Fsyncs everything written so far (the `everysec` flusher calls this).
    pub fn sync(&self) -> Result<(), fjall::Error> {
        self.db.persist(PersistMode::SyncData)
    }

    /// Deletes everything of `group`: its entries, vote, commit and purge
    /// positions, durably. Called once this node no longer replicates the
    /// group and its Raft instance is stopped, so a later replica of the
    /// same group here starts empty.
    pub fn forget(&self, group: u32) -> Result<(), fjall::Error> {
        let mut batch = self.db.batch();
        let (a, b) = (entry_key(group, 0), entry_key(group, u64::MAX));
        for guard in self.log.range(a..=b) {
            batch.remove(&self.log, guard.key()?);
        }
        for what in [VOTE, COMMITTED, PURGED] {
            batch.remove(&self.state, state_key(group, what));
        }
        batch.commit()?;
        self.db.persist(PersistMode::SyncAll)
    }

    /// The log of one group, whose state machine is `store`.
    pub fn group(self: &Arc<Self>, group: u32, store: Store) -> LogStore {
        LogStore {
            db: self.clone(),
            group,
            store,
        }
    }

    fn get_state<T: serde::de::DeserializeOwned>(
        &self,
        group: u32,
        what: u8,
    ) -> SResult<Option<T>> {
        match self.state.get(state_key(group, what)).map_err(read_err)? {
            None => Ok(None),
            Some(v) => bincode::deserialize(&v).map(Some).map_err(read_err),
        }
    }

    fn put_state<T: serde::Serialize>(&self, group: u32, what: u8, v: &T) -> SResult<()> {
        let bytes = bincode::serialize(v).map_err(write_err)?;
        self.state
            .insert(state_key(group, what), bytes)
            .map_err(write_err)
    }
}

/// One group's view of the log database.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<RaftDb>,
    group: u32,
    /// The store the group applies to: the log is never cut past what it
    /// holds.
    store: Store,
}

/// How long a purge waits for the store to reach the purge point.
const PURGE_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

impl LogStore {
    fn bounds(&self, range: impl RangeBounds<u64>) -> ([u8; 12], [u8; 12]) {
        let from = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let to = match range.end_bound() {
            Bound::Included(&i) => i.saturating_add(1),
            Bound::Excluded(&i) => i,
            Bound::Unbounded => u64::MAX,
        };
        (
            entry_key(self.group, from),
            entry_key(self.group, to.max(from)),
        )
    }

    fn remove_range(&self, range: impl RangeBounds<u64>) -> SResult<()> {
        let (a, b) = self.bounds(range);
        let mut batch = self.db.db.batch();
        for guard in self.db.log.range(a..b) {
            let k = guard.key().map_err(write_err)?;
            batch.remove(&self.db.log, k);
        }
        batch.commit().map_err(write_err)
    }
}

impl RaftLogReader<RaftTypes> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> SResult<Vec<Entry>> {
        let (a, b) = self.bounds(range);
        let mut out = Vec::new();
        for guard in self.db.log.range(a..b) {
            let (_, v) = guard.into_inner().map_err(read_err)?;
            out.push(bincode::deserialize(&v).map_err(read_err)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<RaftTypes> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> SResult<LogState<RaftTypes>> {
        let purged: Option<LogId> = self.db.get_state(self.group, PURGED)?;
        let (a, b) = self.bounds(..);
        let last = match self.db.log.range(a..b).next_back() {
            Some(guard) => {
                let (_, v) = guard.into_inner().map_err(read_err)?;
                let e: Entry = bincode::deserialize(&v).map_err(read_err)?;
                Some(e.log_id)
            }
            None => purged,
        };
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> SResult<()> {
        self.db.put_state(self.group, VOTE, vote)?;
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.db.persist(PersistMode::SyncAll))
            .await
            .map_err(write_err)?
            .map_err(|e| StorageIOError::write_vote(io_err(e)).into())
    }

    async fn read_vote(&mut self) -> SResult<Option<Vote<u64>>> {
        self.db.get_state(self.group, VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> SResult<()> {
        self.db.put_state(self.group, COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> SResult<Option<LogId>> {
        Ok(self
            .db
            .get_state::<Option<LogId>>(self.group, COMMITTED)?
            .flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<RaftTypes>) -> SResult<()>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut batch = self.db.db.batch();
        for e in entries {
            let bytes = bincode::serialize(&e).map_err(write_err)?;
            batch.insert(&self.db.log, entry_key(self.group, e.log_id.index), bytes);
        }
        batch.commit().map_err(write_err)?;
        if self.db.fsync.load(Ordering::Relaxed) == fsync_code(AppendFsync::Always) {
            // Concurrent appends of other groups share this fsync's cost.
            let db = self.db.clone();
            tokio::task::spawn_blocking(move || {
                let r = db
                    .db
                    .persist(PersistMode::SyncData)
                    .map_err(std::io::Error::other);
                callback.log_io_completed(r);
            });
        } else {
            // In the OS's hands, so a crash of this process loses nothing;
            // the everysec flusher fsyncs it.
            let r = self
                .db
                .db
                .persist(PersistMode::Buffer)
                .map_err(std::io::Error::other);
            callback.log_io_completed(r);
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> SResult<()> {
        self.remove_range(log_id.index..)
    }

    async fn purge(&mut self, log_id: LogId) -> SResult<()> {
        // Raft may purge what a snapshot covers while the snapshot is still
        // being installed. Entries are only discarded once the store holds
        // (and has logged) everything up to them, so a crash never leaves a
        // hole between the store's position and the log.
        let start = std::time::Instant::now();
        while applied_index(&self.store, self.group) < Some(log_id.index) {
            if start.elapsed() > PURGE_WAIT {
                tracing::warn!(
                    group = self.group,
                    upto = log_id.index,
                    "log purge skipped: the store has not reached it"
                );
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.sync_all())
            .await
            .map_err(write_err)?
            .map_err(write_err)?;
        self.db.put_state(self.group, PURGED, &log_id)?;
        self.remove_range(..=log_id.index)
    }
}
