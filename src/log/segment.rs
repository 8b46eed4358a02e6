//! One segment of a partition: `<base offset>.log` with its sparse `.index` (relative offset ->
//! file position, 8 bytes an entry) and `.timeindex` (max timestamp so far -> relative offset,
//! 12 bytes an entry), Kafka's file names and entry formats.
//!
//! Invariants: `written_bytes` only grows while the segment is active and always ends on a batch
//! boundary; every index entry points at the start of a batch below `written_bytes`; index entries
//! are strictly increasing in both fields.

use super::walker::BatchWalk;
use crate::protocol::batch;
use crate::protocol::errors::KafkaError;
use glommio::io::{BufferedFile, OpenOptions};
use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;

pub const INDEX_ENTRY_BYTES: usize = 8;
pub const TIME_INDEX_ENTRY_BYTES: usize = 12;
/// Index entries gathered before they are written out (128 entries = 512 KiB of log at the
/// default interval: the most recovery has to rescan because of it).
const PERSIST_EVERY_ENTRIES: usize = 128;

pub fn file_stem(base_offset: i64) -> String {
    format!("{base_offset:020}")
}

#[derive(Default)]
pub struct Indexes {
    /// (offset - base_offset, file position of that batch)
    pub offsets: Vec<(u32, u32)>,
    /// (largest timestamp up to this batch, offset - base_offset of the batch)
    pub times: Vec<(i64, u32)>,
    /// Entries already in the files.
    pub offsets_persisted: usize,
    pub times_persisted: usize,
    /// Log bytes appended since the last offset-index entry.
    pub bytes_since_entry: u64,
}

/// A segment. Owned by its partition's shard; shared as `Rc` by reads in flight.
pub struct Segment {
    pub base_offset: i64,
    pub dir: PathBuf,
    /// Bytes of whole batches on disk (reads stop here).
    pub written_bytes: Cell<u64>,
    /// Next offset after the last batch on disk (base_offset when empty).
    pub written_next_offset: Cell<i64>,
    /// File size reserved for the active segment (allocated ahead of the writes).
    pub allocated_bytes: Cell<u64>,
    /// Largest batch max_timestamp seen, -1 when unknown or empty.
    pub max_timestamp: Cell<i64>,
    /// Wall-clock time the segment was created (for segment_ms) or its file mtime.
    pub created_ms: i64,
    pub indexes: RefCell<Indexes>,
    /// False for old segments until a read or retention needs their indexes.
    pub indexes_loaded: Cell<bool>,
    /// Batch offsets may jump forward between batches (a compacted topic: the cleaner's
    /// output, or a follower's copy of it). Elsewhere a jump is damage, cut as a torn tail.
    pub gaps_allowed: Cell<bool>,
    /// Every write and the seal's index writes are done: nothing but the cleaner touches the
    /// file any more. False for the active segment and one whose seal is still queued.
    pub sealed: Cell<bool>,
    reader: RefCell<Option<Rc<BufferedFile>>>,
    /// Inode of the file `reader` opened (0 before): a fetch served by path from another
    /// shard checks it, since the cleaner replaces a segment's file under the same name.
    inode: Cell<u64>,
}

impl Segment {
    pub fn new(dir: &Path, base_offset: i64, created_ms: i64) -> Segment {
        Segment {
            base_offset,
            dir: dir.to_path_buf(),
            written_bytes: Cell::new(0),
            written_next_offset: Cell::new(base_offset),
            allocated_bytes: Cell::new(0),
            max_timestamp: Cell::new(-1),
            created_ms,
            indexes: RefCell::new(Indexes::default()),
            indexes_loaded: Cell::new(false),
            gaps_allowed: Cell::new(false),
            sealed: Cell::new(false),
            reader: RefCell::new(None),
            inode: Cell::new(0),
        }
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir
            .join(format!("{}.log", file_stem(self.base_offset)))
    }
    pub fn index_path(&self) -> PathBuf {
        self.dir
            .join(format!("{}.index", file_stem(self.base_offset)))
    }
    pub fn time_index_path(&self) -> PathBuf {
        self.dir
            .join(format!("{}.timeindex", file_stem(self.base_offset)))
    }

