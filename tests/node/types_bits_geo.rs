//! Bitmaps, HyperLogLog, geo, and the key commands that work on every
//! type (COPY, MOVE, DUMP/RESTORE, SORT) plus LCS, black-box with the
//! `redis` crate. Expected replies are the ones redis-server 7 gives.
//! String edits log only the bytes they change; a restart from the log
//! and a spill to the disk tier must give the same strings back.

use crate::common::{q, qe, TestNode};
use redis::{cmd, Value};

fn int(v: Value) -> i64 {
    redis::from_redis_value(&v).unwrap()
}

fn text(v: Value) -> String {
    redis::from_redis_value(&v).unwrap()
}

fn strings(v: Value) -> Vec<String> {
    redis::from_redis_value(&v).unwrap()
}

/// A key's contents in a canonical order, whatever its type.
fn contents(c: &mut redis::Connection, key: &str) -> Vec<String> {
    let kind = text(q(c, &["TYPE", key]));
    let mut v = match kind.as_str() {
        "string" => vec![format!("{:?}", raw(c, key))],
        "list" => strings(q(c, &["LRANGE", key, "0", "-1"])),
        "hash" => strings(q(c, &["HGETALL", key])),
        "set" => strings(q(c, &["SMEMBERS", key])),
        "zset" => strings(q(c, &["ZRANGE", key, "0", "-1", "WITHSCORES"])),
        "stream" => vec![format!("{:?}", q(c, &["XRANGE", key, "-", "+"]))],
        other => panic!("{key} is a {other}"),
    };
    if matches!(kind.as_str(), "hash" | "set") {
        v.sort();
    }
    v
}

fn raw(c: &mut redis::Connection, key: &str) -> Vec<u8> {
    cmd("GET").arg(key).query(c).unwrap()
}

