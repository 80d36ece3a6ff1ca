//! Large collections on disk in pieces: a change to a big stream or hash
//! writes the pieces it touched, not the key, and what is read back after
//! spills, deletions, type changes and reopenings equals a model.

use std::collections::BTreeMap;

use crate::storage_common::config;
use strata::storage::{
    Change, FieldMap, Fields, Record, StatsSnapshot, Store, StreamId, StreamOp, Value,
};

fn open(dir: &std::path::Path) -> Store {
    Store::open(config(dir, 256 << 20)).expect("open store")
}

fn fields(n: u64) -> Fields {
    vec![
        Box::from(&b"value"[..]),
        Box::from(format!("{n:0>40}").as_bytes()),
    ]
    .into_boxed_slice()
}

/// XADDs entries `ids` (ms parts) to stream `key`, and to the model.
fn xadd(s: &Store, key: &[u8], ids: impl Iterator<Item = u64>, model: &mut BTreeMap<u64, Fields>) {
    let ids: Vec<u64> = ids.collect();
    for chunk in ids.chunks(100) {
        s.write_change(0, key, |cur| {
            let rec = cur.get_or_insert_with(|| Record::new(Value::Stream(Box::default())));
            let Value::Stream(st) = &mut rec.value else {
                panic!("not a stream")
            };
            let mut ops = Vec::new();
            for &ms in chunk {
                let id = StreamId { ms, seq: 0 };
                st.insert(id, fields(ms));
                st.last_id = id;
                ops.push(StreamOp::Add(id, fields(ms)));
            }
            ops.push(st.meta_op());
            ((), Change::Stream(ops))
        })
        .expect("xadd");
        for &ms in chunk {
            model.insert(ms, fields(ms));
        }
    }
}

fn xdel(s: &Store, key: &[u8], ids: impl Iterator<Item = u64>, model: &mut BTreeMap<u64, Fields>) {
    let ids: Vec<u64> = ids.collect();
    s.write_change(0, key, |cur| {
        let Some(Record {
            value: Value::Stream(st),
            ..
        }) = cur
        else {
            panic!("no stream")
        };
        let mut ops = Vec::new();
        for &ms in &ids {
            let id = StreamId { ms, seq: 0 };
            if st.remove(id) {
                ops.push(StreamOp::Del(id));
            }
        }
        ((), Change::Stream(ops))
    })
    .expect("xdel");
    for ms in ids {
        model.remove(&ms);
    }
}

fn stream_of(s: &Store, key: &[u8]) -> BTreeMap<u64, Fields> {
    s.read(0, key, Default::default(), |r| match r {
        Some((
            Record {
                value: Value::Stream(st),
                ..
            },
            _,
        )) => st
            .entries
            .iter()
            .map(|(id, f)| (id.ms, f.clone()))
            .collect(),
        other => panic!("expected a stream, found {other:?}"),
    })
    .expect("read")
}

fn hset(s: &Store, key: &[u8], pairs: &[(String, String)]) {
    s.write_change(0, key, |cur| {
        let rec = cur.get_or_insert_with(|| Record::new(Value::Hash(Box::default())));
        let Value::Hash(map) = &mut rec.value else {
            panic!("not a hash")
        };
        let mut set = Vec::new();
        for (f, v) in pairs {
            map.insert(f.as_bytes().into(), v.as_bytes().into());
            set.push(f.as_bytes().into());
        }
        (
            (),
            Change::Fields {
                set,
                removed: vec![],
            },
        )
    })
    .expect("hset");
}

fn hash_of(s: &Store, key: &[u8]) -> Option<BTreeMap<String, String>> {
    s.read(0, key, Default::default(), |r| {
        r.map(|(rec, _)| match &rec.value {
            Value::Hash(map) => map
                .iter()
                .map(|(f, v)| {
                    (
                        String::from_utf8(f.to_vec()).unwrap(),
                        String::from_utf8(v.to_vec()).unwrap(),
                    )
                })
                .collect(),
            other => panic!("expected a hash, found {other:?}"),
        })
    })
    .expect("read")
}

/// What a checkpoint after `f` wrote to the disk tier.
fn written_by(s: &Store, f: impl FnOnce()) -> (u64, u64, u64) {
    let before: StatsSnapshot = s.stats();
    f();
    s.checkpoint().expect("checkpoint");
    let after = s.stats();
    (
        after.disk_write_bytes - before.disk_write_bytes,
        after.disk_pieces_written - before.disk_pieces_written,
        after.disk_layouts_written - before.disk_layouts_written,
    )
}

