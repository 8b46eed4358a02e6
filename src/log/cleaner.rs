//! Log compaction (cleanup.policy=compact): the latest record of each key stays, older ones,
//! expired tombstones, aborted transactional data and empty transaction markers go.
//!
//! A pass over a partition: the cleanable log is its sealed segments below the last stable
//! offset and older than min.compaction.lag.ms. A key map (a 128-bit hash of each key -> its
//! latest offset) is built from the dirty part, the segments at and past the first dirty offset
//! (`cleaner-offset-checkpoint`), as far as the map's memory allows. Then every cleanable
//! segment up to there is rewritten, consecutive ones merged while they fit `segment.bytes`, and
//! swapped in. Batches keep their offsets: a batch that keeps some records keeps its base offset
//! and last offset delta (`protocol::records::rebuild`), a batch that keeps none is gone, so the
//! log has gaps between batches, as Kafka's does.
//!
//! The swap, crash-safe at every step: the new segment is written to `<base>-<end>.cleaned` and
//! synced; renamed `<base>-<end>.swap` (the commit point: from here the new segment wins); the
//! group's old segments (every `.log` based in [base, end)) and their indexes are deleted; the
//! swap file is renamed `<base>.log`. `finish_swaps` at start-up deletes a `.cleaned` and
//! completes a `.swap`, so a crash leaves either the old segments or the new one, never
//! neither and never both.
//!
//! Invariants: only sealed segments are rewritten, never the active one; the layout lock is held
//! for the whole pass (retention, DeleteRecords and truncation wait), so the key map's offsets
//! stay true while it is used; a record is dropped only when a later record of its key is in
//! the log or it is a tombstone past delete.retention.ms.

use super::partition::{io_err, Partition};
use super::producers::AbortedTxn;
use super::recovery::write_durably;
use super::replica::sync_dir;
use super::segment::{self, Segment};
use super::walker::BatchWalk;
use crate::protocol::batch;
use crate::protocol::errors::KafkaError;
use crate::protocol::records;
use glommio::io::{BufferedFile, OpenOptions};
use std::cell::Cell;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The file in a partition's directory that keeps its first dirty offset.
const CHECKPOINT_FILE: &str = "cleaner-offset-checkpoint";
/// Bytes a key map entry costs (hash, offset, the table's own overhead), for the memory budget.
const MAP_ENTRY_BYTES: u64 = 48;
/// Cleaned bytes gathered before they are written out.
const WRITE_CHUNK_BYTES: usize = 1 << 20;

/// The cleaner's I/O budget on a shard: bytes per second read and written by every pass, so
/// cleaning never takes the disk from produce (log_cleaner_io_max_bytes_per_second).
pub struct Throttle {
    bytes_per_sec: Cell<f64>,
    since: Cell<Instant>,
    spent: Cell<f64>,
}

impl Throttle {
    pub fn new(bytes_per_sec: f64) -> Throttle {
        Throttle {
            bytes_per_sec: Cell::new(bytes_per_sec),
            since: Cell::new(Instant::now()),
            spent: Cell::new(0.0),
        }
    }

    /// A new budget (a dynamic broker config changed), from the next I/O on.
    pub fn set_rate(&self, bytes_per_sec: f64) {
        self.bytes_per_sec.set(bytes_per_sec);
    }

