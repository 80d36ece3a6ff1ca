//! The value a command returns: one type for every front end, with its
//! RESP encoding (per protocol version) and the RESP3 decoding that
//! replies from other nodes and from replicated writes come back through.

use bytes::{Bytes, BytesMut};

/// A command's reply, before any encoding.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `+OK`
    Simple(&'static str),
    /// A status built at run time.
    Status(String),
    /// `-ERR ...` (the text includes its prefix).
    Error(String),
    /// `:1`
    Int(i64),
    /// `$3\r\nfoo`
    Bulk(Bytes),
    /// `$-1` (RESP2) / `_` (RESP3)
    Nil,
    /// `*-1` (RESP2) / `_` (RESP3)
    NilArray,
    /// `*n`
    Array(Vec<Reply>),
    /// `%n` in RESP3, a flat array in RESP2.
    Map(Vec<(Reply, Reply)>),
    /// `~n` in RESP3, an array in RESP2.
    Set(Vec<Reply>),
    /// `,1.5` in RESP3, a bulk string in RESP2.
    Double(f64),
    /// `=` verbatim text in RESP3, a bulk string in RESP2.
    Verbatim(String),
    /// A coordinate: `,` in RESP3, in RESP2 a bulk string with 17
    /// decimals and trailing zeros trimmed, as Redis prints positions.
    Coord(f64),
    /// Pairs such as member and score: an array of two-element arrays in
    /// RESP3, one flat array in RESP2 (ZRANGE WITHSCORES, ZPOPMIN count).
    Pairs(Vec<(Reply, Reply)>),
    /// Replies by key: a map in RESP3, an array of key-reply arrays in
    /// RESP2 (XREAD, XREADGROUP).
    Keyed(Vec<(Reply, Reply)>),
    /// An out-of-band message: `>n` in RESP3, an array in RESP2 (pub/sub).
    Push(Vec<Reply>),
    /// Several replies to one request, one after another (SUBSCRIBE a b).
    Many(Vec<Reply>),
}

/// How a reply is encoded.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Proto {
    Resp2,
    Resp3,
    /// Between strata nodes: RESP3 that also keeps what RESP3 folds
    /// together (a nil array, pairs), so the node that answers the client
    /// can encode them for the client's protocol.
    Wire,
}

impl Reply {
    /// `+OK`
    pub const OK: Reply = Reply::Simple("OK");

    /// A bulk reply from anything byte-like.
    pub fn bulk(b: impl Into<Bytes>) -> Reply {
        Reply::Bulk(b.into())
    }

    /// An error reply.
    pub fn err(msg: impl Into<String>) -> Reply {
        Reply::Error(msg.into())
    }

    /// Whether this is an error.
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }
}

