//! Soak test: brokerside under steady load for a long time, to show that nothing grows.
//!
//! Starts mosquitto and the release `brokerside` binary (`run --config`, one listener, admin on a
//! free port, `[runtime] relay_threads = 2`) as child processes on free loopback ports, opens
//! 9,000 MQTT 3.1.1 connections through the proxy from this process, then for 30 minutes (by
//! default) churns them, closing 100 random connections and opening 100 new ones (CONNECT and
//! CONNACK) every second, while a few publisher/subscriber pairs do QoS 0 round trips through the
//! proxy continuously (one message every 10 ms per pair, each one checked when it arrives; one
//! pair sends 128 KiB messages, which the relay moves with splice through pipes).
//!
//! Every 10 s it samples the proxy's RSS, open fds, fds that are pipes and threads, and
//! mosquitto's RSS; it writes them to `benches/results/soak{,-smoke}.csv`, prints a table over
//! time and a summary, and fails when a message was lost, a connection could not be reopened or
//! was dropped, the proxy exited, or its RSS, fds or pipes were not flat (the criterion is printed
//! with the figures). Run it through `benches/soak.sh`; see benches/README.md.
//!
//! `cargo bench --bench soak -- [--minutes N | --smoke] [--connections N] [--churn N]`

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream as StdStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

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

use procs::{Process, Scratch, free_port};
use text::{mib, thousands};

/// Connections held by default: 9,000 cost the proxy 18,000 fds under this machine's cap of
/// 20,000 open files per process.
const DEFAULT_CONNECTIONS: usize = 9_000;
/// Connections closed and as many opened each second, by default.
const DEFAULT_CHURN: usize = 100;
/// Length of a run, by default and with `--smoke`.
const DEFAULT_MINUTES: u64 = 30;
const SMOKE_MINUTES: u64 = 2;
/// Connections being opened at once while the first N open.
const OPEN_CONCURRENCY: usize = 200;
/// Time allowed for one connection to get its CONNACK.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for the first N connections to open.
const FIRST_OPEN_TIMEOUT: Duration = Duration::from_secs(300);
/// One churn step (and the check that the proxy and the broker still run) per this.
const TICK: Duration = Duration::from_secs(1);
/// One sample of the processes per this.
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// Settle time after the first N connections opened and the pairs started, before the soak.
const SETTLE: Duration = Duration::from_secs(2);
/// The warm-up, excluded from the flatness baseline: a quarter of the run, at most this.
const MAX_WARMUP: Duration = Duration::from_secs(300);
/// Publisher/subscriber pairs and the payload of each one's messages: four small ones (MQTT
/// telemetry) and one large one, which makes the relay switch to splice and borrow pipes.
const PAIR_PAYLOADS: [usize; 5] = [64, 64, 64, 64, 128 * 1024];
/// One message per pair per this, at most (one in flight at a time).
const PACE: Duration = Duration::from_millis(10);
/// A message that has not arrived this long after its PUBLISH was written counts as lost.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(5);
/// Flatness: the last sample may exceed the first one after the warm-up by this ratio plus the
/// absolute slack of each figure.
const FLAT_RATIO: f64 = 1.10;
const SLACK_RSS_KIB: f64 = 512.0;
const SLACK_FDS: f64 = 16.0;
const SLACK_PIPE_FDS: f64 = 8.0;
/// Fds besides 2 per connection that a process needs (std streams, epoll, eventfds, listeners,
/// the log file, the admin endpoint).
const FD_HEADROOM: u64 = 64;

