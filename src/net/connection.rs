//! One client connection: a reader that frames requests and starts each as a task, and a writer
//! that awaits those tasks in request order and writes their responses.
//!
//! The two halves use two descriptors of the same socket (dup), so a long poll in flight never
//! stops the next request from being read. At most `max_inflight_per_connection` requests are
//! in flight; past that the reader stops reading (back-pressure on the client). Before a
//! frame's body is read, its size is taken from the shard's request memory budget and given
//! back when the request has been handled, so a shard under load stops reading sockets instead
//! of growing. A connection that completes no request within the idle timeout (idle, or
//! trickling a partial frame) is closed, as is one that does not read a response for as long.

use super::transport::{self, Reader, Sock, Writer};
use crate::broker::Broker;
use crate::handler;
use crate::protocol::{Piece, Response, OWN_BUFFER_MIN_BYTES};
use crate::util::with_timeout;
use bytes::{Buf, BytesMut};
use glommio::net::TcpStream;
use glommio::sync::StaticPermit;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Bytes read from the socket at once when no larger frame is pending.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// What an idle connection's read asks for: thousands of idle connections then hold little.
const IDLE_READ_BYTES: usize = 4 * 1024;
/// Responses smaller than this are copied into one buffer so a response is one write.
const COALESCE_BYTES: usize = 16 * 1024;

pub async fn serve(
    broker: Rc<Broker>,
    mut stream: TcpStream,
    _slot: super::ConnSlot,
    listener: Rc<crate::security::Listener>,
    tls: Option<Rc<crate::security::tls::Acceptor>>,
) {
    let _open = OpenConnection::new(&broker);
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    let _ = stream.set_nodelay(true);
    // sendfile(2) (net::file_send) runs on the shard thread: on a full socket it must answer
    // EAGAIN instead of waiting. An accepted socket starts blocking; glommio's own reads and
    // writes pass MSG_DONTWAIT and poll either way.
    if let Err(e) = set_nonblocking(stream.as_raw_fd()) {
        tracing::warn!(%peer, "closing connection: O_NONBLOCK: {e}");
        return;
    }
    let session = Rc::new(crate::security::Session::new(
        Rc::from(peer.as_str()),
        listener,
    ));
    let idle = Duration::from_millis(broker.config.connection_idle_timeout_ms);
    let (reader, writer) = match tls {
        None => {
            let sock = Sock::new(stream);
            (Reader::Plain(sock.clone()), Writer::Plain(sock))
        }
        Some(acceptor) => {
            // A client that is not speaking TLS (or too slowly) is closed here, and only it.
            let (conn, pending) = match with_timeout(
                idle,
                transport::handshake(&mut stream, acceptor.config()),
            )
            .await
            {
                Some(Ok(c)) => c,
                Some(Err(e)) => {
                    tracing::info!(%peer, listener = %session.listener.name,
                            "closing connection: {e}");
                    return;
                }
                None => {
                    tracing::info!(%peer, "closing connection: no TLS handshake within {} ms",
                            idle.as_millis());
                    return;
                }
            };
            if let Some(dn) = conn
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| crate::security::tls::subject_dn(c))
            {
                session.set_certificate_subject(dn);
                tracing::debug!(%peer, principal = %session.principal(),
                    "TLS client certificate accepted");
            }
            let conn = Rc::new(std::cell::RefCell::new(conn));
            let sock = Sock::new(stream);
            (
                Reader::tls(sock.clone(), conn.clone(), pending),
                Writer::Tls {
                    stream: sock,
                    tls: conn,
                    cipher: Vec::new(),
                },
            )
        }
    };
    let (tx, rx) =
        glommio::channels::local_channel::new_bounded(broker.config.max_inflight_per_connection);
    let broker_w = broker.clone();
    let peer_w = peer.clone();
    let write_task = glommio::spawn_local(async move {
        let mut w = writer;
        let fd = w.stream().as_raw_fd();
        match write_loop(&mut w, rx, &broker_w, idle).await {
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                tracing::info!(peer = %peer_w, "closing connection: {e}");
                // Abort (RST on close): the responses it did not read are dropped instead of
                // trickling out of the socket buffer behind the FIN.
                let linger = libc::linger {
                    l_onoff: 1,
                    l_linger: 0,
                };
                // SAFETY: valid descriptor owned by `w` and a valid struct of the right size.
                unsafe {
                    libc::setsockopt(
                        fd,
                        libc::SOL_SOCKET,
                        libc::SO_LINGER,
                        &linger as *const libc::linger as *const libc::c_void,
                        std::mem::size_of::<libc::linger>() as libc::socklen_t,
                    )
                };
            }
            Err(e) => tracing::debug!(peer = %peer_w, "connection closed by writer: {e}"),
            Ok(()) => {}
        }
        // A plain shutdown(2), not glommio's: that one can wait behind the cancelled write
        // of a client that stopped reading. It also ends the reader's pending read.
        // SAFETY: the descriptor is owned by `w`, alive here.
        unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
    });
    if let Err(e) = read_loop(&broker, reader, tx, session).await {
        tracing::debug!(%peer, "connection closed by reader: {e}");
    }
    write_task.await;
}

