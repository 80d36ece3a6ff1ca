//! Geo commands: positions stored in a sorted set whose scores are 52-bit
//! geohashes (26 bits of latitude and of longitude, interleaved), so a
//! geo key is a sorted set to every other command, as in Redis. A search
//! looks at the cell holding the centre and its eight neighbours, each a
//! score range, and keeps the members inside the shape.

use bytes::Bytes;

use super::reply::Reply;
use super::{err, float_arg, int_arg, is, zsets, CmdResult, Ctx};
use crate::storage::{ScoreBound, SortedSet};

const LAT_MIN: f64 = -85.051_128_78;
const LAT_MAX: f64 = 85.051_128_78;
const LON_MIN: f64 = -180.0;
const LON_MAX: f64 = 180.0;
const STEP: u32 = 26;
const EARTH_RADIUS_M: f64 = 6_372_797.560_856;
const MERCATOR_MAX: f64 = 20_037_726.37;

/// A geohash of `step` bits per axis.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Hash {
    bits: u64,
    step: u32,
}

const NO_HASH: Hash = Hash { bits: 0, step: 0 };

/// A cell: latitude and longitude ranges.
struct Area {
    lat: (f64, f64),
    lon: (f64, f64),
}

/// Spreads the low 32 bits of `v` to the even bit positions.
fn spread(v: u32) -> u64 {
    let mut x = u64::from(v);
    x = (x | x << 16) & 0x0000_ffff_0000_ffff;
    x = (x | x << 8) & 0x00ff_00ff_00ff_00ff;
    x = (x | x << 4) & 0x0f0f_0f0f_0f0f_0f0f;
    x = (x | x << 2) & 0x3333_3333_3333_3333;
    (x | x << 1) & 0x5555_5555_5555_5555
}

/// The inverse of [`spread`].
fn squash(mut x: u64) -> u32 {
    x &= 0x5555_5555_5555_5555;
    x = (x | x >> 1) & 0x3333_3333_3333_3333;
    x = (x | x >> 2) & 0x0f0f_0f0f_0f0f_0f0f;
    x = (x | x >> 4) & 0x00ff_00ff_00ff_00ff;
    x = (x | x >> 8) & 0x0000_ffff_0000_ffff;
    (x | x >> 16) as u32
}

/// Latitude bits go to even positions, longitude bits to odd ones.
fn encode_in(lat_range: (f64, f64), lon: f64, lat: f64, step: u32) -> Hash {
    let scale = (1u64 << step) as f64;
    let lat_off = (lat - lat_range.0) / (lat_range.1 - lat_range.0) * scale;
    let lon_off = (lon - LON_MIN) / (LON_MAX - LON_MIN) * scale;
    Hash {
        bits: spread(lat_off as u32) | spread(lon_off as u32) << 1,
        step,
    }
}

fn encode(lon: f64, lat: f64, step: u32) -> Hash {
    encode_in((LAT_MIN, LAT_MAX), lon, lat, step)
}

fn decode(h: Hash) -> Area {
    let lat_i = f64::from(squash(h.bits));
    let lon_i = f64::from(squash(h.bits >> 1));
    let scale = (1u64 << h.step) as f64;
    Area {
        lat: (
            LAT_MIN + lat_i / scale * (LAT_MAX - LAT_MIN),
            LAT_MIN + (lat_i + 1.0) / scale * (LAT_MAX - LAT_MIN),
        ),
        lon: (
            LON_MIN + lon_i / scale * (LON_MAX - LON_MIN),
            LON_MIN + (lon_i + 1.0) / scale * (LON_MAX - LON_MIN),
        ),
    }
}

/// The position a score stands for: the centre of its cell.
fn position(score: f64) -> (f64, f64) {
    let a = decode(Hash {
        bits: score as u64,
        step: STEP,
    });
    let lon = ((a.lon.0 + a.lon.1) / 2.0).clamp(LON_MIN, LON_MAX);
    let lat = ((a.lat.0 + a.lat.1) / 2.0).clamp(LAT_MIN, LAT_MAX);
    (lon, lat)
}

fn rad(deg: f64) -> f64 {
    deg * (std::f64::consts::PI / 180.0)
}

fn deg(rad: f64) -> f64 {
    rad / (std::f64::consts::PI / 180.0)
}

