//! Data replication (Kafka's ReplicaFetcherManager and AlterPartition manager): per shard,
//! one fetcher per remote leader, for the partitions this shard follows, and the leaders'
//! ISR changes committed through the controller.
//!
//! A fetcher speaks the Kafka protocol to its leader over the client listener, as Kafka's
//! followers do: Fetch with this broker's replica id (so the leader reads past its high
//! watermark and learns this follower's log end from the offsets asked for), many partitions
//! per request, and OffsetForLeaderEpoch before fetching in a new leader epoch, to cut a
//! divergent tail (KIP-101, KIP-279). What comes back is appended byte for byte
//! (`Partition::append_replicated`) on the shard that owns the partition, which is the shard
//! the fetcher runs on, so nothing crosses the mesh on the data path.
//!
//! Layering: above the controller (ISR changes are commits) and the partition manager (the
//! logs), beside the coordinators.

use crate::cluster::broker_client::BrokerConnection;
use crate::config::Config;
use crate::controller::Controller;
use crate::metadata::MetadataImage;
use crate::partition_manager::{Followed, IsrChange, PartitionManager};
use crate::protocol::errors::ErrorCode;
use crate::util::with_timeout;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderEpochRequest, OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{BrokerId, TopicName};
use kafka_protocol::protocol::StrBytes;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Fetch version the fetchers speak (topic names, current leader epochs, log start offsets).
const FETCH_VERSION: i16 = 12;
/// OffsetForLeaderEpoch version (replica id, flexible).
const OFFSET_FOR_LEADER_EPOCH_VERSION: i16 = 4;
/// Most bytes one follower fetch asks for over all its partitions.
const FETCH_RESPONSE_MAX_BYTES: i32 = 16 << 20;
/// Pause after a failed call or a round with nothing to do.
const BACKOFF: Duration = Duration::from_millis(100);
/// A call to the leader gives up this long after its long poll should have ended.
const CALL_SLACK: Duration = Duration::from_secs(10);

/// A followed partition as its fetcher keeps it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct PartState {
    leader_epoch: i32,
    /// The divergent tail (if any) was cut for this leader epoch: fetch from the log end.
    truncated: bool,
}

/// Fetches one leader's partitions for this shard.
struct Fetcher {
    leader: i32,
    parts: RefCell<BTreeMap<(String, i32), PartState>>,
    stopped: Cell<bool>,
}

pub struct Replication {
    config: Rc<Config>,
    image: Rc<MetadataImage>,
    partitions: Rc<PartitionManager>,
    controller: Rc<Controller>,
    fetchers: RefCell<HashMap<i32, Rc<Fetcher>>>,
    /// This broker's address: fetches leave from it (a firewall rule on addresses cuts them
    /// as it cuts the quorum's connections).
    source: Option<std::net::IpAddr>,
}

impl Replication {
    pub fn new(
        config: Rc<Config>,
        image: Rc<MetadataImage>,
        partitions: Rc<PartitionManager>,
        controller: Rc<Controller>,
    ) -> Rc<Replication> {
        let source = config
            .listen_addr()
            .ok()
            .map(|a| a.ip())
            .filter(|ip| !ip.is_unspecified());
        Rc::new(Replication {
            config,
            image,
            partitions,
            controller,
            fetchers: RefCell::new(HashMap::new()),
            source,
        })
    }

    /// Starts this shard's replication: ISR changes go to the controller, the fetchers follow
    /// the image, and leaders drop lagging followers from their ISR. Nothing runs on a single
    /// node (it leads every partition alone).
    pub fn start(self: &Rc<Self>, stop: Arc<AtomicBool>) {
        if !self.config.is_cluster() {
            return;
        }
        let me = self.clone();
        self.partitions.on_isr_change(Box::new(move |change| {
            let me = me.clone();
            glommio::spawn_local(async move { me.commit_isr_change(change).await }).detach();
        }));
        let me = self.clone();
        let stop2 = stop.clone();
        glommio::spawn_local(async move {
            while !stop2.load(Ordering::Relaxed) {
                me.reconcile(&stop2);
                let changed = me.partitions.roles_changed.wait();
                with_timeout(Duration::from_secs(1), changed).await;
            }
            for f in me.fetchers.borrow_mut().drain() {
                f.1.stopped.set(true);
            }
        })
        .detach();
        let me = self.clone();
        glommio::spawn_local(async move {
            let lag = Duration::from_millis(me.config.replica_lag_time_max_ms);
            let every = (lag / 4).max(Duration::from_millis(50));
            while !stop.load(Ordering::Relaxed) {
                glommio::timer::sleep(every).await;
                me.partitions.local_shrink_isrs(lag);
            }
        })
        .detach();
    }