fn main() -> ExitCode {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("soak: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if options.help {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    match procs::run_until_interrupted(run(&options)) {
        Ok(failures) if failures.is_empty() => {
            println!("soak: passed");
            ExitCode::SUCCESS
        }
        Ok(failures) => {
            eprintln!("soak: FAILED");
            for failure in failures {
                eprintln!("  - {failure}");
            }
            ExitCode::FAILURE
        }
        Err(message) => {
            eprintln!("soak: {message}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "usage: cargo bench --bench soak -- [OPTIONS]   (or benches/soak.sh)

  --minutes N      length of the soak (default 30)
  --smoke          2 minutes, the same shape otherwise (CI)
  --connections N  MQTT connections held through the proxy (default 9000)
  --churn N        connections closed and as many opened each second (default 100)
  --out DIR        where the CSV and the Markdown go (default benches/results)

  BROKERSIDE_BIN   the proxy binary (default: the release binary cargo just built)
  MOSQUITTO_BIN    the broker binary (default: mosquitto on PATH, then /usr/sbin/mosquitto)";

/// What the command line asked for.
struct Options {
    minutes: u64,
    smoke: bool,
    connections: usize,
    churn: usize,
    out: PathBuf,
    help: bool,
}

impl Options {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
        let mut options = Options {
            minutes: DEFAULT_MINUTES,
            smoke: false,
            connections: DEFAULT_CONNECTIONS,
            churn: DEFAULT_CHURN,
            out: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/benches/results")),
            help: false,
        };
        fn number<T: std::str::FromStr>(flag: &str, value: Option<String>) -> Result<T, String> {
            let value = value.ok_or_else(|| format!("{flag} needs a value"))?;
            value
                .parse()
                .map_err(|_| format!("{flag}: {value:?} is not a number"))
        }
        let mut minutes = None;
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--minutes" => minutes = Some(number::<u64>("--minutes", args.next())?),
                "--smoke" => options.smoke = true,
                "--connections" => options.connections = number("--connections", args.next())?,
                "--churn" => options.churn = number("--churn", args.next())?,
                "--out" => {
                    options.out = PathBuf::from(args.next().ok_or("--out needs a directory")?)
                }
                // `cargo bench` appends --bench to a harness = false target.
                "--bench" => {}
                "-h" | "--help" => options.help = true,
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        options.minutes = match (minutes, options.smoke) {
            (Some(_), true) => return Err("--smoke and --minutes exclude each other".into()),
            (Some(n), false) => n,
            (None, true) => SMOKE_MINUTES,
            (None, false) => DEFAULT_MINUTES,
        };
        if options.minutes == 0 {
            return Err("--minutes must be at least 1".into());
        }
        if options.connections < 2 {
            return Err("--connections must be at least 2".into());
        }
        if options.churn > options.connections {
            return Err("--churn cannot exceed --connections".into());
        }
        Ok(options)
    }

    fn duration(&self) -> Duration {
        Duration::from_secs(self.minutes * 60)
    }

    /// A quarter of the run, at most [`MAX_WARMUP`].
    fn warmup(&self) -> Duration {
        (self.duration() / 4).min(MAX_WARMUP)
    }
}

// ---------------------------------------------------------------------------------------------
// The run

/// Runs the soak; returns the reasons it failed (none: it passed). An `Err` is a harness failure
/// before any figure (a program would not start, the first connections would not open).
async fn run(options: &Options) -> Result<Vec<String>, String> {
    let n = options.connections;
    check_fd_limit(options)?;
    println!(
        "soak: {} MQTT connections through brokerside to mosquitto, {} closed and {} opened per \
         second, {} publisher/subscriber pairs, {} min{}",
        thousands(n as u64),
        options.churn,
        options.churn,
        PAIR_PAYLOADS.len(),
        options.minutes,
        if options.smoke { " (smoke)" } else { "" }
    );
    println!(
        "soak: this machine caps open files at {} per process; brokerside holds 2 fds per \
         connection (client and backend), so {} connections cost it {} fds",
        procs::open_files_limit()
            .map(thousands)
            .unwrap_or_else(|| "?".into()),
        thousands(n as u64),
        thousands(2 * n as u64)
    );

    let scratch = Scratch::new("soak")?;
    let broker_port = free_port()?;
    let broker = targets::start_broker(&scratch, broker_port)?;
    let proxy_port = free_port()?;
    let admin_port = free_port()?;
    let proxy = start_brokerside(&scratch, proxy_port, broker_port, admin_port)?;
    proxy.wait_listening(proxy_port)?;
    let proxy_addr = SocketAddr::from(([127, 0, 0, 1], proxy_port));
    let admin_addr = SocketAddr::from(([127, 0, 0, 1], admin_port));

    let opening = Instant::now();
    let mut pool = Pool::open(proxy_addr, n).await?;
    let opened_in = opening.elapsed();
    eprintln!(
        "soak: {} connections open in {:.1} s",
        thousands(n as u64),
        opened_in.as_secs_f64()
    );
    let traffic = Traffic::start(proxy_addr)?;
    tokio::time::sleep(SETTLE).await;

    let mut soak = Soak {
        samples: Vec::new(),
        aborted: None,
        reopen_failures: 0,
        first_reopen_error: None,
        gauge_mismatches: 0,
    };
    let duration = options.duration();
    let started = Instant::now();
    let mut next_sample = started;
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(error) = proxy.check_running().and(broker.check_running()) {
            soak.aborted = Some(error);
            break;
        }
        if let Some(error) = traffic.error() {
            soak.aborted = Some(error);
            break;
        }
        let now = Instant::now();
        if now >= next_sample {
            next_sample += SAMPLE_EVERY;
            pool.check_open();
            match Sample::take(&proxy, &broker, admin_addr, started, &pool, &traffic) {
                Ok(sample) => {
                    if sample.active != Some(sample.expected_active()) {
                        soak.gauge_mismatches += 1;
                    }
                    if options.smoke || soak.samples.len().is_multiple_of(6) {
                        eprintln!("soak: {}", sample.progress_line());
                    }
                    soak.samples.push(sample);
                }
                Err(error) => {
                    soak.aborted = Some(error);
                    break;
                }
            }
            if now.duration_since(started) >= duration {
                break;
            }
        }
        let (failures, error) = pool.churn(proxy_addr, options.churn).await;
        soak.reopen_failures += failures;
        if soak.first_reopen_error.is_none() {
            soak.first_reopen_error = error;
        }
    }

    // With the churn stopped, the proxy's own gauge must come back to what this side holds.
    tokio::time::sleep(TICK).await;
    let final_active = metrics_active(admin_addr).ok().flatten();
    let expected_active = pool.clients.len() as i64 + 2 * PAIR_PAYLOADS.len() as i64;
    let proxy_log = proxy.log_tail();
    let traffic = traffic.finish();
    drop(pool);

    let report = Report {
        options,
        opened_in,
        soak: &soak,
        traffic: &traffic,
        final_active,
        expected_active,
        proxy_bin: proxy.program.clone(),
        proxy_log,
    };
    let (text, failures) = report.render();
    write_results(options, &soak.samples, &text)?;
    print!("{text}");
    Ok(failures)
}

/// Fails early when the open-files limit cannot hold the run: the proxy needs two fds per
/// connection (the idle ones, the pairs' and those being opened while others close).
fn check_fd_limit(options: &Options) -> Result<(), String> {
    let Some(soft) = procs::open_files_limit() else {
        return Ok(());
    };
    let extra = 2 * PAIR_PAYLOADS.len() + options.churn;
    let needed = 2 * (options.connections + extra) as u64 + FD_HEADROOM;
    if soft < needed {
        return Err(format!(
            "{} connections need {needed} open files in the proxy, but the limit is {soft}: raise \
             it (`ulimit -n $(ulimit -Hn)`, as benches/soak.sh does) or pass --connections {}",
            options.connections,
            (soft.saturating_sub(FD_HEADROOM) / 2).saturating_sub(extra as u64)
        ));
    }
    Ok(())
}

/// brokerside with one listener on `port` relaying to `backend_port`, admin on `admin_port`, two
/// relay threads; the config bench/compare uses otherwise.
fn start_brokerside(
    scratch: &Scratch,
    port: u16,
    backend_port: u16,
    admin_port: u16,
) -> Result<Process, String> {
    let mut text = targets::brokerside_config(port, backend_port, admin_port, None);
    text.push_str("\n[runtime]\nrelay_threads = 2\n");
    let config = scratch.write("brokerside.toml", &text)?;
    let program = targets::brokerside_bin();
    Process::spawn(
        "brokerside",
        program.clone(),
        Command::new(&program)
            .args(["--log-level", "warn", "run", "--config"])
            .arg(&config),
        scratch.path("brokerside.log"),
    )
}

/// What the soak loop gathered.
struct Soak {
    samples: Vec<Sample>,
    /// Why the soak stopped before its time, if it did.
    aborted: Option<String>,
    reopen_failures: u64,
    first_reopen_error: Option<String>,
    /// Samples where the proxy's connections gauge differed from what this side holds.
    gauge_mismatches: u64,
}

// ---------------------------------------------------------------------------------------------
// The churned connections

/// An MQTT 3.1.1 CONNECT with keepalive 0 (none): the broker never times a silent client out,
/// however long it lives in the pool. Built from the shared packet with the keepalive zeroed.
fn connect_packet(client_id: &str) -> Vec<u8> {
    let mut packet = mqtt::connect_packet(client_id);
    // Fixed header (2 bytes while the remaining length is under 128), protocol name (6), level
    // (1), flags (1): the keepalive is bytes 10 and 11.
    assert!(packet[1] < 0x80, "client id too long for a one-byte length");
    packet[10..12].copy_from_slice(&0u16.to_be_bytes());
    packet
}

/// One connection through the proxy: CONNECT with client id `soak-<id>`, CONNACK checked.
async fn connect_one(addr: SocketAddr, id: u64) -> io::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(&connect_packet(&format!("soak-{id}")))
        .await?;
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).await?;
    match connack {
        [0x20, 0x02, _, 0] => Ok(stream),
        other => Err(io::Error::other(format!(
            "expected a CONNACK accepting the client, got {other:02x?}"
        ))),
    }
}