fn set_nonblocking(fd: std::os::fd::RawFd) -> std::io::Result<()> {
    // SAFETY: fcntl on a descriptor the caller owns, with an int argument.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

async fn read_loop(
    broker: &Rc<Broker>,
    mut stream: Reader,
    tx: glommio::channels::local_channel::LocalSender<glommio::task::JoinHandle<Response>>,
    session: Rc<crate::security::Session>,
) -> std::io::Result<()> {
    let peer = session.peer.clone();
    let max = broker.config.max_request_bytes;
    let idle = Duration::from_millis(broker.config.connection_idle_timeout_ms);
    let budget = broker.config.request_memory_bytes as u64;
    let mut buf = BytesMut::new();
    let mut last_request = Instant::now();
    // The budget held for the frame being read (taken once its size is known).
    let mut held: Option<StaticPermit> = None;
    loop {
        while buf.len() >= 4 {
            let size = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
            let max = session.frame_limit(max);
            if size < 0 || size as usize > max {
                // Refused before any of the body is buffered.
                tracing::warn!(%peer, "closing connection: request size {size} outside 0..={max}");
                return Err(std::io::Error::other("bad frame size"));
            }
            let size = size as usize;
            if held.is_none() {
                // A client over its quota: its next request waits out the throttle before it
                // takes any of the shard's request memory (Kafka mutes the channel the same
                // way); what it sent waits in the socket buffers.
                if let Some(until) = session.muted_until() {
                    glommio::timer::sleep(until.saturating_duration_since(Instant::now())).await;
                }
                let p = broker
                    .request_memory
                    .clone()
                    .acquire_static_permit((size as u64 + 4).min(budget))
                    .await
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                held = Some(p);
            }
            if buf.len() < 4 + size {
                if size >= OWN_BUFFER_MIN_BYTES && buf.capacity() < 4 + size {
                    // A large frame gets a buffer of exactly its size: the tail cache keeps
                    // slices of its batches (log::appender), which then hold only this frame,
                    // not a grown buffer's slack or the requests around it.
                    let mut own = BytesMut::with_capacity(4 + size);
                    own.extend_from_slice(&buf);
                    buf = own;
                } else {
                    buf.reserve(4 + size - buf.len());
                }
                break;
            }
            buf.advance(4);
            let frame = buf.split_to(size).freeze();
            last_request = Instant::now();
            let permit = held.take();
            let sh = broker.clone();
            let se = session.clone();
            let task = glommio::spawn_local(async move {
                let r = handler::handle(sh, frame, se).await;
                drop(permit); // handled: its bytes are free (the response is accounted apart)
                r
            })
            .detach();
            if tx.send(task).await.is_err() {
                return Ok(()); // writer gone
            }
            // With quotas set, let the request count itself (and mute the connection) before
            // the next one is read: pipelined requests are throttled one by one, as Kafka's
            // one-request-at-a-time channels are.
            if !broker.meta().client_quotas.is_empty() {
                futures_lite::future::yield_now().await;
            }
        }
        // Read at least the rest of a pending frame in one go, or a chunk; little when idle.
        let want = if buf.len() >= 4 {
            let size = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            let rest = 4 + size - buf.len();
            if size >= OWN_BUFFER_MIN_BYTES {
                rest // into its own buffer, and no further
            } else {
                rest.max(READ_CHUNK_BYTES)
            }
        } else if buf.is_empty() {
            IDLE_READ_BYTES
        } else {
            READ_CHUNK_BYTES
        };
        let start = buf.len();
        let left = idle.saturating_sub(last_request.elapsed());
        let n = match with_timeout(left, stream.read_into(&mut buf, want)).await {
            Some(Ok(n)) => n,
            Some(Err(e)) => return Err(e),
            None => {
                tracing::info!(
                    %peer,
                    partial_frame_bytes = start,
                    "closing connection: no complete request for {} ms",
                    idle.as_millis()
                );
                return Err(std::io::Error::other("idle timeout"));
            }
        };
        if n == 0 {
            if !buf.is_empty() {
                tracing::debug!("client closed with {} bytes of a partial frame", buf.len());
            }
            return Ok(());
        }
    }
}

async fn write_loop(
    w: &mut Writer,
    rx: glommio::channels::local_channel::LocalReceiver<glommio::task::JoinHandle<Response>>,
    broker: &Broker,
    idle: Duration,
) -> std::io::Result<()> {
    let mut out = BytesMut::with_capacity(COALESCE_BYTES);
    while let Some(task) = rx.recv().await {
        let Some(resp) = task.await else {
            return Err(std::io::Error::other("request task cancelled"));
        };
        // A client that does not read its responses loses the connection after the idle
        // timeout instead of holding the shard's buffers forever.
        match with_timeout(idle, write_response(w, &mut out, resp, broker)).await {
            Some(Ok(true)) => {}
            Some(Ok(false)) => return Ok(()),
            Some(Err(e)) => return Err(e),
            None => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "response not read by the client for {} ms",
                        idle.as_millis()
                    ),
                ))
            }
        }
    }
    flush(w, &mut out).await
}