    async fn commit_isr_change(&self, change: IsrChange) {
        let (topic, partition) = (change.topic.clone(), change.partition);
        if let Err(e) = self.controller.alter_partition(change).await {
            tracing::info!(%topic, partition, "ISR change not committed: {e}");
            self.partitions.local_isr_change_failed(&topic, partition);
        }
    }

    /// Gives each leader's fetcher the partitions this shard follows from it; starts and
    /// stops fetchers as leaders come and go.
    fn reconcile(self: &Rc<Self>, stop: &Arc<AtomicBool>) {
        let mut by_leader: BTreeMap<i32, Vec<Followed>> = BTreeMap::new();
        for f in self.partitions.local_followed() {
            by_leader.entry(f.leader).or_default().push(f);
        }
        let mut fetchers = self.fetchers.borrow_mut();
        fetchers.retain(|leader, f| {
            let keep = by_leader.contains_key(leader);
            if !keep {
                f.stopped.set(true);
            }
            keep
        });
        for (leader, list) in by_leader {
            let f = fetchers.entry(leader).or_insert_with(|| {
                let f = Rc::new(Fetcher {
                    leader,
                    parts: RefCell::new(BTreeMap::new()),
                    stopped: Cell::new(false),
                });
                let (svc, run, stop) = (self.clone(), f.clone(), stop.clone());
                glommio::spawn_local(async move { run.run(&svc, &stop).await }).detach();
                f
            });
            let mut parts = f.parts.borrow_mut();
            let wanted: BTreeMap<(String, i32), i32> = list
                .into_iter()
                .map(|x| ((x.topic, x.partition), x.leader_epoch))
                .collect();
            parts.retain(|k, _| wanted.contains_key(k));
            for (k, epoch) in wanted {
                let st = parts.entry(k).or_insert(PartState {
                    leader_epoch: epoch,
                    truncated: false,
                });
                if st.leader_epoch != epoch {
                    *st = PartState {
                        leader_epoch: epoch,
                        truncated: false,
                    };
                }
            }
        }
    }
}

