//! Retention: whole old segments deleted by time or size, never the active one, and idle
//! producer ids forgotten. DeleteRecords: the log start moved to any offset up to the durable
//! end, and persisted.
//!
//! Invariants: `log_start_offset` only grows; retention keeps it at a segment's base offset,
//! DeleteRecords may put it inside a segment (the `log-start-offset` file keeps it across a
//! restart). The aborted transactions kept are those whose marker is still in the log.

use super::partition::Partition;
use super::recovery::write_durably;
use super::segment;
use crate::protocol::errors::{ErrorCode, KafkaError};
use crate::util::now_ms;

/// The file in a partition's directory that keeps a log start set by DeleteRecords.
pub(super) const LOG_START_FILE: &str = "log-start-offset";

impl Partition {
    /// Deletes whole old segments past retention (time or size); never the active one.
    pub async fn enforce_retention(&self) -> Result<(), KafkaError> {
        // Never while `truncate_to` cuts segments.
        let _layout = self.layout_lock.lock().await;
        let now = now_ms();
        let expired = self
            .producers
            .borrow_mut()
            .expire(now, self.cfg().producer_id_expiration_ms);
        if expired > 0 {
            tracing::debug!(topic = %self.topic, partition = self.index, expired,
                "forgot idle producer ids");
        }
        loop {
            let (oldest, count, total) = {
                let st = self.st.borrow();
                let total: u64 = st
                    .segments
                    .values()
                    .map(|s| s.written_bytes.get())
                    .sum::<u64>()
                    .max(st.appended_bytes);
                (
                    st.segments.values().next().cloned(),
                    st.segments.len(),
                    total,
                )
            };
            let Some(oldest) = oldest else { return Ok(()) };
            // cleanup.policy without `delete`: old segments stay (the cleaner compacts them).
            if count <= 1 || !self.cfg().delete_old_segments {
                return Ok(());
            }
            oldest.load_indexes(self.cfg().index_interval_bytes).await?;
            let newest_ts = if oldest.max_timestamp.get() >= 0 {
                oldest.max_timestamp.get()
            } else {
                oldest.created_ms
            };
            let by_time = self.cfg().retention_ms >= 0 && now - newest_ts > self.cfg().retention_ms;
            let by_size = self.cfg().retention_bytes >= 0
                && total.saturating_sub(oldest.written_bytes.get())
                    >= self.cfg().retention_bytes as u64;
            if !(by_time || by_size) {
                return Ok(());
            }
            let next_base = self.drop_oldest_segment().await;
            tracing::info!(topic = %self.topic, partition = self.index, base = oldest.base_offset,
                next_base, by_time, by_size, "retention deleted segment");
        }
    }

    /// Deletes the oldest segment (never the active one) and moves the log start to the
    /// next one's base if it was below; answers that base.
    async fn drop_oldest_segment(&self) -> i64 {
        self.layout_gen.set(self.layout_gen.get() + 1);
        let (oldest, next_base) = {
            let mut st = self.st.borrow_mut();
            let (_, oldest) = st.segments.pop_first().expect("a segment to drop");
            let nb = st.segments.keys().next().copied().expect("active remains");
            st.log_start_offset = st.log_start_offset.max(nb);
            (oldest, nb)
        };
        let start = self.log_start_offset();
        self.aborted.borrow_mut().retain(|a| a.last_offset >= start);
        // In memory only: the checkpoint is written under the append lock, and recovery
        // cuts its entries below the log start the same way.
        self.epochs.borrow_mut().truncate_from_start(start);
        for path in oldest.file_paths() {
            segment::remove_quietly(&path).await;
        }
        next_base
    }

    /// DeleteRecords (and a follower learning its leader's log start): records below
    /// `offset` are gone for readers at once, the segments wholly below it are deleted, and
    /// the new start is written durably first so a restart never brings them back. An
    /// offset at or below the log start changes nothing; past the durable end it is
    /// OFFSET_OUT_OF_RANGE (the caller bounds it by the high watermark). Answers the log
    /// start (Kafka's low watermark).
    pub async fn delete_records_before(&self, offset: i64) -> Result<i64, KafkaError> {
        let _layout = self.layout_lock.lock().await;
        if let Some(e) = self.failure() {
            return Err(e);
        }
        let start = self.log_start_offset();
        if offset <= start {
            return Ok(start);
        }
        let end = self.durable_offset();
        if offset > end {
            return Err(KafkaError::new(
                ErrorCode::OFFSET_OUT_OF_RANGE,
                format!("offset {offset} is past the log end {end}"),
            ));
        }
        write_durably(
            self.dir.join(LOG_START_FILE),
            offset.to_string().into_bytes(),
        )
        .await?;
        self.st.borrow_mut().log_start_offset = offset;
        self.layout_gen.set(self.layout_gen.get() + 1);
        loop {
            let whole_below = {
                let st = self.st.borrow();
                let mut bases = st.segments.keys();
                let _oldest = bases.next();
                bases.next().is_some_and(|&next| next <= offset)
            };
            if !whole_below {
                break;
            }
            let next_base = self.drop_oldest_segment().await;
            tracing::info!(topic = %self.topic, partition = self.index, next_base,
                "DeleteRecords deleted a segment");
        }
        // What start-dependent state keeps (aborted transactions, epochs) follows the start.
        self.aborted
            .borrow_mut()
            .retain(|a| a.last_offset >= offset);
        self.epochs.borrow_mut().truncate_from_start(offset);
        tracing::info!(topic = %self.topic, partition = self.index, offset, "log start moved");
        Ok(offset)
    }

    /// The log start DeleteRecords set, if its file is there and names an offset inside
    /// [from, to] (recovery: the segments alone say `from`).
    pub(super) async fn saved_log_start(&self, from: i64, to: i64) -> i64 {
        let path = self.dir.join(LOG_START_FILE);
        let text = glommio::executor()
            .spawn_blocking(move || std::fs::read_to_string(path).ok())
            .await;
        match text.and_then(|t| t.trim().parse::<i64>().ok()) {
            Some(v) if v > from && v <= to => v,
            Some(v) if v > to => {
                // Records below it were written but not synced and lost with the power:
                // none of them may come back, and nothing past the end exists to hide. The
                // file is brought down to the end, or records written from there on would
                // vanish at the next restart.
                tracing::warn!(topic = %self.topic, partition = self.index, saved = v, end = to,
                    "{LOG_START_FILE} is past the recovered log end; the log starts at its end");
                let path = self.dir.join(LOG_START_FILE);
                if let Err(e) = write_durably(path, to.to_string().into_bytes()).await {
                    tracing::error!(topic = %self.topic, partition = self.index,
                        "rewriting {LOG_START_FILE}: {e}");
                }
                to
            }
            _ => from,
        }
    }
}
