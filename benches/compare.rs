//! brokerside side by side with HAProxy (as shipped and with splice), NGINX stream and no proxy at
//! all, on one machine in one run (issue 5): bulk throughput and proxy CPU per GB (iperf3), new
//! connections per second and proxy CPU per connection (a one-byte backend in this process), RSS
//! at start and per idle MQTT connection, MQTT publish→subscribe round trips (mosquitto), and
//! brokerside's config reloads under load (SIGHUP → new generation, round trips while reloading),
//! and with TLS terminated by the proxy (issue 11): RSS per idle MQTTS connection, at start and
//! after they closed, full TLS 1.3 handshakes per second and CPU per handshake, TLS bulk and CPU
//! per GB; the same TLS figures with TLS 1.2 when asked (`--tls-version 1.2`).
//!
//! Each proxy is a child process on a loopback port with a config generated into a temporary
//! directory, started afresh for every measurement. Rounds rotate the order of the targets, each
//! figure waits for a quiet machine first, and every figure is also a ratio to direct in the same
//! round. Writes a Markdown table, CSVs and a PNG chart to benches/results/. Run it through
//! `benches/compare.sh`, which installs what it needs; see benches/README.md.
//!
//! `cargo bench --bench compare -- [--smoke] [--rounds N] [--seconds S] ...`

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

#[path = "loadgen/bulk.rs"]
mod bulk;
#[path = "loadgen/chart.rs"]
mod chart;
#[path = "loadgen/connrate.rs"]
mod connrate;
#[path = "loadgen/idle.rs"]
mod idle;
#[path = "loadgen/mqtt.rs"]
mod mqtt;
#[path = "loadgen/msgcost.rs"]
mod msgcost;
#[path = "loadgen/procs.rs"]
mod procs;
#[path = "loadgen/reload.rs"]
mod reload;
#[path = "loadgen/report.rs"]
mod report;
#[path = "loadgen/targets.rs"]
mod targets;
#[path = "loadgen/text.rs"]
mod text;
#[path = "loadgen/tls.rs"]
mod tls;

use procs::{Scratch, free_port, load_average};
use report::{Figure, Results};
use targets::Target;

/// Idle MQTT connections held by default: 9,000 costs the proxy 18,000 fds under this machine's
/// cap of 20,000 open files per process.
const DEFAULT_CONNECTIONS: usize = 9_000;
/// Idle connections being opened at once.
const IDLE_CONCURRENCY: usize = 200;
/// Clients connecting at once for the connection-rate figure.
const DEFAULT_CONN_CONCURRENCY: usize = 64;
/// Round trips timed per target.
const DEFAULT_SAMPLES: usize = 5_000;
/// MQTT payload of each timed message.
const PAYLOAD: usize = 64;
/// The 1-minute load under which the machine counts as quiet.
const DEFAULT_QUIET_LOAD: f64 = 0.7;
/// How long to wait for a quiet machine before measuring anyway.
const DEFAULT_QUIET_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between two targets' measurements, so sockets and CPU settle.
const PAUSE: Duration = Duration::from_secs(1);
/// Timed reloads (SIGHUP → new generation in /health) per round, and with `--smoke`.
const RELOAD_SAMPLES: usize = 20;
const SMOKE_RELOAD_SAMPLES: usize = 5;
/// Pause between two timed reloads.
const RELOAD_PAUSE: Duration = Duration::from_millis(100);
/// How often the config is reloaded during the "reloading" segments of round trips: 10 per second.
const RELOAD_EVERY: Duration = Duration::from_millis(100);
/// Round-trip segments of the reload step, alternating none, reloading, none, reloading.
const RELOAD_SEGMENTS: usize = 4;
/// At most one round trip per this in the reload step, so that each segment lasts long enough
/// to hold reloads (5,000 round trips: 1.25 s and about 13 reloads per segment).
const RELOAD_RTT_PACE: Duration = Duration::from_millis(1);
/// Pause after each segment, so a reload's tail does not spill into the next segment.
const SEGMENT_SETTLE: Duration = Duration::from_millis(200);

