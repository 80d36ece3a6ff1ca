//! Pub/sub over real sockets: channels and patterns with the `redis`
//! crate's subscriber (RESP2), what a subscribed RESP2 connection may and
//! may not send, RESP3 push messages arriving between ordinary replies,
//! PUBSUB introspection, shard channels, and a subscriber that stops
//! reading being disconnected at its output limit instead of growing the
//! node's memory. Waits are bounded; no timing is asserted.

use std::time::{Duration, Instant};

use crate::common::{q, qe, TestNode};
use redis::Value;

fn bulk(s: &str) -> Value {
    Value::BulkString(s.as_bytes().to_vec())
}

/// A RESP request.
fn cmd(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len());
    for a in args {
        out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    out.into_bytes()
}

#[test]
fn channels_and_patterns() {
    let node = TestNode::start(|_| {});
    let mut publisher = node.client();
    let mut sub_conn = node.client();
    let mut sub = sub_conn.as_pubsub();
    sub.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    sub.subscribe("news").unwrap();
    sub.psubscribe("job:*").unwrap();

    assert_eq!(
        q(&mut publisher, &["PUBLISH", "news", "hello"]),
        Value::Int(1)
    );
    let m = sub.get_message().unwrap();
    assert_eq!(m.get_channel_name(), "news");
    assert_eq!(m.get_payload::<String>().unwrap(), "hello");

    assert_eq!(
        q(&mut publisher, &["PUBLISH", "job:42", "done"]),
        Value::Int(1)
    );
    let m = sub.get_message().unwrap();
    assert_eq!(m.get_channel_name(), "job:42");
    assert_eq!(m.get_pattern::<String>().unwrap(), "job:*");
    assert_eq!(m.get_payload::<String>().unwrap(), "done");

    // Nobody listens here.
    assert_eq!(q(&mut publisher, &["PUBLISH", "other", "x"]), Value::Int(0));

    // Introspection.
    assert_eq!(
        q(&mut publisher, &["PUBSUB", "CHANNELS"]),
        Value::Array(vec![bulk("news")])
    );
    assert_eq!(
        q(&mut publisher, &["PUBSUB", "CHANNELS", "x*"]),
        Value::Array(vec![])
    );
    assert_eq!(
        q(&mut publisher, &["PUBSUB", "NUMSUB", "news", "none"]),
        Value::Array(vec![
            bulk("news"),
            Value::Int(1),
            bulk("none"),
            Value::Int(0)
        ])
    );
    assert_eq!(q(&mut publisher, &["PUBSUB", "NUMPAT"]), Value::Int(1));

    sub.unsubscribe("news").unwrap();
    sub.punsubscribe("job:*").unwrap();
    drop(sub);
    // Unsubscribed: the connection is an ordinary one again.
    assert_eq!(q(&mut sub_conn, &["SET", "k", "v"]), Value::Okay);
    assert_eq!(
        q(&mut publisher, &["PUBLISH", "news", "late"]),
        Value::Int(0)
    );
    assert_eq!(q(&mut publisher, &["PUBSUB", "NUMPAT"]), Value::Int(0));
}

