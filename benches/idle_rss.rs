//! Idle-connection memory benchmark: the proxy's RSS at start and per idle proxied MQTT connection.
//!
//! Starts mosquitto and the release `brokerside` binary as child processes on free loopback ports,
//! then opens idle MQTT 3.1.1 connections through the proxy from raw sockets in this process
//! (CONNECT, CONNACK, then silence: keepalive 600 s, so no PINGREQ during the run). It reads the
//! proxy's VmRSS from /proc at start, with 1 connection, with N/2 and with N, and prints a Markdown
//! table of the figures against their targets. Run it through `benches/idle_rss.sh`; see
//! benches/README.md for how to read it.
//!
//! `cargo bench --bench idle_rss -- [--connections N | --smoke]`

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[path = "loadgen/idle.rs"]
mod idle;
#[path = "loadgen/mqtt.rs"]
mod mqtt;
#[path = "loadgen/procs.rs"]
mod procs;
#[path = "loadgen/targets.rs"]
mod targets;
#[path = "loadgen/text.rs"]
mod text;
#[path = "loadgen/tls.rs"]
mod tls;

use idle::Ladder;
use procs::{Scratch, free_port};
use text::{mib, thousands};

/// Connections held by default: 9,000 costs the proxy 18,000 fds under the 20,000 open-files cap.
const DEFAULT_CONNECTIONS: usize = 9_000;
/// Connections for `--smoke`, the quick CI run that keeps the harness from rotting.
const SMOKE_CONNECTIONS: usize = 200;
/// Connections being opened at once, by default.
const DEFAULT_CONCURRENCY: usize = 200;
/// Proxy RSS target per idle connection, in bytes (1.0 KiB).
const TARGET_PER_CONNECTION: f64 = 1024.0;
/// Proxy RSS target at start, in bytes (8 MB, read strictly as 8,000,000 bytes).
const TARGET_START: f64 = 8_000_000.0;

