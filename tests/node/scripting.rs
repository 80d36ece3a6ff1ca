//! Lua scripting over real sockets: EVAL and friends, the value
//! conversions, Redis's Lua libraries, the sandbox, atomicity, -BUSY and
//! SCRIPT KILL, and FUNCTION libraries.

use std::thread;
use std::time::{Duration, Instant};

use redis::Value;

use crate::common::{q, qe, TestNode};
use crate::server_process::{connect, free_port, spawn};

fn bulk(s: &str) -> Value {
    Value::BulkString(s.as_bytes().to_vec())
}

fn eval(c: &mut redis::Connection, script: &str, keys: &[&str], args: &[&str]) -> Value {
    let n = keys.len().to_string();
    let mut all = vec!["EVAL", script, n.as_str()];
    all.extend_from_slice(keys);
    all.extend_from_slice(args);
    q(c, &all)
}

/// Whether a GET gets -BUSY (the script has run past the threshold); it
/// succeeds before the script starts.
fn busy(c: &mut redis::Connection) -> bool {
    match redis::cmd("GET").arg("x").query::<Value>(c) {
        Ok(_) => false,
        Err(e) => {
            let text = format!("{} {}", e.code().unwrap_or(""), e.detail().unwrap_or(""));
            assert!(
                text.starts_with("BUSY") && text.contains("SCRIPT KILL"),
                "{text}"
            );
            true
        }
    }
}

fn eval_err(c: &mut redis::Connection, script: &str) -> String {
    qe(c, &["EVAL", script, "0"])
}

