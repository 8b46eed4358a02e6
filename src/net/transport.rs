//! A connection's two halves as the request code sees them: the socket's bytes, or on a TLS
//! listener the plaintext of a rustls session both halves share. Only the writer writes to
//! the socket (TLS records must not interleave); what TLS itself has to send after the
//! handshake (a key update) goes out with the next response.

use bytes::{Buf, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use rustls::{ServerConfig, ServerConnection};
use std::cell::RefCell;
use std::io::{Error, ErrorKind, Read, Write};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Ciphertext read from the socket at once.
const TLS_READ_BYTES: usize = 64 * 1024;
/// What a plain read that has to wait for the socket reads into (zeroed); the rest of a frame
/// then comes by `read_into`'s direct path.
const WAIT_READ_BYTES: usize = 4 * 1024;
/// Plaintext encrypted and sent at once.
const TLS_WRITE_SLICE_BYTES: usize = 128 * 1024;

/// The connection's socket, shared by its reading and its writing half: one descriptor per
/// connection (a dup for the writer made it two, which halved the connections a descriptor
/// limit allows). Each half borrows the stream only inside a poll, never across an await,
/// and glommio keeps a stream's read and write readiness apart, so the two halves' tasks
/// wait on it independently.
#[derive(Clone)]
pub struct Sock(Rc<RefCell<TcpStream>>);

impl Sock {
    pub fn new(stream: TcpStream) -> Sock {
        Sock(Rc::new(RefCell::new(stream)))
    }
}

impl std::os::fd::AsRawFd for Sock {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.borrow().as_raw_fd()
    }
}

impl futures_lite::AsyncRead for Sock {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_read(cx, buf)
    }
}

impl futures_lite::AsyncWrite for Sock {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_close(cx)
    }
}

pub enum Reader {
    Plain(Sock),
    Tls {
        stream: Sock,
        tls: Rc<RefCell<ServerConnection>>,
        /// Decrypted bytes not yet handed out.
        pending: BytesMut,
        scratch: Vec<u8>,
        closed: bool,
    },
}

pub enum Writer {
    Plain(Sock),
    Tls {
        stream: Sock,
        tls: Rc<RefCell<ServerConnection>>,
        cipher: Vec<u8>,
    },
}