fn main() -> ExitCode {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("idle_rss: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if options.help {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let outcome = procs::run_until_interrupted(run(&options));
    match outcome {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("idle_rss: {message}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "usage: cargo bench --bench idle_rss -- [--connections N | --smoke]

  --connections N  idle MQTT connections to hold through the proxy (default 9000)
  --smoke          a quick run with 200 connections (CI)
  --concurrency C  connections being opened at once (default 200)

  BROKERSIDE_BIN   the proxy binary (default: the release binary cargo just built)
  MOSQUITTO_BIN    the broker binary (default: mosquitto on PATH, then /usr/sbin/mosquitto)";

/// What the command line asked for.
struct Options {
    connections: usize,
    concurrency: usize,
    help: bool,
}

impl Options {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
        let mut options = Options {
            connections: DEFAULT_CONNECTIONS,
            concurrency: DEFAULT_CONCURRENCY,
            help: false,
        };
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--connections" => {
                    let value = args.next().ok_or("--connections needs a number")?;
                    options.connections = value
                        .parse()
                        .map_err(|_| format!("--connections: {value:?} is not a number"))?;
                }
                "--concurrency" => {
                    let value = args.next().ok_or("--concurrency needs a number")?;
                    options.concurrency =
                        value.parse().ok().filter(|&c| c > 0).ok_or_else(|| {
                            format!("--concurrency: {value:?} is not a positive number")
                        })?;
                }
                "--smoke" => options.connections = SMOKE_CONNECTIONS,
                // `cargo bench` appends --bench to a harness = false target.
                "--bench" => {}
                "-h" | "--help" => options.help = true,
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        if options.connections < 2 {
            return Err("--connections must be at least 2".into());
        }
        Ok(options)
    }
}

/// Runs the whole measurement and returns the report to print.
async fn run(options: &Options) -> Result<String, String> {
    let n = options.connections;
    procs::check_fd_limit(n, "benches/idle_rss.sh")?;
    let scratch = Scratch::new("idle-rss")?;

    let broker_port = free_port()?;
    let broker = targets::start_broker(&scratch, broker_port)?;
    let proxy_port = free_port()?;
    let proxy = targets::start_brokerside(&scratch, proxy_port, broker_port, None)?;
    // Watch the socket table rather than connect: a probe connection would be the first client.
    proxy.wait_listening(proxy_port)?;
    let proxy_addr = SocketAddr::from(([127, 0, 0, 1], proxy_port));

    let ladder = idle::climb(
        &tls::Plain,
        &proxy,
        &broker,
        proxy_addr,
        n,
        options.concurrency,
    )
    .await?;
    let proxy_fds = procs::count_fds(proxy.pid())?;
    let rollup = procs::smaps_rollup(proxy.pid())
        .map(|(anon, other)| {
            format!(
                "anonymous {}, file-backed and other {}",
                mib(anon),
                mib(other)
            )
        })
        .unwrap_or_default();

    Ok(report(&Report {
        concurrency: options.concurrency,
        proxy_fds,
        threads: procs::status_field(proxy.pid(), "Threads:").unwrap_or(0),
        rollup,
        proxy_bin: proxy.program.clone(),
        ladder,
    }))
}

/// Everything the printed report is made of.
struct Report {
    concurrency: usize,
    ladder: Ladder<tokio::net::TcpStream>,
    proxy_fds: usize,
    threads: u64,
    rollup: String,
    proxy_bin: PathBuf,
}

fn report(report: &Report) -> String {
    let r = &report.ladder;
    let start_bytes = r.at_start.proxy as f64 * 1024.0;
    let per_all = r.proxy_per_connection();
    let per_step = r.proxy_per_connection_second_half();
    let met = |ok: bool| if ok { "yes" } else { "**no**" };

    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n## brokerside idle-connection memory ({} idle MQTT connections)\n",
        thousands(r.n as u64)
    );
    let _ = writeln!(out, "| figure | value | target | met? |");
    let _ = writeln!(out, "|---|---|---|---|");
    let _ = writeln!(
        out,
        "| RSS at start | {} | ≤ 8 MB | {} |",
        mib(r.at_start.proxy),
        met(start_bytes <= TARGET_START)
    );
    let _ = writeln!(
        out,
        "| RSS per idle MQTT connection (1 → {}) | {} | ≤ 1.0 KiB | {} |",
        thousands(r.n as u64),
        per_conn(per_all),
        met(per_all <= TARGET_PER_CONNECTION)
    );
    let _ = writeln!(
        out,
        "| RSS per idle MQTT connection ({} → {}) | {} | ≤ 1.0 KiB | {} |",
        thousands(r.half as u64),
        thousands(r.n as u64),
        per_conn(per_step),
        met(per_step <= TARGET_PER_CONNECTION)
    );
    for (label, sample) in [
        ("1 connection".to_string(), &r.at_one),
        (
            format!("{} connections", thousands(r.half as u64)),
            &r.at_half,
        ),
        (format!("{} connections", thousands(r.n as u64)), &r.at_full),
    ] {
        let _ = writeln!(out, "| RSS with {label} | {} | — | — |", mib(sample.proxy));
    }

    let _ = writeln!(out, "\nContext, not targets:\n");
    let _ = writeln!(out, "| figure | value |");
    let _ = writeln!(out, "|---|---|");
    let _ = writeln!(
        out,
        "| broker (mosquitto) RSS per connection (1 → {}) | {} |",
        thousands(r.n as u64),
        per_conn(r.broker_per_connection())
    );
    let _ = writeln!(
        out,
        "| broker (mosquitto) RSS at start / with {} | {} / {} |",
        thousands(r.n as u64),
        mib(r.at_start.broker),
        mib(r.at_full.broker)
    );
    let _ = writeln!(
        out,
        "| proxy fds / threads with {} connections | {} / {} |",
        thousands(r.n as u64),
        thousands(report.proxy_fds as u64),
        report.threads
    );
    if !report.rollup.is_empty() {
        let _ = writeln!(
            out,
            "| proxy smaps_rollup with {} connections | {} |",
            thousands(r.n as u64),
            report.rollup
        );
    }
    let _ = writeln!(
        out,
        "| time to open {} connections ({} at a time) | {:.1} s |",
        thousands(r.n as u64),
        report.concurrency,
        r.opening.as_secs_f64()
    );
    let _ = writeln!(out, "| proxy binary | `{}` |", report.proxy_bin.display());
    out
}

fn per_conn(bytes: f64) -> String {
    format!("{:.2} KiB ({bytes:.0} B)", bytes / 1024.0)
}