#[test]
fn bitmaps() {
    let node = TestNode::start(|_| {});
    let mut c = node.client();
    let c = &mut c;
    assert_eq!(int(q(c, &["SETBIT", "b", "7", "1"])), 0);
    assert_eq!(int(q(c, &["SETBIT", "b", "7", "1"])), 1);
    assert_eq!(int(q(c, &["SETBIT", "b", "100", "1"])), 0);
    assert_eq!(raw(c, "b").len(), 13);
    assert_eq!(int(q(c, &["GETBIT", "b", "7"])), 1);
    assert_eq!(int(q(c, &["GETBIT", "b", "8"])), 0);
    assert_eq!(int(q(c, &["GETBIT", "b", "100000"])), 0);
    assert_eq!(
        qe(c, &["SETBIT", "b", "4294967296", "1"]),
        "ERR bit offset is not an integer or out of range"
    );
    assert_eq!(
        qe(c, &["SETBIT", "b", "1", "2"]),
        "ERR bit is not an integer or out of range"
    );
    q(c, &["SET", "s", "foobar"]);
    assert_eq!(int(q(c, &["BITCOUNT", "s"])), 26);
    assert_eq!(int(q(c, &["BITCOUNT", "s", "1", "1"])), 6);
    assert_eq!(int(q(c, &["BITCOUNT", "s", "5", "30", "BIT"])), 17);
    assert_eq!(int(q(c, &["BITCOUNT", "s", "-3", "-1"])), 10);
    assert_eq!(qe(c, &["BITCOUNT", "s", "1"]), "ERR syntax error");
    assert_eq!(int(q(c, &["BITPOS", "s", "1"])), 1);
    assert_eq!(int(q(c, &["BITPOS", "s", "0"])), 0);
    assert_eq!(int(q(c, &["BITPOS", "s", "1", "7", "15", "BIT"])), 9);
    q(c, &["SETRANGE", "ff", "0", "\u{7f}"]);
    cmd("SET")
        .arg("ff")
        .arg(&[0xffu8, 0xff, 0xff][..])
        .exec(c)
        .unwrap();
    // No end given: the string reads as padded with clear bits.
    assert_eq!(int(q(c, &["BITPOS", "ff", "0"])), 24);
    assert_eq!(int(q(c, &["BITPOS", "ff", "0", "0", "-1"])), -1);
    assert_eq!(int(q(c, &["BITPOS", "nokey", "0"])), 0);
    assert_eq!(int(q(c, &["BITPOS", "nokey", "1"])), -1);

    q(c, &["SET", "x", "abc"]);
    cmd("SET").arg("y").arg(&b"a\x00c"[..]).exec(c).unwrap();
    assert_eq!(int(q(c, &["BITOP", "AND", "d", "x", "y"])), 3);
    assert_eq!(raw(c, "d"), b"a\x00c");
    assert_eq!(int(q(c, &["BITOP", "OR", "d", "x", "y", "nokey"])), 3);
    assert_eq!(raw(c, "d"), b"abc");
    q(c, &["BITOP", "NOT", "d", "x"]);
    assert_eq!(raw(c, "d"), [!b'a', !b'b', !b'c']);
    assert_eq!(
        qe(c, &["BITOP", "NOT", "d", "x", "y"]),
        "ERR BITOP NOT must be called with a single source key."
    );
    assert_eq!(int(q(c, &["BITOP", "AND", "d", "nokey"])), 0);
    assert_eq!(int(q(c, &["EXISTS", "d"])), 0);

    let ints = |v: Value| -> Vec<Option<i64>> { redis::from_redis_value(&v).unwrap() };
    assert_eq!(
        ints(q(
            c,
            &[
                "BITFIELD", "bf", "SET", "u8", "0", "255", "GET", "u8", "0", "INCRBY", "u8", "0",
                "10"
            ]
        )),
        [Some(0), Some(255), Some(9)]
    );
    assert_eq!(
        ints(q(
            c,
            &[
                "BITFIELD", "bf", "OVERFLOW", "SAT", "INCRBY", "u8", "0", "300", "OVERFLOW",
                "FAIL", "INCRBY", "u8", "0", "1", "GET", "i8", "0"
            ]
        )),
        [Some(255), None, Some(-1)]
    );
    assert_eq!(
        ints(q(
            c,
            &["BITFIELD", "bf", "SET", "i5", "#3", "-3", "GET", "i5", "#3"]
        )),
        [Some(0), Some(-3)]
    );
    assert_eq!(
        ints(q(
            c,
            &[
                "BITFIELD",
                "bf",
                "INCRBY",
                "i64",
                "64",
                "9223372036854775807",
                "INCRBY",
                "i64",
                "64",
                "1"
            ]
        )),
        [Some(i64::MAX), Some(i64::MIN)]
    );
    assert!(qe(c, &["BITFIELD", "bf", "SET", "u64", "0", "1"]).contains("Invalid bitfield type"));
    assert_eq!(
        qe(c, &["BITFIELD_RO", "bf", "SET", "u8", "0", "1"]),
        "ERR BITFIELD_RO only supports the GET subcommand"
    );
    assert_eq!(
        ints(q(c, &["BITFIELD_RO", "bf", "GET", "u4", "0"])),
        [Some(15)]
    );
    // A failed write still sizes the string, as in Redis.
    assert_eq!(
        ints(q(
            c,
            &["BITFIELD", "bf2", "OVERFLOW", "FAIL", "SET", "u2", "0", "9"]
        )),
        [None]
    );
    assert_eq!(int(q(c, &["STRLEN", "bf2"])), 1);

    q(c, &["LPUSH", "list", "a"]);
    for args in [
        &["SETBIT", "list", "1", "1"][..],
        &["GETBIT", "list", "1"],
        &["BITCOUNT", "list"],
        &["BITFIELD", "list", "GET", "u8", "0"],
        &["BITOP", "AND", "d", "list"],
    ] {
        assert!(qe(c, args).starts_with("WRONGTYPE"), "{args:?}");
    }
}

