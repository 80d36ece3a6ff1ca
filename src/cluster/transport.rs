//! Node-to-node transport: one authenticated, multiplexed TCP connection
//! from each node to each peer it calls, carrying binary frames for every
//! Raft group and forwarded request.
//!
//! ```text
//! handshake  server -> client  MAGIC ++ nonce_s(32)
//!            client -> server  MAGIC ++ node_id(8) ++ nonce_c(32) ++ HMAC(secret, "c" nonce_s nonce_c node_id)
//!            server -> client  HMAC(secret, "s" nonce_c nonce_s)
//! frame      len(4, BE) ++ kind(1) ++ id(8, BE) ++ payload(len - 9)
//! ```
//!
//! Both sides prove they hold `cluster_secret` without sending it. A peer
//! that fails the handshake, or later sends a frame that is oversized or
//! of an unknown kind, is logged and disconnected; nothing it sent reaches
//! a handler. Requests on one connection run concurrently and responses
//! are matched by id, so a slow snapshot never holds up a heartbeat.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

const MAGIC: &[u8; 16] = b"STRATA-CLUSTER/1";
const NONCE: usize = 32;
const MAC: usize = 32;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

const KIND_REQUEST: u8 = 0;
const KIND_OK: u8 = 1;
const KIND_ERR: u8 = 2;
const HEADER: usize = 1 + 8;

/// Why a call to a peer failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    /// The peer could not be reached or the connection broke.
    #[error("peer {addr} unreachable: {reason}")]
    Unreachable {
        /// The peer's cluster address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The peer did not prove it holds the cluster secret, or refused ours.
    #[error("peer {addr} failed authentication")]
    Auth {
        /// The peer's cluster address.
        addr: String,
    },
    /// No answer in time.
    #[error("peer {addr} did not answer within {millis} ms")]
    Timeout {
        /// The peer's cluster address.
        addr: String,
        /// The limit.
        millis: u64,
    },
    /// The request or its answer is larger than a frame may be.
    #[error("message of {len} bytes exceeds the {limit}-byte frame limit")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The peer's handler returned an error.
    #[error("peer {addr}: {message}")]
    Remote {
        /// The peer's cluster address.
        addr: String,
        /// Its message.
        message: String,
    },
}

/// What a node serves to its peers.
pub trait Service: Send + Sync + 'static {
    /// Handles one request from the authenticated peer `from`.
    fn call(
        &self,
        from: u64,
        request: Bytes,
    ) -> Pin<Box<dyn Future<Output = Result<Bytes, String>> + Send + 'static>>;
}

/// Settings shared by both directions.
#[derive(Clone)]
pub struct TransportConfig {
    /// This node's id, announced to peers.
    pub node_id: u64,
    /// The shared secret.
    pub secret: Arc<[u8]>,
    /// Largest frame accepted or sent.
    pub max_frame: usize,
}

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8], parts: &[&[u8]]) -> [u8; MAC] {
    // HMAC accepts keys of any length; `new_from_slice` can't fail for it.
    let mut m = match HmacSha256::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

fn verify(secret: &[u8], parts: &[&[u8]], tag: &[u8]) -> bool {
    let Ok(mut m) = HmacSha256::new_from_slice(secret) else {
        return false;
    };
    for p in parts {
        m.update(p);
    }
    m.verify_slice(tag).is_ok()
}

fn nonce() -> [u8; NONCE] {
    rand::random()
}

fn encode_frame(kind: u8, id: u64, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(4 + HEADER + payload.len());
    b.put_u32((HEADER + payload.len()) as u32);
    b.put_u8(kind);
    b.put_u64(id);
    b.extend_from_slice(payload);
    b.freeze()
}

/// Reads one frame: (kind, id, payload). `Ok(None)` at a clean end.
async fn read_frame(
    r: &mut (impl AsyncReadExt + Unpin),
    max_frame: usize,
) -> std::io::Result<Option<(u8, u64, Bytes)>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if !(HEADER..=max_frame + HEADER).contains(&len) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes is outside 9..={}", max_frame + HEADER),
        ));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    let kind = buf[0];
    if kind > KIND_ERR {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("unknown frame kind {kind}"),
        ));
    }
    let id = u64::from_be_bytes(buf[1..9].try_into().unwrap_or([0; 8]));
    let payload = Bytes::from(buf).slice(HEADER..);
    Ok(Some((kind, id, payload)))
}

