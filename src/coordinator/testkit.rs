//! What the coordinators' unit tests run on: real parts, no mocks. One shard (no mesh) wired
//! by `Broker` as in the broker, its partitions over a temp dir with the internal topics
//! opened, and a manual clock the tests move.

use super::{GroupCoordinator, TxnCoordinator};
use crate::broker::Broker;
use crate::config::Config;
use crate::metadata::image::random_hex;
use crate::metadata::{ClusterMeta, TopicMeta, OFFSETS_TOPIC, TXN_TOPIC};
use crate::protocol::batch;
use crate::shard::Shard;
use crate::util::{Clock, ManualClock};
use std::future::Future;
use std::rc::Rc;

/// Runs a test on a fresh glommio executor (its own thread, so its own registered services).
pub fn run<F: Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
    glommio::LocalExecutorBuilder::default()
        .spawn(f)
        .expect("starting an executor")
        .join()
        .expect("the test's executor");
}

/// Lets every task that can make progress (calls blocked in a rebalance, mostly) do so.
pub async fn settle() {
    for _ in 0..20 {
        futures_lite::future::yield_now().await;
    }
}

/// Shard 0 of a broker with `nr_shards` shards and no mesh (calls to other shards fail),
/// wired as `Broker` wires every shard, its coordinators on a manual clock.
pub struct Bench {
    /// The data dir, deleted when the bench is dropped.
    _dir: tempfile::TempDir,
    pub broker: Rc<Broker>,
    pub clock: Rc<ManualClock>,
}

impl Bench {
    /// One partition of each internal topic on this shard, plus the data `topics` placed as
    /// given (partition -> shard), all opened where they are placed here.
    pub async fn new(nr_shards: usize, topics: &[(&str, Vec<usize>)]) -> Bench {
        let dir = tempfile::tempdir().expect("a temp dir");
        let config = Rc::new(Config {
            data_dir: dir.path().to_path_buf(),
            // Small preallocated segments: the tests write a few records.
            segment_bytes: 1 << 20,
            ..Config::default()
        });
        let mut meta = ClusterMeta {
            version: 1,
            cluster_id: random_hex(16),
            ..ClusterMeta::default()
        };
        let internal = [(OFFSETS_TOPIC, vec![0]), (TXN_TOPIC, vec![0])];
        let data = topics.iter().map(|(t, p)| (*t, p.clone()));
        for (name, placement) in internal.into_iter().chain(data) {
            let t = TopicMeta {
                id: random_hex(16),
                placement,
                ..Default::default()
            };
            meta.topics.insert(name.to_string(), t);
        }
        let clock = Rc::new(ManualClock::default());
        let broker = Broker::with_clock(Shard::new(0, nr_shards), config, meta, clock.clone());
        broker.open().await.expect("opening the partitions");
        Bench {
            _dir: dir,
            broker,
            clock,
        }
    }

    pub fn clock(&self) -> Rc<dyn Clock> {
        self.clock.clone()
    }

    pub fn config(&self) -> &Config {
        &self.broker.config
    }

    /// A second group coordinator over the same partitions: what a restart would load.
    pub fn new_groups(&self) -> Rc<GroupCoordinator> {
        let b = &self.broker;
        let (shard, image) = (b.shard.clone(), b.image.clone());
        GroupCoordinator::new(
            shard,
            b.config.clone(),
            image,
            b.partitions.clone(),
            self.clock(),
        )
    }

    /// A second transaction coordinator over the same partitions: what a restart would load.
    pub fn new_txns(&self) -> Rc<TxnCoordinator> {
        let b = &self.broker;
        let (shard, image) = (b.shard.clone(), b.image.clone());
        let (partitions, controller) = (b.partitions.clone(), b.controller.clone());
        TxnCoordinator::new(
            shard,
            b.config.clone(),
            image,
            partitions,
            controller,
            self.clock(),
        )
    }

    /// Moves partition `p` of `topic` to this shard (a new image) and opens it here.
    pub async fn move_here(&self, topic: &str, p: usize) {
        let mut meta = (*self.broker.meta()).clone();
        meta.version += 1;
        let t = meta.topics.get_mut(topic).expect("a known topic");
        t.placement[p] = self.broker.shard.id;
        self.broker.image.publish(Rc::new(meta));
        self.broker.open().await.expect("opening it");
    }

    /// The transaction markers in a partition of this shard: (producer id, commit), in order.
    pub async fn markers(&self, topic: &str, p: i32) -> Vec<(i64, bool)> {
        let mut out = Vec::new();
        self.broker
            .partitions
            .local_scan(topic, p, |b| {
                if let Some(commit) = batch::control_marker(b) {
                    out.push((batch::be_i64(b, batch::OFF_PRODUCER_ID), commit));
                }
            })
            .await
            .expect("scanning");
        out
    }
}
