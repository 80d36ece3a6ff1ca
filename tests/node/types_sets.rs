//! Sets and sorted sets, black-box over RESP2 and RESP3 with the `redis`
//! crate: commands, options, errors and reply shapes, WRONGTYPE across
//! every pair of types, and a model test with forced spills, offloads,
//! checkpoints and restarts in between.

use std::collections::{BTreeMap, BTreeSet};

use crate::common::{q, qe, TestNode};
use proptest::prelude::*;
use redis::{cmd, Value};

fn strings(v: Value) -> Vec<String> {
    redis::from_redis_value(&v).unwrap()
}

fn sorted(v: Value) -> Vec<String> {
    let mut s = strings(v);
    s.sort();
    s
}

fn int(v: Value) -> i64 {
    redis::from_redis_value(&v).unwrap()
}

fn bulk(s: &str) -> Value {
    Value::BulkString(s.as_bytes().to_vec())
}

fn resp3(node: &TestNode) -> redis::Connection {
    redis::Client::open(format!("{}?protocol=resp3", node.redis_url()))
        .unwrap()
        .get_connection()
        .unwrap()
}

#[test]
fn sets() {
    let node = TestNode::start(|_| {});
    let mut c = node.client();
    let c = &mut c;
    assert_eq!(int(q(c, &["SADD", "s", "a", "b", "c", "a"])), 3);
    assert_eq!(int(q(c, &["SADD", "s", "a"])), 0);
    assert_eq!(int(q(c, &["SREM", "s", "a", "zz"])), 1);
    assert_eq!(int(q(c, &["SREM", "nokey", "a"])), 0);
    assert_eq!(sorted(q(c, &["SMEMBERS", "s"])), ["b", "c"]);
    assert_eq!(sorted(q(c, &["SMEMBERS", "nokey"])), Vec::<String>::new());
    assert_eq!(int(q(c, &["SISMEMBER", "s", "b"])), 1);
    assert_eq!(int(q(c, &["SISMEMBER", "s", "a"])), 0);
    assert_eq!(
        q(c, &["SMISMEMBER", "s", "b", "a"]),
        Value::Array(vec![Value::Int(1), Value::Int(0)])
    );
    assert_eq!(int(q(c, &["SCARD", "s"])), 2);
    assert_eq!(int(q(c, &["SCARD", "nokey"])), 0);
    assert_eq!(q(c, &["TYPE", "s"]), Value::SimpleString("set".into()));
    assert_eq!(q(c, &["OBJECT", "ENCODING", "s"]), bulk("hashtable"));
    q(c, &["SADD", "ints", "1", "2", "3"]);
    assert_eq!(q(c, &["OBJECT", "ENCODING", "ints"]), bulk("intset"));

    // SPOP and SRANDMEMBER.
    q(c, &["SADD", "p", "1", "2", "3", "4", "5"]);
    let one: String = redis::from_redis_value(&q(c, &["SPOP", "p"])).unwrap();
    assert!(["1", "2", "3", "4", "5"].contains(&one.as_str()));
    let two = strings(q(c, &["SPOP", "p", "2"]));
    assert_eq!(two.len(), 2);
    assert!(!two.contains(&one));
    assert_eq!(int(q(c, &["SCARD", "p"])), 2);
    assert_eq!(strings(q(c, &["SPOP", "p", "10"])).len(), 2);
    assert_eq!(int(q(c, &["EXISTS", "p"])), 0, "an emptied set is removed");
    assert_eq!(q(c, &["SPOP", "p"]), Value::Nil);
    assert_eq!(strings(q(c, &["SPOP", "p", "3"])), Vec::<String>::new());
    assert_eq!(
        qe(c, &["SPOP", "s", "-1"]),
        "ERR value is out of range, must be positive"
    );
    q(c, &["SADD", "r", "x", "y", "z"]);
    let distinct = strings(q(c, &["SRANDMEMBER", "r", "2"]));
    assert_eq!(distinct.len(), 2);
    assert_ne!(distinct[0], distinct[1]);
    assert_eq!(sorted(q(c, &["SRANDMEMBER", "r", "10"])), ["x", "y", "z"]);
    assert_eq!(strings(q(c, &["SRANDMEMBER", "r", "-7"])).len(), 7);
    assert_eq!(q(c, &["SRANDMEMBER", "nokey"]), Value::Nil);
    assert_eq!(int(q(c, &["SCARD", "r"])), 3, "SRANDMEMBER changes nothing");

    // SMOVE.
    assert_eq!(int(q(c, &["SMOVE", "r", "r2", "x"])), 1);
    assert_eq!(int(q(c, &["SMOVE", "r", "r2", "x"])), 0);
    assert_eq!(sorted(q(c, &["SMEMBERS", "r2"])), ["x"]);
    q(c, &["SET", "str", "v"]);
    assert!(qe(c, &["SMOVE", "r", "str", "y"]).starts_with("WRONGTYPE"));
    assert_eq!(int(q(c, &["SISMEMBER", "r", "y"])), 1, "nothing moved");

    // Algebra.
    q(c, &["SADD", "s1", "a", "b", "c", "d"]);
    q(c, &["SADD", "s2", "c", "d", "e"]);
    q(c, &["SADD", "s3", "d", "f"]);
    assert_eq!(sorted(q(c, &["SINTER", "s1", "s2"])), ["c", "d"]);
    assert_eq!(sorted(q(c, &["SINTER", "s1", "s2", "s3"])), ["d"]);
    assert_eq!(
        sorted(q(c, &["SINTER", "s1", "nokey"])),
        Vec::<String>::new()
    );
    assert_eq!(
        sorted(q(c, &["SUNION", "s1", "s3"])),
        ["a", "b", "c", "d", "f"]
    );
    assert_eq!(sorted(q(c, &["SDIFF", "s1", "s2", "s3"])), ["a", "b"]);
    assert_eq!(int(q(c, &["SINTERCARD", "2", "s1", "s2"])), 2);
    assert_eq!(int(q(c, &["SINTERCARD", "2", "s1", "s2", "LIMIT", "1"])), 1);
    assert_eq!(int(q(c, &["SINTERSTORE", "dst", "s1", "s2"])), 2);
    assert_eq!(sorted(q(c, &["SMEMBERS", "dst"])), ["c", "d"]);
    assert_eq!(int(q(c, &["SUNIONSTORE", "dst", "s2", "s3"])), 4);
    assert_eq!(int(q(c, &["SDIFFSTORE", "dst", "s1", "s1"])), 0);
    assert_eq!(int(q(c, &["EXISTS", "dst"])), 0, "an empty result deletes");
    assert!(qe(c, &["SINTER", "s1", "str"]).starts_with("WRONGTYPE"));
    assert!(qe(c, &["SUNIONSTORE", "dst", "s1", "str"]).starts_with("WRONGTYPE"));
    assert_eq!(
        qe(c, &["SINTERCARD", "0", "s1"]),
        "ERR numkeys should be greater than 0"
    );
    assert_eq!(
        qe(c, &["SINTERCARD", "3", "s1", "s2"]),
        "ERR Number of keys can't be greater than number of args"
    );
    assert_eq!(
        qe(c, &["SINTERCARD", "2", "s1", "s2", "LIMIT", "-1"]),
        "ERR LIMIT can't be negative"
    );

    // SSCAN visits every member exactly once with a small COUNT.
    let members: Vec<String> = (0..500).map(|i| format!("m{i}")).collect();
    let mut add = cmd("SADD");
    add.arg("big").arg(&members);
    let _: i64 = add.query(c).unwrap();
    let mut seen = BTreeSet::new();
    let mut cursor = "0".to_string();
    for _ in 0..1000 {
        let v = q(c, &["SSCAN", "big", &cursor, "COUNT", "7"]);
        let (next, page): (String, Vec<String>) = redis::from_redis_value(&v).unwrap();
        for m in page {
            assert!(seen.insert(m), "a member came twice");
        }
        cursor = next;
        if cursor == "0" {
            break;
        }
    }
    assert_eq!(cursor, "0");
    assert_eq!(seen.len(), 500);
    let v = q(c, &["SSCAN", "big", "0", "MATCH", "m1?", "COUNT", "1000"]);
    let (_, page): (String, Vec<String>) = redis::from_redis_value(&v).unwrap();
    assert_eq!(page.len(), 10);
    assert_eq!(qe(c, &["SSCAN", "big", "x"]), "ERR invalid cursor");

    // RESP3: sets come back as sets.
    let mut c3 = resp3(&node);
    match q(&mut c3, &["SMEMBERS", "s2"]) {
        Value::Set(items) => assert_eq!(items.len(), 3),
        other => panic!("SMEMBERS in RESP3: {other:?}"),
    }
    match q(&mut c3, &["SRANDMEMBER", "s2", "2"]) {
        Value::Array(items) => assert_eq!(items.len(), 2),
        other => panic!("SRANDMEMBER in RESP3: {other:?}"),
    }
}

