//! The libraries Redis gives scripts besides Lua's own: `cjson`,
//! `cmsgpack`, `bit` and `struct`, with the behaviour of the C libraries
//! Redis embeds (lua-cjson, lua-cmsgpack, LuaBitOp, Roberto Ierusalimschy's
//! struct).

use mlua::{Lua, MultiValue, Table, Value, Variadic};

use super::convert::g_format;

/// Deepest nesting cjson and cmsgpack follow.
const MAX_DEPTH: usize = 1000;

/// Registers the four libraries as globals.
pub fn register(lua: &Lua) -> mlua::Result<()> {
    let g = lua.globals();
    g.raw_set("cjson", cjson(lua)?)?;
    g.raw_set("cmsgpack", cmsgpack(lua)?)?;
    g.raw_set("bit", bit(lua)?)?;
    g.raw_set("struct", structlib(lua)?)?;
    Ok(())
}

fn runtime(msg: impl Into<String>) -> mlua::Error {
    mlua::Error::RuntimeError(msg.into())
}

/// A number argument (strings that read as numbers count, as in Lua).
fn number(v: &Value, what: &str) -> mlua::Result<f64> {
    match v {
        Value::Integer(n) => Ok(*n as f64),
        Value::Number(n) => Ok(*n),
        Value::String(s) => s
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok())
            .ok_or_else(|| runtime(format!("bad argument to '{what}' (number expected)"))),
        _ => Err(runtime(format!(
            "bad argument to '{what}' (number expected)"
        ))),
    }
}

// ---------------------------------------------------------------- cjson

fn cjson(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.raw_set(
        "encode",
        lua.create_function(|_, v: Value| {
            let mut out = Vec::new();
            json_encode(&v, &mut out, 0)?;
            Ok(mlua::BString::from(out))
        })?,
    )?;
    t.raw_set(
        "decode",
        lua.create_function(|lua, s: mlua::LuaString| {
            let parsed: serde_json::Value = serde_json::from_slice(&s.as_bytes())
                .map_err(|e| runtime(format!("Expected value but found invalid token: {e}")))?;
            json_to_lua(lua, &parsed, 0)
        })?,
    )?;
    t.raw_set("null", Value::NULL)?;
    // Settings the C library offers: accepted, answering the fixed
    // behaviour.
    for name in [
        "encode_keep_buffer",
        "encode_max_depth",
        "decode_max_depth",
        "encode_number_precision",
        "encode_invalid_numbers",
        "decode_invalid_numbers",
        "encode_sparse_array",
    ] {
        t.raw_set(name, lua.create_function(|_, args: MultiValue| Ok(args))?)?;
    }
    t.raw_set("_NAME", "cjson")?;
    t.raw_set("_VERSION", "2.1.0")?;
    Ok(t)
}

fn json_string(s: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    for &b in s {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'/' => out.extend_from_slice(b"\\/"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            b if b < 0x20 || b == 0x7f => {
                out.extend_from_slice(format!("\\u{:04x}", b).as_bytes());
            }
            b => out.push(b),
        }
    }
    out.push(b'"');
}

fn json_number(n: f64, out: &mut Vec<u8>) -> mlua::Result<()> {
    if !n.is_finite() {
        return Err(runtime("Cannot serialise number: must not be NaN or Inf"));
    }
    out.extend_from_slice(g_format(n, 14).as_bytes());
    Ok(())
}

/// How a table encodes: as an array of `len` (holes become null), or as
/// an object.
fn array_len(t: &Table) -> mlua::Result<Option<usize>> {
    let mut max = 0usize;
    let mut count = 0usize;
    for pair in t.pairs::<Value, Value>() {
        let (k, _) = pair?;
        let index = match k {
            Value::Integer(i) if i >= 1 => i as usize,
            Value::Number(f) if f >= 1.0 && f == f.floor() => f as usize,
            _ => return Ok(None),
        };
        max = max.max(index);
        count += 1;
    }
    if max > count * 2 && max > 10 {
        return Err(runtime("Cannot serialise table: excessively sparse array"));
    }
    Ok(Some(max))
}

