//! RESP: finding whole request frames in a byte buffer, and encoding
//! replies in RESP2 or RESP3.
//!
//! Requests are multibulk arrays (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`) or
//! inline commands (`GET k\r\n`). [`parse_request`] returns `Ok(None)` for
//! "incomplete: read more", and a [`ProtocolError`] whose text is Redis's
//! for anything malformed; the connection replies with it and closes.

use bytes::{Bytes, BytesMut};

pub use crate::commands::reply::{format_double, Reply};

/// Largest number of elements in one request, as in Redis.
const MAX_MULTIBULK: i64 = 1024 * 1024;
/// Longest inline request, as in Redis.
const MAX_INLINE: usize = 64 * 1024;

/// A malformed request; the text follows `-ERR Protocol error: `.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

fn perr(msg: impl Into<String>) -> ProtocolError {
    ProtocolError(msg.into())
}

fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|p| p + from)
}

fn parse_int(b: &[u8]) -> Option<i64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// Parses one request from the front of `buf`, removing it on success.
pub fn parse_request(
    buf: &mut BytesMut,
    max_bulk: usize,
) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    if buf.is_empty() {
        return Ok(None);
    }
    if buf[0] != b'*' {
        return parse_inline(buf);
    }
    let Some(eol) = find_crlf(buf, 1) else {
        if buf.len() > MAX_INLINE {
            return Err(perr("too big mbulk count string"));
        }
        return Ok(None);
    };
    let n = parse_int(&buf[1..eol])
        .filter(|&n| n <= MAX_MULTIBULK)
        .ok_or_else(|| perr("invalid multibulk length"))?;
    if n <= 0 {
        let _ = buf.split_to(eol + 2);
        return Ok(Some(Vec::new()));
    }
    // First pass: check that the whole frame is here and find the bulks.
    let mut spans = Vec::with_capacity(n as usize);
    let mut pos = eol + 2;
    for _ in 0..n {
        let Some(&tag) = buf.get(pos) else {
            return Ok(None);
        };
        if tag != b'$' {
            return Err(perr(format!("expected '$', got '{}'", tag as char)));
        }
        let Some(eol) = find_crlf(buf, pos + 1) else {
            if buf.len() - pos > MAX_INLINE {
                return Err(perr("too big bulk count string"));
            }
            return Ok(None);
        };
        let len = parse_int(&buf[pos + 1..eol])
            .filter(|&l| l >= 0 && l as u64 <= max_bulk as u64)
            .ok_or_else(|| perr("invalid bulk length"))? as usize;
        let start = eol + 2;
        let end = start + len;
        if buf.len() < end + 2 {
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(perr("expected CRLF after bulk"));
        }
        spans.push((start, end));
        pos = end + 2;
    }
    let frame = buf.split_to(pos).freeze();
    Ok(Some(
        spans.into_iter().map(|(s, e)| frame.slice(s..e)).collect(),
    ))
}

fn parse_inline(buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() > MAX_INLINE {
            return Err(perr("too big inline request"));
        }
        return Ok(None);
    };
    let line = buf.split_to(nl + 1);
    let line = line.strip_suffix(b"\n").unwrap_or(&line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    split_inline(line)
        .map(Some)
        .ok_or_else(|| perr("unbalanced quotes in request"))
}

/// Splits an inline command line, honouring "double" and 'single' quotes.
fn split_inline(line: &[u8]) -> Option<Vec<Bytes>> {
    let mut args = Vec::new();
    let mut i = 0;
    while i < line.len() {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= line.len() {
            break;
        }
        let mut cur = Vec::new();
        match line[i] {
            q @ (b'"' | b'\'') => {
                i += 1;
                loop {
                    let &c = line.get(i)?;
                    i += 1;
                    if c == q {
                        break;
                    }
                    if c == b'\\' && q == b'"' {
                        let &e = line.get(i)?;
                        i += 1;
                        cur.push(match e {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            other => other,
                        });
                    } else {
                        cur.push(c);
                    }
                }
                if i < line.len() && !line[i].is_ascii_whitespace() {
                    return None;
                }
            }
            _ => {
                while i < line.len() && !line[i].is_ascii_whitespace() {
                    cur.push(line[i]);
                    i += 1;
                }
            }
        }
        args.push(Bytes::from(cur));
    }
    Some(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &[u8]) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        let mut b = BytesMut::from(s);
        parse_request(&mut b, 512 << 20)
    }

    #[test]
    fn frames() {
        assert_eq!(
            parse(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n").unwrap().unwrap(),
            vec![Bytes::from("GET"), Bytes::from("k")]
        );
        assert_eq!(parse(b"*2\r\n$3\r\nGET\r\n$1\r\n").unwrap(), None);
        assert_eq!(
            parse(b"PING\r\n").unwrap().unwrap(),
            vec![Bytes::from("PING")]
        );
        assert_eq!(parse(b"SET a \"b c\"\r\n").unwrap().unwrap().len(), 3);
        assert!(parse(b"*1\r\n+x\r\n").is_err());
        assert!(parse(b"*x\r\n").is_err());
        assert!(parse(b"*1\r\n$999999999999\r\n").is_err());
        assert!(parse(b"SET a \"b\r\n").is_err());
    }

    #[test]
    fn encodes_per_protocol() {
        let mut out = BytesMut::new();
        Reply::Map(vec![(Reply::bulk("a"), Reply::Int(1))]).encode(true, &mut out);
        assert_eq!(&out[..], b"%1\r\n$1\r\na\r\n:1\r\n");
        out.clear();
        Reply::Map(vec![(Reply::bulk("a"), Reply::Int(-12))]).encode(false, &mut out);
        assert_eq!(&out[..], b"*2\r\n$1\r\na\r\n:-12\r\n");
        assert_eq!(format_double(10.5), "10.5");
        assert_eq!(format_double(3.0), "3");
    }
}