    /// Aborted transactions whose abort marker is in this segment (written when it is sealed).
    pub fn txn_index_path(&self) -> PathBuf {
        self.dir
            .join(format!("{}.txnindex", file_stem(self.base_offset)))
    }

    /// Every file of the segment: the log and its three indexes.
    pub fn file_paths(&self) -> [PathBuf; 4] {
        [
            self.log_path(),
            self.index_path(),
            self.time_index_path(),
            self.txn_index_path(),
        ]
    }

    /// A page-cache handle for reads and sendfile (O_DIRECT handles need aligned offsets, batches
    /// are not aligned). Opened on first use.
    pub async fn reader(&self) -> Result<Rc<BufferedFile>, KafkaError> {
        if let Some(r) = self.reader.borrow().as_ref() {
            return Ok(r.clone());
        }
        let f = Rc::new(
            OpenOptions::new()
                .read(true)
                .buffered_open(self.log_path())
                .await
                .map_err(|e| KafkaError::from(std::io::Error::other(e.to_string())))?,
        );
        self.inode.set(inode_of(&*f));
        *self.reader.borrow_mut() = Some(f.clone());
        Ok(f)
    }

    /// Lets go of the page-cache handle: the next read opens it again. Recovery's reads are
    /// done with it, so a partition nobody reads holds one descriptor (its writer), not two:
    /// with thousands of partitions the descriptors are what runs out first.
    pub fn drop_reader(&self) {
        self.reader.borrow_mut().take();
    }

    /// Inode of the file the reader has open (0 before `reader` was called).
    pub fn inode(&self) -> u64 {
        self.inode.get()
    }

    /// Notes a batch appended at `position` (called in append order).
    pub fn index_batch(
        &self,
        position: u64,
        base_offset: i64,
        max_timestamp: i64,
        len: u64,
        interval_bytes: u64,
    ) {
        let rel = (base_offset - self.base_offset) as u32;
        let mut ix = self.indexes.borrow_mut();
        if ix.offsets.is_empty() || ix.bytes_since_entry >= interval_bytes {
            if ix.offsets.last().is_none_or(|&(r, _)| r < rel) {
                ix.offsets.push((rel, position as u32));
            }
            ix.bytes_since_entry = 0;
            if max_timestamp > ix.times.last().map_or(-1, |t| t.0) {
                ix.times.push((max_timestamp, rel));
            }
        }
        ix.bytes_since_entry += len;
        if max_timestamp > self.max_timestamp.get() {
            self.max_timestamp.set(max_timestamp);
        }
    }

    /// File position to start scanning from for `offset`: the last index entry at or below it.
    pub fn lookup(&self, offset: i64) -> u64 {
        let rel = (offset - self.base_offset).max(0) as u64;
        let ix = self.indexes.borrow();
        let i = ix.offsets.partition_point(|&(r, _)| (r as u64) <= rel);
        if i == 0 {
            0
        } else {
            ix.offsets[i - 1].1 as u64
        }
    }

    /// Offset to start scanning from for the first record with timestamp >= `ts`.
    pub fn lookup_time(&self, ts: i64) -> i64 {
        let ix = self.indexes.borrow();
        let i = ix.times.partition_point(|&(t, _)| t < ts);
        if i == 0 {
            self.base_offset
        } else {
            self.base_offset + ix.times[i - 1].1 as i64
        }
    }

