//! Crash recovery: a child process writes with `appendfsync always` and is
//! killed with SIGKILL mid-stream. Every write it acknowledged is there
//! after reopening.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use crate::storage_common::{config, get_str, string};
use strata::storage::{
    AppendFsync, Change, Pending, Record, Store, StreamId, StreamOp, Value, Version,
};

const CHILD_ENV: &str = "STRATA_RECOVERY_CHILD_DIR";
const ROUND_ENV: &str = "STRATA_RECOVERY_ROUND";

/// The queue after writes `0..n`: write i pushes `q{i}` at the tail and,
/// every third write, also pops the head, in one change.
fn queue_after(n: u64) -> Vec<Vec<u8>> {
    let mut q = std::collections::VecDeque::new();
    for i in 0..n {
        q.push_back(format!("q{i}").into_bytes());
        if i % 3 == 2 {
            q.pop_front();
        }
    }
    q.into()
}

/// The set after writes `0..n`: write i adds `s{i}` and, every fourth
/// write, removes `s{i-2}`, in one change.
fn set_after(n: u64) -> std::collections::BTreeSet<Vec<u8>> {
    let mut s = std::collections::BTreeSet::new();
    for i in 0..n {
        s.insert(format!("s{i}").into_bytes());
        if i % 4 == 3 {
            s.remove(format!("s{}", i - 2).as_bytes());
        }
    }
    s
}

/// The sorted set after writes `0..n`: write i adds `r{i}` with score
/// `i*7 % 1000`, every fifth write rescores `r{i-3}` to `-i`, every sixth
/// removes `r{i-1}`.
fn zset_after(n: u64) -> std::collections::BTreeMap<Vec<u8>, f64> {
    let mut z = std::collections::BTreeMap::new();
    for i in 0..n {
        for (m, score) in zset_step(i).0 {
            z.insert(m, score);
        }
        for m in zset_step(i).1 {
            z.remove(&m);
        }
    }
    z
}

/// Members set with their scores, and members removed.
type ZsetStep = (Vec<(Vec<u8>, f64)>, Vec<Vec<u8>>);

/// What write i sets and removes in the sorted set.
fn zset_step(i: u64) -> ZsetStep {
    let mut set = vec![(format!("r{i}").into_bytes(), (i * 7 % 1000) as f64)];
    if i % 5 == 4 {
        set.push((format!("r{}", i - 3).into_bytes(), -(i as f64)));
    }
    let removed = if i % 6 == 5 {
        vec![format!("r{}", i - 1).into_bytes()]
    } else {
        vec![]
    };
    (set, removed)
}

/// Write i of the block sets this byte to this value.
fn block_step(i: u64) -> (usize, u8) {
    ((i * 7 % 64) as usize, (i % 251) as u8 + 1)
}

fn block_after(n: u64) -> Vec<u8> {
    let mut v = vec![0u8; 64];
    for i in 0..n {
        let (at, byte) = block_step(i);
        v[at] = byte;
    }
    v
}

/// Whether `actual` is the state after some number of writes from
/// `acked` to `progress`.
fn settled<T: PartialEq>(actual: &T, acked: u64, progress: u64, after: impl Fn(u64) -> T) -> bool {
    (acked..=progress).any(|n| *actual == after(n))
}

fn journal_after(n: u64) -> Vec<u8> {
    (0..n).flat_map(|i| format!("<{i}>").into_bytes()).collect()
}

fn value(i: u64) -> Vec<u8> {
    format!("value-{i}-{}", "x".repeat((i % 50) as usize)).into_bytes()
}

