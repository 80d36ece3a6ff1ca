//! Connection commands: PING ECHO HELLO AUTH SELECT QUIT RESET CLIENT COMMAND.

use bytes::Bytes;

use super::reply::Reply;
use super::{err, int_arg, is, lookup, CmdResult, Ctx, COMMANDS};

pub fn ping(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    if !ctx.s.resp3 && ctx.s.subs.as_ref().is_some_and(|s| s.active()) {
        // A subscribed RESP2 connection gets PING's answer as a message.
        return match a.len() {
            1 | 2 => Ok(Reply::Array(vec![
                Reply::bulk("pong"),
                Reply::Bulk(a.get(1).cloned().unwrap_or_default()),
            ])),
            _ => Err(err::arity("ping")),
        };
    }
    match a.len() {
        1 => Ok(Reply::Simple("PONG")),
        2 => Ok(Reply::Bulk(a[1].clone())),
        _ => Err(err::arity("ping")),
    }
}

pub fn echo(_: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    Ok(Reply::Bulk(a[1].clone()))
}

/// Logs the session in as `user` (or `default`) with `pass`.
fn log_in(ctx: &mut Ctx<'_>, user: Option<&[u8]>, pass: &[u8]) -> Result<(), Reply> {
    let acl = &ctx.node.acl;
    let name = user.map_or_else(
        || "default".to_string(),
        |u| String::from_utf8_lossy(u).into_owned(),
    );
    if user.is_none() && acl.user("default").is_some_and(|u| u.nopass) {
        return Err(Reply::err(
            "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
        ));
    }
    let generation = acl.generation();
    match acl.authenticate(&name, pass) {
        Some(u) => {
            ctx.s.authed = true;
            ctx.s.user = Some(u);
            ctx.s.acl_generation = generation;
            ctx.s.handle.state.lock().user = name;
            Ok(())
        }
        None => {
            super::acl::log_auth_failure(ctx, &name);
            Err(Reply::err(
                "WRONGPASS invalid username-password pair or user is disabled.",
            ))
        }
    }
}

pub fn auth(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    match a.len() {
        2 => log_in(ctx, None, &a[1])?,
        3 => log_in(ctx, Some(&a[1]), &a[2])?,
        _ => return Err(err::syntax()),
    }
    Ok(Reply::OK)
}

pub fn hello(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let mut i = 1;
    let mut proto = if ctx.s.resp3 { 3 } else { 2 };
    if a.len() > 1 {
        let v = int_arg(&a[1])
            .map_err(|_| Reply::err("ERR Protocol version is not an integer or out of range"))?;
        if v != 2 && v != 3 {
            return Err(Reply::err("NOPROTO unsupported protocol version"));
        }
        proto = v;
        i = 2;
    }
    while i < a.len() {
        if is(&a[i], "AUTH") && i + 2 < a.len() {
            log_in(ctx, Some(&a[i + 1]), &a[i + 2])?;
            i += 3;
        } else if is(&a[i], "SETNAME") && i + 1 < a.len() {
            ctx.s.handle.state.lock().name = String::from_utf8_lossy(&a[i + 1]).into_owned();
            i += 2;
        } else {
            return Err(Reply::err(format!(
                "ERR Syntax error in HELLO option '{}'",
                String::from_utf8_lossy(&a[i])
            )));
        }
    }
    if !ctx.s.authed {
        return Err(Reply::err("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time"));
    }
    ctx.s.resp3 = proto == 3;
    ctx.s.handle.state.lock().resp = proto as u8;
    Ok(Reply::Map(vec![
        (Reply::bulk("server"), Reply::bulk("redis")),
        (Reply::bulk("version"), Reply::bulk("7.0.15")),
        (Reply::bulk("proto"), Reply::Int(proto)),
        (Reply::bulk("id"), Reply::Int(ctx.s.handle.id as i64)),
        (Reply::bulk("mode"), Reply::bulk("standalone")),
        (Reply::bulk("role"), Reply::bulk("master")),
        (Reply::bulk("modules"), Reply::Array(vec![])),
    ]))
}

