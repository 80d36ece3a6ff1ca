//! Values between Redis and Lua, both ways, as Redis converts them.
//!
//! A reply reaching a script becomes a Lua value by the protocol the
//! script chose with `redis.setresp` (RESP2 by default); what a script
//! returns becomes a reply to its caller. Numbers passed to `redis.call`
//! keep their full precision (`%.17g`).

use bytes::Bytes;
use mlua::{Lua, Table, Value};

use crate::commands::reply::{format_coord, format_double, Reply};

/// A Lua number as Redis formats it for a command argument: an integer
/// without decimals, anything else as C's `%.17g`.
pub fn number_arg(n: f64) -> String {
    if n.is_finite() && n == n.trunc() && n.abs() < 1e17 {
        return format!("{}", n as i64);
    }
    g_format(n, 17)
}

/// C's `%.<precision>g`: that many significant digits, exponent form for
/// exponents below -4 or from `precision` up, trailing zeros dropped.
pub fn g_format(n: f64, precision: usize) -> String {
    let precision = precision.max(1);
    if n.is_nan() {
        return if n.is_sign_negative() { "-nan" } else { "nan" }.into();
    }
    if n.is_infinite() {
        return if n > 0.0 { "inf" } else { "-inf" }.into();
    }
    if n == 0.0 {
        return if n.is_sign_negative() { "-0" } else { "0" }.into();
    }
    let sci = format!("{n:.prec$e}", prec = precision - 1);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let trim = |s: &str| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s.to_string()
        }
    };
    if exp < -4 || exp >= precision as i32 {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim(mantissa), exp.abs())
    } else {
        let decimals = (precision as i32 - 1 - exp).max(0) as usize;
        trim(&format!("{n:.decimals$}"))
    }
}

/// A table `{[field] = value}`.
fn tagged(lua: &Lua, field: &str, value: impl mlua::IntoLua) -> mlua::Result<Value> {
    let t = lua.create_table_with_capacity(0, 1)?;
    t.raw_set(field, value)?;
    Ok(Value::Table(t))
}

fn seq(
    lua: &Lua,
    items: impl ExactSizeIterator<Item = mlua::Result<Value>>,
) -> mlua::Result<Value> {
    let t = lua.create_table_with_capacity(items.len(), 0)?;
    for (i, v) in items.enumerate() {
        t.raw_set(i + 1, v?)?;
    }
    Ok(Value::Table(t))
}

/// A command's reply as the script sees it (`resp3` after
/// `redis.setresp(3)`).
pub fn reply_to_lua(lua: &Lua, r: &Reply, resp3: bool) -> mlua::Result<Value> {
    let nil = || {
        if resp3 {
            Value::Nil
        } else {
            Value::Boolean(false)
        }
    };
    Ok(match r {
        Reply::Simple(s) => tagged(lua, "ok", *s)?,
        Reply::Status(s) => tagged(lua, "ok", s.as_str())?,
        Reply::Error(e) => tagged(lua, "err", e.as_str())?,
        Reply::Int(n) => Value::Number(*n as f64),
        Reply::Bulk(b) => Value::String(lua.create_string(b)?),
        Reply::Verbatim(s) if resp3 => {
            let inner = lua.create_table_with_capacity(0, 2)?;
            inner.raw_set("format", "txt")?;
            inner.raw_set("string", s.as_str())?;
            tagged(lua, "verbatim_string", inner)?
        }
        Reply::Verbatim(s) => Value::String(lua.create_string(s)?),
        Reply::Nil | Reply::NilArray => nil(),
        Reply::Array(items) | Reply::Push(items) | Reply::Many(items) => {
            seq(lua, items.iter().map(|i| reply_to_lua(lua, i, resp3)))?
        }
        Reply::Set(items) if resp3 => {
            let set = lua.create_table_with_capacity(0, items.len())?;
            for i in items {
                set.raw_set(reply_to_lua(lua, i, resp3)?, true)?;
            }
            tagged(lua, "set", set)?
        }
        Reply::Set(items) => seq(lua, items.iter().map(|i| reply_to_lua(lua, i, resp3)))?,
        Reply::Map(pairs) | Reply::Keyed(pairs) if resp3 => {
            let map = lua.create_table_with_capacity(0, pairs.len())?;
            for (k, v) in pairs {
                map.raw_set(reply_to_lua(lua, k, resp3)?, reply_to_lua(lua, v, resp3)?)?;
            }
            tagged(lua, "map", map)?
        }
        // RESP2 folds a map, and pairs, into one flat array.
        Reply::Map(pairs) | Reply::Pairs(pairs) if !resp3 => {
            let t = lua.create_table_with_capacity(2 * pairs.len(), 0)?;
            for (i, (k, v)) in pairs.iter().enumerate() {
                t.raw_set(2 * i + 1, reply_to_lua(lua, k, resp3)?)?;
                t.raw_set(2 * i + 2, reply_to_lua(lua, v, resp3)?)?;
            }
            Value::Table(t)
        }
        // Replies by key in RESP2, and pairs in RESP3, as two-element
        // arrays (a map in RESP3 was taken above).
        Reply::Keyed(pairs) | Reply::Pairs(pairs) | Reply::Map(pairs) => seq(
            lua,
            pairs.iter().map(|(k, v)| {
                seq(
                    lua,
                    [reply_to_lua(lua, k, resp3), reply_to_lua(lua, v, resp3)].into_iter(),
                )
            }),
        )?,
        Reply::Double(d) | Reply::Coord(d) if resp3 => tagged(lua, "double", *d)?,
        Reply::Double(d) => Value::String(lua.create_string(format_double(*d))?),
        Reply::Coord(d) => Value::String(lua.create_string(format_coord(*d))?),
    })
}

