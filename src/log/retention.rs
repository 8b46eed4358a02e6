//! Retention: whole old segments deleted by time or size, never the active one, and idle
//! producer ids forgotten.
//!
//! Invariants: `log_start_offset` only grows and stays at a segment's base offset; the
//! aborted transactions kept are those whose marker is still in the log.

use super::partition::Partition;
use super::segment;
use crate::protocol::errors::KafkaError;
use crate::util::now_ms;

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
            if count <= 1 {
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
            let next_base = {
                let mut st = self.st.borrow_mut();
                st.segments.remove(&oldest.base_offset);
                let nb = st.segments.keys().next().copied().expect("active remains");
                st.log_start_offset = st.log_start_offset.max(nb);
                nb
            };
            tracing::info!(topic = %self.topic, partition = self.index, base = oldest.base_offset,
                next_base, by_time, by_size, "retention deleted segment");
            self.aborted
                .borrow_mut()
                .retain(|a| a.last_offset >= next_base);
            // In memory only: the checkpoint is written under the append lock, and recovery
            // cuts its entries below the log start the same way.
            self.epochs.borrow_mut().truncate_from_start(next_base);
            for path in [
                oldest.log_path(),
                oldest.index_path(),
                oldest.time_index_path(),
                oldest.txn_index_path(),
            ] {
                segment::remove_quietly(&path).await;
            }
        }
    }
}