#[test]
fn hyperloglog() {
    let node = TestNode::start(|_| {});
    let mut c = node.client();
    let c = &mut c;
    assert_eq!(
        int(q(c, &["PFADD", "h", "a", "b", "c", "d", "e", "f", "g"])),
        1
    );
    assert_eq!(int(q(c, &["PFADD", "h", "a", "b"])), 0);
    assert_eq!(int(q(c, &["PFADD", "h"])), 0);
    assert_eq!(int(q(c, &["PFCOUNT", "h"])), 7);
    assert_eq!(int(q(c, &["PFADD", "new"])), 1);
    assert_eq!(int(q(c, &["PFCOUNT", "new", "nokey"])), 0);
    assert_eq!(text(q(c, &["TYPE", "h"])), "string");
    assert!(raw(c, "h").starts_with(b"HYLL"));
    // 100k distinct elements, in batches: within Redis's error.
    let mut pipe = redis::pipe();
    for batch in 0..100 {
        let mut p = cmd("PFADD");
        p.arg("big");
        for i in 0..1000 {
            p.arg(format!("user:{batch}:{i}"));
        }
        pipe.add_command(p).ignore();
    }
    pipe.exec(c).unwrap();
    let n = int(q(c, &["PFCOUNT", "big"]));
    assert!((n - 100_000).abs() < 2_000, "PFCOUNT gave {n}");
    assert_eq!(raw(c, "big").len(), 16 + 12288, "a big sketch is dense");
    q(c, &["PFADD", "h2", "f", "g", "x", "y"]);
    assert_eq!(int(q(c, &["PFCOUNT", "h", "h2"])), 9);
    assert_eq!(q(c, &["PFMERGE", "m", "h", "h2"]), Value::Okay);
    assert_eq!(int(q(c, &["PFCOUNT", "m"])), 9);
    q(c, &["SET", "plain", "hello"]);
    let bad = "WRONGTYPE Key is not a valid HyperLogLog string value.";
    assert_eq!(qe(c, &["PFADD", "plain", "x"]), bad);
    assert_eq!(qe(c, &["PFCOUNT", "plain"]), bad);
    assert_eq!(qe(c, &["PFMERGE", "m", "plain"]), bad);
    q(c, &["LPUSH", "list", "a"]);
    assert!(qe(c, &["PFADD", "list", "a"]).starts_with("WRONGTYPE"));
}