/// Accepts peers until `stop` is cancelled.
pub async fn serve(
    listener: TcpListener,
    cfg: TransportConfig,
    service: Arc<dyn Service>,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = stop.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "cluster accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (cfg, service, stop) = (cfg.clone(), service.clone(), stop.clone());
        tokio::spawn(async move {
            if let Err(e) = serve_conn(stream, &cfg, service, stop).await {
                tracing::warn!(%peer, error = %e, "cluster connection refused or closed");
            }
        });
    }
}

async fn accept_handshake(stream: &mut TcpStream, cfg: &TransportConfig) -> std::io::Result<u64> {
    let ns = nonce();
    let mut hello = Vec::with_capacity(MAGIC.len() + NONCE);
    hello.extend_from_slice(MAGIC);
    hello.extend_from_slice(&ns);
    stream.write_all(&hello).await?;
    let mut reply = [0u8; 16 + 8 + NONCE + MAC];
    stream.read_exact(&mut reply).await?;
    let bad =
        |what: &str| std::io::Error::new(std::io::ErrorKind::PermissionDenied, what.to_string());
    if &reply[..16] != MAGIC {
        return Err(bad("not a strata peer (bad magic)"));
    }
    let id_bytes = &reply[16..24];
    let nc = &reply[24..24 + NONCE];
    let tag = &reply[24 + NONCE..];
    if !verify(&cfg.secret, &[b"c", &ns, nc, id_bytes], tag) {
        return Err(bad("wrong cluster secret"));
    }
    stream
        .write_all(&mac(&cfg.secret, &[b"s", nc, &ns]))
        .await?;
    Ok(u64::from_be_bytes(id_bytes.try_into().unwrap_or([0; 8])))
}

async fn serve_conn(
    mut stream: TcpStream,
    cfg: &TransportConfig,
    service: Arc<dyn Service>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let from = tokio::time::timeout(HANDSHAKE_TIMEOUT, accept_handshake(&mut stream, cfg))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "handshake timed out"))??;
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if wr.write_all(&frame).await.is_err() {
                break;
            }
        }
    });
    let max_frame = cfg.max_frame;
    let result = loop {
        let frame = tokio::select! {
            f = read_frame(&mut rd, max_frame) => f,
            () = stop.cancelled() => break Ok(()),
        };
        let (kind, id, payload) = match frame {
            Ok(Some(f)) => f,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        };
        if kind != KIND_REQUEST {
            break Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "a response frame where a request belongs",
            ));
        }
        let (service, tx) = (service.clone(), tx.clone());
        tokio::spawn(async move {
            let frame = match service.call(from, payload).await {
                Ok(body) if body.len() <= max_frame => encode_frame(KIND_OK, id, &body),
                Ok(body) => encode_frame(
                    KIND_ERR,
                    id,
                    format!("response of {} bytes exceeds the frame limit", body.len()).as_bytes(),
                ),
                Err(msg) => encode_frame(KIND_ERR, id, msg.as_bytes()),
            };
            let _ = tx.send(frame);
        });
    };
    drop(tx);
    let _ = writer.await;
    result
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Bytes, String>>>>>;

struct Conn {
    tx: mpsc::UnboundedSender<Bytes>,
    pending: Pending,
    closed: CancellationToken,
}

/// Calls peers, keeping one connection to each.
pub struct Peers {
    cfg: TransportConfig,
    /// One slot per peer address; dialing holds only that peer's slot, so
    /// a peer that hangs in its handshake delays no one else.
    conns: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Arc<Conn>>>>>>,
    next_id: AtomicU64,
}

impl Peers {
    /// A client with no connections yet.
    pub fn new(cfg: TransportConfig) -> Peers {
        Peers {
            cfg,
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        }
    }

    /// Sends `request` to the peer at `addr` and waits up to `timeout`.
    pub async fn call(
        &self,
        addr: &str,
        request: &[u8],
        timeout: Duration,
    ) -> Result<Bytes, TransportError> {
        if request.len() > self.cfg.max_frame {
            return Err(TransportError::TooLarge {
                len: request.len(),
                limit: self.cfg.max_frame,
            });
        }
        let work = async {
            let conn = self.connection(addr).await?;
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let (done, answer) = oneshot::channel();
            conn.pending.lock().insert(id, done);
            if conn
                .tx
                .send(encode_frame(KIND_REQUEST, id, request))
                .is_err()
            {
                conn.pending.lock().remove(&id);
                self.drop_conn(addr, &conn).await;
                return Err(TransportError::Unreachable {
                    addr: addr.to_string(),
                    reason: "connection closed".into(),
                });
            }
            let got = answer.await;
            match got {
                Ok(Ok(body)) => Ok(body),
                Ok(Err(message)) => Err(TransportError::Remote {
                    addr: addr.to_string(),
                    message,
                }),
                Err(_) => {
                    self.drop_conn(addr, &conn).await;
                    Err(TransportError::Unreachable {
                        addr: addr.to_string(),
                        reason: "connection closed".into(),
                    })
                }
            }
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(TransportError::Timeout {
                addr: addr.to_string(),
                millis: timeout.as_millis() as u64,
            }),
        }
    }