/// Opens `count` connections with ids from `next_id`, `concurrency` at a time; returns those that
/// opened and the errors of those that did not.
async fn open_many(
    addr: SocketAddr,
    next_id: &mut u64,
    count: usize,
    concurrency: usize,
) -> (Vec<TcpStream>, Vec<String>) {
    let mut opened = Vec::with_capacity(count);
    let mut errors = Vec::new();
    let mut pending = JoinSet::new();
    let mut left = count;
    loop {
        while pending.len() < concurrency && left > 0 {
            let id = *next_id;
            *next_id += 1;
            left -= 1;
            pending.spawn(async move {
                match tokio::time::timeout(CONNECT_TIMEOUT, connect_one(addr, id)).await {
                    Ok(Ok(stream)) => Ok(stream),
                    Ok(Err(error)) => Err(format!("client soak-{id}: {error}")),
                    Err(_) => Err(format!(
                        "client soak-{id}: no CONNACK within {CONNECT_TIMEOUT:?}"
                    )),
                }
            });
        }
        match pending.join_next().await {
            None => return (opened, errors),
            Some(Ok(Ok(stream))) => opened.push(stream),
            Some(Ok(Err(error))) => errors.push(error),
            Some(Err(error)) => errors.push(error.to_string()),
        }
    }
}

/// The connections held open, and what happened to them.
struct Pool {
    target: usize,
    clients: Vec<TcpStream>,
    next_id: u64,
    /// Connections this side closed, and opened after the first N.
    closed: u64,
    reopened: u64,
    /// Connections found closed (or carrying bytes) that this side had not closed.
    dropped: u64,
}

impl Pool {
    /// Opens the first `n` connections; any failure is a harness failure.
    async fn open(addr: SocketAddr, n: usize) -> Result<Pool, String> {
        let mut next_id = 0;
        let opening = open_many(addr, &mut next_id, n, OPEN_CONCURRENCY);
        let (clients, errors) = tokio::time::timeout(FIRST_OPEN_TIMEOUT, opening)
            .await
            .map_err(|_| format!("{n} connections did not open within {FIRST_OPEN_TIMEOUT:?}"))?;
        if let Some(first) = errors.first() {
            return Err(format!(
                "{} of {n} connections did not open; the first: {first}",
                errors.len()
            ));
        }
        Ok(Pool {
            target: n,
            clients,
            next_id,
            closed: 0,
            reopened: 0,
            dropped: 0,
        })
    }

    /// Closes `churn` random connections and opens as many as it takes to hold the target again
    /// (at most twice the churn, so that a deficit is made up over the next steps). Returns the
    /// connections that would not open and the first error.
    async fn churn(&mut self, addr: SocketAddr, churn: usize) -> (u64, Option<String>) {
        for _ in 0..churn.min(self.clients.len()) {
            let client = self
                .clients
                .swap_remove(fastrand::usize(..self.clients.len()));
            if !still_open(&client) {
                self.dropped += 1;
            }
            // Dropped with nothing unread: a FIN, as a client that goes away cleanly.
            drop(client);
            self.closed += 1;
        }
        let wanted = (self.target - self.clients.len()).min(2 * churn);
        let (opened, errors) = open_many(addr, &mut self.next_id, wanted, wanted.max(1)).await;
        self.reopened += opened.len() as u64;
        self.clients.extend(opened);
        (errors.len() as u64, errors.into_iter().next())
    }