    /// Appends the index entries not yet persisted, once at least `PERSIST_EVERY_ENTRIES` are
    /// waiting (or always with `force`). Index files are hints: recovery validates them and
    /// scans forward from the last entry, so a lagging index costs only start-up time.
    pub async fn persist_indexes(&self, force: bool) -> Result<(), KafkaError> {
        if !force {
            let ix = self.indexes.borrow();
            if ix.offsets.len() - ix.offsets_persisted.min(ix.offsets.len()) < PERSIST_EVERY_ENTRIES
            {
                return Ok(());
            }
        }
        let (ofs_bytes, ofs_at, time_bytes, time_at, n_ofs, n_time) = {
            let ix = self.indexes.borrow();
            let written = self.written_bytes.get();
            let n_ofs = ix
                .offsets
                .iter()
                .take_while(|e| (e.1 as u64) < written)
                .count();
            let n_time = ix
                .times
                .iter()
                .take_while(|e| self.base_offset + (e.1 as i64) < self.written_next_offset.get())
                .count();
            let mut ob = Vec::new();
            for &(r, p) in &ix.offsets[ix.offsets_persisted.min(n_ofs)..n_ofs] {
                ob.extend_from_slice(&r.to_be_bytes());
                ob.extend_from_slice(&p.to_be_bytes());
            }
            let mut tb = Vec::new();
            for &(t, r) in &ix.times[ix.times_persisted.min(n_time)..n_time] {
                tb.extend_from_slice(&t.to_be_bytes());
                tb.extend_from_slice(&r.to_be_bytes());
            }
            (
                ob,
                (ix.offsets_persisted * INDEX_ENTRY_BYTES) as u64,
                tb,
                (ix.times_persisted * TIME_INDEX_ENTRY_BYTES) as u64,
                n_ofs,
                n_time,
            )
        };
        if !ofs_bytes.is_empty() {
            write_file_at(&self.index_path(), ofs_bytes, ofs_at).await?;
        }
        if !time_bytes.is_empty() {
            write_file_at(&self.time_index_path(), time_bytes, time_at).await?;
        }
        let mut ix = self.indexes.borrow_mut();
        ix.offsets_persisted = ix.offsets_persisted.max(n_ofs);
        ix.times_persisted = ix.times_persisted.max(n_time);
        Ok(())
    }

    /// Loads the index files of an old segment, keeping only entries that are consistent; a
    /// missing or corrupt index is rebuilt by scanning the log.
    pub async fn load_indexes(&self, interval_bytes: u64) -> Result<(), KafkaError> {
        if self.indexes_loaded.get() {
            return Ok(());
        }
        let written = self.written_bytes.get();
        let (offsets, times, expected) = self.read_index_files(written).await;
        let valid = !offsets.is_empty() && offsets.len() == expected;
        if valid {
            let mut ix = self.indexes.borrow_mut();
            ix.offsets_persisted = offsets.len();
            ix.times_persisted = times.len();
            if let Some(&(t, _)) = times.last() {
                self.max_timestamp.set(self.max_timestamp.get().max(t));
            }
            ix.offsets = offsets;
            ix.times = times;
        } else if written > 0 {
            tracing::warn!(segment = %self.log_path().display(), "index missing or inconsistent, rebuilding");
            *self.indexes.borrow_mut() = Indexes::default();
            let (end, next) = self.scan(0, self.base_offset, interval_bytes).await?;
            // Old segments end on a batch boundary; anything after is not data.
            self.written_bytes.set(end);
            self.written_next_offset.set(next);
            self.rewrite_indexes().await?;
        }
        self.indexes_loaded.set(true);
        Ok(())
    }

    /// Builds the indexes of a segment written whole (the cleaner's output) by scanning it.
    pub async fn build_indexes(&self, interval_bytes: u64) -> Result<(), KafkaError> {
        *self.indexes.borrow_mut() = Indexes::default();
        let (end, next) = self.scan(0, self.base_offset, interval_bytes).await?;
        if end != self.written_bytes.get() {
            return Err(KafkaError::from(std::io::Error::other(format!(
                "segment {} holds valid batches up to byte {end} of {}",
                self.base_offset,
                self.written_bytes.get()
            ))));
        }
        self.written_next_offset.set(next);
        self.rewrite_indexes().await?;
        self.indexes_loaded.set(true);
        Ok(())
    }

