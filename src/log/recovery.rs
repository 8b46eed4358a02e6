//! Start-up: recovery of the newest segment (every batch after its last index entry validated,
//! a torn or corrupt tail cut), producer state rebuilt from the newest valid snapshot and the
//! batches after it, producer snapshots written at segment seals and shutdown, and the listing of
//! a partition directory's numbered files.
//!
//! Invariants (asserted): after recovery `next_offset` is the end of the last valid batch of
//! the newest segment and the durable offset equals it; the batches recovery validated, walked
//! again by the producer rebuild, have increasing offsets (a cleaned log has gaps) and end at
//! `next_offset` (or below it, at a gap a follower's truncation cut).

use super::disk::LogFile;
use super::partition::{io_err, Partition, BLOCK_BYTES, MIN_WRITE_BUFFER_BYTES};
use super::producers::{self, AbortedTxn, BatchSeq, ProducerTable};
use super::segment::{self, Segment};
use super::walker::{LogWalk, WalkFrom};
use crate::protocol::batch;
use crate::protocol::errors::KafkaError;
use crate::util::{align_down, now_ms};
use std::path::{Path, PathBuf};
use std::rc::Rc;

impl Partition {
    /// Recovers the newest segment (or creates the first) and sets the partition's offsets and
    /// write position from it. Returns the position in the newest segment from which recovery
    /// validated every batch.
    pub(super) async fn recover(&self) -> Result<u64, KafkaError> {
        let newest = self.st.borrow().segments.values().next_back().cloned();
        let mut validated_from = 0;
        let seg = match newest {
            Some(seg) => {
                validated_from = seg.recover(self.cfg().index_interval_bytes).await?;
                tracing::debug!(topic = %self.topic, partition = self.index,
                    end = seg.written_bytes.get(), next = seg.written_next_offset.get(), "recovered");
                seg
            }
            None => {
                glommio::executor()
                    .spawn_blocking({
                        let d = self.dir.clone();
                        move || std::fs::create_dir_all(d)
                    })
                    .await
                    .map_err(io_err)?;
                let seg = self.new_segment(0);
                self.st.borrow_mut().segments.insert(0, seg.clone());
                seg
            }
        };
        let writer = self.open_writer(&seg).await?;
        self.activate(&seg, writer).await?;
        let end = seg.written_bytes.get();
        let first = self
            .st
            .borrow()
            .segments
            .keys()
            .next()
            .copied()
            .unwrap_or(0);
        let next = self.st.borrow().next_offset;
        let start = self.saved_log_start(first, next).await;
        let mut st = self.st.borrow_mut();
        st.log_start_offset = start;
        // Recovery's scan moves the end only by whole batches, each ending past its base.
        let next = st.next_offset;
        assert!(
            next >= seg.base_offset && (end == 0) == (next == seg.base_offset),
            "{}-{}: recovered segment {} ends at byte {end} and offset {next}",
            self.topic,
            self.index,
            seg.base_offset
        );
        assert!(
            st.log_start_offset <= next,
            "{}-{}: log start {} past the recovered log end {next}",
            self.topic,
            self.index,
            st.log_start_offset
        );
        Ok(validated_from)
    }

    /// Makes `seg`, the newest segment, recovered (or just cut) up to its `written_bytes`,
    /// the active one: appends continue at its end through `writer`, everything in it counts
    /// as durable, and its last partial block is kept in memory for the next aligned write.
    pub(super) async fn activate(
        &self,
        seg: &Rc<Segment>,
        writer: Rc<LogFile>,
    ) -> Result<(), KafkaError> {
        let end = seg.written_bytes.get();
        let tail_pos = align_down(end, BLOCK_BYTES);
        let tail = if end > tail_pos {
            let r = seg.reader().await?;
            segment::read_at(&r, tail_pos, (end - tail_pos) as usize).await?
        } else {
            Vec::new()
        };
        let mut st = self.st.borrow_mut();
        st.next_offset = seg.written_next_offset.get();
        st.durable_offset = st.next_offset;
        st.synced_offset = st.next_offset;
        st.appended_bytes = end;
        st.tail_pos = tail_pos;
        st.tail = tail;
        st.writer = Some(writer);
        st.open_buf = None;
        st.buf_capacity = MIN_WRITE_BUFFER_BYTES;
        Ok(())
    }

