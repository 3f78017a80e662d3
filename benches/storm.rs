//! The `storm` figure (issue 12): a node's worth of MQTT clients reconnecting at once, as after a
//! broker restart, with Paho C's back-off (retry after 1 s, doubling, no jitter; give up after 5
//! tries), against mosquitto through brokerside paced at `max_connection_rate`, through HAProxy
//! with `rate-limit sessions` at the same rate, and with no proxy at all.
//!
//! For each target and round it reports the seconds until every client is connected, the peak
//! of CONNACKs per 100 ms (each is a connection the broker accepted and answered; counted at
//! the clients, since a counting forwarder in this process would not fit the open-files cap),
//! the clients that gave up, and mosquitto's peak CPU over any one second.
//!
//! A separate bench from `compare` on purpose: it shares its process helpers, broker and
//! brokerside config, and keeps its own table (`benches/results/storm{,-smoke}.md`).
//!
//! `cargo bench --bench storm -- [--smoke] [--rounds N] [--clients N] [--rate R]`

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

#[path = "loadgen/mqtt.rs"]
mod mqtt;
#[path = "loadgen/procs.rs"]
mod procs;
#[path = "loadgen/targets.rs"]
mod targets;
#[path = "loadgen/tls.rs"]
mod tls;

use procs::{Process, Scratch, find_program, free_port};

/// Clients by default: through a proxy each costs two of the 20,000 open files a process may
/// hold here (client side and broker side), so 9,000 is what fits with room to spare.
const DEFAULT_CLIENTS: usize = 9_000;
/// The rate both proxies let new connections through at.
const DEFAULT_RATE: u32 = 2_000;
/// Tries before a client gives up, and the first pause between two (then doubled each time).
const TRIES: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Time one try has for its TCP connect and CONNACK. Paho C's default is 30 s; 10 s keeps a
/// round of clients that all time out within about a minute and a half.
const TRY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the broker's open fds and CPU time are read.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

const USAGE: &str = "usage: cargo bench --bench storm -- [OPTIONS]   (or benches/storm.sh)

  --smoke        1 round of 1000 clients at 500/s (a few seconds per target)
  --rounds N     rounds, the order of targets rotated each time (default 3)
  --clients N    clients reconnecting at once (default 9000: 2 fds each in a proxy, under the
                 20,000 open files a process may hold here)
  --rate R       connections/s: brokerside's max_connection_rate and HAProxy's
                 rate-limit sessions (default 2000)
  --out DIR      where storm.md goes (default benches/results)

  BROKERSIDE_BIN, HAPROXY_BIN, MOSQUITTO_BIN override the programs.";

/// What the storm goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Brokerside,
    Haproxy,
    Direct,
}

impl Target {
    const ALL: [Target; 3] = [Target::Brokerside, Target::Haproxy, Target::Direct];

    fn label(self) -> &'static str {
        match self {
            Target::Brokerside => "brokerside (max_connection_rate)",
            Target::Haproxy => "HAProxy (rate-limit sessions)",
            Target::Direct => "no proxy",
        }
    }
}

struct Options {
    smoke: bool,
    rounds: usize,
    clients: usize,
    rate: u32,
    out: PathBuf,
}

impl Options {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Option<Options>, String> {
        let mut options = Options {
            smoke: false,
            rounds: 3,
            clients: DEFAULT_CLIENTS,
            rate: DEFAULT_RATE,
            out: PathBuf::from("benches/results"),
        };
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--smoke" => {
                    (options.smoke, options.rounds) = (true, 1);
                    (options.clients, options.rate) = (1_000, 500);
                }
                flag @ ("--rounds" | "--clients" | "--rate") => {
                    let value = args.next().and_then(|v| v.parse::<u32>().ok());
                    let value = value
                        .filter(|n| *n > 0)
                        .ok_or_else(|| format!("{flag} needs a positive number"))?;
                    match flag {
                        "--rounds" => options.rounds = value as usize,
                        "--clients" => options.clients = value as usize,
                        _ => options.rate = value,
                    }
                }
                "--out" => options.out = args.next().ok_or("--out needs a directory")?.into(),
                "--help" | "-h" => return Ok(None),
                // cargo bench passes --bench to every bench binary.
                "--bench" => {}
                other => return Err(format!("unknown option {other}")),
            }
        }
        Ok(Some(options))
    }
}