    /// Recovery of the newest segment: resume from the last index entry and validate every batch
    /// after it; if that entry does not lead to a valid batch, rebuild from the start. Sets
    /// `written_bytes`/`written_next_offset` to the end of the last valid batch, cutting a torn
    /// or corrupt tail. Returns the position validation started from: every batch from there
    /// to `written_bytes` was checked, the ones before it are trusted from the index.
    pub async fn recover(&self, interval_bytes: u64) -> Result<u64, KafkaError> {
        let (mut offsets, mut times, _) = self.read_index_files(u32::MAX as u64).await;
        let mut done = None;
        if let Some((rel, pos)) = offsets.pop() {
            times.retain(|t| t.1 < rel);
            {
                let mut ix = self.indexes.borrow_mut();
                ix.offsets = offsets;
                ix.times = times;
                // Force an entry for the batch we resume at.
                ix.bytes_since_entry = u64::MAX / 2;
            }
            let (end, next) = self
                .scan(pos as u64, self.base_offset + rel as i64, interval_bytes)
                .await?;
            if end > pos as u64 {
                done = Some((pos as u64, end, next));
            }
        }
        let (validated_from, end, next) = match done {
            Some(d) => d,
            None => {
                *self.indexes.borrow_mut() = Indexes::default();
                let (end, next) = self.scan(0, self.base_offset, interval_bytes).await?;
                (0, end, next)
            }
        };
        self.written_bytes.set(end);
        self.written_next_offset.set(next);
        self.indexes_loaded.set(true);
        self.rewrite_indexes().await?;
        Ok(validated_from)
    }

    /// The segment's file was cut at `position`, where the batch of `offset` started (a
    /// follower's divergent tail): drops the index entries at or past it and recovers the
    /// segment as the newest, as after a crash (resume at the last entry kept, validate every
    /// batch after it). Returns the position validation started from, as `recover` does.
    ///
    /// The largest timestamp is the larger of the kept time index's last entry and the
    /// batches rescanned: what `load_indexes` knows of an old segment too.
    pub async fn truncate_to(
        &self,
        position: u64,
        offset: i64,
        interval_bytes: u64,
    ) -> Result<u64, KafkaError> {
        self.load_indexes(interval_bytes).await?;
        let max_kept = {
            let rel = (offset - self.base_offset) as u32;
            let mut ix = self.indexes.borrow_mut();
            ix.offsets.retain(|e| (e.1 as u64) < position);
            ix.times.retain(|t| t.1 < rel);
            ix.times.last().map_or(-1, |t| t.0)
        };
        self.written_bytes.set(position);
        self.written_next_offset.set(offset);
        self.rewrite_indexes().await?;
        self.max_timestamp.set(max_kept);
        let validated_from = self.recover(interval_bytes).await?;
        // Paired with the cut: recovery finds exactly the batches before it. They end at
        // `offset`, or below it when the cut is at a gap of a cleaned log (then the log
        // still ends at `offset`: nothing in between).
        assert!(
            self.written_bytes.get() == position && self.written_next_offset.get() <= offset,
            "segment {} recovered to byte {} offset {} after a cut at byte {position} offset {offset}",
            self.base_offset,
            self.written_bytes.get(),
            self.written_next_offset.get()
        );
        self.written_next_offset.set(offset);
        Ok(validated_from)
    }

    async fn rewrite_indexes(&self) -> Result<(), KafkaError> {
        remove_quietly(&self.index_path()).await;
        remove_quietly(&self.time_index_path()).await;
        {
            let mut ix = self.indexes.borrow_mut();
            ix.offsets_persisted = 0;
            ix.times_persisted = 0;
        }
        self.persist_indexes(true).await
    }

    /// Parses the index files, keeping the consistent prefix: entries strictly increasing,
    /// the first at position 0, positions below `limit`. Returns also how many entries the file had.
    async fn read_index_files(&self, limit: u64) -> (Vec<(u32, u32)>, Vec<(i64, u32)>, usize) {
        let raw = read_whole(&self.index_path()).await.unwrap_or_default();
        let raw_times = read_whole(&self.time_index_path())
            .await
            .unwrap_or_default();
        let mut offsets: Vec<(u32, u32)> = Vec::new();
        for e in raw.chunks_exact(INDEX_ENTRY_BYTES) {
            let r = u32::from_be_bytes(e[..4].try_into().expect("4"));
            let p = u32::from_be_bytes(e[4..].try_into().expect("4"));
            let ok = (p as u64) < limit
                && match offsets.last() {
                    // A cleaned segment's first batch may start past its base offset.
                    None => p == 0,
                    Some(&(lr, lp)) => r > lr && p > lp,
                };
            if !ok {
                break;
            }
            offsets.push((r, p));
        }
        let mut times: Vec<(i64, u32)> = Vec::new();
        for e in raw_times.chunks_exact(TIME_INDEX_ENTRY_BYTES) {
            let t = i64::from_be_bytes(e[..8].try_into().expect("8"));
            let r = u32::from_be_bytes(e[8..].try_into().expect("4"));
            if times.last().is_some_and(|&(lt, lr)| t <= lt || r < lr) {
                break;
            }
            times.push((t, r));
        }
        (offsets, times, raw.len() / INDEX_ENTRY_BYTES)
    }