#[test]
fn resp2_subscribed_mode_and_resp3_pushes() {
    let node = TestNode::start(|_| {});
    let mut publisher = node.client();

    // RESP2: only subscription commands, PING, QUIT and RESET.
    let mut raw = node.raw();
    raw.send(&cmd(&["SUBSCRIBE", "a", "b"]));
    let got = raw.read_until(b":2\r\n");
    assert_eq!(
        String::from_utf8_lossy(&got),
        "*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n"
    );
    assert_eq!(
        raw.roundtrip(&cmd(&["GET", "k"])),
        "-ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n"
    );
    raw.send(&cmd(&["PING"]));
    assert_eq!(
        String::from_utf8_lossy(&raw.read_until(b"$0\r\n\r\n")),
        "*2\r\n$4\r\npong\r\n$0\r\n\r\n"
    );
    // UNSUBSCRIBE with no channel leaves them all.
    raw.send(&cmd(&["UNSUBSCRIBE"]));
    let got = String::from_utf8_lossy(&raw.read_until(b":0\r\n")).into_owned();
    assert!(
        got.contains("$1\r\na\r\n") && got.contains("$1\r\nb\r\n"),
        "{got}"
    );
    assert_eq!(raw.roundtrip(&cmd(&["GET", "k"])), "$-1\r\n");

    // RESP3: messages are push frames, and other commands still work.
    let mut r3 = node.raw();
    r3.send(&cmd(&["HELLO", "3"]));
    r3.read_until(b"modules\r\n*0\r\n");
    r3.send(&cmd(&["SUBSCRIBE", "c"]));
    assert_eq!(
        String::from_utf8_lossy(&r3.read_until(b":1\r\n")),
        ">3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n"
    );
    assert_eq!(r3.roundtrip(&cmd(&["SET", "k", "v"])), "+OK\r\n");
    assert_eq!(q(&mut publisher, &["PUBLISH", "c", "hi"]), Value::Int(1));
    assert_eq!(
        String::from_utf8_lossy(&r3.read_until(b"hi\r\n")),
        ">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$2\r\nhi\r\n"
    );

    // A connection that goes away leaves no subscription behind.
    drop(r3);
    let deadline = Instant::now() + Duration::from_secs(10);
    while q(&mut publisher, &["PUBSUB", "NUMSUB", "c"])
        != Value::Array(vec![bulk("c"), Value::Int(0)])
    {
        assert!(
            Instant::now() < deadline,
            "subscription outlived its client"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn shard_channels() {
    let node = TestNode::start(|_| {});
    let mut publisher = node.client();
    let mut raw = node.raw();
    raw.send(&cmd(&["SSUBSCRIBE", "orders"]));
    assert_eq!(
        String::from_utf8_lossy(&raw.read_until(b":1\r\n")),
        "*3\r\n$10\r\nssubscribe\r\n$6\r\norders\r\n:1\r\n"
    );
    assert_eq!(
        q(&mut publisher, &["PUBSUB", "SHARDCHANNELS"]),
        Value::Array(vec![bulk("orders")])
    );
    assert_eq!(
        q(&mut publisher, &["PUBSUB", "SHARDNUMSUB", "orders"]),
        Value::Array(vec![bulk("orders"), Value::Int(1)])
    );
    // SPUBLISH reaches shard subscribers only; PUBLISH doesn't.
    assert_eq!(
        q(&mut publisher, &["PUBLISH", "orders", "x"]),
        Value::Int(0)
    );
    assert_eq!(
        q(&mut publisher, &["SPUBLISH", "orders", "o1"]),
        Value::Int(1)
    );
    assert_eq!(
        String::from_utf8_lossy(&raw.read_until(b"o1\r\n")),
        "*3\r\n$8\r\nsmessage\r\n$6\r\norders\r\n$2\r\no1\r\n"
    );
    assert_eq!(
        qe(&mut publisher, &["PUBSUB", "NOPE"]),
        "ERR unknown subcommand 'NOPE'. Try PUBSUB HELP."
    );
}

#[test]
fn a_subscriber_that_stops_reading_is_cut_off() {
    let node = TestNode::start(|_| {});
    let mut publisher = node.client();
    assert_eq!(
        q(
            &mut publisher,
            &[
                "CONFIG",
                "SET",
                "client-output-buffer-limit",
                "pubsub 256kb 0 0"
            ]
        ),
        Value::Okay
    );
    let mut slow = node.raw();
    slow.send(&cmd(&["SUBSCRIBE", "firehose"]));
    slow.read_until(b":1\r\n");
    // It never reads again. Publish until the node lets it go (bounded:
    // far more than the socket buffers and the limit together).
    let payload = "x".repeat(16 * 1024);
    let mut cut_off = false;
    for _ in 0..20_000 {
        q(&mut publisher, &["PUBLISH", "firehose", &payload]);
        if q(&mut publisher, &["PUBSUB", "NUMSUB", "firehose"])
            == Value::Array(vec![bulk("firehose"), Value::Int(0)])
        {
            cut_off = true;
            break;
        }
    }
    assert!(cut_off, "the slow subscriber was never disconnected");
    // The node is fine and serves others.
    assert_eq!(
        q(&mut publisher, &["PING"]),
        Value::SimpleString("PONG".into())
    );
    let limits: Vec<String> = redis::from_redis_value(&q(
        &mut publisher,
        &["CONFIG", "GET", "client-output-buffer-limit"],
    ))
    .unwrap();
    assert!(limits[1].ends_with("pubsub 262144 0 0"), "{limits:?}");
    assert!(qe(
        &mut publisher,
        &["CONFIG", "SET", "client-output-buffer-limit", "pubsub 1mb"]
    )
    .starts_with("ERR CONFIG SET failed"));
}
