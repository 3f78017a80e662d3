//! The brokerside command line: parse arguments, load and validate the config, run.

use std::path::PathBuf;
use std::process::ExitCode;

use brokerside::config::Config;
use brokerside::shutdown::{self, StopSignals};
use brokerside::sidecar::{Sidecar, StartError};
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
    // SIGHUP's default action ends the process, and a supervisor may send one the moment it has
    // rendered a new config, start-up included. Ignored from the first instruction of main until
    // the runtime's handler takes over (before any port is bound).
    // SAFETY: signal(2) with SIG_IGN, before any other thread exists; no handler code runs.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
    let cli = Cli::parse();
    init_logging(cli.log_format, &cli.log_level);
    // One crypto provider for the process. Every TLS config names ring explicitly too, so a
    // second provider that a dependency enables can never leave rustls without a default.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.command {
        Command::CheckConfig { file } => check_config(&file),
        Command::Run { config } => run(config),
    }
}

/// Validates `file` and reads every TLS file it names; prints the effective config, or every
/// problem. A certificate that expires soon is a warning on stderr, not a failure.
fn check_config(file: &std::path::Path) -> ExitCode {
    let config = match Config::from_file(file) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match brokerside::tls::load_listeners(&config) {
        Ok((_, warnings)) => {
            for warning in warnings {
                eprintln!("warning: {}: {}", warning.path, warning.message);
            }
            print!("{}", config.to_toml());
            ExitCode::SUCCESS
        }
        Err(problems) => {
            for problem in problems {
                eprintln!("{problem}");
            }
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(quiet_dependencies(level)))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// `level` with hickory's per-datagram warnings ("ignoring response with wrong message id", one
/// per stray UDP answer) held back unless the operator asked for debug output: discovery logs
/// its own failures, once per state change, and counts them. A filter that names targets
/// itself is taken as it is.
fn quiet_dependencies(level: &str) -> String {
    let plain = matches!(
        level.trim().to_ascii_lowercase().as_str(),
        "error" | "warn" | "info"
    );
    if plain {
        format!("{level},hickory_proto=error,hickory_resolver=error")
    } else {
        level.to_string()
    }
}

fn run(file: Option<PathBuf>) -> ExitCode {
    // The relay runs on its own threads (`[runtime] relay_threads`); what is left here (admin,
    // health checks, discovery, the cluster guard, reloads, the drain) is light work that one
    // thread serves, and it keeps answering while the relay threads are saturated.
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
        // Before anything is bound: from here SIGTERM, SIGINT and SIGHUP no longer take their
        // default action (ending the process). A SIGTERM that comes during start-up drains
        // once the sidecar runs; a SIGHUP then finds the config just read.
        let (mut stop, mut hangup) = match (StopSignals::install(), shutdown::hangup()) {
            (Ok(stop), Ok(hangup)) => (stop, hangup),
            (Err(error), _) | (_, Err(error)) => {
                eprintln!("cannot install signal handlers: {error}");
                return ExitCode::from(EXIT_START);
            }
        };
        let bound = match &file {
            Some(path) => Sidecar::bind_file(path),
            None => Config::embedded_default()
                .map_err(StartError::from)
                .and_then(Sidecar::bind),
        };
        let sidecar = match bound {
            Ok(sidecar) => sidecar,
            Err(error @ StartError::Config(_)) => {
                eprintln!("{error}");
                return ExitCode::from(EXIT_CONFIG);
            }
            Err(error) => {
                eprintln!("{error}");
                return ExitCode::from(EXIT_START);
            }
        };
        tracing::info!(admin = %sidecar.admin_addr(), version = env!("CARGO_PKG_VERSION"), "brokerside started");
        let drain = sidecar.drain();
        let reloader = sidecar.reloader();
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                tracing::info!("SIGHUP received");
                reloader.request("SIGHUP");
            }
        });
        tokio::spawn(async move {
            let why = stop.recv().await;
            drain.start(why);
            stop.recv().await;
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
