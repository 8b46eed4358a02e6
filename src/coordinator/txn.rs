//! Transaction coordinator.
//!
//! The coordinator of transactional id `t` runs on the shard that owns partition
//! `hash(t) % P` of the internal `__transaction_state` topic (the Java hash, as for groups).
//! Each change of a transaction's state is a record there (key: the transactional id; value:
//! producer id, epoch, timeout, state, partitions, timestamps), written durably before the
//! client hears of it; the shard replays the partition when it opens it.
//!
//! EndTxn persists PrepareCommit/PrepareAbort (the decision), writes a commit or abort marker
//! to every partition of the transaction (through their owning shards), then persists
//! CompleteCommit/CompleteAbort. A decision whose markers could not all be written stays in
//! Prepare and the coordinator's tick finishes it, as it does after a restart. The tick also
//! aborts transactions open longer than their timeout, bumping the epoch so the producer is
//! fenced. A new producer with the same transactional id (InitProducerId) aborts what the old
//! one left open and fences it the same way.

use super::group::offsets::{get_str, put_str};
use crate::config::Config;
use crate::controller::Controller;
use crate::metadata::MetadataImage;
use crate::partition_manager::PartitionManager;
use crate::protocol::batch::encode_records;
use crate::protocol::errors::ErrorCode;
use crate::shard::{local, Shard};
use crate::util::Clock;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use crate::metadata::TXN_TOPIC;

/// Most transactional ids one coordinator shard keeps (each costs its state and its lock).
/// Ids idle past `transactional_id_expiration_ms` are forgotten, so this bounds the ids in use
/// within that time. InitProducerId for a new id past it answers POLICY_VIOLATION, which
/// clients report as a fatal error naming the cause.
pub const MAX_TRANSACTIONAL_IDS: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnState {
    Empty = 0,
    Ongoing = 1,
    PrepareCommit = 2,
    PrepareAbort = 3,
    CompleteCommit = 4,
    CompleteAbort = 5,
}

impl TxnState {
    /// The state's name as ListTransactions and DescribeTransactions give it.
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
        }
    }

    /// Every state's name (what a ListTransactions state filter may name).
    pub const NAMES: [&'static str; 6] = [
        "Empty",
        "Ongoing",
        "PrepareCommit",
        "PrepareAbort",
        "CompleteCommit",
        "CompleteAbort",
    ];

    fn from_i8(v: i8) -> Option<TxnState> {
        Some(match v {
            0 => TxnState::Empty,
            1 => TxnState::Ongoing,
            2 => TxnState::PrepareCommit,
            3 => TxnState::PrepareAbort,
            4 => TxnState::CompleteCommit,
            5 => TxnState::CompleteAbort,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMeta {
    pub producer_id: i64,
    pub epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: BTreeSet<(String, i32)>,
    pub start_ms: i64,
    pub update_ms: i64,
}

pub fn encode_key(txn_id: &str) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    put_str(&mut b, txn_id);
    b.freeze()
}

pub fn decode_key(mut b: Bytes) -> Option<String> {
    if b.remaining() < 2 || b.get_i16() != 0 {
        return None;
    }
    get_str(&mut b)
}

/// Value v0: `i16 0, i64 pid, i16 epoch, i32 timeout, i8 state, [topic, [partition]],
/// i64 update time, i64 start time` (Kafka's field order).
pub fn encode_value(m: &TxnMeta) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    b.put_i64(m.producer_id);
    b.put_i16(m.epoch);
    b.put_i32(m.timeout_ms);
    b.put_i8(m.state as i8);
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in &m.partitions {
        by_topic.entry(t).or_default().push(*p);
    }
    b.put_i32(by_topic.len() as i32);
    for (t, ps) in by_topic {
        put_str(&mut b, t);
        b.put_i32(ps.len() as i32);
        for p in ps {
            b.put_i32(p);
        }
    }
    b.put_i64(m.update_ms);
    b.put_i64(m.start_ms);
    b.freeze()
}

pub fn decode_value(mut b: Bytes) -> Option<TxnMeta> {
    if b.remaining() < 17 || b.get_i16() != 0 {
        return None;
    }
    let producer_id = b.get_i64();
    let epoch = b.get_i16();
    let timeout_ms = b.get_i32();
    let state = TxnState::from_i8(b.get_i8())?;
    if b.remaining() < 4 {
        return None;
    }
    let n = b.get_i32();
    let mut partitions = BTreeSet::new();
    for _ in 0..n.max(0) {
        let t = get_str(&mut b)?;
        if b.remaining() < 4 {
            return None;
        }
        let k = b.get_i32();
        if k < 0 || b.remaining() < 4 * k as usize {
            return None;
        }
        for _ in 0..k {
            partitions.insert((t.clone(), b.get_i32()));
        }
    }
    if b.remaining() < 16 {
        return None;
    }
    Some(TxnMeta {
        producer_id,
        epoch,
        timeout_ms,
        state,
        partitions,
        update_ms: b.get_i64(),
        start_ms: b.get_i64(),
    })
}

/// A producer's claim on a transactional id, as AddPartitionsToTxn, AddOffsetsToTxn and
/// EndTxn make it. `fenced` is the error an old epoch gets at the request's version
/// (PRODUCER_FENCED, or INVALID_PRODUCER_EPOCH for old clients).
pub struct TxnClaim {
    pub txn_id: String,
    pub producer_id: i64,
    pub epoch: i16,
    pub fenced: ErrorCode,
}

/// What InitProducerId hands a transactional producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerIdAndEpoch {
    pub producer_id: i64,
    pub epoch: i16,
}