    /// Counts `bytes` of cleaner I/O and sleeps for as long as the budget is ahead of time.
    /// Yields to the shard's other tasks either way (the cleaner runs in a low-share queue).
    pub async fn spend(&self, bytes: u64) {
        self.spent.set(self.spent.get() + bytes as f64);
        let elapsed = self.since.get().elapsed().as_secs_f64();
        let due = self.spent.get() / self.bytes_per_sec.get();
        if due > elapsed + 0.001 {
            glommio::timer::sleep(Duration::from_secs_f64(due - elapsed)).await;
        } else {
            glommio::yield_if_needed().await;
        }
        // A new window once a second has passed, so idle time does not bank a burst.
        if elapsed > 1.0 {
            self.since.set(Instant::now());
            self.spent.set(0.0);
        }
    }
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CleanStats {
    /// Log bytes read (both phases: about twice `size_before`).
    pub bytes_read: u64,
    /// Bytes of the segments rewritten, before and after (after: what the pass wrote).
    pub size_before: u64,
    pub size_after: u64,
    pub segments_before: usize,
    pub segments_after: usize,
    pub records_kept: u64,
    pub records_dropped: u64,
    /// The first dirty offset after the pass: everything below it is clean.
    pub cleaned_to: i64,
}

/// A 128-bit key hash: two SipHash halves, so a collision (which would drop a live key) is
/// as unlikely as Kafka's MD5.
fn key_hash(key: &[u8]) -> u128 {
    let half = |seed: u8| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        seed.hash(&mut h);
        key.hash(&mut h);
        h.finish() as u128
    };
    (half(0) << 64) | half(1)
}

/// The timestamp of a record: the batch's append time, or its base plus the record's delta.
fn record_ts(header: &[u8], r: &records::RawRecord<'_>) -> i64 {
    if batch::be_i16(header, batch::OFF_ATTRIBUTES) & batch::ATTR_LOG_APPEND_TIME != 0 {
        batch::be_i64(header, batch::OFF_MAX_TIMESTAMP)
    } else {
        batch::be_i64(header, batch::OFF_BASE_TIMESTAMP).saturating_add(r.timestamp_delta)
    }
}

/// Aborted transactions by producer: (first offset, marker offset).
struct Aborted(HashMap<i64, Vec<(i64, i64)>>);

impl Aborted {
    fn new(list: &[AbortedTxn]) -> Aborted {
        let mut m: HashMap<i64, Vec<(i64, i64)>> = HashMap::new();
        for a in list {
            m.entry(a.producer_id)
                .or_default()
                .push((a.first_offset, a.last_offset));
        }
        Aborted(m)
    }
    fn contains(&self, pid: i64, offset: i64) -> bool {
        self.0
            .get(&pid)
            .is_some_and(|v| v.iter().any(|&(f, l)| f <= offset && offset <= l))
    }
}

/// One cleanable segment and the offset its successor starts at (its end).
type Cleanable = (Rc<Segment>, i64);

impl Partition {
    /// The share of the cleanable log that is dirty, when the partition is compacted and has
    /// dirty bytes: the cleaner cleans it once this reaches min.cleanable.dirty.ratio, or once
    /// its oldest dirty segment is older than max.compaction.lag.ms (then the ratio is
    /// answered as 1.0 so it goes first), or (answered as 0.0) once a tombstone or marker
    /// the last pass kept is past delete.retention.ms.
    pub fn cleaning_due(&self, now: i64) -> Option<f64> {
        let cfg = self.cfg();
        if !cfg.compact || self.failure().is_some() {
            return None;
        }
        let st = self.st.borrow();
        let first_dirty = self.first_dirty.get().max(st.log_start_offset);
        let bases: Vec<i64> = st.segments.keys().copied().collect();
        let (mut clean, mut dirty) = (0u64, 0u64);
        let mut oldest_dirty: Option<i64> = None;
        for (i, seg) in st
            .segments
            .values()
            .enumerate()
            .take(bases.len().saturating_sub(1))
        {
            let end = bases[i + 1];
            if end <= first_dirty {
                clean += seg.written_bytes.get();
            } else {
                dirty += seg.written_bytes.get();
                if oldest_dirty.is_none() {
                    let ts = seg.max_timestamp.get();
                    oldest_dirty = Some(if ts >= 0 { ts } else { seg.created_ms });
                }
            }
        }
        if dirty == 0 {
            // Nothing new, but a kept tombstone or marker may be due to go.
            return self
                .tombstones_due
                .get()
                .is_some_and(|t| now >= t)
                .then_some(0.0);
        }
        let ratio = dirty as f64 / (clean + dirty) as f64;
        let overdue =
            oldest_dirty.is_some_and(|t| now.saturating_sub(t) > cfg.max_compaction_lag_ms);
        if overdue {
            Some(1.0)
        } else if ratio >= cfg.min_cleanable_dirty_ratio {
            Some(ratio)
        } else {
            None
        }
    }

