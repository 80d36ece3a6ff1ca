//! Minimal pipelined clients for the load tools: RESP (any Redis-protocol
//! server) and HTTP/1.1 keep-alive. They do only what load generation
//! needs: encode requests into a buffer, and find where each reply ends.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Appends `n` in decimal without allocating.
pub fn push_num(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Appends a RESP command.
pub fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.push(b'*');
    push_num(out, args.len() as u64);
    out.extend_from_slice(b"\r\n");
    for a in args {
        out.push(b'$');
        push_num(out, a.len() as u64);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

fn line_end(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|p| p + from)
}

/// If a whole RESP reply starts at `pos`, returns (end, is_error).
pub fn reply_end(buf: &[u8], pos: usize) -> Option<(usize, bool)> {
    let tag = *buf.get(pos)?;
    let eol = line_end(buf, pos + 1)?;
    let num = || {
        std::str::from_utf8(&buf[pos + 1..eol])
            .ok()?
            .parse::<i64>()
            .ok()
    };
    match tag {
        b'+' | b':' | b',' | b'_' | b'#' | b'(' => Some((eol + 2, false)),
        b'-' => Some((eol + 2, true)),
        b'$' | b'=' | b'!' => {
            let n = num()?;
            if n < 0 {
                return Some((eol + 2, false));
            }
            let end = eol + 2 + n as usize + 2;
            (buf.len() >= end).then_some((end, tag == b'!'))
        }
        b'*' | b'~' | b'>' | b'%' => {
            let n = num()?;
            let items = if tag == b'%' { 2 * n } else { n };
            let mut p = eol + 2;
            for _ in 0..items.max(0) {
                p = reply_end(buf, p)?.0;
            }
            Some((p, false))
        }
        _ => Some((eol + 2, true)),
    }
}

/// A connection that sends a batch and waits for as many replies.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    http: bool,
    /// Where the last HTTP response's body lies in `buf`.
    last_body: std::ops::Range<usize>,
}

/// What a batch got back.
pub struct BatchResult {
    /// Replies that were errors (RESP `-ERR`, HTTP status >= 400 other than 404).
    pub errors: usize,
    /// HTTP 404s (a miss, not an error).
    pub misses: usize,
    /// The last reply's HTTP status (500 for a RESP error, else 200).
    pub last_status: u16,
}

impl Conn {
    /// Connects to `addr`.
    pub async fn connect(addr: &str, http: bool) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(64 * 1024),
            http,
            last_body: 0..0,
        })
    }

    /// The body of the last HTTP response read.
    pub fn last_body(&self) -> &[u8] {
        self.buf.get(self.last_body.clone()).unwrap_or_default()
    }

    /// Writes `out` (holding `n` requests) and reads `n` replies.
    pub async fn round_trip(&mut self, out: &[u8], n: usize) -> std::io::Result<BatchResult> {
        self.stream.write_all(out).await?;
        let mut done = 0;
        let mut pos = 0;
        let mut res = BatchResult {
            errors: 0,
            misses: 0,
            last_status: 0,
        };
        self.buf.clear();
        while done < n {
            loop {
                let next = if self.http {
                    http_response_end(&self.buf, pos)
                } else {
                    reply_end(&self.buf, pos).map(|(e, err)| (e, if err { 500 } else { 200 }))
                };
                match next {
                    Some((end, status)) => {
                        if self.http {
                            let head = self.buf[pos..end].windows(4).position(|w| w == b"\r\n\r\n");
                            self.last_body = head.map_or(end..end, |h| pos + h + 4..end);
                        }
                        res.last_status = status;
                        match status {
                            404 => res.misses += 1,
                            s if s >= 400 => res.errors += 1,
                            _ => {}
                        }
                        pos = end;
                        done += 1;
                        if done == n {
                            break;
                        }
                    }
                    None => break,
                }
            }
            if done == n {
                break;
            }
            if self.buf.capacity() - self.buf.len() < 16 * 1024 {
                self.buf.reserve(64 * 1024);
            }
            let got = self.stream.read_buf(&mut self.buf).await?;
            if got == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "server closed the connection",
                ));
            }
        }
        Ok(res)
    }
}

/// Appends an HTTP/1.1 request.
pub fn encode_http(out: &mut Vec<u8>, method: &str, host: &str, path: &str, body: Option<&[u8]>) {
    out.extend_from_slice(format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n").as_bytes());
    if let Some(b) = body {
        out.extend_from_slice(
            format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                b.len()
            )
            .as_bytes(),
        );
        out.extend_from_slice(b);
    } else {
        out.extend_from_slice(b"\r\n");
    }
}

/// If a whole HTTP response starts at `pos`, returns (end, status).
pub fn http_response_end(buf: &[u8], pos: usize) -> Option<(usize, u16)> {
    let head_end = buf.get(pos..)?.windows(4).position(|w| w == b"\r\n\r\n")? + pos + 4;
    let head = std::str::from_utf8(&buf[pos..head_end]).ok()?;
    let status = head.split(' ').nth(1)?.parse::<u16>().ok()?;
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    (buf.len() >= head_end + len).then_some((head_end + len, status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_reply_ends() {
        let b = b"+OK\r\n$3\r\nfoo\r\n*2\r\n:1\r\n$-1\r\n-ERR x\r\n";
        let (a, _) = reply_end(b, 0).unwrap();
        let (c, _) = reply_end(b, a).unwrap();
        let (d, _) = reply_end(b, c).unwrap();
        let (e, err) = reply_end(b, d).unwrap();
        assert!(err && e == b.len());
        assert!(reply_end(b"$3\r\nfo", 0).is_none());
        let h = b"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(http_response_end(h, 0), Some((h.len(), 404)));
    }
}
