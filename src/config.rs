//! Broker configuration: a flat TOML file (`--config flumen.toml`) with command-line overrides.
//!
//! Every limit that guards against outside input is a field here with the reason for its default.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

/// How appended data reaches stable storage before a produce request is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// fdatasync after every group-commit write, before any append in it is acknowledged.
    EveryWrite,
    /// Acknowledge once the O_DIRECT write completed (the data is on the device, it survives a
    /// process crash); fdatasync in the background every this many milliseconds (power loss can
    /// lose up to that window).
    IntervalMs(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address every shard listens on (SO_REUSEPORT spreads connections over shards).
    pub listen: String,
    /// host:port given to clients in Metadata; defaults to the listen address (127.0.0.1 when
    /// listening on all interfaces).
    pub advertise: Option<String>,
    pub data_dir: PathBuf,
    /// Several data directories, one per disk (JBOD): new partitions go to the one holding the
    /// fewest of their shard's partitions, so partitions spread over disks and shards; the first
    /// also holds the broker metadata. Empty: `data_dir` alone. An I/O error takes only the
    /// partition that met it offline, so a dead disk takes its own partitions and no others.
    pub data_dirs: Vec<PathBuf>,
    /// Number of shards (pinned executors); 0 means one per usable core.
    pub shards: usize,
    pub auto_create_topics: bool,
    /// Partitions of an auto-created topic, and of CreateTopics with num_partitions = -1 (Kafka: 1).
    pub default_partitions: i32,
    /// Largest request frame accepted; Kafka's socket.request.max.bytes. Checked before the body is
    /// read so a hostile size never allocates.
    pub max_request_bytes: usize,
    /// Pipelined requests per connection still being handled; librdkafka's default in-flight is 5
    /// (1M for non-idempotent producers), so 64 keeps pipelines full while bounding memory.
    pub max_inflight_per_connection: usize,
    /// Open client connections on the whole broker; one more is accepted and closed at once
    /// (Kafka: max.connections). Each costs a descriptor and a read buffer.
    pub max_connections: usize,
    /// Open connections from one IP address (Kafka: max.connections.per.ip), so one runaway
    /// client cannot take every slot.
    pub max_connections_per_ip: usize,
    /// A connection that completes no request for this long is closed: idle clients, and
    /// slowloris senders of partial frames (Kafka: connections.max.idle.ms, 10 min). A response
    /// the client does not read for this long closes it too.
    pub connection_idle_timeout_ms: u64,
    /// Per shard: bytes of request frames being read or handled. A connection whose next frame
    /// does not fit waits, not reading its socket (back-pressure), until earlier requests of
    /// the shard finish. A frame larger than the whole budget waits for all of it.
    pub request_memory_bytes: usize,
    /// Most partitions one topic may have; bounds the per-shard state a single request can create.
    pub max_partitions_per_topic: i32,
    /// Segment roll by size (Kafka: 1 GiB).
    pub segment_bytes: u64,
    /// Segment roll by age (Kafka: 7 days).
    pub segment_ms: i64,
    /// Delete whole segments older than this (Kafka: 7 days); -1 keeps forever.
    pub retention_ms: i64,
    /// Delete oldest segments while a partition is larger than this; -1 keeps all.
    pub retention_bytes: i64,
    pub retention_check_interval_ms: u64,
    /// What happens to old records unless a topic says otherwise (Kafka: log.cleanup.policy):
    /// "delete" (retention deletes whole old segments), "compact" (the cleaner keeps the
    /// latest record of each key) or "compact,delete" (both).
    pub cleanup_policy: String,
    /// Compacted partitions are cleaned in the background (Kafka: log.cleaner.enable).
    pub log_cleaner_enable: bool,
    /// Per shard: bytes per second the cleaner reads and writes at most, so produce latency
    /// does not suffer (Kafka: log.cleaner.io.max.bytes.per.second, which is per broker).
    pub log_cleaner_io_max_bytes_per_second: f64,
    /// How long a shard's cleaner sleeps when no partition needs cleaning (Kafka:
    /// log.cleaner.backoff.ms).
    pub log_cleaner_backoff_ms: u64,
    /// Per shard: memory for the key map of one cleaning pass (Kafka:
    /// log.cleaner.dedupe.buffer.size); a pass cleans as far as its keys fit.
    pub log_cleaner_dedupe_buffer_bytes: u64,
    /// 0: fdatasync before every acknowledgement. N: ack after the device write, fdatasync every N ms.
    pub flush_interval_ms: u64,
    pub message_timestamp_type: TimestampType,
    /// One offset-index entry per this many log bytes (Kafka: 4096).
    pub index_interval_bytes: u64,
    /// Reads that miss the tail cache: ranges in the page cache go to the socket by sendfile(2)
    /// (true, the default; nothing copied through the broker), the rest is read and written;
    /// false reads and writes everything. Plain listeners only: TLS encrypts in the broker.
    /// Measured (docs/benchmarks.md, issue 17): sendfile cost 0.85x (hot) and 0.76x (cold) the
    /// copy path's broker CPU per GB. The earlier zero-copy, glommio's io_uring splice through a pipe,
    /// cost more than copying in every run and is gone.
    pub zero_copy_fetch: bool,
    /// host:port for Prometheus metrics over HTTP (GET /metrics); none when unset.
    pub metrics_listen: Option<String>,
    /// Per-shard memory for recently appended batches served to consumers (0: none). Unset:
    /// `TAIL_CACHE_MEMORY_SHARE` of the machine's memory (or of its cgroup's limit) split among
    /// the shards, resolved at start (`resolve_tail_cache`). O_DIRECT writes leave the page
    /// cache cold, so this is what a consumer catching up reads from memory.
    pub tail_cache_bytes: Option<usize>,
    /// Largest single write buffer; a larger group commit is split in several writes.
    pub write_buffer_bytes: usize,
    /// Largest batch accepted (Kafka: message.max.bytes, 1 MiB + overhead).
    pub max_batch_bytes: usize,
    /// Partitions of `__consumer_offsets` (Kafka: offsets.topic.num.partitions, 50); fixed
    /// once the topic exists. Groups spread over the shards that own these partitions.
    pub offsets_topic_partitions: i32,
    /// Session timeouts a member may ask for (Kafka: group.min/max.session.timeout.ms).
    pub group_min_session_timeout_ms: i32,
    pub group_max_session_timeout_ms: i32,
    /// A new group's first rebalance waits this long for more members (Kafka: 3 s).
    pub group_initial_rebalance_delay_ms: u64,
    /// Committed offsets of an empty group are forgotten after this (Kafka: 7 days).
    pub offsets_retention_minutes: i64,
    /// Partitions of `__transaction_state` (Kafka: transaction.state.log.num.partitions, 50);
    /// fixed once the topic exists.
    pub transaction_state_partitions: i32,
    /// Segment size of `__consumer_offsets` and `__transaction_state` when they are created
    /// (Kafka: offsets.topic.segment.bytes, transaction.state.log.segment.bytes; 100 MiB):
    /// smaller segments are compacted sooner.
    pub offsets_topic_segment_bytes: u64,
    pub transaction_state_segment_bytes: u64,
    /// Longest transaction timeout a producer may ask for (Kafka: transaction.max.timeout.ms).
    pub transaction_max_timeout_ms: i64,
    /// How often coordinators look for timed-out transactions (Kafka:
    /// transaction.abort.timed.out.transaction.cleanup.interval.ms, 10 s).
    pub transaction_abort_check_interval_ms: u64,
    /// Producer state of an id idle this long (and with no open transaction) is dropped from
    /// each partition, checked with retention (Kafka: producer.id.expiration.ms, 1 day).
    pub producer_id_expiration_ms: i64,
    /// A transactional id with no transaction open and no state change for this long is
    /// forgotten (Kafka's transactional.id.expiration.ms): a tombstone in
    /// `__transaction_state`, and a later InitProducerId starts it afresh.
    pub transactional_id_expiration_ms: i64,
    /// This broker's id in a cluster (Kafka: node.id); 0 on a single node.
    pub node_id: i32,
    /// host:port where this node's controller answers the metadata quorum (Kafka:
    /// the CONTROLLER listener); required on a voter.
    pub controller_listen: Option<String>,
    /// The metadata quorum, `id@host:port` each (Kafka: controller.quorum.voters). Empty: a
    /// single node, as before clusters existed. Every node must list the same voters; a node
    /// not among them is an observer broker (it follows the metadata log, does not vote).
    pub controller_quorum_voters: Vec<String>,
    /// This broker's rack (Kafka: broker.rack): replicas of a partition go to different racks.
    pub broker_rack: Option<String>,
    /// Replicas of a new topic when CreateTopics asks for -1 and of an auto-created topic
    /// (Kafka: default.replication.factor).
    pub default_replication_factor: i16,
    /// A broker that sends no heartbeat for this long is fenced and its partitions get new
    /// leaders (Kafka: broker.session.timeout.ms).
    pub broker_session_timeout_ms: u64,
    /// How often a broker heartbeats to the active controller (Kafka:
    /// broker.heartbeat.interval.ms).
    pub broker_heartbeat_interval_ms: u64,
    /// The active controller moves leadership back to preferred replicas (the first of each
    /// partition) that are live and in sync (Kafka: auto.leader.rebalance.enable).
    pub auto_leader_rebalance_enable: bool,
    /// How often it looks (Kafka: leader.imbalance.check.interval.seconds, 300 s).
    pub leader_imbalance_check_interval_ms: u64,
    /// A follower that has not caught up to its leader's log end for this long leaves the
    /// ISR (Kafka: replica.lag.time.max.ms).
    pub replica_lag_time_max_ms: u64,
    /// Fewest in-sync replicas an acks=all write needs, unless the topic says otherwise
    /// (Kafka: min.insync.replicas).
    pub min_insync_replicas: i32,
    /// A partition whose in-sync replicas are all gone may be led by an out-of-sync one,
    /// losing what only the ISR held, unless the topic says otherwise (Kafka:
    /// unclean.leader.election.enable).
    pub unclean_leader_election_enable: bool,
    /// Longest a follower's fetch waits at the leader for new data (Kafka:
    /// replica.fetch.wait.max.ms).
    pub replica_fetch_wait_max_ms: u64,
    /// Bytes a follower's fetch asks for per partition (Kafka: replica.fetch.max.bytes).
    pub replica_fetch_max_bytes: i32,
    /// Replicas of each `__consumer_offsets` partition; 0: min(3, live brokers) when the
    /// topic is created (Kafka: offsets.topic.replication.factor).
    pub offsets_topic_replication_factor: i16,
    /// Replicas of each `__transaction_state` partition; 0: min(3, live brokers) (Kafka:
    /// transaction.state.log.replication.factor).
    pub transaction_state_replication_factor: i16,
    /// Listeners as Kafka writes them, `PROTOCOL://host:port` (PLAINTEXT, SASL_PLAINTEXT),
    /// each served by every shard. Empty: one PLAINTEXT listener at `listen`.
    pub listeners: Vec<String>,
    /// What clients of each listener are told to connect to, `PROTOCOL://host:port` (Kafka:
    /// advertised.listeners); a listener not named here advertises its own address.
    pub advertised_listeners: Vec<String>,
    /// SASL mechanisms a SASL listener offers (Kafka: sasl.enabled.mechanisms).
    pub sasl_enabled_mechanisms: Vec<String>,
    /// PLAIN users for small setups: a TOML file of `name = "password"` lines. SCRAM users
    /// (`flumen users create`, stored salted and hashed in the metadata) log in with PLAIN too.
    pub sasl_plain_users_file: Option<PathBuf>,
    /// A SASL session lasts this long, then the client must authenticate again before its
    /// next request (KIP-368; Kafka: connections.max.reauth.ms). 0: for the connection's life.
    pub connections_max_reauth_ms: u64,
    /// TLS listeners (SSL, SASL_SSL): the certificate chain and private key, PEM. Both are
    /// read again when they change, for new connections (renewal without a restart).
    pub ssl_certificate_file: Option<PathBuf>,
    pub ssl_key_file: Option<PathBuf>,
    /// "none", "requested" or "required": whether TLS clients show certificates (Kafka:
    /// ssl.client.auth); a certificate's subject is then the principal of an SSL client.
    pub ssl_client_auth: String,
    /// PEM CA certificates client certificates must chain to.
    pub ssl_truststore_file: Option<PathBuf>,
    /// Check every request against the ACLs (CreateAcls; `flumen acls`): deny unless an ACL
    /// allows. false: everything is allowed, as without an authorizer in Kafka.
    pub authorizer_enabled: bool,
    /// Principals that pass every ACL check (Kafka: super.users), e.g. "User:admin".
    pub super_users: Vec<String>,
    /// In a cluster whose first listener is SASL_PLAINTEXT: the user brokers log in as (SASL
    /// PLAIN) when they call each other (replication, transaction markers). Make it a super
    /// user, or give it CLUSTER_ACTION on the cluster.
    pub inter_broker_sasl_username: Option<String>,
    pub inter_broker_sasl_password: Option<String>,
}