fn lat_distance(lat1: f64, lat2: f64) -> f64 {
    EARTH_RADIUS_M * (rad(lat2) - rad(lat1)).abs()
}

/// Haversine distance in meters.
fn distance(lon1: f64, lat1: f64, lon2: f64, lat2: f64) -> f64 {
    let (lat1r, lon1r, lat2r, lon2r) = (rad(lat1), rad(lon1), rad(lat2), rad(lon2));
    let v = ((lon2r - lon1r) / 2.0).sin();
    if v == 0.0 {
        return lat_distance(lat1, lat2);
    }
    let u = ((lat2r - lat1r) / 2.0).sin();
    let a = u * u + lat1r.cos() * lat2r.cos() * v * v;
    2.0 * EARTH_RADIUS_M * a.sqrt().asin()
}

/// Moves a hash one cell east (+1) or west (-1).
fn move_x(h: &mut Hash, d: i8) {
    let x = h.bits & 0xaaaa_aaaa_aaaa_aaaa;
    let y = h.bits & 0x5555_5555_5555_5555;
    let zz = 0x5555_5555_5555_5555u64 >> (64 - h.step * 2);
    let x = if d > 0 {
        x.wrapping_add(zz + 1)
    } else {
        (x | zz).wrapping_sub(zz + 1)
    };
    h.bits = (x & (0xaaaa_aaaa_aaaa_aaaau64 >> (64 - h.step * 2))) | y;
}

/// Moves a hash one cell north (+1) or south (-1).
fn move_y(h: &mut Hash, d: i8) {
    let x = h.bits & 0xaaaa_aaaa_aaaa_aaaa;
    let y = h.bits & 0x5555_5555_5555_5555;
    let zz = 0xaaaa_aaaa_aaaa_aaaau64 >> (64 - h.step * 2);
    let y = if d > 0 {
        y.wrapping_add(zz + 1)
    } else {
        (y | zz).wrapping_sub(zz + 1)
    };
    h.bits = x | (y & (0x5555_5555_5555_5555u64 >> (64 - h.step * 2)));
}

/// The cell and its neighbours, in Redis's order: centre, N, S, E, W,
/// NE, NW, SE, SW.
fn neighbours(h: Hash) -> [Hash; 9] {
    let at = |dx: i8, dy: i8| {
        let mut n = h;
        if dx != 0 {
            move_x(&mut n, dx);
        }
        if dy != 0 {
            move_y(&mut n, dy);
        }
        n
    };
    [
        h,
        at(0, 1),
        at(0, -1),
        at(1, 0),
        at(-1, 0),
        at(1, 1),
        at(-1, 1),
        at(1, -1),
        at(-1, -1),
    ]
}

/// How many bits per axis make a cell about as large as the search.
fn steps_for(mut range_m: f64, lat: f64) -> u32 {
    if range_m == 0.0 {
        return STEP;
    }
    let mut step: i32 = 1;
    while range_m < MERCATOR_MAX {
        range_m *= 2.0;
        step += 1;
    }
    step -= 2;
    if !(-66.0..=66.0).contains(&lat) {
        step -= 1;
        if !(-80.0..=80.0).contains(&lat) {
            step -= 1;
        }
    }
    step.clamp(1, STEP as i32) as u32
}

#[derive(Clone, Copy)]
enum Shape {
    /// Radius in meters.
    Circle(f64),
    /// Width and height in meters.
    Box(f64, f64),
}

/// A search: centre and shape.
struct Search {
    lon: f64,
    lat: f64,
    shape: Shape,
}

impl Search {
    /// The distance of a point from the centre if it lies in the shape.
    fn contains(&self, lon: f64, lat: f64) -> Option<f64> {
        match self.shape {
            Shape::Circle(r) => {
                let d = distance(self.lon, self.lat, lon, lat);
                (d <= r).then_some(d)
            }
            Shape::Box(w, h) => {
                if lat_distance(lat, self.lat) > h / 2.0 {
                    return None;
                }
                if distance(lon, lat, self.lon, lat) > w / 2.0 {
                    return None;
                }
                Some(distance(self.lon, self.lat, lon, lat))
            }
        }
    }