    fn snapshot_path(&self, offset: i64) -> PathBuf {
        self.dir
            .join(format!("{}.snapshot", segment::file_stem(offset)))
    }

    /// Writes the producer snapshot for `offset` (temp file, fsync, rename) and keeps only the
    /// two newest.
    pub(super) async fn write_snapshot(
        &self,
        offset: i64,
        bytes: Vec<u8>,
    ) -> Result<(), KafkaError> {
        write_durably(self.snapshot_path(offset), bytes).await?;
        let dir = self.dir.clone();
        glommio::executor()
            .spawn_blocking(move || -> std::io::Result<()> {
                let mut snaps = list_snapshots(&dir)?;
                snaps.sort();
                let keep = snaps.len().saturating_sub(2);
                for (_, old) in &snaps[..keep] {
                    let _ = std::fs::remove_file(old);
                }
                Ok(())
            })
            .await
            .map_err(io_err)
    }

    /// Producer state at start-up: the newest valid snapshot at or below the log end, then the
    /// headers of every batch after it.
    /// `validated_from` is where recovery started validating the newest segment.
    pub(super) async fn rebuild_producers(&self, validated_from: u64) -> Result<(), KafkaError> {
        let end = self.st.borrow().next_offset;
        let start = self.st.borrow().log_start_offset;
        let dir = self.dir.clone();
        let snaps = glommio::executor()
            .spawn_blocking(move || list_snapshots(&dir))
            .await
            .map_err(io_err)?;
        let mut table = ProducerTable::default();
        let mut from = start;
        let mut by_offset = snaps;
        by_offset.sort();
        for (off, path) in by_offset.iter().rev() {
            if *off > end {
                // Written for data that did not survive (a torn tail was cut): stale.
                segment::remove_quietly(path).await;
                continue;
            }
            let data = glommio::executor()
                .spawn_blocking({
                    let path = path.clone();
                    move || std::fs::read(path)
                })
                .await
                .ok()
                .and_then(|b| ProducerTable::decode(&b));
            if let Some(t) = data {
                table = t;
                from = (*off).max(start);
                break;
            }
        }
        // Aborted transactions below the snapshot come from the sealed segments' indexes; the
        // ones after it are found again by the replay.
        let mut aborted: Vec<AbortedTxn> = Vec::new();
        let sealed: Vec<Rc<Segment>> = self
            .st
            .borrow()
            .segments
            .range(..from)
            .map(|(_, s)| s.clone())
            .collect();
        // (The active segment is included: a clean shutdown indexes it, see `close`.)
        for seg in sealed {
            let path = seg.txn_index_path();
            let data = glommio::executor()
                .spawn_blocking(move || match std::fs::read(&path) {
                    Ok(b) => Ok(Some(b)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(e),
                })
                .await
                .map_err(io_err)?;
            if let Some(b) = data {
                let list = AbortedTxn::decode_all(&b).ok_or_else(|| {
                    io_err(format!("{} is corrupt", seg.txn_index_path().display()))
                })?;
                aborted.extend(list.into_iter().filter(|a| a.last_offset < from));
            }
        }
        // Replay producer batches and markers after the snapshot.
        let newest = self.st.borrow().segments.keys().next_back().copied();
        let mut walk = LogWalk::new(
            self.segments_from(from),
            WalkFrom::Offset(from),
            self.cfg().index_interval_bytes,
        );
        while let Some((seg, mut batches)) = walk.next_segment().await? {
            // Paired with recovery's validation: the newest segment's batches from
            // `validated_from` on were checked there, so once this walk is at one of them the
            // rest must follow back to back and end at the log end (a bug in the walk or in
            // recovery if not). Older segments are trusted from their index: damage there is
            // not a bug, so no assertion.
            let checked = Some(seg.base_offset) == newest;
            let mut first_batch = true;
            let mut expect: Option<i64> = None;
            while let Some(b) = batches.next().await? {
                if checked
                    && (expect.is_some()
                        || b.pos == validated_from
                        || (first_batch && b.pos > validated_from))
                {
                    if let Some(e) = expect {
                        assert!(
                            b.prefix.base_offset >= e,
                            "{}-{}: recovered batch at {} has base offset {}, expected {e}",
                            self.topic,
                            self.index,
                            b.pos,
                            b.prefix.base_offset
                        );
                    }
                    expect = Some(b.prefix.next_offset());
                }
                first_batch = false;
                let h = batches.header(&b);
                if h.len() < batch::HEADER_BYTES {
                    break;
                }
                let attrs = batch::be_i16(h, batch::OFF_ATTRIBUTES);
                let pid = batch::be_i64(h, batch::OFF_PRODUCER_ID);
                let epoch = batch::be_i16(h, batch::OFF_PRODUCER_EPOCH);
                let max_ts = batch::be_i64(h, batch::OFF_MAX_TIMESTAMP);
                let first_seq = batch::be_i32(h, batch::OFF_BASE_SEQUENCE);
                let prefix = b.prefix;
                if attrs & batch::ATTR_CONTROL != 0 {
                    // Control batches are read whole (their record says commit or abort).
                    let whole = batches.whole(&b).await?;
                    if whole.len() < prefix.len {
                        break;
                    }
                    if prefix.base_offset >= from && pid >= 0 {
                        if let Some(commit) = batch::control_marker(whole) {
                            let first = table.end_txn(pid, epoch);
                            table.touch(pid, max_ts);
                            if let (false, Some(first_offset)) = (commit, first) {
                                aborted.push(AbortedTxn {
                                    producer_id: pid,
                                    first_offset,
                                    last_offset: prefix.base_offset,
                                });
                            }
                        }
                    }
                } else if prefix.base_offset >= from && pid >= 0 {
                    table.touch(pid, max_ts);
                    table.record(
                        pid,
                        epoch,
                        BatchSeq {
                            first_seq,
                            last_seq: if first_seq >= 0 {
                                producers::last_seq(first_seq, prefix.last_offset_delta)
                            } else {
                                -1
                            },
                            base_offset: prefix.base_offset,
                            last_offset: prefix.next_offset() - 1,
                        },
                        attrs & batch::ATTR_TRANSACTIONAL != 0,
                    );
                }
            }
            if let Some(e) = expect {
                // Below the end only after a cut at a gap (see `Segment::truncate_to`).
                assert!(
                    e <= end,
                    "{}-{}: recovered batches end at offset {e}, the log end is {end}",
                    self.topic,
                    self.index
                );
            }
        }
        *self.producers.borrow_mut() = table;
        *self.aborted.borrow_mut() = aborted;
        Ok(())
    }
}

/// (number, entry) of the files named `<number><suffix>` in a partition directory; none when
/// the directory does not exist yet.
fn numbered_files(dir: &Path, suffix: &str) -> std::io::Result<Vec<(i64, std::fs::DirEntry)>> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in rd {
        let entry = entry?;
        let name = entry.file_name();
        let number = name
            .to_string_lossy()
            .strip_suffix(suffix)
            .and_then(|stem| stem.parse::<i64>().ok());
        if let Some(n) = number {
            out.push((n, entry));
        }
    }
    Ok(out)
}

/// (base offset, size, mtime ms) of each `.log` file in a partition directory, by base offset.
pub(super) fn list_segments(dir: &Path) -> std::io::Result<Vec<(i64, u64, i64)>> {
    let mut out = Vec::new();
    for (base, entry) in numbered_files(dir, ".log")? {
        let md = entry.metadata()?;
        let mtime = md
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as i64)
            .unwrap_or_else(now_ms);
        out.push((base, md.len(), mtime));
    }
    out.sort();
    Ok(out)
}

/// (offset, path) of the `.snapshot` files of a partition directory.
pub(super) fn list_snapshots(dir: &Path) -> std::io::Result<Vec<(i64, PathBuf)>> {
    Ok(numbered_files(dir, ".snapshot")?
        .into_iter()
        .map(|(off, entry)| (off, entry.path()))
        .collect())
}

/// Writes a small file whole and durably (temp file, fsync, rename).
pub(super) async fn write_durably(path: PathBuf, bytes: Vec<u8>) -> Result<(), KafkaError> {
    glommio::executor()
        .spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write;
            let mut tmp = path.clone().into_os_string();
            tmp.push(".tmp");
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        })
        .await
        .map_err(io_err)
}
