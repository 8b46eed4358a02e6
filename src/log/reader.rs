//! Reads for fetch and offset lookups: whole batches from the tail cache or as a byte range of
//! a segment file (sent without being parsed), the last stable offset for read_committed, and
//! the first offset at or after a timestamp.
//!
//! Invariants: a read never returns data at or past its visibility bound, which is never past
//! the durable offset; it returns whole batches only, and at least one when there is one below
//! the bound (as Kafka does, so a large batch never blocks a consumer). The tail cache holds
//! exactly the bytes written to the file, evicted oldest first within a shard-wide budget.

use super::partition::{io_err, Partition};
use super::segment::{self, Segment};
use super::walker::{batches_in, LogWalk, WalkFrom};
use crate::protocol::batch;
use crate::protocol::errors::{ErrorCode, KafkaError};
use bytes::Bytes;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::{Rc, Weak};

/// Bytes a fetch returns: from the tail cache, or a range of a segment file.
#[derive(Clone)]
pub enum Chunk {
    /// Batches from the tail cache (a batch may come as two chunks, its stamped head and the
    /// rest; the chunks of a read together hold whole batches).
    Mem(Bytes),
    /// `len` bytes of whole batches at `pos` in the segment's file.
    File {
        /// The segment the bytes are in (kept alive while the fetch is sent).
        seg: Rc<Segment>,
        /// File position of the first batch.
        pos: u64,
        /// Bytes, ending on a batch boundary.
        len: usize,
    },
}

impl Chunk {
    /// Bytes in the chunk.
    pub fn len(&self) -> usize {
        match self {
            Chunk::Mem(b) => b.len(),
            Chunk::File { len, .. } => *len,
        }
    }
    /// True for a chunk with no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a read returns: the batches found and the partition's offsets as the read saw them.
pub struct ReadResult {
    /// The read's visibility bound (the durable offset for `read`/`read_isolated`).
    pub high_watermark: i64,
    /// Below this offset no transaction is open; never past `high_watermark`.
    pub last_stable_offset: i64,
    /// The first offset still in the log.
    pub log_start_offset: i64,
    /// The batches, in offset order.
    pub chunks: Vec<Chunk>,
    /// Total bytes in `chunks`.
    pub bytes: usize,
    /// read_committed: (producer id, first offset) of the aborted transactions in the range.
    pub aborted: Vec<(i64, i64)>,
    /// Offset after the last batch returned (the fetch offset when nothing is).
    pub next_offset: i64,
}

/// Shard-wide budget for cached tail batches, evicted oldest first across partitions.
pub struct TailCache {
    budget_bytes: usize,
    used_bytes: Cell<usize>,
    fifo: RefCell<VecDeque<(Weak<Partition>, i64, usize)>>,
}

impl TailCache {
    /// A cache for one shard holding at most `budget_bytes` of batches.
    pub fn new(budget_bytes: usize) -> Rc<TailCache> {
        Rc::new(TailCache {
            budget_bytes,
            used_bytes: Cell::new(0),
            fifo: RefCell::new(VecDeque::new()),
        })
    }

    /// Bytes of batches cached now.
    pub fn used_bytes(&self) -> usize {
        self.used_bytes.get()
    }

    /// Caches the batch `[base_offset, next_offset)` of `p` as `head` followed by `body`.
    pub(super) fn insert(
        &self,
        p: &Rc<Partition>,
        base_offset: i64,
        next_offset: i64,
        head: Bytes,
        body: Bytes,
    ) {
        let len = head.len() + body.len();
        if len > self.budget_bytes {
            return;
        }
        p.cache.borrow_mut().push_back(CacheEntry {
            base_offset,
            next_offset,
            head,
            body,
        });
        self.fifo
            .borrow_mut()
            .push_back((Rc::downgrade(p), base_offset, len));
        self.used_bytes.set(self.used_bytes.get() + len);
        while self.used_bytes.get() > self.budget_bytes {
            let Some((w, base, l)) = self.fifo.borrow_mut().pop_front() else {
                break;
            };
            if let Some(owner) = w.upgrade() {
                let mut c = owner.cache.borrow_mut();
                if c.front().is_some_and(|e| e.base_offset == base) {
                    c.pop_front();
                }
            }
            self.used_bytes.set(self.used_bytes.get() - l);
        }
    }
}

/// A cached batch: the bytes written to the file are `head` then `body`. `body` is usually a
/// slice of the producer's request (no copy of its own); `head` holds the fields the broker
/// stamped (base offset, leader epoch; with LogAppendTime the whole header), empty when
/// nothing was stamped.
pub(super) struct CacheEntry {
    pub(super) base_offset: i64,
    pub(super) next_offset: i64,
    pub(super) head: Bytes,
    pub(super) body: Bytes,
}

impl CacheEntry {
    pub(super) fn len(&self) -> usize {
        self.head.len() + self.body.len()
    }
}

impl Partition {
    /// Reads whole batches starting with the one that contains `offset`, up to `max_bytes`
    /// (at least one batch, as Kafka does, so a large batch never blocks a consumer).
    pub async fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadResult, KafkaError> {
        self.read_isolated(offset, max_bytes, false).await
    }

