//! The active segment's file: the system calls the log's durability rests on (write, fdatasync,
//! allocate, truncate, close), in one place, over glommio's `DmaFile`.
//!
//! A `Faults` plan, when the partition's `LogConfig` carries one, turns this into the simulated
//! disk of the tests: a write that fails with EIO, a write torn at a chosen byte of the file, an
//! fdatasync that fails, an allocation that finds the disk full. Without a plan every call goes
//! straight to the file (one branch on a `None`).

use glommio::io::{DmaBuffer, DmaFile};
use std::io;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

/// Block size all O_DIRECT writes are aligned to, in position and length.
pub const BLOCK_BYTES: u64 = 4096;

/// Faults to inject into a partition's segment writes. Counters say how many more calls of
/// a kind succeed; `u64::MAX` (the default) means all of them.
#[derive(Debug)]
pub struct Faults {
    writes_ok: AtomicU64,
    syncs_ok: AtomicU64,
    allocs_ok: AtomicU64,
    /// File position at which the next write that covers it is torn (`u64::MAX`: none).
    tear_at: AtomicU64,
    /// What a torn write leaves after the tear: zeros (never-written, preallocated space) or
    /// any other byte (a device that wrote garbage).
    tear_fill: AtomicU8,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            writes_ok: AtomicU64::new(u64::MAX),
            syncs_ok: AtomicU64::new(u64::MAX),
            allocs_ok: AtomicU64::new(u64::MAX),
            tear_at: AtomicU64::new(u64::MAX),
            tear_fill: AtomicU8::new(0),
        }
    }
}

impl Faults {
    /// After `n` more successful writes, every write fails with EIO.
    pub fn fail_writes_after(&self, n: u64) {
        self.writes_ok.store(n, Ordering::SeqCst);
    }

    /// After `n` more successful fdatasyncs, every fdatasync fails with EIO.
    pub fn fail_syncs_after(&self, n: u64) {
        self.syncs_ok.store(n, Ordering::SeqCst);
    }

    /// After `n` more successful allocations, every allocation fails with ENOSPC.
    pub fn fail_allocs_after(&self, n: u64) {
        self.allocs_ok.store(n, Ordering::SeqCst);
    }

    /// The next write covering file position `pos` stores its bytes before `pos`, `fill` from
    /// there to its end, and fails with EIO: what a power cut in the middle of a write leaves.
    pub fn tear_at(&self, pos: u64, fill: u8) {
        self.tear_fill.store(fill, Ordering::SeqCst);
        self.tear_at.store(pos, Ordering::SeqCst);
    }

    /// Every call succeeds again (the disk was replaced, the space freed).
    pub fn heal(&self) {
        for c in [
            &self.writes_ok,
            &self.syncs_ok,
            &self.allocs_ok,
            &self.tear_at,
        ] {
            c.store(u64::MAX, Ordering::SeqCst);
        }
    }

    /// Takes one success from `counter`; false when none is left.
    fn take(counter: &AtomicU64) -> bool {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| match n {
                0 => None,
                u64::MAX => Some(u64::MAX),
                n => Some(n - 1),
            })
            .is_ok()
    }
}

/// The error a failing device gives, with what failed.
fn eio(what: &str) -> io::Error {
    let e = io::Error::from_raw_os_error(libc::EIO);
    io::Error::new(e.kind(), format!("{what}: {e} (injected)"))
}

/// A segment file opened for appending.
pub struct LogFile {
    file: DmaFile,
    faults: Option<std::sync::Arc<Faults>>,
}

impl LogFile {
    pub fn new(file: DmaFile, faults: Option<std::sync::Arc<Faults>>) -> LogFile {
        LogFile { file, faults }
    }

    pub fn alloc_dma_buffer(&self, size: usize) -> DmaBuffer {
        self.file.alloc_dma_buffer(size)
    }

    pub async fn file_size(&self) -> io::Result<u64> {
        Ok(self.file.file_size().await?)
    }

    /// Writes `buf` at `pos`; returns the bytes written. Both must be block-aligned: the
    /// appender carries a partial last block over to the next write instead (a bug if not).
    pub async fn write_at(&self, mut buf: DmaBuffer, pos: u64) -> io::Result<usize> {
        assert!(
            pos.is_multiple_of(BLOCK_BYTES) && (buf.len() as u64).is_multiple_of(BLOCK_BYTES),
            "O_DIRECT write not block-aligned: {} bytes at {pos}",
            buf.len()
        );
        if let Some(f) = &self.faults {
            if !Faults::take(&f.writes_ok) {
                return Err(eio("write"));
            }
            let tear = f.tear_at.load(Ordering::SeqCst);
            if tear >= pos && tear < pos + buf.len() as u64 {
                f.tear_at.store(u64::MAX, Ordering::SeqCst);
                // Nothing more reaches this disk: the machine died during the write.
                f.writes_ok.store(0, Ordering::SeqCst);
                f.syncs_ok.store(0, Ordering::SeqCst);
                let fill = f.tear_fill.load(Ordering::SeqCst);
                buf.as_bytes_mut()[(tear - pos) as usize..].fill(fill);
                self.file.write_at(buf, pos).await?;
                self.file.fdatasync().await?;
                return Err(eio("torn write"));
            }
        }
        Ok(self.file.write_at(buf, pos).await?)
    }

    pub async fn fdatasync(&self) -> io::Result<()> {
        if let Some(f) = &self.faults {
            if !Faults::take(&f.syncs_ok) {
                return Err(eio("fdatasync"));
            }
        }
        Ok(self.file.fdatasync().await?)
    }

    /// Allocates (without changing the file size) up to `size` bytes.
    pub async fn pre_allocate(&self, size: u64) -> io::Result<()> {
        if let Some(f) = &self.faults {
            if !Faults::take(&f.allocs_ok) {
                let e = io::Error::from_raw_os_error(libc::ENOSPC);
                return Err(io::Error::new(
                    e.kind(),
                    format!("fallocate: {e} (injected)"),
                ));
            }
        }
        Ok(self.file.pre_allocate(size, false).await?)
    }

    pub async fn truncate(&self, size: u64) -> io::Result<()> {
        Ok(self.file.truncate(size).await?)
    }

    pub async fn close(self) -> io::Result<()> {
        Ok(self.file.close().await?)
    }
}
