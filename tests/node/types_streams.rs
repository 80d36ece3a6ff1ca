//! Streams and consumer groups, black-box with the `redis` crate over RESP2
//! and RESP3: IDs, trimming, ranges, XREAD, the consumer-group life cycle
//! (deliver, pending, acknowledge, claim), XINFO, and a stream with groups
//! surviving spills and restarts.

use crate::common::{q, qe, TestNode};
use redis::Value;

/// XREAD's reply: entries by stream.
type Read = Vec<(String, Vec<(String, Vec<String>)>)>;

fn bulk(s: &str) -> Value {
    Value::BulkString(s.as_bytes().to_vec())
}

fn int(v: Value) -> i64 {
    redis::from_redis_value(&v).unwrap()
}

/// Entry IDs of a list of entries.
fn ids(v: &Value) -> Vec<String> {
    let entries: Vec<(String, Vec<String>)> = redis::from_redis_value(v).unwrap();
    entries.into_iter().map(|(id, _)| id).collect()
}

/// A flat RESP2 map reply (XINFO) as pairs.
fn field(v: &Value, name: &str) -> Value {
    let Value::Array(items) = v else {
        panic!("not a flat map: {v:?}")
    };
    for pair in items.chunks(2) {
        if pair[0] == bulk(name) {
            return pair[1].clone();
        }
    }
    panic!("no field {name} in {v:?}")
}