/// Writes one response; false when the connection is to be closed.
async fn write_response(
    w: &mut Writer,
    out: &mut BytesMut,
    resp: Response,
    broker: &Broker,
) -> std::io::Result<bool> {
    match resp {
        Response::Nothing => {}
        Response::Close(reason) => {
            tracing::warn!("closing connection: {reason}");
            return Ok(false);
        }
        Response::Last(pieces, reason) => {
            write_pieces(w, out, pieces, broker).await?;
            tracing::info!("closing connection: {reason}");
            return Ok(false);
        }
        Response::Frame(pieces) => write_pieces(w, out, pieces, broker).await?,
    }
    Ok(true)
}

async fn write_pieces(
    w: &mut Writer,
    out: &mut BytesMut,
    pieces: Vec<Piece>,
    broker: &Broker,
) -> std::io::Result<()> {
    for piece in pieces {
        match piece {
            Piece::Bytes(b) if b.len() < COALESCE_BYTES => out.extend_from_slice(&b),
            Piece::Bytes(b) => {
                // What is gathered goes out with it (a cached batch's stamped head, the
                // partition's header).
                w.write_all_two(out, &b).await?;
                out.clear();
            }
            Piece::File {
                file,
                pos,
                len,
                written,
            } => {
                flush(w, out).await?;
                let zero_copy = broker.config.zero_copy_fetch;
                let sent =
                    super::file_send::send_range(w, &file, pos, len, written, zero_copy).await?;
                let m = &broker.metrics;
                crate::metrics::bump(&m.file_bytes_sendfile, sent.sendfile);
                crate::metrics::bump(&m.file_bytes_copied, sent.copied);
            }
        }
    }
    flush(w, out).await
}

async fn flush(w: &mut Writer, out: &mut BytesMut) -> std::io::Result<()> {
    if !out.is_empty() {
        w.write_all(out).await?;
        out.clear();
    }
    Ok(())
}

/// Counts the connection as open for as long as it lives.
struct OpenConnection(Rc<Broker>);

impl OpenConnection {
    fn new(broker: &Rc<Broker>) -> OpenConnection {
        let m = &broker.metrics;
        m.connections_open.set(m.connections_open.get() + 1);
        OpenConnection(broker.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        let m = &self.0.metrics;
        m.connections_open.set(m.connections_open.get() - 1);
    }
}
