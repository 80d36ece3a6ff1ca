//! Shards read out for a cluster backup: the leader of each shard dumps
//! its slots at one Raft index (the dump a follower that fell behind
//! receives), and the node taking the backup pulls it in chunks.
//!
//! ```text
//! backup node ── open(group) ──> shard leader: read barrier, dump of its slots at its applied index
//!             <── id, index, term, bytes
//!             ── read(id, offset) ... ──> chunks of the dump
//!             ── close(id) ──> the dump is dropped (also after SESSION_IDLE unused)
//! ```

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::types::{PeerNode, PeerRequest};
use super::{Cluster, ClusterError, QUORUM_WAIT};

/// Bytes pulled per request.
const CHUNK: u64 = 4 << 20;

/// A dump nobody read for this long is dropped.
const SESSION_IDLE: Duration = Duration::from_secs(120);

/// One shard's dump, as its leader made it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardDump {
    /// The dump's handle on the leader.
    pub id: u64,
    /// The Raft index the dump holds every write up to.
    pub index: u64,
    /// The term of that entry.
    pub term: u64,
    /// The dump's size.
    pub bytes: u64,
}

/// A request about a dump, answered by the shard's leader.
#[derive(Debug, Serialize, Deserialize)]
pub enum DumpRequest {
    /// Dump `group`'s slots now (answered with a [`ShardDump`]).
    Open(u32),
    /// Up to `len` bytes of dump `id` from `offset`.
    Read {
        /// The dump.
        id: u64,
        /// Where to start.
        offset: u64,
        /// Most bytes wanted.
        len: u64,
    },
    /// Done with dump `id`.
    Close(u64),
}

struct Open {
    file: Arc<std::fs::File>,
    used: Instant,
}

/// Dumps being read by backup nodes.
#[derive(Default)]
pub struct Dumps {
    open: Mutex<HashMap<u64, Open>>,
}

/// One record of a dump: database, key, encoded record.
pub type DumpRecord = (usize, Vec<u8>, Vec<u8>);

/// The next record of a shard dump, or None at its end.
pub fn next_record(data: &mut impl Read) -> Result<Option<DumpRecord>, String> {
    super::state_machine::read_record(data)
}

impl Cluster {
    /// Answers a dump request as the shard's leader.
    pub(super) async fn serve_dump(&self, req: DumpRequest) -> Result<Bytes, String> {
        match req {
            DumpRequest::Open(group) => {
                let dump = self.open_dump(group).await.map_err(|e| e.to_string())?;
                bincode::serialize(&dump)
                    .map(Bytes::from)
                    .map_err(|e| e.to_string())
            }
            DumpRequest::Read { id, offset, len } => {
                let file = {
                    let mut open = self.dumps.open.lock();
                    let o = open.get_mut(&id).ok_or_else(|| {
                        format!("no dump {id:x} here (dropped after {SESSION_IDLE:?} unused?)")
                    })?;
                    o.used = Instant::now();
                    o.file.clone()
                };
                let len = len.min(CHUNK) as usize;
                tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0u8; len];
                    let mut got = 0;
                    while got < len {
                        match file.read_at(&mut buf[got..], offset + got as u64) {
                            Ok(0) => break,
                            Ok(n) => got += n,
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                            Err(e) => return Err(e.to_string()),
                        }
                    }
                    buf.truncate(got);
                    Ok(Bytes::from(buf))
                })
                .await
                .map_err(|e| e.to_string())?
            }
            DumpRequest::Close(id) => {
                self.dumps.open.lock().remove(&id);
                Ok(Bytes::new())
            }
        }
    }

    /// As `group`'s leader: dumps its slots at the index it has applied
    /// after confirming its leadership, so the dump holds every write
    /// acknowledged before the request.
    async fn open_dump(&self, group: u32) -> Result<ShardDump, ClusterError> {
        self.read_barrier(group).await?;
        let raft = self.raft_of(group).ok_or(ClusterError::NotLeader {
            group,
            leader: None,
        })?;
        let snap = raft
            .get_snapshot()
            .await
            .map_err(|e| ClusterError::Peer(e.to_string()))?;
        let (file, index, term) = match snap {
            Some(s) => {
                let at = s.meta.last_log_id;
                (
                    s.snapshot.into_std().await,
                    at.map_or(0, |l| l.index),
                    at.map_or(0, |l| l.leader_id.term),
                )
            }
            None => {
                // Nothing applied yet: an empty dump.
                let f = super::state_machine::scratch_file(&self.snap_dir)
                    .map_err(|e| ClusterError::Peer(e.to_string()))?;
                (f, 0, 0)
            }
        };
        let bytes = file
            .metadata()
            .map_err(|e| ClusterError::Peer(e.to_string()))?
            .len();
        let id = rand::random::<u64>();
        let mut open = self.dumps.open.lock();
        open.retain(|_, o| o.used.elapsed() < SESSION_IDLE);
        open.insert(
            id,
            Open {
                file: Arc::new(file),
                used: Instant::now(),
            },
        );
        Ok(ShardDump {
            id,
            index,
            term,
            bytes,
        })
    }

    /// Pulls a dump of shard `group` from its leader into `out`.
    pub async fn dump_shard(
        &self,
        group: u32,
        out: &mut (impl Write + Send),
    ) -> Result<ShardDump, ClusterError> {
        let leader = self
            .shard_leader_by_group(group)
            .ok_or(ClusterError::NotLeader {
                group,
                leader: None,
            })?;
        let at = (leader.0 != self.id).then_some(leader.1);
        let opened = self.dump_call(&at, DumpRequest::Open(group)).await?;
        let dump: ShardDump =
            bincode::deserialize(&opened).map_err(|e| ClusterError::Peer(e.to_string()))?;
        let mut offset = 0;
        let pulled = async {
            while offset < dump.bytes {
                let chunk = self
                    .dump_call(
                        &at,
                        DumpRequest::Read {
                            id: dump.id,
                            offset,
                            len: CHUNK,
                        },
                    )
                    .await?;
                if chunk.is_empty() {
                    return Err(ClusterError::Peer(format!(
                        "shard {group}'s dump ended at {offset} of {} bytes",
                        dump.bytes
                    )));
                }
                out.write_all(&chunk)
                    .map_err(|e| ClusterError::Peer(e.to_string()))?;
                offset += chunk.len() as u64;
            }
            Ok(())
        }
        .await;
        let _ = self.dump_call(&at, DumpRequest::Close(dump.id)).await;
        pulled.map(|()| dump)
    }

    /// Sends a dump request to `at` (None: this node).
    async fn dump_call(
        &self,
        at: &Option<PeerNode>,
        req: DumpRequest,
    ) -> Result<Bytes, ClusterError> {
        match at {
            None => self.serve_dump(req).await.map_err(ClusterError::Peer),
            Some(peer) => {
                let msg = bincode::serialize(&PeerRequest::Dump(req))
                    .map_err(|e| ClusterError::Peer(e.to_string()))?;
                self.peers
                    .call(&peer.cluster, &msg, QUORUM_WAIT + Duration::from_secs(55))
                    .await
                    .map_err(|e| ClusterError::Peer(e.to_string()))
            }
        }
    }
}