/// The child: writes forever, printing each key once its write is durable.
#[test]
fn child_writer() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut cfg = config(std::path::Path::new(&dir), 8 << 20);
    cfg.appendfsync = AppendFsync::Always;
    cfg.checkpoint_interval_secs = 1;
    let store = Store::open(cfg).expect("open");
    let mut out = std::io::stdout().lock();
    for i in 0u64.. {
        let w = store
            .put(0, format!("k{i}").as_bytes(), string(&value(i), None))
            .expect("put");
        store.sync(w.lsn.expect("lsn")).expect("sync");
        // A field of one growing hash, logged as a field delta.
        let field: Box<[u8]> = format!("f{i}").into_bytes().into();
        let w = store
            .write_change(0, b"features", |cur| {
                let rec = cur.get_or_insert_with(|| Record {
                    value: Value::Hash(Box::default()),
                    expire_at_ms: None,
                    version: Version::default(),
                    written_secs: 0,
                });
                if let Value::Hash(map) = &mut rec.value {
                    map.insert(field.clone(), value(i).into());
                }
                (
                    (),
                    Change::Fields {
                        set: vec![field],
                        removed: vec![],
                    },
                )
            })
            .expect("hash field");
        store.sync(w.lsn.expect("lsn")).expect("sync");
        // A queue: pushes and pops are logged as list-end deltas.
        let queue = format!("queue{}", std::env::var(ROUND_ENV).unwrap_or_default());
        let w = store
            .write_change(0, queue.as_bytes(), |cur| {
                let rec = cur.get_or_insert_with(|| Record {
                    value: Value::List(Box::default()),
                    expire_at_ms: None,
                    version: Version::default(),
                    written_secs: 0,
                });
                let Value::List(list) = &mut rec.value else {
                    unreachable!("queue is a list")
                };
                let popped = if i % 3 == 2 {
                    list.pop_front();
                    1
                } else {
                    0
                };
                list.push_back(format!("q{i}").into_bytes().into());
                list.stamp();
                let change = if i == 0 {
                    Change::Full
                } else {
                    Change::ListEnds {
                        popped_front: popped,
                        popped_back: 0,
                        pushed_front: 0,
                        pushed_back: 1,
                    }
                };
                ((), change)
            })
            .expect("queue");
        store.sync(w.lsn.expect("lsn")).expect("sync");
        // A set and a sorted set: adds, removes and rescores are logged as
        // member deltas.
        let w = store
            .write_change(0, b"seen", |cur| {
                let rec = cur.get_or_insert_with(|| Record::new(Value::Set(Box::default())));
                let Value::Set(set) = &mut rec.value else {
                    unreachable!("seen is a set")
                };
                let added: Box<[u8]> = format!("s{i}").into_bytes().into();
                set.insert(added.clone());
                let mut removed = vec![];
                if i % 4 == 3 {
                    let gone: Box<[u8]> = format!("s{}", i - 2).into_bytes().into();
                    set.remove(&gone);
                    removed.push(gone);
                }
                let change = Change::Fields {
                    set: vec![added],
                    removed,
                };
                ((), change)
            })
            .expect("set");
        store.sync(w.lsn.expect("lsn")).expect("sync");
        let w = store
            .write_change(0, b"ranked", |cur| {
                let rec = cur.get_or_insert_with(|| Record::new(Value::ZSet(Box::default())));
                let Value::ZSet(z) = &mut rec.value else {
                    unreachable!("ranked is a sorted set")
                };
                let (set, removed) = zset_step(i);
                for (m, score) in &set {
                    z.insert(m, *score);
                }
                for m in &removed {
                    z.remove(m);
                }
                let change = Change::Fields {
                    set: set.into_iter().map(|(m, _)| m.into()).collect(),
                    removed: removed.into_iter().map(Into::into).collect(),
                };
                ((), change)
            })
            .expect("zset");
        store.sync(w.lsn.expect("lsn")).expect("sync");
        // A stream with a consumer group: each write appends an entry and
        // delivers it; every other write acknowledges the one before.
        let w = store
            .write_change(0, b"events", |cur| {
                let rec = cur.get_or_insert_with(|| Record::new(Value::Stream(Box::default())));
                let Value::Stream(st) = &mut rec.value else {
                    unreachable!("events is a stream")
                };
                let id = StreamId { ms: i + 1, seq: 0 };
                let fields = vec![Box::from(&b"n"[..]), value(i).into()].into_boxed_slice();
                let mut ops = vec![
                    StreamOp::Add(id, fields),
                    StreamOp::Meta {
                        last_id: id,
                        entries_added: i + 1,
                        max_deleted: StreamId::MIN,
                    },
                    StreamOp::GroupCursor(b"g"[..].into(), id, Some(i + 1)),
                    StreamOp::PendingSet(
                        b"g"[..].into(),
                        id,
                        Pending {
                            consumer: b"c"[..].into(),
                            delivered_ms: 1,
                            deliveries: 1,
                        },
                    ),
                ];
                if i % 2 == 1 {
                    ops.push(StreamOp::PendingDel(
                        b"g"[..].into(),
                        StreamId { ms: i, seq: 0 },
                    ));
                }
                for op in &ops {
                    st.apply(op.clone());
                }
                let change = if i == 0 {
                    Change::Full
                } else {
                    Change::Stream(ops)
                };
                ((), change)
            })
            .expect("stream");
        store.sync(w.lsn.expect("lsn")).expect("sync");
        // Strings edited in place, logged as byte ranges: an append-only
        // journal and a fixed-size block patched one byte at a time.
        let entry = format!("<{i}>").into_bytes();
        let round = std::env::var(ROUND_ENV).unwrap_or_default();
        let w = store
            .write_change(0, format!("journal{round}").as_bytes(), |cur| {
                let rec = cur.get_or_insert_with(|| Record::new(Value::Str(Vec::new())));
                let Value::Str(v) = &mut rec.value else {
                    unreachable!("journal is a string")
                };
                let offset = v.len();
                v.extend_from_slice(&entry);
                let change = if i == 0 {
                    Change::Full
                } else {
                    Change::Range {
                        offset,
                        len: entry.len(),
                    }
                };
                ((), change)
            })
            .expect("journal");
        store.sync(w.lsn.expect("lsn")).expect("sync");
        let w = store
            .write_change(0, format!("block{round}").as_bytes(), |cur| {
                let rec = cur.get_or_insert_with(|| Record::new(Value::Str(vec![0; 64])));
                let Value::Str(v) = &mut rec.value else {
                    unreachable!("block is a string")
                };
                let (at, byte) = block_step(i);
                v[at] = byte;
                let change = if i == 0 {
                    Change::Full
                } else {
                    Change::Range { offset: at, len: 1 }
                };
                ((), change)
            })
            .expect("block");
        store.sync(w.lsn.expect("lsn")).expect("sync");
        // Two keys written as one unit (a multi-key command's writes).
        let ((), lsn) = store.atomic(|| {
            for side in ["a", "b"] {
                store
                    .put(1, format!("{side}{i}").as_bytes(), string(&value(i), None))
                    .expect("put pair");
            }
        });
        store.sync(lsn.expect("lsn")).expect("sync");
        writeln!(out, "ACK {i}").expect("stdout");
        out.flush().expect("flush");
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    for round in 0..2 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "recover_after_kill::child_writer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .env(ROUND_ENV, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        let mut acked = 0u64;
        let target = 3000 * (round + 1);
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("read child");
            if let Some(n) = line.strip_prefix("ACK ") {
                acked = n.parse::<u64>().expect("ack number") + 1;
                if acked >= target {
                    break;
                }
            }
        }
        // SIGKILL: no destructor, no final checkpoint.
        child.kill().expect("kill");
        child.wait().expect("wait");
        assert!(acked >= target, "child acknowledged only {acked} writes");

        let store = Store::open(config(dir.path(), 8 << 20)).expect("reopen after kill");
        for i in 0..acked {
            assert_eq!(
                get_str(&store, 0, format!("k{i}").as_bytes()),
                Some(value(i)),
                "acknowledged k{i} lost"
            );
        }
        assert!(store.dbsize(0) > acked);
        // The child may have finished writes after the last one read as
        // acknowledged before the kill landed: each structure must be in
        // the state of some write count between the acknowledged one and
        // the first write whose key never landed.
        let progress = (acked..)
            .find(|i| get_str(&store, 0, format!("k{i}").as_bytes()).is_none())
            .expect("a write that never happened");

        let fields = store
            .read(0, b"features", Default::default(), |r| match r {
                Some((
                    Record {
                        value: Value::Hash(map),
                        ..
                    },
                    _,
                )) => map.clone(),
                other => panic!("features hash lost: {other:?}"),
            })
            .expect("read hash");
        for i in 0..acked {
            assert_eq!(
                fields.get(format!("f{i}").as_bytes()).map(|v| v.to_vec()),
                Some(value(i)),
                "field f{i} lost"
            );
        }
        let queue: Vec<Vec<u8>> = store
            .read(
                0,
                format!("queue{round}").as_bytes(),
                Default::default(),
                |r| match r {
                    Some((
                        Record {
                            value: Value::List(list),
                            ..
                        },
                        _,
                    )) => list.iter().map(<[u8]>::to_vec).collect(),
                    other => panic!("queue lost: {other:?}"),
                },
            )
            .expect("read queue");
        // Pairs are whole: acknowledged ones present, the next one
        // present on both sides or on neither.
        for i in 0..=acked {
            let a = get_str(&store, 1, format!("a{i}").as_bytes());
            let b = get_str(&store, 1, format!("b{i}").as_bytes());
            assert_eq!(a.is_some(), b.is_some(), "pair {i} torn");
            assert!(i == acked || a.is_some(), "pair {i} lost");
        }
        let journal =
            get_str(&store, 0, format!("journal{round}").as_bytes()).expect("journal lost");
        assert!(
            settled(&journal, acked, progress, journal_after),
            "journal after {acked} writes is {} bytes",
            journal.len()
        );
        let block = get_str(&store, 0, format!("block{round}").as_bytes()).expect("block lost");
        assert!(settled(&block, acked, progress, block_after));
        let seen = store
            .read(0, b"seen", Default::default(), |r| match r {
                Some((
                    Record {
                        value: Value::Set(set),
                        ..
                    },
                    _,
                )) => set
                    .iter()
                    .map(<[u8]>::to_vec)
                    .collect::<std::collections::BTreeSet<_>>(),
                other => panic!("set lost: {other:?}"),
            })
            .expect("read set");
        assert!(
            settled(&seen, acked, progress, set_after),
            "set after {acked} writes has {} members",
            seen.len()
        );
        let ranked = store
            .read(0, b"ranked", Default::default(), |r| match r {
                Some((
                    Record {
                        value: Value::ZSet(z),
                        ..
                    },
                    _,
                )) => z
                    .iter()
                    .map(|(m, s)| (m.to_vec(), s))
                    .collect::<std::collections::BTreeMap<_, _>>(),
                other => panic!("sorted set lost: {other:?}"),
            })
            .expect("read sorted set");
        assert!(
            settled(&ranked, acked, progress, zset_after),
            "sorted set after {acked} writes has {} members",
            ranked.len()
        );
        let (entries, pending, cursor) = store
            .read(0, b"events", Default::default(), |r| match r {
                Some((
                    Record {
                        value: Value::Stream(st),
                        ..
                    },
                    _,
                )) => (
                    st.len() as u64,
                    st.groups[&b"g"[..]].pel.len() as u64,
                    st.groups[&b"g"[..]].last_delivered.ms,
                ),
                other => panic!("stream lost: {other:?}"),
            })
            .expect("read stream");
        // Write i delivers entry i+1 and, when i is odd, acknowledges
        // entry i: n writes leave n - n/2 pending.
        let pending_after = |n: u64| n - n / 2;
        assert!(
            settled(&(entries, cursor), acked, progress, |n| (n, n)),
            "stream after {acked} writes has {entries} entries, cursor {cursor}"
        );
        assert_eq!(
            pending,
            pending_after(entries),
            "pending entries after {entries} writes"
        );
        // The write after the last acknowledged one may have landed too.
        assert!(
            settled(&queue, acked, progress, queue_after),
            "queue{round} after {acked} writes has {} items, first {:?}",
            queue.len(),
            queue
                .first()
                .map(|v| String::from_utf8_lossy(v).into_owned())
        );
    }
}