impl Fetcher {
    async fn run(self: Rc<Self>, svc: &Rc<Replication>, stop: &Arc<AtomicBool>) {
        let me = svc.image.get().node_id;
        let client_id = format!("flumen-broker-{me}");
        let mut conn: Option<BrokerConnection> = None;
        let mut failures = 0u32;
        while !self.stopped.get() && !stop.load(Ordering::Relaxed) {
            let meta = svc.image.get();
            let Some(b) = meta.broker(self.leader) else {
                glommio::timer::sleep(BACKOFF).await;
                continue;
            };
            let addr = format!("{}:{}", b.host, b.port);
            if conn.as_ref().is_none_or(|c| c.addr != addr) {
                match BrokerConnection::connect(&addr, svc.source, &client_id).await {
                    Ok(c) => conn = Some(c),
                    Err(e) => {
                        failures += 1;
                        if failures % 50 == 1 {
                            tracing::warn!(leader = self.leader, "replica fetcher: {e}");
                        }
                        glommio::timer::sleep(BACKOFF * 5).await;
                        continue;
                    }
                }
            }
            let c = conn.as_mut().expect("connected above");
            match self.round(svc, c, me).await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures += 1;
                    if failures % 50 == 1 {
                        tracing::warn!(leader = self.leader, "replica fetcher: {e}");
                    }
                    conn = None;
                    glommio::timer::sleep(BACKOFF).await;
                }
            }
        }
    }

    fn snapshot(&self) -> Vec<((String, i32), PartState)> {
        self.parts
            .borrow()
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    fn mark(&self, key: &(String, i32), epoch: i32, truncated: bool) {
        if let Some(st) = self.parts.borrow_mut().get_mut(key) {
            if st.leader_epoch == epoch {
                st.truncated = truncated;
            }
        }
    }

    /// One round: cut divergent tails where a new leader epoch began, then one fetch.
    async fn round(
        &self,
        svc: &Rc<Replication>,
        c: &mut BrokerConnection,
        me: i32,
    ) -> anyhow::Result<()> {
        let parts = self.snapshot();
        if parts.iter().any(|(_, s)| !s.truncated) {
            self.truncate(svc, c, me, &parts).await?;
        }
        let ready: Vec<_> = self
            .snapshot()
            .into_iter()
            .filter(|(_, s)| s.truncated)
            .collect();
        if ready.is_empty() {
            glommio::timer::sleep(BACKOFF).await;
            return Ok(());
        }
        self.fetch(svc, c, me, ready).await
    }

    /// KIP-279: ask the leader where our newest epoch ends in its log; cut ours there (or
    /// where that epoch ends in ours, if earlier).
    async fn truncate(
        &self,
        svc: &Rc<Replication>,
        c: &mut BrokerConnection,
        me: i32,
        parts: &[((String, i32), PartState)],
    ) -> anyhow::Result<()> {
        let pm = &svc.partitions;
        let mut topics: BTreeMap<String, Vec<OffsetForLeaderPartition>> = BTreeMap::new();
        let mut asked: HashMap<(String, i32), i32> = HashMap::new();
        for ((t, p), st) in parts.iter().filter(|(_, s)| !s.truncated) {
            let Some(log) = pm.local_follower_log(t, *p, st.leader_epoch) else {
                continue;
            };
            let Some(epoch) = log.latest_epoch else {
                // Nothing in the log carries an epoch: nothing can diverge.
                self.mark(&(t.clone(), *p), st.leader_epoch, true);
                continue;
            };
            asked.insert((t.clone(), *p), st.leader_epoch);
            topics.entry(t.clone()).or_default().push(
                OffsetForLeaderPartition::default()
                    .with_partition(*p)
                    .with_current_leader_epoch(st.leader_epoch)
                    .with_leader_epoch(epoch),
            );
        }
        if topics.is_empty() {
            return Ok(());
        }
        let req = OffsetForLeaderEpochRequest::default()
            .with_replica_id(BrokerId(me))
            .with_topics(
                topics
                    .into_iter()
                    .map(|(t, ps)| {
                        OffsetForLeaderTopic::default()
                            .with_topic(TopicName(StrBytes::from_string(t)))
                            .with_partitions(ps)
                    })
                    .collect(),
            );
        let resp = c
            .call(&req, OFFSET_FOR_LEADER_EPOCH_VERSION, CALL_SLACK)
            .await?;
        for t in resp.topics {
            let topic = t.topic.0.to_string();
            for p in t.partitions {
                let key = (topic.clone(), p.partition);
                let Some(&epoch) = asked.get(&key) else {
                    continue;
                };
                if p.error_code != ErrorCode::NONE.0 {
                    // A leader epoch this leader does not know yet, or not the leader any
                    // more: the next image says what to do.
                    tracing::debug!(%topic, partition = p.partition, error = p.error_code,
                        "OffsetForLeaderEpoch");
                    continue;
                }
                let Some(log) = pm.local_follower_log(&topic, p.partition, epoch) else {
                    continue;
                };
                let point = if p.leader_epoch < 0 || p.end_offset < 0 {
                    // The leader has no epoch at or below ours: our log diverges from its
                    // start.
                    log.log_start_offset
                } else {
                    match pm.local_end_offset_for_epoch(&topic, p.partition, p.leader_epoch) {
                        Some((e, end)) if e >= 0 && end >= 0 => p.end_offset.min(end),
                        _ => log.log_start_offset,
                    }
                };
                if point < log.log_end_offset {
                    tracing::info!(%topic, partition = p.partition, leader = self.leader,
                        from = log.log_end_offset, to = point,
                        "follower truncating its divergent tail");
                }
                match pm
                    .local_truncate(&topic, p.partition, epoch, point.max(log.log_start_offset))
                    .await
                {
                    Ok(()) => self.mark(&key, epoch, true),
                    Err(e) => {
                        tracing::warn!(%topic, partition = p.partition, "truncating to {point}: {e}");
                    }
                }
            }
        }
        Ok(())
    }

    async fn fetch(
        &self,
        svc: &Rc<Replication>,
        c: &mut BrokerConnection,
        me: i32,
        ready: Vec<((String, i32), PartState)>,
    ) -> anyhow::Result<()> {
        let pm = &svc.partitions;
        let mut topics: BTreeMap<String, Vec<FetchPartition>> = BTreeMap::new();
        let mut epochs: HashMap<(String, i32), i32> = HashMap::new();
        for ((t, p), st) in ready {
            let Some(log) = pm.local_follower_log(&t, p, st.leader_epoch) else {
                continue;
            };
            topics.entry(t.clone()).or_default().push(
                FetchPartition::default()
                    .with_partition(p)
                    .with_current_leader_epoch(st.leader_epoch)
                    .with_fetch_offset(log.log_end_offset)
                    .with_log_start_offset(log.log_start_offset)
                    .with_partition_max_bytes(svc.config.replica_fetch_max_bytes),
            );
            epochs.insert((t, p), st.leader_epoch);
        }
        if topics.is_empty() {
            glommio::timer::sleep(BACKOFF).await;
            return Ok(());
        }
        let wait = svc.config.replica_fetch_wait_max_ms;
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(me))
            .with_max_wait_ms(wait.min(i32::MAX as u64) as i32)
            .with_min_bytes(1)
            .with_max_bytes(FETCH_RESPONSE_MAX_BYTES)
            .with_isolation_level(0)
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(
                topics
                    .into_iter()
                    .map(|(t, ps)| {
                        FetchTopic::default()
                            .with_topic(TopicName(StrBytes::from_string(t)))
                            .with_partitions(ps)
                    })
                    .collect(),
            );
        let resp = c
            .call(
                &req,
                FETCH_VERSION,
                Duration::from_millis(wait) + CALL_SLACK,
            )
            .await?;
        if resp.error_code != ErrorCode::NONE.0 {
            anyhow::bail!(
                "fetch from broker {}: error {}",
                self.leader,
                resp.error_code
            );
        }
        let mut backoff = false;
        for t in resp.responses {
            let topic = t.topic.0.to_string();
            for p in t.partitions {
                let key = (topic.clone(), p.partition_index);
                let Some(&epoch) = epochs.get(&key) else {
                    continue;
                };
                let code = ErrorCode(p.error_code);
                if code == ErrorCode::OFFSET_OUT_OF_RANGE {
                    // Our log ends below the leader's log start (retention or DeleteRecords
                    // ran there while we were away): start over at it. Else our log end is
                    // past the leader's: find the divergence again.
                    let reset = pm
                        .local_reset_follower(&topic, p.partition_index, epoch, p.log_start_offset)
                        .await;
                    match reset {
                        Ok(true) => continue,
                        Ok(false) => self.mark(&key, epoch, false),
                        Err(e) => tracing::warn!(%topic, partition = p.partition_index,
                            "restarting the log at the leader's log start: {e}"),
                    }
                    backoff = true;
                    continue;
                }
                if !code.is_ok() {
                    // FENCED/UNKNOWN_LEADER_EPOCH, NOT_LEADER_OR_FOLLOWER: the images differ
                    // for a moment; the next one says what to do.
                    backoff = true;
                    continue;
                }
                let records = p.records.unwrap_or_default();
                let r = pm
                    .local_append_replicated(
                        &topic,
                        p.partition_index,
                        epoch,
                        records,
                        p.high_watermark,
                        p.log_start_offset,
                    )
                    .await;
                if let Err(e) = r {
                    if e.code == ErrorCode::OFFSET_OUT_OF_RANGE {
                        self.mark(&key, epoch, false);
                        backoff = true;
                    } else if e.code != ErrorCode::NOT_LEADER_OR_FOLLOWER {
                        tracing::warn!(%topic, partition = p.partition_index,
                            "appending what the leader sent: {e}");
                        backoff = true;
                    }
                }
            }
        }
        if backoff {
            glommio::timer::sleep(BACKOFF).await;
        }
        Ok(())
    }
}