    /// The cells to look in, as in Redis: sized by the search, one step
    /// coarser if the neighbours don't cover the bounding box, and those
    /// that lie wholly outside it dropped.
    fn cells(&self) -> [Hash; 9] {
        let (half_w, half_h, radius) = match self.shape {
            Shape::Circle(r) => (r, r, r),
            Shape::Box(w, h) => (w / 2.0, h / 2.0, (w / 2.0).hypot(h / 2.0)),
        };
        let lat_delta = deg(half_h / EARTH_RADIUS_M);
        let lon_delta_top = deg(half_w / EARTH_RADIUS_M / rad(self.lat + lat_delta).cos());
        let lon_delta_bottom = deg(half_w / EARTH_RADIUS_M / rad(self.lat - lat_delta).cos());
        let lon_delta = if self.lat < 0.0 {
            lon_delta_bottom
        } else {
            lon_delta_top
        };
        let (min_lon, max_lon) = (self.lon - lon_delta, self.lon + lon_delta);
        let (min_lat, max_lat) = (self.lat - lat_delta, self.lat + lat_delta);
        let mut step = steps_for(radius, self.lat);
        let mut cells = neighbours(encode(self.lon, self.lat, step));
        let short = {
            let [_, n, s, e, w, ..] = cells.map(decode);
            n.lat.1 < max_lat || s.lat.0 > min_lat || e.lon.1 < max_lon || w.lon.0 > min_lon
        };
        if step > 1 && short {
            step -= 1;
            cells = neighbours(encode(self.lon, self.lat, step));
        }
        if step >= 2 {
            let area = decode(cells[0]);
            let mut drop = |which: [usize; 3]| which.iter().for_each(|&i| cells[i] = NO_HASH);
            if area.lat.0 < min_lat {
                drop([2, 8, 7]);
            }
            if area.lat.1 > max_lat {
                drop([1, 5, 6]);
            }
            if area.lon.0 < min_lon {
                drop([4, 8, 6]);
            }
            if area.lon.1 > max_lon {
                drop([3, 7, 5]);
            }
        }
        cells
    }
}

/// A member found by a search.
struct Found {
    member: Box<[u8]>,
    score: f64,
    dist_m: f64,
}

/// Members inside the search area; with `any`, stops after `limit`.
fn search(z: &SortedSet, q: &Search, limit: usize, any: bool) -> Vec<Found> {
    let mut out = Vec::new();
    let mut last: Option<Hash> = None;
    for cell in q.cells() {
        if cell == NO_HASH {
            continue;
        }
        // Very large searches make neighbours coincide: each once.
        if last == Some(cell) {
            continue;
        }
        if any && limit > 0 && out.len() >= limit {
            break;
        }
        let shift = 52 - cell.step * 2;
        let min = (cell.bits << shift) as f64;
        let max = ((cell.bits + 1) << shift) as f64;
        let range = z.range_by_score(
            ScoreBound {
                score: min,
                exclusive: false,
            },
            ScoreBound {
                score: max,
                exclusive: true,
            },
        );
        for (m, score) in range {
            let (lon, lat) = position(score);
            if let Some(dist_m) = q.contains(lon, lat) {
                out.push(Found {
                    member: m.into(),
                    score,
                    dist_m,
                });
                if any && limit > 0 && out.len() >= limit {
                    break;
                }
            }
        }
        last = Some(cell);
    }
    out
}

fn unit_arg(u: &[u8]) -> Result<f64, Reply> {
    let u = u.to_ascii_lowercase();
    Ok(match &u[..] {
        b"m" => 1.0,
        b"km" => 1000.0,
        b"ft" => 0.3048,
        b"mi" => 1609.34,
        _ => {
            return Err(Reply::err(
                "ERR unsupported unit provided. please use M, KM, FT, MI",
            ))
        }
    })
}

fn lon_lat_args(lon: &[u8], lat: &[u8]) -> Result<(f64, f64), Reply> {
    let (lon, lat) = (float_arg(lon)?, float_arg(lat)?);
    if !(LON_MIN..=LON_MAX).contains(&lon) || !(LAT_MIN..=LAT_MAX).contains(&lat) {
        return Err(Reply::err(format!(
            "ERR invalid longitude,latitude pair {lon:.6},{lat:.6}"
        )));
    }
    Ok((lon, lat))
}

/// A distance as Redis prints it: four decimals.
fn dist_reply(d: f64) -> Reply {
    Reply::bulk(format!("{d:.4}"))
}