#[test]
fn eval_converts_values_both_ways() {
    let node = TestNode::start(|_| {});
    let mut c = node.client();
    assert_eq!(
        eval(
            &mut c,
            "return redis.call('SET', KEYS[1], ARGV[1])",
            &["k"],
            &["v"]
        ),
        Value::Okay
    );
    assert_eq!(
        eval(&mut c, "return redis.call('GET', KEYS[1])", &["k"], &[]),
        bulk("v")
    );
    // Lua -> Redis: integers truncate, true is 1, false and nil are nil,
    // arrays stop at the first nil, {ok=} and {err=} are status and error.
    assert_eq!(eval(&mut c, "return 3.99", &[], &[]), Value::Int(3));
    assert_eq!(eval(&mut c, "return true", &[], &[]), Value::Int(1));
    assert_eq!(eval(&mut c, "return false", &[], &[]), Value::Nil);
    assert_eq!(
        eval(&mut c, "return {1, 'two', {3}, nil, 5}", &[], &[]),
        Value::Array(vec![
            Value::Int(1),
            bulk("two"),
            Value::Array(vec![Value::Int(3)])
        ])
    );
    assert_eq!(
        eval(&mut c, "return redis.status_reply('FINE')", &[], &[]),
        Value::SimpleString("FINE".into())
    );
    assert_eq!(
        eval_err(&mut c, "return redis.error_reply('MYCODE went wrong')"),
        "MYCODE went wrong"
    );
    assert_eq!(
        eval_err(&mut c, "return redis.error_reply('plain words')"),
        "ERR plain words"
    );
    // Redis -> Lua: a missing key is false, an integer a number, a status
    // a table with ok, an array a table.
    assert_eq!(
        eval(
            &mut c,
            "local r = redis.call('GET', 'missing'); return type(r) .. ':' .. tostring(r)",
            &[],
            &[]
        ),
        bulk("boolean:false")
    );
    assert_eq!(
        eval(&mut c, "return redis.call('SET', 'x', '1').ok", &[], &[]),
        bulk("OK")
    );
    assert_eq!(
        eval(
            &mut c,
            "return redis.call('INCRBY', 'x', 41) + 0.5",
            &[],
            &[]
        ),
        Value::Int(42)
    );
    q(&mut c, &["RPUSH", "l", "a", "b"]);
    assert_eq!(
        eval(&mut c, "return #redis.call('LRANGE', 'l', 0, -1)", &[], &[]),
        Value::Int(2)
    );
    // A failing redis.call raises; redis.pcall hands the error back.
    assert!(eval_err(&mut c, "return redis.call('INCR', 'k')")
        .starts_with("ERR value is not an integer"));
    assert_eq!(
        eval(
            &mut c,
            "local r = redis.pcall('INCR', 'k'); return r.err",
            &[],
            &[]
        ),
        bulk("ERR value is not an integer or out of range")
    );
    assert_eq!(
        eval(
            &mut c,
            "local ok, e = pcall(redis.call, 'INCR', 'k'); return e.err",
            &[],
            &[]
        ),
        bulk("ERR value is not an integer or out of range")
    );
    // Numbers reach commands at full precision.
    eval(
        &mut c,
        "redis.call('ZADD', 'z', 9007199254740993, 'big'); return redis.call('SET', 'f', 0.1)",
        &[],
        &[],
    );
    assert_eq!(q(&mut c, &["GET", "f"]), bulk("0.10000000000000001"));
    assert_eq!(q(&mut c, &["ZSCORE", "z", "big"]), bulk("9007199254740992"));
    // Thousands of arguments through unpack().
    assert_eq!(
        eval(
            &mut c,
            "local t = {} for i = 1, 5000 do t[i] = 'm' .. i end \
             return redis.call('SADD', KEYS[1], unpack(t))",
            &["s"],
            &[]
        ),
        Value::Int(5000)
    );
    // redis.setresp(3) shows RESP3 types to the script.
    q(&mut c, &["HSET", "h", "f", "v"]);
    assert_eq!(
        eval(
            &mut c,
            "redis.setresp(3); local m = redis.call('HGETALL', 'h'); return m.map.f",
            &[],
            &[]
        ),
        bulk("v")
    );
    // SELECT inside a script doesn't move the caller.
    eval(
        &mut c,
        "redis.call('SELECT', 3); return redis.call('SET', 'in3', 'y')",
        &[],
        &[],
    );
    assert_eq!(q(&mut c, &["GET", "in3"]), Value::Nil);
    q(&mut c, &["SELECT", "3"]);
    assert_eq!(q(&mut c, &["GET", "in3"]), bulk("y"));
    // Bad calls.
    assert_eq!(
        eval_err(&mut c, "return redis.call('NOSUCHCMD')"),
        "ERR Unknown Redis command called from script"
    );
    assert_eq!(
        eval_err(&mut c, "return redis.call('EVAL', 'return 1', 0)"),
        "ERR This Redis command is not allowed from script"
    );
    assert_eq!(
        eval_err(&mut c, "return redis.call('GET', {})"),
        "ERR Lua redis lib command arguments must be strings or integers"
    );
    assert!(qe(&mut c, &["EVAL", "return 1", "-1"]).contains("negative"));
    assert!(qe(&mut c, &["EVAL", "return 1", "3", "a"]).contains("greater than"));
    assert!(eval_err(&mut c, "return +").starts_with("ERR Error compiling script"));
}

