//! The brokerside command line: parse arguments, load and validate the config, run.

use std::path::PathBuf;
use std::process::ExitCode;

use brokerside::config::Config;
use brokerside::sidecar::Sidecar;
use clap::{Parser, Subcommand, ValueEnum};

/// mimalloc rather than glibc malloc: the runtime's per-socket registrations are 128-byte aligned
/// and glibc pads each by about 170 bytes, which at 9,000 idle connections is a third of the
/// proxy's memory (benches/idle_rss.rs measures it).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for an invalid config file.
const EXIT_CONFIG: u8 = 2;
/// Exit code when the sidecar cannot start (a port in use, no runtime).
const EXIT_START: u8 = 1;

#[derive(Parser)]
#[command(
    name = "brokerside",
    version,
    about = "Sidecar proxy for clustered MQTT brokers"
)]
struct Cli {
    /// Log format: text for people, json for log shipping.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log level or filter (RUST_LOG syntax); RUST_LOG wins when set.
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sidecar.
    Run {
        /// Config file; without it the embedded default (config/brokerside.toml) runs.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate a config file and print the effective config.
    CheckConfig {
        /// The config file to check.
        file: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, &cli.log_level);
    match cli.command {
        Command::CheckConfig { file } => match Config::from_file(&file) {
            Ok(config) => {
                print!("{}", config.to_toml());
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Run { config } => {
            let loaded = match &config {
                Some(path) => Config::from_file(path),
                None => Config::embedded_default(),
            };
            match loaded {
                Ok(config) => run(config),
                Err(errors) => {
                    eprintln!("{errors}");
                    ExitCode::from(EXIT_CONFIG)
                }
            }
        }
    }
}

fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn run(config: Config) -> ExitCode {
    // The relay runs on its own threads (`[runtime] relay_threads`); what is left here (admin,
    // health checks, discovery, the cluster guard, the drain) is light work that one thread
    // serves, and it keeps answering while the relay threads are saturated.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the async runtime: {error}");
            return ExitCode::from(EXIT_START);
        }
    };
    runtime.block_on(async move {
        let sidecar = match Sidecar::bind(config) {
            Ok(sidecar) => sidecar,
            Err(error) => {
                eprintln!("{error}");
                return ExitCode::from(EXIT_START);
            }
        };
        tracing::info!(admin = %sidecar.admin_addr(), version = env!("CARGO_PKG_VERSION"), "brokerside started");
        let drain = sidecar.drain();
        tokio::spawn(ignore_sighup());
        tokio::spawn(async move {
            let why = brokerside::shutdown::signal().await;
            drain.start(why);
            brokerside::shutdown::signal().await;
            tracing::warn!("second signal: exiting now");
            std::process::exit(0);
        });
        match sidecar.run().await {
            Ok(stopped) => {
                tracing::info!(
                    closed_paced = stopped.closed_paced,
                    cut_at_deadline = stopped.cut_at_deadline,
                    "stopped"
                );
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("cannot serve: {error}");
                ExitCode::from(EXIT_START)
            }
        }
    })
}

/// SIGHUP would end the process by default; a config reload is not implemented yet, so it is
/// logged and otherwise ignored (a supervisor that sends it on a config change keeps a running
/// sidecar; restart to apply the change).
async fn ignore_sighup() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        return;
    };
    while hangups.recv().await.is_some() {
        tracing::warn!(
            "SIGHUP received: config reload is not implemented yet; restart to apply a new config"
        );
    }
}
