//! Segment bytes to a socket. Ranges the page cache holds go by `sendfile(2)` straight from
//! the shard thread: the kernel hands the cached pages to the socket and nothing is copied
//! through user space. Ranges it does not hold are read with several io_uring reads in flight
//! and written (a sendfile of them would block the shard on the disk), and what the consumer
//! will ask for next is put in the page cache ahead of it (`POSIX_FADV_WILLNEED` from a
//! blocking-pool thread: the kernel reads it in the background, without a copy), so a
//! consumer reading a log through is sent by sendfile after its first fetch. Under TLS
//! everything is read and written (the bytes must be encrypted).
//!
//! "Holds" means read in: cachestat(2) counts a page whose read is still in flight, and a
//! sendfile of it would wait for the disk, so a range cachestat finds complete is also probed
//! with a one-byte `RWF_NOWAIT` read every `PROBE_STRIDE_BYTES`, which fails on a page not
//! yet read, and also on a read-in page marked to start the next read-ahead. A failed probe
//! is answered by a one-byte read through io_uring (it waits for the page, or starts that
//! read-ahead, without holding the shard) and made again; only a slice still failing is
//! copied, and the slice after it is asked again, so one such page costs one copied slice,
//! not the rest of the range. (A page evicted between the probe and the sendfile is read on
//! the shard thread: the one blocking case left, under memory pressure only.)
//!
//! Why not glommio's `send_file`: it splices through a pipe made per response, with two
//! io_uring splices per 64 KiB, and io_uring never completes a splice inline (it hands each to
//! an io-wq worker); measured, it moved less and cost more CPU per GB than copying
//! (docs/benchmarks.md).

use super::transport::Writer;
use glommio::io::BufferedFile;
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;

/// What one read (or one residency check and sendfile) covers.
const SLICE_BYTES: usize = 256 * 1024;
/// Reads in flight per file range being copied.
const READS_IN_FLIGHT: usize = 4;
/// Bytes between two `RWF_NOWAIT` probes of a range cachestat found (readahead reads whole
/// runs of pages together, so one probe per run would do; this is finer).
const PROBE_STRIDE_BYTES: u64 = 64 * 1024;
/// What is copied when sendfile finds the socket full, to wait for room.
const WAIT_WRITE_BYTES: usize = 16 * 1024;
/// How far past a range just sent the page cache is asked to hold the file.
const READ_AHEAD_BYTES: u64 = 4 << 20;

/// cachestat(2) (Linux 6.5): one number on every architecture, not yet in the libc crate for
/// all of them.
const SYS_CACHESTAT: libc::c_long = 451;

#[repr(C)]
struct CachestatRange {
    off: u64,
    len: u64,
}

#[repr(C)]
#[derive(Default)]
struct Cachestat {
    nr_cache: u64,
    nr_dirty: u64,
    nr_writeback: u64,
    nr_evicted: u64,
    nr_recently_evicted: u64,
}

fn page_bytes() -> u64 {
    static PAGE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    // SAFETY: sysconf has no preconditions.
    *PAGE.get_or_init(|| match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as u64,
        _ => 4096,
    })
}

/// Whether every page of `fd`'s `[pos, pos + len)` is in the page cache (present, perhaps
/// still being read). None where the kernel cannot tell (before 6.5): then nothing is sent by
/// sendfile, which the log says once.
fn cached(fd: RawFd, pos: u64, len: usize) -> Option<bool> {
    let page = page_bytes();
    let first = pos / page * page;
    let range = CachestatRange {
        off: first,
        len: pos + len as u64 - first,
    };
    if range.len == 0 {
        return Some(true); // cachestat would take 0 for "to the end of the file"
    }
    let mut st = Cachestat::default();
    // SAFETY: both structs are the kernel's layout and live across the call.
    let r = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            fd,
            &range as *const CachestatRange,
            &mut st as *mut Cachestat,
            0u32,
        )
    };
    if r != 0 {
        static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!(
                "cachestat(2): {}; fetches from segment files are copied, not sent by sendfile",
                io::Error::last_os_error()
            );
        }
        return None;
    }
    Some(st.nr_cache >= range.len.div_ceil(page))
}

/// Offsets of `[pos, pos + len)` probed for being read in: one per `PROBE_STRIDE_BYTES` and
/// the last byte.
fn probe_points(pos: u64, len: usize) -> impl Iterator<Item = u64> {
    let end = pos + len as u64;
    (pos..end)
        .step_by(PROBE_STRIDE_BYTES as usize)
        .chain(std::iter::once(end.saturating_sub(1)))
}

/// Whether the byte at `at` can be read without I/O: a one-byte `RWF_NOWAIT` read. It fails
/// on a page still being read, and also on a read-in page marked to start the next
/// read-ahead (a NOWAIT read does not start it).
fn readable_now(fd: RawFd, at: u64) -> bool {
    let mut byte = 0u8;
    let iov = libc::iovec {
        iov_base: (&mut byte as *mut u8).cast(),
        iov_len: 1,
    };
    // SAFETY: one iovec over a live byte, on an open descriptor.
    let n = unsafe { libc::preadv2(fd, &iov, 1, at as libc::off_t, libc::RWF_NOWAIT) };
    n == 1
}