#[test]
fn evalsha_script_cache_and_read_only_scripts() {
    let node = TestNode::start(|_| {});
    let mut c = node.client();
    let body = "return redis.call('INCR', KEYS[1])";
    let sha = "f2f4e8e6e2a8d4a4c3a0e57bdbd8e0a8bcd1d5b8";
    assert!(qe(&mut c, &["EVALSHA", sha, "1", "n"]).starts_with("NOSCRIPT"));
    let Value::BulkString(loaded) = q(&mut c, &["SCRIPT", "LOAD", body]) else {
        panic!("SCRIPT LOAD answers the SHA1");
    };
    let loaded = String::from_utf8(loaded).unwrap();
    assert_eq!(loaded.len(), 40);
    assert_eq!(q(&mut c, &["EVALSHA", &loaded, "1", "n"]), Value::Int(1));
    assert_eq!(
        q(&mut c, &["EVALSHA", &loaded.to_uppercase(), "1", "n"]),
        Value::Int(2)
    );
    assert_eq!(
        q(&mut c, &["SCRIPT", "EXISTS", &loaded, sha]),
        Value::Array(vec![Value::Int(1), Value::Int(0)])
    );
    // EVAL caches too, under the same SHA1 redis.sha1hex computes.
    let Value::BulkString(h) = eval(&mut c, "return redis.sha1hex(ARGV[1])", &[], &[body]) else {
        panic!("sha1hex answers a string");
    };
    assert_eq!(String::from_utf8(h).unwrap(), loaded);
    q(&mut c, &["SCRIPT", "FLUSH"]);
    assert!(qe(&mut c, &["EVALSHA", &loaded, "1", "n"]).starts_with("NOSCRIPT"));
    // Read-only scripts: EVAL_RO, and the no-writes shebang flag.
    assert_eq!(
        qe(
            &mut c,
            &["EVAL_RO", "return redis.call('SET', 'a', 'b')", "0"]
        ),
        "ERR Write commands are not allowed from read-only scripts."
    );
    assert_eq!(
        q(&mut c, &["EVAL_RO", "return redis.call('GET', 'n')", "0"]),
        bulk("2")
    );
    assert_eq!(
        qe(
            &mut c,
            &[
                "EVAL",
                "#!lua flags=no-writes\nreturn redis.call('DEL', 'n')",
                "0"
            ]
        ),
        "ERR Write commands are not allowed from read-only scripts."
    );
    assert!(qe(&mut c, &["EVAL", "#!python\nreturn 1", "0"]).contains("engine"));
    // Pipelined scripts and other commands answer in order.
    let replies: Vec<Value> = redis::pipe()
        .cmd("EVAL")
        .arg("return redis.call('INCR', 'p')")
        .arg(0)
        .cmd("EVAL")
        .arg("return redis.call('INCR', 'p')")
        .arg(0)
        .cmd("GET")
        .arg("p")
        .cmd("EVAL")
        .arg("return redis.call('INCRBY', 'p', 10)")
        .arg(0)
        .cmd("INCR")
        .arg("p")
        .query(&mut c)
        .unwrap();
    assert_eq!(
        replies,
        vec![
            Value::Int(1),
            Value::Int(2),
            bulk("2"),
            Value::Int(12),
            Value::Int(13)
        ]
    );
    // Scripts inside MULTI run at EXEC, in order.
    q(&mut c, &["MULTI"]);
    q(&mut c, &["EVAL", "return redis.call('INCR', 'n')", "0"]);
    q(&mut c, &["INCR", "n"]);
    assert_eq!(
        q(&mut c, &["EXEC"]),
        Value::Array(vec![Value::Int(3), Value::Int(4)])
    );
}