#[test]
fn geo() {
    let node = TestNode::start(|_| {});
    let mut c = node.client();
    let c = &mut c;
    let add = [
        "GEOADD",
        "Sicily",
        "13.361389",
        "38.115556",
        "Palermo",
        "15.087269",
        "37.502669",
        "Catania",
    ];
    assert_eq!(int(q(c, &add)), 2);
    // Within the same cell: the score, and so the position, stay.
    assert_eq!(
        int(q(
            c,
            &[
                "GEOADD",
                "Sicily",
                "CH",
                "13.361390",
                "38.115556",
                "Palermo"
            ]
        )),
        0
    );
    assert_eq!(
        int(q(
            c,
            &["GEOADD", "Sicily", "CH", "13.4", "38.115556", "Palermo"]
        )),
        1
    );
    q(
        c,
        &["GEOADD", "Sicily", "13.361389", "38.115556", "Palermo"],
    );
    assert_eq!(
        qe(c, &["GEOADD", "Sicily", "181", "1", "x"]),
        "ERR invalid longitude,latitude pair 181.000000,1.000000"
    );
    assert_eq!(text(q(c, &["TYPE", "Sicily"])), "zset");
    assert_eq!(
        text(q(c, &["GEODIST", "Sicily", "Palermo", "Catania"])),
        "166274.1516"
    );
    assert_eq!(
        text(q(c, &["GEODIST", "Sicily", "Palermo", "Catania", "km"])),
        "166.2742"
    );
    assert_eq!(q(c, &["GEODIST", "Sicily", "Palermo", "nope"]), Value::Nil);
    assert_eq!(
        qe(c, &["GEODIST", "Sicily", "Palermo", "Catania", "yd"]),
        "ERR unsupported unit provided. please use M, KM, FT, MI"
    );
    let pos: Vec<Option<Vec<String>>> =
        redis::from_redis_value(&q(c, &["GEOPOS", "Sicily", "Palermo", "nope"])).unwrap();
    assert_eq!(
        pos,
        [
            Some(vec![
                "13.36138933897018433".to_string(),
                "38.11555639549629859".to_string()
            ]),
            None
        ]
    );
    let hashes: Vec<Option<String>> =
        redis::from_redis_value(&q(c, &["GEOHASH", "Sicily", "Palermo", "Catania", "x"])).unwrap();
    assert_eq!(
        hashes,
        [Some("sqc8b49rny0".into()), Some("sqdtr74hyu0".into()), None]
    );
    q(
        c,
        &[
            "GEOADD",
            "Sicily",
            "12.758489",
            "38.788135",
            "edge1",
            "17.241510",
            "38.788135",
            "edge2",
        ],
    );
    assert_eq!(
        strings(q(
            c,
            &[
                "GEOSEARCH",
                "Sicily",
                "FROMLONLAT",
                "15",
                "37",
                "BYRADIUS",
                "200",
                "km",
                "ASC"
            ]
        )),
        ["Catania", "Palermo"]
    );
    assert_eq!(
        strings(q(
            c,
            &[
                "GEOSEARCH",
                "Sicily",
                "FROMLONLAT",
                "15",
                "37",
                "BYBOX",
                "400",
                "400",
                "km",
                "ASC"
            ]
        )),
        ["Catania", "Palermo", "edge2", "edge1"]
    );
    let with: Vec<(String, String, i64, Vec<String>)> = redis::from_redis_value(&q(
        c,
        &[
            "GEORADIUS",
            "Sicily",
            "15",
            "37",
            "200",
            "km",
            "WITHDIST",
            "WITHHASH",
            "WITHCOORD",
            "COUNT",
            "1",
        ],
    ))
    .unwrap();
    assert_eq!(with.len(), 1);
    assert_eq!(
        (with[0].0.as_str(), with[0].1.as_str()),
        ("Catania", "56.4413")
    );
    assert_eq!(with[0].2, 3479447370796909);
    assert_eq!(
        strings(q(
            c,
            &[
                "GEORADIUSBYMEMBER",
                "Sicily",
                "Palermo",
                "200",
                "km",
                "DESC"
            ]
        )),
        ["Catania", "edge1", "Palermo"]
    );
    assert_eq!(
        int(q(
            c,
            &[
                "GEORADIUS",
                "Sicily",
                "15",
                "37",
                "200",
                "km",
                "STOREDIST",
                "near"
            ]
        )),
        2
    );
    assert_eq!(
        strings(q(c, &["ZRANGE", "near", "0", "-1"])),
        ["Catania", "Palermo"]
    );
    assert_eq!(
        int(q(
            c,
            &[
                "GEOSEARCHSTORE",
                "box",
                "Sicily",
                "FROMMEMBER",
                "Catania",
                "BYBOX",
                "400",
                "400",
                "km",
                "COUNT",
                "3"
            ]
        )),
        3
    );
    assert_eq!(int(q(c, &["ZCARD", "box"])), 3);
    assert_eq!(
        qe(
            c,
            &[
                "GEOSEARCH",
                "Sicily",
                "BYRADIUS",
                "1",
                "km",
                "ASC",
                "WITHDIST"
            ]
        ),
        "ERR exactly one of FROMMEMBER or FROMLONLAT can be specified for GEOSEARCH"
    );
    assert_eq!(
        qe(
            c,
            &[
                "GEOSEARCH",
                "Sicily",
                "FROMMEMBER",
                "nope",
                "BYRADIUS",
                "1",
                "km"
            ]
        ),
        "ERR could not decode requested zset member"
    );
    assert_eq!(
        qe(c, &["GEORADIUS", "Sicily", "15", "37", "200", "km", "ANY"]),
        "ERR the ANY argument requires COUNT argument"
    );
    assert_eq!(
        qe(
            c,
            &[
                "GEORADIUS_RO",
                "Sicily",
                "15",
                "37",
                "200",
                "km",
                "STORE",
                "x"
            ]
        ),
        "ERR syntax error"
    );
    // A search over the whole globe finds every member once.
    q(
        c,
        &[
            "GEOADD", "world", "-179.9", "-85", "a", "179.9", "85", "b", "0", "0", "c", "139.69",
            "35.68", "g",
        ],
    );
    let mut all = strings(q(
        c,
        &[
            "GEOSEARCH",
            "world",
            "FROMLONLAT",
            "0",
            "0",
            "BYRADIUS",
            "20000",
            "km",
        ],
    ));
    all.sort();
    assert_eq!(all, ["a", "b", "c", "g"]);
    q(c, &["SET", "str", "x"]);
    assert!(qe(c, &["GEOADD", "str", "1", "1", "m"]).starts_with("WRONGTYPE"));
}