    fn count_read(&self, r: &ReadResult, from: i64, cached: bool) {
        use crate::metrics::bump;
        let s = &self.stats;
        bump(&s.bytes_out, r.bytes as u64);
        bump(&s.records_out, (r.next_offset - from).max(0) as u64);
        bump(
            if cached {
                &s.cache_hits
            } else {
                &s.cache_misses
            },
            1,
        );
    }

    /// The offset below which no transaction is open: where read_committed consumers stop.
    pub fn last_stable_offset(&self) -> i64 {
        let hw = self.st.borrow().durable_offset;
        self.producers
            .borrow()
            .first_unstable()
            .map_or(hw, |f| f.min(hw))
    }

    /// `read`, and with `committed` (read_committed) only below the last stable offset, with
    /// the aborted transactions the consumer must drop.
    pub async fn read_isolated(
        &self,
        offset: i64,
        max_bytes: usize,
        committed: bool,
    ) -> Result<ReadResult, KafkaError> {
        self.read_bounded(offset, max_bytes, committed, self.durable_offset())
            .await
    }

    /// `read_isolated` that returns nothing at or past `visible_end` (clamped to the durable
    /// offset): the bound the caller decides consumers may see. The result's high watermark is
    /// that bound and its last stable offset is never past it; an offset is out of range only
    /// below the log start or past the durable offset.
    pub async fn read_bounded(
        &self,
        offset: i64,
        max_bytes: usize,
        committed: bool,
        visible_end: i64,
    ) -> Result<ReadResult, KafkaError> {
        if let Some(e) = self.failure() {
            return Err(e);
        }
        let (durable, start) = {
            let st = self.st.borrow();
            (st.durable_offset, st.log_start_offset)
        };
        let visible = visible_end.min(durable);
        let lso = self
            .producers
            .borrow()
            .first_unstable()
            .map_or(visible, |f| f.min(visible));
        let mut out = ReadResult {
            high_watermark: visible,
            last_stable_offset: lso,
            log_start_offset: start,
            chunks: Vec::new(),
            bytes: 0,
            aborted: Vec::new(),
            next_offset: offset,
        };
        if offset < start || offset > durable {
            return Err(KafkaError::new(
                ErrorCode::OFFSET_OUT_OF_RANGE,
                format!("offset {offset} outside [{start}, {durable}]"),
            ));
        }
        let bound = if committed { lso } else { visible };
        if offset >= bound {
            return Ok(out);
        }
        if committed {
            out.aborted = self
                .aborted
                .borrow()
                .iter()
                .filter(|a| a.last_offset >= offset && a.first_offset < bound)
                .map(|a| (a.producer_id, a.first_offset))
                .collect();
        }
        // Tail cache first.
        {
            let cache = self.cache.borrow();
            if cache.front().is_some_and(|e| e.base_offset <= offset) {
                let i = cache.partition_point(|e| e.next_offset <= offset);
                for e in cache.iter().skip(i) {
                    if e.next_offset > bound || (out.bytes > 0 && out.bytes + e.len() > max_bytes) {
                        break;
                    }
                    out.bytes += e.len();
                    out.next_offset = e.next_offset;
                    if !e.head.is_empty() {
                        out.chunks.push(Chunk::Mem(e.head.clone()));
                    }
                    if !e.body.is_empty() {
                        out.chunks.push(Chunk::Mem(e.body.clone()));
                    }
                }
                if !out.chunks.is_empty() {
                    self.count_read(&out, offset, true);
                    return Ok(out);
                }
            }
        }
        // Then the segment files: one byte range of the first segment that has any. When that
        // range holds only batches without records (what a compacted log keeps of a
        // producer's last batch), the next segment's follows: some clients (kafkajs) move
        // past a fetch only by the records it returns.
        let mut walk = LogWalk::new(
            self.segments_from(offset),
            WalkFrom::Offset(offset),
            self.cfg().index_interval_bytes,
        );
        while let Some((seg, mut batches)) = walk.next_segment().await? {
            let mut range: Option<(u64, u64)> = None;
            let mut records = false;
            let mut at_bound = false;
            while let Some(b) = batches.next().await? {
                if b.prefix.next_offset() > bound {
                    at_bound = true;
                    break;
                }
                match range {
                    None if b.prefix.next_offset() <= offset => continue,
                    Some(_) if out.bytes + b.prefix.len > max_bytes => break,
                    _ => {}
                }
                range = Some((range.map_or(b.pos, |r| r.0), b.end()));
                out.bytes += b.prefix.len;
                out.next_offset = b.prefix.next_offset();
                let h = batches.header(&b);
                records |= h.len() < batch::HEADER_BYTES
                    || batch::be_i32(h, batch::OFF_RECORDS_COUNT) != 0;
                if out.bytes >= max_bytes {
                    break;
                }
            }
            if let Some((from, to)) = range {
                out.chunks.push(Chunk::File {
                    seg,
                    pos: from,
                    len: (to - from) as usize,
                });
                if records || out.bytes >= max_bytes {
                    break;
                }
            }
            if at_bound {
                break;
            }
        }
        if !out.chunks.is_empty() {
            self.count_read(&out, offset, false);
        }
        Ok(out)
    }