    /// The first dirty offset, from `cleaner-offset-checkpoint` (the log start without one).
    pub(super) async fn load_first_dirty(&self) {
        let path = self.dir.join(CHECKPOINT_FILE);
        let text = glommio::executor()
            .spawn_blocking(move || std::fs::read_to_string(path).ok())
            .await;
        let v = text.and_then(|t| t.trim().parse::<i64>().ok()).unwrap_or(0);
        self.first_dirty.set(v.min(self.log_end_offset()));
    }

    /// Records from `offset` on are dirty again (a follower's log was cut there, and what it
    /// appends next was never cleaned): kept durably before the log changes.
    pub(super) async fn lower_first_dirty(&self, offset: i64) -> Result<(), KafkaError> {
        if self.first_dirty.get() > offset {
            self.save_first_dirty(offset).await?;
        }
        Ok(())
    }

    async fn save_first_dirty(&self, offset: i64) -> Result<(), KafkaError> {
        write_durably(
            self.dir.join(CHECKPOINT_FILE),
            offset.to_string().into_bytes(),
        )
        .await?;
        self.first_dirty.set(offset);
        Ok(())
    }

    /// Sealed segments that may be cleaned now: wholly below `bound` (the high watermark, the
    /// durable offset and the last stable offset: records a truncation could still remove or
    /// an open transaction has not decided are not cleaned, nor are the keys after them) and,
    /// with min.compaction.lag.ms, whose newest record is at least that old.
    async fn cleanable(&self, now: i64, high_watermark: i64) -> Result<Vec<Cleanable>, KafkaError> {
        let cfg = self.cfg();
        let lso = self.producers.borrow().first_unstable().unwrap_or(i64::MAX);
        let bound = lso.min(high_watermark).min(self.durable_offset());
        let segs: Vec<(i64, Rc<Segment>)> = self
            .st
            .borrow()
            .segments
            .iter()
            .map(|(b, s)| (*b, s.clone()))
            .collect();
        let mut out = Vec::new();
        for w in segs.windows(2) {
            let (seg, end) = (&w[0].1, w[1].0);
            if end > bound || !seg.sealed.get() {
                break;
            }
            seg.load_indexes(cfg.index_interval_bytes).await?;
            if cfg.min_compaction_lag_ms > 0 {
                let ts = seg.max_timestamp.get();
                let newest = if ts >= 0 { ts } else { seg.created_ms };
                if now.saturating_sub(newest) < cfg.min_compaction_lag_ms {
                    break;
                }
            }
            out.push((seg.clone(), end));
        }
        Ok(out)
    }

    /// Whether a pass that started at layout generation `gen` must give up: the segments
    /// changed under it (retention, DeleteRecords, truncation) or the partition went offline.
    fn pass_overtaken(&self, gen: u64) -> bool {
        self.layout_gen.get() != gen || self.failure().is_some()
    }

