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
use std::fs;
use std::io;
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// Connections held by default: 9,000 costs the proxy 18,000 fds under the 20,000 open-files cap.
const DEFAULT_CONNECTIONS: usize = 9_000;
/// Connections for `--smoke`, the quick CI run that keeps the harness from rotting.
const SMOKE_CONNECTIONS: usize = 200;
/// Connections being opened at once, by default.
const DEFAULT_CONCURRENCY: usize = 200;
/// MQTT keepalive sent in CONNECT: long enough that no PINGREQ moves during a run.
const KEEPALIVE_SECS: u16 = 600;
/// Pause before each RSS reading, so freed memory and in-flight work settle.
const SETTLE: Duration = Duration::from_secs(1);
/// Time allowed for a child process to open its port.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for one connection to get its CONNACK.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for a whole batch of connections to open.
const BATCH_TIMEOUT: Duration = Duration::from_secs(180);
/// Fds a process needs besides its sockets (std streams, epoll, eventfd, listener, files).
const FD_HEADROOM: u64 = 64;
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
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("idle_rss: cannot start the tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // The bench returns (and its children are killed on drop) on an error, on Ctrl-C and on
    // SIGTERM alike.
    let outcome = runtime.block_on(async {
        tokio::select! {
            outcome = run(&options) => outcome,
            () = interrupted() => Err("interrupted".to_string()),
        }
    });
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

async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Runs the whole measurement and returns the report to print.
async fn run(options: &Options) -> Result<String, String> {
    let n = options.connections;
    check_fd_limit(n)?;
    let scratch = Scratch::new()?;

    let broker_port = free_port()?;
    let broker = start_broker(&scratch, broker_port)?;
    let proxy_port = free_port()?;
    let proxy = start_proxy(&scratch, proxy_port, broker_port)?;
    let proxy_addr = SocketAddr::from(([127, 0, 0, 1], proxy_port));

    tokio::time::sleep(SETTLE).await;
    let at_start = Sample::take(&proxy, &broker)?;

    let c = options.concurrency;
    let mut clients = Vec::with_capacity(n);
    let mut opening = open(&mut clients, proxy_addr, c, 0..1).await?;
    tokio::time::sleep(SETTLE).await;
    let at_one = Sample::take(&proxy, &broker)?;

    let half = n / 2;
    opening += open(&mut clients, proxy_addr, c, 1..half).await?;
    tokio::time::sleep(SETTLE).await;
    let at_half = Sample::take(&proxy, &broker)?;

    opening += open(&mut clients, proxy_addr, c, half..n).await?;
    tokio::time::sleep(SETTLE).await;
    let at_full = Sample::take(&proxy, &broker)?;
    let proxy_fds = count_fds(proxy.pid())?;
    let rollup = smaps_rollup(proxy.pid());
    // Every client must still be connected: an idle connection the proxy dropped costs nothing.
    check_still_open(&clients)?;

    Ok(report(&Report {
        n,
        concurrency: c,
        half,
        at_start,
        at_one,
        at_half,
        at_full,
        proxy_fds,
        threads: status_field(proxy.pid(), "Threads:").unwrap_or(0),
        rollup,
        opening,
        proxy_bin: proxy.program.clone(),
    }))
}

/// RSS of both children at one moment, in KiB.
struct Sample {
    proxy: u64,
    broker: u64,
}

impl Sample {
    fn take(proxy: &Process, broker: &Process) -> Result<Sample, String> {
        proxy.check_running()?;
        broker.check_running()?;
        Ok(Sample {
            proxy: rss_kib(proxy.pid())?,
            broker: rss_kib(broker.pid())?,
        })
    }
}

/// Everything the printed report is made of.
struct Report {
    n: usize,
    concurrency: usize,
    half: usize,
    at_start: Sample,
    at_one: Sample,
    at_half: Sample,
    at_full: Sample,
    proxy_fds: usize,
    threads: u64,
    rollup: String,
    opening: Duration,
    proxy_bin: PathBuf,
}

fn report(r: &Report) -> String {
    let per = |from: &Sample, to: &Sample, pick: fn(&Sample) -> u64, connections: usize| {
        (pick(to) as f64 - pick(from) as f64) * 1024.0 / connections as f64
    };
    let proxy = |s: &Sample| s.proxy;
    let broker = |s: &Sample| s.broker;
    let start_bytes = r.at_start.proxy as f64 * 1024.0;
    let per_all = per(&r.at_one, &r.at_full, proxy, r.n - 1);
    let per_step = per(&r.at_half, &r.at_full, proxy, r.n - r.half);
    let met = |ok: bool| if ok { "yes" } else { "**no**" };

    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n## brokerside idle-connection memory ({} idle MQTT connections)\n",
        thousands(r.n)
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
        thousands(r.n),
        per_conn(per_all),
        met(per_all <= TARGET_PER_CONNECTION)
    );
    let _ = writeln!(
        out,
        "| RSS per idle MQTT connection ({} → {}) | {} | ≤ 1.0 KiB | {} |",
        thousands(r.half),
        thousands(r.n),
        per_conn(per_step),
        met(per_step <= TARGET_PER_CONNECTION)
    );
    for (label, sample) in [
        ("1 connection".to_string(), &r.at_one),
        (format!("{} connections", thousands(r.half)), &r.at_half),
        (format!("{} connections", thousands(r.n)), &r.at_full),
    ] {
        let _ = writeln!(out, "| RSS with {label} | {} | — | — |", mib(sample.proxy));
    }

    let _ = writeln!(out, "\nContext, not targets:\n");
    let _ = writeln!(out, "| figure | value |");
    let _ = writeln!(out, "|---|---|");
    let _ = writeln!(
        out,
        "| broker (mosquitto) RSS per connection (1 → {}) | {} |",
        thousands(r.n),
        per_conn(per(&r.at_one, &r.at_full, broker, r.n - 1))
    );
    let _ = writeln!(
        out,
        "| broker (mosquitto) RSS at start / with {} | {} / {} |",
        thousands(r.n),
        mib(r.at_start.broker),
        mib(r.at_full.broker)
    );
    let _ = writeln!(
        out,
        "| proxy fds / threads with {} connections | {} / {} |",
        thousands(r.n),
        thousands(r.proxy_fds),
        r.threads
    );
    if !r.rollup.is_empty() {
        let _ = writeln!(
            out,
            "| proxy smaps_rollup with {} connections | {} |",
            thousands(r.n),
            r.rollup
        );
    }
    let _ = writeln!(
        out,
        "| time to open {} connections ({} at a time) | {:.1} s |",
        thousands(r.n),
        r.concurrency,
        r.opening.as_secs_f64()
    );
    let _ = writeln!(out, "| proxy binary | `{}` |", r.proxy_bin.display());
    out
}