/// The coordinator of the transactional ids whose `__transaction_state` partition this shard
/// owns.
pub struct Coordinator {
    shard: Rc<Shard>,
    config: Rc<Config>,
    image: Rc<MetadataImage>,
    partitions: Rc<PartitionManager>,
    controller: Rc<Controller>,
    clock: Rc<dyn Clock>,
    txns: RefCell<HashMap<String, TxnMeta>>,
    /// One operation at a time per transactional id (they span several writes).
    locks: RefCell<HashMap<String, Rc<glommio::sync::Semaphore>>>,
    /// `__transaction_state` partitions being loaded: their ids answer
    /// COORDINATOR_LOAD_IN_PROGRESS meanwhile.
    loading: RefCell<BTreeSet<i32>>,
}

impl Coordinator {
    pub fn new(
        shard: Rc<Shard>,
        config: Rc<Config>,
        image: Rc<MetadataImage>,
        partitions: Rc<PartitionManager>,
        controller: Rc<Controller>,
        clock: Rc<dyn Clock>,
    ) -> Rc<Self> {
        Rc::new(Coordinator {
            shard,
            config,
            image,
            partitions,
            controller,
            clock,
            txns: RefCell::new(HashMap::new()),
            locks: RefCell::new(HashMap::new()),
            loading: RefCell::new(BTreeSet::new()),
        })
    }

    /// The shard coordinating `txn_id` (see `MetadataImage::key_owner`).
    pub fn coordinator_shard(&self, txn_id: &str) -> Result<usize, ErrorCode> {
        self.image.key_owner(TXN_TOPIC, txn_id)
    }