fn main() -> ExitCode {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("compare: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if options.help {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let outcome = procs::run_until_interrupted(run(&options));
    match outcome {
        Ok(0) => ExitCode::SUCCESS,
        Ok(failed) => {
            eprintln!("compare: {failed} measurement(s) failed; see the notes above");
            ExitCode::FAILURE
        }
        Err(message) => {
            eprintln!("compare: {message}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "usage: cargo bench --bench compare -- [OPTIONS]   (or benches/compare.sh)

  --smoke              1 round, 1 s per timed figure, 200 idle connections, 500 round trips
  --rounds N           rounds, the order of targets rotated each time (default 3)
  --seconds S          length of each timed figure: bulk, connections/s, handshakes/s, TLS bulk
                       (default 5)
  --connections N      idle MQTT(S) connections for the RSS figures (default 9000)
  --concurrency C      clients connecting at once for connections/s (default 64)
  --samples N          MQTT round trips timed per target (default 5000)
  --msg-rate R         messages published per second in all for msgcost (default 50000; 5000
                       with --smoke)
  --targets LIST       comma-separated among haproxy,haproxy-splice,nginx,brokerside (direct is
                       always measured: every ratio needs it)
  --figures LIST       comma-separated among bulk (= bulk1,bulk8),bulk1,bulk8,conn,idle,rtt,
                       reload, tls (= tls-idle,tls-handshake,tls-bulk),tls-idle,tls-handshake,
                       tls-bulk, rtt-pinned, msgcost, cost (= conn,rtt-pinned,msgcost) (default
                       all; reload measures brokerside only, the tls figures HAProxy, NGINX and
                       brokerside)
  --tls-version V      the one TLS version the clients of the tls figures offer, 1.2 or 1.3, and
                       the lowest the proxies accept (default 1.3); the TLS rows name it
  --quiet-load L       1-minute load under which the machine counts as quiet (default 0.7)
  --quiet-timeout S    longest wait for a quiet machine before each figure (default 60)
  --out DIR            where the table, CSVs and chart go (default benches/results)

  BROKERSIDE_BIN, HAPROXY_BIN, NGINX_BIN, MOSQUITTO_BIN, IPERF3_BIN override the programs.";

/// What the command line asked for.
struct Options {
    smoke: bool,
    rounds: usize,
    seconds: u64,
    connections: usize,
    concurrency: usize,
    samples: usize,
    msg_rate: u64,
    targets: Vec<Target>,
    steps: Vec<Step>,
    tls_version: tls::TlsVersion,
    quiet_load: f64,
    quiet_timeout: Duration,
    out: PathBuf,
    help: bool,
}

impl Options {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
        let mut options = Options {
            smoke: false,
            rounds: 3,
            seconds: 5,
            connections: DEFAULT_CONNECTIONS,
            concurrency: DEFAULT_CONN_CONCURRENCY,
            samples: DEFAULT_SAMPLES,
            msg_rate: msgcost::DEFAULT_RATE,
            targets: Target::ALL.to_vec(),
            steps: Step::ALL.to_vec(),
            tls_version: tls::TlsVersion::default(),
            quiet_load: DEFAULT_QUIET_LOAD,
            quiet_timeout: DEFAULT_QUIET_TIMEOUT,
            out: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/benches/results")),
            help: false,
        };
        fn number<T: std::str::FromStr>(flag: &str, value: Option<String>) -> Result<T, String> {
            let value = value.ok_or_else(|| format!("{flag} needs a value"))?;
            value
                .parse()
                .map_err(|_| format!("{flag}: {value:?} is not a number"))
        }
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--smoke" => {
                    options.smoke = true;
                    options.rounds = 1;
                    options.seconds = 1;
                    options.connections = 200;
                    options.samples = 500;
                    options.msg_rate = msgcost::SMOKE_RATE;
                    options.quiet_timeout = Duration::from_secs(5);
                }
                "--rounds" => options.rounds = number(&arg, args.next())?,
                "--seconds" => options.seconds = number(&arg, args.next())?,
                "--connections" => options.connections = number(&arg, args.next())?,
                "--concurrency" => options.concurrency = number(&arg, args.next())?,
                "--samples" => options.samples = number(&arg, args.next())?,
                "--msg-rate" => options.msg_rate = number(&arg, args.next())?,
                "--quiet-load" => options.quiet_load = number(&arg, args.next())?,
                "--quiet-timeout" => {
                    options.quiet_timeout = Duration::from_secs(number(&arg, args.next())?);
                }
                "--targets" => {
                    let list = args.next().ok_or("--targets needs a list")?;
                    options.targets = parse_targets(&list)?;
                }
                "--figures" => {
                    let list = args.next().ok_or("--figures needs a list")?;
                    options.steps = list
                        .split(',')
                        .map(Step::parse)
                        .collect::<Result<Vec<_>, _>>()?
                        .concat();
                }
                "--tls-version" => {
                    let version = args.next().ok_or("--tls-version needs 1.2 or 1.3")?;
                    options.tls_version = tls::TlsVersion::parse(&version)?;
                }
                "--out" => options.out = PathBuf::from(args.next().ok_or("--out needs a dir")?),
                // `cargo bench` appends --bench to a harness = false target.
                "--bench" => {}
                "-h" | "--help" => options.help = true,
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        if options.rounds == 0
            || options.seconds == 0
            || options.concurrency == 0
            || options.msg_rate == 0
        {
            return Err(
                "--rounds, --seconds, --concurrency and --msg-rate must be positive".into(),
            );
        }
        if options.connections < 2 || options.samples < 2 {
            return Err("--connections and --samples must be at least 2".into());
        }
        Ok(options)
    }
}

fn parse_targets(list: &str) -> Result<Vec<Target>, String> {
    let mut targets = vec![Target::Direct];
    for name in list.split(',') {
        let target = match name.trim() {
            "direct" => continue,
            "haproxy" => Target::Haproxy,
            "haproxy-splice" => Target::HaproxySplice,
            "nginx" => Target::Nginx,
            "brokerside" => Target::Brokerside,
            other => return Err(format!("--targets: unknown target {other:?}")),
        };
        if !targets.contains(&target) {
            targets.push(target);
        }
    }
    // Keep the table's column order whatever order the list had.
    targets.sort_by_key(|t| Target::ALL.iter().position(|a| a == t));
    Ok(targets)
}

/// One measurement run for every target in turn; a step yields one or two figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Bulk1,
    Bulk8,
    Conn,
    Idle,
    Rtt,
    Reload,
    TlsIdle,
    TlsHandshake,
    TlsBulk,
    RttPinned,
    MsgCost,
}

impl Step {
    const ALL: [Step; 11] = [
        Step::Bulk1,
        Step::Bulk8,
        Step::Conn,
        Step::Idle,
        Step::Rtt,
        Step::Reload,
        Step::TlsIdle,
        Step::TlsHandshake,
        Step::TlsBulk,
        Step::RttPinned,
        Step::MsgCost,
    ];

    fn parse(name: &str) -> Result<Vec<Step>, String> {
        match name.trim() {
            "bulk" => Ok(vec![Step::Bulk1, Step::Bulk8]),
            "bulk1" => Ok(vec![Step::Bulk1]),
            "bulk8" => Ok(vec![Step::Bulk8]),
            "conn" => Ok(vec![Step::Conn]),
            "idle" => Ok(vec![Step::Idle]),
            "rtt" => Ok(vec![Step::Rtt]),
            "reload" => Ok(vec![Step::Reload]),
            "tls" => Ok(vec![Step::TlsIdle, Step::TlsHandshake, Step::TlsBulk]),
            "tls-idle" => Ok(vec![Step::TlsIdle]),
            "tls-handshake" => Ok(vec![Step::TlsHandshake]),
            "tls-bulk" => Ok(vec![Step::TlsBulk]),
            "rtt-pinned" => Ok(vec![Step::RttPinned]),
            "msgcost" => Ok(vec![Step::MsgCost]),
            "cost" => Ok(vec![Step::Conn, Step::RttPinned, Step::MsgCost]),
            other => Err(format!(
                "--figures: unknown figure {other:?} (bulk, bulk1, bulk8, conn, idle, rtt, \
                 reload, tls, tls-idle, tls-handshake, tls-bulk, rtt-pinned, msgcost, cost)"
            )),
        }
    }

    /// The step's name in progress lines and notes; the TLS steps name `tls`, the version they
    /// measure, where it is not the default.
    fn label(self, tls: tls::TlsVersion) -> std::borrow::Cow<'static, str> {
        match (tls, self) {
            (tls::TlsVersion::Tls12, Step::TlsIdle) => "idle MQTTS connections (TLS 1.2)".into(),
            (tls::TlsVersion::Tls12, Step::TlsHandshake) => "full TLS 1.2 handshakes/s".into(),
            (tls::TlsVersion::Tls12, Step::TlsBulk) => "TLS 1.2 bulk, 1 stream".into(),
            _ => self.default_label().into(),
        }
    }

    fn default_label(self) -> &'static str {
        match self {
            Step::Bulk1 => "bulk, 1 stream",
            Step::Bulk8 => "bulk, 8 streams",
            Step::Conn => "new connections/s",
            Step::Idle => "idle MQTT connections",
            Step::Rtt => "MQTT round trips",
            Step::Reload => "config reloads",
            Step::TlsIdle => "idle MQTTS connections (TLS)",
            Step::TlsHandshake => "full TLS 1.3 handshakes/s",
            Step::TlsBulk => "TLS bulk, 1 stream",
            Step::RttPinned => "MQTT round trips, pinned to one CPU",
            Step::MsgCost => "64 publishers + 64 subscribers",
        }
    }

    /// Whether this step measures `target`: direct holds no idle connections of its own, only
    /// brokerside reloads its config in-process, and TLS needs a proxy to terminate it (HAProxy
    /// as shipped: splice has nothing to do on a TLS side).
    fn runs_for(self, target: Target) -> bool {
        match self {
            Step::Idle => target != Target::Direct,
            Step::Reload => target == Target::Brokerside,
            Step::TlsIdle | Step::TlsHandshake | Step::TlsBulk => {
                matches!(target, Target::Haproxy | Target::Nginx | Target::Brokerside)
            }
            _ => true,
        }
    }

    fn tls(self) -> bool {
        matches!(self, Step::TlsIdle | Step::TlsHandshake | Step::TlsBulk)
    }
}

