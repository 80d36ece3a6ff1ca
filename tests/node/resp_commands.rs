//! Every command group over a real socket with the `redis` crate, with
//! Redis's error texts.

use crate::common::TestNode;
use redis::{cmd, Value};

fn err_text(e: redis::RedisError) -> String {
    format!("{} {}", e.code().unwrap_or(""), e.detail().unwrap_or(""))
}

#[test]
fn strings() {
    let node = TestNode::start(|_| {});
    let mut c = node.client();
    let _: () = cmd("SET").arg("k").arg("v").query(&mut c).unwrap();
    assert_eq!(cmd("GET").arg("k").query::<String>(&mut c).unwrap(), "v");
    assert_eq!(
        cmd("SET")
            .arg("k")
            .arg("w")
            .arg("NX")
            .query::<Option<String>>(&mut c)
            .unwrap(),
        None
    );
    assert_eq!(
        cmd("SET")
            .arg("k")
            .arg("w")
            .arg("XX")
            .arg("GET")
            .query::<Option<String>>(&mut c)
            .unwrap()
            .as_deref(),
        Some("v")
    );
    assert_eq!(
        cmd("SET")
            .arg("new")
            .arg("x")
            .arg("XX")
            .query::<Option<String>>(&mut c)
            .unwrap(),
        None
    );
    let _: () = cmd("SET")
        .arg("t")
        .arg("1")
        .arg("EX")
        .arg("100")
        .query(&mut c)
        .unwrap();
    let ttl: i64 = cmd("TTL").arg("t").query(&mut c).unwrap();
    assert!((99..=100).contains(&ttl), "{ttl}");
    let _: () = cmd("SET")
        .arg("t")
        .arg("2")
        .arg("KEEPTTL")
        .query(&mut c)
        .unwrap();
    assert!(cmd("PTTL").arg("t").query::<i64>(&mut c).unwrap() > 90_000);
    assert_eq!(
        cmd("SETNX").arg("k").arg("z").query::<i64>(&mut c).unwrap(),
        0
    );
    let _: () = cmd("SETEX")
        .arg("se")
        .arg("10")
        .arg("v")
        .query(&mut c)
        .unwrap();
    let _: () = cmd("PSETEX")
        .arg("pse")
        .arg("10000")
        .arg("v")
        .query(&mut c)
        .unwrap();
    assert_eq!(
        cmd("GETSET")
            .arg("k")
            .arg("g")
            .query::<String>(&mut c)
            .unwrap(),
        "w"
    );
    assert_eq!(cmd("GETDEL").arg("k").query::<String>(&mut c).unwrap(), "g");
    assert_eq!(cmd("EXISTS").arg("k").query::<i64>(&mut c).unwrap(), 0);
    assert_eq!(
        cmd("GETEX")
            .arg("se")
            .arg("PERSIST")
            .query::<String>(&mut c)
            .unwrap(),
        "v"
    );
    assert_eq!(cmd("TTL").arg("se").query::<i64>(&mut c).unwrap(), -1);
    let _: () = cmd("MSET")
        .arg("a")
        .arg("1")
        .arg("b")
        .arg("2")
        .query(&mut c)
        .unwrap();
    assert_eq!(
        cmd("MGET")
            .arg("a")
            .arg("b")
            .arg("nope")
            .query::<Vec<Option<String>>>(&mut c)
            .unwrap(),
        vec![Some("1".into()), Some("2".into()), None]
    );
    assert_eq!(
        cmd("MSETNX")
            .arg("a")
            .arg("x")
            .arg("c")
            .arg("y")
            .query::<i64>(&mut c)
            .unwrap(),
        0
    );
    assert_eq!(
        cmd("MSETNX")
            .arg("c")
            .arg("x")
            .arg("d")
            .arg("y")
            .query::<i64>(&mut c)
            .unwrap(),
        1
    );
    assert_eq!(cmd("INCR").arg("n").query::<i64>(&mut c).unwrap(), 1);
    assert_eq!(
        cmd("INCRBY")
            .arg("n")
            .arg("10")
            .query::<i64>(&mut c)
            .unwrap(),
        11
    );
    assert_eq!(cmd("DECR").arg("n").query::<i64>(&mut c).unwrap(), 10);
    assert_eq!(
        cmd("DECRBY")
            .arg("n")
            .arg("5")
            .query::<i64>(&mut c)
            .unwrap(),
        5
    );
    assert_eq!(
        cmd("INCRBYFLOAT")
            .arg("f")
            .arg("10.5")
            .query::<String>(&mut c)
            .unwrap(),
        "10.5"
    );
    assert_eq!(
        cmd("INCRBYFLOAT")
            .arg("f")
            .arg("0.1")
            .query::<String>(&mut c)
            .unwrap(),
        "10.6"
    );
    assert_eq!(
        cmd("APPEND")
            .arg("s")
            .arg("Hello")
            .query::<i64>(&mut c)
            .unwrap(),
        5
    );
    assert_eq!(
        cmd("APPEND")
            .arg("s")
            .arg(" World")
            .query::<i64>(&mut c)
            .unwrap(),
        11
    );
    assert_eq!(cmd("STRLEN").arg("s").query::<i64>(&mut c).unwrap(), 11);
    assert_eq!(
        cmd("GETRANGE")
            .arg("s")
            .arg("0")
            .arg("4")
            .query::<String>(&mut c)
            .unwrap(),
        "Hello"
    );
    assert_eq!(
        cmd("GETRANGE")
            .arg("s")
            .arg("-5")
            .arg("-1")
            .query::<String>(&mut c)
            .unwrap(),
        "World"
    );
    assert_eq!(
        cmd("SETRANGE")
            .arg("s")
            .arg("6")
            .arg("Redis")
            .query::<i64>(&mut c)
            .unwrap(),
        11
    );
    assert_eq!(
        cmd("GET").arg("s").query::<String>(&mut c).unwrap(),
        "Hello Redis"
    );
    assert_eq!(
        cmd("SETRANGE")
            .arg("pad")
            .arg("3")
            .arg("x")
            .query::<i64>(&mut c)
            .unwrap(),
        4
    );
    assert_eq!(
        cmd("GET").arg("pad").query::<Vec<u8>>(&mut c).unwrap(),
        b"\0\0\0x".to_vec()
    );

    // Redis's error texts.
    let _: () = cmd("HSET")
        .arg("h")
        .arg("f")
        .arg("v")
        .query(&mut c)
        .unwrap();
    assert_eq!(
        err_text(cmd("GET").arg("h").query::<String>(&mut c).unwrap_err()),
        "WRONGTYPE Operation against a key holding the wrong kind of value"
    );
    assert_eq!(
        err_text(cmd("INCR").arg("s").query::<i64>(&mut c).unwrap_err()),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        err_text(
            cmd("INCRBY")
                .arg("n")
                .arg("abc")
                .query::<i64>(&mut c)
                .unwrap_err()
        ),
        "ERR value is not an integer or out of range"
    );
    let _: () = cmd("SET")
        .arg("big")
        .arg(i64::MAX.to_string())
        .query(&mut c)
        .unwrap();
    assert_eq!(
        err_text(cmd("INCR").arg("big").query::<i64>(&mut c).unwrap_err()),
        "ERR increment or decrement would overflow"
    );
    assert_eq!(
        err_text(
            cmd("SET")
                .arg("k")
                .arg("v")
                .arg("BOGUS")
                .query::<()>(&mut c)
                .unwrap_err()
        ),
        "ERR syntax error"
    );
    assert_eq!(
        err_text(
            cmd("SET")
                .arg("k")
                .arg("v")
                .arg("EX")
                .arg("0")
                .query::<()>(&mut c)
                .unwrap_err()
        ),
        "ERR invalid expire time in 'set' command"
    );
    assert_eq!(
        err_text(cmd("GET").query::<()>(&mut c).unwrap_err()),
        "ERR wrong number of arguments for 'get' command"
    );
    assert!(
        err_text(cmd("NOSUCH").arg("x").query::<()>(&mut c).unwrap_err())
            .starts_with("ERR unknown command 'NOSUCH', with args beginning with: 'x'")
    );
    assert_eq!(
        err_text(
            cmd("INCRBYFLOAT")
                .arg("f")
                .arg("x")
                .query::<String>(&mut c)
                .unwrap_err()
        ),
        "ERR value is not a valid float"
    );
}

