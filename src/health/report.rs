//! The health of one server as the rest of the sidecar reads it: an atomic `up` flag for the
//! connection hot path, and a report snapshot (state, last check, latency, error) for `/health`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

/// Whether a server takes new connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// Passing its checks (or not checked at all).
    Up,
    /// Failing its checks, or not yet passed `rise` of them.
    Down,
}

impl ServerState {
    /// `"up"` or `"down"`, as `/health` writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerState::Up => "up",
            ServerState::Down => "down",
        }
    }
}

/// The outcome of one probe.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckOutcome {
    /// When the probe finished.
    pub at: SystemTime,
    /// How long it took.
    pub latency: Duration,
    /// `None` on success, else why it failed, in one line.
    pub error: Option<String>,
}

/// What `/health` shows of a server.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthReport {
    /// Current state.
    pub state: ServerState,
    /// Whether the server is health-checked at all.
    pub checked: bool,
    /// The latest probe, if one has run.
    pub last: Option<CheckOutcome>,
    /// Consecutive probes that agree with the latest outcome.
    pub streak: u32,
    /// When the state last changed (start-up counts as a change).
    pub since: SystemTime,
}

/// One server's health, written by its checker and read everywhere else.
#[derive(Debug)]
pub struct ServerHealth {
    up: AtomicBool,
    report: ArcSwap<HealthReport>,
}

impl ServerHealth {
    /// A server that is not checked: always up.
    pub fn unchecked() -> ServerHealth {
        ServerHealth::with(ServerState::Up, false)
    }

    /// A checked server before its first probes: down until it passes `rise` of them, so that
    /// a node does not report ready before its broker has answered.
    pub fn pending() -> ServerHealth {
        ServerHealth::with(ServerState::Down, true)
    }

    /// A new server's health: [`pending`](ServerHealth::pending) when `checked`, else
    /// [`unchecked`](ServerHealth::unchecked).
    pub fn fresh(checked: bool) -> ServerHealth {
        if checked {
            ServerHealth::pending()
        } else {
            ServerHealth::unchecked()
        }
    }

    fn with(state: ServerState, checked: bool) -> ServerHealth {
        ServerHealth {
            up: AtomicBool::new(state == ServerState::Up),
            report: ArcSwap::from_pointee(HealthReport {
                state,
                checked,
                last: None,
                streak: 0,
                since: SystemTime::now(),
            }),
        }
    }

    /// Whether new connections may go to this server. Cheap: one atomic load.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// The latest report.
    pub fn report(&self) -> Arc<HealthReport> {
        self.report.load_full()
    }

    /// Publishes a new report (the checker's job).
    pub fn publish(&self, report: HealthReport) {
        self.up
            .store(report.state == ServerState::Up, Ordering::Release);
        self.report.store(Arc::new(report));
    }
}