/// Runs every round and writes the report; returns how many measurements failed.
async fn run(options: &Options) -> Result<usize, String> {
    if options
        .steps
        .iter()
        .any(|step| matches!(step, Step::Idle | Step::Reload | Step::TlsIdle))
    {
        procs::check_fd_limit(options.connections, "benches/compare.sh")?;
    }
    let scratch = Scratch::new("compare")?;
    // One certificate for every proxy and round.
    let tls = if options.steps.iter().any(|step| step.tls()) {
        Some(tls::Tls::new(
            tls::CertFiles::generate(&scratch)?,
            options.tls_version,
        )?)
    } else {
        None
    };
    let started = Instant::now();
    let mut results = Results {
        tls_version: options.tls_version,
        ..Results::default()
    };
    let mut failed = 0;
    // Proxy CPU and bytes over both bulk runs, per round and target: CPU per GB.
    let mut bulk_totals: HashMap<(usize, Target), (f64, f64)> = HashMap::new();

    for round in 0..options.rounds {
        for &step in &options.steps {
            let order: Vec<Target> = rotated(&options.targets, round)
                .into_iter()
                .filter(|&t| step.runs_for(t))
                .collect();
            if order.is_empty() {
                eprintln!(
                    "\n== round {}/{} · {}: no target to measure (only brokerside reloads; \
                     TLS needs HAProxy, NGINX or brokerside)",
                    round + 1,
                    options.rounds,
                    step.label(options.tls_version)
                );
                continue;
            }
            eprintln!(
                "\n== round {}/{} · {} · order: {}",
                round + 1,
                options.rounds,
                step.label(options.tls_version),
                order
                    .iter()
                    .map(|t| t.label())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let load = wait_quiet(options, &mut results, round, step).await;
            for &target in &order {
                let measured = measure(options, &scratch, tls.as_ref(), step, target).await;
                match measured {
                    Ok(measured) => {
                        for (figure, value) in &measured.figures {
                            results.add(round, *figure, target, *value, load);
                        }
                        if let Some(cpu_bytes) = measured.bulk {
                            let total = bulk_totals.entry((round, target)).or_default();
                            total.0 += cpu_bytes.0;
                            total.1 += cpu_bytes.1;
                        }
                        if let Some(note) = measured.note {
                            results.notes.push(format!(
                                "round {}, {}, {}: {note}",
                                round + 1,
                                step.label(options.tls_version),
                                target.label()
                            ));
                        }
                        eprintln!("   {:<15} {}", target.label(), measured.line);
                    }
                    Err(error) => {
                        failed += 1;
                        eprintln!("   {:<15} FAILED: {error}", target.label());
                        results.notes.push(format!(
                            "round {}, {}, {}: failed: {}",
                            round + 1,
                            step.label(options.tls_version),
                            target.label(),
                            error.split_whitespace().collect::<Vec<_>>().join(" ")
                        ));
                    }
                }
                tokio::time::sleep(if options.smoke { PAUSE / 5 } else { PAUSE }).await;
            }
        }
        for &target in &options.targets {
            if let Some(&(cpu, bytes)) = bulk_totals.get(&(round, target))
                && bytes > 0.0
            {
                let load = load_average().unwrap_or(0.0);
                results.add(round, Figure::CpuPerGb, target, cpu / (bytes / 1e9), load);
            }
        }
    }

    let text = write_report(options, &results, started.elapsed())?;
    println!("{text}");
    Ok(failed)
}

/// The targets in the order of round `round`: the list rotated by one more each round, so that
/// no target always runs first (on a cold cache) or last.
fn rotated(targets: &[Target], round: usize) -> Vec<Target> {
    let mut order = targets.to_vec();
    let len = order.len();
    order.rotate_left(round % len);
    order
}

/// Waits until the 1-minute load is under the threshold, or the timeout; returns the load.
async fn wait_quiet(options: &Options, results: &mut Results, round: usize, step: Step) -> f64 {
    let started = Instant::now();
    let mut load = load_average().unwrap_or(0.0);
    if load < options.quiet_load {
        return load;
    }
    eprintln!(
        "   waiting for a quiet machine: 1-minute load {load:.2} ≥ {:.2} (at most {} s)",
        options.quiet_load,
        options.quiet_timeout.as_secs()
    );
    while started.elapsed() < options.quiet_timeout {
        tokio::time::sleep(Duration::from_secs(1)).await;
        load = load_average().unwrap_or(0.0);
        if load < options.quiet_load {
            eprintln!(
                "   quiet after {:.0} s (load {load:.2})",
                started.elapsed().as_secs_f64()
            );
            return load;
        }
    }
    eprintln!(
        "   still loaded after {} s (load {load:.2}): measuring anyway",
        options.quiet_timeout.as_secs()
    );
    results.notes.push(format!(
        "round {}, {}: the machine was not quiet after {} s; measured at 1-minute load {load:.2}",
        round + 1,
        step.label(options.tls_version),
        options.quiet_timeout.as_secs()
    ));
    load
}

/// What one step measured for one target.
struct Measured {
    figures: Vec<(Figure, f64)>,
    /// Proxy CPU seconds and bytes moved, for CPU per GB.
    bulk: Option<(f64, f64)>,
    /// The progress line.
    line: String,
    /// Something the report should mention.
    note: Option<String>,
}

async fn measure(
    options: &Options,
    scratch: &Scratch,
    tls: Option<&tls::Tls>,
    step: Step,
    target: Target,
) -> Result<Measured, String> {
    let tls = || tls.ok_or("no TLS certificate was made for this run");
    match step {
        Step::Bulk1 | Step::Bulk8 => {
            let (streams, figure) = if step == Step::Bulk1 {
                (1, Figure::Bulk1)
            } else {
                (8, Figure::Bulk8)
            };
            let run = bulk::run(scratch, target, streams, options.seconds).await?;
            let gbits = run.bits_per_second / 1e9;
            let cpu = run.proxy_cpu.map(|cpu| cpu.as_secs_f64());
            Ok(Measured {
                figures: vec![(figure, gbits)],
                bulk: cpu.map(|cpu| (cpu, run.bytes)),
                line: match cpu {
                    Some(cpu) => format!(
                        "{gbits:.2} Gbit/s, proxy CPU {cpu:.2} s for {:.1} GB",
                        run.bytes / 1e9
                    ),
                    None => format!("{gbits:.2} Gbit/s"),
                },
                note: None,
            })
        }
        Step::Conn => {
            let figures = [Figure::ConnRate, Figure::CpuPerConn];
            connection_rate(options, scratch, target, &tls::Plain, figures).await
        }
        Step::TlsHandshake => {
            let figures = [Figure::TlsHandshakeRate, Figure::TlsCpuPerHandshake];
            connection_rate(options, scratch, target, tls()?, figures).await
        }
        Step::Idle => idle_rss(options, scratch, target, &tls::Plain).await,
        Step::TlsIdle => idle_rss(options, scratch, target, tls()?).await,
        Step::Rtt => round_trips(options, scratch, target, None).await,
        Step::RttPinned => round_trips(options, scratch, target, Some(msgcost::PINNED_CPU)).await,
        Step::MsgCost => message_cost(options, scratch, target).await,
        Step::Reload => config_reloads(options, scratch, target).await,
        Step::TlsBulk => tls_bulk(options, scratch, target, tls()?).await,
    }
}

/// New connections per second and proxy CPU per connection (`figures`, in that order): plain
/// connections, or full TLS handshakes the proxy terminates, each followed by one relayed byte
/// and a close.
async fn connection_rate<C: tls::Connector>(
    options: &Options,
    scratch: &Scratch,
    target: Target,
    connector: &C,
    [rate, cpu]: [Figure; 2],
) -> Result<Measured, String> {
    let duration = Duration::from_secs(options.seconds);
    let run = connrate::run(scratch, target, connector, options.concurrency, duration).await?;
    let mut figures = vec![(rate, run.per_second)];
    let per_conn = run
        .proxy_cpu
        .map(|cpu| cpu.as_secs_f64() * 1e6 / run.completed as f64);
    if let Some(us) = per_conn {
        figures.push((cpu, us));
    }
    let what = if connector.server_tls().is_some() {
        "handshake"
    } else {
        "connection"
    };
    let note = (run.failed > 0).then(|| {
        format!(
            "{} of {} {what}s failed (first: {})",
            run.failed,
            run.failed + run.completed,
            run.first_error.as_deref().unwrap_or("?")
        )
    });
    Ok(Measured {
        figures,
        bulk: None,
        line: format!(
            "{} {}{}{}",
            text::thousands(run.per_second.round() as u64),
            rate.unit(),
            per_conn
                .map(|us| format!(", proxy CPU {us:.1} µs per {what}"))
                .unwrap_or_default(),
            if run.failed > 0 {
                format!(", {} failed", run.failed)
            } else {
                String::new()
            }
        ),
        note,
    })
}

/// RSS at start and per idle MQTT connection, through `target` to a fresh mosquitto, and RSS once
/// every connection has closed, as a ratio to start (a figure with TLS, the proxy terminating
/// it; the progress line's context without).
async fn idle_rss<C: tls::Connector>(
    options: &Options,
    scratch: &Scratch,
    target: Target,
    connector: &C,
) -> Result<Measured, String> {
    let broker_port = free_port()?;
    let broker = targets::start_broker(scratch, broker_port)?;
    let path = targets::start(target, scratch, broker_port, connector.server_tls())?;
    let proxy = path.proxy.as_ref().ok_or("idle RSS needs a proxy")?;
    let addr = SocketAddr::from(([127, 0, 0, 1], path.port));
    let mut ladder = idle::climb(
        connector,
        proxy,
        &broker,
        addr,
        options.connections,
        IDLE_CONCURRENCY,
    )
    .await?;
    let per_conn_kib = ladder.proxy_per_connection() / 1024.0;
    let start_mb = ladder.at_start.proxy as f64 * 1024.0 / 1e6;
    let processes = proxy.family().len();
    let negotiated = ladder.clients.first().and_then(C::negotiated);
    // Whether memory comes back once every connection has closed: a TLS figure (issue 11), and
    // for plain connections the same reading as context, so the two can be told apart.
    let closed = ladder.close_all(proxy, &broker).await?;
    let ratio = closed.proxy as f64 / ladder.at_start.proxy as f64;
    let after_close = format!(
        "; after all closed {:.1} MB, ×{ratio:.2} of start",
        closed.proxy as f64 * 1024.0 / 1e6
    );
    let figures = if connector.server_tls().is_some() {
        vec![
            (Figure::TlsRssPerIdle, per_conn_kib),
            (Figure::TlsRssAtStart, start_mb),
            (Figure::TlsRssAfterClose, ratio),
        ]
    } else {
        vec![
            (Figure::RssPerIdle, per_conn_kib),
            (Figure::RssAtStart, start_mb),
        ]
    };
    Ok(Measured {
        figures,
        bulk: None,
        line: format!(
            "RSS at start {start_mb:.1} MB, {per_conn_kib:.2} KiB per idle connection \
             (second half {:.2} KiB; {} opened in {:.1} s{}{}){after_close}",
            ladder.proxy_per_connection_second_half() / 1024.0,
            text::thousands(ladder.n as u64),
            ladder.opening.as_secs_f64(),
            if processes > 1 {
                format!("; {processes} processes summed")
            } else {
                String::new()
            },
            negotiated
                .map(|session| format!("; {session}"))
                .unwrap_or_default()
        ),
        note: None,
    })
}

/// TLS bulk through `target`, which terminates it, to a plaintext sink: MB/s and proxy CPU per
/// GB (of plaintext delivered).
async fn tls_bulk(
    options: &Options,
    scratch: &Scratch,
    target: Target,
    tls: &tls::Tls,
) -> Result<Measured, String> {
    let run = bulk::tls_run(scratch, target, tls, options.seconds).await?;
    let mb_per_s = run.bits_per_second / 8.0 / 1e6;
    let mut figures = vec![(Figure::TlsBulk, mb_per_s)];
    let cpu = run.proxy_cpu.map(|cpu| cpu.as_secs_f64());
    if let Some(cpu) = cpu {
        figures.push((Figure::TlsCpuPerGb, cpu / (run.bytes / 1e9)));
    }
    Ok(Measured {
        figures,
        bulk: None,
        line: format!(
            "{mb_per_s:.0} MB/s, proxy CPU {:.2} s for {:.2} GB",
            cpu.unwrap_or(0.0),
            run.bytes / 1e9
        ),
        note: None,
    })
}

/// Publish→subscribe round trips through `target` to a fresh mosquitto, one in flight; with
/// `pinned`, the proxy, the broker and both clients all run on that one CPU.
async fn round_trips(
    options: &Options,
    scratch: &Scratch,
    target: Target,
    pinned: Option<usize>,
) -> Result<Measured, String> {
    let broker_port = free_port()?;
    let broker = targets::start_broker(scratch, broker_port)?;
    let path = targets::start(target, scratch, broker_port, None)?;
    if let Some(cpu) = pinned {
        msgcost::pin_family(&broker, cpu)?;
        if let Some(proxy) = &path.proxy {
            msgcost::pin_family(proxy, cpu)?;
        }
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], path.port));
    let samples = options.samples;
    // Blocking sockets on a thread of their own: no runtime between the socket and the clock.
    let timed = tokio::task::spawn_blocking(move || -> Result<Vec<Duration>, String> {
        if let Some(cpu) = pinned {
            msgcost::pin_this_thread(cpu)?;
        }
        let mut pair =
            mqtt::RoundTrip::connect(addr, PAYLOAD).map_err(|error| error.to_string())?;
        // Warm-up: caches, the broker's subscription lookup, TCP windows.
        for _ in 0..(samples / 10).max(10) {
            pair.once().map_err(|error| error.to_string())?;
        }
        (0..samples)
            .map(|_| pair.once().map_err(|error| error.to_string()))
            .collect()
    })
    .await
    .map_err(|error| format!("the round-trip thread failed: {error}"))??;
    if let Some(proxy) = &path.proxy {
        proxy.check_running()?;
    }
    let mut micros: Vec<f64> = timed.iter().map(|d| d.as_secs_f64() * 1e6).collect();
    micros.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&micros, 0.50), percentile(&micros, 0.99));
    let figures = match pinned {
        None => vec![(Figure::RttP50, p50), (Figure::RttP99, p99)],
        Some(_) => vec![(Figure::RttPinnedP50, p50), (Figure::RttPinnedP99, p99)],
    };
    Ok(Measured {
        figures,
        bulk: None,
        line: format!(
            "p50 {p50:.1} µs, p99 {p99:.1} µs over {} round trips{}",
            micros.len(),
            pinned
                .map(|cpu| format!(", everything on CPU {cpu}"))
                .unwrap_or_default()
        ),
        note: None,
    })
}