    /// Removes (and counts) the connections the proxy or the broker closed; the churn replaces
    /// them.
    fn check_open(&mut self) {
        let before = self.clients.len();
        self.clients.retain(still_open);
        self.dropped += (before - self.clients.len()) as u64;
    }
}

/// Whether a silent connection is still open and has received nothing (a read that would block).
fn still_open(client: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(client.try_read(&mut probe), Err(error) if error.kind() == io::ErrorKind::WouldBlock)
}

// ---------------------------------------------------------------------------------------------
// Traffic: publisher/subscriber pairs

/// What one pair counted.
#[derive(Default)]
struct PairStats {
    sent: AtomicU64,
    received: AtomicU64,
    /// Messages that did not arrive within [`MESSAGE_TIMEOUT`].
    lost: AtomicU64,
    /// Messages that arrived after they had been counted lost.
    late: AtomicU64,
    /// Round trips in µs.
    round_trips: Mutex<Vec<u32>>,
    error: Mutex<Option<String>>,
}

/// The pairs' threads: blocking sockets, so the round trips do not wait on the churn.
struct Traffic {
    stop: Arc<AtomicBool>,
    stats: Vec<Arc<PairStats>>,
    threads: Vec<JoinHandle<()>>,
}

impl Traffic {
    /// Connects and subscribes every pair, then starts its round trips.
    fn start(addr: SocketAddr) -> Result<Traffic, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut traffic = Traffic {
            stop: stop.clone(),
            stats: Vec::new(),
            threads: Vec::new(),
        };
        for (index, &payload) in PAIR_PAYLOADS.iter().enumerate() {
            let pair = Pair::connect(addr, index, payload)
                .map_err(|error| format!("pair {index} would not connect: {error}"))?;
            let stats = Arc::new(PairStats::default());
            let (thread_stats, thread_stop) = (stats.clone(), stop.clone());
            let thread = std::thread::Builder::new()
                .name(format!("pair-{index}"))
                .spawn(move || {
                    if let Err(error) = pair.run(&thread_stop, &thread_stats) {
                        *thread_stats.error.lock().unwrap() = Some(error);
                    }
                })
                .map_err(|error| format!("cannot start a thread: {error}"))?;
            traffic.stats.push(stats);
            traffic.threads.push(thread);
        }
        Ok(traffic)
    }

    /// The first error of a pair, which stopped it.
    fn error(&self) -> Option<String> {
        self.stats
            .iter()
            .find_map(|stats| stats.error.lock().unwrap().clone())
    }

    fn sum(&self, pick: fn(&PairStats) -> &AtomicU64) -> u64 {
        self.stats
            .iter()
            .map(|stats| pick(stats).load(Ordering::Relaxed))
            .sum()
    }

    /// Stops the pairs, lets each finish its message in flight, and returns their totals.
    fn finish(mut self) -> TrafficTotals {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        let mut small = Vec::new();
        let mut large = Vec::new();
        for (stats, &payload) in self.stats.iter().zip(PAIR_PAYLOADS.iter()) {
            let round_trips = stats.round_trips.lock().unwrap();
            if payload > 1024 {
                large.extend_from_slice(&round_trips);
            } else {
                small.extend_from_slice(&round_trips);
            }
        }
        small.sort_unstable();
        large.sort_unstable();
        TrafficTotals {
            sent: self.sum(|s| &s.sent),
            received: self.sum(|s| &s.received),
            lost: self.sum(|s| &s.lost),
            late: self.sum(|s| &s.late),
            error: self.error(),
            small,
            large,
        }
    }
}

impl Drop for Traffic {
    /// On an early exit (Ctrl-C) the threads are told to stop and left to end with the process.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The pairs' figures once they stopped.
struct TrafficTotals {
    sent: u64,
    received: u64,
    lost: u64,
    late: u64,
    error: Option<String>,
    /// Sorted round trips in µs, small and large messages.
    small: Vec<u32>,
    large: Vec<u32>,
}

/// A publisher and a subscriber on a topic of their own.
struct Pair {
    index: usize,
    topic: String,
    payload_len: usize,
    publisher: StdStream,
    subscriber: StdStream,
}

impl Pair {
    fn connect(addr: SocketAddr, index: usize, payload_len: usize) -> io::Result<Pair> {
        let topic = format!("soak/pair/{index}");
        let mut subscriber = connect_blocking(addr, &format!("soak-sub-{index}"))?;
        subscriber.write_all(&mqtt::subscribe_packet(&topic))?;
        let mut suback = [0u8; 5];
        subscriber.read_exact(&mut suback)?;
        if suback != [0x90, 0x03, 0x00, 0x01, 0x00] {
            return Err(io::Error::other(format!(
                "expected a SUBACK granting QoS 0, got {suback:02x?}"
            )));
        }
        let publisher = connect_blocking(addr, &format!("soak-pub-{index}"))?;
        Ok(Pair {
            index,
            topic,
            payload_len,
            publisher,
            subscriber,
        })
    }

    /// The payload of message `seq`: its number in 20 digits, a colon, then a filler byte that
    /// names the pair.
    fn payload(&self, seq: u64) -> Vec<u8> {
        let mut payload = vec![self.filler(); self.payload_len];
        let head = format!("{seq:020}:");
        payload[..head.len()].copy_from_slice(head.as_bytes());
        payload
    }

    fn filler(&self) -> u8 {
        b'a' + (self.index % 26) as u8
    }