#[test]
fn keys_and_lcs() {
    let node = TestNode::start(|_| {});
    let mut c = node.client();
    let c = &mut c;
    q(c, &["SET", "a", "ohmytext"]);
    q(c, &["SET", "b", "mynewtext"]);
    assert_eq!(text(q(c, &["LCS", "a", "b"])), "mytext");
    assert_eq!(int(q(c, &["LCS", "a", "b", "LEN"])), 6);
    let idx = q(
        c,
        &["LCS", "a", "b", "IDX", "MINMATCHLEN", "4", "WITHMATCHLEN"],
    );
    let expect = Value::Array(vec![
        Value::BulkString(b"matches".to_vec()),
        Value::Array(vec![Value::Array(vec![
            Value::Array(vec![Value::Int(4), Value::Int(7)]),
            Value::Array(vec![Value::Int(5), Value::Int(8)]),
            Value::Int(4),
        ])]),
        Value::BulkString(b"len".to_vec()),
        Value::Int(6),
    ]);
    assert_eq!(idx, expect);
    assert_eq!(
        qe(c, &["LCS", "a", "b", "LEN", "IDX"]),
        "ERR If you want both the length and indexes, please just use IDX."
    );

    q(c, &["RPUSH", "nums", "3", "1", "2", "10"]);
    assert_eq!(strings(q(c, &["SORT", "nums"])), ["1", "2", "3", "10"]);
    assert_eq!(
        strings(q(c, &["SORT", "nums", "ALPHA", "DESC", "LIMIT", "1", "2"])),
        ["2", "10"]
    );
    q(
        c,
        &["MSET", "w_1", "30", "w_2", "20", "w_3", "10", "w_10", "5"],
    );
    q(c, &["HSET", "h_1", "f", "one"]);
    let got: Vec<Option<String>> = redis::from_redis_value(&q(
        c,
        &["SORT", "nums", "BY", "w_*", "GET", "#", "GET", "h_*->f"],
    ))
    .unwrap();
    assert_eq!(
        got,
        [
            Some("10".into()),
            None,
            Some("3".into()),
            None,
            Some("2".into()),
            None,
            Some("1".into()),
            Some("one".into())
        ]
    );
    assert_eq!(
        strings(q(c, &["SORT", "nums", "BY", "nosort", "DESC"])),
        ["10", "2", "1", "3"]
    );
    assert_eq!(int(q(c, &["SORT", "nums", "DESC", "STORE", "dst"])), 4);
    assert_eq!(
        strings(q(c, &["LRANGE", "dst", "0", "-1"])),
        ["10", "3", "2", "1"]
    );
    assert_eq!(
        qe(c, &["SORT_RO", "nums", "STORE", "x"]),
        "ERR syntax error"
    );
    q(c, &["RPUSH", "words", "b", "a"]);
    assert_eq!(
        qe(c, &["SORT", "words"]),
        "ERR One or more scores can't be converted into double"
    );
    q(c, &["ZADD", "zs", "1", "c", "2", "b", "3", "a"]);
    assert_eq!(strings(q(c, &["SORT", "zs", "ALPHA"])), ["a", "b", "c"]);
    assert!(qe(c, &["SORT", "a"]).starts_with("WRONGTYPE"));

    // COPY keeps the TTL and the type; MOVE goes to another database.
    q(c, &["SET", "c1", "hello", "EX", "100"]);
    assert_eq!(int(q(c, &["COPY", "c1", "c2"])), 1);
    assert!(int(q(c, &["TTL", "c2"])) > 90);
    assert_eq!(int(q(c, &["COPY", "c1", "c2"])), 0);
    assert_eq!(int(q(c, &["COPY", "c1", "c2", "REPLACE"])), 1);
    assert_eq!(int(q(c, &["COPY", "zs", "zs2"])), 1);
    assert_eq!(
        strings(q(c, &["ZRANGE", "zs2", "0", "-1"])),
        ["c", "b", "a"]
    );
    assert_eq!(
        qe(c, &["COPY", "c1", "c1"]),
        "ERR source and destination objects are the same"
    );
    assert_eq!(int(q(c, &["COPY", "c1", "c1", "DB", "1"])), 1);
    assert_eq!(int(q(c, &["MOVE", "c1", "2"])), 1);
    assert_eq!(int(q(c, &["EXISTS", "c1"])), 0);
    assert_eq!(int(q(c, &["MOVE", "nokey", "2"])), 0);
    q(c, &["SELECT", "2"]);
    assert_eq!(text(q(c, &["GET", "c1"])), "hello");
    q(c, &["SELECT", "1"]);
    assert_eq!(text(q(c, &["GET", "c1"])), "hello");
    q(c, &["SELECT", "0"]);

    // DUMP and RESTORE round-trip every type; damage is refused.
    q(c, &["HSET", "hh", "f", "v", "g", "w"]);
    q(c, &["SADD", "ss", "x", "y"]);
    q(c, &["XADD", "xs", "1-1", "f", "v"]);
    q(c, &["PFADD", "hl", "a", "b"]);
    for key in ["c2", "nums", "hh", "ss", "zs", "xs", "hl"] {
        let payload: Vec<u8> = cmd("DUMP").arg(key).query(c).unwrap();
        let copy = format!("{key}:restored");
        cmd("RESTORE")
            .arg(&copy)
            .arg(0)
            .arg(&payload)
            .exec(c)
            .unwrap();
        assert_eq!(text(q(c, &["TYPE", key])), text(q(c, &["TYPE", &copy])));
        assert_eq!(contents(c, key), contents(c, &copy), "{key}");
        let e = cmd("RESTORE")
            .arg(&copy)
            .arg(0)
            .arg(&payload)
            .exec(c)
            .unwrap_err();
        assert_eq!(e.code(), Some("BUSYKEY"));
        let mut bad = payload.clone();
        bad[3] ^= 0x40;
        let e = cmd("RESTORE")
            .arg(&copy)
            .arg(0)
            .arg(&bad)
            .arg("REPLACE")
            .exec(c)
            .unwrap_err();
        assert_eq!(
            e.detail(),
            Some("DUMP payload version or checksum are wrong")
        );
    }
    assert_eq!(
        strings(q(c, &["LRANGE", "nums:restored", "0", "-1"])),
        ["3", "1", "2", "10"]
    );
    assert_eq!(int(q(c, &["PFCOUNT", "hl:restored"])), 2);
    let payload: Vec<u8> = cmd("DUMP").arg("c2").query(c).unwrap();
    cmd("RESTORE")
        .arg("ttl")
        .arg(5000)
        .arg(&payload)
        .exec(c)
        .unwrap();
    let pttl = int(q(c, &["PTTL", "ttl"]));
    assert!(pttl > 0 && pttl <= 5000, "{pttl}");
    cmd("RESTORE")
        .arg("gone")
        .arg(1)
        .arg(&payload)
        .arg("ABSTTL")
        .exec(c)
        .unwrap();
    assert_eq!(int(q(c, &["EXISTS", "gone"])), 0);
    assert_eq!(q(c, &["DUMP", "nokey"]), Value::Nil);
}