/// Parses a flat member-score array.
fn with_scores(v: Value) -> Vec<(String, f64)> {
    let flat = strings(v);
    flat.chunks(2)
        .map(|p| (p[0].clone(), p[1].parse().unwrap()))
        .collect()
}

#[test]
fn sorted_sets() {
    let node = TestNode::start(|_| {});
    let mut c = node.client();
    let c = &mut c;
    assert_eq!(int(q(c, &["ZADD", "z", "1", "a", "2", "b", "3", "c"])), 3);
    assert_eq!(int(q(c, &["ZADD", "z", "1.5", "d", "1", "a"])), 1);
    assert_eq!(
        with_scores(q(c, &["ZRANGE", "z", "0", "-1", "WITHSCORES"])),
        [
            ("a".into(), 1.0),
            ("d".into(), 1.5),
            ("b".into(), 2.0),
            ("c".into(), 3.0)
        ]
    );
    // Flags.
    assert_eq!(
        int(q(c, &["ZADD", "z", "XX", "CH", "5", "a", "9", "new"])),
        1
    );
    assert_eq!(q(c, &["ZSCORE", "z", "new"]), Value::Nil);
    assert_eq!(int(q(c, &["ZADD", "z", "NX", "0", "a", "4", "e"])), 1);
    assert_eq!(q(c, &["ZSCORE", "z", "a"]), bulk("5"));
    assert_eq!(int(q(c, &["ZADD", "z", "GT", "CH", "1", "a", "6", "b"])), 1);
    assert_eq!(q(c, &["ZSCORE", "z", "b"]), bulk("6"));
    assert_eq!(
        int(q(c, &["ZADD", "z", "LT", "CH", "7", "a", "0.5", "c"])),
        1
    );
    assert_eq!(q(c, &["ZADD", "z", "INCR", "2", "a"]), bulk("7"));
    assert_eq!(q(c, &["ZADD", "z", "NX", "INCR", "2", "a"]), Value::Nil);
    assert_eq!(q(c, &["ZINCRBY", "z", "-1.25", "a"]), bulk("5.75"));
    assert_eq!(q(c, &["ZINCRBY", "fresh", "3", "m"]), bulk("3"));
    assert_eq!(
        qe(c, &["ZADD", "z", "NX", "XX", "1", "a"]),
        "ERR XX and NX options at the same time are not compatible"
    );
    assert_eq!(
        qe(c, &["ZADD", "z", "GT", "LT", "1", "a"]),
        "ERR GT, LT, and/or NX options at the same time are not compatible"
    );
    assert_eq!(
        qe(c, &["ZADD", "z", "INCR", "1", "a", "2", "b"]),
        "ERR INCR option supports a single increment-element pair"
    );
    assert_eq!(
        qe(c, &["ZADD", "z", "x", "a"]),
        "ERR value is not a valid float"
    );
    assert_eq!(qe(c, &["ZADD", "z", "1", "a", "2"]), "ERR syntax error");
    q(c, &["ZADD", "inf", "+inf", "p", "-inf", "n"]);
    assert_eq!(
        qe(c, &["ZINCRBY", "inf", "-inf", "p"]),
        "ERR resulting score is not a number (NaN)"
    );
    // z: c 0.5, d 1.5, e 4, a 5.75, b 6
    assert_eq!(int(q(c, &["ZCARD", "z"])), 5);
    assert_eq!(int(q(c, &["ZCOUNT", "z", "(0.5", "5.75"])), 3);
    assert_eq!(int(q(c, &["ZCOUNT", "z", "-inf", "+inf"])), 5);
    assert_eq!(
        qe(c, &["ZCOUNT", "z", "x", "1"]),
        "ERR min or max is not a float"
    );
    assert_eq!(int(q(c, &["ZRANK", "z", "e"])), 2);
    assert_eq!(int(q(c, &["ZREVRANK", "z", "e"])), 2);
    assert_eq!(int(q(c, &["ZREVRANK", "z", "b"])), 0);
    assert_eq!(q(c, &["ZRANK", "z", "none"]), Value::Nil);
    assert_eq!(
        q(c, &["ZMSCORE", "z", "c", "none"]),
        Value::Array(vec![bulk("0.5"), Value::Nil])
    );
    // Ranges.
    assert_eq!(strings(q(c, &["ZRANGE", "z", "1", "2"])), ["d", "e"]);
    assert_eq!(strings(q(c, &["ZRANGE", "z", "-2", "-1"])), ["a", "b"]);
    assert_eq!(strings(q(c, &["ZRANGE", "z", "0", "1", "REV"])), ["b", "a"]);
    assert_eq!(strings(q(c, &["ZREVRANGE", "z", "0", "1"])), ["b", "a"]);
    assert_eq!(
        strings(q(
            c,
            &["ZRANGE", "z", "(1.5", "6", "BYSCORE", "LIMIT", "1", "2"]
        )),
        ["a", "b"]
    );
    assert_eq!(
        strings(q(c, &["ZRANGE", "z", "6", "(1.5", "BYSCORE", "REV"])),
        ["b", "a", "e"]
    );
    assert_eq!(
        strings(q(c, &["ZRANGEBYSCORE", "z", "-inf", "(4"])),
        ["c", "d"]
    );
    assert_eq!(
        with_scores(q(
            c,
            &[
                "ZREVRANGEBYSCORE",
                "z",
                "+inf",
                "4",
                "WITHSCORES",
                "LIMIT",
                "0",
                "1"
            ]
        )),
        [("b".into(), 6.0)]
    );
    assert_eq!(
        strings(q(c, &["ZRANGEBYSCORE", "z", "5", "1"])),
        Vec::<String>::new()
    );
    assert_eq!(
        qe(c, &["ZRANGE", "z", "0", "1", "LIMIT", "0", "1"]),
        "ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX"
    );
    assert_eq!(
        qe(c, &["ZRANGE", "z", "-", "+", "BYLEX", "WITHSCORES"]),
        "ERR syntax error, WITHSCORES not supported in combination with BYLEX"
    );
    q(
        c,
        &[
            "ZADD", "lex", "0", "a", "0", "b", "0", "c", "0", "d", "0", "e",
        ],
    );
    assert_eq!(
        strings(q(c, &["ZRANGEBYLEX", "lex", "[b", "(d"])),
        ["b", "c"]
    );
    assert_eq!(strings(q(c, &["ZRANGEBYLEX", "lex", "-", "[a"])), ["a"]);
    assert_eq!(
        strings(q(
            c,
            &["ZREVRANGEBYLEX", "lex", "+", "(c", "LIMIT", "0", "1"]
        )),
        ["e"]
    );
    assert_eq!(
        strings(q(c, &["ZRANGE", "lex", "(c", "+", "BYLEX"])),
        ["d", "e"]
    );
    assert_eq!(
        strings(q(c, &["ZRANGEBYLEX", "lex", "+", "-"])),
        Vec::<String>::new()
    );
    assert_eq!(int(q(c, &["ZLEXCOUNT", "lex", "[b", "+"])), 4);
    assert_eq!(
        qe(c, &["ZRANGEBYLEX", "lex", "b", "c"]),
        "ERR min or max not valid string range item"
    );
    assert_eq!(int(q(c, &["ZRANGESTORE", "dst", "z", "0", "1"])), 2);
    assert_eq!(strings(q(c, &["ZRANGE", "dst", "0", "-1"])), ["c", "d"]);
    assert_eq!(int(q(c, &["ZRANGESTORE", "dst", "z", "9", "10"])), 0);
    assert_eq!(int(q(c, &["EXISTS", "dst"])), 0);
    // Removal by range.
    assert_eq!(int(q(c, &["ZREMRANGEBYLEX", "lex", "[d", "+"])), 2);
    assert_eq!(int(q(c, &["ZREMRANGEBYRANK", "lex", "0", "0"])), 1);
    assert_eq!(strings(q(c, &["ZRANGE", "lex", "0", "-1"])), ["b", "c"]);
    q(c, &["ZADD", "rm", "1", "a", "2", "b", "3", "c"]);
    assert_eq!(int(q(c, &["ZREMRANGEBYSCORE", "rm", "(1", "2"])), 1);
    assert_eq!(int(q(c, &["ZREM", "rm", "a", "c", "x"])), 2);
    assert_eq!(int(q(c, &["EXISTS", "rm"])), 0);
    // Pops.
    assert_eq!(with_scores(q(c, &["ZPOPMIN", "z"])), [("c".into(), 0.5)]);
    assert_eq!(
        with_scores(q(c, &["ZPOPMAX", "z", "2"])),
        [("b".into(), 6.0), ("a".into(), 5.75)]
    );
    assert_eq!(q(c, &["ZPOPMIN", "nokey"]), Value::Array(vec![]));
    assert_eq!(
        qe(c, &["ZPOPMIN", "z", "-1"]),
        "ERR value is out of range, must be positive"
    );
    q(c, &["ZADD", "mp", "1", "x", "2", "y"]);
    assert_eq!(
        q(c, &["ZMPOP", "2", "nokey", "mp", "MAX", "COUNT", "5"]),
        Value::Array(vec![
            bulk("mp"),
            Value::Array(vec![
                Value::Array(vec![bulk("y"), bulk("2")]),
                Value::Array(vec![bulk("x"), bulk("1")]),
            ]),
        ])
    );
    assert_eq!(q(c, &["ZMPOP", "1", "mp", "MIN"]), Value::Nil);
    assert_eq!(
        qe(c, &["ZMPOP", "1", "mp", "MIN", "COUNT", "0"]),
        "ERR count should be greater than 0"
    );
    // Random members.
    q(c, &["ZADD", "rnd", "1", "a", "2", "b", "3", "c"]);
    let two = strings(q(c, &["ZRANDMEMBER", "rnd", "2"]));
    assert_eq!(two.len(), 2);
    assert_ne!(two[0], two[1]);
    assert_eq!(
        with_scores(q(c, &["ZRANDMEMBER", "rnd", "-5", "WITHSCORES"])).len(),
        5
    );
    assert_eq!(q(c, &["ZRANDMEMBER", "nokey"]), Value::Nil);
    // Algebra, sets taking part with score 1.
    q(c, &["ZADD", "za", "1", "a", "2", "b", "3", "c"]);
    q(c, &["ZADD", "zb", "10", "b", "20", "c", "30", "d"]);
    q(c, &["SADD", "plain", "c", "d", "x"]);
    assert_eq!(
        with_scores(q(c, &["ZUNION", "2", "za", "zb", "WITHSCORES"])),
        [
            ("a".into(), 1.0),
            ("b".into(), 12.0),
            ("c".into(), 23.0),
            ("d".into(), 30.0)
        ]
    );
    assert_eq!(
        with_scores(q(
            c,
            &[
                "ZINTER",
                "2",
                "za",
                "zb",
                "WEIGHTS",
                "2",
                "1",
                "AGGREGATE",
                "MAX",
                "WITHSCORES"
            ]
        )),
        [("b".into(), 10.0), ("c".into(), 20.0)]
    );
    assert_eq!(strings(q(c, &["ZDIFF", "2", "za", "zb"])), ["a"]);
    assert_eq!(
        with_scores(q(c, &["ZINTER", "2", "za", "plain", "WITHSCORES"])),
        [("c".into(), 4.0)]
    );
    assert_eq!(
        int(q(
            c,
            &["ZUNIONSTORE", "out", "2", "zb", "plain", "AGGREGATE", "MIN"]
        )),
        4
    );
    assert_eq!(
        with_scores(q(c, &["ZRANGE", "out", "0", "-1", "WITHSCORES"])),
        [
            ("c".into(), 1.0),
            ("d".into(), 1.0),
            ("x".into(), 1.0),
            ("b".into(), 10.0)
        ]
    );
    assert_eq!(int(q(c, &["ZINTERSTORE", "out", "2", "za", "zb"])), 2);
    assert_eq!(int(q(c, &["ZDIFFSTORE", "out", "2", "za", "za"])), 0);
    assert_eq!(int(q(c, &["EXISTS", "out"])), 0);
    assert_eq!(int(q(c, &["ZINTERCARD", "2", "za", "zb", "LIMIT", "1"])), 1);
    assert_eq!(
        qe(c, &["ZUNION", "2", "za", "zb", "WEIGHTS", "1", "x"]),
        "ERR weight value is not a float"
    );
    assert_eq!(
        qe(c, &["ZDIFF", "2", "za", "zb", "AGGREGATE", "SUM"]),
        "ERR syntax error"
    );
    q(c, &["SET", "str", "v"]);
    assert!(qe(c, &["ZUNION", "2", "za", "str"]).starts_with("WRONGTYPE"));
    // Key positions for cluster routing.
    assert_eq!(
        strings(q(
            c,
            &["COMMAND", "GETKEYS", "ZUNIONSTORE", "out", "2", "za", "zb"]
        )),
        ["out", "za", "zb"]
    );
    // ZSCAN.
    let v = q(c, &["ZSCAN", "za", "0", "COUNT", "100"]);
    let (next, page): (String, Vec<String>) = redis::from_redis_value(&v).unwrap();
    assert_eq!(next, "0");
    assert_eq!(page.len(), 6);
    assert_eq!(q(c, &["TYPE", "za"]), Value::SimpleString("zset".into()));
    assert_eq!(q(c, &["OBJECT", "ENCODING", "za"]), bulk("listpack"));

    // RESP3: scores are doubles, WITHSCORES pairs are nested.
    let mut c3 = resp3(&node);
    assert_eq!(q(&mut c3, &["ZSCORE", "za", "b"]), Value::Double(2.0));
    assert_eq!(
        q(&mut c3, &["ZRANGE", "za", "0", "1", "WITHSCORES"]),
        Value::Array(vec![
            Value::Array(vec![bulk("a"), Value::Double(1.0)]),
            Value::Array(vec![bulk("b"), Value::Double(2.0)]),
        ])
    );
    assert_eq!(
        q(&mut c3, &["ZPOPMIN", "za"]),
        Value::Array(vec![bulk("a"), Value::Double(1.0)])
    );
    assert_eq!(
        q(&mut c3, &["ZPOPMAX", "za", "1"]),
        Value::Array(vec![Value::Array(vec![bulk("c"), Value::Double(3.0)])])
    );
}