#[test]
fn keys_and_ttls() {
    let node = TestNode::start(|_| {});
    let mut c = node.client();
    for i in 0..50 {
        let _: () = cmd("SET")
            .arg(format!("user:{i}"))
            .arg(i)
            .query(&mut c)
            .unwrap();
    }
    let _: () = cmd("HSET")
        .arg("hash:1")
        .arg("a")
        .arg("1")
        .query(&mut c)
        .unwrap();
    assert_eq!(cmd("DBSIZE").query::<i64>(&mut c).unwrap(), 51);
    assert_eq!(
        cmd("TYPE").arg("user:1").query::<String>(&mut c).unwrap(),
        "string"
    );
    assert_eq!(
        cmd("TYPE").arg("hash:1").query::<String>(&mut c).unwrap(),
        "hash"
    );
    assert_eq!(
        cmd("TYPE").arg("none").query::<String>(&mut c).unwrap(),
        "none"
    );
    assert_eq!(
        cmd("EXISTS")
            .arg("user:1")
            .arg("user:1")
            .arg("nope")
            .query::<i64>(&mut c)
            .unwrap(),
        2
    );
    assert_eq!(
        cmd("TOUCH")
            .arg("user:1")
            .arg("nope")
            .query::<i64>(&mut c)
            .unwrap(),
        1
    );
    let mut keys: Vec<String> = cmd("KEYS").arg("user:1*").query(&mut c).unwrap();
    keys.sort();
    assert_eq!(keys.len(), 11);
    // SCAN covers everything exactly once here (no concurrent changes).
    let mut cursor = "0".to_string();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..1000 {
        let (next, batch): (String, Vec<String>) = cmd("SCAN")
            .arg(&cursor)
            .arg("COUNT")
            .arg(7)
            .query(&mut c)
            .unwrap();
        seen.extend(batch);
        cursor = next;
        if cursor == "0" {
            break;
        }
    }
    assert_eq!(seen.len(), 51);
    let (_, hashes): (String, Vec<String>) = cmd("SCAN")
        .arg(0)
        .arg("TYPE")
        .arg("hash")
        .arg("COUNT")
        .arg(1000)
        .query(&mut c)
        .unwrap();
    assert_eq!(hashes, vec!["hash:1".to_string()]);
    assert!(cmd("RANDOMKEY")
        .query::<Option<String>>(&mut c)
        .unwrap()
        .is_some());
    assert_eq!(
        cmd("RENAME")
            .arg("user:1")
            .arg("renamed")
            .query::<String>(&mut c)
            .unwrap(),
        "OK"
    );
    assert_eq!(
        cmd("GET").arg("renamed").query::<String>(&mut c).unwrap(),
        "1"
    );
    assert_eq!(
        cmd("RENAMENX")
            .arg("renamed")
            .arg("user:2")
            .query::<i64>(&mut c)
            .unwrap(),
        0
    );
    assert_eq!(
        err_text(
            cmd("RENAME")
                .arg("missing")
                .arg("x")
                .query::<()>(&mut c)
                .unwrap_err()
        ),
        "ERR no such key"
    );
    // Expiry family with NX/XX/GT/LT.
    assert_eq!(cmd("TTL").arg("user:2").query::<i64>(&mut c).unwrap(), -1);
    assert_eq!(cmd("TTL").arg("missing").query::<i64>(&mut c).unwrap(), -2);
    assert_eq!(
        cmd("EXPIRE")
            .arg("user:2")
            .arg(100)
            .arg("XX")
            .query::<i64>(&mut c)
            .unwrap(),
        0
    );
    assert_eq!(
        cmd("EXPIRE")
            .arg("user:2")
            .arg(100)
            .arg("NX")
            .query::<i64>(&mut c)
            .unwrap(),
        1
    );
    assert_eq!(
        cmd("EXPIRE")
            .arg("user:2")
            .arg(50)
            .arg("GT")
            .query::<i64>(&mut c)
            .unwrap(),
        0
    );
    assert_eq!(
        cmd("EXPIRE")
            .arg("user:2")
            .arg(50)
            .arg("LT")
            .query::<i64>(&mut c)
            .unwrap(),
        1
    );
    assert_eq!(
        cmd("PEXPIRE")
            .arg("user:3")
            .arg(100_000)
            .query::<i64>(&mut c)
            .unwrap(),
        1
    );
    let at: i64 = cmd("EXPIRETIME").arg("user:3").query(&mut c).unwrap();
    let pat: i64 = cmd("PEXPIRETIME").arg("user:3").query(&mut c).unwrap();
    assert_eq!(at, pat / 1000);
    assert_eq!(
        cmd("PERSIST").arg("user:3").query::<i64>(&mut c).unwrap(),
        1
    );
    assert_eq!(
        cmd("EXPIREAT")
            .arg("user:4")
            .arg(1)
            .query::<i64>(&mut c)
            .unwrap(),
        1
    );
    assert_eq!(
        cmd("EXISTS").arg("user:4").query::<i64>(&mut c).unwrap(),
        0,
        "an expiry in the past deletes"
    );
    assert_eq!(
        cmd("PEXPIREAT")
            .arg("user:5")
            .arg(i64::MAX / 4)
            .query::<i64>(&mut c)
            .unwrap(),
        1
    );
    assert_eq!(
        err_text(
            cmd("EXPIRE")
                .arg("user:5")
                .arg(10)
                .arg("NX")
                .arg("XX")
                .query::<()>(&mut c)
                .unwrap_err()
        ),
        "ERR NX and XX, GT or LT options at the same time are not compatible"
    );
    assert_eq!(
        cmd("OBJECT")
            .arg("ENCODING")
            .arg("user:6")
            .query::<String>(&mut c)
            .unwrap(),
        "int"
    );
    assert_eq!(
        cmd("OBJECT")
            .arg("ENCODING")
            .arg("hash:1")
            .query::<String>(&mut c)
            .unwrap(),
        "listpack"
    );
    assert!(
        cmd("OBJECT")
            .arg("IDLETIME")
            .arg("user:6")
            .query::<i64>(&mut c)
            .unwrap()
            >= 0
    );
    assert_eq!(
        cmd("DEL")
            .arg("user:6")
            .arg("user:7")
            .arg("nope")
            .query::<i64>(&mut c)
            .unwrap(),
        2
    );
    assert_eq!(cmd("UNLINK").arg("user:8").query::<i64>(&mut c).unwrap(), 1);
    // strata's own: which tier holds a key, and its age.
    let tier: Vec<Value> = cmd("TIER").arg("user:9").query(&mut c).unwrap();
    assert_eq!(tier[0], Value::BulkString(b"tier".to_vec()));
    assert_eq!(tier[1], Value::BulkString(b"memory".to_vec()));
    assert_eq!(
        cmd("TIER")
            .arg("nope")
            .query::<Option<String>>(&mut c)
            .unwrap(),
        None
    );
}