pub fn select(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let db = int_arg(&a[1]).map_err(|_| err::not_int())?;
    if db < 0 || db as usize >= ctx.node.store.databases() {
        return Err(Reply::err("ERR DB index is out of range"));
    }
    ctx.s.db = db as usize;
    ctx.s.handle.state.lock().db = db as usize;
    Ok(Reply::OK)
}

pub fn quit(ctx: &mut Ctx<'_>, _: &[Bytes]) -> CmdResult {
    ctx.s.quit = true;
    Ok(Reply::OK)
}

pub fn reset(ctx: &mut Ctx<'_>, _: &[Bytes]) -> CmdResult {
    ctx.s.end_transaction();
    ctx.s.leave_pubsub(ctx.node);
    ctx.node.tracking.disable(ctx.s.handle.id);
    ctx.node.monitors.remove(ctx.s.handle.id);
    ctx.s.tracking = None;
    ctx.s.caching = None;
    ctx.s.reply_off = false;
    ctx.s.reply_skip = 0;
    ctx.s.no_touch = false;
    ctx.s.db = 0;
    ctx.s.resp3 = false;
    ctx.s.acl_generation = ctx.node.acl.generation();
    ctx.s.authed = ctx.node.acl.default_open();
    ctx.s.user = ctx.node.acl.user("default");
    {
        let mut st = ctx.s.handle.state.lock();
        st.db = 0;
        st.name.clear();
        st.resp = 2;
        st.no_evict = false;
        st.no_touch = false;
        st.user = if ctx.s.authed {
            "default".into()
        } else {
            String::new()
        };
    }
    Ok(Reply::Simple("RESET"))
}

pub(super) fn client_line(node: &crate::node::Node, c: &crate::node::ClientHandle) -> String {
    let st = c.state.lock().clone();
    let idle = st.last_active.map_or(0, |t| t.elapsed().as_secs());
    let (tracking_flags, redir) = super::tracking::list_flags(node, c.id);
    let monitor = node.monitors.contains(c.id);
    let omem = c.outbox.get().map_or(0, crate::pubsub::Subscriber::queued);
    let mut flags = String::new();
    for (on, f) in [
        (monitor, 'O'),
        (st.pubsub(), 'P'),
        (st.blocked, 'b'),
        (st.in_multi, 'x'),
        (st.no_evict, 'e'),
        (st.no_touch, 'T'),
    ] {
        if on {
            flags.push(f);
        }
    }
    flags.push_str(&tracking_flags);
    if flags.is_empty() {
        flags.push('N');
    }
    format!(
        "id={} addr={} laddr={} fd=0 name={} age={} idle={} flags={} db={} sub={} psub={} ssub={} multi={} qbuf=0 qbuf-free=0 argv-mem=0 multi-mem={} obl=0 oll=0 omem={} tot-mem={} events=r cmd={} user={} redir={} resp={}",
        c.id,
        c.addr,
        c.laddr,
        st.name,
        c.created.elapsed().as_secs(),
        idle,
        flags,
        st.db,
        st.channels,
        st.patterns,
        st.shard_channels,
        if st.in_multi { st.queued as i64 } else { -1 },
        st.queued_bytes,
        omem,
        omem + st.queued_bytes,
        if st.last_cmd.is_empty() { "NULL" } else { &st.last_cmd },
        if st.user.is_empty() { "default" } else { &st.user },
        redir,
        st.resp.max(2)
    )
}

/// The CLIENT LIST/KILL `TYPE` of a client: `pubsub` while subscribed,
/// else `normal` (strata has no replica or master connections over RESP).
fn client_type(c: &crate::node::ClientHandle) -> &'static str {
    if c.state.lock().pubsub() {
        "pubsub"
    } else {
        "normal"
    }
}

/// Checks a `TYPE` filter's value.
fn type_filter(v: &str) -> Result<&'static str, Reply> {
    match v.to_ascii_lowercase().as_str() {
        "normal" => Ok("normal"),
        "pubsub" => Ok("pubsub"),
        "master" => Ok("master"),
        "replica" | "slave" => Ok("replica"),
        _ => Err(Reply::err(format!("ERR Unknown client type '{v}'"))),
    }
}