#[test]
fn a_big_stream_writes_only_its_tail_and_reads_back_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut model = BTreeMap::new();
    let mut s = open(dir.path());
    let (whole, pieces, layouts) = written_by(&s, || xadd(&s, b"log", 1..=20_000, &mut model));
    assert_eq!(layouts, 1, "laid out in pieces once");
    assert!(pieces >= 20_000 / 256, "{pieces} pieces for 20,000 entries");
    // Ten more entries: the tail piece and the head, a sliver of the key.
    let (bytes, pieces, layouts) = written_by(&s, || xadd(&s, b"log", 20_001..=20_010, &mut model));
    assert_eq!(layouts, 0);
    assert!(pieces <= 2, "{pieces} pieces written for ten appends");
    assert!(
        bytes * 20 < whole,
        "{bytes} bytes written for ten appends to a {whole}-byte stream"
    );
    eprintln!("ten appends to a 20,000-entry stream wrote {bytes} of its {whole} bytes in {pieces} pieces");
    // Deleting in the middle touches the pieces around those entries.
    let (_, pieces, layouts) = written_by(&s, || xdel(&s, b"log", 5_000..5_100, &mut model));
    assert_eq!(layouts, 0);
    assert!(pieces <= 2, "{pieces} pieces for one run of deletions");
    // Trimming the head empties whole pieces; their keys go.
    let (_, _, layouts) = written_by(&s, || xdel(&s, b"log", 1..=3_000, &mut model));
    assert_eq!(layouts, 0);
    assert_eq!(stream_of(&s, b"log"), model);

    // On disk only: a change to the spilled stream, then a reopen.
    s.spill_all().expect("spill");
    xadd(&s, b"log", 20_011..=20_300, &mut model);
    s.spill_all().expect("spill");
    assert_eq!(stream_of(&s, b"log"), model);
    drop(s);
    s = open(dir.path());
    assert_eq!(stream_of(&s, b"log"), model);
    let meta = s
        .read(0, b"log", Default::default(), |r| match r {
            Some((
                Record {
                    value: Value::Stream(st),
                    ..
                },
                _,
            )) => (st.last_id, st.len()),
            _ => panic!("gone"),
        })
        .unwrap();
    assert_eq!(meta, (StreamId { ms: 20_300, seq: 0 }, model.len()));
}

#[test]
fn a_big_hash_writes_one_piece_per_field_and_forgets_its_pieces_when_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(dir.path());
    let mut model = BTreeMap::new();
    let all: Vec<(String, String)> = (0..10_000)
        .map(|i| (format!("field:{i}"), format!("value:{i}")))
        .collect();
    let (whole, _, layouts) = written_by(&s, || hset(&s, b"h", &all));
    model.extend(all.iter().cloned());
    assert_eq!(layouts, 1);
    let one = [("field:77".to_string(), "changed".to_string())];
    let (bytes, pieces, layouts) = written_by(&s, || hset(&s, b"h", &one));
    model.insert(one[0].0.clone(), one[0].1.clone());
    assert_eq!((pieces, layouts), (1, 0), "one field, one piece");
    assert!(bytes * 20 < whole, "{bytes} of {whole} bytes rewritten");
    eprintln!("one field of a 10,000-field hash wrote {bytes} of its {whole} bytes");
    drop(s);
    s = open(dir.path());
    assert_eq!(hash_of(&s, b"h"), Some(model.clone()));

    // Replaced by a string, then by a small hash: no old piece comes back.
    s.write(0, b"h", |cur| {
        *cur = Some(Record::new(Value::Str(b"plain".to_vec())));
        ((), true)
    })
    .unwrap();
    s.checkpoint().unwrap();
    drop(s);
    s = open(dir.path());
    s.write(0, b"h", |cur| {
        let mut map = FieldMap::new();
        map.insert(b"only"[..].into(), b"one"[..].into());
        *cur = Some(Record::new(Value::Hash(Box::new(map))));
        ((), true)
    })
    .unwrap();
    s.spill_all().unwrap();
    drop(s);
    s = open(dir.path());
    assert_eq!(
        hash_of(&s, b"h"),
        Some(BTreeMap::from([("only".to_string(), "one".to_string())]))
    );

    // A big hash deleted while on disk leaves nothing behind either.
    hset(&s, b"h2", &all);
    s.spill_all().unwrap();
    s.delete(0, b"h2").unwrap();
    hset(&s, b"h2", &one);
    s.spill_all().unwrap();
    drop(s);
    s = open(dir.path());
    assert_eq!(hash_of(&s, b"h2"), Some(one.iter().cloned().collect()));
    // And a stream keeps its groups in the head.
    let mut entries = BTreeMap::new();
    xadd(&s, b"st", 1..=1_000, &mut entries);
    s.write_change(0, b"st", |cur| {
        let Some(Record {
            value: Value::Stream(st),
            ..
        }) = cur
        else {
            panic!()
        };
        let op = StreamOp::GroupCursor(b"g"[..].into(), StreamId { ms: 500, seq: 0 }, Some(500));
        st.apply(op.clone());
        ((), Change::Stream(vec![op]))
    })
    .unwrap();
    s.spill_all().unwrap();
    let cursor = s
        .read(0, b"st", Default::default(), |r| match r {
            Some((
                Record {
                    value: Value::Stream(st),
                    ..
                },
                _,
            )) => st.groups[&b"g"[..]].last_delivered,
            _ => panic!("gone"),
        })
        .unwrap();
    assert_eq!(cursor, StreamId { ms: 500, seq: 0 });
}
