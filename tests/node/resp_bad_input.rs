//! Malformed or hostile input gets Redis's error and the node goes on
//! serving; nothing stored changes.

use crate::common::TestNode;
use redis::cmd;

fn still_serving(node: &TestNode) {
    let mut c = node.client();
    assert_eq!(
        cmd("GET").arg("keep").query::<String>(&mut c).unwrap(),
        "safe"
    );
    assert_eq!(cmd("DBSIZE").query::<i64>(&mut c).unwrap(), 1);
}

#[test]
fn protocol_errors_close_only_that_connection() {
    let node = TestNode::start(|c| c.proto_max_bulk_len = 1 << 20);
    let _: () = cmd("SET")
        .arg("keep")
        .arg("safe")
        .query(&mut node.client())
        .unwrap();
    let cases: &[(&[u8], &str)] = &[
        (
            b"*1\r\n+PING\r\n",
            "-ERR Protocol error: expected '$', got '+'\r\n",
        ),
        (
            b"*abc\r\n",
            "-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*2000000\r\n",
            "-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*1\r\n$99999999999\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*1\r\n$2000000\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*1\r\n$-5\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*1\r\n$3\r\nGETxx",
            "-ERR Protocol error: expected CRLF after bulk\r\n",
        ),
        (
            b"SET a \"unbalanced\r\n",
            "-ERR Protocol error: unbalanced quotes in request\r\n",
        ),
    ];
    for (input, want) in cases {
        let mut raw = node.raw();
        raw.send(input);
        let got = String::from_utf8_lossy(&raw.read_until(b"\r\n")).into_owned();
        assert_eq!(&got, want, "input {:?}", String::from_utf8_lossy(input));
        assert!(
            raw.closed(),
            "connection stays open after {:?}",
            String::from_utf8_lossy(input)
        );
        still_serving(&node);
    }
}

#[test]
fn truncated_frames_wait_then_complete() {
    let node = TestNode::start(|_| {});
    let _: () = cmd("SET")
        .arg("keep")
        .arg("safe")
        .query(&mut node.client())
        .unwrap();
    let mut raw = node.raw();
    raw.send(b"*2\r\n$3\r\nGET\r\n$4\r\nke");
    std::thread::sleep(std::time::Duration::from_millis(100));
    raw.send(b"ep\r\n");
    assert_eq!(raw.roundtrip(b""), "$4\r\nsafe\r\n");
    // A client that disconnects mid-frame leaves nothing behind.
    let mut raw = node.raw();
    raw.send(b"*3\r\n$3\r\nSET\r\n$4\r\nkeep\r\n$100\r\nabc");
    drop(raw);
    still_serving(&node);
}

#[test]
fn bad_arguments_get_errors_and_change_nothing() {
    let node = TestNode::start(|c| c.proto_max_bulk_len = 4096);
    let mut c = node.client();
    let _: () = cmd("SET").arg("keep").arg("safe").query(&mut c).unwrap();
    let errs: Vec<redis::RedisError> = vec![
        cmd("SET")
            .arg("keep")
            .arg("x")
            .arg("EX")
            .arg("ten")
            .query::<()>(&mut c)
            .unwrap_err(),
        cmd("SET")
            .arg("keep")
            .arg("x")
            .arg("PX")
            .arg("-1")
            .query::<()>(&mut c)
            .unwrap_err(),
        cmd("EXPIRE")
            .arg("keep")
            .arg("soon")
            .query::<()>(&mut c)
            .unwrap_err(),
        cmd("SELECT").arg("x").query::<()>(&mut c).unwrap_err(),
        cmd("SETRANGE")
            .arg("keep")
            .arg("-1")
            .arg("x")
            .query::<()>(&mut c)
            .unwrap_err(),
        cmd("SETRANGE")
            .arg("keep")
            .arg("4096")
            .arg("x")
            .query::<()>(&mut c)
            .unwrap_err(),
        cmd("APPEND")
            .arg("keep")
            .arg("y".repeat(4095))
            .query::<()>(&mut c)
            .unwrap_err(),
        cmd("SCAN")
            .arg("notacursor")
            .query::<()>(&mut c)
            .unwrap_err(),
        cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory")
            .arg("lots")
            .query::<()>(&mut c)
            .unwrap_err(),
        cmd("CONFIG")
            .arg("SET")
            .arg("nonsense")
            .arg("1")
            .query::<()>(&mut c)
            .unwrap_err(),
        cmd("CONFIG").arg("BOGUS").query::<()>(&mut c).unwrap_err(),
        cmd("OBJECT")
            .arg("BOGUS")
            .arg("keep")
            .query::<()>(&mut c)
            .unwrap_err(),
        cmd("HINCRBYFLOAT")
            .arg("h")
            .arg("f")
            .arg("nan")
            .query::<()>(&mut c)
            .unwrap_err(),
    ];
    for e in &errs {
        assert!(e.code().is_some(), "{e}");
    }
    assert_eq!(
        errs[5].detail(),
        Some("string exceeds maximum allowed size (proto-max-bulk-len)")
    );
    assert_eq!(
        errs[10].detail(),
        Some("unknown subcommand 'BOGUS'. Try CONFIG HELP.")
    );
    assert_eq!(cmd("EXISTS").arg("h").query::<i64>(&mut c).unwrap(), 0);
    // An oversized argument is refused by the protocol limit.
    let mut raw = node.raw();
    raw.send(
        format!(
            "*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$5000\r\n{}\r\n",
            "z".repeat(5000)
        )
        .as_bytes(),
    );
    assert_eq!(
        String::from_utf8_lossy(&raw.read_until(b"\r\n")),
        "-ERR Protocol error: invalid bulk length\r\n"
    );
    // An oversized key is refused by the store.
    let long_key = "k".repeat(70_000);
    let mut big = redis::Client::open(node.redis_url())
        .unwrap()
        .get_connection()
        .unwrap();
    let _ = cmd("CONFIG")
        .arg("SET")
        .arg("proto-max-bulk-len")
        .arg("1mb")
        .query::<()>(&mut big);
    let e = cmd("SET")
        .arg(&long_key)
        .arg("v")
        .query::<()>(&mut big)
        .unwrap_err();
    assert!(e.to_string().contains("key too large"), "{e}");
    still_serving(&node);
}

#[test]
fn maxclients_refuses_extra_connections() {
    let node = TestNode::start(|c| c.maxclients = 2);
    let _a = node.client();
    let _b = node.client();
    let mut raw = node.raw();
    assert_eq!(
        String::from_utf8_lossy(&raw.read_until(b"\r\n")),
        "-ERR max number of clients reached\r\n"
    );
}