#[test]
fn entries_ids_ranges_and_trimming() {
    let node = TestNode::start(|_| {});
    let mut c = node.client();
    let c = &mut c;
    assert_eq!(q(c, &["XADD", "s", "1-1", "a", "1"]), bulk("1-1"));
    assert_eq!(q(c, &["XADD", "s", "1-*", "b", "2"]), bulk("1-2"));
    assert_eq!(q(c, &["XADD", "s", "5", "c", "3"]), bulk("5-0"));
    assert_eq!(
        qe(c, &["XADD", "s", "5-0", "x", "y"]),
        "ERR The ID specified in XADD is equal or smaller than the target stream top item"
    );
    assert_eq!(
        qe(c, &["XADD", "t", "0-0", "x", "y"]),
        "ERR The ID specified in XADD must be greater than 0-0"
    );
    assert_eq!(
        qe(c, &["XADD", "s", "1-x", "x", "y"]),
        "ERR Invalid stream ID specified as stream command argument"
    );
    assert_eq!(
        qe(c, &["XADD", "s", "*", "x"]),
        "ERR wrong number of arguments for 'xadd' command"
    );
    let auto: String = redis::from_redis_value(&q(c, &["XADD", "s", "*", "d", "4"])).unwrap();
    let ms: u64 = auto.split('-').next().unwrap().parse().unwrap();
    assert!(
        ms > 1_600_000_000_000,
        "an auto ID carries the time: {auto}"
    );
    assert_eq!(int(q(c, &["XLEN", "s"])), 4);
    assert_eq!(
        ids(&q(c, &["XRANGE", "s", "-", "+", "COUNT", "2"])),
        ["1-1", "1-2"]
    );
    assert_eq!(ids(&q(c, &["XRANGE", "s", "(1-1", "5"])), ["1-2", "5-0"]);
    assert_eq!(
        ids(&q(c, &["XREVRANGE", "s", "+", "1-2", "COUNT", "2"]))[1],
        "5-0"
    );
    assert_eq!(
        q(c, &["XRANGE", "s", "1-1", "1-1"]),
        Value::Array(vec![Value::Array(vec![
            bulk("1-1"),
            Value::Array(vec![bulk("a"), bulk("1")])
        ])])
    );
    assert_eq!(
        q(c, &["XADD", "nos", "NOMKSTREAM", "*", "a", "b"]),
        Value::Nil
    );
    assert_eq!(int(q(c, &["EXISTS", "nos"])), 0);
    // Deletion and trimming; the stream stays when empty.
    assert_eq!(int(q(c, &["XDEL", "s", "1-2", "9-9"])), 1);
    assert_eq!(int(q(c, &["XTRIM", "s", "MINID", "5"])), 1);
    assert_eq!(ids(&q(c, &["XRANGE", "s", "-", "+"]))[0], "5-0");
    for i in 0..10 {
        q(c, &["XADD", "cap", "MAXLEN", "3", "*", "i", &i.to_string()]);
    }
    assert_eq!(int(q(c, &["XLEN", "cap"])), 3);
    assert_eq!(int(q(c, &["XTRIM", "cap", "MAXLEN", "=", "0"])), 3);
    assert_eq!(int(q(c, &["EXISTS", "cap"])), 1, "an empty stream remains");
    assert_eq!(
        qe(c, &["XTRIM", "cap", "MAXLEN", "1", "LIMIT", "10"]),
        "ERR syntax error, LIMIT cannot be used without the special ~ option"
    );
    assert_eq!(
        int(q(c, &["XTRIM", "s", "MAXLEN", "~", "0", "LIMIT", "1"])),
        1
    );
    let info = q(c, &["XINFO", "STREAM", "s"]);
    assert_eq!(field(&info, "length"), Value::Int(1));
    assert_eq!(field(&info, "entries-added"), Value::Int(4));
    assert_eq!(field(&info, "max-deleted-entry-id"), bulk("1-2"));
    // XSETID.
    assert_eq!(
        qe(c, &["XSETID", "s", "1-0"]),
        "ERR The ID specified in XSETID is smaller than the target stream top item"
    );
    q(
        c,
        &["XSETID", "s", "999999999999999-0", "ENTRIESADDED", "50"],
    );
    assert_eq!(
        field(&q(c, &["XINFO", "STREAM", "s"]), "entries-added"),
        Value::Int(50)
    );
    assert_eq!(
        q(c, &["XADD", "s", "999999999999999-*", "k", "v"]),
        bulk("999999999999999-1")
    );
    // XREAD: by ID, `$`, several streams; RESP3 gives a map.
    q(c, &["XADD", "r1", "1-0", "a", "1"]);
    q(c, &["XADD", "r1", "2-0", "a", "2"]);
    q(c, &["XADD", "r2", "3-0", "b", "1"]);
    let v = q(c, &["XREAD", "COUNT", "1", "STREAMS", "r1", "r2", "0", "0"]);
    let read: Read = redis::from_redis_value(&v).unwrap();
    assert_eq!(read.len(), 2);
    assert_eq!(read[0].0, "r1");
    assert_eq!(read[0].1.len(), 1);
    assert_eq!(q(c, &["XREAD", "STREAMS", "r1", "$"]), Value::Nil);
    // Nothing arrives within the timeout: nil.
    assert_eq!(
        q(c, &["XREAD", "BLOCK", "10", "STREAMS", "r1", "$"]),
        Value::Nil
    );
    assert_eq!(
        qe(c, &["XREAD", "STREAMS", "r1", "r2", "0"]),
        "ERR Unbalanced 'xread' list of streams: for each stream key an ID or '$' must be specified."
    );
    let mut c3 = redis::Client::open(format!("{}?protocol=resp3", node.redis_url()))
        .unwrap()
        .get_connection()
        .unwrap();
    match q(&mut c3, &["XREAD", "STREAMS", "r1", "1-0"]) {
        Value::Map(pairs) => {
            assert_eq!(pairs.len(), 1);
            assert_eq!(pairs[0].0, bulk("r1"));
        }
        other => panic!("XREAD in RESP3: {other:?}"),
    }
    // Type checks and key positions.
    q(c, &["SET", "str", "v"]);
    assert!(qe(c, &["XADD", "str", "*", "a", "b"]).starts_with("WRONGTYPE"));
    assert!(qe(c, &["GET", "r1"]).starts_with("WRONGTYPE"));
    assert_eq!(q(c, &["TYPE", "r1"]), Value::SimpleString("stream".into()));
    let keys: Vec<String> = redis::from_redis_value(&q(
        c,
        &[
            "COMMAND",
            "GETKEYS",
            "XREADGROUP",
            "GROUP",
            "g",
            "c",
            "COUNT",
            "1",
            "STREAMS",
            "a",
            "b",
            ">",
            ">",
        ],
    ))
    .unwrap();
    assert_eq!(keys, ["a", "b"]);
}