fn per_conn(bytes: f64) -> String {
    format!("{:.2} KiB ({bytes:.0} B)", bytes / 1024.0)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Clients

/// Opens connections `range` through the proxy, `concurrency` at a time, each up to its CONNACK.
/// Returns how long that took.
async fn open(
    clients: &mut Vec<TcpStream>,
    addr: SocketAddr,
    concurrency: usize,
    range: std::ops::Range<usize>,
) -> Result<Duration, String> {
    let wanted = range.len();
    let started = Instant::now();
    let batch = async {
        let mut pending = JoinSet::new();
        let mut ids = range;
        loop {
            while pending.len() < concurrency {
                let Some(id) = ids.next() else { break };
                pending.spawn(async move {
                    match tokio::time::timeout(CONNECT_TIMEOUT, connect_idle(addr, id)).await {
                        Ok(Ok(stream)) => Ok(stream),
                        Ok(Err(error)) => Err(format!("client idle-{id}: {error}")),
                        Err(_) => Err(format!(
                            "client idle-{id}: no CONNACK within {CONNECT_TIMEOUT:?}"
                        )),
                    }
                });
            }
            let Some(joined) = pending.join_next().await else {
                return Ok(started.elapsed());
            };
            clients.push(joined.map_err(|error| error.to_string())??);
        }
    };
    match tokio::time::timeout(BATCH_TIMEOUT, batch).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "{wanted} connections did not all open within {BATCH_TIMEOUT:?}"
        )),
    }
}

/// One MQTT 3.1.1 connection: CONNECT with client id `idle-<id>`, CONNACK checked, then idle.
async fn connect_idle(addr: SocketAddr, id: usize) -> io::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(&connect_packet(&format!("idle-{id}")))
        .await?;
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).await?;
    match connack {
        [0x20, 0x02, _, 0] => Ok(stream),
        [0x20, 0x02, _, code] => Err(io::Error::other(format!(
            "broker refused CONNECT with return code {code}"
        ))),
        other => Err(io::Error::other(format!(
            "expected a CONNACK, got {other:02x?}"
        ))),
    }
}