/// 64 publishers and 64 subscribers through `target` to a fresh mosquitto at a fixed rate: the
/// proxy's CPU per million messages relayed (each counted going in and coming out), and the
/// broker's CPU per million published over the same window, which shows the load was the same.
async fn message_cost(
    options: &Options,
    scratch: &Scratch,
    target: Target,
) -> Result<Measured, String> {
    let broker_port = free_port()?;
    let broker = targets::start_broker(scratch, broker_port)?;
    let path = targets::start(target, scratch, broker_port, None)?;
    let addr = SocketAddr::from(([127, 0, 0, 1], path.port));
    let window = Duration::from_secs(options.seconds);
    let run = msgcost::run(
        addr,
        path.proxy.as_ref(),
        &broker,
        PAYLOAD,
        options.msg_rate,
        window,
    )
    .await?;
    if let Some(proxy) = &path.proxy {
        proxy.check_running()?;
    }
    broker.check_running()?;
    let millions = |n: u64| n as f64 / 1e6;
    let rate = run.rate();
    let broker_cpu = run.broker_cpu.as_secs_f64() / millions(run.published);
    let mut figures = vec![(Figure::MsgRate, rate), (Figure::MsgBrokerCpu, broker_cpu)];
    let proxy_cpu = run
        .proxy_cpu
        .map(|cpu| cpu.as_secs_f64() / millions(run.relayed()));
    if let Some(cpu) = proxy_cpu {
        figures.push((Figure::MsgCpu, cpu));
    }
    let mut problems = Vec::new();
    if rate < 0.97 * options.msg_rate as f64 {
        problems.push(format!(
            "published {rate:.0}/s of the {} asked: the machine could not keep up",
            options.msg_rate
        ));
    }
    if run.lost > 0 {
        problems.push(format!(
            "{} messages never reached their subscriber",
            run.lost
        ));
    }
    Ok(Measured {
        figures,
        bulk: None,
        line: format!(
            "{} published/s, {} relayed in {:.1} s; proxy CPU {} per M relayed, broker CPU \
             {broker_cpu:.2} s per M published{}",
            text::thousands(rate.round() as u64),
            text::thousands(run.relayed()),
            run.window.as_secs_f64(),
            proxy_cpu
                .map(|cpu| format!("{cpu:.2} s"))
                .unwrap_or_else(|| "—".into()),
            if problems.is_empty() {
                String::new()
            } else {
                format!("; {}", problems.join("; "))
            }
        ),
        note: (!problems.is_empty()).then(|| problems.join("; ")),
    })
}

