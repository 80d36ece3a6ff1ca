//! HyperLogLog commands over sketches stored as strings (see
//! [`crate::storage::hll`]).

use bytes::Bytes;

use super::reply::Reply;
use super::strings::{read_bytes, update_bytes};
use super::{CmdResult, Ctx};
use crate::storage::hll::{self, Registers};
use crate::storage::{Record, Value};

fn not_a_sketch() -> Reply {
    Reply::err("WRONGTYPE Key is not a valid HyperLogLog string value.")
}

fn sparse_max(ctx: &Ctx<'_>) -> usize {
    ctx.node.cfg.read().encoding.hll_sparse_max_bytes.max(0) as usize
}

/// The registers at `key` (all zero for no key).
fn registers(ctx: &mut Ctx<'_>, key: &[u8]) -> Result<Registers, Reply> {
    read_bytes(ctx, key, |v| {
        if v.is_empty() {
            // No key; a key holding "" is not a sketch.
            return Ok(Registers::default());
        }
        Registers::decode(v).map_err(|_| not_a_sketch())
    })?
}

pub fn pfadd(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let sparse_max = sparse_max(ctx);
    update_bytes(ctx, &a[1], |v, existed| {
        if existed && v.is_empty() {
            return Err(not_a_sketch());
        }
        let elements = a[2..].iter().map(|e| &e[..]);
        match hll::add(v, elements, sparse_max) {
            Ok(Some(range)) => Ok((Reply::Int(1), Some(range))),
            Ok(None) => Ok((Reply::Int(0), None)),
            Err(_) => Err(not_a_sketch()),
        }
    })
}

pub fn pfcount(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let mut all = registers(ctx, &a[1])?;
    for key in &a[2..] {
        all.merge(&registers(ctx, key)?);
    }
    Ok(Reply::Int(all.count() as i64))
}

pub fn pfmerge(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    ctx.atomic(|ctx| {
        // The destination's own registers take part, as in Redis.
        let mut all = registers(ctx, &a[1])?;
        for key in &a[2..] {
            all.merge(&registers(ctx, key)?);
        }
        let bytes = all.encode(0);
        ctx.write(&a[1], |cur| {
            let expire_at_ms = cur.as_ref().and_then(|r| r.expire_at_ms);
            *cur = Some(Record {
                value: Value::Str(bytes),
                expire_at_ms,
                version: Default::default(),
                written_secs: 0,
            });
            ((), true)
        })?;
        Ok(Reply::OK)
    })
}