fn json_encode(v: &Value, out: &mut Vec<u8>, depth: usize) -> mlua::Result<()> {
    if depth > MAX_DEPTH {
        return Err(runtime("Cannot serialise, excessive nesting (1001)"));
    }
    match v {
        Value::Nil => out.extend_from_slice(b"null"),
        Value::LightUserData(p) if p.0.is_null() => out.extend_from_slice(b"null"),
        Value::Boolean(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Integer(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::Number(n) => json_number(*n, out)?,
        Value::String(s) => json_string(&s.as_bytes(), out),
        Value::Table(t) => match array_len(t)? {
            Some(len) if len > 0 => {
                out.push(b'[');
                for i in 1..=len {
                    if i > 1 {
                        out.push(b',');
                    }
                    json_encode(&t.raw_get::<Value>(i)?, out, depth + 1)?;
                }
                out.push(b']');
            }
            _ => {
                out.push(b'{');
                let mut first = true;
                for pair in t.pairs::<Value, Value>() {
                    let (k, val) = pair?;
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    match &k {
                        Value::String(s) => json_string(&s.as_bytes(), out),
                        Value::Integer(n) => json_string(n.to_string().as_bytes(), out),
                        Value::Number(n) => json_string(g_format(*n, 14).as_bytes(), out),
                        _ => {
                            return Err(runtime(
                                "Cannot serialise table: table key must be a number or string",
                            ))
                        }
                    }
                    out.push(b':');
                    json_encode(&val, out, depth + 1)?;
                }
                out.push(b'}');
            }
        },
        other => {
            return Err(runtime(format!(
                "Cannot serialise {}: type not supported",
                other.type_name()
            )))
        }
    }
    Ok(())
}

fn json_to_lua(lua: &Lua, v: &serde_json::Value, depth: usize) -> mlua::Result<Value> {
    if depth > MAX_DEPTH {
        return Err(runtime("Found too many nested data structures (1001)"));
    }
    Ok(match v {
        serde_json::Value::Null => Value::NULL,
        serde_json::Value::Bool(b) => Value::Boolean(*b),
        serde_json::Value::Number(n) => Value::Number(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Value::String(lua.create_string(s)?),
        serde_json::Value::Array(items) => {
            let t = lua.create_table_with_capacity(items.len(), 0)?;
            for (i, item) in items.iter().enumerate() {
                t.raw_set(i + 1, json_to_lua(lua, item, depth + 1)?)?;
            }
            Value::Table(t)
        }
        serde_json::Value::Object(map) => {
            let t = lua.create_table_with_capacity(0, map.len())?;
            for (k, item) in map {
                t.raw_set(k.as_str(), json_to_lua(lua, item, depth + 1)?)?;
            }
            Value::Table(t)
        }
    })
}

// ------------------------------------------------------------- cmsgpack

fn cmsgpack(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    let pack = lua.create_function(|_, args: Variadic<Value>| {
        if args.is_empty() {
            return Err(runtime("MessagePack pack needs input."));
        }
        let mut out = Vec::new();
        for v in args.iter() {
            mp_encode(v, &mut out, 0)?;
        }
        Ok(mlua::BString::from(out))
    })?;
    t.raw_set("pack", pack)?;
    t.raw_set(
        "unpack",
        lua.create_function(|lua, s: mlua::LuaString| {
            let bytes = s.as_bytes();
            let mut at = 0;
            let mut out = Vec::new();
            while at < bytes.len() {
                out.push(mp_decode(lua, &bytes, &mut at, 0)?);
            }
            Ok(MultiValue::from_iter(out))
        })?,
    )?;
    t.raw_set(
        "unpack_one",
        lua.create_function(|lua, (s, offset): (mlua::LuaString, Option<i64>)| {
            let bytes = s.as_bytes();
            let mut at = offset.unwrap_or(0).max(0) as usize;
            let v = mp_decode(lua, &bytes, &mut at, 0)?;
            let next = if at >= bytes.len() { -1 } else { at as i64 };
            Ok((next, v))
        })?,
    )?;
    t.raw_set("_NAME", "cmsgpack")?;
    t.raw_set("_VERSION", "lua-cmsgpack 0.4.0")?;
    Ok(t)
}

fn mp_int(n: i64, out: &mut Vec<u8>) {
    if n >= 0 {
        let u = n as u64;
        if u < 128 {
            out.push(u as u8);
        } else if u <= 0xff {
            out.extend_from_slice(&[0xcc, u as u8]);
        } else if u <= 0xffff {
            out.push(0xcd);
            out.extend_from_slice(&(u as u16).to_be_bytes());
        } else if u <= 0xffff_ffff {
            out.push(0xce);
            out.extend_from_slice(&(u as u32).to_be_bytes());
        } else {
            out.push(0xcf);
            out.extend_from_slice(&u.to_be_bytes());
        }
    } else if n >= -32 {
        out.push(n as i8 as u8);
    } else if n >= -128 {
        out.extend_from_slice(&[0xd0, n as i8 as u8]);
    } else if n >= -32768 {
        out.push(0xd1);
        out.extend_from_slice(&(n as i16).to_be_bytes());
    } else if n >= -(1 << 31) {
        out.push(0xd2);
        out.extend_from_slice(&(n as i32).to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

fn mp_len(len: usize, fix: u8, fix_max: usize, tags: [u8; 2], out: &mut Vec<u8>) {
    if len <= fix_max {
        out.push(fix | len as u8);
    } else if len <= 0xffff {
        out.push(tags[0]);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(tags[1]);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
}

fn mp_encode(v: &Value, out: &mut Vec<u8>, depth: usize) -> mlua::Result<()> {
    if depth > MAX_DEPTH {
        out.push(0xc0);
        return Ok(());
    }
    match v {
        Value::Boolean(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
        Value::Integer(n) => mp_int(*n, out),
        Value::Number(n) if *n == n.trunc() && n.abs() < 9.2e18 => mp_int(*n as i64, out),
        Value::Number(n) => {
            let f = *n as f32;
            if f as f64 == *n {
                out.push(0xca);
                out.extend_from_slice(&f.to_be_bytes());
            } else {
                out.push(0xcb);
                out.extend_from_slice(&n.to_be_bytes());
            }
        }
        Value::String(s) => {
            let b = s.as_bytes();
            if b.len() < 32 {
                out.push(0xa0 | b.len() as u8);
            } else if b.len() <= 0xff {
                out.extend_from_slice(&[0xd9, b.len() as u8]);
            } else {
                mp_len(b.len(), 0xa0, 31, [0xda, 0xdb], out);
            }
            out.extend_from_slice(&b);
        }
        Value::Table(t) => match array_len(t).ok().flatten() {
            // An array when its keys are exactly 1..n, as cmsgpack decides.
            Some(len)
                if len > 0 && t.raw_len() == len && t.pairs::<Value, Value>().count() == len =>
            {
                mp_len(len, 0x90, 15, [0xdc, 0xdd], out);
                for i in 1..=len {
                    mp_encode(&t.raw_get::<Value>(i)?, out, depth + 1)?;
                }
            }
            _ => {
                let pairs: Vec<(Value, Value)> =
                    t.pairs::<Value, Value>().collect::<mlua::Result<_>>()?;
                mp_len(pairs.len(), 0x80, 15, [0xde, 0xdf], out);
                for (k, val) in &pairs {
                    mp_encode(k, out, depth + 1)?;
                    mp_encode(val, out, depth + 1)?;
                }
            }
        },
        _ => out.push(0xc0),
    }
    Ok(())
}

fn take<'a>(b: &'a [u8], at: &mut usize, n: usize) -> mlua::Result<&'a [u8]> {
    let end = at
        .checked_add(n)
        .filter(|&e| e <= b.len())
        .ok_or_else(|| runtime("Missing bytes in input."))?;
    let s = &b[*at..end];
    *at = end;
    Ok(s)
}

fn be(b: &[u8]) -> u64 {
    b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x))
}

fn mp_decode(lua: &Lua, b: &[u8], at: &mut usize, depth: usize) -> mlua::Result<Value> {
    if depth > MAX_DEPTH {
        return Err(runtime("Bad data format in input."));
    }
    let tag = take(b, at, 1)?[0];
    let str_of = |lua: &Lua, at: &mut usize, n: usize| -> mlua::Result<Value> {
        Ok(Value::String(lua.create_string(take(b, at, n)?)?))
    };
    Ok(match tag {
        0x00..=0x7f => Value::Integer(tag.into()),
        0xe0..=0xff => Value::Integer((tag as i8).into()),
        0x80..=0x8f => mp_map(lua, b, at, usize::from(tag & 0x0f), depth)?,
        0x90..=0x9f => mp_array(lua, b, at, usize::from(tag & 0x0f), depth)?,
        0xa0..=0xbf => str_of(lua, at, usize::from(tag & 0x1f))?,
        0xc0 => Value::Nil,
        0xc2 => Value::Boolean(false),
        0xc3 => Value::Boolean(true),
        0xc4 | 0xd9 => {
            let n = be(take(b, at, 1)?) as usize;
            str_of(lua, at, n)?
        }
        0xc5 | 0xda => {
            let n = be(take(b, at, 2)?) as usize;
            str_of(lua, at, n)?
        }
        0xc6 | 0xdb => {
            let n = be(take(b, at, 4)?) as usize;
            str_of(lua, at, n)?
        }
        0xca => Value::Number(f64::from(f32::from_bits(be(take(b, at, 4)?) as u32))),
        0xcb => Value::Number(f64::from_bits(be(take(b, at, 8)?))),
        0xcc => Value::Integer(be(take(b, at, 1)?) as _),
        0xcd => Value::Integer(be(take(b, at, 2)?) as _),
        0xce => Value::Integer(be(take(b, at, 4)?) as _),
        0xcf => Value::Number(be(take(b, at, 8)?) as f64),
        0xd0 => Value::Integer((be(take(b, at, 1)?) as u8 as i8).into()),
        0xd1 => Value::Integer((be(take(b, at, 2)?) as u16 as i16).into()),
        0xd2 => Value::Integer((be(take(b, at, 4)?) as u32 as i32).into()),
        0xd3 => Value::Number(be(take(b, at, 8)?) as i64 as f64),
        0xdc => {
            let n = be(take(b, at, 2)?) as usize;
            mp_array(lua, b, at, n, depth)?
        }
        0xdd => {
            let n = be(take(b, at, 4)?) as usize;
            mp_array(lua, b, at, n, depth)?
        }
        0xde => {
            let n = be(take(b, at, 2)?) as usize;
            mp_map(lua, b, at, n, depth)?
        }
        0xdf => {
            let n = be(take(b, at, 4)?) as usize;
            mp_map(lua, b, at, n, depth)?
        }
        _ => return Err(runtime("Bad data format in input.")),
    })
}

fn mp_array(lua: &Lua, b: &[u8], at: &mut usize, n: usize, depth: usize) -> mlua::Result<Value> {
    // Each element takes at least a byte: a count beyond the input is bad.
    if n > b.len() - *at {
        return Err(runtime("Missing bytes in input."));
    }
    let t = lua.create_table_with_capacity(n, 0)?;
    for i in 1..=n {
        t.raw_set(i, mp_decode(lua, b, at, depth + 1)?)?;
    }
    Ok(Value::Table(t))
}

fn mp_map(lua: &Lua, b: &[u8], at: &mut usize, n: usize, depth: usize) -> mlua::Result<Value> {
    if n > b.len() - *at {
        return Err(runtime("Missing bytes in input."));
    }
    let t = lua.create_table_with_capacity(0, n)?;
    for _ in 0..n {
        let k = mp_decode(lua, b, at, depth + 1)?;
        let v = mp_decode(lua, b, at, depth + 1)?;
        if k != Value::Nil {
            t.raw_set(k, v)?;
        }
    }
    Ok(Value::Table(t))
}

// ------------------------------------------------------------------ bit

/// A number as LuaBitOp's 32-bit integer: rounded, wrapped.
fn tobit(v: &Value, what: &str) -> mlua::Result<i32> {
    let n = number(v, what)?;
    let r = n.round_ties_even();
    Ok(r.rem_euclid(4_294_967_296.0) as u32 as i32)
}

fn bit(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.raw_set(
        "tobit",
        lua.create_function(|_, v: Value| tobit(&v, "tobit"))?,
    )?;
    t.raw_set(
        "bnot",
        lua.create_function(|_, v: Value| Ok(!tobit(&v, "bnot")?))?,
    )?;
    t.raw_set(
        "bswap",
        lua.create_function(|_, v: Value| Ok(tobit(&v, "bswap")?.swap_bytes()))?,
    )?;
    type Fold = fn(i32, i32) -> i32;
    let folds: [(&str, Fold); 3] = [
        ("band", |a, b| a & b),
        ("bor", |a, b| a | b),
        ("bxor", |a, b| a ^ b),
    ];
    for (name, f) in folds {
        t.raw_set(
            name,
            lua.create_function(move |_, args: Variadic<Value>| {
                let mut it = args.iter();
                let first = it.next().ok_or_else(|| {
                    runtime(format!(
                        "bad argument #1 to '{name}' (number expected, got no value)"
                    ))
                })?;
                let mut acc = tobit(first, name)?;
                for v in it {
                    acc = f(acc, tobit(v, name)?);
                }
                Ok(acc)
            })?,
        )?;
    }
    type Shift = fn(i32, u32) -> i32;
    let shifts: [(&str, Shift); 5] = [
        ("lshift", |a, n| ((a as u32) << n) as i32),
        ("rshift", |a, n| ((a as u32) >> n) as i32),
        ("arshift", |a, n| a >> n),
        ("rol", |a, n| (a as u32).rotate_left(n) as i32),
        ("ror", |a, n| (a as u32).rotate_right(n) as i32),
    ];
    for (name, f) in shifts {
        t.raw_set(
            name,
            lua.create_function(move |_, (a, n): (Value, Value)| {
                Ok(f(tobit(&a, name)?, (tobit(&n, name)? & 31) as u32))
            })?,
        )?;
    }
    t.raw_set(
        "tohex",
        lua.create_function(|_, (v, n): (Value, Option<Value>)| {
            let x = tobit(&v, "tohex")? as u32;
            let n = match n {
                Some(n) => tobit(&n, "tohex")?,
                None => 8,
            };
            let (upper, digits) = if n < 0 {
                (true, (-n).min(8))
            } else {
                (false, n.min(8))
            };
            let s = format!("{x:08x}");
            let s = &s[8 - digits as usize..];
            Ok(if upper {
                s.to_ascii_uppercase()
            } else {
                s.to_string()
            })
        })?,
    )?;
    Ok(t)
}

// --------------------------------------------------------------- struct

#[derive(Clone, Copy)]
enum Item {
    Int {
        size: usize,
        signed: bool,
    },
    Float,
    Double,
    /// `s`: zero-terminated.
    Zstr,
    /// `cN`: N bytes (0: the whole string when packing, the previous
    /// number when unpacking).
    Chars(usize),
    Pad,
}

/// Parses a struct format into its items and byte order.
fn parse_format(fmt: &[u8]) -> mlua::Result<Vec<(Item, bool, usize)>> {
    let mut out = Vec::new();
    let mut little = cfg!(target_endian = "little");
    let mut align = 1usize;
    let mut i = 0;
    let number = |i: &mut usize| -> Option<usize> {
        let start = *i;
        while *i < fmt.len() && fmt[*i].is_ascii_digit() {
            *i += 1;
        }
        std::str::from_utf8(&fmt[start..*i]).ok()?.parse().ok()
    };
    while i < fmt.len() {
        let c = fmt[i];
        i += 1;
        let item = match c {
            b' ' => continue,
            b'>' => {
                little = false;
                continue;
            }
            b'<' => {
                little = true;
                continue;
            }
            b'=' => {
                little = cfg!(target_endian = "little");
                continue;
            }
            b'!' => {
                align = number(&mut i).unwrap_or(8).clamp(1, 16);
                continue;
            }
            b'x' => Item::Pad,
            b'b' | b'B' => Item::Int {
                size: 1,
                signed: c == b'b',
            },
            b'h' | b'H' => Item::Int {
                size: 2,
                signed: c == b'h',
            },
            b'l' | b'L' | b'T' => Item::Int {
                size: 8,
                signed: c == b'l',
            },
            b'i' | b'I' => {
                let size = number(&mut i).unwrap_or(4);
                if !(1..=8).contains(&size) {
                    return Err(runtime(format!(
                        "integral size {size} is larger than limit of 8"
                    )));
                }
                Item::Int {
                    size,
                    signed: c == b'i',
                }
            }
            b'f' => Item::Float,
            b'd' => Item::Double,
            b's' => Item::Zstr,
            b'c' => Item::Chars(number(&mut i).unwrap_or(1)),
            other => {
                return Err(runtime(format!(
                    "invalid format option '{}'",
                    char::from(other)
                )))
            }
        };
        out.push((item, little, align));
    }
    Ok(out)
}

fn item_align(item: Item, align: usize) -> usize {
    let size = match item {
        Item::Int { size, .. } => size,
        Item::Float => 4,
        Item::Double => 8,
        _ => 1,
    };
    size.min(align).max(1)
}

fn pad_to(len: usize, a: usize) -> usize {
    (a - len % a) % a
}

fn structlib(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.raw_set(
        "pack",
        lua.create_function(|_, (fmt, args): (mlua::LuaString, Variadic<Value>)| {
            let items = parse_format(&fmt.as_bytes())?;
            let mut out = Vec::new();
            let mut args = args.iter();
            let mut next = |what: &str| {
                args.next()
                    .cloned()
                    .ok_or_else(|| runtime(format!("bad argument to 'pack' ({what} expected)")))
            };
            for (item, little, align) in items {
                out.resize(out.len() + pad_to(out.len(), item_align(item, align)), 0);
                match item {
                    Item::Pad => out.push(0),
                    Item::Int { size, .. } => {
                        let n = number(&next("number")?, "pack")?;
                        let v = if n < 0.0 { n as i64 as u64 } else { n as u64 };
                        let bytes = v.to_le_bytes();
                        let mut chunk = bytes[..size].to_vec();
                        if !little {
                            chunk.reverse();
                        }
                        out.extend_from_slice(&chunk);
                    }
                    Item::Float | Item::Double => {
                        let n = number(&next("number")?, "pack")?;
                        let bytes = if matches!(item, Item::Float) {
                            let f = n as f32;
                            if little {
                                f.to_le_bytes().to_vec()
                            } else {
                                f.to_be_bytes().to_vec()
                            }
                        } else if little {
                            n.to_le_bytes().to_vec()
                        } else {
                            n.to_be_bytes().to_vec()
                        };
                        out.extend_from_slice(&bytes);
                    }
                    Item::Zstr | Item::Chars(_) => {
                        let v = next("string")?;
                        let s = match &v {
                            Value::String(s) => s.as_bytes().to_vec(),
                            Value::Integer(n) => n.to_string().into_bytes(),
                            Value::Number(n) => g_format(*n, 14).into_bytes(),
                            _ => return Err(runtime("bad argument to 'pack' (string expected)")),
                        };
                        match item {
                            Item::Zstr => {
                                out.extend_from_slice(&s);
                                out.push(0);
                            }
                            Item::Chars(0) => out.extend_from_slice(&s),
                            Item::Chars(n) => {
                                if s.len() < n {
                                    return Err(runtime(
                                        "bad argument to 'pack' (string too short)",
                                    ));
                                }
                                out.extend_from_slice(&s[..n]);
                            }
                            _ => {}
                        }
                    }
                }
            }
            Ok(mlua::BString::from(out))
        })?,
    )?;
    t.raw_set(
        "unpack",
        lua.create_function(
            |lua, (fmt, data, init): (mlua::LuaString, mlua::LuaString, Option<i64>)| {
                let items = parse_format(&fmt.as_bytes())?;
                let b = data.as_bytes();
                let mut at = (init.unwrap_or(1).max(1) - 1) as usize;
                let mut out: Vec<Value> = Vec::new();
                let short = || runtime("bad argument to 'unpack' (data string too short)");
                for (item, little, align) in items {
                    at += pad_to(at, item_align(item, align));
                    match item {
                        Item::Pad => at += 1,
                        Item::Int { size, signed } => {
                            let mut chunk = b.get(at..at + size).ok_or_else(short)?.to_vec();
                            at += size;
                            if !little {
                                chunk.reverse();
                            }
                            let mut v = 0u64;
                            for (i, &x) in chunk.iter().enumerate() {
                                v |= u64::from(x) << (8 * i);
                            }
                            let n = if signed && size < 8 && v >> (8 * size - 1) & 1 == 1 {
                                (v | (!0u64 << (8 * size))) as i64 as f64
                            } else if signed {
                                v as i64 as f64
                            } else {
                                v as f64
                            };
                            out.push(Value::Number(n));
                        }
                        Item::Float => {
                            let c: [u8; 4] = b
                                .get(at..at + 4)
                                .ok_or_else(short)?
                                .try_into()
                                .map_err(|_| short())?;
                            at += 4;
                            let f = if little {
                                f32::from_le_bytes(c)
                            } else {
                                f32::from_be_bytes(c)
                            };
                            out.push(Value::Number(f64::from(f)));
                        }
                        Item::Double => {
                            let c: [u8; 8] = b
                                .get(at..at + 8)
                                .ok_or_else(short)?
                                .try_into()
                                .map_err(|_| short())?;
                            at += 8;
                            let f = if little {
                                f64::from_le_bytes(c)
                            } else {
                                f64::from_be_bytes(c)
                            };
                            out.push(Value::Number(f));
                        }
                        Item::Zstr => {
                            let rest = b.get(at..).ok_or_else(short)?;
                            let end = rest
                                .iter()
                                .position(|&x| x == 0)
                                .ok_or_else(|| runtime("unfinished string in data"))?;
                            out.push(Value::String(lua.create_string(&rest[..end])?));
                            at += end + 1;
                        }
                        Item::Chars(n) => {
                            let n = if n == 0 {
                                match out.pop() {
                                    Some(Value::Number(len)) if len >= 0.0 => len as usize,
                                    _ => return Err(runtime("format 'c0' needs a previous size")),
                                }
                            } else {
                                n
                            };
                            let s = b.get(at..at + n).ok_or_else(short)?;
                            out.push(Value::String(lua.create_string(s)?));
                            at += n;
                        }
                    }
                }
                out.push(Value::Number((at + 1) as f64));
                Ok(MultiValue::from_iter(out))
            },
        )?,
    )?;
    t.raw_set(
        "size",
        lua.create_function(|_, fmt: mlua::LuaString| {
            let mut size = 0usize;
            for (item, _, align) in parse_format(&fmt.as_bytes())? {
                size += pad_to(size, item_align(item, align));
                size += match item {
                    Item::Int { size, .. } => size,
                    Item::Float => 4,
                    Item::Double => 8,
                    Item::Pad => 1,
                    Item::Chars(n) if n > 0 => n,
                    _ => return Err(runtime("options 'c0' - 's' have undefined sizes")),
                };
            }
            Ok(size)
        })?,
    )?;
    Ok(t)
}
