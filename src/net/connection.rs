//! One client connection: a reader that frames requests and starts each as a task, and a writer
//! that awaits those tasks in request order and writes their responses.
//!
//! The two halves use two descriptors of the same socket (dup), so a long poll in flight never
//! stops the next request from being read. At most `max_inflight_per_connection` requests are
//! in flight; past that the reader stops reading (back-pressure on the client).

use super::{Piece, Response};
use crate::handler;
use crate::shard::Shard;
use bytes::{Buf, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, FromRawFd};
use std::rc::Rc;

/// Bytes read from the socket at once when no larger frame is pending.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Responses smaller than this are copied into one buffer so a response is one write.
const COALESCE_BYTES: usize = 16 * 1024;

pub async fn serve(shard: Rc<Shard>, stream: TcpStream) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    let _ = stream.set_nodelay(true);
    // SAFETY: dup returns a new descriptor we own; TcpStream takes ownership of it.
    let dup = unsafe { libc::dup(stream.as_raw_fd()) };
    if dup < 0 {
        tracing::warn!(%peer, "dup failed: {}", std::io::Error::last_os_error());
        return;
    }
    let writer = unsafe { TcpStream::from_raw_fd(dup) };
    let (tx, rx) =
        glommio::channels::local_channel::new_bounded(shard.config.max_inflight_per_connection);
    let zero_copy = shard.config.zero_copy_fetch;
    let peer_w = peer.clone();
    let write_task = glommio::spawn_local(async move {
        let mut w = writer;
        if let Err(e) = write_loop(&mut w, rx, zero_copy).await {
            tracing::debug!(peer = %peer_w, "connection closed by writer: {e}");
        }
        let _ = w.shutdown(Shutdown::Both).await;
    });
    let peer_rc: Rc<str> = Rc::from(peer.as_str());
    if let Err(e) = read_loop(&shard, stream, tx, peer_rc).await {
        tracing::debug!(%peer, "connection closed by reader: {e}");
    }
    write_task.await;
}

async fn read_loop(
    shard: &Rc<Shard>,
    mut stream: TcpStream,
    tx: glommio::channels::local_channel::LocalSender<glommio::task::JoinHandle<Response>>,
    peer: Rc<str>,
) -> std::io::Result<()> {
    let max = shard.config.max_request_bytes;
    let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
    loop {
        while buf.len() >= 4 {
            let size = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
            if size < 0 || size as usize > max {
                // Refused before any of the body is buffered.
                tracing::warn!("closing connection: request size {size} outside 0..={max}");
                return Err(std::io::Error::other("bad frame size"));
            }
            let size = size as usize;
            if buf.len() < 4 + size {
                buf.reserve(4 + size - buf.len());
                break;
            }
            buf.advance(4);
            let frame = buf.split_to(size).freeze();
            let task =
                glommio::spawn_local(handler::handle(shard.clone(), frame, peer.clone())).detach();
            if tx.send(task).await.is_err() {
                return Ok(()); // writer gone
            }
        }
        // Read at least the rest of a pending frame in one go, or a chunk.
        let want = if buf.len() >= 4 {
            let size = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            (4 + size - buf.len()).max(READ_CHUNK_BYTES)
        } else {
            READ_CHUNK_BYTES
        };
        let start = buf.len();
        buf.resize(start + want, 0);
        let n = match stream.read(&mut buf[start..]).await {
            Ok(n) => n,
            Err(e) => {
                buf.truncate(start);
                return Err(e);
            }
        };
        buf.truncate(start + n);
        if n == 0 {
            if !buf.is_empty() {
                tracing::debug!("client closed with {} bytes of a partial frame", buf.len());
            }
            return Ok(());
        }
    }
}

async fn write_loop(
    w: &mut TcpStream,
    rx: glommio::channels::local_channel::LocalReceiver<glommio::task::JoinHandle<Response>>,
    zero_copy: bool,
) -> std::io::Result<()> {
    let mut out = BytesMut::with_capacity(COALESCE_BYTES);
    while let Some(task) = rx.recv().await {
        let Some(resp) = task.await else {
            return Err(std::io::Error::other("request task cancelled"));
        };
        match resp {
            Response::Nothing => {}
            Response::Close(reason) => {
                tracing::warn!("closing connection: {reason}");
                return Ok(());
            }
            Response::Frame(pieces) => {
                for piece in pieces {
                    match piece {
                        Piece::Bytes(b) if b.len() < COALESCE_BYTES => out.extend_from_slice(&b),
                        Piece::Bytes(b) => {
                            flush(w, &mut out).await?;
                            w.write_all(&b).await?;
                        }
                        Piece::File { file, pos, len } => {
                            flush(w, &mut out).await?;
                            if zero_copy {
                                let sent = w
                                    .send_file(&*file, pos, len)
                                    .await
                                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                                if sent != len {
                                    return Err(std::io::Error::other(format!(
                                        "segment ended after {sent} of {len} bytes"
                                    )));
                                }
                            } else {
                                let data = file
                                    .read_at(pos, len)
                                    .await
                                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                                if data.len() != len {
                                    return Err(std::io::Error::other("short segment read"));
                                }
                                w.write_all(&data).await?;
                            }
                        }
                    }
                }
                flush(w, &mut out).await?;
            }
        }
    }
    flush(w, &mut out).await
}

async fn flush(w: &mut TcpStream, out: &mut BytesMut) -> std::io::Result<()> {
    if !out.is_empty() {
        w.write_all(out).await?;
        out.clear();
    }
    Ok(())
}
