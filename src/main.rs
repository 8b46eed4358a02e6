use clap::{Parser, Subcommand};
use flumen::config::Config;
use std::path::PathBuf;

#[global_allocator]
static ALLOC: flumen::alloc::BrokerAllocator = flumen::alloc::BrokerAllocator;

#[derive(Parser)]
#[command(
    name = "flumen",
    version,
    about = "A Kafka-compatible message broker: thread-per-core, io_uring"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a broker (defaults: port 9092, data in ./data, one shard per usable core).
    Serve {
        /// host:port to listen on [default: 0.0.0.0:9092]
        #[arg(long)]
        listen: Option<String>,
        /// Directory for segments and metadata [default: ./data]; repeat it for several disks
        /// (JBOD: partitions spread over them, metadata in the first)
        #[arg(long)]
        data_dir: Vec<PathBuf>,
        /// Number of shards (pinned cores); 0 = all usable cores
        #[arg(long)]
        shards: Option<usize>,
        /// host:port advertised to clients in Metadata
        #[arg(long)]
        advertise: Option<String>,
        /// host:port for Prometheus metrics (GET /metrics)
        #[arg(long)]
        metrics_listen: Option<String>,
        /// TOML config file; command-line options override it
        #[arg(long)]
        config: Option<PathBuf>,
        /// This broker's id in a cluster (node_id)
        #[arg(long)]
        node_id: Option<i32>,
        /// host:port for the metadata quorum on this voter (controller_listen)
        #[arg(long)]
        controller_listen: Option<String>,
        /// The metadata quorum: id@host:port,... (controller_quorum_voters); none: single node
        #[arg(long, value_delimiter = ',')]
        voters: Vec<String>,
        /// This broker's rack (broker_rack)
        #[arg(long)]
        rack: Option<String>,
    },
    /// Load generator (works against any Kafka-protocol broker).
    Bench {
        #[command(subcommand)]
        kind: BenchKind,
    },
    /// Host tuning: compare this machine and a config with a profile, or apply the profile
    Tune {
        #[command(subcommand)]
        action: TuneAction,
    },
    /// Consumer group administration (works against any Kafka-protocol broker).
    Groups {
        /// Broker to talk to
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap: String,
        #[command(subcommand)]
        action: GroupAction,
    },
    /// ACLs: add, list, remove (CreateAcls, DescribeAcls, DeleteAcls; works against Kafka
    /// too). Set FLUMEN_SASL_USERNAME and FLUMEN_SASL_PASSWORD to log in with SASL PLAIN.
    Acls {
        /// Broker to talk to (before or after the subcommand)
        #[arg(long, default_value = "127.0.0.1:9092", global = true)]
        bootstrap: String,
        #[command(subcommand)]
        action: AclAction,
    },
    /// Client quotas: produce and fetch byte rates and request-time share per user and client
    /// id (AlterClientQuotas, DescribeClientQuotas; works against Kafka too)
    Quotas {
        /// Broker to talk to (before or after the subcommand)
        #[arg(long, default_value = "127.0.0.1:9092", global = true)]
        bootstrap: String,
        #[command(subcommand)]
        action: QuotaAction,
    },
    /// SCRAM users for SASL listeners: create (or change a password), delete, list
    /// (AlterUserScramCredentials, DescribeUserScramCredentials; works against Kafka too).
    Users {
        /// Broker to talk to (before or after the subcommand)
        #[arg(long, default_value = "127.0.0.1:9092", global = true)]
        bootstrap: String,
        #[command(subcommand)]
        action: UserAction,
    },
    /// Topic administration: list, describe, create, delete, alter configs, add partitions,
    /// delete records, move partitions between brokers (works against any Kafka-protocol
    /// broker). Tables by default, --json for scripts; exit status 1 when the broker refuses.
    Topics {
        /// Broker to talk to (before or after the subcommand)
        #[arg(long, default_value = "127.0.0.1:9092", global = true)]
        bootstrap: String,
        #[command(subcommand)]
        action: TopicAction,
    },
}