/// One command per type, run against a key of every other type.
#[test]
fn wrongtype_across_types() {
    let node = TestNode::start(|_| {});
    let mut c = node.client();
    let c = &mut c;
    q(c, &["SET", "string", "v"]);
    q(c, &["HSET", "hash", "f", "v"]);
    q(c, &["RPUSH", "list", "a"]);
    q(c, &["SADD", "set", "a"]);
    q(c, &["ZADD", "zset", "1", "a"]);
    let probes: [(&str, &[&str]); 10] = [
        ("string", &["GET"]),
        ("string", &["APPEND", "x"]),
        ("hash", &["HGET", "f"]),
        ("hash", &["HSET", "f", "v"]),
        ("list", &["LRANGE", "0", "-1"]),
        ("list", &["LPUSH", "x"]),
        ("set", &["SMEMBERS"]),
        ("set", &["SADD", "x"]),
        ("zset", &["ZRANGE", "0", "-1"]),
        ("zset", &["ZADD", "1", "x"]),
    ];
    for key in ["string", "hash", "list", "set", "zset"] {
        for (kind, probe) in &probes {
            let mut args = vec![probe[0], key];
            args.extend_from_slice(&probe[1..]);
            if *kind == key {
                q(c, &args);
            } else {
                assert!(qe(c, &args).starts_with("WRONGTYPE"), "{args:?} on a {key}");
            }
        }
        assert_eq!(q(c, &["TYPE", key]), Value::SimpleString(key.into()));
    }
    // Nothing changed type or content.
    assert_eq!(q(c, &["GET", "string"]), bulk("vx"));
    assert_eq!(int(q(c, &["SCARD", "set"])), 2);
    assert_eq!(int(q(c, &["ZCARD", "zset"])), 2);
    // SCAN's TYPE filter knows every type.
    for key in ["string", "hash", "list", "set", "zset"] {
        let v = q(c, &["SCAN", "0", "COUNT", "100", "TYPE", key]);
        let (_, keys): (String, Vec<String>) = redis::from_redis_value(&v).unwrap();
        assert_eq!(keys, [key]);
    }
}