/// brokerside's config reloads with `options.connections` idle MQTT connections open through it
/// to a fresh mosquitto: the time from SIGHUP to the new generation in /health, and the
/// round-trip p99 while it reloads 10 times a second as a ratio to the p99 without. Reloads must
/// not drop a connection: the measurement fails if one closed.
async fn config_reloads(
    options: &Options,
    scratch: &Scratch,
    target: Target,
) -> Result<Measured, String> {
    if target != Target::Brokerside {
        return Err(format!(
            "{} cannot reload its config in-process",
            target.label()
        ));
    }
    let broker_port = free_port()?;
    let broker = targets::start_broker(scratch, broker_port)?;
    let port = free_port()?;
    // Neither port is bound yet: make sure they differ.
    let admin_port = loop {
        let candidate = free_port()?;
        if candidate != port {
            break candidate;
        }
    };
    let (proxy, config) =
        targets::start_brokerside_with_admin(scratch, port, broker_port, admin_port)?;
    let variants = targets::RELOAD_CLOSE_RATES
        .map(|rate| targets::brokerside_config(port, broker_port, admin_port, Some(rate)));
    let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
    let reloads = reload::Reloads::new(proxy.pid(), config, variants, admin)?;
    // A failure of the proxy explains itself better than the request that ran into it.
    let explain = |error: String| match proxy.check_running() {
        Err(exited) => exited,
        Ok(()) => error,
    };

    let (mut reloads, first) = blocking(move || {
        let generation = reloads.wait_ready()?;
        Ok((reloads, generation))
    })
    .await
    .map_err(explain)?;

    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut clients = Vec::with_capacity(options.connections);
    let opening = mqtt::open(
        &tls::Plain,
        &mut clients,
        addr,
        IDLE_CONCURRENCY,
        0..options.connections,
    )
    .await
    .map_err(explain)?;
    tokio::time::sleep(idle::SETTLE).await;
    let still_open = |clients: &[tokio::net::TcpStream], when: &str| {
        mqtt::check_still_open(clients)
            .map_err(|error| format!("reloads must not drop connections, but {when}: {error}"))
    };

    // SIGHUP → the new generation in /health, one reload at a time.
    let count = if options.smoke {
        SMOKE_RELOAD_SAMPLES
    } else {
        RELOAD_SAMPLES
    };
    let (returned, reload_ms) = blocking(move || {
        let mut reload_ms = Vec::with_capacity(count);
        for _ in 0..count {
            reload_ms.push(reloads.timed()?.as_secs_f64() * 1e3);
            std::thread::sleep(RELOAD_PAUSE);
        }
        Ok((reloads, reload_ms))
    })
    .await
    .map_err(explain)?;
    reloads = returned;
    proxy.check_running()?;
    still_open(&clients, "after the timed reloads")?;

    // Round trips in segments: none, reloading, none, reloading.
    let samples = options.samples;
    let (_reloads, segments) = blocking(move || {
        let mut pair =
            mqtt::RoundTrip::connect(addr, PAYLOAD).map_err(|error| error.to_string())?;
        paced(&mut pair, (samples / 10).max(10))?;
        let per_segment = (samples / RELOAD_SEGMENTS).max(1);
        let mut segments = Segments::default();
        for segment in 0..RELOAD_SEGMENTS {
            if segment % 2 == 0 {
                segments.none.extend(paced(&mut pair, per_segment)?);
                continue;
            }
            let before = reloads.generation()?;
            let (stop, stopped) = std::sync::mpsc::channel();
            let (timed, sent) = std::thread::scope(|scope| {
                let background = scope.spawn(|| reloads.repeat(RELOAD_EVERY, stopped));
                let timed = paced(&mut pair, per_segment);
                drop(stop);
                let sent = background
                    .join()
                    .map_err(|_| "the reloading thread panicked".to_string());
                (timed, sent)
            });
            segments.reloading.extend(timed?);
            segments.signals += sent??;
            std::thread::sleep(SEGMENT_SETTLE);
            segments.applied += reloads.generation()?.saturating_sub(before);
        }
        Ok((reloads, segments))
    })
    .await
    .map_err(explain)?;
    proxy.check_running()?;
    broker.check_running()?;
    still_open(&clients, "after the round trips with reloads")?;
    if segments.applied == 0 {
        return Err(format!(
            "{} SIGHUPs during the round trips, but the generation never moved",
            segments.signals
        ));
    }

    let stats = report::Stats::of(&reload_ms).ok_or("no reload timed")?;
    let mut none = segments.none;
    let mut reloading = segments.reloading;
    none.sort_by(f64::total_cmp);
    reloading.sort_by(f64::total_cmp);
    let (p99_none, p99_reloading) = (percentile(&none, 0.99), percentile(&reloading, 0.99));
    let ratio = p99_reloading / p99_none;
    let coalesced = if segments.applied < segments.signals {
        format!(" of {} SIGHUPs", segments.signals)
    } else {
        String::new()
    };
    Ok(Measured {
        figures: vec![
            (Figure::ReloadTime, stats.median),
            (Figure::ReloadRttP99, ratio),
        ],
        bulk: None,
        line: format!(
            "reload {:.1} ms median ({:.1}..{:.1} over {}; generation {first} → {}); RTT p99 \
             {p99_none:.1} µs without reloads, {p99_reloading:.1} µs with 10/s: ×{ratio:.2} \
             ({} reloads{coalesced}); {} idle connections (opened in {:.1} s) all still open",
            stats.median,
            stats.min,
            stats.max,
            stats.count,
            first + stats.count as u64,
            segments.applied,
            text::thousands(clients.len() as u64),
            opening.as_secs_f64(),
        ),
        note: Some(format!(
            "RTT p99 {p99_none:.1} µs without reloads, {p99_reloading:.1} µs with 10 reloads/s \
             ({} and {} round trips, {} reloads{coalesced}); reload time {:.1}..{:.1} ms over {}; \
             all {} idle connections still open",
            text::thousands(none.len() as u64),
            text::thousands(reloading.len() as u64),
            segments.applied,
            stats.min,
            stats.max,
            stats.count,
            text::thousands(clients.len() as u64),
        )),
    })
}