    /// Runs `f` on the coordinator of `txn_id` (this shard's or another's), holding that
    /// id's lock there: one operation at a time per transactional id (they span several
    /// writes). COORDINATOR_NOT_AVAILABLE when it cannot be reached.
    async fn on_txn<T, F, Fut>(&self, txn_id: String, f: F) -> Result<T, ErrorCode>
    where
        T: Send + 'static,
        F: FnOnce(Rc<Coordinator>, String) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        let owner = self.coordinator_shard(&txn_id);
        super::on_owner(&self.shard, owner, |c: Rc<Coordinator>| async move {
            let lock = c.lock(&txn_id);
            let _turn = lock.acquire_permit(1).await.ok();
            if c.is_loading(&txn_id) {
                return Err(ErrorCode::COORDINATOR_LOAD_IN_PROGRESS);
            }
            Ok(f(c, txn_id).await)
        })
        .await
        .and_then(|r| r)
    }

    /// ListTransactions: the transactions every shard of this broker coordinates (ids of
    /// partitions still loading are left out), those in `states` (any, when empty), of
    /// `producer_ids` (any, when empty), open at least `min_duration_ms` (-1: any).
    pub async fn list(
        &self,
        states: Vec<String>,
        producer_ids: Vec<i64>,
        min_duration_ms: i64,
    ) -> Vec<(String, i64, &'static str)> {
        let mut out = Vec::new();
        for shard in 0..self.shard.nr_shards {
            let (states, pids) = (states.clone(), producer_ids.clone());
            let r = self
                .shard
                .invoke_on(shard, move || async move {
                    let c = local::<Coordinator>();
                    let now = c.clock.now_ms();
                    let txns = c.txns.borrow();
                    txns.iter()
                        .filter(|(id, m)| {
                            !c.is_loading(id)
                                && (states.is_empty() || states.iter().any(|s| s == m.state.name()))
                                && (pids.is_empty() || pids.contains(&m.producer_id))
                                && (min_duration_ms < 0
                                    || (m.state == TxnState::Ongoing
                                        && now - m.start_ms >= min_duration_ms))
                        })
                        .map(|(id, m)| (id.clone(), m.producer_id, m.state.name()))
                        .collect::<Vec<_>>()
                })
                .await;
            out.extend(r.unwrap_or_default());
        }
        out.sort();
        out
    }

    /// DescribeTransactions of one id, on its coordinator: NOT_COORDINATOR when this broker
    /// does not coordinate it, TRANSACTIONAL_ID_NOT_FOUND when it has no state.
    pub async fn describe(&self, txn_id: String) -> Result<TxnMeta, ErrorCode> {
        let owner = self.coordinator_shard(&txn_id);
        super::on_owner(&self.shard, owner, move |c: Rc<Coordinator>| async move {
            if c.is_loading(&txn_id) {
                return Err(ErrorCode::COORDINATOR_LOAD_IN_PROGRESS);
            }
            c.txns
                .borrow()
                .get(&txn_id)
                .cloned()
                .ok_or(ErrorCode::TRANSACTIONAL_ID_NOT_FOUND)
        })
        .await
        .and_then(|r| r)
    }

    /// InitProducerId for a transactional id: the id's producer id with its epoch bumped
    /// (fencing the previous producer), or a new one.
    pub async fn init_producer_id(
        &self,
        txn_id: String,
        timeout_ms: i32,
    ) -> Result<ProducerIdAndEpoch, ErrorCode> {
        self.on_txn(
            txn_id,
            move |c, id| async move { c.init(&id, timeout_ms).await },
        )
        .await?
    }

    /// AddPartitionsToTxn (and AddOffsetsToTxn, with the group's offsets partition).
    pub async fn add_partitions(
        &self,
        claim: TxnClaim,
        partitions: Vec<(String, i32)>,
    ) -> ErrorCode {
        let id = claim.txn_id.clone();
        self.on_txn(id, move |c, id| async move {
            c.add_partitions_local(
                &id,
                claim.producer_id,
                claim.epoch,
                partitions,
                claim.fenced,
            )
            .await
        })
        .await
        .unwrap_or_else(|e| e)
    }

    /// EndTxn: commit or abort.
    pub async fn end_txn(&self, claim: TxnClaim, commit: bool) -> ErrorCode {
        let id = claim.txn_id.clone();
        self.on_txn(id, move |c, id| async move {
            c.end(&id, claim.producer_id, claim.epoch, commit, claim.fenced)
                .await
        })
        .await
        .unwrap_or_else(|e| e)
    }

    /// Loads the transaction states of every `__transaction_state` partition this shard owns
    /// (at start-up, before any request or marker can reach them).
    pub async fn load_owned(&self) -> Result<usize, String> {
        let mut n = 0;
        for p in self.partitions.local_partitions_of(TXN_TOPIC) {
            n += self.load(p).await?;
        }
        Ok(n)
    }

    /// This broker started (or stopped) leading `__transaction_state` partition `p`: its
    /// transactional ids are forgotten and, when it leads, loaded again from the log; the
    /// tick then finishes the transactions that were decided but not completed.
    /// Requests for its ids answer COORDINATOR_LOAD_IN_PROGRESS until it is loaded.
    pub fn leadership_changed(self: &Rc<Self>, p: i32, leads: bool) {
        let Some(n) = self.image.partition_count(TXN_TOPIC) else {
            return;
        };
        self.txns
            .borrow_mut()
            .retain(|id, _| crate::metadata::key_partition(id, n) != p);
        if !leads {
            return;
        }
        self.loading.borrow_mut().insert(p);
        let c = self.clone();
        glommio::spawn_local(async move {
            match c.load(p).await {
                Ok(n) => {
                    tracing::info!(partition = p, records = n, "transaction coordinator loaded")
                }
                Err(e) => tracing::error!(partition = p, "loading transaction states: {e}"),
            }
            c.loading.borrow_mut().remove(&p);
        })
        .detach();
    }

    fn is_loading(&self, txn_id: &str) -> bool {
        let loading = self.loading.borrow();
        !loading.is_empty()
            && self
                .image
                .partition_count(TXN_TOPIC)
                .is_some_and(|n| loading.contains(&crate::metadata::key_partition(txn_id, n)))
    }

    /// Start-up on this shard, after `load_owned`: the timer that aborts timed-out
    /// transactions and finishes decided ones.
    pub fn start(self: &Rc<Self>, stop: Arc<AtomicBool>) {
        let c = self.clone();
        glommio::spawn_local(async move {
            let every = Duration::from_millis(c.config.transaction_abort_check_interval_ms);
            while !stop.load(Ordering::Relaxed) {
                glommio::timer::sleep(every).await;
                c.tick().await;
            }
        })
        .detach();
    }

    /// Replays one `__transaction_state` partition: the newest record of each id wins.
    pub async fn load(&self, partition: i32) -> Result<usize, String> {
        let mut n = 0;
        self.partitions
            .local_scan(TXN_TOPIC, partition, |b| {
                let mut bytes = Bytes::copy_from_slice(b);
                let Ok(sets) = kafka_protocol::records::RecordBatchDecoder::decode_all(&mut bytes)
                else {
                    return;
                };
                let mut txns = self.txns.borrow_mut();
                for r in sets.into_iter().flat_map(|s| s.records) {
                    let Some(id) = r.key.and_then(decode_key) else {
                        continue;
                    };
                    match r.value.and_then(decode_value) {
                        Some(m) => txns.insert(id, m),
                        None => txns.remove(&id),
                    };
                    n += 1;
                }
            })
            .await
            .map_err(|e| e.message)?;
        Ok(n)
    }

    fn lock(&self, txn_id: &str) -> Rc<glommio::sync::Semaphore> {
        self.locks
            .borrow_mut()
            .entry(txn_id.to_string())
            .or_insert_with(|| Rc::new(glommio::sync::Semaphore::new(1)))
            .clone()
    }

    /// Writes a state durably, then makes it the current one.
    async fn persist(&self, txn_id: &str, m: TxnMeta) -> ErrorCode {
        self.write_state(txn_id, Some(m)).await
    }

    /// Writes a state (or, None, a tombstone that forgets the id) durably, then makes it the
    /// current one.
    async fn write_state(&self, txn_id: &str, m: Option<TxnMeta>) -> ErrorCode {
        let Some(n) = self.image.partition_count(TXN_TOPIC) else {
            return ErrorCode::COORDINATOR_NOT_AVAILABLE;
        };
        let partition = crate::metadata::key_partition(txn_id, n);
        let batch = encode_records(
            &[(Some(encode_key(txn_id)), m.as_ref().map(encode_value))],
            self.clock.now_ms(),
            None,
        );
        match self
            .partitions
            .local_append_durable(TXN_TOPIC, partition, &batch)
            .await
        {
            Ok(()) => {}
            Err(e) if e.code == ErrorCode::NOT_LEADER_OR_FOLLOWER => {
                return ErrorCode::NOT_COORDINATOR
            }
            Err(e) if e.code == ErrorCode::UNKNOWN_SERVER_ERROR => return e.code,
            Err(e) => {
                tracing::warn!(txn = %txn_id, "writing transaction state: {e}");
                return ErrorCode::COORDINATOR_NOT_AVAILABLE;
            }
        }
        match m {
            Some(m) => self.txns.borrow_mut().insert(txn_id.to_string(), m),
            None => self.txns.borrow_mut().remove(txn_id),
        };
        ErrorCode::NONE
    }

    /// Forgets transactional ids idle past `transactional_id_expiration_ms` with nothing
    /// open (Kafka does the same), so the ids a coordinator keeps are the ones in use.
    async fn expire_idle(&self) {
        let expiry = self.config.transactional_id_expiration_ms;
        let idle = |m: &TxnMeta, now: i64| {
            matches!(
                m.state,
                TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
            ) && now - m.update_ms > expiry
        };
        let now = self.clock.now_ms();
        let doomed: Vec<String> = self
            .txns
            .borrow()
            .iter()
            .filter(|(_, m)| idle(m, now))
            .map(|(k, _)| k.clone())
            .collect();
        for txn_id in doomed {
            let lock = self.lock(&txn_id);
            let _g = lock.acquire_permit(1).await.ok();
            // Look again under the lock: the producer may have come back meanwhile.
            let still = self
                .txns
                .borrow()
                .get(&txn_id)
                .is_some_and(|m| idle(m, self.clock.now_ms()));
            if !still || !self.write_state(&txn_id, None).await.is_ok() {
                continue;
            }
            tracing::debug!(txn = %txn_id, "transactional id expired");
            // The lock goes too unless someone else waits on it (then the next expiry run).
            let mut locks = self.locks.borrow_mut();
            if locks.get(&txn_id).is_some_and(|l| Rc::strong_count(l) == 2) {
                locks.remove(&txn_id);
            }
        }
    }

    /// Writes the markers into every partition of the transaction: those led by this broker
    /// through the partition manager, the others with WriteTxnMarkers to their leaders (a
    /// cluster's transaction spans brokers). Ok once every marker is durable.
    async fn write_markers_everywhere(
        &self,
        pid: i64,
        epoch: i16,
        commit: bool,
        partitions: &BTreeSet<(String, i32)>,
    ) -> Result<(), String> {
        let meta = self.image.get();
        let me = meta.node_id;
        let mut local = BTreeSet::new();
        let mut remote: BTreeMap<i32, Vec<(String, i32)>> = BTreeMap::new();
        for (t, p) in partitions {
            // A deleted topic stays local: the partition manager skips what is gone.
            let leader = meta.topics.get(t).map_or(me, |m| m.leader(*p, me));
            if leader == me {
                local.insert((t.clone(), *p));
            } else {
                remote.entry(leader).or_default().push((t.clone(), *p));
            }
        }
        self.partitions
            .write_markers(pid, epoch, commit, &local)
            .await?;
        for (leader, list) in remote {
            let b = meta
                .broker(leader)
                .ok_or_else(|| format!("{} partitions have no live leader", list.len()))?;
            let addr = format!("{}:{}", b.host, b.port);
            crate::cluster::broker_client::write_txn_markers(&addr, me, pid, epoch, commit, &list)
                .await?;
        }
        Ok(())
    }

    /// Writes the markers of a decided transaction and completes it. On failure the decision
    /// stays (Prepare*) and the tick retries.
    async fn complete(&self, txn_id: &str, m: TxnMeta) -> ErrorCode {
        let commit = m.state == TxnState::PrepareCommit;
        if let Err(e) = self
            .write_markers_everywhere(m.producer_id, m.epoch, commit, &m.partitions)
            .await
        {
            tracing::warn!(txn = %txn_id, "writing transaction markers: {e}");
            return ErrorCode::COORDINATOR_NOT_AVAILABLE;
        }
        let done = TxnMeta {
            state: if commit {
                TxnState::CompleteCommit
            } else {
                TxnState::CompleteAbort
            },
            partitions: BTreeSet::new(),
            update_ms: self.clock.now_ms(),
            ..m
        };
        self.persist(txn_id, done).await
    }

    /// Aborts an open transaction with the epoch bumped, which fences its producer.
    async fn fence_and_abort(&self, txn_id: &str, m: TxnMeta) -> ErrorCode {
        let prepared = TxnMeta {
            epoch: m.epoch.saturating_add(1),
            state: TxnState::PrepareAbort,
            update_ms: self.clock.now_ms(),
            ..m
        };
        let e = self.persist(txn_id, prepared.clone()).await;
        if !e.is_ok() {
            return e;
        }
        self.complete(txn_id, prepared).await
    }

    async fn init(&self, txn_id: &str, timeout_ms: i32) -> Result<ProducerIdAndEpoch, ErrorCode> {
        let fail = Err;
        if timeout_ms <= 0 || timeout_ms as i64 > self.config.transaction_max_timeout_ms {
            return fail(ErrorCode::INVALID_TRANSACTION_TIMEOUT);
        }
        let current = self.txns.borrow().get(txn_id).cloned();
        if current.is_none() && self.txns.borrow().len() >= MAX_TRANSACTIONAL_IDS {
            tracing::warn!(txn = %txn_id, "refusing a new transactional id: {MAX_TRANSACTIONAL_IDS} on this coordinator");
            return fail(ErrorCode::POLICY_VIOLATION);
        }
        let (pid, epoch) = match current {
            None => match self.controller.alloc_producer_id().await {
                Ok(id) => (id, 0),
                Err(_) => return fail(ErrorCode::COORDINATOR_NOT_AVAILABLE),
            },
            Some(mut m) => {
                match m.state {
                    TxnState::PrepareCommit | TxnState::PrepareAbort => {
                        let e = self.complete(txn_id, m.clone()).await;
                        if !e.is_ok() {
                            return fail(ErrorCode::CONCURRENT_TRANSACTIONS);
                        }
                    }
                    TxnState::Ongoing => {
                        let e = self.fence_and_abort(txn_id, m.clone()).await;
                        if !e.is_ok() {
                            return fail(ErrorCode::CONCURRENT_TRANSACTIONS);
                        }
                        m.epoch = m.epoch.saturating_add(1);
                    }
                    _ => {}
                }
                // The old producer is fenced by the epoch bump; at the end of the epoch range
                // the id is replaced instead.
                if m.epoch >= i16::MAX - 1 {
                    match self.controller.alloc_producer_id().await {
                        Ok(id) => (id, 0),
                        Err(_) => return fail(ErrorCode::COORDINATOR_NOT_AVAILABLE),
                    }
                } else {
                    (m.producer_id, m.epoch + 1)
                }
            }
        };
        let now = self.clock.now_ms();
        let m = TxnMeta {
            producer_id: pid,
            epoch,
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            start_ms: -1,
            update_ms: now,
        };
        let e = self.persist(txn_id, m).await;
        if !e.is_ok() {
            return fail(e);
        }
        Ok(ProducerIdAndEpoch {
            producer_id: pid,
            epoch,
        })
    }

    /// The producer's claim on the transaction: id and epoch must be the current ones.
    fn check(
        &self,
        txn_id: &str,
        producer_id: i64,
        epoch: i16,
        fenced: ErrorCode,
    ) -> Result<TxnMeta, ErrorCode> {
        let Some(m) = self.txns.borrow().get(txn_id).cloned() else {
            return Err(ErrorCode::INVALID_PRODUCER_ID_MAPPING);
        };
        if m.producer_id != producer_id {
            return Err(ErrorCode::INVALID_PRODUCER_ID_MAPPING);
        }
        if epoch != m.epoch {
            return Err(fenced);
        }
        Ok(m)
    }

    async fn add_partitions_local(
        &self,
        txn_id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: Vec<(String, i32)>,
        fenced: ErrorCode,
    ) -> ErrorCode {
        let m = match self.check(txn_id, producer_id, epoch, fenced) {
            Ok(m) => m,
            Err(e) => return e,
        };
        if matches!(m.state, TxnState::PrepareCommit | TxnState::PrepareAbort) {
            return ErrorCode::CONCURRENT_TRANSACTIONS;
        }
        let now = self.clock.now_ms();
        let mut next = m.clone();
        if m.state != TxnState::Ongoing {
            next.state = TxnState::Ongoing;
            next.start_ms = now;
            next.partitions.clear();
        }
        next.partitions.extend(partitions);
        if next == m {
            return ErrorCode::NONE;
        }
        next.update_ms = now;
        self.persist(txn_id, next).await
    }

    async fn end(
        &self,
        txn_id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        fenced: ErrorCode,
    ) -> ErrorCode {
        let m = match self.check(txn_id, producer_id, epoch, fenced) {
            Ok(m) => m,
            Err(e) => return e,
        };
        match (m.state, commit) {
            (TxnState::Ongoing, _) => {}
            // A retried EndTxn whose first try completed.
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => {
                return ErrorCode::NONE
            }
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                return self.complete(txn_id, m).await;
            }
            (TxnState::PrepareCommit | TxnState::PrepareAbort, _) => {
                return ErrorCode::CONCURRENT_TRANSACTIONS
            }
            _ => return ErrorCode::INVALID_TXN_STATE,
        }
        let prepared = TxnMeta {
            state: if commit {
                TxnState::PrepareCommit
            } else {
                TxnState::PrepareAbort
            },
            update_ms: self.clock.now_ms(),
            ..m
        };
        let e = self.persist(txn_id, prepared.clone()).await;
        if !e.is_ok() {
            return e;
        }
        // The decision is durable: from here the transaction completes, now or by the tick.
        let e = self.complete(txn_id, prepared).await;
        if !e.is_ok() {
            tracing::warn!(txn = %txn_id, "transaction decided, markers pending: {e:?}");
        }
        ErrorCode::NONE
    }

    /// Aborts timed-out transactions and finishes decided ones whose markers are not all
    /// written (after an error, or a restart).
    pub async fn tick(&self) {
        self.expire_idle().await;
        let now = self.clock.now_ms();
        let due: Vec<(String, TxnMeta)> = self
            .txns
            .borrow()
            .iter()
            .filter(|(_, m)| match m.state {
                TxnState::Ongoing => now - m.start_ms > m.timeout_ms as i64,
                TxnState::PrepareCommit | TxnState::PrepareAbort => true,
                _ => false,
            })
            .map(|(k, m)| (k.clone(), m.clone()))
            .collect();
        for (txn_id, _) in due {
            let lock = self.lock(&txn_id);
            let _g = lock.acquire_permit(1).await.ok();
            // Look again under the lock: the producer may have ended it meanwhile.
            let Some(m) = self.txns.borrow().get(&txn_id).cloned() else {
                continue;
            };
            let e = match m.state {
                TxnState::Ongoing if self.clock.now_ms() - m.start_ms > m.timeout_ms as i64 => {
                    tracing::info!(txn = %txn_id, producer_id = m.producer_id,
                        "transaction timed out: aborting");
                    self.fence_and_abort(&txn_id, m).await
                }
                TxnState::PrepareCommit | TxnState::PrepareAbort => self.complete(&txn_id, m).await,
                _ => ErrorCode::NONE,
            };
            if !e.is_ok() {
                tracing::warn!(txn = %txn_id, "completing transaction: {e:?}");
            }
        }
    }
}

#[cfg(test)]
mod tests;