/// SETRANGE, APPEND, SETBIT, BITFIELD and PFADD log only the bytes they
/// change: spilled to the disk tier mid-way, restarted, and spilled again,
/// the strings come back the same. (Replaying those byte ranges after a
/// SIGKILL is tested in `recover_after_kill`.)
#[test]
fn string_edits_survive_restart_and_spill() {
    let mut node = TestNode::start(|cfg| {
        cfg.storage.appendfsync = strata::storage::AppendFsync::Always;
    });
    let mut c = node.client();
    let mut expect: Vec<(String, Vec<u8>)> = Vec::new();
    for round in 0..3 {
        for i in 0..40 {
            let k = format!("k{i}");
            match i % 5 {
                0 => q(&mut c, &["APPEND", &k, &format!("r{round}")]),
                1 => q(&mut c, &["SETRANGE", &k, &(round * 7).to_string(), "xyz"]),
                2 => q(&mut c, &["SETBIT", &k, &(round * 100 + i).to_string(), "1"]),
                3 => q(
                    &mut c,
                    &[
                        "BITFIELD",
                        &k,
                        "INCRBY",
                        "u16",
                        &format!("#{round}"),
                        "1000",
                    ],
                ),
                _ => q(
                    &mut c,
                    &["PFADD", &k, &format!("e{round}"), &format!("f{round}")],
                ),
            };
        }
        if round == 1 {
            node.h().node.store.spill_all().unwrap();
        }
    }
    for i in 0..40 {
        let k = format!("k{i}");
        expect.push((k.clone(), raw(&mut c, &k)));
    }
    drop(c);
    node.restart();
    let mut c = node.client();
    for (k, v) in &expect {
        assert_eq!(&raw(&mut c, k), v, "{k} after restart");
    }
    node.h().node.store.spill_all().unwrap();
    for (k, v) in &expect {
        assert_eq!(&raw(&mut c, k), v, "{k} from disk");
    }
    assert_eq!(int(q(&mut c, &["PFCOUNT", "k4"])), 6);
}
