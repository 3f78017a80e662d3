//! Config reloads of a running brokerside, done from outside the way an operator's tooling does
//! them: the config file rewritten (a temporary file renamed over it, so the proxy never reads
//! half a file), SIGHUP to the process, and `GET /health` on the admin endpoint polled until
//! `config.generation` moves. Blocking sockets and threads only: no runtime between the signal
//! and the clock.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

/// Pause between two polls of `/health` while a reload is awaited.
pub const POLL_EVERY: Duration = Duration::from_micros(500);
/// Time allowed for a reload to show in `/health`, and for the admin endpoint to answer at start.
pub const RELOAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for one `/health` request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest `/health` answer read.
const MAX_ANSWER: u64 = 1 << 20;

/// One brokerside process, its config file and its admin endpoint.
pub struct Reloads {
    pid: libc::pid_t,
    config: PathBuf,
    /// Two valid contents of the config file, written in turn.
    variants: [String; 2],
    /// The variant the file holds now.
    current: usize,
    admin: SocketAddr,
    /// SIGHUPs sent so far.
    pub signals: u64,
}

impl Reloads {
    /// The process `pid` running `config`, which holds `variants[0]` now, with its admin endpoint
    /// on `admin`.
    pub fn new(
        pid: u32,
        config: PathBuf,
        variants: [String; 2],
        admin: SocketAddr,
    ) -> Result<Reloads, String> {
        let pid = libc::pid_t::try_from(pid).map_err(|_| format!("pid {pid} out of range"))?;
        Ok(Reloads {
            pid,
            config,
            variants,
            current: 0,
            admin,
            signals: 0,
        })
    }

    /// `config.generation` as `/health` reports it now.
    pub fn generation(&self) -> Result<u64, String> {
        let body = get(self.admin, "/health")?;
        let health: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|error| format!("GET /health on {}: not JSON ({error})", self.admin))?;
        health
            .pointer("/config/generation")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| format!("GET /health on {}: no config.generation", self.admin))
    }

    /// Waits until the admin endpoint answers `/health`; returns the generation it reports.
    pub fn wait_ready(&self) -> Result<u64, String> {
        let started = Instant::now();
        loop {
            match self.generation() {
                Ok(generation) => return Ok(generation),
                Err(error) if started.elapsed() > RELOAD_TIMEOUT => {
                    return Err(format!(
                        "the admin endpoint did not answer within {RELOAD_TIMEOUT:?}: {error}"
                    ));
                }
                Err(_) => thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    /// Writes the other variant to a temporary file and renames it over the config.
    pub fn rewrite(&mut self) -> Result<(), String> {
        let next = 1 - self.current;
        let temporary = self.config.with_extension("toml.new");
        std::fs::write(&temporary, &self.variants[next])
            .map_err(|error| format!("cannot write {}: {error}", temporary.display()))?;
        std::fs::rename(&temporary, &self.config).map_err(|error| {
            format!(
                "cannot rename {} over {}: {error}",
                temporary.display(),
                self.config.display()
            )
        })?;
        self.current = next;
        Ok(())
    }

    /// Sends SIGHUP to the process.
    pub fn signal(&mut self) -> Result<(), String> {
        // SAFETY: kill(2) only sends a signal to the process we started (still our unreaped
        // child, so its pid cannot have been reused); no memory is involved.
        if unsafe { libc::kill(self.pid, libc::SIGHUP) } != 0 {
            return Err(format!(
                "cannot send SIGHUP to {}: {}",
                self.pid,
                std::io::Error::last_os_error()
            ));
        }
        self.signals += 1;
        Ok(())
    }

    /// One timed reload: the file rewritten, then the time from SIGHUP to the first `/health`
    /// answer with a newer generation, polled every [`POLL_EVERY`].
    pub fn timed(&mut self) -> Result<Duration, String> {
        let before = self.generation()?;
        self.rewrite()?;
        let sent = Instant::now();
        self.signal()?;
        loop {
            let generation = self.generation()?;
            let elapsed = sent.elapsed();
            if generation > before {
                return Ok(elapsed);
            }
            if elapsed > RELOAD_TIMEOUT {
                return Err(format!(
                    "no new generation in /health within {RELOAD_TIMEOUT:?} of SIGHUP (still \
                     {generation})"
                ));
            }
            thread::sleep(POLL_EVERY);
        }
    }

    /// Rewrites the file and sends SIGHUP every `every`, the first time at once, until `stop`
    /// receives or its sender is dropped; returns how many signals it sent. Meant for a thread of
    /// its own (`std::thread::scope`).
    pub fn repeat(&mut self, every: Duration, stop: Receiver<()>) -> Result<u64, String> {
        let mut sent = 0;
        let mut next = Instant::now();
        loop {
            match stop.recv_timeout(next.saturating_duration_since(Instant::now())) {
                Err(RecvTimeoutError::Timeout) => {
                    self.rewrite()?;
                    self.signal()?;
                    sent += 1;
                    next += every;
                }
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return Ok(sent),
            }
        }
    }
}

/// The body of a 200 answer to `GET path` on `addr`, over a fresh connection (`Connection:
/// close`). `/health` always answers 200: its body carries the node's status.
fn get(addr: SocketAddr, path: &str) -> Result<Vec<u8>, String> {
    let failed = |error: std::io::Error| format!("GET {path} on {addr}: {error}");
    let mut stream = TcpStream::connect_timeout(&addr, REQUEST_TIMEOUT).map_err(failed)?;
    stream.set_nodelay(true).map_err(failed)?;
    stream
        .set_read_timeout(Some(REQUEST_TIMEOUT))
        .map_err(failed)?;
    stream
        .set_write_timeout(Some(REQUEST_TIMEOUT))
        .map_err(failed)?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .map_err(failed)?;
    let mut answer = Vec::new();
    stream
        .take(MAX_ANSWER)
        .read_to_end(&mut answer)
        .map_err(failed)?;
    let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Err(format!("GET {path} on {addr}: no complete HTTP answer"));
    };
    let head = String::from_utf8_lossy(&answer[..end]);
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("GET {path} on {addr}: {status:?}"));
    }
    if head
        .lines()
        .any(|line| line.to_ascii_lowercase().starts_with("transfer-encoding:"))
    {
        return Err(format!(
            "GET {path} on {addr}: a transfer-encoded body, which this client does not decode"
        ));
    }
    Ok(answer[end + 4..].to_vec())
}
