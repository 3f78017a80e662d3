//! Child processes and /proc readings, shared by the benches that measure a proxy from outside:
//! a child killed and reaped on drop, a scratch directory for its config, free loopback ports,
//! and the proxy's RSS, CPU time and fds read from /proc (summed over a process and its children,
//! since NGINX runs a master and workers).
//!
//! Included with `#[path]` by each bench, which uses a part of it.
#![allow(dead_code)]

use std::fs;
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Time allowed for a child process to open its port.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Fds a process needs besides its sockets (std streams, epoll, eventfd, listener, files).
pub const FD_HEADROOM: u64 = 64;
/// Lines of a failed child's stderr repeated in the error.
const LOG_TAIL_LINES: usize = 10;

/// A child process that is killed and reaped when dropped, whatever path the bench leaves by.
/// Its stderr goes to a log file, whose tail is quoted when it exits early.
pub struct Process {
    pub name: &'static str,
    pub program: PathBuf,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Starts `command` (whose program is `program`) with stdout discarded and stderr in `log`.
    pub fn spawn(
        name: &'static str,
        program: PathBuf,
        command: &mut Command,
        log: PathBuf,
    ) -> Result<Process, String> {
        let stderr = fs::File::create(&log)
            .map_err(|error| format!("cannot create {}: {error}", log.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|error| format!("cannot start {name} ({}): {error}", program.display()))?;
        Ok(Process {
            name,
            program,
            child,
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits, without blocking the runtime, until the process exits or `timeout` runs out.
    pub async fn exit(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(None) => return Err(format!("{} still running after {timeout:?}", self.name)),
                Err(error) => return Err(format!("cannot wait for {}: {error}", self.name)),
            }
        }
    }

    /// The last lines of the process's stderr, indented.
    pub fn log_tail(&self) -> String {
        tail(&self.log, LOG_TAIL_LINES)
    }

    /// Fails when the process has exited. It is not reaped before drop, so /proc shows it as a
    /// zombie (`Z`) until then.
    pub fn check_running(&self) -> Result<(), String> {
        match status_state(self.pid()) {
            Some('Z') | None => Err(format!(
                "{} exited early; its stderr ({}) ends with:\n{}",
                self.name,
                self.log.display(),
                self.log_tail()
            )),
            _ => Ok(()),
        }
    }

    /// Waits until `port` on 127.0.0.1 is listening, or the process exits, or the timeout.
    pub fn wait_listening(&self, port: u16) -> Result<(), String> {
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

    /// This process and its descendants (NGINX's workers), parents first.
    pub fn family(&self) -> Vec<u32> {
        let mut family = vec![self.pid()];
        let mut next = 0;
        while next < family.len() {
            family.extend(children(family[next]));
            next += 1;
        }
        family
    }

    /// VmRSS summed over the family, in KiB. Pages the processes share are counted in each.
    pub fn rss_kib(&self) -> Result<u64, String> {
        self.check_running()?;
        self.family().into_iter().map(rss_kib).sum()
    }

    /// User plus system CPU time of the family so far (threads that ended included).
    pub fn cpu(&self) -> Result<Duration, String> {
        self.check_running()?;
        let ticks: u64 = self
            .family()
            .into_iter()
            .map(cpu_ticks)
            .sum::<Result<u64, String>>()?;
        Ok(Duration::from_secs_f64(
            ticks as f64 / clock_ticks_per_sec(),
        ))
    }
}

impl Drop for Process {
    /// Kills the process and its descendants: NGINX's workers outlive a killed master (they are
    /// reparented to init and keep their memory and listening socket), so they are found before
    /// the master goes and killed after it.
    fn drop(&mut self) {
        let descendants: Vec<u32> = match self.child.try_wait() {
            Ok(None) => self.family().into_iter().skip(1).collect(),
            _ => Vec::new(),
        };
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in descendants {
            if let Ok(pid) = libc::pid_t::try_from(pid) {
                // SAFETY: kill(2) takes plain integers; a pid that has gone already fails harmlessly.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// The last `lines` lines of a log file, indented; a note when it is empty or unreadable.
fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    if all.is_empty() {
        return "    (nothing)".into();
    }
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|line| format!("    {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A program named by the environment variable `env`, else found on PATH or in /usr/sbin.
pub fn find_program(name: &str, env: &str) -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(env) {
        return Ok(PathBuf::from(path));
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .ok_or_else(|| {
            format!(
                "{name} not found: install it (the bench's .sh script does, with apt-get) \
                 or set {env}"
            )
        })
}

/// A free loopback port: bound at 0 and released for the child to bind.
pub fn free_port() -> Result<u16, String> {
    StdListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|error| format!("no free loopback port: {error}"))
}

/// Whether some socket listens on 127.0.0.1:`port` (or 0.0.0.0:`port`), from /proc/net/tcp.
pub fn is_listening(port: u16) -> bool {
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

/// A private temporary directory for the children's configs and logs, removed on drop.
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    /// `/tmp/brokerside-<purpose>-<pid>`.
    pub fn new(purpose: &str) -> Result<Scratch, String> {
        let dir = std::env::temp_dir().join(format!("brokerside-{purpose}-{}", std::process::id()));
        fs::create_dir_all(&dir)
            .map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
        Ok(Scratch { dir })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn write(&self, name: &str, text: &str) -> Result<PathBuf, String> {
        let path = self.path(name);
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
pub fn rss_kib(pid: u32) -> Result<u64, String> {
    status_field(pid, "VmRSS:").ok_or_else(|| format!("no VmRSS in /proc/{pid}/status"))
}

/// A numeric field of /proc/<pid>/status (the first number after `key`).
pub fn status_field(pid: u32, key: &str) -> Option<u64> {
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

/// utime + stime of `pid` in clock ticks, from /proc/<pid>/stat.
fn cpu_ticks(pid: u32) -> Result<u64, String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|error| format!("cannot read /proc/{pid}/stat: {error}"))?;
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    // Then state is field 3, utime field 14 and stime field 15.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| format!("unexpected /proc/{pid}/stat: {stat:?}"))?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |n: usize| -> Result<u64, String> {
        fields
            .get(n - 3)
            .and_then(|value| value.parse().ok())
            .ok_or_else(|| format!("no field {n} in /proc/{pid}/stat"))
    };
    Ok(field(14)? + field(15)?)
}

/// The kernel's clock ticks per second (USER_HZ), which /proc/<pid>/stat counts in.
fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf only reads a configuration value; it has no memory effects.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// Direct children of `pid`, from every thread's children list.
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for task in tasks.flatten() {
        let list = fs::read_to_string(task.path().join("children")).unwrap_or_default();
        out.extend(
            list.split_whitespace()
                .filter_map(|child| child.parse::<u32>().ok()),
        );
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Anonymous and file-backed resident memory of `pid` in KiB, from smaps_rollup.
pub fn smaps_rollup(pid: u32) -> Option<(u64, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let field = |key: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|value| value.parse::<u64>().ok())
    };
    let (anon, rss) = (field("Anonymous:")?, field("Rss:")?);
    Some((anon, rss.saturating_sub(anon)))
}

/// User plus system CPU time of process `pid` alone (its threads included) so far.
pub fn cpu_of(pid: u32) -> Result<Duration, String> {
    Ok(Duration::from_secs_f64(
        cpu_ticks(pid)? as f64 / clock_ticks_per_sec(),
    ))
}

pub fn count_fds(pid: u32) -> Result<usize, String> {
    let dir = Path::new("/proc").join(pid.to_string()).join("fd");
    fs::read_dir(&dir)
        .map(|entries| entries.count())
        .map_err(|error| format!("cannot list {}: {error}", dir.display()))
}

/// This process's soft open-files limit, if /proc says.
pub fn open_files_limit() -> Option<u64> {
    let limits = fs::read_to_string("/proc/self/limits").ok()?;
    limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|value| value.parse::<u64>().ok())
}

/// Fails early when the open-files limit cannot hold `n` proxied connections: the proxy needs
/// two fds per connection, this process and the broker one each. Children inherit the limit.
pub fn check_fd_limit(n: usize, script: &str) -> Result<(), String> {
    let Some(soft) = open_files_limit() else {
        return Ok(());
    };
    let needed = 2 * n as u64 + FD_HEADROOM;
    if soft < needed {
        return Err(format!(
            "{n} connections need {needed} open files in the proxy, but the limit is {soft}: \
             raise it (`ulimit -n $(ulimit -Hn)`, as {script} does) or pass \
             --connections {}",
            soft.saturating_sub(FD_HEADROOM) / 2
        ));
    }
    Ok(())
}

/// The 1-minute load average.
pub fn load_average() -> Option<f64> {
    fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Runs a bench on a current-thread runtime until it ends, or Ctrl-C or SIGTERM: either way it
/// returns, and the children it holds are killed on drop.
pub fn run_until_interrupted<T>(
    bench: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start the tokio runtime: {error}"))?;
    runtime.block_on(async {
        tokio::select! {
            outcome = bench => outcome,
            () = interrupted() => Err("interrupted".to_string()),
        }
    })
}

/// Resolves on Ctrl-C or SIGTERM.
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