fn coord_reply(score: f64) -> Reply {
    let (lon, lat) = position(score);
    Reply::Array(vec![Reply::Coord(lon), Reply::Coord(lat)])
}

pub fn geoadd(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let mut i = 2;
    let (mut nx, mut xx) = (false, false);
    let mut zadd: Vec<Bytes> = vec![Bytes::from_static(b"zadd"), a[1].clone()];
    while i < a.len() {
        if is(&a[i], "NX") {
            nx = true;
        } else if is(&a[i], "XX") {
            xx = true;
        } else if !is(&a[i], "CH") {
            break;
        }
        zadd.push(a[i].clone());
        i += 1;
    }
    let triples = &a[i..];
    if triples.is_empty() || !triples.len().is_multiple_of(3) {
        return Err(Reply::err(
            "ERR syntax error. Try GEOADD key [x1] [y1] [name1] [x2] [y2] [name2] ... ",
        ));
    }
    if nx && xx {
        return Err(err::syntax());
    }
    for t in triples.chunks(3) {
        let (lon, lat) = lon_lat_args(&t[0], &t[1])?;
        zadd.push(Bytes::from(encode(lon, lat, STEP).bits.to_string()));
        zadd.push(t[2].clone());
    }
    zsets::zadd(ctx, &zadd)
}

pub fn geopos(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    ctx.read_as(&a[1], |z: Option<&SortedSet>| {
        Reply::Array(
            a[2..]
                .iter()
                .map(|m| {
                    z.and_then(|z| z.score(m))
                        .map_or(Reply::NilArray, coord_reply)
                })
                .collect(),
        )
    })
}

pub fn geodist(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let unit = match a.len() {
        4 => 1.0,
        5 => unit_arg(&a[4])?,
        _ => return Err(err::syntax()),
    };
    ctx.read_as(&a[1], |z: Option<&SortedSet>| {
        let pos = |m: &[u8]| z.and_then(|z| z.score(m)).map(position);
        match (pos(&a[2]), pos(&a[3])) {
            (Some((lon1, lat1)), Some((lon2, lat2))) => {
                dist_reply(distance(lon1, lat1, lon2, lat2) / unit)
            }
            _ => Reply::Nil,
        }
    })
}

pub fn geohash(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    const ALPHABET: &[u8; 32] = b"0123456789bcdefghjkmnpqrstuvwxyz";
    ctx.read_as(&a[1], |z: Option<&SortedSet>| {
        Reply::Array(
            a[2..]
                .iter()
                .map(|m| match z.and_then(|z| z.score(m)) {
                    None => Reply::Nil,
                    Some(score) => {
                        // The standard geohash spans latitudes -90..90.
                        let (lon, lat) = position(score);
                        let bits = encode_in((-90.0, 90.0), lon, lat, STEP).bits;
                        let text: Vec<u8> = (0..11)
                            .map(|i| {
                                let idx = if i == 10 {
                                    0
                                } else {
                                    (bits >> (52 - (i + 1) * 5)) & 0x1f
                                };
                                ALPHABET[idx as usize]
                            })
                            .collect();
                        Reply::bulk(text)
                    }
                })
                .collect(),
        )
    })
}

/// Where a search's centre comes from.
enum From {
    Member(Bytes),
    LonLat(f64, f64),
}

/// A parsed search command.
struct Query {
    from: Option<From>,
    shape: Option<(Shape, f64)>,
    /// Sort by distance: None, ascending or descending.
    sort: Option<bool>,
    count: usize,
    any: bool,
    with_coord: bool,
    with_dist: bool,
    with_hash: bool,
    /// STORE or STOREDIST destination, and whether distances are stored.
    store: Option<(Bytes, bool)>,
}

/// The command forms that share the search options.
#[derive(Clone, Copy, PartialEq)]
enum Form {
    Radius { read_only: bool },
    Search,
    SearchStore,
}

