//! The health of one server as the rest of the sidecar reads it: an atomic `up` flag for the
//! connection hot path, the instant it last came back up (slow start ramps from there), and a
//! report snapshot (state, last check, latency, error) for `/health`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant, SystemTime};

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
    /// Whether the server has been up at some point: only a server that was up before "comes
    /// back"; the first rise of a pending server (at start, or a peer that just joined) does not.
    been_up: AtomicBool,
    /// When it last came back up, as [`Stamp`]; 0 = never. An atomic, not part of the report,
    /// so that the connection path reads it with one load.
    back_up: AtomicU64,
    report: ArcSwap<HealthReport>,
}

/// Instants as nanoseconds after a process-wide origin, plus one so that 0 can mean "never".
struct Stamp;

/// The origin of [`Stamp`]s: set when the first server health is made, before any is published.
static ORIGIN: LazyLock<Instant> = LazyLock::new(Instant::now);

impl Stamp {
    fn encode(at: Instant) -> u64 {
        let nanos = at.saturating_duration_since(*ORIGIN).as_nanos();
        u64::try_from(nanos).unwrap_or(u64::MAX - 1) + 1
    }

    fn decode(stamp: u64) -> Option<Instant> {
        let nanos = stamp.checked_sub(1)?;
        Some(*ORIGIN + Duration::from_nanos(nanos))
    }
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
        LazyLock::force(&ORIGIN);
        ServerHealth {
            up: AtomicBool::new(state == ServerState::Up),
            been_up: AtomicBool::new(state == ServerState::Up),
            back_up: AtomicU64::new(0),
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

    /// When the server last came back up after being down; `None` if it never has (its first
    /// rise does not count). Cheap: one atomic load.
    pub fn back_up_at(&self) -> Option<Instant> {
        Stamp::decode(self.back_up.load(Ordering::Acquire))
    }

    /// Publishes a new report (the checker's job).
    pub fn publish(&self, report: HealthReport) {
        self.publish_at(report, Instant::now());
    }

    /// [`ServerHealth::publish`] at `now`: a server that turns up again is back up from `now`.
    pub fn publish_at(&self, report: HealthReport, now: Instant) {
        let up = report.state == ServerState::Up;
        // Stored before `up`, so that a connection that sees the server up also sees its ramp.
        if up && !self.up.load(Ordering::Acquire) && self.been_up.swap(true, Ordering::AcqRel) {
            self.back_up.store(Stamp::encode(now), Ordering::Release);
        }
        self.up.store(up, Ordering::Release);
        self.report.store(Arc::new(report));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(state: ServerState) -> HealthReport {
        HealthReport {
            state,
            checked: true,
            last: None,
            streak: 1,
            since: SystemTime::now(),
        }
    }

    #[test]
    fn back_up_is_the_instant_of_a_rise_after_a_fall_never_the_first_rise() {
        let health = ServerHealth::pending();
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        health.publish_at(report(ServerState::Up), at(10));
        assert_eq!(health.back_up_at(), None, "the first rise after start");
        health.publish_at(report(ServerState::Up), at(20));
        health.publish_at(report(ServerState::Down), at(30));
        assert_eq!(health.back_up_at(), None);
        health.publish_at(report(ServerState::Up), at(40));
        assert_eq!(health.back_up_at(), Some(at(40)), "back after a fall");
        health.publish_at(report(ServerState::Up), at(50));
        assert_eq!(health.back_up_at(), Some(at(40)), "staying up keeps it");
        health.publish_at(report(ServerState::Down), at(60));
        health.publish_at(report(ServerState::Up), at(70));
        assert_eq!(health.back_up_at(), Some(at(70)), "the latest return");
    }

    #[test]
    fn an_unchecked_server_was_up_from_the_start() {
        let health = ServerHealth::unchecked();
        assert!(health.is_up());
        assert_eq!(health.back_up_at(), None);
        let now = Instant::now();
        health.publish_at(report(ServerState::Down), now);
        health.publish_at(report(ServerState::Up), now);
        assert_eq!(health.back_up_at(), Some(now));
    }
}