    /// Calls `f` with every whole batch from the log start to the high watermark, in order:
    /// how the coordinators load their internal topics.
    pub async fn scan(&self, mut f: impl FnMut(&[u8])) -> Result<(), KafkaError> {
        let mut offset = self.log_start_offset();
        loop {
            let r = self.read(offset, 1 << 20).await?;
            if r.chunks.is_empty() {
                return Ok(());
            }
            let mut bytes = Vec::with_capacity(r.bytes);
            for c in r.chunks {
                match c {
                    Chunk::Mem(b) => bytes.extend_from_slice(&b),
                    Chunk::File { seg, pos, len } => {
                        let reader = seg.reader().await?;
                        bytes.extend_from_slice(&segment::read_at(&reader, pos, len).await?);
                    }
                }
            }
            let before = offset;
            for (prefix, whole) in batches_in(&bytes) {
                f(whole);
                offset = prefix.next_offset();
            }
            if offset == before {
                return Err(io_err(format!(
                    "{}-{}: no whole batch at offset {offset}",
                    self.topic, self.index
                )));
            }
        }
    }

    /// The first offset whose record timestamp is >= `ts`, with that timestamp; None when every
    /// record is older.
    pub async fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, KafkaError> {
        let (segs, hw) = {
            let st = self.st.borrow();
            (
                st.segments.values().cloned().collect::<Vec<_>>(),
                st.durable_offset,
            )
        };
        let mut walk = LogWalk::new(
            segs,
            WalkFrom::Timestamp(ts),
            self.cfg().index_interval_bytes,
        );
        while let Some((_, mut batches)) = walk.next_segment().await? {
            while let Some(b) = batches.next().await? {
                if b.prefix.base_offset >= hw {
                    break;
                }
                let whole = batches.whole(&b).await?;
                if whole.len() == b.prefix.len
                    && batch::be_i64(whole, batch::OFF_MAX_TIMESTAMP) >= ts
                {
                    if let Some(found) = first_record_at_or_after(whole, ts)? {
                        return Ok(Some(found));
                    }
                }
            }
        }
        Ok(None)
    }
}

/// Decodes one batch (decompressing if needed) to find its first record with timestamp >= ts.
fn first_record_at_or_after(whole: &[u8], ts: i64) -> Result<Option<(i64, i64)>, KafkaError> {
    let attrs = i16::from_be_bytes([
        whole[batch::OFF_ATTRIBUTES],
        whole[batch::OFF_ATTRIBUTES + 1],
    ]);
    let base = batch::be_i64(whole, batch::OFF_BASE_OFFSET);
    if attrs & batch::ATTR_LOG_APPEND_TIME != 0 {
        let t = batch::be_i64(whole, batch::OFF_MAX_TIMESTAMP);
        return Ok((t >= ts).then_some((base, t)));
    }
    let mut buf = Bytes::copy_from_slice(whole);
    let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut buf)
        .map_err(|e| KafkaError::new(ErrorCode::CORRUPT_MESSAGE, format!("stored batch: {e}")))?;
    Ok(set
        .records
        .iter()
        .find(|r| r.timestamp >= ts)
        .map(|r| (r.offset, r.timestamp)))
}
