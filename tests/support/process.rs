//! The real binary as an operator runs it: a config file, `run --config` with JSON logs on
//! stderr (forwarded line by line by a thread), SIGTERM, the exit code, and its threads as
//! `ps -T` lists them.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::WAIT;

/// The binary, its JSON log lines forwarded by a thread.
pub struct Process {
    child: Child,
    /// The config file it runs.
    pub config: std::path::PathBuf,
    logs: mpsc::Receiver<serde_json::Value>,
    seen: Vec<serde_json::Value>,
}

impl Process {
    /// Writes `config` to a file of its own (`name` keeps tests apart) and runs the binary on it.
    pub fn spawn(name: &str, config: &str) -> Process {
        Process::spawn_at_level(name, config, "info")
    }

    /// As [`Process::spawn`], logging at `level` (a `--log-level` filter such as
    /// `brokerside=debug`); a `RUST_LOG` of the test's own environment is not passed on.
    pub fn spawn_at_level(name: &str, config: &str, level: &str) -> Process {
        let dir = std::env::temp_dir().join(format!("brokerside-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("brokerside.toml");
        std::fs::write(&path, config).expect("write config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_brokerside"))
            .args([
                "--log-format",
                "json",
                "--log-level",
                level,
                "run",
                "--config",
            ])
            .arg(&path)
            .env_remove("RUST_LOG")
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn brokerside");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, logs) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("log line not JSON ({e}): {line}"));
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        Process {
            child,
            config: path,
            logs,
            seen: Vec::new(),
        }
    }

    /// The field `field` of the first log line with message `message`, waiting up to WAIT.
    pub fn log_field(&mut self, message: &str, field: &str) -> String {
        let line = self.log_line(message, 1);
        line["fields"][field]
            .as_str()
            .unwrap_or_else(|| panic!("no {field} in {line}"))
            .to_string()
    }

    /// The `nth` (from 1) log line with message `message`, waiting up to WAIT for it.
    pub fn log_line(&mut self, message: &str, nth: usize) -> serde_json::Value {
        let until = Instant::now() + WAIT;
        loop {
            if let Some(line) = self
                .seen
                .iter()
                .filter(|l| l["fields"]["message"] == message)
                .nth(nth - 1)
            {
                return line.clone();
            }
            let left = until.saturating_duration_since(Instant::now());
            let line = self
                .logs
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no log line {message:?} in {:?}", self.seen));
            self.seen.push(line);
        }
    }

    /// How many log lines so far have message `message` (without waiting for more).
    pub fn count_logs(&mut self, message: &str) -> usize {
        while let Ok(line) = self.logs.try_recv() {
            self.seen.push(line);
        }
        self.seen
            .iter()
            .filter(|l| l["fields"]["message"] == message)
            .count()
    }

    /// Waits for start-up, as the logs tell it: the address of the first listener and the
    /// admin endpoint's.
    pub fn started(&mut self) -> (SocketAddr, SocketAddr) {
        let relay = self.log_field("listening", "addr");
        let admin = self.log_field("brokerside started", "admin");
        (
            relay.parse().expect("a listener address"),
            admin.parse().expect("an admin address"),
        )
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        self.signal(libc::SIGTERM);
    }

    /// Sends SIGHUP.
    pub fn sighup(&self) {
        self.signal(libc::SIGHUP);
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on the pid of a child this test owns and has not reaped.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill -{signal}");
    }

    /// Whether the process has set SIGHUP to be caught or ignored (`/proc/<pid>/status`), so
    /// that a SIGHUP no longer ends it.
    pub fn handles_sighup(&self) -> bool {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let mask = |field: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(field))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
                .unwrap_or(0)
        };
        let hup = 1u64 << (libc::SIGHUP - 1);
        (mask("SigCgt:") | mask("SigIgn:")) & hup != 0
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().expect("wait").is_none()
    }

    /// Replaces the config file's content, by rename.
    pub fn rewrite(&self, config: &str) {
        let next = self.config.with_extension("toml.next");
        std::fs::write(&next, config).expect("write the next config");
        std::fs::rename(&next, &self.config).expect("rename it over the config");
    }

    /// Waits up to `bound` for the exit status.
    pub async fn exit_code(&mut self, bound: Duration) -> Option<i32> {
        let until = Instant::now() + bound;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code();
            }
            assert!(Instant::now() < until, "still running after {bound:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The process's threads whose name starts with `prefix`, sorted by name, each with the
    /// time it has spent on a CPU (ns, from /proc/<pid>/task/<tid>/schedstat).
    pub fn threads(&self, prefix: &str) -> Vec<(String, u64)> {
        let tasks = format!("/proc/{}/task", self.child.id());
        let mut threads: Vec<(String, u64)> = std::fs::read_dir(&tasks)
            .unwrap_or_else(|e| panic!("{tasks}: {e}"))
            .filter_map(|task| {
                let dir = task.ok()?.path();
                let name = std::fs::read_to_string(dir.join("comm")).ok()?;
                let name = name.trim();
                let schedstat = std::fs::read_to_string(dir.join("schedstat")).ok()?;
                let on_cpu = schedstat.split_whitespace().next()?.parse().ok()?;
                name.starts_with(prefix).then(|| (name.to_string(), on_cpu))
            })
            .collect();
        threads.sort();
        threads
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // Only if a failed assertion left it running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
