use clap::{Parser, Subcommand};
use flumen::config::Config;
use std::path::PathBuf;

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
    };
    if let Err(e) = result {
        eprintln!("flumen: {e:#}");
        std::process::exit(1);
    }
}