pub fn client(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let sub = &a[1];
    if is(sub, "ID") && a.len() == 2 {
        Ok(Reply::Int(ctx.s.handle.id as i64))
    } else if is(sub, "SETNAME") && a.len() == 3 {
        if a[2].iter().any(|&b| b <= b' ' || b > b'~') {
            return Err(Reply::err(
                "ERR Client names cannot contain spaces, newlines or special characters.",
            ));
        }
        ctx.s.handle.state.lock().name = String::from_utf8_lossy(&a[2]).into_owned();
        Ok(Reply::OK)
    } else if is(sub, "GETNAME") && a.len() == 2 {
        let name = ctx.s.handle.state.lock().name.clone();
        Ok(if name.is_empty() {
            Reply::Nil
        } else {
            Reply::bulk(name)
        })
    } else if is(sub, "INFO") && a.len() == 2 {
        Ok(Reply::Verbatim(client_line(ctx.node, &ctx.s.handle) + "\n"))
    } else if is(sub, "LIST") {
        let mut clients: Vec<_> = ctx.node.clients.lock().values().cloned().collect();
        if a.len() == 4 && is(&a[2], "TYPE") {
            let t = type_filter(&String::from_utf8_lossy(&a[3]))?;
            clients.retain(|c| client_type(c) == t);
        } else if a.len() >= 4 && is(&a[2], "ID") {
            let mut ids = Vec::new();
            for id in &a[3..] {
                let id = std::str::from_utf8(id)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .filter(|&i| i > 0)
                    .ok_or_else(|| Reply::err("ERR Invalid client ID"))?;
                ids.push(id);
            }
            clients.retain(|c| ids.contains(&c.id));
        } else if a.len() != 2 {
            return Err(err::syntax());
        }
        let mut out = String::new();
        for c in clients {
            out.push_str(&client_line(ctx.node, &c));
            out.push('\n');
        }
        Ok(Reply::Verbatim(out))
    } else if is(sub, "TRACKING") && a.len() >= 3 {
        super::tracking::tracking(ctx, a)
    } else if is(sub, "CACHING") && a.len() == 3 {
        super::tracking::caching(ctx, a)
    } else if is(sub, "GETREDIR") && a.len() == 2 {
        Ok(super::tracking::getredir(ctx))
    } else if is(sub, "TRACKINGINFO") && a.len() == 2 {
        Ok(super::tracking::trackinginfo(ctx))
    } else if is(sub, "KILL") && a.len() >= 3 {
        let clients: Vec<_> = ctx.node.clients.lock().values().cloned().collect();
        if a.len() == 3 {
            // Old form: CLIENT KILL addr:port
            let target = String::from_utf8_lossy(&a[2]);
            return match clients.iter().find(|c| c.addr == target) {
                Some(c) => {
                    c.kill.cancel();
                    Ok(Reply::OK)
                }
                None => Err(Reply::err("ERR No such client")),
            };
        }
        let mut killed = 0;
        let mut i = 2;
        let mut filters: Vec<(String, String)> = Vec::new();
        while i + 1 < a.len() {
            filters.push((
                String::from_utf8_lossy(&a[i]).to_ascii_lowercase(),
                String::from_utf8_lossy(&a[i + 1]).into_owned(),
            ));
            i += 2;
        }
        if i != a.len() {
            return Err(err::syntax());
        }
        for c in clients {
            let mut hit = true;
            for (k, v) in &filters {
                hit &= match k.as_str() {
                    "id" => v.parse::<u64>().map_err(|_| err::syntax())? == c.id,
                    "addr" => *v == c.addr,
                    "laddr" => *v == c.laddr,
                    "skipme" => match v.to_ascii_lowercase().as_str() {
                        "yes" => c.id != ctx.s.handle.id,
                        "no" => true,
                        _ => return Err(err::syntax()),
                    },
                    "type" => client_type(&c) == type_filter(v)?,
                    "maxage" => {
                        let max = v.parse::<u64>().map_err(|_| err::syntax())?;
                        c.created.elapsed().as_secs() >= max
                    }
                    "user" => {
                        if ctx.node.acl.user(v).is_none() {
                            return Err(Reply::err(format!("ERR No such user '{v}'")));
                        }
                        *v == c.state.lock().user
                    }
                    _ => return Err(err::syntax()),
                };
            }
            if hit {
                c.kill.cancel();
                killed += 1;
            }
        }
        Ok(Reply::Int(killed))
    } else if is(sub, "UNBLOCK") && (a.len() == 3 || a.len() == 4) {
        let error = match a.get(3) {
            None => false,
            Some(m) if is(m, "TIMEOUT") => false,
            Some(m) if is(m, "ERROR") => true,
            Some(_) => {
                return Err(Reply::err(
                    "ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR",
                ))
            }
        };
        let id = int_arg(&a[2])?;
        let target = ctx.node.clients.lock().get(&(id as u64)).cloned();
        let Some(c) = target else {
            return Ok(Reply::Int(0));
        };
        let mut st = c.state.lock();
        if !st.blocked {
            return Ok(Reply::Int(0));
        }
        st.unblock_error = error;
        drop(st);
        c.unblock.notify_one();
        Ok(Reply::Int(1))
    } else if is(sub, "SETINFO") && a.len() == 4 {
        Ok(Reply::OK)
    } else if is(sub, "REPLY") && a.len() == 3 {
        if is(&a[2], "ON") {
            ctx.s.reply_off = false;
            ctx.s.reply_skip = 0;
        } else if is(&a[2], "OFF") {
            ctx.s.reply_off = true;
        } else if is(&a[2], "SKIP") {
            // This reply and the next command's.
            ctx.s.reply_skip = 2;
        } else {
            return Err(err::syntax());
        }
        Ok(Reply::OK)
    } else if (is(sub, "NO-EVICT") || is(sub, "NO-TOUCH")) && a.len() == 3 {
        let on = if is(&a[2], "ON") {
            true
        } else if is(&a[2], "OFF") {
            false
        } else {
            return Err(err::syntax());
        };
        let mut st = ctx.s.handle.state.lock();
        if is(sub, "NO-EVICT") {
            // strata never evicts clients; the flag is kept and shown.
            st.no_evict = on;
        } else {
            st.no_touch = on;
            ctx.s.no_touch = on;
        }
        Ok(Reply::OK)
    } else if is(sub, "PAUSE") && (a.len() == 3 || a.len() == 4) {
        let ms = int_arg(&a[2])
            .map_err(|_| Reply::err("ERR timeout is not an integer or out of range"))?;
        if ms < 0 {
            return Err(Reply::err("ERR timeout is negative"));
        }
        let all = match a.get(3) {
            None => true,
            Some(m) if is(m, "ALL") => true,
            Some(m) if is(m, "WRITE") => false,
            Some(_) => return Err(err::syntax()),
        };
        let until = std::time::Instant::now() + std::time::Duration::from_millis(ms as u64);
        ctx.node.pause.start(until, all);
        Ok(Reply::OK)
    } else if is(sub, "UNPAUSE") && a.len() == 2 {
        ctx.node.pause.stop();
        Ok(Reply::OK)
    } else if is(sub, "HELP") {
        Ok(Reply::Array(
            [
                "CLIENT ID",
                "CLIENT SETNAME <name>",
                "CLIENT GETNAME",
                "CLIENT INFO",
                "CLIENT LIST [TYPE normal|master|replica|pubsub] [ID id ...]",
                "CLIENT KILL <filter> <value> ... (filters: ID ADDR LADDR USER TYPE SKIPME MAXAGE)",
                "CLIENT TRACKING (ON|OFF) [REDIRECT id] [BCAST] [PREFIX p ...] [OPTIN] [OPTOUT] [NOLOOP]",
                "CLIENT CACHING (YES|NO)",
                "CLIENT GETREDIR",
                "CLIENT TRACKINGINFO",
                "CLIENT UNBLOCK <clientid> [TIMEOUT|ERROR]",
                "CLIENT REPLY (ON|OFF|SKIP)",
                "CLIENT NO-EVICT (ON|OFF)",
                "CLIENT NO-TOUCH (ON|OFF)",
                "CLIENT PAUSE <timeout> [WRITE|ALL]",
                "CLIENT UNPAUSE",
            ]
            .into_iter()
            .map(Reply::Simple)
            .collect(),
        ))
    } else {
        Err(err::subcommand(sub, "client"))
    }
}