    /// One cleaning pass (see the module doc), of the log below `high_watermark`. None when
    /// there was nothing to clean, or the log changed under the pass (it gave up; the next
    /// round starts again).
    pub async fn clean(
        &self,
        now: i64,
        high_watermark: i64,
        throttle: &Throttle,
        map_budget_bytes: u64,
    ) -> Result<Option<CleanStats>, KafkaError> {
        if let Some(e) = self.failure() {
            return Err(e);
        }
        let cfg = self.cfg();
        if !cfg.compact {
            return Ok(None);
        }
        let gen = self.layout_gen.get();
        let mut segs = self.cleanable(now, high_watermark).await?;
        let start = self.log_start_offset();
        let first_dirty = self.first_dirty.get().max(start);
        // With nothing dirty, a pass still runs once a tombstone or marker it kept is due to go.
        let tombstones_due = self.tombstones_due.get().is_some_and(|t| now >= t);
        let first_dirty_seg = match segs.iter().position(|(_, end)| *end > first_dirty) {
            Some(i) => i,
            None if tombstones_due && !segs.is_empty() => segs.len(),
            None => return Ok(None),
        };
        let aborted = Aborted::new(&self.aborted.borrow());
        // Each producer's last batch stays (empty if need be), as Kafka keeps it: a replica
        // that copies this log learns the producer's last sequence from it.
        let last_batches: HashMap<i64, i64> = self
            .producers
            .borrow()
            .producers
            .iter()
            .filter_map(|(pid, e)| e.batches.back().map(|b| (*pid, b.base_offset)))
            .collect();
        let mut stats = CleanStats::default();

        // Phase 1: the key map of the dirty segments, as many as fit the budget.
        let max_entries = (map_budget_bytes / MAP_ENTRY_BYTES).max(1) as usize;
        let mut map: HashMap<u128, i64> = HashMap::new();
        let mut mapped = first_dirty_seg;
        for (seg, _) in &segs[first_dirty_seg..] {
            if mapped > first_dirty_seg && map.len() >= max_entries {
                break;
            }
            let mut walk = BatchWalk::new(seg.reader().await?, 0, seg.written_bytes.get());
            while let Some(b) = walk.next().await? {
                if b.prefix.next_offset() <= first_dirty {
                    continue;
                }
                let whole = walk.whole(&b).await?;
                stats.bytes_read += whole.len() as u64;
                let attrs = batch::be_i16(whole, batch::OFF_ATTRIBUTES);
                let pid = batch::be_i64(whole, batch::OFF_PRODUCER_ID);
                if attrs & batch::ATTR_CONTROL != 0
                    || (attrs & batch::ATTR_TRANSACTIONAL != 0
                        && aborted.contains(pid, b.prefix.base_offset))
                {
                    continue;
                }
                let body = records::body(whole).map_err(|e| self.stored_damage(seg, &e))?;
                let count = batch::be_i32(whole, batch::OFF_RECORDS_COUNT);
                let parsed = records::parse(&body, count, b.prefix.last_offset_delta)
                    .map_err(|e| self.stored_damage(seg, &e))?;
                for r in parsed {
                    let offset = b.prefix.base_offset + r.offset_delta;
                    if let (Some(k), true) = (r.key, offset >= first_dirty) {
                        map.insert(key_hash(k), offset);
                    }
                }
                throttle.spend(b.prefix.len as u64).await;
                if self.pass_overtaken(gen) {
                    return Ok(None);
                }
            }
            mapped += 1;
        }
        segs.truncate(mapped);
        let cleaned_to = segs
            .last()
            .map_or(first_dirty, |(_, end)| *end)
            .max(first_dirty);

        // Phase 2: every cleanable segment up to there, rewritten in groups.
        let mut txn_has_data: HashMap<i64, bool> = HashMap::new();
        let mut dropped_markers: Vec<i64> = Vec::new();
        let mut next_due: Option<i64> = None;
        let mut i = 0;
        while i < segs.len() {
            let mut j = i + 1;
            let mut size = segs[i].0.written_bytes.get();
            while j < segs.len()
                && size + segs[j].0.written_bytes.get() <= cfg.segment_bytes
                && segs[j].1 - segs[i].0.base_offset < i32::MAX as i64
            {
                size += segs[j].0.written_bytes.get();
                j += 1;
            }
            let mut pass = GroupPass {
                now,
                start,
                delete_retention_ms: cfg.delete_retention_ms,
                map: &map,
                aborted: &aborted,
                last_batches: &last_batches,
                arrived_ms: 0,
                next_due: &mut next_due,
                txn_has_data: &mut txn_has_data,
                dropped_markers: &mut dropped_markers,
                stats: &mut stats,
            };
            if !self
                .clean_group(&segs[i..j], &mut pass, throttle, gen)
                .await?
            {
                return Ok(None);
            }
            i = j;
        }
        let _layout = self.layout_lock.lock().await;
        if self.pass_overtaken(gen) {
            return Ok(None);
        }
        if !dropped_markers.is_empty() {
            self.aborted
                .borrow_mut()
                .retain(|a| !dropped_markers.contains(&a.last_offset));
        }
        self.save_first_dirty(cleaned_to).await?;
        self.tombstones_due.set(next_due);
        stats.cleaned_to = cleaned_to;
        stats.segments_before = segs.len();
        Ok(Some(stats))
    }