/// Round-trip times of the reload step, in µs, and the reloads during them.
#[derive(Default)]
struct Segments {
    none: Vec<f64>,
    reloading: Vec<f64>,
    /// SIGHUPs sent during the reloading segments.
    signals: u64,
    /// Generations the proxy moved through during them.
    applied: u64,
}

/// `n` round trips, at most one per [`RELOAD_RTT_PACE`]; their times in µs.
fn paced(pair: &mut mqtt::RoundTrip, n: usize) -> Result<Vec<f64>, String> {
    let mut micros = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let took = pair.once().map_err(|error| error.to_string())?;
        micros.push(took.as_secs_f64() * 1e6);
        if let Some(rest) = RELOAD_RTT_PACE.checked_sub(started.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    Ok(micros)
}

/// Runs blocking work (sockets, sleeps, signals) on a thread of its own.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| format!("a measuring thread failed: {error}"))?
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

// ---------------------------------------------------------------------------------------------
// Report

/// Writes the Markdown table, CSVs and chart; returns the Markdown.
fn write_report(options: &Options, results: &Results, took: Duration) -> Result<String, String> {
    std::fs::create_dir_all(&options.out)
        .map_err(|error| format!("cannot create {}: {error}", options.out.display()))?;
    let stem = if options.smoke {
        "compare-smoke"
    } else {
        "compare"
    };
    let file = |ext: &str| options.out.join(format!("{stem}{ext}"));
    let write = |path: &Path, text: &str| {
        std::fs::write(path, text)
            .map_err(|error| format!("cannot write {}: {error}", path.display()))
    };

    // TLS 1.3 is the default and goes unsaid; TLS 1.2 is named wherever the TLS figures are.
    let tls12 = options.tls_version != tls::TlsVersion::default();
    let title = format!(
        "brokerside vs HAProxy vs NGINX vs direct ({} round{}{}{})",
        options.rounds,
        if options.rounds == 1 { "" } else { "s" },
        if options.smoke { ", smoke" } else { "" },
        if tls12 {
            format!(", {}", options.tls_version.label())
        } else {
            String::new()
        }
    );
    let chart_path = file(".png");
    let chart_line = match chart::draw(results, &options.targets, &title, &chart_path) {
        Ok(()) => format!("Chart: `{}`", chart_path.display()),
        Err(error) => format!("Chart not drawn: {error}"),
    };
    write(&file(".csv"), &results.summary_csv(&options.targets))?;
    write(&file("-rounds.csv"), &results.rounds_csv())?;

    let mut md = String::new();
    let _ = writeln!(md, "# {title}\n");
    let _ = writeln!(
        md,
        "Each cell: median (min..max) over the rounds, then ×the median ratio to direct in the \
         same round. The order of targets rotates each round. Generated by \
         `benches/compare.sh{}{}` in {:.0} s.\n",
        if options.smoke { " --smoke" } else { "" },
        if tls12 {
            format!(" --tls-version {}", options.tls_version.number())
        } else {
            String::new()
        },
        took.as_secs_f64()
    );
    md.push_str(&results.table(&options.targets));
    let _ = writeln!(
        md,
        "\n## brokerside against the targets of issue 5 and the TLS goals of issue 11\n"
    );
    md.push_str(&results.targets_table());
    let _ = writeln!(md, "\n## How it was measured\n");
    md.push_str(&conditions(options, results));
    if !results.notes.is_empty() {
        let _ = writeln!(md, "\n## Notes from this run\n");
        for note in &results.notes {
            let _ = writeln!(md, "- {note}");
        }
    }
    let _ = writeln!(
        md,
        "\n{chart_line}. CSVs: `{}` (medians), `{}` (every round).",
        file(".csv").display(),
        file("-rounds.csv").display()
    );
    write(&file(".md"), &md)?;
    Ok(md)
}

/// The machine, the programs and the settings: what a reader needs to trust or redo the table.
fn conditions(options: &Options, results: &Results) -> String {
    let mut out = String::new();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let loads: Vec<f64> = results.records.iter().map(|r| r.load).collect();
    let load_range = report::Stats::of(&loads)
        .map(|s| format!("{:.2}..{:.2} (median {:.2})", s.min, s.max, s.median))
        .unwrap_or_else(|| "—".into());
    let limit = procs::open_files_limit()
        .map(text::thousands)
        .unwrap_or_else(|| "unknown".into());
    let _ = writeln!(
        out,
        "- Machine: {cores} cores, Linux {}; open files capped at {limit} per process. The load \
         generators, the backends and the proxy share these cores.",
        kernel.trim()
    );
    let _ = writeln!(
        out,
        "- 1-minute load when each figure began: {load_range}; quiet means < {:.2}, waited for \
         at most {} s.",
        options.quiet_load,
        options.quiet_timeout.as_secs()
    );
    let _ = writeln!(out, "- Programs: {}.", versions().join("; "));
    let _ = writeln!(
        out,
        "- Bulk: `iperf3 -c -t {} -P 1|8 -J` through the target to a one-off `iperf3 -s -1`; \
         `end.sum_received.bits_per_second`. Proxy CPU per GB: the proxy's user + system CPU \
         (/proc/<pid>/stat; NGINX master + workers) over both bulk runs, per 10^9 bytes received.",
        options.seconds
    );
    let _ = writeln!(
        out,
        "- New connections/s: {} clients (tokio, one thread) each connect, read one byte and \
         close, for {} s, against a backend in this process (its own thread) that writes one \
         byte and closes. Proxy CPU per connection: the proxy's CPU over the run / connections.",
        options.concurrency, options.seconds
    );
    let _ = writeln!(
        out,
        "- Idle RSS: {} MQTT 3.1.1 connections to mosquitto through the proxy (CONNECT/CONNACK, \
         then silent), {IDLE_CONCURRENCY} opened at a time; (VmRSS with N − with 1) / (N − 1). \
         N is bounded by the open-files cap: the proxy holds 2 fds per connection, so 9,000 \
         connections need 18,000 of the 20,000. RSS at start: VmRSS 1 s after the port listens. \
         NGINX: master + 2 workers summed (shared pages counted in each).",
        text::thousands(options.connections as u64)
    );
    let _ = writeln!(
        out,
        "- MQTT round trip: a publisher and a subscriber (blocking sockets, TCP_NODELAY) both \
         through the target to mosquitto; {} × {PAYLOAD} B QoS 0 messages one in flight, timed \
         from before the PUBLISH write to its last byte read by the subscriber, after {} warm-up \
         messages.",
        text::thousands(options.samples as u64),
        (options.samples / 10).max(10)
    );
    let _ = writeln!(
        out,
        "- MQTT round trip, pinned (issue 15): the same round trips with the proxy (every thread \
         of it and of its workers), mosquitto and both client threads pinned to CPU {} \
         (sched_setaffinity, as `taskset -a -p`), so every hop of a round trip runs on one core \
         and the ratio to direct shows what the proxy's crossings cost.",
        msgcost::PINNED_CPU
    );
    let _ = writeln!(
        out,
        "- Message cost (issue 15): {} publishers and {} subscribers (blocking sockets, \
         TCP_NODELAY), each pair on a topic of its own, through the target to mosquitto; {} B \
         QoS 0 messages published at {} per second in all (one thread on a schedule, one write \
         per message, round robin), {} s of warm-up, then a window of {} s. Proxy CPU (utime + \
         stime, NGINX master + workers) over the window per million messages relayed, each \
         counted going in (published) and coming out (delivered); broker CPU over the same \
         window per million published.",
        msgcost::PAIRS,
        msgcost::PAIRS,
        PAYLOAD,
        text::thousands(options.msg_rate),
        msgcost::WARM_UP.as_secs(),
        options.seconds
    );
    let _ = writeln!(
        out,
        "- Config reloads (brokerside only: the others cannot reload in-process): brokerside with \
         its admin endpoint on a free port and {} idle MQTT connections open through it to \
         mosquitto. Reload time: the config file rewritten (a temporary file renamed over it, \
         `[drain] close_rate` {} ↔ {}), SIGHUP, then `GET /health` on a fresh connection every \
         {} µs until `config.generation` moves; the median over {} reloads {} ms apart, each \
         from the signal to that answer. RTT with reloads: {} round trips as above but at most \
         one per {} ms, in {RELOAD_SEGMENTS} segments (none, reloading, none, reloading), a \
         thread rewriting the file and sending SIGHUP every {} ms in the reloading ones; the p99 \
         of those / the p99 of the others. An idle connection closed fails the measurement.",
        text::thousands(options.connections as u64),
        targets::RELOAD_CLOSE_RATES[0],
        targets::RELOAD_CLOSE_RATES[1],
        reload::POLL_EVERY.as_micros(),
        if options.smoke {
            SMOKE_RELOAD_SAMPLES
        } else {
            RELOAD_SAMPLES
        },
        RELOAD_PAUSE.as_millis(),
        text::thousands(((options.samples / RELOAD_SEGMENTS).max(1) * RELOAD_SEGMENTS) as u64),
        RELOAD_RTT_PACE.as_millis(),
        RELOAD_EVERY.as_millis(),
    );
    let _ = writeln!(
        out,
        "- Configs: HAProxy `mode tcp`, `maxconn 40000`, `nbthread 2` (+ `option splice-request` \
         and `option splice-response`); NGINX `worker_processes 2`, `worker_rlimit_nofile 20000`, \
         `worker_connections 20000`, `stream {{ proxy_pass }}`; brokerside one listener, one \
         backend, no checks, admin on port 0 (a known free port for the reloads). All on \
         127.0.0.1."
    );
    let version = options.tls_version;
    let suite = match version {
        tls::TlsVersion::Tls12 => {
            " (with this certificate, an ECDHE-ECDSA AES-GCM suite; the proxies also accept \
             TLS 1.3, which these clients do not offer)"
        }
        tls::TlsVersion::Tls13 => "",
    };
    let _ = writeln!(
        out,
        "- TLS (issue 11), measured with {}: HAProxy (`bind ... ssl crt` with certificate and \
         key in one PEM, `ssl-min-ver {}`), NGINX stream (`listen ... ssl`, `ssl_protocols {}`) \
         and brokerside (`[listener.tls]`, `min_version = \"{}\"`) terminate TLS with the same \
         self-signed ECDSA P-256 certificate (rcgen, made once per run) and relay plaintext; \
         HAProxy+splice and direct are not measured (nothing to splice or terminate). Clients: \
         tokio-rustls (ring), {} only{suite}, SNI `{}`, no session resumption, so every \
         handshake is a full one; a handshake that negotiated another version fails the \
         measurement. Idle MQTTS: the idle ladder above with a TLS handshake before each \
         CONNECT, to mosquitto's plain port; RSS at start is with the TLS listener; after the \
         ladder every client closes, and once the proxy's fd count holds still for 1 s (at most \
         {} s) its RSS is read again, as a ratio to RSS at start. Handshakes/s: the \
         connections/s loop above ({} clients, {} s, the one-byte backend) with a full handshake \
         before the byte, so CPU per handshake includes what a plain connection costs (see the \
         connections row). TLS bulk: one TLS stream writing 64 KiB at a time for {} s, then \
         close_notify, through the proxy to a plaintext sink in this process (its own thread); \
         MB/s (10^6 bytes) as the sink received them from the first write to the stream's end; \
         proxy CPU from after the handshake to that end, per 10^9 bytes.",
        version.label(),
        version.haproxy_min_ver(),
        version.nginx_protocols(),
        version.number(),
        version.label(),
        tls::SERVER_NAME,
        idle::CLOSE_TIMEOUT.as_secs(),
        options.concurrency,
        options.seconds,
        options.seconds,
    );
    out
}

/// The first line of each program's version output.
fn versions() -> Vec<String> {
    let probe = |name: &str, env: &str, args: &[&str]| -> String {
        let Ok(program) = procs::find_program(name, env) else {
            return format!("{name} not found");
        };
        match Command::new(&program).args(args).output() {
            Ok(output) => {
                let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
                text.push_str(&String::from_utf8_lossy(&output.stderr));
                text.lines()
                    .map(str::trim)
                    .find(|line| !line.is_empty())
                    .unwrap_or(name)
                    .to_string()
            }
            Err(_) => format!("{name} (version unknown)"),
        }
    };
    let commit = Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "describe",
            "--always",
            "--dirty",
        ])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    vec![
        format!(
            "brokerside at {commit} (`{}`)",
            targets::brokerside_bin().display()
        ),
        probe("haproxy", "HAPROXY_BIN", &["-v"]),
        probe("nginx", "NGINX_BIN", &["-v"]),
        probe("mosquitto", "MOSQUITTO_BIN", &["-h"]),
        probe("iperf3", "IPERF3_BIN", &["--version"]),
    ]
}
