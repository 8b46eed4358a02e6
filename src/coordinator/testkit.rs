//! What the coordinators' unit tests run on: real parts, no mocks. One shard (no mesh), its
//! partition manager over a temp dir with the internal topics opened, the metadata image and
//! the controller registered as the broker registers them, and a manual clock the tests move.

use crate::config::Config;
use crate::controller::Controller;
use crate::metadata::image::random_hex;
use crate::metadata::{ClusterMeta, MetadataImage, TopicMeta, OFFSETS_TOPIC, TXN_TOPIC};
use crate::partition_manager::PartitionManager;
use crate::protocol::batch;
use crate::shard::{self, Shard};
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

/// Shard 0 of a broker with `nr_shards` shards and no mesh: calls to other shards fail.
pub struct Bench {
    /// The data dir, deleted when the bench is dropped.
    _dir: tempfile::TempDir,
    pub shard: Rc<Shard>,
    pub config: Rc<Config>,
    pub image: Rc<MetadataImage>,
    pub partitions: Rc<PartitionManager>,
    pub controller: Rc<Controller>,
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
                configs: Default::default(),
                leader_epochs: Vec::new(),
            };
            meta.topics.insert(name.to_string(), t);
        }
        let shard = Shard::new(0, nr_shards);
        let image = MetadataImage::new(meta);
        let partitions = PartitionManager::new(shard.clone(), config.clone(), image.clone());
        let controller = Controller::new(
            shard.clone(),
            config.clone(),
            image.clone(),
            partitions.clone(),
        );
        shard::register(image.clone());
        shard::register(partitions.clone());
        shard::register(controller.clone());
        partitions
            .open_owned()
            .await
            .expect("opening the partitions");
        Bench {
            _dir: dir,
            shard,
            config,
            image,
            partitions,
            controller,
            clock: Rc::new(ManualClock::default()),
        }
    }

    pub fn clock(&self) -> Rc<dyn Clock> {
        self.clock.clone()
    }

    /// Moves partition `p` of `topic` to this shard (a new image) and opens it here.
    pub async fn move_here(&self, topic: &str, p: usize) {
        let mut meta = (*self.image.get()).clone();
        meta.version += 1;
        let t = meta.topics.get_mut(topic).expect("a known topic");
        t.placement[p] = self.shard.id;
        self.image.publish(Rc::new(meta));
        self.partitions.open_owned().await.expect("opening it");
    }

    /// The transaction markers in a partition of this shard: (producer id, commit), in order.
    pub async fn markers(&self, topic: &str, p: i32) -> Vec<(i64, bool)> {
        let mut out = Vec::new();
        self.partitions
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