    fn stored_damage(&self, seg: &Segment, what: &str) -> KafkaError {
        io_err(format!(
            "{}-{}: segment {} cannot be cleaned: {what}",
            self.topic, self.index, seg.base_offset
        ))
    }

    /// Rewrites one group of consecutive segments into one and swaps it in. False when the
    /// pass was overtaken (nothing changed; the cleaned file is deleted).
    async fn clean_group(
        &self,
        group: &[Cleanable],
        pass: &mut GroupPass<'_>,
        throttle: &Throttle,
        gen: u64,
    ) -> Result<bool, KafkaError> {
        let base = group[0].0.base_offset;
        let end = group.last().expect("a group has a segment").1;
        let cleaned = self
            .dir
            .join(format!("{}-{}.cleaned", segment::file_stem(base), end));
        let out = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .buffered_open(&cleaned)
            .await
            .map_err(io_err)?;
        let mut writer = Writer {
            file: &out,
            pos: 0,
            buf: Vec::with_capacity(WRITE_CHUNK_BYTES),
        };
        let mut overtaken = false;
        'group: for (seg, _) in group {
            pass.stats.size_before += seg.written_bytes.get();
            pass.arrived_ms = seg.created_ms;
            let mut walk = BatchWalk::new(seg.reader().await?, 0, seg.written_bytes.get());
            while let Some(b) = walk.next().await? {
                let whole = walk.whole(&b).await?;
                pass.stats.bytes_read += whole.len() as u64;
                let kept = pass
                    .clean_batch(b.prefix, whole)
                    .map_err(|e| self.stored_damage(seg, &e))?;
                match kept {
                    Kept::All => writer.put(whole).await?,
                    Kept::Some(bytes) => writer.put(&bytes).await?,
                    Kept::None => {}
                }
                throttle.spend(b.prefix.len as u64).await;
                if self.pass_overtaken(gen) {
                    overtaken = true;
                    break 'group;
                }
            }
        }
        if !overtaken {
            writer.flush().await?;
        }
        let written = writer.pos;
        drop(writer);
        if !overtaken {
            out.fdatasync().await.map_err(io_err)?;
        }
        out.close().await.map_err(io_err)?;
        throttle.spend(written).await;

        // The swap, with the layout still as the pass found it.
        let _layout = self.layout_lock.lock().await;
        if overtaken || self.pass_overtaken(gen) {
            segment::remove_quietly(&cleaned).await;
            return Ok(false);
        }
        pass.stats.size_after += written;
        pass.stats.segments_after += 1;
        // The old segments' readers stay open, so reads already holding them finish.
        for (seg, _) in group {
            seg.reader().await?;
        }
        let swap = self
            .dir
            .join(format!("{}-{}.swap", segment::file_stem(base), end));
        rename(&cleaned, &swap).await?;
        sync_dir(&self.dir).await?;
        remove_group(&self.dir, base, end).await?;
        let created = group.iter().map(|(s, _)| s.created_ms).max().unwrap_or(0);
        let seg = Rc::new(Segment::new(&self.dir, base, created));
        seg.gaps_allowed.set(true);
        seg.sealed.set(true);
        rename(&swap, &seg.log_path()).await?;
        sync_dir(&self.dir).await?;
        seg.written_bytes.set(written);
        seg.build_indexes(self.cfg().index_interval_bytes).await?;
        {
            let mut st = self.st.borrow_mut();
            for (old, _) in group {
                st.segments.remove(&old.base_offset);
            }
            st.segments.insert(base, seg.clone());
        }
        // Cached batches of the group hold records that may be gone now.
        self.cache
            .borrow_mut()
            .retain(|e| e.next_offset <= base || e.base_offset >= end);
        let mine: Vec<AbortedTxn> = self
            .aborted
            .borrow()
            .iter()
            .filter(|a| a.last_offset >= base && a.last_offset < end)
            .filter(|a| !pass.dropped_markers.contains(&a.last_offset))
            .copied()
            .collect();
        if !mine.is_empty() {
            write_durably(seg.txn_index_path(), AbortedTxn::encode_all(&mine)).await?;
        }
        tracing::debug!(topic = %self.topic, partition = self.index, base, end,
            segments = group.len(), bytes = written, "cleaned segments");
        Ok(true)
    }
}