/// An MQTT 3.1.1 CONNECT packet: clean session, no will, no credentials.
fn connect_packet(client_id: &str) -> Vec<u8> {
    let id = client_id.as_bytes();
    let id_len = u16::try_from(id.len()).expect("client id fits MQTT's 16-bit length");
    // Protocol name, level 4, flags, keepalive (10 bytes), then the length-prefixed client id.
    let remaining = 10 + 2 + id.len();
    assert!(remaining < 128, "one-byte remaining length");
    let mut packet = Vec::with_capacity(2 + remaining);
    packet.extend_from_slice(&[0x10, remaining as u8]);
    packet.extend_from_slice(&[0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02]);
    packet.extend_from_slice(&KEEPALIVE_SECS.to_be_bytes());
    packet.extend_from_slice(&id_len.to_be_bytes());
    packet.extend_from_slice(id);
    packet
}

/// Fails when the broker or the proxy closed any client (a read that does not block).
fn check_still_open(clients: &[TcpStream]) -> Result<(), String> {
    let mut probe = [0u8; 1];
    let closed = clients
        .iter()
        .filter(|c| match c.try_read(&mut probe) {
            Err(e) => e.kind() != io::ErrorKind::WouldBlock,
            Ok(_) => true,
        })
        .count();
    if closed > 0 {
        return Err(format!(
            "{closed} of {} idle connections were closed or received bytes during the run",
            clients.len()
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Child processes

/// A child process that is killed and reaped when dropped, whatever path the bench leaves by.
struct Process {
    name: &'static str,
    program: PathBuf,
    child: Child,
}

impl Process {
    fn spawn(
        name: &'static str,
        program: PathBuf,
        command: &mut Command,
    ) -> Result<Process, String> {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|error| format!("cannot start {name} ({}): {error}", program.display()))?;
        Ok(Process {
            name,
            program,
            child,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails when the process has exited. It is not reaped before drop, so /proc shows it as a
    /// zombie (`Z`) until then.
    fn check_running(&self) -> Result<(), String> {
        match status_state(self.pid()) {
            Some('Z') | None => Err(format!("{} exited early (its stderr is above)", self.name)),
            _ => Ok(()),
        }
    }

    /// Waits until `port` on 127.0.0.1 is listening, or the process exits, or the timeout.
    fn wait_listening(&self, port: u16) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            self.check_running()?;
            if is_listening(port) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "{} did not listen on 127.0.0.1:{port} within {START_TIMEOUT:?}",
            self.name
        ))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts mosquitto on `port` with a minimal config: anonymous, unlimited connections, no disk.
fn start_broker(scratch: &Scratch, port: u16) -> Result<Process, String> {
    let program = mosquitto_bin()?;
    let config = scratch.write(
        "mosquitto.conf",
        &format!(
            "allow_anonymous true\n\
             persistence false\n\
             log_dest stderr\n\
             log_type error\n\
             log_type warning\n\
             listener {port} 127.0.0.1\n\
             max_connections -1\n"
        ),
    )?;
    let broker = Process::spawn(
        "mosquitto",
        program.clone(),
        Command::new(&program).arg("-c").arg(&config),
    )?;
    broker.wait_listening(port)?;
    Ok(broker)
}

/// Starts the proxy with one listener on `port` relaying to the broker on `broker_port`.
fn start_proxy(scratch: &Scratch, port: u16, broker_port: u16) -> Result<Process, String> {
    let program = match std::env::var_os("BROKERSIDE_BIN") {
        Some(path) => PathBuf::from(path),
        // Cargo builds the package's binaries, with the bench's own profile, before a bench.
        None => PathBuf::from(env!("CARGO_BIN_EXE_brokerside")),
    };
    let config = scratch.write(
        "brokerside.toml",
        &format!(
            "[admin]\n\
             listen = \"127.0.0.1:0\"\n\
             \n\
             [[listener]]\n\
             name = \"mqtt\"\n\
             listen = \"127.0.0.1:{port}\"\n\
             backend = \"broker\"\n\
             \n\
             [[backend]]\n\
             name = \"broker\"\n\
             servers = [\"127.0.0.1:{broker_port}\"]\n\
             \n\
             [drain]\n\
             lb_grace = \"0s\"\n\
             deadline = \"1s\"\n"
        ),
    )?;
    let proxy = Process::spawn(
        "brokerside",
        program.clone(),
        Command::new(&program)
            .args(["--log-level", "warn", "run", "--config"])
            .arg(&config),
    )?;
    // Watch the socket table rather than connect: a probe connection would be the first client.
    proxy.wait_listening(port)?;
    Ok(proxy)
}

fn mosquitto_bin() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("MOSQUITTO_BIN") {
        return Ok(PathBuf::from(path));
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("mosquitto"))
        .find(|path| path.is_file())
        .ok_or_else(|| {
            "mosquitto not found: install it (`apt-get install -y mosquitto`, which \
             benches/idle_rss.sh does) or set MOSQUITTO_BIN"
                .to_string()
        })
}

/// A free loopback port: bound at 0 and released for the child to bind.
fn free_port() -> Result<u16, String> {
    StdListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|error| format!("no free loopback port: {error}"))
}

/// Whether some socket listens on 127.0.0.1:`port` (or 0.0.0.0:`port`), from /proc/net/tcp.
fn is_listening(port: u16) -> bool {
    let Ok(table) = fs::read_to_string("/proc/net/tcp") else {
        // No /proc socket table: fall back to a connection from outside the proxy's path.
        return StdStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_millis(100),
        )
        .is_ok();
    };
    let wanted = [
        format!("0100007F:{port:04X}"),
        format!("00000000:{port:04X}"),
    ];
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // local_address is field 1, st is field 3; 0A = LISTEN.
        fields.len() > 3 && wanted.iter().any(|w| w == fields[1]) && fields[3] == "0A"
    })
}