#[test]
fn hashes() {
    let node = TestNode::start(|_| {});
    let mut c = node.client();
    assert_eq!(
        cmd("HSET")
            .arg("u")
            .arg("name")
            .arg("ann")
            .arg("age")
            .arg("30")
            .query::<i64>(&mut c)
            .unwrap(),
        2
    );
    assert_eq!(
        cmd("HSET")
            .arg("u")
            .arg("name")
            .arg("bob")
            .query::<i64>(&mut c)
            .unwrap(),
        0
    );
    assert_eq!(
        cmd("HMSET")
            .arg("u")
            .arg("x")
            .arg("1")
            .query::<String>(&mut c)
            .unwrap(),
        "OK"
    );
    assert_eq!(
        cmd("HSETNX")
            .arg("u")
            .arg("x")
            .arg("2")
            .query::<i64>(&mut c)
            .unwrap(),
        0
    );
    assert_eq!(
        cmd("HGET")
            .arg("u")
            .arg("name")
            .query::<String>(&mut c)
            .unwrap(),
        "bob"
    );
    assert_eq!(
        cmd("HMGET")
            .arg("u")
            .arg("name")
            .arg("nope")
            .query::<Vec<Option<String>>>(&mut c)
            .unwrap(),
        vec![Some("bob".into()), None]
    );
    let all: std::collections::HashMap<String, String> =
        cmd("HGETALL").arg("u").query(&mut c).unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(cmd("HLEN").arg("u").query::<i64>(&mut c).unwrap(), 3);
    assert_eq!(
        cmd("HEXISTS")
            .arg("u")
            .arg("age")
            .query::<i64>(&mut c)
            .unwrap(),
        1
    );
    assert_eq!(
        cmd("HSTRLEN")
            .arg("u")
            .arg("name")
            .query::<i64>(&mut c)
            .unwrap(),
        3
    );
    assert_eq!(
        cmd("HINCRBY")
            .arg("u")
            .arg("age")
            .arg("5")
            .query::<i64>(&mut c)
            .unwrap(),
        35
    );
    assert_eq!(
        cmd("HINCRBYFLOAT")
            .arg("u")
            .arg("score")
            .arg("1.5")
            .query::<String>(&mut c)
            .unwrap(),
        "1.5"
    );
    assert_eq!(
        err_text(
            cmd("HINCRBY")
                .arg("u")
                .arg("name")
                .arg("1")
                .query::<i64>(&mut c)
                .unwrap_err()
        ),
        "ERR hash value is not an integer"
    );
    let mut keys: Vec<String> = cmd("HKEYS").arg("u").query(&mut c).unwrap();
    keys.sort();
    assert_eq!(keys, vec!["age", "name", "score", "x"]);
    assert_eq!(
        cmd("HVALS")
            .arg("u")
            .query::<Vec<String>>(&mut c)
            .unwrap()
            .len(),
        4
    );
    assert!(cmd("HRANDFIELD")
        .arg("u")
        .query::<Option<String>>(&mut c)
        .unwrap()
        .is_some());
    assert_eq!(
        cmd("HRANDFIELD")
            .arg("u")
            .arg(2)
            .arg("WITHVALUES")
            .query::<Vec<String>>(&mut c)
            .unwrap()
            .len(),
        4
    );
    assert_eq!(
        cmd("HRANDFIELD")
            .arg("u")
            .arg(-6)
            .query::<Vec<String>>(&mut c)
            .unwrap()
            .len(),
        6
    );
    let (cur, items): (String, Vec<String>) = cmd("HSCAN")
        .arg("u")
        .arg(0)
        .arg("MATCH")
        .arg("a*")
        .query(&mut c)
        .unwrap();
    assert_eq!(
        (cur.as_str(), items),
        ("0", vec!["age".to_string(), "35".to_string()])
    );
    assert_eq!(
        cmd("HDEL")
            .arg("u")
            .arg("name")
            .arg("nope")
            .query::<i64>(&mut c)
            .unwrap(),
        1
    );
    assert_eq!(
        cmd("HDEL")
            .arg("u")
            .arg("age")
            .arg("score")
            .arg("x")
            .query::<i64>(&mut c)
            .unwrap(),
        3
    );
    assert_eq!(
        cmd("EXISTS").arg("u").query::<i64>(&mut c).unwrap(),
        0,
        "an emptied hash is removed"
    );
    let _: () = cmd("SET").arg("s").arg("v").query(&mut c).unwrap();
    assert_eq!(
        err_text(
            cmd("HSET")
                .arg("s")
                .arg("f")
                .arg("v")
                .query::<i64>(&mut c)
                .unwrap_err()
        ),
        "WRONGTYPE Operation against a key holding the wrong kind of value"
    );
    assert_eq!(
        err_text(
            cmd("HSET")
                .arg("u")
                .arg("f")
                .query::<i64>(&mut c)
                .unwrap_err()
        ),
        "ERR wrong number of arguments for 'hset' command"
    );
}

