//! SORT and SORT_RO: the elements of a list, set or sorted set, ordered by
//! their numeric or byte value or by keys built from them (`BY weight_*`,
//! `BY obj_*->field`), with `GET` lookups, `LIMIT` and `STORE`.

use std::cmp::Ordering;

use bytes::Bytes;

use super::reply::Reply;
use super::{err, float_arg, int_arg, is, CmdResult, Ctx};
use crate::storage::{ListItems, ReadHint, Record, Value};

/// A parsed SORT.
struct Sort {
    by: Option<Bytes>,
    /// BY names a pattern without `*`: keep the source's order.
    dont_sort: bool,
    limit: Option<(i64, i64)>,
    gets: Vec<Bytes>,
    desc: bool,
    alpha: bool,
    store: Option<Bytes>,
}

fn parse(a: &[Bytes], read_only: bool) -> Result<Sort, Reply> {
    let mut s = Sort {
        by: None,
        dont_sort: false,
        limit: None,
        gets: Vec::new(),
        desc: false,
        alpha: false,
        store: None,
    };
    let mut i = 2;
    while i < a.len() {
        let left = a.len() - i - 1;
        let o = &a[i];
        if is(o, "ASC") {
            s.desc = false;
        } else if is(o, "DESC") {
            s.desc = true;
        } else if is(o, "ALPHA") {
            s.alpha = true;
        } else if is(o, "LIMIT") && left >= 2 {
            s.limit = Some((int_arg(&a[i + 1])?, int_arg(&a[i + 2])?));
            i += 2;
        } else if is(o, "STORE") && left >= 1 && !read_only {
            s.store = Some(a[i + 1].clone());
            i += 1;
        } else if is(o, "BY") && left >= 1 {
            let p = a[i + 1].clone();
            s.dont_sort = !p.contains(&b'*');
            s.by = Some(p);
            i += 1;
        } else if is(o, "GET") && left >= 1 {
            s.gets.push(a[i + 1].clone());
            i += 1;
        } else {
            return Err(err::syntax());
        }
        i += 1;
    }
    Ok(s)
}

/// The key and hash field (after `->`) a pattern names for `elem`; None
/// when the pattern has no `*`.
fn substitute(pattern: &[u8], elem: &[u8]) -> Option<(Vec<u8>, Option<Vec<u8>>)> {
    let star = pattern.iter().position(|&c| c == b'*')?;
    let arrow = pattern
        .windows(2)
        .rposition(|w| w == b"->")
        .filter(|&p| p > star && p + 2 < pattern.len());
    let (key_part, field) = match arrow {
        Some(p) => (&pattern[..p], Some(pattern[p + 2..].to_vec())),
        None => (pattern, None),
    };
    let mut key = Vec::with_capacity(key_part.len() + elem.len());
    key.extend_from_slice(&key_part[..star]);
    key.extend_from_slice(elem);
    key.extend_from_slice(&key_part[star + 1..]);
    Some((key, field))
}

/// What a pattern names for `elem`: `#` is the element itself; a missing
/// key or field, or one of another type, is None.
fn lookup(ctx: &mut Ctx<'_>, pattern: &[u8], elem: &[u8]) -> Result<Option<Vec<u8>>, Reply> {
    if pattern == b"#" {
        return Ok(Some(elem.to_vec()));
    }
    let Some((key, field)) = substitute(pattern, elem) else {
        return Ok(None);
    };
    ctx.read(&key, ReadHint::Normal, |r| match (r, &field) {
        (Some((rec, _)), None) => match &rec.value {
            Value::Str(v) => Some(v.clone()),
            _ => None,
        },
        (Some((rec, _)), Some(f)) => match &rec.value {
            Value::Hash(h) => h.get(f).map(<[u8]>::to_vec),
            _ => None,
        },
        (None, _) => None,
    })
}

/// Elements, and whether they came from a set.
type Elements = (Vec<Vec<u8>>, bool);

/// The elements of the list, set or sorted set at `key`, in its order.
fn elements(ctx: &mut Ctx<'_>, key: &[u8]) -> Result<Option<Elements>, Reply> {
    ctx.read(key, ReadHint::Normal, |r| {
        let Some((rec, _)) = r else {
            return Ok(None);
        };
        Ok(Some(match &rec.value {
            Value::List(l) => (l.iter().map(|v| v.to_vec()).collect(), false),
            Value::Set(s) => (s.iter().map(<[u8]>::to_vec).collect(), true),
            Value::ZSet(z) => (z.iter().map(|(m, _)| m.to_vec()).collect(), false),
            _ => return Err(err::wrongtype()),
        }))
    })?
}

