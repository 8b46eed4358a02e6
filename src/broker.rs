//! One shard's services, wired at start-up: what connections and handlers see. The shard
//! itself only runs them; this is where they meet.

use crate::config::Config;
use crate::controller::Controller;
use crate::coordinator::{GroupCoordinator, TxnCoordinator};
use crate::metadata::{ClusterMeta, MetadataImage, OFFSETS_TOPIC, TXN_TOPIC};
use crate::partition_manager::PartitionManager;
use crate::replication::Replication;
use crate::shard::{self, Shard};
use crate::util::{Clock, SystemClock};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long a shard waits at start-up for shard 0 to create the internal topics (it normally
/// takes milliseconds; a failing disk can make it never happen, and the broker still serves).
const INTERNAL_TOPICS_WAIT: Duration = Duration::from_secs(30);

pub struct Broker {
    pub shard: Rc<Shard>,
    pub config: Rc<Config>,
    pub image: Rc<MetadataImage>,
    pub partitions: Rc<PartitionManager>,
    pub controller: Rc<Controller>,
    pub groups: Rc<GroupCoordinator>,
    pub txns: Rc<TxnCoordinator>,
    pub replication: Rc<Replication>,
    /// `request_memory_bytes`: permits are bytes of request frames read or being handled.
    pub request_memory: Rc<glommio::sync::Semaphore>,
    pub metrics: crate::metrics::ShardMetrics,
    /// This shard's client quota meters.
    pub quota_meters: crate::security::quota::Meters,
}

impl Broker {
    /// Builds this shard's services and registers each with the shard, so their instances on
    /// other shards can reach this one.
    pub fn new(shard: Rc<Shard>, config: Rc<Config>, meta: ClusterMeta) -> Rc<Broker> {
        Broker::with_clock(shard, config, meta, Rc::new(SystemClock))
    }

    /// `new`, with the coordinators reading time from `clock` (tests move a manual one).
    pub fn with_clock(
        shard: Rc<Shard>,
        config: Rc<Config>,
        meta: ClusterMeta,
        clock: Rc<dyn Clock>,
    ) -> Rc<Broker> {
        let image = MetadataImage::new(meta);
        let partitions = PartitionManager::new(shard.clone(), config.clone(), image.clone());
        let controller = Controller::new(
            shard.clone(),
            config.clone(),
            image.clone(),
            partitions.clone(),
        );
        let groups = GroupCoordinator::new(
            shard.clone(),
            config.clone(),
            image.clone(),
            partitions.clone(),
            clock.clone(),
        );
        let txns = TxnCoordinator::new(
            shard.clone(),
            config.clone(),
            image.clone(),
            partitions.clone(),
            controller.clone(),
            clock,
        );
        let replication = Replication::new(
            config.clone(),
            image.clone(),
            partitions.clone(),
            controller.clone(),
        );
        shard::register(image.clone());
        shard::register(partitions.clone());
        shard::register(controller.clone());
        shard::register(groups.clone());
        shard::register(txns.clone());
        let request_memory = Rc::new(glommio::sync::Semaphore::new(
            config.request_memory_bytes as u64,
        ));
        Rc::new(Broker {
            shard,
            config,
            image,
            partitions,
            controller,
            groups,
            txns,
            replication,
            request_memory,
            metrics: Default::default(),
            quota_meters: Default::default(),
        })
    }

    /// The current metadata image.
    pub fn meta(&self) -> Rc<ClusterMeta> {
        self.image.get()
    }

    /// Opens this shard's partitions and loads the coordinators' state from them. Runs
    /// before the mesh is joined, so no request and no transaction marker can reach a
    /// coordinator whose state is half loaded.
    pub async fn open(&self) -> anyhow::Result<()> {
        self.partitions
            .open_owned()
            .await
            .map_err(|e| anyhow::anyhow!(e.to_string()))?;
        let n = self
            .txns
            .load_owned()
            .await
            .map_err(|e| anyhow::anyhow!("loading transaction states: {e}"))?;
        tracing::debug!(
            shard = self.shard.id,
            records = n,
            "loaded transaction states"
        );
        let n = self
            .groups
            .load_owned()
            .await
            .map_err(|e| anyhow::anyhow!("loading committed offsets: {e}"))?;
        tracing::debug!(shard = self.shard.id, records = n, "loaded offsets");
        Ok(())
    }

    /// After the mesh is up: the internal topics exist (created by the controller on first
    /// start, empty then) and every background task runs.
    pub async fn start(&self, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
        if self.config.is_cluster() {
            // The active controller creates them once the brokers registered; until then
            // FindCoordinator answers COORDINATOR_NOT_AVAILABLE, which clients retry.
        } else if self.shard.id == 0 {
            self.controller
                .ensure_internal_topics(&[
                    (OFFSETS_TOPIC, self.config.offsets_topic_partitions),
                    (TXN_TOPIC, self.config.transaction_state_partitions),
                ])
                .await;
        } else {
            // No shard serves clients before the internal topics exist: a client's first
            // Metadata or FindCoordinator must not see a broker without them.
            let deadline = std::time::Instant::now() + INTERNAL_TOPICS_WAIT;
            while ![OFFSETS_TOPIC, TXN_TOPIC]
                .iter()
                .all(|t| self.meta().topics.contains_key(*t))
            {
                if std::time::Instant::now() > deadline {
                    tracing::warn!(
                        shard = self.shard.id,
                        "serving before the internal topics exist"
                    );
                    break;
                }
                glommio::timer::sleep(Duration::from_millis(5)).await;
            }
        }
        if self.config.is_cluster() {
            // The coordinators move with the leadership of their internal partitions.
            let groups = self.groups.clone();
            self.partitions.on_leadership(
                OFFSETS_TOPIC,
                Box::new(move |p, leads| groups.leadership_changed(p, leads)),
            );
            let txns = self.txns.clone();
            self.partitions.on_leadership(
                TXN_TOPIC,
                Box::new(move |p, leads| txns.leadership_changed(p, leads)),
            );
        }
        self.replication.start(stop.clone());
        self.txns.start(stop.clone());
        self.groups.start(stop.clone());
        self.partitions.spawn_background(stop);
        Ok(())
    }

    /// Publishes this shard's metrics once a second until the broker stops.
    pub fn spawn_metrics(
        self: &Rc<Self>,
        registry: Arc<crate::metrics::Registry>,
        stop: Arc<AtomicBool>,
    ) {
        let b = self.clone();
        glommio::spawn_local(async move {
            while !stop.load(Ordering::Relaxed) {
                registry.publish(b.shard.id, b.metric_samples());
                glommio::timer::sleep(Duration::from_secs(1)).await;
            }
        })
        .detach();
    }

    fn metric_samples(&self) -> Vec<crate::metrics::Sample> {
        let mut out = Vec::new();
        let sl = format!("shard=\"{}\"", self.shard.id);
        self.metrics.samples(self.shard.id, &mut out);
        let limit = self.config.request_memory_bytes as f64;
        let used = limit - self.request_memory.available() as f64;
        out.push(("flumen_request_memory_used_bytes", sl.clone(), used));
        out.push(("flumen_request_memory_limit_bytes", sl.clone(), limit));
        self.partitions.metric_samples(&sl, &mut out);
        out
    }
}
