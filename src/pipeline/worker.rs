//! One partition's aggregation worker.
//!
//! It reads its partition stream in order, checks each entry against the
//! event schema (a bad one goes to the dead-letter stream), feeds the
//! good ones to its [`Windows`], and after each batch commits, as one
//! MULTI/EXEC:
//!
//! - the points of the windows that closed (HSET into each series' ring);
//! - the dead letters;
//! - its state: the last entry read, the watermark's clock, and where the
//!   entries of the still-open windows begin;
//! - the consumer group's cursor (`XGROUP SETID`), the committed offset
//!   that `XINFO GROUPS` shows.
//!
//! Open windows are not stored. After a restart (a crash, `kill -9`, a
//! failover to another node) the worker reads its state and then the
//! entries from the first one of an open window up to the last committed
//! one again: exactly those of windows still open at the commit are
//! re-added, which rebuilds the state of that moment. Delivery is at
//! least once; the points are exactly once, since nothing that was
//! committed is counted twice and nothing uncommitted is lost.
//!
//! Two workers of one partition (a deposed leader's, briefly) can't both
//! commit: each commit WATCHes the state key and checks it still holds
//! this worker's last commit; the loser stops and starts over.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::event::{MetricEvent, Versioned};
use super::series;
use super::window::{Clock, EntryId, Offer, Windows};
use super::{PartitionStatus, Pipeline, GROUP};
use crate::commands::{dispatch, make_durable, Reply, Session};
use crate::node::{ClientHandle, Node};
use crate::storage::now_ms;

/// How long a caught-up worker waits for an XADD before looking again
/// anyway (for its idle clock and retention).
const IDLE_LOOK: Duration = Duration::from_secs(1);
/// Dead letters kept per partition (older ones are trimmed).
const DEAD_LETTERS_KEPT: usize = 100_000;
/// Series names remembered as indexed before the memory is cleared.
const KNOWN_SERIES: usize = 1_000_000;

/// What a commit persists.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct State {
    /// The worker that wrote it.
    owner: String,
    /// Last entry read.
    pos: String,
    /// Entries read.
    read: u64,
    /// First entry of an open window, and entries before it.
    replay_from: Option<(String, u64)>,
    /// Highest event time seen, ms.
    max_ts: Option<i64>,
    /// Watermark floor, ms.
    floor: i64,
    /// Late events per tenant.
    late: BTreeMap<String, u64>,
    /// Entries dead-lettered.
    dead: u64,
    /// Windows stored.
    windows: u64,
}

/// Why a worker stopped.
#[derive(Debug, thiserror::Error)]
enum WorkerError {
    /// Another worker committed to this partition.
    #[error("another worker took over the partition")]
    Fenced,
    /// A command failed.
    #[error("{0}")]
    Command(String),
    /// The state key holds something else.
    #[error("state key {key} is not a worker state: {why}")]
    BadState { key: String, why: String },
}

type Result<T> = std::result::Result<T, WorkerError>;