/// A member of the metadata quorum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voter {
    pub id: i32,
    pub addr: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "0.0.0.0:9092".into(),
            advertise: None,
            data_dir: PathBuf::from("./data"),
            data_dirs: Vec::new(),
            shards: 0,
            auto_create_topics: true,
            default_partitions: 1,
            max_request_bytes: 100 * 1024 * 1024,
            max_inflight_per_connection: 64,
            max_connections: 50_000,
            max_connections_per_ip: 10_000,
            connection_idle_timeout_ms: 600_000,
            request_memory_bytes: 256 << 20,
            max_partitions_per_topic: 10_000,
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            retention_check_interval_ms: 30_000,
            cleanup_policy: "delete".into(),
            log_cleaner_enable: true,
            log_cleaner_io_max_bytes_per_second: f64::MAX,
            log_cleaner_backoff_ms: 15_000,
            log_cleaner_dedupe_buffer_bytes: 128 << 20,
            flush_interval_ms: 1000,
            message_timestamp_type: TimestampType::CreateTime,
            index_interval_bytes: 4096,
            zero_copy_fetch: true,
            metrics_listen: None,
            tail_cache_bytes: None,
            write_buffer_bytes: 4 << 20,
            max_batch_bytes: 8 << 20,
            offsets_topic_partitions: 16,
            group_min_session_timeout_ms: 6000,
            group_max_session_timeout_ms: 1_800_000,
            group_initial_rebalance_delay_ms: 3000,
            offsets_retention_minutes: 7 * 24 * 60,
            transaction_state_partitions: 16,
            transaction_max_timeout_ms: 900_000,
            offsets_topic_segment_bytes: 100 << 20,
            transaction_state_segment_bytes: 100 << 20,
            transaction_abort_check_interval_ms: 1000,
            producer_id_expiration_ms: 86_400_000,
            transactional_id_expiration_ms: 604_800_000,
            node_id: 0,
            controller_listen: None,
            controller_quorum_voters: Vec::new(),
            broker_rack: None,
            default_replication_factor: 1,
            broker_session_timeout_ms: 9000,
            broker_heartbeat_interval_ms: 2000,
            auto_leader_rebalance_enable: true,
            leader_imbalance_check_interval_ms: 300_000,
            replica_lag_time_max_ms: 30_000,
            min_insync_replicas: 1,
            unclean_leader_election_enable: false,
            replica_fetch_wait_max_ms: 500,
            replica_fetch_max_bytes: 1 << 20,
            offsets_topic_replication_factor: 0,
            transaction_state_replication_factor: 0,
            listeners: Vec::new(),
            advertised_listeners: Vec::new(),
            sasl_enabled_mechanisms: vec![
                "PLAIN".into(),
                "SCRAM-SHA-256".into(),
                "SCRAM-SHA-512".into(),
            ],
            sasl_plain_users_file: None,
            connections_max_reauth_ms: 0,
            ssl_certificate_file: None,
            ssl_key_file: None,
            ssl_client_auth: "none".into(),
            ssl_truststore_file: None,
            authorizer_enabled: false,
            super_users: Vec::new(),
            inter_broker_sasl_username: None,
            inter_broker_sasl_password: None,
        }
    }
}