#[test]
fn consumer_groups() {
    let node = TestNode::start(|_| {});
    let mut c = node.client();
    let c = &mut c;
    for i in 1..=5 {
        q(
            c,
            &["XADD", "jobs", &format!("{i}-0"), "job", &i.to_string()],
        );
    }
    assert_eq!(
        q(c, &["XGROUP", "CREATE", "jobs", "workers", "0"]),
        Value::Okay
    );
    assert_eq!(
        qe(c, &["XGROUP", "CREATE", "jobs", "workers", "0"]),
        "BUSYGROUP Consumer Group name already exists"
    );
    assert!(qe(c, &["XGROUP", "CREATE", "missing", "g", "$"]).contains("MKSTREAM"));
    assert_eq!(
        q(c, &["XGROUP", "CREATE", "fresh", "g", "$", "MKSTREAM"]),
        Value::Okay
    );
    assert_eq!(int(q(c, &["XLEN", "fresh"])), 0);
    assert!(qe(
        c,
        &[
            "XREADGROUP",
            "GROUP",
            "nogroup",
            "a",
            "STREAMS",
            "jobs",
            ">"
        ]
    )
    .starts_with("NOGROUP"));

    // Two consumers share the work; nothing is delivered twice.
    let v = q(
        c,
        &[
            "XREADGROUP",
            "GROUP",
            "workers",
            "alice",
            "COUNT",
            "2",
            "STREAMS",
            "jobs",
            ">",
        ],
    );
    let got: Read = redis::from_redis_value(&v).unwrap();
    assert_eq!(
        got[0].1.iter().map(|e| e.0.clone()).collect::<Vec<_>>(),
        ["1-0", "2-0"]
    );
    let v = q(
        c,
        &[
            "XREADGROUP",
            "GROUP",
            "workers",
            "bob",
            "STREAMS",
            "jobs",
            ">",
        ],
    );
    let got: Read = redis::from_redis_value(&v).unwrap();
    assert_eq!(got[0].1.len(), 3);
    assert_eq!(
        q(
            c,
            &[
                "XREADGROUP",
                "GROUP",
                "workers",
                "bob",
                "STREAMS",
                "jobs",
                ">"
            ]
        ),
        Value::Nil
    );
    // Pending: summary, extended, per consumer.
    let summary = q(c, &["XPENDING", "jobs", "workers"]);
    let (n, first, last, per): (i64, String, String, Vec<(String, String)>) =
        redis::from_redis_value(&summary).unwrap();
    assert_eq!((n, first.as_str(), last.as_str()), (5, "1-0", "5-0"));
    assert_eq!(
        per,
        [("alice".into(), "2".into()), ("bob".into(), "3".into())]
    );
    let rows: Vec<(String, String, i64, i64)> = redis::from_redis_value(&q(
        c,
        &["XPENDING", "jobs", "workers", "-", "+", "10", "alice"],
    ))
    .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].3, 1, "delivered once");
    // Acknowledge; history reads show what is still pending.
    assert_eq!(
        int(q(c, &["XACK", "jobs", "workers", "1-0", "1-0", "9-0"])),
        1
    );
    let v = q(
        c,
        &[
            "XREADGROUP",
            "GROUP",
            "workers",
            "alice",
            "STREAMS",
            "jobs",
            "0",
        ],
    );
    let got: Read = redis::from_redis_value(&v).unwrap();
    assert_eq!(
        got[0].1.iter().map(|e| e.0.clone()).collect::<Vec<_>>(),
        ["2-0"]
    );
    // Claims: XCLAIM moves an entry; a deleted entry leaves the PEL.
    let claimed = q(
        c,
        &[
            "XCLAIM",
            "jobs",
            "workers",
            "carol",
            "0",
            "2-0",
            "RETRYCOUNT",
            "7",
        ],
    );
    assert_eq!(ids(&claimed), ["2-0"]);
    let rows: Vec<(String, String, i64, i64)> =
        redis::from_redis_value(&q(c, &["XPENDING", "jobs", "workers", "2-0", "2-0", "1"]))
            .unwrap();
    assert_eq!(rows[0].1, "carol");
    assert_eq!(rows[0].3, 7);
    assert_eq!(
        q(c, &["XCLAIM", "jobs", "workers", "dan", "3600000", "3-0"]),
        Value::Array(vec![]),
        "not idle long enough"
    );
    q(c, &["XDEL", "jobs", "4-0"]);
    let v = q(
        c,
        &[
            "XAUTOCLAIM",
            "jobs",
            "workers",
            "dan",
            "0",
            "0",
            "COUNT",
            "10",
            "JUSTID",
        ],
    );
    let (cursor, claimed, deleted): (String, Vec<String>, Vec<String>) =
        redis::from_redis_value(&v).unwrap();
    assert_eq!(cursor, "0-0");
    assert_eq!(claimed, ["2-0", "3-0", "5-0"]);
    assert_eq!(deleted, ["4-0"]);
    assert_eq!(
        int(q(c, &["XPENDING", "jobs", "workers"])
            .as_sequence()
            .unwrap()[0]
            .clone()),
        3
    );
    // XINFO GROUPS and CONSUMERS.
    let groups = q(c, &["XINFO", "GROUPS", "jobs"]);
    let g = &groups.as_sequence().unwrap()[0];
    assert_eq!(field(g, "name"), bulk("workers"));
    assert_eq!(field(g, "pending"), Value::Int(3));
    assert_eq!(field(g, "last-delivered-id"), bulk("5-0"));
    assert_eq!(field(g, "entries-read"), Value::Int(5));
    assert_eq!(field(g, "lag"), Value::Int(0));
    let consumers = q(c, &["XINFO", "CONSUMERS", "jobs", "workers"]);
    let names: Vec<Value> = consumers
        .as_sequence()
        .unwrap()
        .iter()
        .map(|c| field(c, "name"))
        .collect();
    assert_eq!(
        names,
        [bulk("alice"), bulk("bob"), bulk("carol"), bulk("dan")]
    );
    let full = q(c, &["XINFO", "STREAM", "jobs", "FULL"]);
    assert_eq!(field(&full, "length"), Value::Int(4));
    // Consumers and groups go.
    assert_eq!(
        int(q(c, &["XGROUP", "DELCONSUMER", "jobs", "workers", "dan"])),
        3
    );
    assert_eq!(
        int(q(
            c,
            &["XGROUP", "CREATECONSUMER", "jobs", "workers", "erin"]
        )),
        1
    );
    assert_eq!(
        int(q(
            c,
            &["XGROUP", "CREATECONSUMER", "jobs", "workers", "erin"]
        )),
        0
    );
    assert_eq!(
        q(c, &["XGROUP", "SETID", "jobs", "workers", "0"]),
        Value::Okay
    );
    let v = q(
        c,
        &[
            "XREADGROUP",
            "GROUP",
            "workers",
            "erin",
            "NOACK",
            "STREAMS",
            "jobs",
            ">",
        ],
    );
    let got: Read = redis::from_redis_value(&v).unwrap();
    assert_eq!(got[0].1.len(), 4, "re-delivered after SETID");
    assert_eq!(
        int(q(c, &["XPENDING", "jobs", "workers"])
            .as_sequence()
            .unwrap()[0]
            .clone()),
        0,
        "NOACK adds nothing to the PEL"
    );
    assert_eq!(int(q(c, &["XGROUP", "DESTROY", "jobs", "workers"])), 1);
    assert_eq!(int(q(c, &["XGROUP", "DESTROY", "jobs", "workers"])), 0);
}

