//! One RESP connection: read, parse every complete request in the buffer
//! (pipelining), execute each, make the batch's writes durable, reply.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;

use super::resp::{parse_request, Reply};
use crate::commands::{
    blocking, dispatch_pipeline, execute, needs_runner, pausable as commands_pausable,
    storage_error, Ctx, Session,
};
use crate::node::{ClientHandle, Node};

/// A connection handed to an I/O thread.
pub type Handoff = (std::net::TcpStream, SocketAddr);

/// Accepts RESP clients until the node shuts down, handing them to the I/O
/// threads in turn so that load spreads evenly over cores.
pub async fn accept_loop(
    node: Arc<Node>,
    listener: TcpListener,
    workers: Vec<tokio::sync::mpsc::UnboundedSender<Handoff>>,
) {
    let mut next = 0usize;
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = node.shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok(stream) = stream.into_std() else {
            continue;
        };
        if workers.is_empty() {
            break;
        }
        next = (next + 1) % workers.len();
        if workers[next].send((stream, peer)).is_err() {
            tracing::error!("an I/O thread is gone; refusing the connection");
        }
    }
}

/// Serves the connections handed to this I/O thread until shutdown.
pub async fn worker_loop(
    node: Arc<Node>,
    mut inbox: tokio::sync::mpsc::UnboundedReceiver<Handoff>,
    tracker: TaskTracker,
) {
    loop {
        let handed = tokio::select! {
            h = inbox.recv() => h,
            () = node.shutdown.cancelled() => break,
        };
        let Some((stream, peer)) = handed else { break };
        let Ok(stream) = TcpStream::from_std(stream) else {
            continue;
        };
        let node = node.clone();
        tracker.spawn(async move {
            if let Err(e) = handle(node, stream, peer).await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
}

async fn handle(node: Arc<Node>, mut stream: TcpStream, peer: SocketAddr) -> std::io::Result<()> {
    let maxclients = node.cfg.read().maxclients;
    if node.clients.lock().len() >= maxclients {
        node.metrics.rejected_connections.inc();
        stream
            .write_all(b"-ERR max number of clients reached\r\n")
            .await?;
        return Ok(());
    }
    let id = node
        .next_client_id
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let laddr = stream
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let handle = Arc::new(ClientHandle::new(id, peer.to_string(), laddr, 2));
    node.clients.lock().insert(id, handle.clone());
    node.metrics.connections.inc();
    node.metrics.connections_total.inc();
    // A connection starts as `default`, logged in if that user is on and
    // needs no password.
    let acl_generation = node.acl.generation();
    let open = node.acl.default_open();
    let mut session = Session::new(handle.clone(), open);
    let inbox = crate::pubsub::Inbox::new(handle.kill.clone());
    let _ = handle.outbox.set(inbox.subscriber.clone());
    session.inbox = Some(inbox);
    session.user = node.acl.user("default");
    session.acl_generation = acl_generation;
    if open {
        handle.state.lock().user = "default".into();
    }
    let result = session_loop(&node, &mut stream, &mut session).await;
    session.leave_pubsub(&node);
    node.tracking.disable(id);
    node.monitors.remove(id);
    node.clients.lock().remove(&id);
    node.metrics.connections.dec();
    result
}

async fn session_loop(
    node: &Arc<Node>,
    stream: &mut TcpStream,
    session: &mut Session,
) -> std::io::Result<()> {
    let mut rbuf = BytesMut::with_capacity(16 * 1024);
    let mut wbuf = BytesMut::with_capacity(16 * 1024);
    let kill = session.handle.kill.clone();
    loop {
        let n = tokio::select! {
            r = stream.read_buf(&mut rbuf) => r?,
            m = next_message(session) => {
                send_messages(stream, session, m, &mut wbuf).await?;
                continue;
            }
            () = kill.cancelled() => return Ok(()),
            () = node.shutdown.cancelled() => return Ok(()),
        };
        if n == 0 {
            return Ok(());
        }
        let (max_bulk, qbuf_limit) = {
            let c = node.cfg.read();
            (c.proto_max_bulk_len, c.client_query_buffer_limit)
        };
        let mut executed = 0usize;
        let mut protocol_error = None;
        // In cluster mode the batch is routed as a whole (see
        // `dispatch_pipeline`); a single node executes as it parses.
        let clustered = node.cluster.get().is_some();
        let mut pipeline: Vec<Vec<bytes::Bytes>> = Vec::new();
        // A request read ahead while gathering scripts for the runner.
        let mut carried: Option<Vec<bytes::Bytes>> = None;
        loop {
            let parsed = match carried.take() {
                Some(args) => Ok(Some(args)),
                None => parse_request(&mut rbuf, max_bulk),
            };
            match parsed {
                Ok(Some(args)) => {
                    if args.is_empty() {
                        continue;
                    }
                    if blocking::may_block(&args) {
                        // What came before it is answered first; it may
                        // wait a long time.
                        run_pipeline(node, session, &mut pipeline, &mut wbuf, &mut executed).await;
                        send(node, stream, session, &mut wbuf, &mut executed).await?;
                        // Requests that arrive meanwhile are kept for
                        // later; the client hanging up ends the wait.
                        let gone = async {
                            loop {
                                match stream.read_buf(&mut rbuf).await {
                                    Ok(0) | Err(_) => return,
                                    Ok(_) if rbuf.len() > qbuf_limit => return,
                                    Ok(_) => {}
                                }
                            }
                        };
                        let reply = blocking::run(node, session, &args, gone).await;
                        answer(session, &reply, &mut wbuf);
                        executed += 1;
                        continue;
                    }
                    if clustered {
                        pipeline.push(args);
                        continue;
                    }
                    if needs_runner(session, &args) {
                        // A script may run long: off this thread, so the
                        // other clients here keep being served. Scripts
                        // pipelined back to back travel together.
                        let mut batch = vec![args];
                        while session.multi.is_none() {
                            match parse_request(&mut rbuf, max_bulk) {
                                Ok(Some(next)) if next.is_empty() => {}
                                Ok(Some(next)) if needs_runner(session, &next) => batch.push(next),
                                Ok(Some(next)) => {
                                    carried = Some(next);
                                    break;
                                }
                                Ok(None) => break,
                                Err(e) => {
                                    protocol_error = Some(e);
                                    break;
                                }
                            }
                        }
                        let Some(replies) = on_runner(node, session, batch).await else {
                            return Ok(());
                        };
                        for reply in replies {
                            answer(session, &reply, &mut wbuf);
                            executed += 1;
                        }
                        if protocol_error.is_some() {
                            break;
                        }
                        continue;
                    }
                    // While a script or transaction holds the gate, wait
                    // for it here rather than block the thread.
                    node.gate.wait_open().await;
                    if node.pause.active() {
                        node.pause.wait(commands_pausable(&args)).await;
                    }
                    let mut ctx = Ctx { node, s: session };
                    let reply = execute(&mut ctx, &args);
                    answer(session, &reply, &mut wbuf);
                    executed += 1;
                    if session.quit {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    protocol_error = Some(e);
                    break;
                }
            }
        }
        if !pipeline.is_empty() {
            node.gate.wait_open().await;
        }
        run_pipeline(node, session, &mut pipeline, &mut wbuf, &mut executed).await;
        if let Some(e) = protocol_error {
            make_durable(node, session, &mut wbuf, executed).await;
            Reply::err(format!("ERR Protocol error: {}", e.0)).encode(session.resp3, &mut wbuf);
            stream.write_all(&wbuf).await?;
            return Ok(());
        }
        send(node, stream, session, &mut wbuf, &mut executed).await?;
        if session.quit {
            return Ok(());
        }
        if rbuf.len() > qbuf_limit {
            tracing::warn!(
                client = session.handle.addr,
                "closing client: query buffer limit exceeded"
            );
            return Ok(());
        }
        if wbuf.capacity() > 4 << 20 {
            wbuf = BytesMut::with_capacity(16 * 1024);
        }
    }
}

/// Executes requests in order on the node's runner thread (see
/// [`crate::node::Runner`]), lending it the session meanwhile. None if a
/// request failed so badly that the session is lost.
async fn on_runner(
    node: &Arc<Node>,
    session: &mut Session,
    batch: Vec<Vec<bytes::Bytes>>,
) -> Option<Vec<Reply>> {
    let stand_in = Session::new(session.handle.clone(), session.authed);
    let mut lent = std::mem::replace(session, stand_in);
    let worker = node.clone();
    let (replies, back) = node
        .runner
        .run(move || {
            let mut ctx = Ctx {
                node: &worker,
                s: &mut lent,
            };
            let replies = batch.iter().map(|args| execute(&mut ctx, args)).collect();
            (replies, lent)
        })
        .await?;
    *session = back;
    Some(replies)
}

/// Executes the requests gathered for cluster routing, encoding their
/// replies.
/// Encodes a reply unless CLIENT REPLY says to leave it out.
fn answer(session: &mut Session, reply: &Reply, wbuf: &mut BytesMut) {
    if session.wants_reply() {
        reply.encode(session.resp3, wbuf);
    }
}

async fn run_pipeline(
    node: &Node,
    session: &mut Session,
    pipeline: &mut Vec<Vec<bytes::Bytes>>,
    wbuf: &mut BytesMut,
    executed: &mut usize,
) {
    if pipeline.is_empty() {
        return;
    }
    if node.pause.active() {
        for args in pipeline.iter() {
            node.pause.wait(commands_pausable(args)).await;
        }
    }
    let mut replies = Vec::with_capacity(pipeline.len());
    dispatch_pipeline(node, session, pipeline, &mut replies).await;
    for reply in &replies {
        answer(session, reply, wbuf);
    }
    *executed += replies.len();
    pipeline.clear();
}

/// Acknowledges writes only once they are as durable as appendfsync
/// promises: if that fails, none of the `executed` replies in `wbuf` may
/// claim success.
async fn make_durable(node: &Node, session: &mut Session, wbuf: &mut BytesMut, executed: usize) {
    if let Some(lsn) = session.pending_lsn.take() {
        if let Err(e) = super::make_durable(&node.store, lsn).await {
            wbuf.clear();
            let reply = storage_error(e);
            for _ in 0..executed {
                reply.encode(session.resp3, wbuf);
            }
        }
    }
}

/// Sends the replies so far, once their writes are durable.
async fn send(
    node: &Node,
    stream: &mut TcpStream,
    session: &mut Session,
    wbuf: &mut BytesMut,
    executed: &mut usize,
) -> std::io::Result<()> {
    make_durable(node, session, wbuf, *executed).await;
    if !wbuf.is_empty() {
        stream.write_all(wbuf).await?;
        wbuf.clear();
    }
    *executed = 0;
    Ok(())
}

/// How a message reaches the client: as a push in RESP3; in RESP2 as a
/// pub/sub message, where Redis would send one (an invalidation to a
/// subscribed connection), or not at all.
fn encode_message(m: crate::pubsub::Message, resp3: bool, subscribed: bool, wbuf: &mut BytesMut) {
    use crate::pubsub::Message;
    let keys = |keys: Option<Vec<bytes::Bytes>>| {
        keys.map_or(Reply::Nil, |k| {
            Reply::Array(k.into_iter().map(Reply::Bulk).collect())
        })
    };
    let reply = match m {
        Message::Parts(parts) => Reply::Push(parts.into_iter().map(Reply::Bulk).collect()),
        Message::Invalidate(k) if resp3 => Reply::Push(vec![Reply::bulk("invalidate"), keys(k)]),
        Message::Invalidate(k) if subscribed => Reply::Push(vec![
            Reply::bulk("message"),
            Reply::bulk("__redis__:invalidate"),
            keys(k),
        ]),
        Message::Invalidate(_) => return,
        Message::RedirectBroken(id) if resp3 => Reply::Push(vec![
            Reply::bulk("tracking-redir-broken"),
            Reply::Int(id as i64),
        ]),
        Message::RedirectBroken(_) => return,
        Message::Monitor(line) => {
            wbuf.extend_from_slice(b"+");
            wbuf.extend_from_slice(line.as_bytes());
            wbuf.extend_from_slice(b"\r\n");
            return;
        }
    };
    reply.encode(resp3, wbuf);
}

/// The next message for the connection (never finishes for one without an
/// inbox).
async fn next_message(session: &mut Session) -> Option<crate::pubsub::Message> {
    match session.inbox() {
        Some(inbox) => inbox.recv().await,
        None => std::future::pending().await,
    }
}

/// Writes `first` and whatever else is waiting, as push messages.
async fn send_messages(
    stream: &mut TcpStream,
    session: &mut Session,
    first: Option<crate::pubsub::Message>,
    wbuf: &mut BytesMut,
) -> std::io::Result<()> {
    let resp3 = session.resp3;
    let subscribed = session.subs.as_ref().is_some_and(|s| s.active());
    if let Some(m) = first {
        encode_message(m, resp3, subscribed, wbuf);
    }
    if let Some(inbox) = session.inbox() {
        while wbuf.len() < 1 << 20 {
            let Some(m) = inbox.try_recv() else { break };
            encode_message(m, resp3, subscribed, wbuf);
        }
    }
    if !wbuf.is_empty() {
        // A subscriber that stopped reading is cut off by its output
        // limit (see `pubsub`), even while this write waits for it.
        let kill = session.handle.kill.clone();
        tokio::select! {
            r = stream.write_all(wbuf) => r?,
            () = kill.cancelled() => {
                return Err(std::io::Error::other("output buffer limit exceeded"))
            }
        }
        wbuf.clear();
    }
    Ok(())
}
