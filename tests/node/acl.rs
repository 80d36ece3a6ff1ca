//! ACL users over real connections: categories, key and channel patterns,
//! NOPERM texts, ACL LOG, the ACL file, `requirepass`, and HTTP API keys
//! that act as users.

use crate::common::{q, qe, TestNode};
use redis::Value;

fn login(node: &TestNode, user: &str, pass: &str) -> redis::Connection {
    let url = format!("redis://{user}:{pass}@{}/", node.h().resp_addr);
    redis::Client::open(url)
        .expect("client")
        .get_connection()
        .expect("log in")
}

fn text(v: Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
        Value::SimpleString(s) => s,
        Value::Okay => "OK".into(),
        other => panic!("not text: {other:?}"),
    }
}

fn strings(v: Value) -> Vec<String> {
    match v {
        Value::Array(items) | Value::Set(items) => items.into_iter().map(text).collect(),
        other => panic!("not an array: {other:?}"),
    }
}

/// ACL LOG entries as field -> value text, newest first.
fn log_entries(c: &mut redis::Connection) -> Vec<Vec<(String, String)>> {
    let Value::Array(entries) = q(c, &["ACL", "LOG"]) else {
        panic!("ACL LOG is an array")
    };
    entries
        .into_iter()
        .map(|e| {
            let pairs: Vec<(Value, Value)> = match e {
                Value::Map(m) => m,
                Value::Array(flat) => {
                    let mut it = flat.into_iter();
                    let mut out = Vec::new();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        out.push((k, v));
                    }
                    out
                }
                other => panic!("entry {other:?}"),
            };
            pairs
                .into_iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::Int(i) => i.to_string(),
                        Value::Double(d) => d.to_string(),
                        other => text(other),
                    };
                    (text(k), v)
                })
                .collect()
        })
        .collect()
}

fn field<'a>(entry: &'a [(String, String)], name: &str) -> &'a str {
    entry
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name} in {entry:?}"))
}

#[test]
fn categories_keys_and_channels_are_enforced() {
    let node = TestNode::start(|_| {});
    let mut admin = node.client();
    q(
        &mut admin,
        &[
            "ACL",
            "SETUSER",
            "alice",
            "on",
            ">pw",
            "~app:*",
            "%R~ro:*",
            "&news.*",
            "+@all",
            "-@dangerous",
            "-@admin",
        ],
    );
    q(&mut admin, &["SET", "ro:1", "x"]);
    let mut a = login(&node, "alice", "pw");
    assert_eq!(text(q(&mut a, &["ACL", "WHOAMI"])), "alice");
    q(&mut a, &["SET", "app:1", "v"]);
    assert_eq!(text(q(&mut a, &["GET", "app:1"])), "v");
    assert_eq!(text(q(&mut a, &["GET", "ro:1"])), "x");
    let key_error =
        "NOPERM this user has no permissions to access one of the keys used as arguments";
    assert_eq!(qe(&mut a, &["GET", "other"]), key_error);
    assert_eq!(
        qe(&mut a, &["SET", "ro:1", "y"]),
        key_error,
        "read-only pattern"
    );
    // A multi-key command is refused whole if one key is out of reach.
    assert_eq!(qe(&mut a, &["MSET", "app:2", "1", "other", "2"]), key_error);
    assert_eq!(q(&mut admin, &["EXISTS", "app:2"]), Value::Int(0));
    assert_eq!(
        qe(&mut a, &["FLUSHALL"]),
        "NOPERM this user has no permissions to run the 'flushall' command"
    );
    assert_eq!(
        qe(&mut a, &["CONFIG", "GET", "maxmemory"]),
        "NOPERM this user has no permissions to run the 'config|get' command"
    );
    // Subcommands carry their own categories: CLIENT SETNAME is not
    // dangerous, CLIENT KILL is.
    q(&mut a, &["CLIENT", "SETNAME", "worker"]);
    assert!(qe(&mut a, &["CLIENT", "KILL", "ID", "999"]).starts_with("NOPERM"));
    assert_eq!(q(&mut admin, &["DBSIZE"]), Value::Int(2));
    // Channels.
    assert_eq!(q(&mut a, &["PUBLISH", "news.sports", "hi"]), Value::Int(0));
    assert_eq!(
        qe(&mut a, &["PUBLISH", "weather", "hi"]),
        "NOPERM this user has no permissions to access one of the channels used as arguments"
    );
    // A refused command inside MULTI aborts the transaction.
    q(&mut a, &["MULTI"]);
    assert_eq!(qe(&mut a, &["GET", "other"]), key_error);
    assert!(qe(&mut a, &["EXEC"]).starts_with("EXECABORT"));
    // A script runs its calls as the caller.
    let e = qe(&mut a, &["EVAL", "return redis.call('get', 'other')", "0"]);
    assert!(e.contains("no permissions"), "{e}");

    let log = log_entries(&mut admin);
    let lua = log
        .iter()
        .find(|e| field(e, "context") == "lua")
        .expect("lua entry");
    assert_eq!(field(lua, "reason"), "key");
    assert_eq!(field(lua, "object"), "other");
    let flush = log
        .iter()
        .find(|e| field(e, "object") == "flushall")
        .expect("flushall entry");
    assert_eq!(field(flush, "reason"), "command");
    assert_eq!(field(flush, "username"), "alice");
    assert_eq!(field(flush, "context"), "toplevel");
    assert!(field(flush, "client-info").contains("user=alice"));
    let keys = log
        .iter()
        .find(|e| field(e, "reason") == "key" && field(e, "context") == "toplevel")
        .expect("key entry");
    assert_eq!(field(keys, "object"), "other");
    assert!(log.iter().any(|e| field(e, "context") == "multi"));
    assert_eq!(q(&mut admin, &["ACL", "LOG", "RESET"]), Value::Okay);
    assert_eq!(log_entries(&mut admin).len(), 0);
}