/// The share of memory the shards' tail caches take together when `tail_cache_bytes` is unset.
pub const TAIL_CACHE_MEMORY_SHARE: f64 = 0.125;
/// The tail cache of a shard when the memory cannot be read (and in unit tests).
const FALLBACK_TAIL_CACHE_BYTES: usize = 64 << 20;

/// Bytes of memory this process may use: the machine's, or its cgroup's limit when lower.
pub fn memory_bytes() -> Option<u64> {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|kb| kb * 1024)
        })?;
    // cgroup v2 ("max" when unlimited), else v1.
    let limit = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .find_map(|f| std::fs::read_to_string(f).ok()?.trim().parse::<u64>().ok());
    Some(limit.map_or(total, |l| l.min(total)))
}

impl Config {
    /// The shards the broker runs on a host with `cores` usable CPUs (`shards = 0`: one each).
    pub fn shard_count(&self, cores: usize) -> usize {
        if self.shards == 0 {
            cores
        } else {
            self.shards
        }
    }

    /// The tail cache of each shard: as configured, else `TAIL_CACHE_MEMORY_SHARE` of
    /// `memory` split among `shards`.
    pub fn resolve_tail_cache(&mut self, shards: usize, memory: Option<u64>) -> usize {
        *self.tail_cache_bytes.get_or_insert_with(|| {
            memory.map_or(FALLBACK_TAIL_CACHE_BYTES, |m| {
                (m as f64 * TAIL_CACHE_MEMORY_SHARE / shards.max(1) as f64) as usize
            })
        })
    }