fn parse_options(a: &[Bytes], mut i: usize, form: Form, q: &mut Query) -> Result<(), Reply> {
    while i < a.len() {
        let o = &a[i];
        let arg = |n: usize| a.get(i + n).ok_or_else(err::syntax);
        if is(o, "WITHDIST") {
            q.with_dist = true;
        } else if is(o, "WITHHASH") {
            q.with_hash = true;
        } else if is(o, "WITHCOORD") {
            q.with_coord = true;
        } else if is(o, "ANY") {
            q.any = true;
        } else if is(o, "ASC") {
            q.sort = Some(true);
        } else if is(o, "DESC") {
            q.sort = Some(false);
        } else if is(o, "COUNT") {
            let n = int_arg(arg(1)?)?;
            if n <= 0 {
                return Err(Reply::err("ERR COUNT must be > 0"));
            }
            q.count = n as usize;
            i += 1;
        } else if (is(o, "STORE") || is(o, "STOREDIST"))
            && form == (Form::Radius { read_only: false })
        {
            q.store = Some((arg(1)?.clone(), is(o, "STOREDIST")));
            i += 1;
        } else if is(o, "STOREDIST") && form == Form::SearchStore {
            if let Some((_, dist)) = &mut q.store {
                *dist = true;
            }
        } else if form != (Form::Radius { read_only: true })
            && form != (Form::Radius { read_only: false })
            && is(o, "FROMMEMBER")
        {
            if q.from.is_some() {
                return Err(err::syntax());
            }
            q.from = Some(From::Member(arg(1)?.clone()));
            i += 1;
        } else if matches!(form, Form::Search | Form::SearchStore) && is(o, "FROMLONLAT") {
            if q.from.is_some() {
                return Err(err::syntax());
            }
            let (lon, lat) = lon_lat_args(arg(1)?, arg(2)?)?;
            q.from = Some(From::LonLat(lon, lat));
            i += 2;
        } else if matches!(form, Form::Search | Form::SearchStore) && is(o, "BYRADIUS") {
            if q.shape.is_some() {
                return Err(err::syntax());
            }
            let r = float_arg(arg(1)?)?;
            if r < 0.0 {
                return Err(Reply::err("ERR radius cannot be negative"));
            }
            let unit = unit_arg(arg(2)?)?;
            q.shape = Some((Shape::Circle(r * unit), unit));
            i += 2;
        } else if matches!(form, Form::Search | Form::SearchStore) && is(o, "BYBOX") {
            if q.shape.is_some() {
                return Err(err::syntax());
            }
            let (w, h) = (float_arg(arg(1)?)?, float_arg(arg(2)?)?);
            if w < 0.0 || h < 0.0 {
                return Err(Reply::err("ERR height or width cannot be negative"));
            }
            let unit = unit_arg(arg(3)?)?;
            q.shape = Some((Shape::Box(w * unit, h * unit), unit));
            i += 3;
        } else {
            return Err(err::syntax());
        }
        i += 1;
    }
    if matches!(form, Form::Search | Form::SearchStore) {
        if q.from.is_none() {
            return Err(from_error());
        }
        if q.shape.is_none() {
            return Err(by_error());
        }
    }
    if q.any && q.count == 0 {
        return Err(Reply::err("ERR the ANY argument requires COUNT argument"));
    }
    if q.store.is_some() && (q.with_dist || q.with_hash || q.with_coord) {
        return Err(Reply::err(if form == Form::SearchStore {
            "ERR GEOSEARCHSTORE is not compatible with WITHDIST, WITHHASH and WITHCOORD options"
        } else {
            "ERR STORE option in GEORADIUS is not compatible with WITHDIST, WITHHASH and WITHCOORD options"
        }));
    }
    Ok(())
}

fn from_error() -> Reply {
    Reply::err("ERR exactly one of FROMMEMBER or FROMLONLAT can be specified for GEOSEARCH")
}

fn by_error() -> Reply {
    Reply::err("ERR exactly one of BYRADIUS and BYBOX can be specified for GEOSEARCH")
}

fn new_query() -> Query {
    Query {
        from: None,
        shape: None,
        sort: None,
        count: 0,
        any: false,
        with_coord: false,
        with_dist: false,
        with_hash: false,
        store: None,
    }
}