    /// Walks batches from `position` (a batch start whose base offset must be `expected`)
    /// validating each (framing, magic, CRC, increasing offsets) and indexing it. Returns
    /// (end position, next offset) after the last valid batch.
    pub async fn scan(
        &self,
        position: u64,
        expected: i64,
        interval_bytes: u64,
    ) -> Result<(u64, i64), KafkaError> {
        let reader = self.reader().await?;
        let file_len = reader
            .file_size()
            .await
            .map_err(|e| KafkaError::from(std::io::Error::other(e.to_string())))?;
        let mut walk = BatchWalk::new(reader, position, file_len);
        let mut end = position;
        let mut next_offset = expected;
        while let Some(b) = walk.next().await? {
            // A check, not an assertion: the base offset is outside the CRC, so a batch out of
            // sequence is damage on the disk, cut like a torn tail. Offsets may jump forward
            // in a compacted topic's log (the cleaner's gaps), never back.
            let in_sequence = if self.gaps_allowed.get() {
                b.prefix.base_offset >= next_offset
            } else {
                b.prefix.base_offset == next_offset
            };
            if !in_sequence {
                break;
            }
            let whole = walk.whole(&b).await?;
            if whole.len() < b.prefix.len || !batch::crc_ok(whole) {
                break;
            }
            let max_ts = batch::be_i64(whole, batch::OFF_MAX_TIMESTAMP);
            self.index_batch(
                b.pos,
                b.prefix.base_offset,
                max_ts,
                b.prefix.len as u64,
                interval_bytes,
            );
            end = b.end();
            next_offset = b.prefix.next_offset();
        }
        Ok((end, next_offset))
    }
}

/// The inode of an open file (0 if fstat fails, which then matches nothing).
pub fn inode_of(f: &impl std::os::fd::AsRawFd) -> u64 {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat fills `st` for a valid descriptor, which `f` holds open.
    if unsafe { libc::fstat(f.as_raw_fd(), st.as_mut_ptr()) } == 0 {
        // SAFETY: initialised by the successful fstat.
        unsafe { st.assume_init() }.st_ino
    } else {
        0
    }
}

pub async fn read_at(f: &BufferedFile, pos: u64, len: usize) -> Result<Vec<u8>, KafkaError> {
    let r = f
        .read_at(pos, len)
        .await
        .map_err(|e| KafkaError::from(std::io::Error::other(e.to_string())))?;
    Ok(r.to_vec())
}

async fn read_whole(path: &Path) -> Option<Vec<u8>> {
    let f = BufferedFile::open(path).await.ok()?;
    let len = f.file_size().await.ok()? as usize;
    let r = read_at(&f, 0, len).await.ok();
    let _ = f.close().await;
    r
}

async fn write_file_at(path: &Path, bytes: Vec<u8>, at: u64) -> Result<(), KafkaError> {
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .buffered_open(path)
        .await
        .map_err(|e| KafkaError::from(std::io::Error::other(e.to_string())))?;
    let len = bytes.len();
    let n = f
        .write_at(bytes, at)
        .await
        .map_err(|e| KafkaError::from(std::io::Error::other(e.to_string())))?;
    let _ = f.close().await;
    if n != len {
        return Err(KafkaError::from(std::io::Error::other("short index write")));
    }
    Ok(())
}

pub async fn remove_quietly(path: &Path) {
    let _ = glommio::io::remove(path).await;
}