/// Whether `[pos, pos + len)`, which cachestat found in the page cache, is read in: what a
/// sendfile of it needs to never wait for the disk. A probe that fails is answered by a
/// one-byte read through the ring, which waits for a page still being read and starts the
/// read-ahead a page is marked for, as a consumer's read would, without holding the shard;
/// the probe is then tried once more.
async fn read_in(file: &BufferedFile, pos: u64, len: usize) -> io::Result<bool> {
    let fd = file.as_raw_fd();
    for at in probe_points(pos, len) {
        if !readable_now(fd, at) {
            read_exact_at(file, at, 1).await?;
            if !readable_now(fd, at) {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// Asks the kernel to read `[pos, pos + len)` of `file` into the page cache in the background.
/// posix_fadvise submits the reads before it returns, so it runs on a blocking-pool thread.
fn will_need(file: &Rc<BufferedFile>, pos: u64, len: u64) {
    let file = file.clone();
    glommio::spawn_local(async move {
        let fd = file.as_raw_fd();
        // `file` stays open (held here) until the advice is given.
        let _ = glommio::executor()
            .spawn_blocking(move || {
                // SAFETY: a plain syscall on a descriptor kept open meanwhile; advice only.
                unsafe {
                    libc::posix_fadvise(
                        fd,
                        pos as libc::off_t,
                        len as libc::off_t,
                        libc::POSIX_FADV_WILLNEED,
                    )
                }
            })
            .await;
        drop(file);
    })
    .detach();
}

/// One sendfile(2) of up to `len` bytes at `pos`; WouldBlock when the socket is full.
fn sendfile_once(sock: RawFd, fd: RawFd, pos: u64, len: usize) -> io::Result<usize> {
    let mut off = pos as libc::off_t;
    // SAFETY: two open descriptors and an offset the call updates; it reads no user memory.
    let n = unsafe { libc::sendfile(sock, fd, &mut off, len) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// `len` bytes of `file` at `pos`; fewer is an error (the segment ended early).
async fn read_exact_at(
    file: &BufferedFile,
    pos: u64,
    len: usize,
) -> io::Result<glommio::io::ReadResult> {
    let data = file
        .read_at(pos, len)
        .await
        .map_err(|e| io::Error::other(e.to_string()))?;
    if data.len() != len {
        return Err(io::Error::other("short segment read"));
    }
    Ok(data)
}

/// Bytes of one range sent each way.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sent {
    pub sendfile: u64,
    pub copied: u64,
}

/// Writes `len` bytes of `file` at `pos` to `w`; `zero_copy` allows sendfile (plain sockets
/// only). `written`: the bytes of the file written, which a read-ahead stays below (an
/// active segment's file is longer: preallocated). Fails when the file holds fewer bytes than
/// asked.
pub async fn send_range(
    w: &mut Writer,
    file: &Rc<BufferedFile>,
    pos: u64,
    len: usize,
    written: u64,
    zero_copy: bool,
) -> io::Result<Sent> {
    let fd = file.as_raw_fd();
    let end = pos + len as u64;
    let slices: Vec<(u64, usize)> = (pos..end)
        .step_by(SLICE_BYTES)
        .map(|at| (at, (end - at).min(SLICE_BYTES as u64) as usize))
        .collect();
    let sock = if zero_copy {
        w.plain().map(|s| s.as_raw_fd())
    } else {
        None
    };
    // Whether a slice goes by sendfile: asked when it comes up with no read in flight, and of
    // each slice a run of reads ahead would take in (one found cached ends the run, and is
    // asked again when it comes up).
    let in_cache = |(at, n): (u64, usize)| sock.is_some() && cached(fd, at, n) == Some(true);
    let mut reads: VecDeque<glommio::Task<io::Result<glommio::io::ReadResult>>> = VecDeque::new();
    let mut sent = Sent::default();
    let mut started = 0; // slices[..started] have a read started (or were sent)
    let mut run_open = false; // more reads may join those in flight
    let mut i = 0;
    while i < slices.len() {
        let (mut at, mut n) = slices[i];
        if let Some(sock) = sock.filter(|_| i >= started) {
            if in_cache(slices[i]) && read_in(file, at, n).await? {
                while n > 0 {
                    let k = match sendfile_once(sock, fd, at, n) {
                        Ok(0) => {
                            return Err(io::Error::other(format!(
                                "segment ended at {at}, before {end}"
                            )))
                        }
                        Ok(k) => {
                            sent.sendfile += k as u64;
                            k
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            // The socket is full: one small copied write waits for room (the
                            // runtime's wait for a writable socket), then sendfile goes on.
                            let k = n.min(WAIT_WRITE_BYTES);
                            w.write_all(&read_exact_at(file, at, k).await?).await?;
                            sent.copied += k as u64;
                            k
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
                        Err(e) => return Err(e),
                    };
                    at += k as u64;
                    n -= k;
                }
                i += 1;
                started = i;
                continue;
            }
        }
        // Copied: this slice's read and the next slices' are in flight together, refilled as
        // each is written. A slice the page cache holds ends the run: it goes by sendfile.
        if started <= i {
            started = i;
            run_open = true;
        }
        while run_open && started < slices.len() && started < i + READS_IN_FLIGHT {
            if started > i && in_cache(slices[started]) {
                run_open = false;
                break;
            }
            let (a, k) = slices[started];
            let f = file.clone();
            reads.push_back(glommio::spawn_local(async move {
                read_exact_at(&f, a, k).await
            }));
            started += 1;
        }
        let data = reads
            .pop_front()
            .expect("a read started for this slice")
            .await?;
        w.write_all(&data).await?;
        sent.copied += data.len() as u64;
        i += 1;
    }
    // What a consumer reading on will ask for next: in the page cache by then.
    let ahead = written.min(end + READ_AHEAD_BYTES).saturating_sub(end);
    if ahead > 0 && cached(fd, end, ahead as usize) == Some(false) {
        will_need(file, end, ahead);
    }
    Ok(sent)
}