/// What a pass keeps of one batch.
enum Kept {
    All,
    Some(Vec<u8>),
    None,
}

/// The decisions of one pass, carried across its groups (in offset order).
struct GroupPass<'a> {
    now: i64,
    start: i64,
    delete_retention_ms: i64,
    map: &'a HashMap<u128, i64>,
    aborted: &'a Aborted,
    /// Each producer's last batch (base offset): kept even when none of its records are.
    last_batches: &'a HashMap<i64, i64>,
    /// When the segment being cleaned was created: a tombstone counts as arrived no earlier
    /// (a record's own CreateTime may be old, and its delete.retention.ms starts when the
    /// broker has it).
    arrived_ms: i64,
    /// The earliest time a tombstone or marker kept by this pass may go.
    next_due: &'a mut Option<i64>,
    /// Producers whose open transaction (in offset order) kept a record.
    txn_has_data: &'a mut HashMap<i64, bool>,
    /// Offsets of the abort markers dropped (their aborted-transaction entries go too).
    dropped_markers: &'a mut Vec<i64>,
    stats: &'a mut CleanStats,
}

impl GroupPass<'_> {
    /// Whether a tombstone or marker with timestamp `ts` is past delete.retention.ms; when
    /// not, notes when it will be.
    fn expired(&mut self, ts: i64) -> bool {
        let due = ts
            .max(self.arrived_ms)
            .saturating_add(self.delete_retention_ms);
        if due < self.now {
            return true;
        }
        *self.next_due = Some(self.next_due.map_or(due, |d| d.min(due)));
        false
    }

    fn clean_batch(&mut self, prefix: batch::BatchPrefix, whole: &[u8]) -> Result<Kept, String> {
        if prefix.next_offset() <= self.start {
            return Ok(Kept::None);
        }
        let attrs = batch::be_i16(whole, batch::OFF_ATTRIBUTES);
        let pid = batch::be_i64(whole, batch::OFF_PRODUCER_ID);
        let transactional = attrs & batch::ATTR_TRANSACTIONAL != 0;
        if attrs & batch::ATTR_CONTROL != 0 {
            // A marker goes once its transaction kept no record and delete.retention.ms has
            // passed (a read_committed consumer behind it still needs to see it until then).
            let had_data = self.txn_has_data.remove(&pid).unwrap_or(false);
            let ts = batch::be_i64(whole, batch::OFF_MAX_TIMESTAMP);
            if !had_data && self.expired(ts) {
                if batch::control_marker(whole) == Some(false) {
                    self.dropped_markers.push(prefix.base_offset);
                }
                return Ok(Kept::None);
            }
            return Ok(Kept::All);
        }
        let count = batch::be_i32(whole, batch::OFF_RECORDS_COUNT);
        let producers_last = pid >= 0 && self.last_batches.get(&pid) == Some(&prefix.base_offset);
        if transactional && self.aborted.contains(pid, prefix.base_offset) {
            self.stats.records_dropped += count.max(0) as u64;
            return Ok(if producers_last {
                Kept::Some(records::rebuild(whole, &[])?)
            } else {
                Kept::None
            });
        }
        let body = records::body(whole)?;
        let all = records::parse(&body, count, prefix.last_offset_delta)?;
        let header = &whole[..batch::HEADER_BYTES];
        let mut kept: Vec<records::RawRecord<'_>> = Vec::with_capacity(all.len());
        for r in &all {
            let offset = prefix.base_offset + r.offset_delta;
            // A keyless record has no place in a compacted log (Kafka drops them too).
            let Some(k) = r.key else { continue };
            if offset < self.start {
                continue;
            }
            let latest = self.map.get(&key_hash(k)).is_none_or(|&o| o <= offset);
            if latest && !(r.value_is_null && self.expired(record_ts(header, r))) {
                kept.push(*r);
            }
        }
        self.stats.records_kept += kept.len() as u64;
        self.stats.records_dropped += (all.len() - kept.len()) as u64;
        if !kept.is_empty() && transactional {
            self.txn_has_data.insert(pid, true);
        }
        Ok(if kept.len() == all.len() {
            Kept::All
        } else if kept.is_empty() && !producers_last {
            Kept::None
        } else {
            Kept::Some(records::rebuild(whole, &kept)?)
        })
    }
}