/// COMMAND INFO's ten fields, as Redis 7 gives them.
fn command_info(idx: usize, s: &super::Spec) -> Reply {
    let mut flags = vec![Reply::Simple(if s.write { "write" } else { "readonly" })];
    if s.noauth {
        flags.push(Reply::Simple("no_auth"));
    }
    // Commands whose keys follow a count (or STREAMS) report their fixed
    // keys only and flag the rest as movable, as Redis does.
    let super::KeySpec {
        first,
        last,
        step,
        numkeys,
    } = s.keys;
    if numkeys != 0 {
        flags.push(Reply::Simple("movablekeys"));
    }
    Reply::Array(vec![
        Reply::bulk(s.name),
        Reply::Int(i64::from(s.arity)),
        Reply::Set(flags),
        Reply::Int(i64::from(first)),
        Reply::Int(i64::from(last)),
        Reply::Int(i64::from(step)),
        Reply::Set(
            super::acl::command_categories(idx)
                .into_iter()
                .map(Reply::bulk)
                .collect(),
        ),
        Reply::Set(Vec::new()),
        Reply::Array(Vec::new()),
        Reply::Array(Vec::new()),
    ])
}

pub fn command(_: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    if a.len() == 1 {
        return Ok(Reply::Array(
            COMMANDS
                .iter()
                .enumerate()
                .map(|(i, s)| command_info(i, s))
                .collect(),
        ));
    }
    let sub = &a[1];
    if is(sub, "COUNT") {
        Ok(Reply::Int(COMMANDS.len() as i64))
    } else if is(sub, "INFO") {
        if a.len() == 2 {
            return Ok(Reply::Array(
                COMMANDS
                    .iter()
                    .enumerate()
                    .map(|(i, s)| command_info(i, s))
                    .collect(),
            ));
        }
        Ok(Reply::Array(
            a[2..]
                .iter()
                .map(|n| lookup(n).map_or(Reply::NilArray, |(i, s)| command_info(i, s)))
                .collect(),
        ))
    } else if is(sub, "DOCS") {
        let names: Vec<&super::Spec> = if a.len() == 2 {
            COMMANDS.iter().collect()
        } else {
            a[2..]
                .iter()
                .filter_map(|n| lookup(n).map(|(_, s)| s))
                .collect()
        };
        Ok(Reply::Map(
            names
                .into_iter()
                .map(|s| {
                    (
                        Reply::bulk(s.name),
                        Reply::Map(vec![
                            (
                                Reply::bulk("summary"),
                                Reply::bulk(format!("The {} command", s.name.to_ascii_uppercase())),
                            ),
                            (Reply::bulk("since"), Reply::bulk("1.0.0")),
                            (Reply::bulk("group"), Reply::bulk(s.group)),
                            (Reply::bulk("arity"), Reply::Int(i64::from(s.arity))),
                        ]),
                    )
                })
                .collect(),
        ))
    } else if is(sub, "GETKEYS") {
        let Some((_, spec)) = a.get(2).and_then(|n| lookup(n)) else {
            return Err(Reply::err("ERR Invalid command specified"));
        };
        let args = &a[2..];
        if !spec.arity_ok(args.len()) {
            return Err(Reply::err(
                "ERR Invalid number of arguments specified for command",
            ));
        }
        let keys: Vec<Reply> = spec.keys_of(args).map(|k| Reply::Bulk(k.clone())).collect();
        if keys.is_empty() {
            return Err(Reply::err("ERR The command has no key arguments"));
        }
        Ok(Reply::Array(keys))
    } else if is(sub, "LIST") {
        Ok(Reply::Array(
            COMMANDS.iter().map(|s| Reply::bulk(s.name)).collect(),
        ))
    } else {
        Err(err::subcommand(sub, "command"))
    }
}