/// Formats a float as Redis does for INCRBYFLOAT and friends: shortest
/// round-trip form, no exponent for ordinary magnitudes.
pub fn format_double(d: f64) -> String {
    if d.is_infinite() {
        return if d > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if d == d.trunc() && d.abs() < 1e17 {
        return format!("{}", d as i64);
    }
    let s = format!("{d}");
    if s.contains('e') {
        format!("{d:.17}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    } else {
        s
    }
}

/// A coordinate as Redis prints it in RESP2: 17 decimals, trailing zeros
/// trimmed.
pub fn format_coord(d: f64) -> String {
    let s = format!("{d:.17}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

impl Reply {
    /// Appends the encoding to `out`.
    pub fn encode(&self, resp3: bool, out: &mut BytesMut) {
        self.encode_as(if resp3 { Proto::Resp3 } else { Proto::Resp2 }, out)
    }

    fn encode_as(&self, proto: Proto, out: &mut BytesMut) {
        let resp3 = proto != Proto::Resp2;
        fn line(out: &mut BytesMut, tag: u8, n: impl itoa_like::Display) {
            out.extend_from_slice(&[tag]);
            n.write(out);
            out.extend_from_slice(b"\r\n");
        }
        match self {
            Reply::Simple(s) => {
                out.extend_from_slice(b"+");
                out.extend_from_slice(s.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Reply::Status(s) => {
                out.extend_from_slice(b"+");
                out.extend_from_slice(s.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Reply::Error(s) => {
                out.extend_from_slice(b"-");
                // An error line can't contain newlines.
                for &b in s.as_bytes() {
                    out.extend_from_slice(&[if b == b'\r' || b == b'\n' { b' ' } else { b }]);
                }
                out.extend_from_slice(b"\r\n");
            }
            Reply::Int(n) => line(out, b':', *n),
            Reply::Bulk(b) => {
                line(out, b'$', b.len() as i64);
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Reply::Nil => out.extend_from_slice(if resp3 { b"_\r\n" } else { b"$-1\r\n" }),
            Reply::NilArray => out.extend_from_slice(if proto == Proto::Resp3 {
                b"_\r\n"
            } else {
                b"*-1\r\n"
            }),
            Reply::Array(items) => {
                line(out, b'*', items.len() as i64);
                for i in items {
                    i.encode_as(proto, out);
                }
            }
            Reply::Set(items) => {
                line(out, if resp3 { b'~' } else { b'*' }, items.len() as i64);
                for i in items {
                    i.encode_as(proto, out);
                }
            }
            Reply::Map(pairs) => {
                if resp3 {
                    line(out, b'%', pairs.len() as i64);
                } else {
                    line(out, b'*', 2 * pairs.len() as i64);
                }
                for (k, v) in pairs {
                    k.encode_as(proto, out);
                    v.encode_as(proto, out);
                }
            }
            Reply::Double(d) => {
                let s = format_double(*d);
                if resp3 {
                    out.extend_from_slice(b",");
                    out.extend_from_slice(s.as_bytes());
                    out.extend_from_slice(b"\r\n");
                } else {
                    Reply::Bulk(Bytes::from(s)).encode(false, out);
                }
            }
            Reply::Coord(d) => match proto {
                Proto::Resp2 => Reply::Bulk(Bytes::from(format_coord(*d))).encode(false, out),
                Proto::Resp3 => Reply::Double(*d).encode(true, out),
                Proto::Wire => line(out, b'C', d.to_bits() as i64),
            },
            Reply::Pairs(pairs) => {
                match proto {
                    Proto::Resp2 => line(out, b'*', 2 * pairs.len() as i64),
                    Proto::Resp3 => line(out, b'*', pairs.len() as i64),
                    Proto::Wire => line(out, b'P', pairs.len() as i64),
                }
                for (k, v) in pairs {
                    if proto == Proto::Resp3 {
                        out.extend_from_slice(b"*2\r\n");
                    }
                    k.encode_as(proto, out);
                    v.encode_as(proto, out);
                }
            }
            Reply::Keyed(pairs) => {
                match proto {
                    Proto::Resp2 => line(out, b'*', pairs.len() as i64),
                    Proto::Resp3 => line(out, b'%', pairs.len() as i64),
                    Proto::Wire => line(out, b'K', pairs.len() as i64),
                }
                for (k, v) in pairs {
                    if proto == Proto::Resp2 {
                        out.extend_from_slice(b"*2\r\n");
                    }
                    k.encode_as(proto, out);
                    v.encode_as(proto, out);
                }
            }
            Reply::Push(items) => {
                line(out, if resp3 { b'>' } else { b'*' }, items.len() as i64);
                for i in items {
                    i.encode_as(proto, out);
                }
            }
            Reply::Many(items) => {
                if proto == Proto::Wire {
                    line(out, b'M', items.len() as i64);
                }
                for i in items {
                    i.encode_as(proto, out);
                }
            }
            Reply::Verbatim(s) => {
                if resp3 {
                    line(out, b'=', (s.len() + 4) as i64);
                    out.extend_from_slice(b"txt:");
                    out.extend_from_slice(s.as_bytes());
                    out.extend_from_slice(b"\r\n");
                } else {
                    Reply::Bulk(Bytes::from(s.clone())).encode(false, out);
                }
            }
        }
    }
}

mod itoa_like {
    use bytes::BytesMut;

    /// Writes an integer in decimal without allocating.
    pub trait Display {
        fn write(self, out: &mut BytesMut);
    }

    impl Display for i64 {
        fn write(self, out: &mut BytesMut) {
            let mut buf = [0u8; 20];
            let mut i = buf.len();
            let neg = self < 0;
            let mut n = self.unsigned_abs();
            loop {
                i -= 1;
                buf[i] = b'0' + (n % 10) as u8;
                n /= 10;
                if n == 0 {
                    break;
                }
            }
            if neg {
                out.extend_from_slice(b"-");
            }
            out.extend_from_slice(&buf[i..]);
        }
    }
}

impl Reply {
    /// The reply encoded for another strata node: RESP3, keeping the
    /// distinctions RESP2 clients need (see [`Reply::from_resp3`]).
    pub fn to_resp3(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.encode_as(Proto::Wire, &mut out);
        out.freeze()
    }

    /// Decodes one reply as [`Reply::to_resp3`] writes it. Anything
    /// malformed becomes an error reply naming the problem, never a panic.
    pub fn from_resp3(buf: &[u8]) -> Reply {
        let mut pos = 0;
        match decode(buf, &mut pos, 0) {
            Some(r) if pos == buf.len() => r,
            _ => Reply::err("ERR malformed reply from a peer"),
        }
    }
}

fn decode(buf: &[u8], pos: &mut usize, depth: usize) -> Option<Reply> {
    if depth > 64 {
        return None;
    }
    let tag = *buf.get(*pos)?;
    let start = *pos + 1;
    let end = start + buf.get(start..)?.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&buf[start..end]).ok()?;
    *pos = end + 2;
    let count = |l: &str| l.parse::<usize>().ok();
    let items = |n: usize, pos: &mut usize| -> Option<Vec<Reply>> {
        let mut v = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            v.push(decode(buf, pos, depth + 1)?);
        }
        Some(v)
    };
    Some(match tag {
        b'+' => {
            if line == "OK" {
                Reply::OK
            } else {
                Reply::Status(line.to_string())
            }
        }
        b'-' => Reply::Error(line.to_string()),
        b':' => Reply::Int(line.parse().ok()?),
        b'_' => Reply::Nil,
        b',' => Reply::Double(match line {
            "inf" => f64::INFINITY,
            "-inf" => f64::NEG_INFINITY,
            l => l.parse().ok()?,
        }),
        b'C' => Reply::Coord(f64::from_bits(line.parse::<i64>().ok()? as u64)),
        b'$' | b'*' if line == "-1" => {
            if tag == b'$' {
                Reply::Nil
            } else {
                Reply::NilArray
            }
        }
        b'$' | b'=' => {
            let n = count(line)?;
            let body = buf.get(*pos..*pos + n)?;
            if buf.get(*pos + n..*pos + n + 2)? != b"\r\n" {
                return None;
            }
            *pos += n + 2;
            if tag == b'=' {
                let text = std::str::from_utf8(body.get(4..)?).ok()?;
                Reply::Verbatim(text.to_string())
            } else {
                Reply::Bulk(Bytes::copy_from_slice(body))
            }
        }
        b'*' => Reply::Array(items(count(line)?, pos)?),
        b'>' => Reply::Push(items(count(line)?, pos)?),
        b'M' => Reply::Many(items(count(line)?, pos)?),
        b'~' => Reply::Set(items(count(line)?, pos)?),
        b'%' | b'P' | b'K' => {
            let flat = items(count(line)?.checked_mul(2)?, pos)?;
            let mut pairs = Vec::with_capacity(flat.len() / 2);
            let mut it = flat.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                pairs.push((k, v));
            }
            match tag {
                b'P' => Reply::Pairs(pairs),
                b'K' => Reply::Keyed(pairs),
                _ => Reply::Map(pairs),
            }
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp3_round_trip() {
        let r = Reply::Array(vec![
            Reply::OK,
            Reply::Status("QUEUED".into()),
            Reply::err("ERR x"),
            Reply::Int(-5),
            Reply::bulk("a\r\nb"),
            Reply::Nil,
            Reply::Map(vec![(Reply::bulk("k"), Reply::Double(1.5))]),
            Reply::Set(vec![Reply::Int(1)]),
            Reply::Verbatim("text".into()),
            Reply::NilArray,
            Reply::Pairs(vec![(Reply::bulk("m"), Reply::Double(-2.0))]),
            Reply::Keyed(vec![(Reply::bulk("k"), Reply::Array(vec![]))]),
            Reply::Push(vec![Reply::bulk("message")]),
            Reply::Many(vec![Reply::Int(1), Reply::Int(2)]),
        ]);
        assert_eq!(Reply::from_resp3(&r.to_resp3()), r);
        // Pairs are flat for RESP2 clients and nested for RESP3 ones.
        let pairs = Reply::Pairs(vec![(Reply::bulk("m"), Reply::Double(1.5))]);
        let mut out = BytesMut::new();
        pairs.encode(false, &mut out);
        assert_eq!(&out[..], b"*2\r\n$1\r\nm\r\n$3\r\n1.5\r\n");
        out.clear();
        pairs.encode(true, &mut out);
        assert_eq!(&out[..], b"*1\r\n*2\r\n$1\r\nm\r\n,1.5\r\n");
        assert!(Reply::from_resp3(b"*3\r\n:1\r\n").is_error());
        assert!(Reply::from_resp3(b"$5\r\nab").is_error());
        assert!(Reply::from_resp3(b"").is_error());
    }
}
