//! The value a command returns: one type for every front end. RESP
//! encodes it per protocol version (see `frontend::resp`); HTTP and
//! forwarded requests read it directly.

use bytes::Bytes;

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
