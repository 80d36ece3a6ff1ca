//! The node-to-node transport over real loopback sockets: peers with the
//! secret talk, a peer without it is refused before any handler runs,
//! garbage and oversized frames are refused, and calls on one connection
//! don't wait for each other.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use strata::cluster::transport::{serve, Peers, Service, TransportConfig, TransportError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Echoes requests; `slow` waits for `release`, `fail` is refused.
struct Echo {
    calls: AtomicUsize,
    release: Arc<Notify>,
}

impl Echo {
    fn new() -> Arc<Echo> {
        Arc::new(Echo {
            calls: AtomicUsize::new(0),
            release: Arc::new(Notify::new()),
        })
    }
}

impl Service for Echo {
    fn call(
        &self,
        from: u64,
        request: Bytes,
    ) -> Pin<Box<dyn Future<Output = Result<Bytes, String>> + Send + 'static>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let release = self.release.clone();
        Box::pin(async move {
            if &request[..] == b"slow" {
                release.notified().await;
            }
            if &request[..] == b"fail" {
                return Err("handler refused".to_string());
            }
            let mut out = format!("from {from}: ").into_bytes();
            out.extend_from_slice(&request);
            Ok(Bytes::from(out))
        })
    }
}

fn cfg(id: u64, secret: &str) -> TransportConfig {
    TransportConfig {
        node_id: id,
        secret: Arc::from(secret.as_bytes()),
        max_frame: 1 << 20,
    }
}

async fn start(secret: &str, service: Arc<dyn Service>) -> (String, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let stop = CancellationToken::new();
    tokio::spawn(serve(listener, cfg(1, secret), service, stop.clone()));
    (addr, stop)
}

#[tokio::test]
async fn authenticated_peers_talk() {
    let svc = Echo::new();
    let (addr, stop) = start("s3cret", svc.clone()).await;
    let peers = Peers::new(cfg(7, "s3cret"));
    let got = peers
        .call(&addr, b"hello", Duration::from_secs(5))
        .await
        .expect("call");
    assert_eq!(&got[..], b"from 7: hello");
    let err = peers
        .call(&addr, b"fail", Duration::from_secs(5))
        .await
        .expect_err("handler error");
    assert!(
        matches!(err, TransportError::Remote { ref message, .. } if message == "handler refused"),
        "{err}"
    );
    // A call that is still running doesn't hold up the next one.
    let peers = Arc::new(peers);
    let slow = {
        let (p, a) = (peers.clone(), addr.clone());
        tokio::spawn(async move { p.call(&a, b"slow", Duration::from_secs(30)).await })
    };
    let quick = peers
        .call(&addr, b"quick", Duration::from_secs(30))
        .await
        .expect("quick call");
    assert_eq!(&quick[..], b"from 7: quick");
    assert!(!slow.is_finished());
    svc.release.notify_one();
    let got = slow.await.expect("join").expect("slow call");
    assert_eq!(&got[..], b"from 7: slow");
    // Many calls share the one connection.
    let mut joins = Vec::new();
    for i in 0..50 {
        let (p, a) = (peers.clone(), addr.clone());
        joins.push(tokio::spawn(async move {
            p.call(&a, format!("n{i}").as_bytes(), Duration::from_secs(5))
                .await
        }));
    }
    for (i, j) in joins.into_iter().enumerate() {
        let got = j.await.expect("join").expect("call");
        assert_eq!(got, Bytes::from(format!("from 7: n{i}")));
    }
    stop.cancel();
}

#[tokio::test]
async fn wrong_secret_is_refused_before_any_handler_runs() {
    let svc = Echo::new();
    let (addr, stop) = start("right", svc.clone()).await;
    let intruder = Peers::new(cfg(9, "wrong"));
    let err = intruder
        .call(&addr, b"hello", Duration::from_secs(5))
        .await
        .expect_err("must be refused");
    assert!(
        matches!(
            err,
            TransportError::Auth { .. } | TransportError::Unreachable { .. }
        ),
        "{err}"
    );
    assert_eq!(svc.calls.load(Ordering::SeqCst), 0);
    // A client that holds the secret still gets through afterwards.
    let friend = Peers::new(cfg(2, "right"));
    friend
        .call(&addr, b"ok", Duration::from_secs(5))
        .await
        .expect("call");
    assert_eq!(svc.calls.load(Ordering::SeqCst), 1);
    stop.cancel();
}

#[tokio::test]
async fn garbage_and_oversized_frames_change_nothing() {
    let svc = Echo::new();
    let (addr, stop) = start("k", svc.clone()).await;

    // Garbage instead of a handshake: the server closes the connection.
    let mut s = TcpStream::connect(&addr).await.expect("connect");
    s.write_all(&[0xAB; 200]).await.expect("write");
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "server kept a garbage connection open");
    // RESP on the cluster port is garbage too.
    let mut s = TcpStream::connect(&addr).await.expect("connect");
    s.write_all(b"*1\r\n$4\r\nPING\r\n").await.expect("write");
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    assert!(read.is_ok());
    assert_eq!(svc.calls.load(Ordering::SeqCst), 0);

    // An oversized request is refused on the caller's side.
    let peers = Peers::new(cfg(3, "k"));
    let big = vec![0u8; (1 << 20) + 1];
    let err = peers
        .call(&addr, &big, Duration::from_secs(5))
        .await
        .expect_err("too large");
    assert!(matches!(err, TransportError::TooLarge { .. }), "{err}");
    assert_eq!(svc.calls.load(Ordering::SeqCst), 0);
    // And the node still serves good peers.
    peers
        .call(&addr, b"fine", Duration::from_secs(5))
        .await
        .expect("call");
    stop.cancel();
}

#[tokio::test]
async fn unreachable_peer_is_reported() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    drop(listener);
    let peers = Peers::new(cfg(1, "k"));
    let err = peers
        .call(&addr, b"x", Duration::from_secs(5))
        .await
        .expect_err("nobody listens");
    assert!(matches!(err, TransportError::Unreachable { .. }), "{err}");
}