    /// The tail cache of each shard (after `resolve_tail_cache`).
    pub fn tail_cache_budget(&self) -> usize {
        self.tail_cache_bytes.unwrap_or(FALLBACK_TAIL_CACHE_BYTES)
    }

    pub fn from_file(path: &std::path::Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading config {}: {e}", path.display()))?;
        let cfg: Config = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("parsing config {}: {e}", path.display()))?;
        Ok(cfg)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        for p in &self.super_users {
            anyhow::ensure!(
                p.split_once(':')
                    .is_some_and(|(k, n)| !k.is_empty() && !n.is_empty()),
                "super_users: {p:?} is not a principal such as User:admin"
            );
        }
        let dirs = self.log_dirs();
        let unique: std::collections::BTreeSet<_> = dirs.iter().collect();
        anyhow::ensure!(
            unique.len() == dirs.len(),
            "data_dirs lists a directory twice: {dirs:?}"
        );
        anyhow::ensure!(
            self.segment_bytes >= 64 * 1024 && self.segment_bytes <= u32::MAX as u64,
            "segment_bytes must be between 64 KiB and 4 GiB (index positions are 32-bit)"
        );
        anyhow::ensure!(
            self.default_partitions >= 1,
            "default_partitions must be >= 1"
        );
        anyhow::ensure!(
            self.max_request_bytes >= 1024,
            "max_request_bytes must be at least 1 KiB"
        );
        anyhow::ensure!(self.max_inflight_per_connection >= 1);
        anyhow::ensure!(self.max_connections >= 1 && self.max_connections_per_ip >= 1);
        anyhow::ensure!(self.connection_idle_timeout_ms >= 100);
        anyhow::ensure!(
            self.request_memory_bytes >= 1 << 20,
            "request_memory_bytes must be at least 1 MiB"
        );
        anyhow::ensure!(self.index_interval_bytes >= 1);
        for (key, v) in [
            (
                "offsets_topic_segment_bytes",
                self.offsets_topic_segment_bytes,
            ),
            (
                "transaction_state_segment_bytes",
                self.transaction_state_segment_bytes,
            ),
        ] {
            anyhow::ensure!(
                (64 * 1024..=u32::MAX as u64).contains(&v),
                "{key} must be between 64 KiB and 4 GiB"
            );
        }
        crate::metadata::topic_config::check_topic_config("cleanup.policy", &self.cleanup_policy)
            .map_err(|e| anyhow::anyhow!("cleanup_policy: {e}"))?;
        anyhow::ensure!(
            self.log_cleaner_io_max_bytes_per_second > 0.0,
            "log_cleaner_io_max_bytes_per_second must be > 0"
        );
        anyhow::ensure!(
            self.log_cleaner_backoff_ms >= 10,
            "log_cleaner_backoff_ms must be >= 10"
        );
        anyhow::ensure!(
            self.log_cleaner_dedupe_buffer_bytes >= 1 << 20,
            "log_cleaner_dedupe_buffer_bytes must be at least 1 MiB"
        );
        anyhow::ensure!(self.write_buffer_bytes >= 64 * 1024);
        anyhow::ensure!(self.max_batch_bytes <= self.max_request_bytes);
        anyhow::ensure!(
            (1..=1000).contains(&self.offsets_topic_partitions),
            "offsets_topic_partitions must be 1..=1000"
        );
        anyhow::ensure!(
            (1..=1000).contains(&self.transaction_state_partitions),
            "transaction_state_partitions must be 1..=1000"
        );
        anyhow::ensure!(self.transaction_abort_check_interval_ms >= 10);
        anyhow::ensure!(self.group_min_session_timeout_ms <= self.group_max_session_timeout_ms);
        self.listen_addr()?;
        let voters = self.voters()?;
        if !voters.is_empty() {
            anyhow::ensure!(
                self.node_id >= 0,
                "node_id must be 0 or more (it is {})",
                self.node_id
            );
            anyhow::ensure!(
                self.broker_heartbeat_interval_ms >= 10
                    && self.broker_session_timeout_ms > self.broker_heartbeat_interval_ms,
                "broker_session_timeout_ms must exceed broker_heartbeat_interval_ms (>= 10)"
            );
            let ids: std::collections::BTreeSet<i32> = voters.iter().map(|v| v.id).collect();
            anyhow::ensure!(
                ids.len() == voters.len(),
                "controller_quorum_voters lists a node id twice: {:?}",
                self.controller_quorum_voters
            );
            let listen = self.controller_listen.as_deref().ok_or_else(|| {
                anyhow::anyhow!(
                    "node {} is in a cluster: set controller_listen (--controller-listen), where the metadata quorum reaches it",
                    self.node_id
                )
            })?;
            if let Some(me) = voters.iter().find(|v| v.id == self.node_id) {
                anyhow::ensure!(
                    listen == me.addr,
                    "controller_listen {listen} is not this node's voter address {} in controller_quorum_voters",
                    me.addr
                );
            } else if let Some(v) = voters.iter().find(|v| v.addr == listen) {
                anyhow::bail!(
                    "controller_listen {listen} is voter {}'s address; node {} is not a voter and needs an address of its own",
                    v.id,
                    self.node_id
                );
            }
        }
        anyhow::ensure!(
            self.default_replication_factor >= 1,
            "default_replication_factor must be >= 1"
        );
        anyhow::ensure!(
            self.min_insync_replicas >= 1,
            "min_insync_replicas must be >= 1"
        );
        anyhow::ensure!(
            self.replica_lag_time_max_ms >= 10 && self.replica_fetch_wait_max_ms >= 1,
            "replica_lag_time_max_ms must be >= 10 and replica_fetch_wait_max_ms >= 1"
        );
        anyhow::ensure!(
            self.replica_fetch_max_bytes >= 1024,
            "replica_fetch_max_bytes must be >= 1024"
        );
        anyhow::ensure!(
            self.offsets_topic_replication_factor >= 0
                && self.transaction_state_replication_factor >= 0,
            "offsets_topic_replication_factor and transaction_state_replication_factor must be >= 0 (0: min(3, brokers))"
        );
        Ok(())
    }

    /// The metadata quorum, parsed from `id@host:port` entries.
    pub fn voters(&self) -> anyhow::Result<Vec<Voter>> {
        self.controller_quorum_voters
            .iter()
            .map(|v| {
                let (id, addr) = v.split_once('@').ok_or_else(|| {
                    anyhow::anyhow!("voter {v:?}: expected id@host:port (e.g. 1@127.0.0.1:9093)")
                })?;
                let id: i32 = id
                    .parse()
                    .map_err(|_| anyhow::anyhow!("voter {v:?}: node id {id:?} is not a number"))?;
                anyhow::ensure!(id >= 0, "voter {v:?}: node id must be 0 or more");
                anyhow::ensure!(
                    addr.rsplit_once(':')
                        .is_some_and(|(_, p)| p.parse::<u16>().is_ok()),
                    "voter {v:?}: expected host:port after the @"
                );
                Ok(Voter {
                    id,
                    addr: addr.to_string(),
                })
            })
            .collect()
    }

    /// True when this node votes in the metadata quorum.
    pub fn is_voter(&self) -> bool {
        self.voters()
            .map(|v| v.iter().any(|v| v.id == self.node_id))
            .unwrap_or(false)
    }

    /// True when this node is part of a cluster (voters configured).
    pub fn is_cluster(&self) -> bool {
        !self.controller_quorum_voters.is_empty()
    }

    /// Where partitions live: `data_dirs`, or `data_dir` alone.
    pub fn log_dirs(&self) -> Vec<PathBuf> {
        if self.data_dirs.is_empty() {
            vec![self.data_dir.clone()]
        } else {
            self.data_dirs.clone()
        }
    }

    /// Where the broker metadata lives: the first log dir.
    pub fn meta_dir(&self) -> PathBuf {
        self.log_dirs().swap_remove(0)
    }

    pub fn listen_addr(&self) -> anyhow::Result<SocketAddr> {
        use std::net::ToSocketAddrs;
        self.listen
            .to_socket_addrs()
            .map_err(|e| anyhow::anyhow!("listen address {:?}: {e}", self.listen))?
            .next()
            .ok_or_else(|| anyhow::anyhow!("listen address {:?} resolves to nothing", self.listen))
    }

    /// (host, port) that clients are told to connect to.
    pub fn advertised(&self) -> (String, i32) {
        let listen = self.listen_addr().ok();
        let port = listen.map(|a| a.port() as i32).unwrap_or(9092);
        if let Some(adv) = &self.advertise {
            return host_port(adv, port);
        }
        match listen {
            Some(a) if !a.ip().is_unspecified() => (a.ip().to_string(), port),
            _ => ("127.0.0.1".to_string(), port),
        }
    }

    pub fn flush_policy(&self) -> FlushPolicy {
        if self.flush_interval_ms == 0 {
            FlushPolicy::EveryWrite
        } else {
            FlushPolicy::IntervalMs(self.flush_interval_ms)
        }
    }
}