#[test]
fn redis_lua_libraries() {
    let node = TestNode::start(|_| {});
    let mut c = node.client();
    assert_eq!(
        eval(
            &mut c,
            "return cjson.encode({a = {1, 2, 3}, s = 'x/y'})",
            &[],
            &[]
        )
        .clone(),
        eval(
            &mut c,
            "return cjson.encode(cjson.decode(ARGV[1]))",
            &[],
            &[r#"{"a":[1,2,3],"s":"x\/y"}"#]
        )
    );
    assert_eq!(
        eval(
            &mut c,
            "local t = cjson.decode(ARGV[1]); return {t.n, t.list[2], tostring(t.missing == cjson.null)}",
            &[],
            &[r#"{"n": 12, "list": ["a", "b"], "missing": null}"#]
        ),
        Value::Array(vec![Value::Int(12), bulk("b"), bulk("true")])
    );
    assert_eq!(
        eval(&mut c, "return cjson.encode({})", &[], &[]),
        bulk("{}")
    );
    assert!(eval_err(&mut c, "return cjson.decode('{bad')").contains("script"));
    // cmsgpack round trips, and packs as the C library does.
    assert_eq!(
        eval(
            &mut c,
            "local a, b = cmsgpack.unpack(cmsgpack.pack({1, 2, {x = 'y'}}, -70000)); \
             return {a[1], a[3].x, b}",
            &[],
            &[]
        ),
        Value::Array(vec![Value::Int(1), bulk("y"), Value::Int(-70000)])
    );
    assert_eq!(
        eval(&mut c, "return cmsgpack.pack({1, 2, 3})", &[], &[]),
        Value::BulkString(vec![0x93, 1, 2, 3])
    );
    assert_eq!(
        eval(&mut c, "return cmsgpack.pack('abc', 300)", &[], &[]),
        Value::BulkString(vec![0xa3, b'a', b'b', b'c', 0xcd, 0x01, 0x2c])
    );
    assert_eq!(
        eval(
            &mut c,
            "return {bit.band(0xff, 0x0f), bit.bor(1, 2, 4), bit.bxor(5, 1), bit.lshift(1, 4), \
             bit.rshift(-1, 28), bit.arshift(-16, 2), bit.bnot(0), bit.tohex(255, 4), bit.tobit(2^32 + 5)}",
            &[],
            &[]
        ),
        Value::Array(vec![
            Value::Int(15),
            Value::Int(7),
            Value::Int(4),
            Value::Int(16),
            Value::Int(15),
            Value::Int(-4),
            Value::Int(-1),
            bulk("00ff"),
            Value::Int(5),
        ])
    );
    assert_eq!(
        eval(&mut c, "return struct.pack('>I2<h', 258, -2)", &[], &[]),
        Value::BulkString(vec![1, 2, 0xfe, 0xff])
    );
    assert_eq!(
        eval(
            &mut c,
            "local a, s, nxt = struct.unpack('>i4s', struct.pack('>i4s', -7, 'hi')); return {a, s, nxt, struct.size('>i4hd')}",
            &[],
            &[]
        ),
        Value::Array(vec![Value::Int(-7), bulk("hi"), Value::Int(8), Value::Int(14)])
    );
}

#[test]
fn scripts_are_sandboxed() {
    let node = TestNode::start(|cfg| cfg.lua_memory_limit = 64 << 20);
    let mut c = node.client();
    for (script, expect) in [
        (
            "return os.execute('touch /tmp/strata-escaped')",
            "nonexistent global variable 'os'",
        ),
        (
            "return io.open('/etc/passwd')",
            "nonexistent global variable 'io'",
        ),
        (
            "return dofile('/etc/passwd')",
            "nonexistent global variable 'dofile'",
        ),
        (
            "return loadfile('/etc/passwd')",
            "nonexistent global variable 'loadfile'",
        ),
        (
            "return require('os')",
            "nonexistent global variable 'require'",
        ),
        ("leak = 1", "Attempt to modify a readonly table"),
        ("string.rep = nil", "Attempt to modify a readonly table"),
        ("redis.call = nil", "Attempt to modify a readonly table"),
        (
            "rawset(redis, 'call', print)",
            "Attempt to modify a readonly table",
        ),
        (
            "rawset(string, 'rep', print)",
            "Attempt to modify a readonly table",
        ),
        ("return getfenv(0)", "nonexistent global variable 'getfenv'"),
        ("_G.leak = 1", "Attempt to modify a readonly table"),
        (
            "return getmetatable('').__index",
            "attempt to index a boolean value",
        ),
        (
            "local t = {} for i = 1, 1e9 do t[i] = i end",
            "not enough memory",
        ),
        ("return string.rep('x', 1e9)", "not enough memory"),
        (
            "local t = {} t[1] = t return cjson.encode(t)",
            "excessive nesting",
        ),
        (
            "return cjson.decode(string.rep('[', 100000))",
            "recursion limit",
        ),
    ] {
        let e = eval_err(&mut c, script);
        assert!(e.contains(expect), "{script}: {e}");
    }
    // Bytecode never loads.
    assert_eq!(
        eval(
            &mut c,
            "local f, e = loadstring(string.dump(function() return 1 end)); return e",
            &[],
            &[]
        ),
        bulk("loading bytecode is not allowed")
    );
    assert!(!std::path::Path::new("/tmp/strata-escaped").exists());
    // What a script stores through _G or a loaded chunk stays in that call.
    assert_eq!(
        eval(
            &mut c,
            "rawset(_G, 'kept', 7) return loadstring('return kept')()",
            &[],
            &[]
        ),
        Value::Int(7)
    );
    assert!(eval_err(&mut c, "return kept").contains("nonexistent global"));
    assert!(eval_err(&mut c, "loadstring('also = 2')()").contains("readonly table"));
    // The node is unharmed and the next script sees clean globals.
    assert_eq!(q(&mut c, &["PING"]), Value::SimpleString("PONG".into()));
    assert_eq!(
        eval(
            &mut c,
            "return type(string.rep) .. type(redis.call)",
            &[],
            &[]
        ),
        bulk("functionfunction")
    );
}

#[test]
fn scripts_are_atomic() {
    let node = TestNode::start(|_| {});
    let mut c = node.client();
    q(&mut c, &["SET", "c", "0"]);
    let url = node.redis_url();
    let reader = thread::spawn(move || {
        let mut r = redis::Client::open(url).unwrap().get_connection().unwrap();
        let mut seen = Vec::new();
        for _ in 0..200 {
            let v: i64 = redis::cmd("GET").arg("c").query(&mut r).unwrap();
            seen.push(v);
            thread::sleep(Duration::from_millis(1));
        }
        seen
    });
    for _ in 0..5 {
        eval(
            &mut c,
            "for i = 1, 20000 do redis.call('INCR', KEYS[1]) end return 1",
            &["c"],
            &[],
        );
    }
    let seen = reader.join().unwrap();
    // Another client only ever sees a script's effect whole.
    assert!(seen.iter().all(|v| v % 20000 == 0), "{seen:?}");
    assert_eq!(q(&mut c, &["GET", "c"]), bulk("100000"));
}

#[test]
fn busy_scripts_and_script_kill() {
    let node = TestNode::start(|cfg| cfg.busy_reply_threshold_ms = 200);
    let mut c = node.client();
    assert_eq!(
        qe(&mut c, &["SCRIPT", "KILL"]),
        "NOTBUSY No scripts in execution right now."
    );
    let url = node.redis_url();
    let looping = thread::spawn(move || {
        let mut r = redis::Client::open(url).unwrap().get_connection().unwrap();
        redis::cmd("EVAL")
            .arg("local i = 0 while true do i = i + 1 end")
            .arg(0)
            .query::<Value>(&mut r)
    });
    // Others get -BUSY once the threshold has passed.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !busy(&mut c) {
        assert!(Instant::now() < deadline, "never BUSY");
    }
    assert_eq!(q(&mut c, &["SCRIPT", "KILL"]), Value::Okay);
    let killed = looping.join().unwrap().expect_err("the script was killed");
    assert!(killed.to_string().contains("Script killed"), "{killed}");
    assert_eq!(q(&mut c, &["GET", "x"]), Value::Nil);
    // A script that caught the kill with pcall is still stopped.
    let url = node.redis_url();
    let catching = thread::spawn(move || {
        let mut r = redis::Client::open(url).unwrap().get_connection().unwrap();
        redis::cmd("EVAL")
            .arg("while true do pcall(function() while true do end end) end")
            .arg(0)
            .query::<Value>(&mut r)
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !busy(&mut c) {
        assert!(Instant::now() < deadline);
    }
    assert_eq!(q(&mut c, &["SCRIPT", "KILL"]), Value::Okay);
    assert!(catching.join().unwrap().is_err());
    assert_eq!(q(&mut c, &["PING"]), Value::SimpleString("PONG".into()));
}

#[test]
fn functions_load_call_list_and_persist() {
    let mut node = TestNode::start(|_| {});
    let mut c = node.client();
    let lib = "#!lua name=counters\n\
        local function bump(keys, args) return redis.call('INCRBY', keys[1], args[1]) end\n\
        redis.register_function('bump', bump)\n\
        redis.register_function{function_name = 'peek', callback = function(keys) return redis.call('GET', keys[1]) end, flags = {'no-writes'}, description = 'reads a counter'}";
    assert_eq!(q(&mut c, &["FUNCTION", "LOAD", lib]), bulk("counters"));
    assert_eq!(
        qe(&mut c, &["FUNCTION", "LOAD", lib]),
        "ERR Library 'counters' already exists"
    );
    assert_eq!(q(&mut c, &["FCALL", "bump", "1", "n", "5"]), Value::Int(5));
    assert_eq!(q(&mut c, &["FCALL_RO", "peek", "1", "n"]), bulk("5"));
    assert_eq!(
        qe(&mut c, &["FCALL_RO", "bump", "1", "n", "1"]),
        "ERR Can not execute a script with write flag using *_ro command."
    );
    assert_eq!(
        qe(&mut c, &["FCALL", "nope", "0"]),
        "ERR Function not found"
    );
    let list = format!("{:?}", q(&mut c, &["FUNCTION", "LIST", "WITHCODE"]));
    for part in [
        "counters",
        "bump",
        "peek",
        "reads a counter",
        "no-writes",
        "register_function",
    ] {
        assert!(list.contains(part), "{part} missing from {list}");
    }
    assert!(
        qe(&mut c, &["FUNCTION", "LOAD", "#!lua name=x\nlocal a = 1"])
            .contains("No functions registered")
    );
    assert!(qe(&mut c, &["FUNCTION", "LOAD", "return 1"]).contains("Missing library metadata"));
    assert!(qe(
        &mut c,
        &[
            "FUNCTION",
            "LOAD",
            "#!lua name=clash\nredis.register_function('bump', function() end)"
        ]
    )
    .contains("already exists"));
    // Libraries survive a restart.
    node.restart();
    let mut c = node.client();
    assert_eq!(q(&mut c, &["FCALL", "bump", "1", "n", "1"]), Value::Int(6));
    q(&mut c, &["FUNCTION", "DELETE", "counters"]);
    assert_eq!(
        qe(&mut c, &["FCALL", "bump", "1", "n", "1"]),
        "ERR Function not found"
    );
    assert_eq!(
        qe(&mut c, &["FUNCTION", "DELETE", "counters"]),
        "ERR Library not found"
    );
}

/// A server process that is killed however the test ends.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn shutdown_nosave_leaves_an_unfinished_script_out() {
    let dir = tempfile::tempdir().unwrap();
    let (port, http) = (free_port(), free_port());
    let mut server = Server(spawn(dir.path(), port, http));
    let mut c = connect(port);
    q(&mut c, &["CONFIG", "SET", "busy-reply-threshold", "100"]);
    q(&mut c, &["SET", "before", "1"]);
    let looping = thread::spawn(move || {
        let mut r = connect(port);
        redis::cmd("EVAL")
            .arg("redis.call('SET', 'during', '1') while true do end")
            .arg(0)
            .query::<Value>(&mut r)
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !busy(&mut c) {
        assert!(Instant::now() < deadline);
    }
    assert!(qe(&mut c, &["SCRIPT", "KILL"]).starts_with("UNKILLABLE"));
    let _ = redis::cmd("SHUTDOWN").arg("NOSAVE").query::<Value>(&mut c);
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.0.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "strata did not exit after SHUTDOWN NOSAVE"
        );
        thread::sleep(Duration::from_millis(50));
    }
    assert!(looping.join().unwrap().is_err());
    let _server = Server(spawn(dir.path(), port, http));
    let mut c = connect(port);
    assert_eq!(q(&mut c, &["GET", "before"]), bulk("1"));
    // The script never finished: none of its writes are there.
    assert_eq!(q(&mut c, &["GET", "during"]), Value::Nil);
}