#[test]
fn streams_with_groups_survive_spills_and_restarts() {
    // Streams of four or more entries are kept on disk in pieces.
    let mut node = TestNode::start(|cfg| {
        cfg.storage.maxmemory = 8 << 20;
        cfg.storage.chunk_min_elements = 4;
    });
    let mut c = node.client();
    for i in 1..=300 {
        q(
            &mut c,
            &["XADD", "log", &format!("{i}-0"), "n", &i.to_string()],
        );
    }
    q(&mut c, &["XGROUP", "CREATE", "log", "g", "0"]);
    q(
        &mut c,
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "w",
            "COUNT",
            "100",
            "STREAMS",
            "log",
            ">",
        ],
    );
    q(&mut c, &["XACK", "log", "g", "1-0", "2-0"]);
    node.h().node.store.spill_all().unwrap();
    // Changes to a stream that lives on disk.
    q(&mut c, &["XADD", "log", "301-0", "n", "301"]);
    q(&mut c, &["XDEL", "log", "3-0"]);
    q(&mut c, &["XACK", "log", "g", "4-0"]);
    let before_pending = q(&mut c, &["XPENDING", "log", "g", "-", "+", "1000"]);
    let before = q(&mut c, &["XRANGE", "log", "-", "+"]);
    node.restart();
    let mut c = node.client();
    assert_eq!(q(&mut c, &["XRANGE", "log", "-", "+"]), before);
    let rows: Vec<(String, String, i64, i64)> =
        redis::from_redis_value(&q(&mut c, &["XPENDING", "log", "g", "-", "+", "1000"])).unwrap();
    let want: Vec<(String, String, i64, i64)> = redis::from_redis_value(&before_pending).unwrap();
    assert_eq!(
        rows.iter().map(|r| (&r.0, &r.1, r.3)).collect::<Vec<_>>(),
        want.iter().map(|r| (&r.0, &r.1, r.3)).collect::<Vec<_>>()
    );
    assert_eq!(rows.len(), 97);
    assert_eq!(int(q(&mut c, &["XLEN", "log"])), 300);
    // The group's cursor survived: the next read starts at 101.
    let v = q(
        &mut c,
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "w",
            "COUNT",
            "1",
            "STREAMS",
            "log",
            ">",
        ],
    );
    let got: Read = redis::from_redis_value(&v).unwrap();
    assert_eq!(got[0].1[0].0, "101-0");
}