/// `host:port` (or `[v6]:port`, or a bare host, which takes `port`) as (host, port).
pub fn host_port(addr: &str, port: i32) -> (String, i32) {
    if let Some((h, p)) = addr.rsplit_once(':') {
        if let Ok(p) = p.parse() {
            return (h.trim_matches(['[', ']']).to_string(), p);
        }
    }
    (addr.to_string(), port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unset_tail_cache_is_a_share_of_memory_split_among_shards() {
        let mut c = Config::default();
        assert_eq!(c.tail_cache_budget(), FALLBACK_TAIL_CACHE_BYTES);
        assert_eq!(c.resolve_tail_cache(2, Some(16 << 30)), 1 << 30);
        assert_eq!(c.tail_cache_budget(), 1 << 30);
        // Unreadable memory: the fallback.
        let mut c = Config::default();
        assert_eq!(c.resolve_tail_cache(2, None), FALLBACK_TAIL_CACHE_BYTES);
        // Set (0 too: no cache) wins.
        let mut c: Config = toml::from_str("tail_cache_bytes = 0").unwrap();
        assert_eq!(c.resolve_tail_cache(2, Some(16 << 30)), 0);
        let mut c: Config = toml::from_str("tail_cache_bytes = 1048576").unwrap();
        assert_eq!(c.resolve_tail_cache(2, Some(16 << 30)), 1 << 20);
    }

    #[test]
    fn this_machine_has_memory() {
        assert!(memory_bytes().is_some_and(|m| m > 1 << 20));
    }
}
