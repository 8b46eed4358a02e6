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
        /// Directory for segments and metadata [default: ./data]
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Number of shards (pinned cores); 0 = all usable cores
        #[arg(long)]
        shards: Option<usize>,
        /// host:port advertised to clients in Metadata
        #[arg(long)]
        advertise: Option<String>,
        /// TOML config file; command-line options override it
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Load generator (works against any Kafka-protocol broker).
    Bench {
        #[command(subcommand)]
        kind: BenchKind,
    },
    /// Consumer group administration (works against any Kafka-protocol broker).
    Groups {
        /// Broker to talk to
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap: String,
        #[command(subcommand)]
        action: GroupAction,
    },
}

#[derive(Subcommand)]
enum BenchKind {
    /// Produce load: pipelined Produce requests from pinned threads, latency percentiles
    Produce {
        /// Broker to talk to
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap: String,
        #[arg(long, default_value = "flumen-bench")]
        topic: String,
        /// Partitions of the topic when it has to be created
        #[arg(long, default_value_t = 8)]
        partitions: i32,
        /// Value bytes per record
        #[arg(long, default_value_t = 1024)]
        record_size: usize,
        /// Records per batch (one batch per request)
        #[arg(long, default_value_t = 100)]
        batch_records: usize,
        /// 0, 1 or -1 (all)
        #[arg(long, default_value_t = 1, allow_hyphen_values = true)]
        acks: i16,
        /// Records to send, rounded up to whole batches
        #[arg(long, conflicts_with = "duration")]
        records: Option<u64>,
        /// Seconds to run instead of a record count
        #[arg(long)]
        duration: Option<f64>,
        /// Connections, one pinned thread each
        #[arg(long, default_value_t = 2)]
        connections: usize,
        /// Requests in flight per connection
        #[arg(long, default_value_t = 8)]
        inflight: usize,
        /// Print the summary as JSON
        #[arg(long)]
        json: bool,
    },
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
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
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
            config,
        } => (|| {
            let mut cfg = match config {
                Some(path) => Config::from_file(&path)?,
                None => Config::default(),
            };
            if let Some(v) = listen {
                cfg.listen = v;
            }
            if let Some(v) = data_dir {
                cfg.data_dir = v;
            }
            if let Some(v) = shards {
                cfg.shards = v;
            }
            if let Some(v) = advertise {
                cfg.advertise = Some(v);
            }
            flumen::server::run(cfg)
        })(),
        Command::Bench {
            kind:
                BenchKind::Produce {
                    bootstrap,
                    topic,
                    partitions,
                    record_size,
                    batch_records,
                    acks,
                    records,
                    duration,
                    connections,
                    inflight,
                    json,
                },
        } => flumen::bench::produce(flumen::bench::ProduceOpts {
            bootstrap,
            topic,
            partitions,
            record_size,
            batch_records,
            acks,
            records: records.unwrap_or(if duration.is_some() {
                u64::MAX
            } else {
                1_000_000
            }),
            duration: duration.map(std::time::Duration::from_secs_f64),
            connections,
            inflight,
            json,
        }),
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