#[derive(Debug, Clone)]
enum Op {
    SAdd(u8, u8),
    SRem(u8, u8),
    SPop(u8),
    ZAdd(u8, u8, i8),
    ZIncr(u8, u8, i8),
    ZRem(u8, u8),
    ZPopMin(u8),
    ZRemRangeByScore(u8, i8, i8),
    Del(u8),
    SpillAll,
    Offload,
    Checkpoint,
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0u8..6;
    let m = 0u8..12;
    prop_oneof![
        6 => (key.clone(), m.clone()).prop_map(|(k, m)| Op::SAdd(k, m)),
        3 => (key.clone(), m.clone()).prop_map(|(k, m)| Op::SRem(k, m)),
        1 => key.clone().prop_map(Op::SPop),
        6 => (key.clone(), m.clone(), any::<i8>()).prop_map(|(k, m, s)| Op::ZAdd(k, m, s)),
        2 => (key.clone(), m.clone(), any::<i8>()).prop_map(|(k, m, s)| Op::ZIncr(k, m, s)),
        3 => (key.clone(), m).prop_map(|(k, m)| Op::ZRem(k, m)),
        1 => key.clone().prop_map(Op::ZPopMin),
        1 => (key.clone(), any::<i8>(), any::<i8>()).prop_map(|(k, a, b)| Op::ZRemRangeByScore(k, a, b)),
        1 => key.prop_map(Op::Del),
        1 => Just(Op::SpillAll),
        1 => Just(Op::Offload),
        1 => Just(Op::Checkpoint),
        1 => Just(Op::Restart),
    ]
}