/// A private temporary directory for the children's config files, removed on drop.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new() -> Result<Scratch, String> {
        let dir = std::env::temp_dir().join(format!("brokerside-idle-rss-{}", std::process::id()));
        fs::create_dir_all(&dir)
            .map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
        Ok(Scratch { dir })
    }

    fn write(&self, name: &str, text: &str) -> Result<PathBuf, String> {
        let path = self.dir.join(name);
        fs::write(&path, text)
            .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
        Ok(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------------
// /proc readings

/// VmRSS of `pid`, in KiB.
fn rss_kib(pid: u32) -> Result<u64, String> {
    status_field(pid, "VmRSS:").ok_or_else(|| format!("no VmRSS in /proc/{pid}/status"))
}

/// A numeric field of /proc/<pid>/status (the first number after `key`).
fn status_field(pid: u32, key: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|value| value.parse().ok())
}

/// The one-letter process state of `pid` (R, S, Z, ...), `None` when it is gone.
fn status_state(pid: u32) -> Option<char> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("State:"))
        .and_then(|rest| rest.trim_start().chars().next())
}

/// Anonymous and file-backed resident memory of `pid`, from smaps_rollup; empty if unreadable.
fn smaps_rollup(pid: u32) -> String {
    let Ok(text) = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else {
        return String::new();
    };
    let field = |key: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|value| value.parse::<u64>().ok())
    };
    match (field("Anonymous:"), field("Rss:")) {
        (Some(anon), Some(rss)) => format!(
            "anonymous {}, file-backed and other {}",
            mib(anon),
            mib(rss.saturating_sub(anon))
        ),
        _ => String::new(),
    }
}

fn count_fds(pid: u32) -> Result<usize, String> {
    let dir = Path::new("/proc").join(pid.to_string()).join("fd");
    fs::read_dir(&dir)
        .map(|entries| entries.count())
        .map_err(|error| format!("cannot list {}: {error}", dir.display()))
}

/// Fails early when the open-files limit cannot hold the run: the proxy needs two fds per
/// connection, and this process and the broker one each. Children inherit this process's limit.
fn check_fd_limit(n: usize) -> Result<(), String> {
    let limits = fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let Some(soft) = limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|value| value.parse::<u64>().ok())
    else {
        return Ok(());
    };
    let needed = 2 * n as u64 + FD_HEADROOM;
    if soft < needed {
        return Err(format!(
            "{n} connections need {needed} open files in the proxy, but the limit is {soft}: \
             raise it (`ulimit -n $(ulimit -Hn)`, as benches/idle_rss.sh does) or pass \
             --connections {}",
            soft.saturating_sub(FD_HEADROOM) / 2
        ));
    }
    Ok(())
}