    /// Round trips until `stop`: one PUBLISH at a time, at most one per [`PACE`], each awaited
    /// on the subscriber and checked byte for byte. An error (a closed connection, a message
    /// that is not the one sent) ends the pair.
    fn run(mut self, stop: &AtomicBool, stats: &PairStats) -> Result<(), String> {
        let mut buffer = Vec::new();
        let mut next = Instant::now();
        let mut seq = 0u64;
        let name = format!("pair {} ({} B messages)", self.index, self.payload_len);
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
            // No burst to catch up after a stall: the pace restarts from now.
            next = (next + PACE).max(Instant::now());
            seq += 1;
            let expected = mqtt::publish_packet(&self.topic, &self.payload(seq));
            let sent = Instant::now();
            self.publisher
                .write_all(&expected)
                .map_err(|error| format!("{name}: cannot publish message {seq}: {error}"))?;
            stats.sent.fetch_add(1, Ordering::Relaxed);
            let deadline = sent + MESSAGE_TIMEOUT;
            loop {
                let Some(packet) = read_packet(&mut self.subscriber, &mut buffer, deadline)
                    .map_err(|error| format!("{name}: subscriber: {error}"))?
                else {
                    stats.lost.fetch_add(1, Ordering::Relaxed);
                    break;
                };
                let got = self
                    .check(&packet)
                    .map_err(|error| format!("{name}: {error}"))?;
                if got == seq {
                    if packet != expected {
                        return Err(format!("{name}: message {seq} arrived altered"));
                    }
                    let micros = u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX);
                    stats.round_trips.lock().unwrap().push(micros);
                    stats.received.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                if got < seq {
                    stats.late.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                return Err(format!(
                    "{name}: message {got} arrived while message {seq} was awaited"
                ));
            }
        }
        Ok(())
    }

    /// The number of the message in a packet the subscriber received, when it is a PUBLISH of
    /// this pair's topic with a well-formed payload.
    fn check(&self, packet: &[u8]) -> Result<u64, String> {
        let sample = mqtt::publish_packet(&self.topic, &self.payload(0));
        if packet.len() != sample.len() || packet[0] != 0x30 {
            return Err(format!(
                "the subscriber received a packet of type {:#04x} and {} bytes, not a QoS 0 \
                 PUBLISH of {} bytes",
                packet[0],
                packet.len(),
                sample.len()
            ));
        }
        let payload_at = sample.len() - self.payload_len;
        if packet[..payload_at] != sample[..payload_at] {
            return Err("the subscriber received a PUBLISH on another topic".into());
        }
        let payload = &packet[payload_at..];
        std::str::from_utf8(&payload[..20])
            .ok()
            .and_then(|digits| digits.parse().ok())
            .ok_or_else(|| "a message without its number".to_string())
    }
}

/// A blocking MQTT connection with Nagle off and keepalive 0, CONNACK received.
fn connect_blocking(addr: SocketAddr, client_id: &str) -> io::Result<StdStream> {
    let mut stream = StdStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(CONNECT_TIMEOUT))?;
    stream.set_write_timeout(Some(MESSAGE_TIMEOUT))?;
    stream.write_all(&connect_packet(client_id))?;
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack)?;
    if !matches!(connack, [0x20, 0x02, _, 0]) {
        return Err(io::Error::other(format!(
            "expected a CONNACK accepting the client, got {connack:02x?}"
        )));
    }
    Ok(stream)
}

/// The next whole MQTT packet from `stream`, bytes already read kept in `buffer` across calls
/// (so a timeout mid-packet loses nothing); `None` once `deadline` passes first.
fn read_packet(
    stream: &mut StdStream,
    buffer: &mut Vec<u8>,
    deadline: Instant,
) -> io::Result<Option<Vec<u8>>> {
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        if let Some(len) = packet_len(buffer) {
            return Ok(Some(buffer.drain(..len).collect()));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut chunk) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the connection was closed",
                ));
            }
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(error) => return Err(error),
        }
    }
}