/// Sets live under `s{k}`, sorted sets under `z{k}`.
#[derive(Default, Debug)]
struct Model {
    sets: BTreeMap<u8, BTreeSet<String>>,
    zsets: BTreeMap<u8, BTreeMap<String, i64>>,
}

fn check(c: &mut redis::Connection, model: &Model) {
    for k in 0..6u8 {
        let want: Vec<String> = model
            .sets
            .get(&k)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        assert_eq!(
            sorted(q(c, &["SMEMBERS", &format!("s{k}")])),
            want,
            "set s{k}"
        );
        let mut want: Vec<(String, f64)> = model
            .zsets
            .get(&k)
            .map(|z| z.iter().map(|(m, s)| (m.clone(), *s as f64)).collect())
            .unwrap_or_default();
        want.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        let got = with_scores(q(c, &["ZRANGE", &format!("z{k}"), "0", "-1", "WITHSCORES"]));
        assert_eq!(got, want, "zset z{k}");
    }
}

fn run(ops: Vec<Op>) {
    // A small memory tier, so spills also happen on their own; collections
    // of four or more members are kept on disk in pieces.
    let mut node = TestNode::start(|cfg| {
        cfg.storage.maxmemory = 8 << 20;
        cfg.storage.chunk_min_elements = 4;
    });
    let mut c = node.client();
    let mut model = Model::default();
    for op in ops {
        match op {
            Op::SAdd(k, m) => {
                q(&mut c, &["SADD", &format!("s{k}"), &format!("m{m}")]);
                model.sets.entry(k).or_default().insert(format!("m{m}"));
            }
            Op::SRem(k, m) => {
                q(&mut c, &["SREM", &format!("s{k}"), &format!("m{m}")]);
                if let Some(s) = model.sets.get_mut(&k) {
                    s.remove(&format!("m{m}"));
                    if s.is_empty() {
                        model.sets.remove(&k);
                    }
                }
            }
            Op::SPop(k) => {
                let got = q(&mut c, &["SPOP", &format!("s{k}")]);
                match model.sets.get_mut(&k) {
                    None => assert_eq!(got, Value::Nil),
                    Some(s) => {
                        let m: String = redis::from_redis_value(&got).unwrap();
                        assert!(s.remove(&m), "SPOP returned a non-member");
                        if s.is_empty() {
                            model.sets.remove(&k);
                        }
                    }
                }
            }
            Op::ZAdd(k, m, s) => {
                q(
                    &mut c,
                    &["ZADD", &format!("z{k}"), &s.to_string(), &format!("m{m}")],
                );
                model
                    .zsets
                    .entry(k)
                    .or_default()
                    .insert(format!("m{m}"), s.into());
            }
            Op::ZIncr(k, m, s) => {
                q(
                    &mut c,
                    &[
                        "ZINCRBY",
                        &format!("z{k}"),
                        &s.to_string(),
                        &format!("m{m}"),
                    ],
                );
                *model
                    .zsets
                    .entry(k)
                    .or_default()
                    .entry(format!("m{m}"))
                    .or_default() += i64::from(s);
            }
            Op::ZRem(k, m) => {
                q(&mut c, &["ZREM", &format!("z{k}"), &format!("m{m}")]);
                if let Some(z) = model.zsets.get_mut(&k) {
                    z.remove(&format!("m{m}"));
                    if z.is_empty() {
                        model.zsets.remove(&k);
                    }
                }
            }
            Op::ZPopMin(k) => {
                let got = with_scores(q(&mut c, &["ZPOPMIN", &format!("z{k}")]));
                let lowest = model.zsets.get(&k).and_then(|z| {
                    z.iter()
                        .min_by(|a, b| a.1.cmp(b.1).then_with(|| a.0.cmp(b.0)))
                        .map(|(m, s)| (m.clone(), *s))
                });
                match lowest {
                    None => assert!(got.is_empty()),
                    Some((m, s)) => {
                        assert_eq!(got, [(m.clone(), s as f64)]);
                        let z = model.zsets.get_mut(&k).unwrap();
                        z.remove(&m);
                        if z.is_empty() {
                            model.zsets.remove(&k);
                        }
                    }
                }
            }
            Op::ZRemRangeByScore(k, a, b) => {
                q(
                    &mut c,
                    &[
                        "ZREMRANGEBYSCORE",
                        &format!("z{k}"),
                        &a.to_string(),
                        &b.to_string(),
                    ],
                );
                if let Some(z) = model.zsets.get_mut(&k) {
                    z.retain(|_, s| !(i64::from(a)..=i64::from(b)).contains(s));
                    if z.is_empty() {
                        model.zsets.remove(&k);
                    }
                }
            }
            Op::Del(k) => {
                q(&mut c, &["DEL", &format!("s{k}"), &format!("z{k}")]);
                model.sets.remove(&k);
                model.zsets.remove(&k);
            }
            Op::SpillAll => {
                node.h().node.store.spill_all().unwrap();
            }
            Op::Offload => {
                node.h().node.store.offload();
            }
            Op::Checkpoint => node.h().node.store.checkpoint().unwrap(),
            Op::Restart => {
                node.restart();
                c = node.client();
            }
        }
    }
    check(&mut c, &model);
    // And once more from the log and disk alone.
    node.restart();
    let mut c = node.client();
    check(&mut c, &model);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn sets_and_sorted_sets_match_a_model(ops in proptest::collection::vec(op(), 1..80)) {
        run(ops);
    }
}