/// Asks the kernel to acknowledge what arrives next at once (TCP_QUICKACK; Linux turns it off
/// again by itself, so it is asked after every read). Under TLS, librdkafka writes a request
/// as two records in two writes; with Nagle on, as librdkafka's default has it, the second
/// waits for the first's ACK, which a delayed ACK holds ~40 ms: a consumer's every fetch paid
/// that (SASL_SSL consume ran at 0.17x PLAINTEXT).
fn quickack(stream: &Sock) {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: a valid descriptor owned by `stream`, and a c_int of the size given.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            &on as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

fn tls_error(e: rustls::Error) -> Error {
    Error::new(ErrorKind::InvalidData, format!("TLS: {e}"))
}

/// Takes every record TLS has to send.
fn drain_tls(conn: &mut ServerConnection, out: &mut Vec<u8>) -> std::io::Result<()> {
    while conn.wants_write() {
        conn.write_tls(out)?;
    }
    Ok(())
}

/// Feeds ciphertext to the session; its plaintext goes to `pending`. Answers whether the
/// peer closed (close_notify). (Public for the handshake fuzz target.)
pub fn feed(
    conn: &mut ServerConnection,
    mut data: &[u8],
    pending: &mut BytesMut,
) -> std::io::Result<bool> {
    let mut closed = false;
    // rustls stops decrypting once its plaintext buffer is full and keeps the rest of the
    // records it was given: go on until all of `data` is in and nothing more comes out, or
    // records would wait for the next socket read while the client waits for their answers.
    loop {
        let taken = if data.is_empty() {
            0
        } else {
            conn.read_tls(&mut data)?
        };
        let state = conn.process_new_packets().map_err(tls_error)?;
        let n = state.plaintext_bytes_to_read();
        if n > 0 {
            let at = pending.len();
            pending.resize(at + n, 0);
            conn.reader().read_exact(&mut pending[at..])?;
        }
        closed |= state.peer_has_closed();
        if closed && n == 0 {
            // After close_notify nothing more is read; what was decrypted before it stays.
            return Ok(true);
        }
        if n == 0 && (data.is_empty() || taken == 0) {
            if !data.is_empty() {
                return Err(Error::new(
                    ErrorKind::InvalidData,
                    "TLS: records the session would not take",
                ));
            }
            return Ok(closed);
        }
    }
}

/// Runs the server side of a TLS handshake on `stream`; on failure the client hears why (an
/// alert) before the error is answered. Answers the session and any plaintext the client
/// sent right behind its last handshake message.
pub async fn handshake(
    stream: &mut TcpStream,
    cfg: Arc<ServerConfig>,
) -> std::io::Result<(ServerConnection, BytesMut)> {
    let mut conn = ServerConnection::new(cfg).map_err(tls_error)?;
    // The writer bounds what it hands over (one response at a time, drained each time).
    conn.set_buffer_limit(None);
    let mut buf = vec![0u8; 16 * 1024];
    let mut out = Vec::new();
    let mut pending = BytesMut::new();
    while conn.is_handshaking() {
        if conn.wants_write() {
            out.clear();
            drain_tls(&mut conn, &mut out)?;
            stream.write_all(&out).await?;
            continue;
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(Error::new(
                ErrorKind::UnexpectedEof,
                "closed during the TLS handshake",
            ));
        }
        if let Err(e) = feed(&mut conn, &buf[..n], &mut pending) {
            out.clear();
            let _ = drain_tls(&mut conn, &mut out);
            let _ = stream.write_all(&out).await;
            return Err(e);
        }
    }
    out.clear();
    drain_tls(&mut conn, &mut out)?;
    if !out.is_empty() {
        stream.write_all(&out).await?;
    }
    Ok((conn, pending))
}

impl Reader {
    pub fn tls(stream: Sock, tls: Rc<RefCell<ServerConnection>>, pending: BytesMut) -> Reader {
        quickack(&stream);
        Reader::Tls {
            stream,
            tls,
            pending,
            scratch: vec![0u8; TLS_READ_BYTES],
            closed: false,
        }
    }

    /// Reads up to `want` bytes onto the end of `buf`; 0 at the end of the stream. On a plain
    /// socket, bytes already there go straight into `buf`'s spare capacity, which is never
    /// zeroed first (zeroing each request's buffer before the read overwrote it was 6-7% of
    /// produce CPU); only a read that has to wait for the socket waits on a small zeroed slice.
    pub async fn read_into(&mut self, buf: &mut BytesMut, want: usize) -> std::io::Result<usize> {
        let mut want = want;
        if let Reader::Plain(s) = self {
            use std::os::fd::AsRawFd;
            buf.reserve(want);
            let spare = buf.spare_capacity_mut();
            let len = want.min(spare.len());
            // SAFETY: recv writes at most `len` bytes into memory `buf` owns and has spare;
            // `set_len` then covers only what it wrote.
            let n = unsafe {
                libc::recv(
                    s.as_raw_fd(),
                    spare.as_mut_ptr().cast(),
                    len,
                    libc::MSG_DONTWAIT,
                )
            };
            if n >= 0 {
                unsafe { buf.set_len(buf.len() + n as usize) };
                return Ok(n as usize);
            }
            let e = Error::last_os_error();
            if !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) {
                return Err(e);
            }
            want = want.min(WAIT_READ_BYTES);
        }
        let start = buf.len();
        buf.resize(start + want, 0);
        match self.read(&mut buf[start..]).await {
            Ok(n) => {
                buf.truncate(start + n);
                Ok(n)
            }
            Err(e) => {
                buf.truncate(start);
                Err(e)
            }
        }
    }

    /// Reads into `out`; 0 at the end of the stream.
    pub async fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Reader::Plain(s) => s.read(out).await,
            Reader::Tls {
                stream,
                tls,
                pending,
                scratch,
                closed,
            } => loop {
                if !pending.is_empty() {
                    let n = out.len().min(pending.len());
                    out[..n].copy_from_slice(&pending[..n]);
                    pending.advance(n);
                    return Ok(n);
                }
                if *closed {
                    return Ok(0);
                }
                let n = stream.read(scratch).await?;
                if n == 0 {
                    return Ok(0);
                }
                quickack(stream);
                *closed = feed(&mut tls.borrow_mut(), &scratch[..n], pending)?;
            },
        }
    }
}

impl Writer {
    /// Whether file ranges may go to the socket without passing through here (not under
    /// TLS: the bytes must be encrypted).
    pub fn plain(&mut self) -> Option<&mut Sock> {
        match self {
            Writer::Plain(s) => Some(s),
            Writer::Tls { .. } => None,
        }
    }

    pub fn stream(&self) -> &Sock {
        match self {
            Writer::Plain(s) | Writer::Tls { stream: s, .. } => s,
        }
    }

    /// Writes `a` then `b`; on a plain socket in as few writes as the kernel takes (one,
    /// usually: a small head does not go out as a packet of its own).
    pub async fn write_all_two(&mut self, a: &[u8], b: &[u8]) -> std::io::Result<()> {
        let Writer::Plain(s) = self else {
            self.write_all(a).await?;
            return self.write_all(b).await;
        };
        let mut done = 0usize;
        while done < a.len() {
            let n = s
                .write_vectored(&[std::io::IoSlice::new(&a[done..]), std::io::IoSlice::new(b)])
                .await?;
            if n == 0 {
                return Err(Error::new(ErrorKind::WriteZero, "socket took no bytes"));
            }
            done += n;
        }
        s.write_all(&b[done - a.len()..]).await
    }

    pub async fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Writer::Plain(s) => s.write_all(data).await,
            Writer::Tls {
                stream,
                tls,
                cipher,
            } => {
                // In slices, each sent before the next is encrypted: the ciphertext buffer
                // stays one slice long, not a whole fetch response (8 MB with librdkafka's
                // defaults). Measured, it did not change consume throughput (see
                // docs/benchmarks.md, "TLS and SASL").
                for part in data.chunks(TLS_WRITE_SLICE_BYTES) {
                    cipher.clear();
                    {
                        let mut c = tls.borrow_mut();
                        c.writer().write_all(part)?;
                        drain_tls(&mut c, cipher)?;
                    }
                    stream.write_all(cipher).await?;
                }
                Ok(())
            }
        }
    }
}