/// The length of the first packet in `buffer` once it is all there.
fn packet_len(buffer: &[u8]) -> Option<usize> {
    let mut remaining = 0usize;
    for (i, &byte) in buffer.iter().enumerate().skip(1).take(4) {
        remaining |= ((byte & 0x7f) as usize) << (7 * (i - 1));
        if byte & 0x80 == 0 {
            let total = i + 1 + remaining;
            return (buffer.len() >= total).then_some(total);
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Samples

/// The processes at one moment, and the load's counters then.
struct Sample {
    /// Seconds since the soak began.
    at: f64,
    proxy_rss: u64,
    proxy_fds: u64,
    proxy_pipe_fds: u64,
    proxy_threads: u64,
    proxy_cpu: f64,
    broker_rss: u64,
    /// The proxy's `brokerside_connections_active` gauge, when /metrics answered.
    active: Option<i64>,
    /// Connections this side holds: the pool's and the pairs'.
    held: u64,
    closed: u64,
    reopened: u64,
    dropped: u64,
    sent: u64,
    received: u64,
    lost: u64,
}

impl Sample {
    fn take(
        proxy: &Process,
        broker: &Process,
        admin: SocketAddr,
        started: Instant,
        pool: &Pool,
        traffic: &Traffic,
    ) -> Result<Sample, String> {
        let pid = proxy.pid();
        let proxy_rss = proxy.rss_kib()?;
        let (proxy_fds, proxy_pipe_fds) = fds_and_pipes(pid)?;
        let sample = Sample {
            at: started.elapsed().as_secs_f64(),
            proxy_rss,
            proxy_fds,
            proxy_pipe_fds,
            proxy_threads: procs::status_field(pid, "Threads:").unwrap_or(0),
            proxy_cpu: proxy.cpu()?.as_secs_f64(),
            broker_rss: broker.rss_kib()?,
            // After the fds are counted: the request is a connection of its own.
            active: metrics_active(admin).ok().flatten(),
            held: (pool.clients.len() + 2 * PAIR_PAYLOADS.len()) as u64,
            closed: pool.closed,
            reopened: pool.reopened,
            dropped: pool.dropped,
            sent: traffic.sum(|s| &s.sent),
            received: traffic.sum(|s| &s.received),
            lost: traffic.sum(|s| &s.lost),
        };
        Ok(sample)
    }

    fn expected_active(&self) -> i64 {
        self.held as i64
    }

    /// The proxy's fds beyond two per connection this side holds, pipes excluded: constant
    /// unless something leaks.
    fn fd_overhead(&self) -> i64 {
        self.proxy_fds as i64 - self.proxy_pipe_fds as i64 - 2 * self.held as i64
    }

    fn progress_line(&self) -> String {
        format!(
            "{} RSS {}, fds {}, pipe fds {}, threads {}; mosquitto {}; held {}, churned {}, \
             messages {} lost {}",
            clock(self.at),
            mib(self.proxy_rss),
            thousands(self.proxy_fds),
            self.proxy_pipe_fds,
            self.proxy_threads,
            mib(self.broker_rss),
            thousands(self.held),
            thousands(self.closed),
            thousands(self.received),
            self.lost
        )
    }

    const CSV_HEADER: &str = "elapsed_s,proxy_rss_kib,proxy_fds,proxy_pipe_fds,proxy_threads,\
                              proxy_cpu_s,broker_rss_kib,proxy_connections_active,held,closed,\
                              reopened,dropped,sent,received,lost";

    fn csv_row(&self) -> String {
        format!(
            "{:.1},{},{},{},{},{:.2},{},{},{},{},{},{},{},{},{}",
            self.at,
            self.proxy_rss,
            self.proxy_fds,
            self.proxy_pipe_fds,
            self.proxy_threads,
            self.proxy_cpu,
            self.broker_rss,
            self.active.map(|a| a.to_string()).unwrap_or_default(),
            self.held,
            self.closed,
            self.reopened,
            self.dropped,
            self.sent,
            self.received,
            self.lost
        )
    }
}

/// Open fds of `pid`, and how many of them are pipe ends (their link reads `pipe:[inode]`).
fn fds_and_pipes(pid: u32) -> Result<(u64, u64), String> {
    let dir = PathBuf::from(format!("/proc/{pid}/fd"));
    let entries =
        fs::read_dir(&dir).map_err(|error| format!("cannot list {}: {error}", dir.display()))?;
    let (mut fds, mut pipes) = (0, 0);
    for entry in entries.flatten() {
        fds += 1;
        // An fd closed between the listing and the readlink is counted, as not a pipe.
        if fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy().starts_with("pipe:"))
        {
            pipes += 1;
        }
    }
    Ok((fds, pipes))
}

/// `brokerside_connections_active{listener="mqtt"}` from the admin endpoint's /metrics.
fn metrics_active(admin: SocketAddr) -> Result<Option<i64>, String> {
    const TIMEOUT: Duration = Duration::from_secs(2);
    let failed = |error: io::Error| format!("GET /metrics on {admin}: {error}");
    let mut stream = StdStream::connect_timeout(&admin, TIMEOUT).map_err(failed)?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(failed)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(failed)?;
    stream
        .write_all(
            format!("GET /metrics HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .map_err(failed)?;
    let mut answer = Vec::new();
    stream
        .take(4 << 20)
        .read_to_end(&mut answer)
        .map_err(failed)?;
    let text = String::from_utf8_lossy(&answer);
    Ok(text.lines().find_map(|line| {
        line.strip_prefix("brokerside_connections_active{listener=\"mqtt\"} ")
            .and_then(|value| value.trim().parse().ok())
    }))
}

// ---------------------------------------------------------------------------------------------
// Report

/// Everything the printed report is made of.
struct Report<'a> {
    options: &'a Options,
    opened_in: Duration,
    soak: &'a Soak,
    traffic: &'a TrafficTotals,
    final_active: Option<i64>,
    expected_active: i64,
    proxy_bin: PathBuf,
    proxy_log: String,
}

/// One figure's readings over the run and its flatness verdict.
struct Series {
    label: &'static str,
    unit: Unit,
    first: f64,
    base: f64,
    last: f64,
    min: f64,
    max: f64,
    /// The most the last sample may be, when the figure is judged.
    limit: Option<f64>,
}

#[derive(Clone, Copy)]
enum Unit {
    Kib,
    Count,
}

impl Unit {
    fn format(self, value: f64) -> String {
        match self {
            Unit::Kib => format!("{} KiB", thousands(value.round().max(0.0) as u64)),
            Unit::Count if value < 0.0 => format!("−{}", thousands((-value).round() as u64)),
            Unit::Count => thousands(value.round() as u64),
        }
    }
}

impl Series {
    fn of(
        samples: &[Sample],
        base: usize,
        label: &'static str,
        unit: Unit,
        slack: Option<f64>,
        pick: impl Fn(&Sample) -> f64,
    ) -> Series {
        let values: Vec<f64> = samples.iter().map(pick).collect();
        let base_value = values[base];
        Series {
            label,
            unit,
            first: values[0],
            base: base_value,
            last: *values.last().unwrap(),
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            limit: slack.map(|slack| base_value.max(0.0) * FLAT_RATIO + slack),
        }
    }

    fn flat(&self) -> bool {
        self.limit.is_none_or(|limit| self.last <= limit)
    }
}

impl Report<'_> {
    /// The Markdown report, and the reasons the run failed.
    fn render(&self) -> (String, Vec<String>) {
        let mut out = String::new();
        let mut failures = Vec::new();
        let soak = self.soak;
        let samples = &soak.samples;
        let options = self.options;
        let t = self.traffic;

        let _ = writeln!(
            out,
            "\n## brokerside soak: {} MQTT connections, {} churned per second, {} min{}\n",
            thousands(options.connections as u64),
            options.churn,
            options.minutes,
            if options.smoke { " (smoke)" } else { "" }
        );
        if let Some(reason) = &soak.aborted {
            failures.push(format!("the soak stopped early: {reason}"));
            let _ = writeln!(out, "**Stopped early**: {reason}\n");
        }
        if samples.is_empty() {
            failures.push("no sample was taken".into());
            return (out, failures);
        }

        // Over time: a row per minute (per sample with --smoke), and the last one.
        let _ = writeln!(
            out,
            "| time | brokerside RSS | fds | pipe fds | threads | CPU | mosquitto RSS | held | \
             proxy's gauge | churned | messages received | lost |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|");
        let every = if options.smoke { 1 } else { 6 };
        for (i, s) in samples.iter().enumerate() {
            if i % every != 0 && i + 1 != samples.len() {
                continue;
            }
            let _ = writeln!(
                out,
                "| {} | {} KiB | {} | {} | {} | {:.1} s | {} KiB | {} | {} | {} | {} | {} |",
                clock(s.at),
                thousands(s.proxy_rss),
                thousands(s.proxy_fds),
                s.proxy_pipe_fds,
                s.proxy_threads,
                s.proxy_cpu,
                thousands(s.broker_rss),
                thousands(s.held),
                s.active
                    .map(|a| thousands(a.max(0) as u64))
                    .unwrap_or_else(|| "?".into()),
                thousands(s.closed),
                thousands(s.received),
                s.lost
            );
        }

        // Flatness, against the first sample at or after the warm-up.
        let warmup = options.warmup().as_secs_f64();
        let base = samples
            .iter()
            .position(|s| s.at >= warmup)
            .unwrap_or(samples.len() - 1);
        let series = [
            Series::of(
                samples,
                base,
                "brokerside RSS",
                Unit::Kib,
                Some(SLACK_RSS_KIB),
                |s| s.proxy_rss as f64,
            ),
            Series::of(
                samples,
                base,
                "brokerside fds",
                Unit::Count,
                Some(SLACK_FDS),
                |s| s.proxy_fds as f64,
            ),
            Series::of(
                samples,
                base,
                "brokerside fds that are pipes",
                Unit::Count,
                Some(SLACK_PIPE_FDS),
                |s| s.proxy_pipe_fds as f64,
            ),
            Series::of(
                samples,
                base,
                "brokerside fds − pipes − 2 × held connections",
                Unit::Count,
                Some(SLACK_FDS),
                |s| s.fd_overhead() as f64,
            ),
            Series::of(
                samples,
                base,
                "brokerside threads",
                Unit::Count,
                None,
                |s| s.proxy_threads as f64,
            ),
            Series::of(samples, base, "mosquitto RSS", Unit::Kib, None, |s| {
                s.broker_rss as f64
            }),
        ];
        let _ = writeln!(
            out,
            "\nFlat means: last sample ≤ first sample after the warm-up × {2:.2} + slack ({3} KiB \
             for RSS, {4} fds, {5} pipe fds). The warm-up is a quarter of the run, at most {6} \
             min: {0} here, so the baseline is the sample at {1}. Threads and mosquitto are \
             reported, not judged.\n",
            clock(warmup),
            clock(samples[base].at),
            FLAT_RATIO,
            SLACK_RSS_KIB,
            SLACK_FDS,
            SLACK_PIPE_FDS,
            MAX_WARMUP.as_secs() / 60
        );
        let _ = writeln!(
            out,
            "| figure | first | after warm-up | last | min | max | limit | flat? |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
        for s in &series {
            let f = |v: f64| s.unit.format(v);
            let (limit, flat) = match s.limit {
                Some(limit) if s.flat() => (f(limit), "yes"),
                Some(limit) => (f(limit), "**no**"),
                None => ("—".into(), "—"),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {limit} | {flat} |",
                s.label,
                f(s.first),
                f(s.base),
                f(s.last),
                f(s.min),
                f(s.max)
            );
            if !s.flat() {
                failures.push(format!(
                    "{} is not flat: last {} > limit {}",
                    s.label,
                    f(s.last),
                    f(s.limit.unwrap_or_default())
                ));
            }
        }

        // Everything else.
        let last = samples.last().unwrap();
        let half = last.at / 2.0;
        let second_half: Vec<(f64, f64)> = samples
            .iter()
            .filter(|s| s.at >= half)
            .map(|s| (s.at / 60.0, s.proxy_rss as f64))
            .collect();
        let broker_half: Vec<(f64, f64)> = samples
            .iter()
            .filter(|s| s.at >= half)
            .map(|s| (s.at / 60.0, s.broker_rss as f64))
            .collect();
        let first = &samples[0];
        let soaked = (last.at - first.at).max(1.0);
        let churned = last.closed - first.closed;
        let _ = writeln!(out, "\n| figure | value |");
        let _ = writeln!(out, "|---|---|");
        let _ = writeln!(
            out,
            "| brokerside RSS slope over the second half ({} samples, least squares) | {} |",
            second_half.len(),
            slope(&second_half)
                .map(|s| format!("{s:+.1} KiB/min"))
                .unwrap_or_else(|| "n/a".into())
        );
        let _ = writeln!(
            out,
            "| mosquitto RSS slope over the second half | {} |",
            slope(&broker_half)
                .map(|s| format!("{s:+.1} KiB/min"))
                .unwrap_or_else(|| "n/a".into())
        );
        let _ = writeln!(
            out,
            "| connections churned: closed / reopened ({:.1} s soaked) | {} / {} ({:.1}/s) |",
            soaked,
            thousands(last.closed),
            thousands(last.reopened),
            churned as f64 / soaked
        );
        let _ = writeln!(
            out,
            "| connections that would not reopen | {} |",
            soak.reopen_failures
        );
        let _ = writeln!(
            out,
            "| connections closed by the proxy or the broker, not by the client | {} |",
            last.dropped
        );
        let _ = writeln!(
            out,
            "| messages sent / received / lost (not there within {} s) / late | {} / {} / {} / {} |",
            MESSAGE_TIMEOUT.as_secs(),
            thousands(t.sent),
            thousands(t.received),
            thousands(t.lost),
            t.late
        );
        let large_label = format!("{} KiB", PAIR_PAYLOADS[4] / 1024);
        for (label, sorted) in [("64 B", &t.small), (large_label.as_str(), &t.large)] {
            let _ = writeln!(
                out,
                "| round trip of a {label} message: p50 / p99 / max | {} |",
                if sorted.is_empty() {
                    "n/a".into()
                } else {
                    format!(
                        "{} / {} / {}",
                        micros(percentile(sorted, 50.0)),
                        micros(percentile(sorted, 99.0)),
                        micros(*sorted.last().unwrap())
                    )
                }
            );
        }
        let _ = writeln!(
            out,
            "| brokerside's `connections_active` at the end (churn stopped 1 s) / held here | {} \
             / {} |",
            self.final_active
                .map(|a| a.to_string())
                .unwrap_or_else(|| "?".into()),
            self.expected_active
        );
        let _ = writeln!(
            out,
            "| samples where that gauge differed from the connections held | {} of {} |",
            soak.gauge_mismatches,
            samples.len()
        );
        let _ = writeln!(
            out,
            "| brokerside CPU over the soak | {:.1} s ({:.0}% of one core) |",
            last.proxy_cpu - first.proxy_cpu,
            100.0 * (last.proxy_cpu - first.proxy_cpu) / soaked
        );
        let _ = writeln!(
            out,
            "| time to open the first {} connections | {:.1} s |",
            thousands(options.connections as u64),
            self.opened_in.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "| traffic | {} pairs, one QoS 0 message in flight each, at most one per {} ms: \
             payloads {} |",
            PAIR_PAYLOADS.len(),
            PACE.as_millis(),
            PAIR_PAYLOADS
                .iter()
                .map(|&p| if p >= 1024 {
                    format!("{} KiB", p / 1024)
                } else {
                    format!("{p} B")
                })
                .collect::<Vec<_>>()
                .join(", ")
        );
        let _ = writeln!(
            out,
            "| open-files cap per process / brokerside's fds per connection | {} / 2 (client \
             and backend): {} connections cost it {} |",
            procs::open_files_limit()
                .map(thousands)
                .unwrap_or_else(|| "?".into()),
            thousands(options.connections as u64),
            thousands(2 * options.connections as u64)
        );
        let _ = writeln!(out, "| proxy binary | `{}` |", self.proxy_bin.display());

        if soak.reopen_failures > 0 {
            failures.push(format!(
                "{} connections would not reopen; the first: {}",
                soak.reopen_failures,
                soak.first_reopen_error.as_deref().unwrap_or("?")
            ));
        }
        if last.dropped > 0 {
            failures.push(format!(
                "{} connections were closed by the proxy or the broker",
                last.dropped
            ));
        }
        if t.lost > 0 || t.late > 0 {
            failures.push(format!(
                "{} messages lost ({} arrived late)",
                t.lost, t.late
            ));
        }
        if t.sent != t.received + t.lost {
            failures.push(format!(
                "messages do not add up: {} sent, {} received, {} lost",
                t.sent, t.received, t.lost
            ));
        }
        if let Some(error) = &t.error {
            failures.push(error.clone());
        }
        if self.final_active != Some(self.expected_active) {
            failures.push(format!(
                "brokerside's connections_active gauge is {} at the end, {} connections are held",
                self.final_active
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| "unreadable".into()),
                self.expected_active
            ));
        }
        if !failures.is_empty() && !self.proxy_log.trim().is_empty() {
            let _ = writeln!(
                out,
                "\nbrokerside's stderr ends with:\n\n```\n{}\n```",
                self.proxy_log
            );
        }
        (out, failures)
    }
}

/// Writes the samples as CSV and the report as Markdown to `--out`.
fn write_results(options: &Options, samples: &[Sample], report: &str) -> Result<(), String> {
    fs::create_dir_all(&options.out)
        .map_err(|error| format!("cannot create {}: {error}", options.out.display()))?;
    let stem = if options.smoke { "soak-smoke" } else { "soak" };
    let write = |path: &Path, text: &str| {
        fs::write(path, text).map_err(|error| format!("cannot write {}: {error}", path.display()))
    };
    let mut csv = String::from(Sample::CSV_HEADER);
    csv.push('\n');
    for sample in samples {
        csv.push_str(&sample.csv_row());
        csv.push('\n');
    }
    let csv_path = options.out.join(format!("{stem}.csv"));
    write(&csv_path, &csv)?;
    write(&options.out.join(format!("{stem}.md")), report)?;
    eprintln!("soak: wrote {}", csv_path.display());
    Ok(())
}

/// Least-squares slope of y over x, when there are two distinct x.
fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// The nearest-rank percentile of sorted values.
fn percentile(sorted: &[u32], p: f64) -> u32 {
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn micros(us: u32) -> String {
    if us >= 10_000 {
        format!("{:.1} ms", us as f64 / 1000.0)
    } else {
        format!("{:.2} ms", us as f64 / 1000.0)
    }
}

/// Seconds as `m:ss`.
fn clock(seconds: f64) -> String {
    let s = seconds.round() as u64;
    format!("{}:{:02}", s / 60, s % 60)
}
