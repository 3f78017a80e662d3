//! Asking for a reload, and reading the config file a reload would apply. A reload is asked for
//! by SIGHUP, `POST /reload` or the file watcher through a [`Reloader`]; the controller answers
//! the requests one at a time. [`load`] does everything that can refuse a new config before
//! anything running is touched: read, validate, compare with what cannot change in-process,
//! read the secrets.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use super::{Loaded, Secrets, read_secrets};
use crate::config::{Config, ConfigError};

/// Why a reload did not happen.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReloadError {
    /// The sidecar runs a config given in code or the embedded default: there is no file.
    #[error(
        "nothing to reload: brokerside runs the embedded default config; start it with --config FILE to reload"
    )]
    NoFile,
    /// A drain is under way: the node is leaving, and a new config would change nothing.
    #[error("draining: a reload is ignored while the node drains")]
    Draining,
    /// The new config was refused; the running one stays. Every problem, naming its field.
    #[error("{}", problems_text(.0))]
    Refused(Vec<ConfigError>),
    /// The sidecar has stopped.
    #[error("the sidecar has stopped")]
    Stopped,
}

fn problems_text(problems: &[ConfigError]) -> String {
    let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
    lines.join("\n")
}

/// A reload that took effect.
#[derive(Debug, Clone, PartialEq)]
pub struct Reloaded {
    /// The new runtime's generation.
    pub generation: u64,
    /// SHA-256 of the file's text.
    pub sha256: Option<String>,
}

/// What a reload request asks for.
pub(crate) struct Request {
    pub(crate) why: String,
    /// Where the outcome goes; `None` for a signal, whose outcome only the log tells.
    pub(crate) reply: Option<oneshot::Sender<Result<Reloaded, ReloadError>>>,
}

/// Asks the controller for reloads. Cheap to clone.
#[derive(Clone)]
pub struct Reloader {
    requests: mpsc::Sender<Request>,
    /// Set while a fire-and-forget request waits: more of them before it is taken are one.
    pending: Arc<AtomicBool>,
}

/// Requests queued at once; beyond this `POST /reload` answers that the sidecar is busy.
const QUEUE: usize = 16;

impl Reloader {
    /// A reloader and the receiving end the controller reads.
    pub(crate) fn new() -> (Reloader, Requests) {
        let (requests, received) = mpsc::channel(QUEUE);
        let pending = Arc::new(AtomicBool::new(false));
        let reloader = Reloader {
            requests,
            pending: Arc::clone(&pending),
        };
        (reloader, Requests { received, pending })
    }

    /// Asks for a reload without waiting for it (SIGHUP, the file watcher). Requests made
    /// while one is still queued are one: a burst of signals reloads once.
    pub fn request(&self, why: &str) {
        if self.pending.swap(true, Ordering::AcqRel) {
            return;
        }
        let request = Request {
            why: why.to_string(),
            reply: None,
        };
        if self.requests.try_send(request).is_err() {
            self.pending.store(false, Ordering::Release);
        }
    }

    /// Reloads and returns the outcome (`POST /reload`).
    pub async fn reload(&self, why: &str) -> Result<Reloaded, ReloadError> {
        let (reply, outcome) = oneshot::channel();
        let request = Request {
            why: why.to_string(),
            reply: Some(reply),
        };
        self.requests
            .send(request)
            .await
            .map_err(|_| ReloadError::Stopped)?;
        outcome.await.map_err(|_| ReloadError::Stopped)?
    }
}

/// The controller's end of the requests.
pub(crate) struct Requests {
    received: mpsc::Receiver<Request>,
    pending: Arc<AtomicBool>,
}

impl Requests {
    /// The next request; `None` once every [`Reloader`] is gone.
    pub(crate) async fn recv(&mut self) -> Option<Request> {
        let request = self.received.recv().await?;
        if request.reply.is_none() {
            // From here a new signal asks for another reload: this one may already have read
            // the file that the signal announces.
            self.pending.store(false, Ordering::Release);
        }
        Some(request)
    }
}

/// A config read from its file, validated, with its secrets: ready to be built and applied.
#[derive(Debug)]
pub struct Candidate {
    /// The validated config.
    pub config: Config,
    /// Its secrets.
    pub secrets: Secrets,
    /// Where it came from.
    pub loaded: Loaded,
}

/// Reads `path` as the next config of a sidecar running `running`: refused with every problem
/// when the file cannot be read, fails validation, changes what needs a restart, or names a
/// secret that cannot be read.
pub fn load(path: &Path, running: Option<&Config>) -> Result<Candidate, Vec<ConfigError>> {
    let text = crate::config::read_file(path).map_err(|error| vec![error])?;
    let config = Config::from_toml(&text).map_err(|errors| errors.0)?;
    let mut problems = running.map_or_else(Vec::new, |running| restart_needed(running, &config));
    let secrets = match read_secrets(&config) {
        Ok(secrets) => Some(secrets),
        Err(more) => {
            problems.extend(more);
            None
        }
    };
    match secrets {
        Some(secrets) if problems.is_empty() => Ok(Candidate {
            config,
            secrets,
            loaded: Loaded {
                at: SystemTime::now(),
                file: Some(PathBuf::from(path)),
                sha256: Some(sha256(text.as_bytes())),
            },
        }),
        _ => Err(problems),
    }
}

/// SHA-256 of `bytes` in lower-case hex.
pub fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// What `next` changes that a running process cannot take: the relay threads (every listener's
/// sockets and every connection live on them) and the admin endpoint's socket and server
/// settings (changing them would cut the load balancer's health checks mid-flight).
pub fn restart_needed(running: &Config, next: &Config) -> Vec<ConfigError> {
    let mut problems = Vec::new();
    let mut check = |path: &str, before: String, after: String| {
        if before != after {
            problems.push(ConfigError {
                path: path.to_string(),
                message: format!(
                    "cannot change while running ({before} -> {after}); restart brokerside to apply it"
                ),
            });
        }
    };
    let threads = |config: &Config| {
        config
            .runtime
            .relay_threads
            .map_or_else(|| "one per core".to_string(), |n| n.to_string())
    };
    check("runtime.relay_threads", threads(running), threads(next));
    let (a, b) = (&running.admin, &next.admin);
    check("admin.listen", a.listen.to_string(), b.listen.to_string());
    check(
        "admin.max_connections",
        a.max_connections.to_string(),
        b.max_connections.to_string(),
    );
    check(
        "admin.header_timeout",
        format!("{:?}", a.header_timeout),
        format!("{:?}", b.header_timeout),
    );
    problems
}