/// A Lua value as a command argument; None for what can't be one.
pub fn arg_from_lua(v: &Value) -> Option<Bytes> {
    match v {
        Value::String(s) => Some(Bytes::copy_from_slice(&s.as_bytes())),
        Value::Integer(n) => Some(Bytes::from(n.to_string())),
        Value::Number(n) => Some(Bytes::from(number_arg(*n))),
        _ => None,
    }
}

/// What a script returned, as the reply its caller gets.
pub fn lua_to_reply(v: &Value) -> Reply {
    lua_to_reply_depth(v, 0)
}

fn lua_to_reply_depth(v: &Value, depth: usize) -> Reply {
    if depth > 1000 {
        return Reply::err("ERR reached lua stack limit");
    }
    match v {
        Value::Nil => Reply::Nil,
        Value::Boolean(true) => Reply::Int(1),
        Value::Boolean(false) => Reply::Nil,
        Value::Integer(n) => Reply::Int(*n),
        Value::Number(n) => Reply::Int(if n.is_finite() { *n as i64 } else { 0 }),
        Value::String(s) => Reply::Bulk(Bytes::copy_from_slice(&s.as_bytes())),
        Value::Table(t) => table_to_reply(t, depth),
        Value::Error(e) => Reply::err(error_text(e)),
        _ => Reply::Nil,
    }
}

fn table_to_reply(t: &Table, depth: usize) -> Reply {
    let field = |name: &str| t.raw_get::<Value>(name).unwrap_or(Value::Nil);
    if let Value::String(e) = field("err") {
        return Reply::err(error_text_of(&e.to_string_lossy()));
    }
    if let Value::String(s) = field("ok") {
        return Reply::Status(s.to_string_lossy());
    }
    match field("double") {
        Value::Number(d) => return Reply::Double(d),
        Value::Integer(d) => return Reply::Double(d as f64),
        _ => {}
    }
    if let Value::String(s) = field("big_number") {
        return Reply::Bulk(Bytes::copy_from_slice(&s.as_bytes()));
    }
    if let Value::Table(m) = field("map") {
        let pairs = m
            .pairs::<Value, Value>()
            .filter_map(Result::ok)
            .map(|(k, v)| {
                (
                    lua_to_reply_depth(&k, depth + 1),
                    lua_to_reply_depth(&v, depth + 1),
                )
            })
            .collect();
        return Reply::Map(pairs);
    }
    if let Value::Table(m) = field("set") {
        let items = m
            .pairs::<Value, Value>()
            .filter_map(Result::ok)
            .map(|(k, _)| lua_to_reply_depth(&k, depth + 1))
            .collect();
        return Reply::Set(items);
    }
    // An array up to the first nil, as Redis reads it.
    let mut items = Vec::new();
    for i in 1.. {
        match t.raw_get::<Value>(i) {
            Ok(Value::Nil) | Err(_) => break,
            Ok(v) => items.push(lua_to_reply_depth(&v, depth + 1)),
        }
    }
    Reply::Array(items)
}

/// An error text with a Redis error code in front (`ERR` unless it has
/// one), as `redis.error_reply` and script errors are sent.
pub fn error_text_of(msg: &str) -> String {
    let msg = msg.strip_prefix('-').unwrap_or(msg);
    let code = msg.split(' ').next().unwrap_or("");
    if !code.is_empty() && code.len() < msg.len() && code.bytes().all(|b| b.is_ascii_uppercase()) {
        msg.to_string()
    } else {
        format!("ERR {msg}")
    }
}

/// The message of a Lua error, without mlua's traceback.
pub fn error_text(e: &mlua::Error) -> String {
    match e {
        mlua::Error::RuntimeError(m) | mlua::Error::SyntaxError { message: m, .. } => m.clone(),
        mlua::Error::MemoryError(_) => "not enough memory".into(),
        mlua::Error::CallbackError { cause, .. } => error_text(cause),
        mlua::Error::ExternalError(x) => x.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_format_like_percent_17g() {
        assert_eq!(number_arg(3.0), "3");
        assert_eq!(number_arg(-42.0), "-42");
        assert_eq!(number_arg(0.1), "0.10000000000000001");
        assert_eq!(number_arg(1.5), "1.5");
        assert_eq!(number_arg(1e20), "1e+20");
        assert_eq!(number_arg(1.0e-5), "1.0000000000000001e-05");
        assert_eq!(number_arg(2f64.powi(53)), "9007199254740992");
        assert_eq!(number_arg(123456.789), "123456.789");
        assert_eq!(number_arg(1.0 / 3.0), "0.33333333333333331");
        assert_eq!(g_format(1.0 / 3.0, 14), "0.33333333333333");
        assert_eq!(g_format(1e15 + 0.5, 14), "1e+15");
    }

    #[test]
    fn error_codes_are_kept_or_added() {
        assert_eq!(error_text_of("My Error"), "ERR My Error");
        assert_eq!(error_text_of("-WRONGTYPE bad"), "WRONGTYPE bad");
        assert_eq!(error_text_of("NOSCRIPT x"), "NOSCRIPT x");
    }
}
