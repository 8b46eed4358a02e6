//! Consumer group coordinator (Kafka's classic group protocol).
//!
//! The coordinator of group `g` runs on the shard that owns partition `hash(g) % P` of the
//! internal `__consumer_offsets` topic; every other shard forwards group requests there over the
//! mesh. Committed offsets are records in that partition (Kafka's key v1 / value v3 layout), so
//! they survive restarts and kill -9 like any data; the shard replays them when it opens the
//! partition. Group membership itself is kept in memory: after a broker restart members rejoin
//! (their heartbeats get UNKNOWN_MEMBER_ID), as after a Kafka coordinator move.
//!
//! States follow Kafka: Empty, PreparingRebalance, CompletingRebalance, Stable, Dead.

pub mod offsets;
pub mod state;

pub use crate::metadata::OFFSETS_TOPIC;
pub use state::{Coordinator, GroupReq, GroupResp};

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Group deadlines (sessions, rebalances) are checked this often.
const GROUP_TICK_MS: u64 = 100;
/// Committed offsets of empty groups are checked for expiry every this many ticks (a minute).
const EXPIRE_EVERY_TICKS: u64 = 600;

impl Coordinator {
    /// Start-up on this shard: load the committed offsets of the `__consumer_offsets`
    /// partitions it owns; from then on commit markers there complete the transactional
    /// offsets they cover, and the group timer runs.
    pub async fn start(self: &Rc<Self>, stop: Arc<AtomicBool>) -> Result<usize, String> {
        let n = self.load_owned().await?;
        let me = Rc::downgrade(self);
        self.partitions().on_marker(
            OFFSETS_TOPIC,
            Box::new(move |pid, commit| {
                if let Some(c) = me.upgrade() {
                    c.complete_txn(pid, commit);
                }
            }),
        );
        let c = self.clone();
        glommio::spawn_local(async move {
            let mut ticks = 0u64;
            while !stop.load(Ordering::Relaxed) {
                glommio::timer::sleep(Duration::from_millis(GROUP_TICK_MS)).await;
                c.tick();
                ticks += 1;
                if ticks.is_multiple_of(EXPIRE_EVERY_TICKS) {
                    c.expire_offsets().await;
                }
            }
        })
        .detach();
        Ok(n)
    }
}