fn sort_generic(ctx: &mut Ctx<'_>, a: &[Bytes], read_only: bool) -> CmdResult {
    let q = parse(a, read_only)?;
    let patterned =
        q.by.as_ref()
            .is_some_and(|p| !q.dont_sort && p[..] != b"#"[..])
            || q.gets.iter().any(|g| g[..] != b"#"[..]);
    if patterned && ctx.node.cluster.get().is_some() {
        return Err(Reply::err(
            "ERR BY and GET patterns of SORT are denied in cluster mode: the keys they form may be in other slots",
        ));
    }
    let run = |ctx: &mut Ctx<'_>| -> CmdResult {
        let (mut elems, is_set) = elements(ctx, &a[1])?.unwrap_or_default();
        // A set has no order of its own: sort it anyway when the result is
        // stored, so every replica stores the same list.
        let dont_sort = q.dont_sort && !(is_set && q.store.is_some());
        if !dont_sort {
            let mut keyed = Vec::with_capacity(elems.len());
            for e in elems {
                let by = match &q.by {
                    Some(p) => lookup(ctx, p, &e)?,
                    None => Some(e.clone()),
                };
                keyed.push((by, e));
            }
            if q.alpha {
                keyed.sort_by(|(x, ex), (y, ey)| {
                    let o = match (x, y) {
                        (None, None) => Ordering::Equal,
                        (None, Some(_)) => Ordering::Less,
                        (Some(_), None) => Ordering::Greater,
                        (Some(x), Some(y)) => x.cmp(y),
                    };
                    let o = o.then_with(|| ex.cmp(ey));
                    if q.desc {
                        o.reverse()
                    } else {
                        o
                    }
                });
            } else {
                let mut scored = Vec::with_capacity(keyed.len());
                for (by, e) in keyed {
                    let score = match by {
                        None => 0.0,
                        Some(v) => float_arg(&v).map_err(|_| {
                            Reply::err("ERR One or more scores can't be converted into double")
                        })?,
                    };
                    scored.push((score, e));
                }
                scored.sort_by(|(x, ex), (y, ey)| {
                    let o = x
                        .partial_cmp(y)
                        .unwrap_or(Ordering::Equal)
                        .then_with(|| ex.cmp(ey));
                    if q.desc {
                        o.reverse()
                    } else {
                        o
                    }
                });
                elems = scored.into_iter().map(|(_, e)| e).collect();
                return finish(ctx, &q, elems);
            }
            elems = keyed.into_iter().map(|(_, e)| e).collect();
        } else if q.desc && !is_set {
            // Unsorted, a list or sorted set is read from its far end.
            elems.reverse();
        }
        finish(ctx, &q, elems)
    };
    if q.store.is_some() {
        ctx.atomic(run)
    } else {
        run(ctx)
    }
}

/// Applies LIMIT and GET, then replies or stores.
fn finish(ctx: &mut Ctx<'_>, q: &Sort, elems: Vec<Vec<u8>>) -> CmdResult {
    let n = elems.len() as i64;
    let (start, count) = q.limit.unwrap_or((0, -1));
    let start = start.clamp(0, n);
    let end = if count < 0 { n } else { (start + count).min(n) };
    let picked = &elems[start as usize..end.max(start) as usize];
    let mut out: Vec<Option<Vec<u8>>> = Vec::new();
    for e in picked {
        if q.gets.is_empty() {
            out.push(Some(e.clone()));
        }
        for g in &q.gets {
            out.push(lookup(ctx, g, e)?);
        }
    }
    let Some(dest) = &q.store else {
        return Ok(Reply::Array(
            out.into_iter()
                .map(|v| v.map_or(Reply::Nil, Reply::bulk))
                .collect(),
        ));
    };
    let len = out.len();
    let mut list = ListItems::new();
    for v in out {
        list.push_back(v.unwrap_or_default().into());
    }
    ctx.write(dest, |cur| {
        let existed = cur.is_some();
        *cur = (len > 0).then(|| Record::new(Value::List(Box::new(list))));
        ((), existed || len > 0)
    })?;
    Ok(Reply::Int(len as i64))
}

pub fn sort(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    sort_generic(ctx, a, false)
}

pub fn sort_ro(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    sort_generic(ctx, a, true)
}