/// Cleaned bytes on their way to the `.cleaned` file, written a chunk at a time.
struct Writer<'a> {
    file: &'a BufferedFile,
    pos: u64,
    buf: Vec<u8>,
}

impl Writer<'_> {
    async fn put(&mut self, bytes: &[u8]) -> Result<(), KafkaError> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= WRITE_CHUNK_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), KafkaError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let bytes = std::mem::replace(&mut self.buf, Vec::with_capacity(WRITE_CHUNK_BYTES));
        let len = bytes.len();
        let n = self.file.write_at(bytes, self.pos).await.map_err(io_err)?;
        if n != len {
            return Err(io_err(format!(
                "short write of a cleaned segment: {n} of {len}"
            )));
        }
        self.pos += len as u64;
        Ok(())
    }
}

async fn rename(from: &Path, to: &Path) -> Result<(), KafkaError> {
    let (from, to) = (from.to_path_buf(), to.to_path_buf());
    glommio::executor()
        .spawn_blocking(move || std::fs::rename(from, to))
        .await
        .map_err(io_err)
}

/// Deletes what a swap replaces: every segment based in (base, end), and the indexes of the
/// one at `base` (its `.log` is replaced by the rename that follows). Durable on return.
async fn remove_group(dir: &Path, base: i64, end: i64) -> Result<(), KafkaError> {
    let dir = dir.to_path_buf();
    glommio::executor()
        .spawn_blocking(move || remove_group_blocking(&dir, base, end))
        .await
        .map_err(io_err)
}

fn remove_group_blocking(dir: &Path, base: i64, end: i64) -> std::io::Result<()> {
    let gone = |p: PathBuf| match std::fs::remove_file(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    };
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        let Some((stem, ext)) = name.split_once('.') else {
            continue;
        };
        if !matches!(ext, "log" | "index" | "timeindex" | "txnindex") {
            continue;
        }
        let Ok(b) = stem.parse::<i64>() else { continue };
        if b > base && b < end {
            gone(dir.join(name.as_ref()))?;
        }
    }
    for ext in ["index", "timeindex", "txnindex"] {
        gone(dir.join(format!("{}.{ext}", segment::file_stem(base))))?;
    }
    std::fs::File::open(dir)?.sync_all()
}

/// Start-up, before the segments are listed: a `.cleaned` file (a pass cut short before its
/// commit point) is deleted; a `.swap` file (cut short after it) replaces the segments of its
/// range, as the pass would have. Blocking: called from `spawn_blocking`.
pub(super) fn finish_swaps(dir: &Path) -> std::io::Result<()> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut swaps = Vec::new();
    for entry in rd {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".cleaned") {
            tracing::warn!(file = %entry.path().display(), "deleting an unfinished cleaned segment");
            std::fs::remove_file(entry.path())?;
        } else if let Some(stem) = name.strip_suffix(".swap") {
            let range = stem
                .split_once('-')
                .and_then(|(b, e)| Some((b.parse::<i64>().ok()?, e.parse::<i64>().ok()?)));
            if let Some((base, end)) = range {
                swaps.push((base, end, entry.path()));
            }
        }
    }
    for (base, end, path) in swaps {
        tracing::warn!(file = %path.display(), "completing an interrupted segment swap");
        remove_group_blocking(dir, base, end)?;
        std::fs::rename(&path, dir.join(format!("{}.log", segment::file_stem(base))))?;
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