#[test]
fn users_are_created_described_and_removed() {
    let node = TestNode::start(|_| {});
    let mut admin = node.client();
    assert_eq!(
        strings(q(&mut admin, &["ACL", "LIST"])),
        vec!["user default on nopass sanitize-payload ~* &* +@all"]
    );
    q(
        &mut admin,
        &[
            "ACL",
            "SETUSER",
            "bob",
            "on",
            ">s3cret",
            "~k:*",
            "+get",
            "+set",
            "(+hget ~h:*)",
        ],
    );
    let list = strings(q(&mut admin, &["ACL", "LIST"]));
    let hash = strata::acl::hash_password(b"s3cret");
    assert_eq!(
        list[0],
        format!("user bob on sanitize-payload #{hash} ~k:* resetchannels -@all +get +set (~h:* resetchannels -@all +hget)")
    );
    assert_eq!(
        strings(q(&mut admin, &["ACL", "USERS"])),
        vec!["bob", "default"]
    );
    // GETUSER: flags, passwords, commands, keys, channels, selectors.
    let Value::Array(fields) = q(&mut admin, &["ACL", "GETUSER", "bob"]) else {
        panic!("GETUSER is a map in RESP2's flat form")
    };
    assert_eq!(text(fields[0].clone()), "flags");
    assert_eq!(strings(fields[1].clone()), vec!["on", "sanitize-payload"]);
    assert_eq!(strings(fields[3].clone()), vec![hash]);
    assert_eq!(text(fields[5].clone()), "-@all +get +set");
    assert_eq!(text(fields[7].clone()), "~k:*");
    assert_eq!(q(&mut admin, &["ACL", "GETUSER", "nobody"]), Value::Nil);
    // A bad rule names itself and changes nothing.
    assert_eq!(
        qe(&mut admin, &["ACL", "SETUSER", "bob", "+del", "+nosuchcmd"]),
        "ERR Error in ACL SETUSER modifier '+nosuchcmd': Unknown command or category name in ACL"
    );
    assert_eq!(list, strings(q(&mut admin, &["ACL", "LIST"])));
    // DRYRUN, and the selector.
    assert_eq!(
        q(&mut admin, &["ACL", "DRYRUN", "bob", "GET", "k:1"]),
        Value::Okay
    );
    assert_eq!(
        text(q(&mut admin, &["ACL", "DRYRUN", "bob", "GET", "x"])),
        "This user has no permissions to access the 'x' key"
    );
    assert_eq!(
        q(&mut admin, &["ACL", "DRYRUN", "bob", "HGET", "h:1", "f"]),
        Value::Okay
    );
    assert_eq!(
        text(q(&mut admin, &["ACL", "DRYRUN", "bob", "DEL", "k:1"])),
        "This user has no permissions to run the 'del' command"
    );
    // Logins.
    let mut raw = node.raw();
    assert_eq!(
        raw.roundtrip(b"AUTH bob wrong\r\n"),
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    let auth = log_entries(&mut admin);
    assert_eq!(field(&auth[0], "reason"), "auth");
    assert_eq!(field(&auth[0], "object"), "AUTH");
    assert_eq!(field(&auth[0], "username"), "bob");
    assert_eq!(raw.roundtrip(b"AUTH bob s3cret\r\n"), "+OK\r\n");
    assert_eq!(raw.roundtrip(b"SET k:1 v\r\n"), "+OK\r\n");
    // A change to the user applies to its open connections at once.
    q(&mut admin, &["ACL", "SETUSER", "bob", "-set"]);
    assert_eq!(
        raw.roundtrip(b"SET k:1 v\r\n"),
        "-NOPERM this user has no permissions to run the 'set' command\r\n"
    );
    // CLIENT LIST shows who is logged in; DELUSER disconnects them.
    let clients = text(q(&mut admin, &["CLIENT", "LIST"]));
    assert!(clients.contains("user=bob"), "{clients}");
    assert_eq!(
        q(&mut admin, &["ACL", "DELUSER", "bob", "ghost"]),
        Value::Int(1)
    );
    assert!(raw.closed(), "bob's connection is closed");
    assert_eq!(
        qe(&mut admin, &["ACL", "DELUSER", "default"]),
        "ERR The 'default' user cannot be removed"
    );
    // CAT and GENPASS.
    let cats = strings(q(&mut admin, &["ACL", "CAT"]));
    assert_eq!(cats.len(), 21);
    assert!(cats.contains(&"dangerous".to_string()));
    let dangerous = strings(q(&mut admin, &["ACL", "CAT", "dangerous"]));
    for cmd in [
        "flushall",
        "keys",
        "config|set",
        "client|kill",
        "acl|setuser",
    ] {
        assert!(
            dangerous.contains(&cmd.to_string()),
            "{cmd} in {dangerous:?}"
        );
    }
    assert!(!dangerous.contains(&"get".to_string()));
    assert_eq!(text(q(&mut admin, &["ACL", "GENPASS"])).len(), 64);
    assert_eq!(text(q(&mut admin, &["ACL", "GENPASS", "32"])).len(), 8);
    assert!(qe(&mut admin, &["ACL", "CAT", "nosuch"]).starts_with("ERR Unknown category"));
}

#[test]
fn acl_file_and_requirepass_survive_restarts() {
    let mut node = TestNode::start(|c| c.requirepass = Some("rootpw".into()));
    let mut raw = node.raw();
    assert_eq!(
        raw.roundtrip(b"GET x\r\n"),
        "-NOAUTH Authentication required.\r\n"
    );
    let mut admin = login(&node, "default", "rootpw");
    q(
        &mut admin,
        &["ACL", "SETUSER", "carol", "on", ">cpw", "~c:*", "+@read"],
    );
    node.restart();
    // The user came back from the ACL file; the default user still
    // needs requirepass.
    let mut c = login(&node, "carol", "cpw");
    assert_eq!(q(&mut c, &["GET", "c:1"]), Value::Nil);
    assert!(qe(&mut c, &["SET", "c:1", "v"]).starts_with("NOPERM"));
    let mut admin = login(&node, "default", "rootpw");
    // CONFIG SET requirepass changes the default user's password.
    q(&mut admin, &["CONFIG", "SET", "requirepass", "newpw"]);
    let url = format!("redis://default:rootpw@{}/", node.h().resp_addr);
    assert!(redis::Client::open(url).unwrap().get_connection().is_err());
    let mut admin = login(&node, "default", "newpw");
    // A damaged ACL file is refused whole by ACL LOAD.
    let file = node.dir.path().join("users.acl");
    let good = std::fs::read_to_string(&file).unwrap();
    assert!(good.contains("user carol on"), "{good}");
    std::fs::write(&file, format!("{good}user dave on +nosuch\n")).unwrap();
    let e = qe(&mut admin, &["ACL", "LOAD"]);
    assert!(e.contains("users.acl:3:") && e.contains("'+nosuch'"), "{e}");
    assert_eq!(
        strings(q(&mut admin, &["ACL", "USERS"])),
        vec!["carol", "default"]
    );
    std::fs::write(&file, format!("{good}user dave on nopass +ping\n")).unwrap();
    q(&mut admin, &["ACL", "LOAD"]);
    assert_eq!(
        strings(q(&mut admin, &["ACL", "USERS"])),
        vec!["carol", "dave", "default"]
    );
}

#[test]
fn http_api_keys_act_as_users() {
    let node = TestNode::start(|c| {
        c.requirepass = Some("rootpw".into());
        c.http_api_keys.insert("k-alice".into(), "alice".into());
        c.http_api_keys.insert("k-ghost".into(), "ghost".into());
    });
    let mut admin = login(&node, "default", "rootpw");
    q(
        &mut admin,
        &["ACL", "SETUSER", "alice", "on", "nopass", "~app:*", "+@all"],
    );
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let write = |key: Option<&str>, name: &str| {
        let mut r = agent.post(&node.http("/api/write"));
        if let Some(k) = key {
            r = r.header("X-API-Key", k);
        }
        let mut resp = r
            .header("Content-Type", "application/json")
            .send(format!(r#"{{"key":"{name}","content":"v"}}"#))
            .expect("http");
        let body: serde_json::Value = resp.body_mut().read_json().unwrap_or_default();
        (resp.status().as_u16(), body)
    };
    assert_eq!(write(Some("k-alice"), "app:1").0, 200);
    let (status, body) = write(Some("k-alice"), "other");
    assert_eq!(status, 403);
    assert!(body["error"]
        .as_str()
        .unwrap_or_default()
        .starts_with("NOPERM"));
    assert_eq!(write(Some("wrong"), "app:2").0, 401);
    assert_eq!(write(Some("k-ghost"), "app:2").0, 401);
    // Without a key the request is the default user's, which needs a
    // password here.
    assert_eq!(write(None, "app:3").0, 401);
    assert_eq!(q(&mut admin, &["DBSIZE"]), Value::Int(1));
}