#[derive(Subcommand)]
enum TopicAction {
    /// Topics with their partition count and replication factor (Metadata)
    List {
        /// Include internal topics (__consumer_offsets, __transaction_state)
        #[arg(long, short = 'i')]
        internal: bool,
        /// One JSON document on stdout instead of a table
        #[arg(long)]
        json: bool,
    },
    /// A topic's config overrides and, per partition, leader, replicas, ISR, log start offset
    /// and high watermark (Metadata, DescribeConfigs, ListOffsets)
    Describe {
        topic: String,
        /// Every config with its source, not only the topic's overrides
        #[arg(long, short = 'a')]
        all_configs: bool,
        /// One JSON document on stdout instead of tables
        #[arg(long)]
        json: bool,
    },
    /// Create topics (CreateTopics)
    Create {
        #[arg(required = true, value_name = "TOPIC")]
        topics: Vec<String>,
        /// Partitions (-1: the broker's default)
        #[arg(long, short = 'p', default_value_t = -1, allow_hyphen_values = true)]
        partitions: i32,
        /// Replication factor (-1: the broker's default)
        #[arg(long, short = 'r', default_value_t = -1, allow_hyphen_values = true)]
        replicas: i16,
        /// A topic config override, key=value; repeat for several
        #[arg(long = "config", short = 'c', value_name = "KEY=VALUE",
              value_parser = flumen::admin::parse_config)]
        configs: Vec<(String, String)>,
        /// Have the broker validate the request without creating anything
        #[arg(long)]
        dry_run: bool,
        /// One JSON document on stdout instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Delete topics and their data (DeleteTopics)
    Delete {
        #[arg(required = true, value_name = "TOPIC")]
        topics: Vec<String>,
        /// One JSON document on stdout instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Set or remove a topic's config overrides (IncrementalAlterConfigs); a removed override
    /// falls back to the broker's value
    Alter {
        topic: String,
        /// Set a config, key=value; repeat for several
        #[arg(long, value_name = "KEY=VALUE", value_parser = flumen::admin::parse_config)]
        set: Vec<(String, String)>,
        /// Remove an override; repeat for several
        #[arg(long, value_name = "KEY")]
        delete: Vec<String>,
        /// Have the broker validate the change without making it
        #[arg(long)]
        dry_run: bool,
        /// One JSON document on stdout instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Grow a topic to COUNT partitions in all (CreatePartitions; never shrinks)
    AddPartitions {
        topic: String,
        /// The topic's partition count afterwards
        #[arg(long)]
        count: i32,
        /// Have the broker validate the change without making it
        #[arg(long)]
        dry_run: bool,
        /// One JSON document on stdout instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Delete the records of partitions below an offset by moving their log start
    /// (DeleteRecords, sent to each partition's leader); prints the new low watermark
    DeleteRecords {
        topic: String,
        /// Partitions, comma-separated or repeated
        #[arg(long, short = 'p', required = true, value_delimiter = ',')]
        partition: Vec<i32>,
        /// The new log start offset: records below it go (-1: all, up to the high watermark)
        #[arg(long, allow_hyphen_values = true)]
        before: i64,
        /// One JSON document on stdout instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Move partitions to other brokers (AlterPartitionReassignments): the new replicas copy
    /// the data, join the ISR, then the old ones are removed
    Reassign {
        #[arg(long)]
        topic: String,
        /// Partitions to move (default: all), comma-separated
        #[arg(long, value_delimiter = ',')]
        partitions: Vec<i32>,
        /// The new replicas, preferred leader first, comma-separated broker ids
        #[arg(long, value_delimiter = ',', required_unless_present = "cancel")]
        replicas: Vec<i32>,
        /// Cancel the reassignment in progress instead
        #[arg(long, conflicts_with = "replicas")]
        cancel: bool,
        /// Return only once the move is complete
        #[arg(long)]
        wait: bool,
    },
    /// Reassignments in progress (ListPartitionReassignments)
    Reassignments,
}

#[derive(Subcommand)]
enum BenchKind {
    /// Produce load: pipelined Produce requests from pinned threads, latency percentiles
    Produce {
        #[command(flatten)]
        common: BenchCommon,
        #[command(flatten)]
        produce: ProduceArgs,
    },
    /// Consume a topic, checking every record the bench wrote (no gaps, duplicates or
    /// corruption); by default from the earliest offsets to the end offsets seen at start
    Consume {
        #[command(flatten)]
        common: BenchCommon,
        #[command(flatten)]
        consume: ConsumeArgs,
        /// Connections, one pinned thread each, the partitions shared among them
        #[arg(long, default_value_t = 2)]
        connections: usize,
        /// Start at the log end instead of the start (then give --records or --duration)
        #[arg(long)]
        from_latest: bool,
        /// Stop after this many records
        #[arg(long, conflicts_with = "duration")]
        records: Option<u64>,
    },
    /// Produce and consume at once; end-to-end latency per record, every record checked
    E2e {
        #[command(flatten)]
        common: BenchCommon,
        #[command(flatten)]
        produce: ProduceArgs,
        #[command(flatten)]
        consume: ConsumeArgs,
        /// Consumer connections, one pinned thread each
        #[arg(long, default_value_t = 2)]
        consumers: usize,
        /// After the producers finish, give up waiting for missing records after this many
        /// seconds without progress
        #[arg(long, default_value_t = 30.0)]
        quiet_secs: f64,
    },
}

#[derive(clap::Args, Clone)]
struct BenchCommon {
    /// Broker to talk to
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    #[arg(long, default_value = "flumen-bench")]
    topic: String,
    /// Partitions of the topic when it has to be created
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    /// Seconds to run (for produce and e2e: instead of a record count)
    #[arg(long)]
    duration: Option<f64>,
    /// Print the summary as JSON
    #[arg(long)]
    json: bool,
    /// Write an HTML page with throughput and latency charts
    #[arg(long)]
    report: Option<PathBuf>,
}

#[derive(clap::Args, Clone)]
struct ProduceArgs {
    /// Value bytes per record (at least 32: the verification fields)
    #[arg(long, default_value_t = 1024)]
    record_size: usize,
    /// Records per batch (one batch per request)
    #[arg(long, default_value_t = 100)]
    batch_records: usize,
    /// With --rate: a batch goes out when full or this long after its first record
    #[arg(long, default_value_t = 5.0)]
    linger_ms: f64,
    /// 0, 1 or -1 (all)
    #[arg(long, default_value_t = 1, allow_hyphen_values = true)]
    acks: i16,
    /// Records to send, rounded up to whole batches (default 1,000,000 without --duration)
    #[arg(long = "records", id = "produce_records", conflicts_with = "duration")]
    records: Option<u64>,
    /// Producer connections, one pinned thread each
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// Requests in flight per connection
    #[arg(long, default_value_t = 8)]
    inflight: usize,
    /// Record keys: none, seq:N (record n gets key n mod N) or random:N
    #[arg(long, default_value = "none")]
    keys: flumen::bench::payload::Keys,
    /// none, gzip, snappy, lz4 or zstd
    #[arg(long, default_value = "none", value_parser = flumen::bench::payload::parse_compression)]
    compression: kafka_protocol::records::Compression,
    /// Target records/s over all connections (open loop: latency counts from the schedule)
    #[arg(long)]
    rate: Option<f64>,
}

#[derive(clap::Args, Clone)]
struct ConsumeArgs {
    /// Bytes per partition per Fetch
    #[arg(long, default_value_t = 4 << 20)]
    fetch_bytes: i32,
    /// Fetch long-poll wait
    #[arg(long, default_value_t = 100)]
    max_wait_ms: i32,
}

impl BenchCommon {
    fn into_common(self) -> flumen::bench::Common {
        flumen::bench::Common {
            bootstrap: self.bootstrap,
            topic: self.topic,
            partitions: self.partitions,
            duration: self.duration.map(std::time::Duration::from_secs_f64),
            json: self.json,
            report: self.report,
        }
    }
}

impl ProduceArgs {
    fn opts(self, common: flumen::bench::Common) -> flumen::bench::ProduceOpts {
        let records = self.records.unwrap_or(if common.duration.is_some() {
            u64::MAX
        } else {
            1_000_000
        });
        flumen::bench::ProduceOpts {
            common,
            record_size: self.record_size,
            batch_records: self.batch_records,
            linger_ms: self.linger_ms,
            acks: self.acks,
            records,
            connections: self.connections,
            inflight: self.inflight,
            keys: self.keys,
            compression: self.compression,
            rate: self.rate,
        }
    }
}

impl ConsumeArgs {
    fn opts(
        self,
        common: flumen::bench::Common,
        connections: usize,
        from_earliest: bool,
        records: Option<u64>,
    ) -> flumen::bench::ConsumeOpts {
        flumen::bench::ConsumeOpts {
            common,
            connections,
            fetch_bytes: self.fetch_bytes,
            max_wait_ms: self.max_wait_ms,
            from_earliest,
            records,
        }
    }
}

#[derive(Subcommand)]
enum TuneAction {
    /// Current against recommended for every setting of the profile
    Check {
        /// nvme-10g, nvme-25g, jbod-10g or laptop (`flumen tune list`)
        #[arg(long, default_value = "nvme-10g")]
        profile: String,
        /// Broker config to compare the broker settings with (default: built-in defaults)
        #[arg(long)]
        config: Option<PathBuf>,
        /// The reason for every setting, not only for those to change
        #[arg(long, short)]
        verbose: bool,
    },
    /// Write the sysctl and sysfs values that fail the check (root); print the rest as advice
    Apply {
        #[arg(long)]
        profile: String,
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print the commands instead of running them
        #[arg(long)]
        dry_run: bool,
    },
    /// The profiles this binary knows
    List,
}

/// The resource and entry of an ACL, or of an ACL filter (what is left out matches any).
#[derive(clap::Args)]
struct AclArgs {
    /// The principal, e.g. User:alice (User:* is everyone)
    #[arg(long)]
    principal: Option<String>,
    /// Operations: READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, CLUSTER_ACTION,
    /// DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE, ALL (repeat or separate with commas)
    #[arg(long = "operation", value_delimiter = ',', value_parser = parse_operation)]
    operations: Vec<flumen::security::acl::Operation>,
    /// The client IP address the ACL is for (default: any, *)
    #[arg(long)]
    host: Option<String>,
    /// A DENY ACL (default ALLOW)
    #[arg(long, conflicts_with = "allow")]
    deny: bool,
    /// Only ALLOW ACLs (list and remove)
    #[arg(long)]
    allow: bool,
    #[arg(long, group = "resource")]
    topic: Option<String>,
    #[arg(long, group = "resource")]
    group: Option<String>,
    #[arg(long = "transactional-id", group = "resource")]
    transactional_id: Option<String>,
    /// The cluster resource
    #[arg(long, group = "resource")]
    cluster: bool,
    /// The name is a prefix (a PREFIXED pattern)
    #[arg(long)]
    prefixed: bool,
    /// One JSON document on stdout instead of a table
    #[arg(long)]
    json: bool,
}

impl AclArgs {
    fn spec(&self, adding: bool) -> flumen::admin::AclSpec {
        use flumen::security::acl::{Permission, ResourceType, CLUSTER_NAME};
        let resource = match (&self.topic, &self.group, &self.transactional_id) {
            (Some(t), _, _) => Some((ResourceType::Topic, t.clone())),
            (_, Some(g), _) => Some((ResourceType::Group, g.clone())),
            (_, _, Some(t)) => Some((ResourceType::TransactionalId, t.clone())),
            _ if self.cluster => Some((ResourceType::Cluster, CLUSTER_NAME.to_string())),
            _ => None,
        };
        let permission = match (self.deny, self.allow) {
            (true, _) => Some(Permission::Deny),
            (false, true) => Some(Permission::Allow),
            (false, false) if adding => Some(Permission::Allow),
            (false, false) => None,
        };
        flumen::admin::AclSpec {
            resource,
            prefixed: self.prefixed,
            principal: self.principal.clone(),
            host: self.host.clone(),
            operations: self.operations.clone(),
            permission,
        }
    }
}

#[derive(Subcommand)]
enum AclAction {
    /// Add an ACL per operation: --principal, --operation and a resource are required
    Add(AclArgs),
    /// The ACLs that match (a named resource: every ACL that applies to it)
    List(AclArgs),
    /// Remove the ACLs that match exactly what is given (left out: any)
    Remove(AclArgs),
}

fn parse_operation(v: &str) -> Result<flumen::security::acl::Operation, String> {
    flumen::security::acl::Operation::from_name(v)
        .ok_or_else(|| format!("{v}: not an ACL operation"))
}

/// A quota entity: a user, a client id, or both; `<default>` is the default one.
#[derive(clap::Args)]
struct QuotaEntityArgs {
    #[arg(long)]
    user: Option<String>,
    #[arg(long = "client-id")]
    client_id: Option<String>,
}

#[derive(Subcommand)]
enum QuotaAction {
    /// Set quotas of an entity
    Set {
        #[command(flatten)]
        entity: QuotaEntityArgs,
        /// Bytes per second a producer may send (per shard, as Kafka's are per broker)
        #[arg(long)]
        producer_byte_rate: Option<f64>,
        /// Bytes per second a consumer may fetch
        #[arg(long)]
        consumer_byte_rate: Option<f64>,
        /// Share of one thread's time its requests may take, in percent
        #[arg(long)]
        request_percentage: Option<f64>,
    },
    /// Remove quotas of an entity (the ones named, else all)
    Remove {
        #[command(flatten)]
        entity: QuotaEntityArgs,
        /// producer_byte_rate, consumer_byte_rate or request_percentage (repeat)
        #[arg(long = "key")]
        keys: Vec<String>,
    },
    /// The quotas set (of the entity named, else all)
    List {
        #[command(flatten)]
        entity: QuotaEntityArgs,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum UserAction {
    /// Create a user, or set a new password for one (salted and hashed before it is sent)
    Create {
        user: String,
        /// The password (else read from the first line of stdin)
        #[arg(long)]
        password: Option<String>,
        /// SCRAM-SHA-256 or SCRAM-SHA-512
        #[arg(long, default_value = "SCRAM-SHA-512", value_parser = parse_mechanism)]
        mechanism: flumen::security::scram::Mechanism,
        /// PBKDF2 iterations (Kafka accepts 4096..=16384)
        #[arg(long, default_value_t = 8192)]
        iterations: u32,
        /// One JSON document on stdout instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Delete a user's credentials (both mechanisms unless one is named)
    Delete {
        user: String,
        #[arg(long, value_parser = parse_mechanism)]
        mechanism: Option<flumen::security::scram::Mechanism>,
        #[arg(long)]
        json: bool,
    },
    /// Users and their mechanisms
    List {
        #[arg(long)]
        json: bool,
    },
}

fn parse_mechanism(v: &str) -> Result<flumen::security::scram::Mechanism, String> {
    flumen::security::scram::Mechanism::from_name(&v.to_ascii_uppercase())
        .ok_or_else(|| format!("{v}: SCRAM-SHA-256 or SCRAM-SHA-512"))
}

#[derive(Subcommand)]
enum GroupAction {
    /// List groups with their state
    List,
    /// Members, assignments, committed offsets and lag per partition
    Describe { group: String },
    /// Move a stopped group's committed offsets for one topic
    ResetOffsets {
        group: String,
        #[arg(long)]
        topic: String,
        #[arg(long, conflicts_with_all = ["to_latest", "to_offset"])]
        to_earliest: bool,
        #[arg(long, conflicts_with_all = ["to_earliest", "to_offset"])]
        to_latest: bool,
        #[arg(long)]
        to_offset: Option<i64>,
    },
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FLUMEN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=error")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve {
            listen,
            data_dir,
            shards,
            advertise,
            metrics_listen,
            config,
            node_id,
            controller_listen,
            voters,
            rack,
        } => (|| {
            let mut cfg = match config {
                Some(path) => Config::from_file(&path)?,
                None => Config::default(),
            };
            if let Some(v) = listen {
                cfg.listen = v;
            }
            if let Some(first) = data_dir.first() {
                cfg.data_dir = first.clone();
                cfg.data_dirs = if data_dir.len() > 1 {
                    data_dir
                } else {
                    Vec::new()
                };
            }
            if let Some(v) = shards {
                cfg.shards = v;
            }
            if let Some(v) = metrics_listen {
                cfg.metrics_listen = Some(v);
            }
            if let Some(v) = advertise {
                cfg.advertise = Some(v);
            }
            if let Some(v) = node_id {
                cfg.node_id = v;
            }
            if let Some(v) = controller_listen {
                cfg.controller_listen = Some(v);
            }
            if !voters.is_empty() {
                cfg.controller_quorum_voters = voters;
            }
            if let Some(v) = rack {
                cfg.broker_rack = Some(v);
            }
            flumen::server::run(cfg)
        })(),
        Command::Bench { kind } => match kind {
            BenchKind::Produce { common, produce } => {
                flumen::bench::produce(produce.opts(common.into_common()))
            }
            BenchKind::Consume {
                common,
                consume,
                connections,
                from_latest,
                records,
            } => flumen::bench::consume(consume.opts(
                common.into_common(),
                connections,
                !from_latest,
                records,
            )),
            BenchKind::E2e {
                common,
                produce,
                consume,
                consumers,
                quiet_secs,
            } => {
                let common = common.into_common();
                flumen::bench::consume::e2e(
                    produce.opts(common.clone()),
                    consume.opts(common, consumers, false, None),
                    std::time::Duration::from_secs_f64(quiet_secs),
                )
            }
        },
        Command::Tune { action } => match action {
            TuneAction::Check {
                profile,
                config,
                verbose,
            } => flumen::tune::check(&profile, config.as_deref(), verbose),
            TuneAction::Apply {
                profile,
                config,
                dry_run,
            } => flumen::tune::apply(&profile, config.as_deref(), dry_run),
            TuneAction::List => {
                flumen::tune::list();
                Ok(())
            }
        },
        Command::Topics { bootstrap, action } => match action {
            TopicAction::List { internal, json } => {
                flumen::admin::topics_list(&bootstrap, internal, json)
            }
            TopicAction::Describe {
                topic,
                all_configs,
                json,
            } => flumen::admin::topics_describe(&bootstrap, &topic, all_configs, json),
            TopicAction::Create {
                topics,
                partitions,
                replicas,
                configs,
                dry_run,
                json,
            } => flumen::admin::topics_create(
                &bootstrap,
                &flumen::admin::NewTopics {
                    names: &topics,
                    partitions,
                    replication_factor: replicas,
                    configs: &configs,
                    dry_run,
                },
                json,
            ),
            TopicAction::Delete { topics, json } => {
                flumen::admin::topics_delete(&bootstrap, &topics, json)
            }
            TopicAction::Alter {
                topic,
                set,
                delete,
                dry_run,
                json,
            } => flumen::admin::topics_alter(&bootstrap, &topic, &set, &delete, dry_run, json),
            TopicAction::AddPartitions {
                topic,
                count,
                dry_run,
                json,
            } => flumen::admin::topics_add_partitions(&bootstrap, &topic, count, dry_run, json),
            TopicAction::DeleteRecords {
                topic,
                partition,
                before,
                json,
            } => flumen::admin::topics_delete_records(&bootstrap, &topic, &partition, before, json),
            TopicAction::Reassign {
                topic,
                partitions,
                replicas,
                cancel,
                wait,
            } => flumen::admin::reassign(
                &bootstrap,
                &topic,
                &partitions,
                (!cancel).then_some(replicas.as_slice()),
                wait,
            ),
            TopicAction::Reassignments => flumen::admin::list_reassignments(&bootstrap),
        },
        Command::Acls { bootstrap, action } => match action {
            AclAction::Add(a) => flumen::admin::acls_add(&bootstrap, &a.spec(true), a.json),
            AclAction::List(a) => flumen::admin::acls_list(&bootstrap, &a.spec(false), a.json),
            AclAction::Remove(a) => flumen::admin::acls_remove(&bootstrap, &a.spec(false), a.json),
        },
        Command::Quotas { bootstrap, action } => match action {
            QuotaAction::Set {
                entity,
                producer_byte_rate,
                consumer_byte_rate,
                request_percentage,
            } => {
                use flumen::security::quota::*;
                let values: Vec<(String, Option<f64>)> = [
                    (PRODUCER_BYTE_RATE, producer_byte_rate),
                    (CONSUMER_BYTE_RATE, consumer_byte_rate),
                    (REQUEST_PERCENTAGE, request_percentage),
                ]
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k.to_string(), Some(v))))
                .collect();
                if values.is_empty() {
                    Err(anyhow::anyhow!(
                        "set at least one of --producer-byte-rate, --consumer-byte-rate, \
                         --request-percentage"
                    ))
                } else {
                    flumen::admin::quotas_alter(
                        &bootstrap,
                        entity.user.as_deref(),
                        entity.client_id.as_deref(),
                        values,
                    )
                }
            }
            QuotaAction::Remove { entity, keys } => flumen::admin::quotas_alter(
                &bootstrap,
                entity.user.as_deref(),
                entity.client_id.as_deref(),
                keys.into_iter().map(|k| (k, None)).collect(),
            ),
            QuotaAction::List { entity, json } => flumen::admin::quotas_list(
                &bootstrap,
                entity.user.as_deref(),
                entity.client_id.as_deref(),
                json,
            ),
        },
        Command::Users { bootstrap, action } => match action {
            UserAction::Create {
                user,
                password,
                mechanism,
                iterations,
                json,
            } => {
                let password = match password {
                    Some(p) => Ok(p),
                    None => {
                        let mut line = String::new();
                        std::io::stdin()
                            .read_line(&mut line)
                            .map(|_| line.trim_end_matches(['\r', '\n']).to_string())
                            .map_err(anyhow::Error::from)
                    }
                };
                password.and_then(|p| {
                    flumen::admin::users_create(&bootstrap, &user, &p, mechanism, iterations, json)
                })
            }
            UserAction::Delete {
                user,
                mechanism,
                json,
            } => flumen::admin::users_delete(&bootstrap, &user, mechanism, json),
            UserAction::List { json } => flumen::admin::users_list(&bootstrap, json),
        },
        Command::Groups { bootstrap, action } => match action {
            GroupAction::List => flumen::admin::list(&bootstrap),
            GroupAction::Describe { group } => flumen::admin::describe(&bootstrap, &group),
            GroupAction::ResetOffsets {
                group,
                topic,
                to_earliest,
                to_latest,
                to_offset,
            } => {
                let to = match (to_earliest, to_latest, to_offset) {
                    (true, _, _) => Some(flumen::admin::ResetTo::Earliest),
                    (_, true, _) => Some(flumen::admin::ResetTo::Latest),
                    (_, _, Some(o)) => Some(flumen::admin::ResetTo::Offset(o)),
                    _ => None,
                };
                match to {
                    Some(to) => flumen::admin::reset_offsets(&bootstrap, &group, &topic, to),
                    None => Err(anyhow::anyhow!(
                        "say where to: --to-earliest, --to-latest or --to-offset N"
                    )),
                }
            }
        },
    };
    if let Err(e) = result {
        eprintln!("flumen: {e:#}");
        std::process::exit(1);
    }
}