    fn slot(&self, addr: &str) -> Arc<tokio::sync::Mutex<Option<Arc<Conn>>>> {
        self.conns
            .lock()
            .entry(addr.to_string())
            .or_default()
            .clone()
    }

    async fn drop_conn(&self, addr: &str, conn: &Arc<Conn>) {
        conn.closed.cancel();
        let slot = self.slot(addr);
        let mut current = slot.lock().await;
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            *current = None;
        }
    }

    async fn connection(&self, addr: &str) -> Result<Arc<Conn>, TransportError> {
        let slot = self.slot(addr);
        let mut current = slot.lock().await;
        if let Some(c) = current.as_ref() {
            if !c.closed.is_cancelled() {
                return Ok(c.clone());
            }
        }
        let conn = Arc::new(self.dial(addr).await?);
        *current = Some(conn.clone());
        Ok(conn)
    }

    async fn dial(&self, addr: &str) -> Result<Conn, TransportError> {
        let unreachable = |reason: String| TransportError::Unreachable {
            addr: addr.to_string(),
            reason,
        };
        let handshake = async {
            let mut stream = TcpStream::connect(addr)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let _ = stream.set_nodelay(true);
            let mut hello = [0u8; 16 + NONCE];
            stream
                .read_exact(&mut hello)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            if &hello[..16] != MAGIC {
                return Err(unreachable("not a strata cluster port".into()));
            }
            let ns = &hello[16..];
            let nc = nonce();
            let id = self.cfg.node_id.to_be_bytes();
            let mut msg = Vec::with_capacity(16 + 8 + NONCE + MAC);
            msg.extend_from_slice(MAGIC);
            msg.extend_from_slice(&id);
            msg.extend_from_slice(&nc);
            msg.extend_from_slice(&mac(&self.cfg.secret, &[b"c", ns, &nc, &id]));
            stream
                .write_all(&msg)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let mut tag = [0u8; MAC];
            if stream.read_exact(&mut tag).await.is_err()
                || !verify(&self.cfg.secret, &[b"s", &nc, ns], &tag)
            {
                return Err(TransportError::Auth {
                    addr: addr.to_string(),
                });
            }
            Ok(stream)
        };
        let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
            .await
            .map_err(|_| unreachable("handshake timed out".into()))??;
        let (mut rd, mut wr) = stream.into_split();
        let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
        let pending: Pending = Arc::default();
        let closed = CancellationToken::new();
        {
            let closed = closed.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        f = rx.recv() => match f {
                            Some(frame) => if wr.write_all(&frame).await.is_err() { break },
                            None => break,
                        },
                        () = closed.cancelled() => break,
                    }
                }
                closed.cancel();
            });
        }
        {
            let (pending, closed, max_frame) =
                (pending.clone(), closed.clone(), self.cfg.max_frame);
            let addr = addr.to_string();
            tokio::spawn(async move {
                loop {
                    let frame = tokio::select! {
                        f = read_frame(&mut rd, max_frame) => f,
                        () = closed.cancelled() => break,
                    };
                    match frame {
                        Ok(Some((kind, id, payload))) => {
                            let answer = match kind {
                                KIND_OK => Ok(payload),
                                KIND_ERR => Err(String::from_utf8_lossy(&payload).into_owned()),
                                _ => {
                                    tracing::warn!(
                                        peer = addr,
                                        "peer sent a request frame on a client connection"
                                    );
                                    break;
                                }
                            };
                            if let Some(done) = pending.lock().remove(&id) {
                                let _ = done.send(answer);
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!(peer = addr, error = %e, "bad frame from peer; disconnecting");
                            break;
                        }
                    }
                }
                closed.cancel();
                // Waiters see their sender dropped and report the break.
                pending.lock().clear();
            });
        }
        Ok(Conn {
            tx,
            pending,
            closed,
        })
    }
}