#[test]
fn connection_and_server() {
    let node = TestNode::start(|_| {});
    let mut c = node.client();
    assert_eq!(cmd("PING").query::<String>(&mut c).unwrap(), "PONG");
    assert_eq!(cmd("PING").arg("hi").query::<String>(&mut c).unwrap(), "hi");
    assert_eq!(cmd("ECHO").arg("x").query::<String>(&mut c).unwrap(), "x");
    let _: () = cmd("SET").arg("db0key").arg("1").query(&mut c).unwrap();
    let _: () = cmd("SELECT").arg(3).query(&mut c).unwrap();
    assert_eq!(cmd("EXISTS").arg("db0key").query::<i64>(&mut c).unwrap(), 0);
    assert_eq!(
        err_text(cmd("SELECT").arg(16).query::<()>(&mut c).unwrap_err()),
        "ERR DB index is out of range"
    );
    let _: () = cmd("SET").arg("db3key").arg("1").query(&mut c).unwrap();
    assert_eq!(cmd("DBSIZE").query::<i64>(&mut c).unwrap(), 1);
    let _: () = cmd("FLUSHDB").arg("ASYNC").query(&mut c).unwrap();
    assert_eq!(cmd("DBSIZE").query::<i64>(&mut c).unwrap(), 0);
    let _: () = cmd("SELECT").arg(0).query(&mut c).unwrap();
    assert_eq!(cmd("DBSIZE").query::<i64>(&mut c).unwrap(), 1);
    let id: i64 = cmd("CLIENT").arg("ID").query(&mut c).unwrap();
    assert!(id > 0);
    let _: () = cmd("CLIENT")
        .arg("SETNAME")
        .arg("worker-1")
        .query(&mut c)
        .unwrap();
    assert_eq!(
        cmd("CLIENT")
            .arg("GETNAME")
            .query::<String>(&mut c)
            .unwrap(),
        "worker-1"
    );
    let list: String = cmd("CLIENT").arg("LIST").query(&mut c).unwrap();
    assert!(list.contains("name=worker-1"), "{list}");
    let info: String = cmd("CLIENT").arg("INFO").query(&mut c).unwrap();
    assert!(info.contains(&format!("id={id} ")));
    let mut victim = node.client();
    let vid: i64 = cmd("CLIENT").arg("ID").query(&mut victim).unwrap();
    assert_eq!(
        cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(vid)
            .query::<i64>(&mut c)
            .unwrap(),
        1
    );
    assert!(
        cmd("PING").query::<String>(&mut victim).is_err(),
        "killed client is disconnected"
    );
    assert!(cmd("COMMAND").arg("COUNT").query::<i64>(&mut c).unwrap() > 70);
    let docs: Value = cmd("COMMAND").arg("DOCS").arg("get").query(&mut c).unwrap();
    assert!(matches!(docs, Value::Array(_) | Value::Map(_)));
    let info: String = cmd("INFO").query(&mut c).unwrap();
    for section in [
        "# Server",
        "# Clients",
        "# Memory",
        "# Stats",
        "# Keyspace",
        "# Tiers",
        "redis_version:",
        "db0:keys=1",
        "memory_used_bytes:",
    ] {
        assert!(info.contains(section), "INFO lacks {section}");
    }
    let tiers: String = cmd("INFO").arg("tiers").query(&mut c).unwrap();
    assert!(tiers.starts_with("# Tiers") && !tiers.contains("# Server"));
    let cfg: Vec<String> = cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory")
        .query(&mut c)
        .unwrap();
    assert_eq!(
        cfg,
        vec!["maxmemory".to_string(), (64u64 << 20).to_string()]
    );
    let _: () = cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("128mb")
        .arg("appendfsync")
        .arg("always")
        .query(&mut c)
        .unwrap();
    let cfg: Vec<String> = cmd("CONFIG")
        .arg("GET")
        .arg("append*")
        .query(&mut c)
        .unwrap();
    assert!(cfg.contains(&"always".to_string()), "{cfg:?}");
    // A bad value changes nothing, even when paired with a good one.
    assert!(err_text(
        cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory")
            .arg("1gb")
            .arg("appendfsync")
            .arg("sometimes")
            .query::<()>(&mut c)
            .unwrap_err()
    )
    .contains("appendfsync"));
    let cfg: Vec<String> = cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory")
        .query(&mut c)
        .unwrap();
    assert_eq!(cfg[1], (128u64 << 20).to_string());
    let _: () = cmd("CONFIG").arg("RESETSTAT").query(&mut c).unwrap();
    let time: Vec<String> = cmd("TIME").query(&mut c).unwrap();
    assert!(time[0].parse::<u64>().unwrap() > 1_700_000_000);
    let _: () = cmd("FLUSHALL").query(&mut c).unwrap();
    assert_eq!(cmd("DBSIZE").query::<i64>(&mut c).unwrap(), 0);
}