/// Runs a parsed search on `key`: the reply, or the count stored.
fn run(ctx: &mut Ctx<'_>, key: &[u8], q: Query) -> CmdResult {
    let (shape, unit) = q.shape.expect("checked by the parser");
    let found = ctx.read_as(key, |z: Option<&SortedSet>| {
        let Some(z) = z else {
            return Ok(Vec::new());
        };
        let (lon, lat) = match &q.from {
            Some(From::LonLat(lon, lat)) => (*lon, *lat),
            Some(From::Member(m)) => match z.score(m) {
                Some(score) => position(score),
                None => return Err(Reply::err("ERR could not decode requested zset member")),
            },
            None => unreachable!("checked by the parser"),
        };
        let s = Search { lon, lat, shape };
        Ok(search(z, &s, q.count, q.any))
    })??;
    let mut found = found;
    // COUNT without ANY returns the nearest ones.
    let sort = q.sort.or((q.count > 0 && !q.any).then_some(true));
    match sort {
        Some(true) => found.sort_by(|x, y| x.dist_m.total_cmp(&y.dist_m)),
        Some(false) => found.sort_by(|x, y| y.dist_m.total_cmp(&x.dist_m)),
        None => {}
    }
    if q.count > 0 {
        found.truncate(q.count);
    }
    if let Some((dest, with_dist)) = q.store {
        let items: Vec<(Box<[u8]>, f64)> = found
            .into_iter()
            .map(|f| {
                let score = if with_dist { f.dist_m / unit } else { f.score };
                (f.member, score)
            })
            .collect();
        return zsets::store_zset(ctx, &dest, items);
    }
    let plain = !(q.with_dist || q.with_hash || q.with_coord);
    Ok(Reply::Array(
        found
            .into_iter()
            .map(|f| {
                let name = Reply::bulk(f.member.to_vec());
                if plain {
                    return name;
                }
                let mut item = vec![name];
                if q.with_dist {
                    item.push(dist_reply(f.dist_m / unit));
                }
                if q.with_hash {
                    item.push(Reply::Int(f.score as i64));
                }
                if q.with_coord {
                    item.push(coord_reply(f.score));
                }
                Reply::Array(item)
            })
            .collect(),
    ))
}

fn georadius_generic(
    ctx: &mut Ctx<'_>,
    a: &[Bytes],
    by_member: bool,
    read_only: bool,
) -> CmdResult {
    let mut q = new_query();
    let at = if by_member {
        q.from = Some(From::Member(a[2].clone()));
        3
    } else {
        let (lon, lat) = lon_lat_args(&a[2], &a[3])?;
        q.from = Some(From::LonLat(lon, lat));
        4
    };
    let (r, u) = (
        a.get(at).ok_or_else(err::syntax)?,
        a.get(at + 1).ok_or_else(err::syntax)?,
    );
    let r = float_arg(r)?;
    if r < 0.0 {
        return Err(Reply::err("ERR radius cannot be negative"));
    }
    let unit = unit_arg(u)?;
    q.shape = Some((Shape::Circle(r * unit), unit));
    parse_options(a, at + 2, Form::Radius { read_only }, &mut q)?;
    if q.store.is_some() {
        return ctx.atomic(|ctx| run(ctx, &a[1], q));
    }
    run(ctx, &a[1], q)
}

pub fn georadius(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    georadius_generic(ctx, a, false, false)
}

pub fn georadius_ro(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    georadius_generic(ctx, a, false, true)
}

pub fn georadiusbymember(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    georadius_generic(ctx, a, true, false)
}

pub fn georadiusbymember_ro(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    georadius_generic(ctx, a, true, true)
}

pub fn geosearch(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let mut q = new_query();
    parse_options(a, 2, Form::Search, &mut q)?;
    run(ctx, &a[1], q)
}

pub fn geosearchstore(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let mut q = new_query();
    q.store = Some((a[1].clone(), false));
    parse_options(a, 3, Form::SearchStore, &mut q)?;
    ctx.atomic(|ctx| run(ctx, &a[2], q))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_round_trip_stays_in_cell() {
        for (lon, lat) in [(13.361389, 38.115556), (-122.27652, 37.805186), (0.0, 0.0)] {
            let h = encode(lon, lat, STEP);
            let (lon2, lat2) = position(h.bits as f64);
            assert!((lon - lon2).abs() < 1e-5 && (lat - lat2).abs() < 1e-5);
        }
    }

    #[test]
    fn palermo_catania() {
        let p = position(encode(13.361389, 38.115556, STEP).bits as f64);
        let c = position(encode(15.087269, 37.502669, STEP).bits as f64);
        // Redis's documented GEODIST Sicily Palermo Catania.
        assert_eq!(
            format!("{:.4}", distance(p.0, p.1, c.0, c.1)),
            "166274.1516"
        );
    }
}