fn main() -> ExitCode {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("storm: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match procs::run_until_interrupted(run(&options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("storm: {message}");
            ExitCode::FAILURE
        }
    }
}

/// One target's storm in one round.
#[derive(Debug, Clone)]
struct Outcome {
    /// Until the last client got its CONNACK; `None` when some gave up.
    all_connected: Option<Duration>,
    connected: usize,
    gave_up: usize,
    /// Tries beyond each client's first.
    retries: usize,
    /// The broker's most accepts in 100 ms (from its fd count).
    accepts_peak: f64,
    /// The most CONNACKs the clients received in one 100 ms step.
    connacks_peak: usize,
    /// mosquitto's most CPU in any one second, in percent of one core.
    broker_cpu_peak: f64,
}

async fn run(options: &Options) -> Result<(), String> {
    procs::check_fd_limit(options.clients, "benches/storm.sh")?;
    let mut results: Vec<(Target, Vec<Outcome>)> =
        Target::ALL.iter().map(|t| (*t, Vec::new())).collect();
    for round in 0..options.rounds {
        for i in 0..Target::ALL.len() {
            let target = Target::ALL[(i + round) % Target::ALL.len()];
            eprintln!(
                "storm: round {} of {}, {}: {} clients",
                round + 1,
                options.rounds,
                target.label(),
                options.clients
            );
            let outcome = storm_through(target, options).await?;
            eprintln!("storm:   {outcome:?}");
            if let Some((_, outcomes)) = results.iter_mut().find(|(t, _)| *t == target) {
                outcomes.push(outcome);
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    let table = table(options, &results);
    println!("{table}");
    std::fs::create_dir_all(&options.out)
        .map_err(|error| format!("cannot create {}: {error}", options.out.display()))?;
    let file = options.out.join(if options.smoke {
        "storm-smoke.md"
    } else {
        "storm.md"
    });
    std::fs::write(&file, table).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    eprintln!("storm: wrote {}", file.display());
    Ok(())
}

/// Starts mosquitto and `target` in front of it, runs the storm, and stops them.
async fn storm_through(target: Target, options: &Options) -> Result<Outcome, String> {
    let scratch = Scratch::new("storm")?;
    let broker_port = free_port()?;
    let broker = targets::start_broker(&scratch, broker_port)?;
    let (port, _proxy) = match target {
        Target::Direct => (broker_port, None),
        Target::Brokerside => {
            let port = free_port()?;
            let proxy = start_brokerside(&scratch, port, broker_port, options.rate)?;
            (port, Some(proxy))
        }
        Target::Haproxy => {
            let port = free_port()?;
            let proxy = start_haproxy(&scratch, port, broker_port, options.rate)?;
            (port, Some(proxy))
        }
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    storm(addr, options.clients, &broker).await
}

/// brokerside as every bench runs it, its listener paced at `rate` (defaults for the rest:
/// burst rate/10, a queue of 20,000, a 20 s timeout).
fn start_brokerside(
    scratch: &Scratch,
    port: u16,
    broker_port: u16,
    rate: u32,
) -> Result<Process, String> {
    let text = targets::brokerside_config(port, broker_port, 0, None).replace(
        "backend = \"broker\"\n",
        &format!("backend = \"broker\"\nmax_connection_rate = {rate}\n"),
    );
    let (process, _config) = targets::spawn_brokerside(scratch, &text)?;
    process.wait_listening(port)?;
    Ok(process)
}

/// HAProxy as the compare bench runs it (two threads, `mode tcp`), its frontend limited to
/// `rate` new sessions per second: past it HAProxy stops accepting, and clients wait in the
/// kernel's accept queue (or their SYNs are dropped once it is full).
fn start_haproxy(
    scratch: &Scratch,
    port: u16,
    broker_port: u16,
    rate: u32,
) -> Result<Process, String> {
    let program = find_program("haproxy", "HAPROXY_BIN")?;
    let config = scratch.write(
        "haproxy.cfg",
        &format!(
            "global\n    maxconn 40000\n    nbthread 2\n    no strict-limits\n\n\
             defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 10m\n    timeout server 10m\n\n\
             listen relay\n    bind 127.0.0.1:{port}\n    rate-limit sessions {rate}\n\
             \x20   server broker 127.0.0.1:{broker_port}\n"
        ),
    )?;
    let process = Process::spawn(
        "HAProxy",
        program.clone(),
        Command::new(&program).arg("-db").arg("-f").arg(&config),
        scratch.path("haproxy.log"),
    )?;
    process.wait_listening(port)?;
    Ok(process)
}

/// How one client's storm ended.
enum Client {
    /// Connected at this instant after this many tries, and still holding its connection.
    Connected(Instant, u32, TcpStream),
    GaveUp,
}

/// One reading of the broker.
struct Sample {
    at: Instant,
    /// Its open fds: one per connection it accepted and still holds.
    fds: usize,
    cpu: Duration,
}

/// Reads the broker every [`SAMPLE_EVERY`] on a thread of its own (a load generator busy with
/// thousands of clients would bunch its readings) until `stop`.
fn sample_broker(pid: u32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<Sample>> {
    std::thread::spawn(move || {
        let mut samples = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            if let (Ok(fds), Ok(cpu)) = (procs::count_fds(pid), procs::cpu_of(pid)) {
                samples.push(Sample {
                    at: Instant::now(),
                    fds,
                    cpu,
                });
            }
            std::thread::sleep(SAMPLE_EVERY);
        }
        samples
    })
}

/// `clients` clients start at once; each tries, and on failure waits 1 s, 2 s, 4 s, 8 s before
/// the next try; the broker is read meanwhile.
async fn storm(addr: SocketAddr, clients: usize, broker: &Process) -> Result<Outcome, String> {
    broker.check_running()?;
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_broker(broker.pid(), Arc::clone(&stop));
    let start = Instant::now();
    let mut set = JoinSet::new();
    for i in 0..clients {
        set.spawn(client(addr, format!("storm-{i}")));
    }
    let mut ended = Vec::with_capacity(clients);
    while let Some(joined) = set.join_next().await {
        ended.push(joined.map_err(|e| format!("a client task failed: {e}"))?);
    }
    stop.store(true, Ordering::Relaxed);
    let samples = sampler
        .join()
        .map_err(|_| "the broker sampler panicked".to_string())?;
    broker.check_running()?;
    let mut connected_at = Vec::new();
    let mut retries = 0;
    let mut gave_up = 0;
    // Held until every client has ended, then closed together.
    let mut held = Vec::with_capacity(ended.len());
    for client in ended {
        match client {
            Client::Connected(at, tries, stream) => {
                connected_at.push(at.duration_since(start));
                retries += (tries - 1) as usize;
                held.push(stream);
            }
            Client::GaveUp => gave_up += 1,
        }
    }
    drop(held);
    let mut steps = std::collections::HashMap::<u128, usize>::new();
    for at in &connected_at {
        *steps.entry(at.as_millis() / 100).or_default() += 1;
    }
    // Accepts per 100 ms: new fds between two readings, scaled to 100 ms when the reading
    // came late.
    let accepts_peak = samples
        .windows(2)
        .map(|w| {
            let new = w[1].fds.saturating_sub(w[0].fds) as f64;
            new * 0.1 / (w[1].at - w[0].at).as_secs_f64().max(0.1)
        })
        .fold(0.0, f64::max);
    // CPU over any one second: from each reading to the first one a second or more later.
    let mut broker_cpu_peak: f64 = 0.0;
    for (i, from) in samples.iter().enumerate() {
        if let Some(to) = samples[i..]
            .iter()
            .find(|to| to.at - from.at >= Duration::from_secs(1))
        {
            let share = (to.cpu - from.cpu).as_secs_f64() / (to.at - from.at).as_secs_f64();
            broker_cpu_peak = broker_cpu_peak.max(share * 100.0);
        }
    }
    Ok(Outcome {
        all_connected: (gave_up == 0)
            .then(|| connected_at.iter().max().copied().unwrap_or_default()),
        connected: connected_at.len(),
        gave_up,
        retries,
        accepts_peak,
        connacks_peak: steps.values().copied().max().unwrap_or(0),
        broker_cpu_peak,
    })
}

/// One client with Paho C's back-off.
async fn client(addr: SocketAddr, id: String) -> Client {
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1..=TRIES {
        if let Ok(Some(stream)) = tokio::time::timeout(TRY_TIMEOUT, try_once(addr, &id)).await {
            return Client::Connected(Instant::now(), attempt, stream);
        }
        if attempt < TRIES {
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }
    Client::GaveUp
}

/// TCP connect, CONNECT, and an accepting CONNACK; `None` on anything else.
async fn try_once(addr: SocketAddr, id: &str) -> Option<TcpStream> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    stream.write_all(&mqtt::connect_packet(id)).await.ok()?;
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).await.ok()?;
    (connack == [0x20, 2, 0, 0]).then_some(stream)
}

/// The Markdown table: per target, the median and range over the rounds.
fn table(options: &Options, results: &[(Target, Vec<Outcome>)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# storm: {} MQTT clients reconnecting at once, Paho C back-off (1 s doubling, no jitter, \
         give up after {TRIES} tries, {}s per try), mosquitto behind; rate {}/s; {} round(s)\n",
        options.clients,
        TRY_TIMEOUT.as_secs(),
        options.rate,
        options.rounds
    );
    let _ = writeln!(
        out,
        "| target | all connected after (s) | connected | broker's peak accepts per 100 ms | peak CONNACKs per 100 ms at the clients | gave up | retries | broker peak CPU (% of a core, 1 s) |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    for (target, outcomes) in results {
        let seconds: Vec<f64> = outcomes
            .iter()
            .map(|o| o.all_connected.map_or(f64::NAN, |d| d.as_secs_f64()))
            .collect();
        let cell = |values: Vec<f64>, digits: usize| -> String {
            let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
            if sorted.len() < values.len() {
                return format!("not all ({} of {} rounds)", sorted.len(), values.len());
            }
            sorted.sort_by(f64::total_cmp);
            match sorted.as_slice() {
                [] => "-".into(),
                [one] => format!("{one:.digits$}"),
                all => format!(
                    "{:.digits$} ({:.digits$}..{:.digits$})",
                    all[all.len() / 2],
                    all[0],
                    all[all.len() - 1]
                ),
            }
        };
        let of = |f: fn(&Outcome) -> f64| outcomes.iter().map(f).collect::<Vec<f64>>();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            target.label(),
            cell(seconds, 1),
            cell(of(|o| o.connected as f64), 0),
            cell(of(|o| o.accepts_peak), 0),
            cell(of(|o| o.connacks_peak as f64), 0),
            cell(of(|o| o.gave_up as f64), 0),
            cell(of(|o| o.retries as f64), 0),
            cell(of(|o| o.broker_cpu_peak), 0),
        );
    }
    let _ = writeln!(
        out,
        "\nMedian (min..max) over the rounds. The broker's accepts are the growth of its open fds \
         between two readings 100 ms apart, on a thread of their own (a counting forwarder in the \
         bench would need two more fds per client than the 20,000-file cap leaves). CONNACKs are \
         timestamped by the clients, on the load generator's one busy thread, which bunches them. \
         {} clients: a proxy holds two fds per client under that cap.",
        options.clients
    );
    out
}