#[test]
fn pipelining_keeps_order() {
    let node = TestNode::start(|_| {});
    let mut c = node.client();
    let mut p = redis::pipe();
    for i in 0..500 {
        p.cmd("SET").arg(format!("p{i}")).arg(i).ignore();
        p.cmd("INCR").arg(format!("p{i}"));
    }
    let out: Vec<i64> = p.query(&mut c).unwrap();
    assert_eq!(out, (1..=500).collect::<Vec<i64>>());
}

#[test]
fn auth_and_resp3() {
    let node = TestNode::start(|c| c.requirepass = Some("s3cret".into()));
    let mut raw = node.raw();
    assert_eq!(
        raw.roundtrip(b"GET x\r\n"),
        "-NOAUTH Authentication required.\r\n"
    );
    assert_eq!(
        raw.roundtrip(b"AUTH wrong\r\n"),
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    assert_eq!(raw.roundtrip(b"AUTH s3cret\r\n"), "+OK\r\n");
    assert_eq!(raw.roundtrip(b"SET x 1\r\n"), "+OK\r\n");
    // HELLO 3 switches to RESP3: maps and nulls change shape.
    raw.send(b"HELLO 3\r\n");
    let hello = String::from_utf8_lossy(&raw.read_until(b"*0\r\n")).into_owned();
    assert!(hello.starts_with("%7\r\n"), "{hello}");
    assert!(hello.contains("proto\r\n:3"), "{hello}");
    assert_eq!(raw.roundtrip(b"GET missing\r\n"), "_\r\n");
    assert_eq!(raw.roundtrip(b"HSET h f v\r\n"), ":1\r\n");
    raw.send(b"HGETALL h\r\n");
    assert_eq!(raw.read_until(b"v\r\n"), b"%1\r\n$1\r\nf\r\n$1\r\nv\r\n");
    assert_eq!(raw.roundtrip(b"INCRBYFLOAT fl 1.5\r\n"), "$3\r\n1.5\r\n");
    // With the redis crate too.
    let client = redis::Client::open(format!("redis://:s3cret@{}/", node.h().resp_addr)).unwrap();
    let mut c = client.get_connection().unwrap();
    assert_eq!(cmd("GET").arg("x").query::<String>(&mut c).unwrap(), "1");
    let bad = redis::Client::open(format!("redis://:nope@{}/", node.h().resp_addr)).unwrap();
    assert!(bad.get_connection().is_err());
}

#[test]
fn key_positions_and_cluster_probes() {
    let node = TestNode::start(|_| {});
    let mut c = node.client();
    // What cluster clients and test suites read first.
    let info: String = cmd("INFO").query(&mut c).unwrap();
    assert!(info.contains("# Cluster\r\ncluster_enabled:0"), "{info}");
    assert!(info.contains("# Replication\r\nrole:master"), "{info}");
    let info: String = cmd("INFO").arg("cluster").query(&mut c).unwrap();
    assert!(info.contains("cluster_enabled:0") && !info.contains("# Memory"));
    // Redis's own slot numbers, hash tags included.
    let slot: i64 = cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg("foo")
        .query(&mut c)
        .unwrap();
    assert_eq!(slot, 12182);
    let a: i64 = cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg("{user1000}.following")
        .query(&mut c)
        .unwrap();
    let b: i64 = cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg("{user1000}.followers")
        .query(&mut c)
        .unwrap();
    assert_eq!(a, b);
    let e = cmd("CLUSTER")
        .arg("NODES")
        .query::<String>(&mut c)
        .unwrap_err();
    assert!(err_text(e).contains("cluster support disabled"));
    // COMMAND GETKEYS reads the same key positions routing uses.
    let keys: Vec<String> = cmd("COMMAND")
        .arg("GETKEYS")
        .arg("MSET")
        .arg("a")
        .arg("1")
        .arg("b")
        .arg("2")
        .query(&mut c)
        .unwrap();
    assert_eq!(keys, vec!["a", "b"]);
    let keys: Vec<String> = cmd("COMMAND")
        .arg("GETKEYS")
        .arg("RENAME")
        .arg("x")
        .arg("y")
        .query(&mut c)
        .unwrap();
    assert_eq!(keys, vec!["x", "y"]);
    let keys: Vec<String> = cmd("COMMAND")
        .arg("GETKEYS")
        .arg("OBJECT")
        .arg("ENCODING")
        .arg("k")
        .query(&mut c)
        .unwrap();
    assert_eq!(keys, vec!["k"]);
    let e = cmd("COMMAND")
        .arg("GETKEYS")
        .arg("PING")
        .query::<Vec<String>>(&mut c)
        .unwrap_err();
    assert!(err_text(e).contains("no key arguments"));
    let e = cmd("COMMAND")
        .arg("GETKEYS")
        .arg("GET")
        .query::<Vec<String>>(&mut c)
        .unwrap_err();
    assert!(err_text(e).contains("Invalid number of arguments"));
    // COMMAND INFO reports first/last/step.
    let v: Value = cmd("COMMAND")
        .arg("INFO")
        .arg("MSET")
        .query(&mut c)
        .unwrap();
    let Value::Array(items) = v else {
        panic!("{v:?}")
    };
    let Value::Array(info) = &items[0] else {
        panic!("{items:?}")
    };
    assert_eq!(info[3], Value::Int(1));
    assert_eq!(info[4], Value::Int(-1));
    assert_eq!(info[5], Value::Int(2));
}

#[test]
fn lists() {
    let node = TestNode::start(|_| {});
    let mut c = node.client();
    let q = |c: &mut redis::Connection, args: &[&str]| -> Value {
        let mut command = cmd(args[0]);
        for a in &args[1..] {
            command.arg(*a);
        }
        command.query(c).unwrap()
    };
    let strings = |v: Value| -> Vec<String> { redis::from_redis_value(&v).unwrap() };
    let int = |v: Value| -> i64 { redis::from_redis_value(&v).unwrap() };
    assert_eq!(int(q(&mut c, &["RPUSH", "l", "a", "b", "c"])), 3);
    assert_eq!(int(q(&mut c, &["LPUSH", "l", "x", "y"])), 5);
    assert_eq!(
        strings(q(&mut c, &["LRANGE", "l", "0", "-1"])),
        ["y", "x", "a", "b", "c"]
    );
    assert_eq!(
        strings(q(&mut c, &["LRANGE", "l", "-2", "100"])),
        ["b", "c"]
    );
    assert_eq!(
        strings(q(&mut c, &["LRANGE", "l", "3", "1"])),
        Vec::<String>::new()
    );
    assert_eq!(int(q(&mut c, &["LLEN", "l"])), 5);
    assert_eq!(
        q(&mut c, &["LINDEX", "l", "-1"]),
        Value::BulkString(b"c".to_vec())
    );
    assert_eq!(q(&mut c, &["LINDEX", "l", "9"]), Value::Nil);
    assert_eq!(int(q(&mut c, &["LPUSHX", "nolist", "a"])), 0);
    assert_eq!(int(q(&mut c, &["EXISTS", "nolist"])), 0);
    assert_eq!(q(&mut c, &["LPOP", "l"]), Value::BulkString(b"y".to_vec()));
    assert_eq!(strings(q(&mut c, &["RPOP", "l", "2"])), ["c", "b"]);
    assert_eq!(q(&mut c, &["LPOP", "nolist", "2"]), Value::Nil);
    assert_eq!(q(&mut c, &["LPOP", "nolist"]), Value::Nil);
    assert_eq!(
        err_text(
            cmd("LPOP")
                .arg("l")
                .arg("-1")
                .query::<Value>(&mut c)
                .unwrap_err()
        ),
        "ERR value is out of range, must be positive"
    );
    // l = x a
    assert_eq!(int(q(&mut c, &["LINSERT", "l", "BEFORE", "a", "m"])), 3);
    assert_eq!(int(q(&mut c, &["LINSERT", "l", "AFTER", "zz", "m"])), -1);
    assert_eq!(int(q(&mut c, &["LINSERT", "nolist", "AFTER", "a", "m"])), 0);
    assert_eq!(q(&mut c, &["LSET", "l", "-1", "A"]), Value::Okay);
    assert_eq!(
        err_text(
            cmd("LSET")
                .arg("l")
                .arg("7")
                .arg("v")
                .query::<Value>(&mut c)
                .unwrap_err()
        ),
        "ERR index out of range"
    );
    assert_eq!(
        err_text(
            cmd("LSET")
                .arg("nolist")
                .arg("0")
                .arg("v")
                .query::<Value>(&mut c)
                .unwrap_err()
        ),
        "ERR no such key"
    );
    assert_eq!(
        strings(q(&mut c, &["LRANGE", "l", "0", "-1"])),
        ["x", "m", "A"]
    );
    // LREM from the head, the tail, and all.
    q(&mut c, &["DEL", "r"]);
    q(&mut c, &["RPUSH", "r", "a", "b", "a", "c", "a"]);
    assert_eq!(int(q(&mut c, &["LREM", "r", "-2", "a"])), 2);
    assert_eq!(
        strings(q(&mut c, &["LRANGE", "r", "0", "-1"])),
        ["a", "b", "c"]
    );
    assert_eq!(int(q(&mut c, &["LREM", "r", "0", "a"])), 1);
    assert_eq!(q(&mut c, &["LTRIM", "r", "1", "-1"]), Value::Okay);
    assert_eq!(strings(q(&mut c, &["LRANGE", "r", "0", "-1"])), ["c"]);
    assert_eq!(q(&mut c, &["LTRIM", "r", "5", "10"]), Value::Okay);
    assert_eq!(
        int(q(&mut c, &["EXISTS", "r"])),
        0,
        "an emptied list is removed"
    );
    // LPOS with RANK, COUNT and MAXLEN.
    q(
        &mut c,
        &["RPUSH", "p", "a", "b", "c", "1", "2", "3", "c", "c"],
    );
    assert_eq!(int(q(&mut c, &["LPOS", "p", "c"])), 2);
    assert_eq!(int(q(&mut c, &["LPOS", "p", "c", "RANK", "2"])), 6);
    assert_eq!(int(q(&mut c, &["LPOS", "p", "c", "RANK", "-1"])), 7);
    let all: Vec<i64> =
        redis::from_redis_value(&q(&mut c, &["LPOS", "p", "c", "COUNT", "0"])).unwrap();
    assert_eq!(all, [2, 6, 7]);
    let capped: Vec<i64> =
        redis::from_redis_value(&q(&mut c, &["LPOS", "p", "c", "COUNT", "0", "MAXLEN", "3"]))
            .unwrap();
    assert_eq!(capped, [2]);
    assert_eq!(q(&mut c, &["LPOS", "p", "zz"]), Value::Nil);
    assert!(err_text(
        cmd("LPOS")
            .arg("p")
            .arg("c")
            .arg("RANK")
            .arg("0")
            .query::<Value>(&mut c)
            .unwrap_err()
    )
    .starts_with("ERR RANK can't be zero"));
    // LMOVE, RPOPLPUSH, LMPOP.
    q(&mut c, &["DEL", "src", "dst"]);
    q(&mut c, &["RPUSH", "src", "1", "2", "3"]);
    assert_eq!(
        q(&mut c, &["LMOVE", "src", "dst", "LEFT", "RIGHT"]),
        Value::BulkString(b"1".to_vec())
    );
    assert_eq!(
        q(&mut c, &["RPOPLPUSH", "src", "dst"]),
        Value::BulkString(b"3".to_vec())
    );
    assert_eq!(
        strings(q(&mut c, &["LRANGE", "dst", "0", "-1"])),
        ["3", "1"]
    );
    assert_eq!(
        q(&mut c, &["LMOVE", "src", "src", "LEFT", "RIGHT"]),
        Value::BulkString(b"2".to_vec())
    );
    assert_eq!(
        q(&mut c, &["LMOVE", "none", "dst", "LEFT", "RIGHT"]),
        Value::Nil
    );
    q(&mut c, &["SET", "s", "x"]);
    let e = cmd("LMOVE")
        .arg("src")
        .arg("s")
        .arg("LEFT")
        .arg("LEFT")
        .query::<Value>(&mut c)
        .unwrap_err();
    assert_eq!(e.code(), Some("WRONGTYPE"));
    assert_eq!(
        strings(q(&mut c, &["LRANGE", "src", "0", "-1"])),
        ["2"],
        "nothing popped"
    );
    let popped = q(
        &mut c,
        &["LMPOP", "3", "none", "dst", "src", "RIGHT", "COUNT", "5"],
    );
    let (key, items): (String, Vec<String>) = redis::from_redis_value(&popped).unwrap();
    assert_eq!(
        (key.as_str(), items),
        ("dst", vec!["1".to_string(), "3".to_string()])
    );
    assert_eq!(q(&mut c, &["LMPOP", "1", "none", "LEFT"]), Value::Nil);
    assert_eq!(
        err_text(
            cmd("LMPOP")
                .arg("0")
                .arg("k")
                .arg("LEFT")
                .query::<Value>(&mut c)
                .unwrap_err()
        ),
        "ERR numkeys should be greater than 0"
    );
    // Types.
    assert_eq!(
        q(&mut c, &["TYPE", "src"]),
        Value::SimpleString("list".into())
    );
    assert_eq!(
        cmd("LPUSH")
            .arg("s")
            .arg("x")
            .query::<Value>(&mut c)
            .unwrap_err()
            .code(),
        Some("WRONGTYPE")
    );
    assert_eq!(
        cmd("GET")
            .arg("src")
            .query::<Value>(&mut c)
            .unwrap_err()
            .code(),
        Some("WRONGTYPE")
    );
    let (_, keys): (u64, Vec<String>) =
        redis::from_redis_value(&q(&mut c, &["SCAN", "0", "TYPE", "list", "COUNT", "1000"]))
            .unwrap();
    let mut keys = keys;
    keys.sort();
    assert_eq!(keys, ["l", "p", "src"]);
}

/// What client libraries and test suites read before they start.
#[test]
fn what_clients_probe() {
    let node = TestNode::start(|_| {});
    let mut c = node.client();
    let _: () = cmd("SET").arg("k").arg("v").query(&mut c).unwrap();
    assert!(cmd("LPUSH")
        .arg("k")
        .arg("x")
        .query::<Value>(&mut c)
        .is_err());
    let info: String = cmd("INFO").query(&mut c).unwrap();
    for field in [
        "# Server",
        "# Clients",
        "# Memory",
        "maxmemory_policy:noeviction",
        "# Persistence",
        "# Stats",
        "# Replication",
        "role:master",
        "# CPU",
        "used_cpu_user:",
        "# Cluster",
        "cluster_enabled:0",
        "# Keyspace",
        "db0:keys=1",
    ] {
        assert!(info.contains(field), "INFO lacks {field}");
    }
    assert!(
        !info.contains("# Commandstats"),
        "INFO leaves commandstats out by default"
    );
    let stats: String = cmd("INFO").arg("commandstats").query(&mut c).unwrap();
    assert!(stats.contains("cmdstat_set:calls=1,"), "{stats}");
    assert!(
        stats.contains("cmdstat_lpush:calls=1,") && stats.contains("failed_calls=1"),
        "{stats}"
    );
    let errors: String = cmd("INFO").arg("errorstats").query(&mut c).unwrap();
    assert!(errors.contains("errorstat_WRONGTYPE:count=1"), "{errors}");
    // Redis's encoding knobs are accepted, read back, and name encodings.
    let _: () = cmd("CONFIG")
        .arg("SET")
        .arg("zset-max-ziplist-entries")
        .arg("2")
        .arg("list-compress-depth")
        .arg("1")
        .query(&mut c)
        .unwrap();
    let got: Vec<String> = cmd("CONFIG")
        .arg("GET")
        .arg("zset-max-listpack-entries")
        .query(&mut c)
        .unwrap();
    assert_eq!(got, ["zset-max-listpack-entries", "2"]);
    let got: Vec<String> = cmd("CONFIG")
        .arg("GET")
        .arg("list-compress-depth")
        .query(&mut c)
        .unwrap();
    assert_eq!(got, ["list-compress-depth", "1"]);
    let _: i64 = cmd("ZADD")
        .arg("z")
        .arg(1)
        .arg("a")
        .arg(2)
        .arg("b")
        .query(&mut c)
        .unwrap();
    let enc: String = cmd("OBJECT")
        .arg("ENCODING")
        .arg("z")
        .query(&mut c)
        .unwrap();
    assert_eq!(enc, "listpack");
    let _: i64 = cmd("ZADD").arg("z").arg(3).arg("c").query(&mut c).unwrap();
    let enc: String = cmd("OBJECT")
        .arg("ENCODING")
        .arg("z")
        .query(&mut c)
        .unwrap();
    assert_eq!(enc, "skiplist");
    let e = cmd("CONFIG")
        .arg("SET")
        .arg("hash-max-listpack-entries")
        .arg("many")
        .query::<()>(&mut c)
        .unwrap_err();
    assert!(e.to_string().contains("hash-max-listpack-entries"), "{e}");
    // COMMAND INFO: Redis 7's ten fields; counted keys are flagged movable.
    let info: Vec<Value> = cmd("COMMAND")
        .arg("INFO")
        .arg("zunionstore")
        .arg("xread")
        .query(&mut c)
        .unwrap();
    for entry in &info {
        let Value::Array(fields) = entry else {
            panic!("{entry:?}")
        };
        assert_eq!(fields.len(), 10);
        let flags: Vec<String> = redis::from_redis_value(&fields[2]).unwrap();
        assert!(flags.contains(&"movablekeys".to_string()), "{flags:?}");
    }
    let count: i64 = cmd("COMMAND").arg("COUNT").query(&mut c).unwrap();
    let all: Vec<Value> = cmd("COMMAND").query(&mut c).unwrap();
    assert_eq!(all.len() as i64, count);
    assert!(count > 150, "{count} commands");
}

fn checkpoints(c: &mut redis::Connection) -> u64 {
    let info: String = cmd("INFO").arg("persistence").query(c).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("checkpoints:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("INFO persistence shows checkpoints")
}

#[test]
fn save_bgsave_and_lastsave() {
    let node = TestNode::start(|_| {});
    let mut c = node.client();
    let before: i64 = cmd("LASTSAVE").query(&mut c).unwrap();
    assert!(before > 1_700_000_000, "{before}");
    let _: () = cmd("SET").arg("k").arg("v").query(&mut c).unwrap();
    // LASTSAVE counts whole seconds: let one pass.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let count = checkpoints(&mut c);
    assert_eq!(cmd("SAVE").query::<Value>(&mut c).unwrap(), Value::Okay);
    assert!(checkpoints(&mut c) > count);
    let after: i64 = cmd("LASTSAVE").query(&mut c).unwrap();
    assert!(after > before, "{before} -> {after}");
    let count = checkpoints(&mut c);
    assert_eq!(
        cmd("BGSAVE").query::<Value>(&mut c).unwrap(),
        Value::SimpleString("Background saving started".into())
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while checkpoints(&mut c) == count {
        assert!(
            std::time::Instant::now() < deadline,
            "BGSAVE never checkpointed"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let e = cmd("BGSAVE").arg("NOW").query::<Value>(&mut c).unwrap_err();
    assert_eq!(err_text(e), "ERR syntax error");
    // The data is all still there.
    let v: String = cmd("GET").arg("k").query(&mut c).unwrap();
    assert_eq!(v, "v");
}