/// Runs partition `p`'s worker until `stop`, starting over after errors.
pub async fn run(node: Arc<Node>, p: usize, stop: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    while !stop.is_cancelled() {
        let outcome = match Worker::start(node.clone(), p).await {
            Ok(mut w) => {
                backoff = Duration::from_millis(100);
                node.pipeline.alive.lock().insert(p, now_ms());
                let worked = w.work(&stop).await;
                node.pipeline.alive.lock().remove(&p);
                worked
            }
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => break,
            Err(WorkerError::Fenced) => {
                tracing::info!(partition = p, "worker fenced off; starting over");
            }
            Err(e) => tracing::warn!(partition = p, error = %e, "worker stopped; starting over"),
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = stop.cancelled() => break,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
    node.pipeline.running.lock().remove(&p);
}

struct Worker {
    node: Arc<Node>,
    p: usize,
    session: Session,
    stream: Bytes,
    state_key: Bytes,
    windows: Windows,
    state: State,
    /// The state as last committed (what the state key must still hold).
    committed: Bytes,
    pos: EntryId,
    known: HashSet<super::event::SeriesId>,
    /// The consumer group exists.
    group_ready: bool,
    last_entry: Instant,
    last_trim: Instant,
}

fn b(s: impl Into<Bytes>) -> Bytes {
    s.into()
}

fn text(r: &Reply) -> Option<String> {
    match r {
        Reply::Bulk(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Reply::Simple(s) => Some((*s).to_string()),
        Reply::Status(s) | Reply::Verbatim(s) => Some(s.clone()),
        _ => None,
    }
}

/// A stream range reply's entries: id and field-value pairs.
fn entries(reply: Reply) -> Result<Vec<(EntryId, Vec<Bytes>)>> {
    let Reply::Array(items) = reply else {
        return match reply {
            Reply::Error(e) => Err(WorkerError::Command(e)),
            Reply::NilArray | Reply::Nil => Ok(Vec::new()),
            other => Err(WorkerError::Command(format!(
                "unexpected range reply {other:?}"
            ))),
        };
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Reply::Array(mut parts) = item else {
            continue;
        };
        if parts.len() != 2 {
            continue;
        }
        let fields = match parts.pop() {
            Some(Reply::Array(f)) => f
                .into_iter()
                .filter_map(|r| match r {
                    Reply::Bulk(b) => Some(b),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        let Some(id) = parts
            .pop()
            .as_ref()
            .and_then(text)
            .and_then(|s| EntryId::parse(&s))
        else {
            continue;
        };
        out.push((id, fields));
    }
    Ok(out)
}

fn pairs(fields: &[Bytes]) -> Vec<(&[u8], &[u8])> {
    fields
        .chunks_exact(2)
        .map(|kv| (kv[0].as_ref(), kv[1].as_ref()))
        .collect()
}

impl Worker {
    async fn call(&mut self, args: Vec<Bytes>) -> Reply {
        dispatch(&self.node, &mut self.session, &args).await
    }

    async fn ok(&mut self, args: Vec<Bytes>) -> Result<Reply> {
        match self.call(args).await {
            Reply::Error(e) => Err(WorkerError::Command(e)),
            r => Ok(r),
        }
    }

    /// Reads the last commit and rebuilds the open windows.
    async fn start(node: Arc<Node>, p: usize) -> Result<Worker> {
        let layout = &node.pipeline.layout;
        let (stream, state_key) = (layout.stream(p), layout.state(p));
        let handle = Arc::new(ClientHandle::new(
            0,
            format!("pipeline-{p}"),
            String::new(),
            2,
        ));
        let lateness = node.cfg.read().streams.allowed_lateness_secs as i64 * 1000;
        let mut w = Worker {
            session: {
                let mut s = Session::new(handle, true);
                s.internal = true;
                s
            },
            group_ready: false,
            stream: b(stream),
            state_key: b(state_key.clone()),
            windows: Windows::new(lateness, Clock::default()),
            state: State::default(),
            committed: Bytes::new(),
            pos: EntryId::default(),
            known: HashSet::new(),
            last_entry: Instant::now(),
            last_trim: Instant::now(),
            node,
            p,
        };
        let found = w.ok(vec![b("GET"), w.state_key.clone()]).await?;
        if let Reply::Bulk(raw) = found {
            w.state = serde_json::from_slice(&raw).map_err(|e| WorkerError::BadState {
                key: state_key.clone(),
                why: e.to_string(),
            })?;
            w.committed = raw;
        }
        w.pos = EntryId::parse(&w.state.pos).unwrap_or_default();
        w.windows = Windows::new(
            lateness,
            Clock {
                max_ts: w.state.max_ts,
                floor: w.state.floor,
            },
        );
        if let Some((from, mut read)) = w.state.replay_from.clone() {
            let mut start = from;
            loop {
                let batch = entries(
                    w.ok(vec![
                        b("XRANGE"),
                        w.stream.clone(),
                        b(start.clone()),
                        b(w.pos.to_string()),
                        b("COUNT"),
                        b("1000"),
                    ])
                    .await?,
                )?;
                let Some(last) = batch.last().map(|(id, _)| *id) else {
                    break;
                };
                for ((id, _), judged) in batch.iter().zip(w.judge(&batch).await?) {
                    if let Ok(ev) = judged {
                        w.windows.restore(*id, read, &ev);
                    }
                    read += 1;
                }
                start = format!("({last}");
            }
        }
        // Take the partition over: from here on, an older worker's commit
        // fails. (A partition that never had events gets its keys with its
        // first commit.)
        w.state.owner = format!("{}-{:x}", w.node.node_id, rand::random::<u64>());
        if !w.committed.is_empty() {
            w.group_ready = true;
            w.commit(Vec::new(), Vec::new()).await?;
        }
        tracing::info!(
            partition = p,
            committed = %w.pos,
            open_windows = w.windows.open_windows(),
            "aggregation worker started"
        );
        Ok(w)
    }

    async fn work(&mut self, stop: &CancellationToken) -> Result<()> {
        loop {
            if stop.is_cancelled() {
                return Ok(());
            }
            let batch_size = self.node.cfg.read().streams.worker_batch;
            // In line for the stream before looking, so an XADD between the
            // look and the wait still wakes this worker.
            let node = self.node.clone();
            let waiting = node.waiters.wait_internal(vec![(0, self.stream.to_vec())]);
            let batch = entries(
                self.ok(vec![
                    b("XRANGE"),
                    self.stream.clone(),
                    b(format!("({}", self.pos)),
                    b("+"),
                    b("COUNT"),
                    b(batch_size.to_string()),
                ])
                .await?,
            )?;
            if batch.is_empty() {
                self.idle().await?;
                if self.last_trim.elapsed() > Duration::from_secs(10) {
                    self.trim().await?;
                }
                tokio::select! {
                    () = waiting.slot.ready.notified() => {}
                    () = tokio::time::sleep(IDLE_LOOK) => {}
                    () = stop.cancelled() => return Ok(()),
                }
                continue;
            }
            drop(waiting);
            let node = self.node.clone();
            let _permit = node.pipeline.pool.acquire().await;
            if !self.group_ready {
                let created = self
                    .call(vec![
                        b("XGROUP"),
                        b("CREATE"),
                        self.stream.clone(),
                        b(GROUP),
                        b("0"),
                    ])
                    .await;
                match created {
                    Reply::Error(e) if !e.starts_with("BUSYGROUP") => {
                        return Err(WorkerError::Command(e))
                    }
                    _ => self.group_ready = true,
                }
            }
            self.last_entry = Instant::now();
            let mut dead = Vec::new();
            let judged = self.judge(&batch).await?;
            for ((id, fields), judged) in batch.into_iter().zip(judged) {
                let read = self.state.read;
                self.state.read += 1;
                self.pos = id;
                match judged {
                    Ok(ev) => {
                        if self.windows.offer(id, read, &ev) == Offer::Late {
                            Pipeline::count(&self.node.pipeline.counters.late, 1);
                        }
                    }
                    Err(why) => dead.push((id, why, fields)),
                }
            }
            let closed = self.windows.close();
            self.commit(closed, dead).await?;
        }
    }

    /// Checks each entry of a batch against the event schema and, for
    /// entries that name one, the registered schema version they name. A
    /// version that can't be read now (no quorum) stops the worker rather
    /// than dead-lettering entries that are fine.
    async fn judge(
        &mut self,
        batch: &[(EntryId, Vec<Bytes>)],
    ) -> Result<Vec<std::result::Result<MetricEvent, String>>> {
        let mut versions = BTreeMap::new();
        for (_, fields) in batch {
            if let Ok(Some(v)) = Versioned::of(&pairs(fields)) {
                versions.entry((v.topic, v.version)).or_insert(None);
            }
        }
        let node = self.node.clone();
        for ((topic, version), compiled) in versions.iter_mut() {
            let found = node
                .pipeline
                .schemas
                .version(&node, &mut self.session, topic, *version)
                .await
                .map_err(|e| WorkerError::Command(e.to_string()))?;
            *compiled = Some(found);
        }
        let check = |topic: &str, version: u32, event: &serde_json::Value| match versions
            .get(&(topic.to_string(), version))
        {
            Some(Some(found)) => match found.as_ref() {
                Ok(compiled) => compiled.check(event),
                Err(why) => Err(why.clone()),
            },
            _ => Err(format!(
                "schema version {version} of topic '{topic}' was not loaded"
            )),
        };
        Ok(batch
            .iter()
            .map(|(id, fields)| MetricEvent::from_entry(&pairs(fields), id.ms as i64, check))
            .collect())
    }

    /// Lets a quiet partition's watermark run on with the wall clock.
    async fn idle(&mut self) -> Result<()> {
        let after = self.node.cfg.read().streams.idle_advance_secs;
        let quiet = self.last_entry.elapsed();
        if after == 0 || quiet < Duration::from_secs(after) {
            return Ok(());
        }
        let closed = self.windows.advance_idle(quiet.as_millis() as i64);
        if closed.is_empty() {
            return Ok(());
        }
        self.commit(closed, Vec::new()).await
    }

    /// Deletes entries past retention, never one a restart would need.
    /// `XTRIM <stream> <strategy> <threshold>`.
    async fn xtrim(&mut self, strategy: &'static str, threshold: u64) -> Result<()> {
        let args = vec![
            b("XTRIM"),
            self.stream.clone(),
            b(strategy),
            b(threshold.to_string()),
        ];
        self.ok(args).await.map(|_| ())
    }

    async fn trim(&mut self) -> Result<()> {
        self.last_trim = Instant::now();
        let (age, max_len) = {
            let c = self.node.cfg.read();
            (
                c.streams.log_retention_secs,
                c.streams.log_retention_max_len,
            )
        };
        let keep_from = self
            .windows
            .replay_from()
            .map_or(self.pos, |(id, _)| id.min(self.pos));
        if age > 0 {
            let cut = (now_ms().saturating_sub(age * 1000)).min(keep_from.ms);
            self.xtrim("MINID", cut).await?;
        }
        if max_len > 0 {
            let keep_read = self
                .windows
                .replay_from()
                .map_or(self.state.read, |(_, r)| r);
            let info = self
                .ok(vec![b("XINFO"), b("STREAM"), self.stream.clone()])
                .await?;
            let added = info_field(&info, "entries-added").unwrap_or(0);
            let needed = added.saturating_sub(keep_read);
            let keep = max_len.max(needed);
            self.xtrim("MAXLEN", keep).await?;
        }
        Ok(())
    }

    /// Commits closed windows, dead letters and the state as one unit.
    async fn commit(
        &mut self,
        closed: Vec<(super::event::SeriesId, super::window::Point)>,
        dead: Vec<(EntryId, String, Vec<Bytes>)>,
    ) -> Result<()> {
        let (slots, node) = (
            self.node.cfg.read().streams.retention_slots,
            self.node.clone(),
        );
        let layout = &node.pipeline.layout;
        // Series expire a day after their ring's span without a write.
        let ttl_ms = (i64::from(slots) * series::STEP + 86_400) * 1000;
        let mut cmds: Vec<Vec<Bytes>> = Vec::with_capacity(closed.len() * 2 + dead.len() + 2);
        let mut new_series = Vec::new();
        for (s, point) in &closed {
            let key = b(layout.series(s));
            cmds.push(vec![
                b("HSET"),
                key.clone(),
                b(series::slot_field(point.ts, slots)),
                b(series::encode(point)),
            ]);
            cmds.push(vec![b("PEXPIRE"), key, b(ttl_ms.to_string())]);
            if !self.known.contains(s) {
                let index = b(layout.metric_index(&s.tenant, &s.server_id));
                cmds.push(vec![b("SADD"), index.clone(), b(s.metric.clone())]);
                cmds.push(vec![b("PEXPIRE"), index, b(ttl_ms.to_string())]);
                new_series.push(s.clone());
            }
        }
        for (id, why, fields) in &dead {
            let mut cmd = vec![
                b("XADD"),
                b(layout.dead(self.p)),
                b("MAXLEN"),
                b("~"),
                b(DEAD_LETTERS_KEPT.to_string()),
                b("*"),
                b("error"),
                b(why.clone()),
                b("entry"),
                b(id.to_string()),
            ];
            cmd.extend(fields.iter().cloned());
            if fields.len() % 2 == 1 {
                cmd.push(Bytes::new());
            }
            cmds.push(cmd);
        }
        let mut next = self.state.clone();
        let clock = self.windows.clock();
        next.pos = self.pos.to_string();
        next.max_ts = clock.max_ts;
        next.floor = clock.floor;
        next.replay_from = self
            .windows
            .replay_from()
            .map(|(id, read)| (id.to_string(), read));
        let late = self.windows.take_late();
        for (tenant, n) in &late {
            *next.late.entry(tenant.clone()).or_default() += n;
        }
        next.dead += dead.len() as u64;
        next.windows += closed.len() as u64;
        let raw = b(serde_json::to_vec(&next).map_err(|e| WorkerError::Command(e.to_string()))?);
        cmds.push(vec![b("SET"), self.state_key.clone(), raw.clone()]);
        cmds.push(vec![
            b("XGROUP"),
            b("SETID"),
            self.stream.clone(),
            b(GROUP),
            b(self.pos.to_string()),
            b("ENTRIESREAD"),
            b(next.read.to_string()),
        ]);

        self.ok(vec![b("WATCH"), self.state_key.clone()]).await?;
        let now = self.ok(vec![b("GET"), self.state_key.clone()]).await?;
        let unchanged = match &now {
            Reply::Bulk(v) => *v == self.committed,
            Reply::Nil => self.committed.is_empty(),
            _ => false,
        };
        if !unchanged {
            let _ = self.call(vec![b("UNWATCH")]).await;
            return Err(WorkerError::Fenced);
        }
        self.ok(vec![b("MULTI")]).await?;
        for cmd in cmds {
            if let Reply::Error(e) = self.call(cmd).await {
                let _ = self.call(vec![b("DISCARD")]).await;
                return Err(WorkerError::Command(e));
            }
        }
        match self.call(vec![b("EXEC")]).await {
            Reply::Array(results) => {
                for r in &results {
                    if let Reply::Error(e) = r {
                        // A series key some client overwrote with another
                        // type: the rest of the commit stands.
                        tracing::warn!(partition = self.p, error = %e, "a commit command failed");
                    }
                }
            }
            Reply::NilArray | Reply::Nil => return Err(WorkerError::Fenced),
            Reply::Error(e) => return Err(WorkerError::Command(e)),
            other => return Err(WorkerError::Command(format!("EXEC answered {other:?}"))),
        }
        // Durable before it counts as committed, so a restart resumes from
        // here rather than redoing the work.
        if let Some(lsn) = self.session.pending_lsn.take() {
            make_durable(&self.node.store, lsn)
                .await
                .map_err(|e| WorkerError::Command(e.to_string()))?;
        }
        self.committed = raw;
        self.state = next;
        if self.known.len() > KNOWN_SERIES {
            self.known.clear();
        }
        self.known.extend(new_series);
        self.node
            .pipeline
            .note_series(closed.iter().map(|(s, _)| s));
        let c = &self.node.pipeline.counters;
        Pipeline::count(&c.windows, closed.len() as u64);
        Pipeline::count(&c.dead, dead.len() as u64);
        self.node.pipeline.running.lock().insert(
            self.p,
            PartitionStatus {
                partition: self.p,
                committed: self.state.pos.clone(),
                read: self.state.read,
                watermark_ms: (self.windows.watermark() != i64::MIN)
                    .then(|| self.windows.watermark()),
                open_windows: self.windows.open_windows(),
                committed_at: now_ms(),
            },
        );
        Ok(())
    }
}

/// A numeric field of an XINFO STREAM reply.
pub fn info_field(info: &Reply, name: &str) -> Option<u64> {
    let items: Vec<(&Reply, &Reply)> = match info {
        Reply::Map(m) => m.iter().map(|(k, v)| (k, v)).collect(),
        Reply::Array(a) => a.chunks_exact(2).map(|kv| (&kv[0], &kv[1])).collect(),
        _ => return None,
    };
    items.into_iter().find_map(|(k, v)| match (text(k), v) {
        (Some(k), Reply::Int(n)) if k == name => u64::try_from(*n).ok(),
        _ => None,
    })
}
