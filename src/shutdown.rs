//! Shutdown: the signals that start it (and SIGHUP, which must not end the process), the drain
//! switch that health and the proxy read, and the drain sequence itself.

use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::DrainConfig;
use crate::metrics::Metrics;
use crate::proxy::{Proxy, Registry, Which};

/// Where a drain is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainPhase {
    /// Not draining.
    Serving,
    /// Health answers 503; the listeners still accept, so the load balancer can notice.
    Grace,
    /// Listeners closed; open connections are being closed at the configured rate.
    Closing,
    /// Everything is closed (or the deadline passed).
    Done,
}

impl DrainPhase {
    /// Lower-case name, as `/health` writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            DrainPhase::Serving => "serving",
            DrainPhase::Grace => "grace",
            DrainPhase::Closing => "closing",
            DrainPhase::Done => "done",
        }
    }
}

/// The drain switch: flipped once, by a signal or `POST /drain`; read by health and the proxy.
#[derive(Debug)]
pub struct DrainControl {
    draining: AtomicBool,
    phase: AtomicU8,
    started: watch::Sender<bool>,
    started_at: Mutex<Option<(SystemTime, String)>>,
}

impl Default for DrainControl {
    fn default() -> Self {
        DrainControl {
            draining: AtomicBool::new(false),
            phase: AtomicU8::new(DrainPhase::Serving as u8),
            started: watch::Sender::new(false),
            started_at: Mutex::new(None),
        }
    }
}

impl DrainControl {
    /// Starts the drain; `false` if it had already started. `why` is kept for `/health`.
    pub fn start(&self, why: &str) -> bool {
        if self.draining.swap(true, Ordering::AcqRel) {
            return false;
        }
        if let Ok(mut started_at) = self.started_at.lock() {
            *started_at = Some((SystemTime::now(), why.to_string()));
        }
        self.set_phase(DrainPhase::Grace);
        self.started.send_replace(true);
        tracing::info!(why, "drain started");
        true
    }

    /// Whether the drain has started: health answers 503 from then on.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Resolves once the drain has started.
    pub async fn started(&self) {
        let mut started = self.started.subscribe();
        // The sender lives in `self`, so `wait_for` can only end with the value turning true.
        let _ = started.wait_for(|started| *started).await;
    }

    /// The current phase.
    pub fn phase(&self) -> DrainPhase {
        match self.phase.load(Ordering::Acquire) {
            0 => DrainPhase::Serving,
            1 => DrainPhase::Grace,
            2 => DrainPhase::Closing,
            _ => DrainPhase::Done,
        }
    }

    /// Moves to `phase` (the drain sequence's job).
    pub fn set_phase(&self, phase: DrainPhase) {
        self.phase.store(phase as u8, Ordering::Release);
    }

    /// When the drain started and why, if it has.
    pub fn started_at(&self) -> Option<(SystemTime, String)> {
        self.started_at
            .lock()
            .ok()
            .and_then(|started| started.clone())
    }
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    /// Connections closed at the pace of `close_rate`.
    pub closed_paced: usize,
    /// Connections still open at the deadline, closed all at once.
    pub cut_at_deadline: usize,
}

/// Time allowed for aborted connection tasks to drop their sockets before the relay threads end.
const CLOSE_SETTLE: Duration = Duration::from_secs(2);

/// The drain sequence, once `control` has started: the listeners keep accepting for `lb_grace`
/// (health already answers 503), then close; open connections are closed at most `close_rate`
/// per second; at `deadline` the rest are closed. Returns once no connection is left and the
/// relay threads have ended.
pub async fn drain(
    mut proxy: Proxy,
    registry: &Registry,
    control: &DrainControl,
    config: &DrainConfig,
    metrics: &Metrics,
) -> Stopped {
    let started = Instant::now();
    let deadline = started + config.deadline;
    metrics.draining().set(1);
    tracing::info!(lb_grace = ?config.lb_grace, "draining: health answers 503, listeners stay open for the grace period");
    tokio::time::sleep_until((started + config.lb_grace).min(deadline)).await;

    control.set_phase(DrainPhase::Closing);
    proxy.stop_accepting_all().await;
    tracing::info!(
        open = registry.open(),
        close_rate = config.close_rate,
        "listeners closed; closing connections"
    );
    let (closed_paced, cut_at_deadline) = registry
        .close_paced(
            Which::All,
            config.close_rate,
            deadline,
            metrics.closed_by_drain(),
        )
        .await;
    if cut_at_deadline > 0 {
        tracing::warn!(
            connections = cut_at_deadline,
            "drain deadline passed; closing the rest"
        );
    }
    // Aborted tasks close their sockets when their thread's runtime drops them, which is at
    // once; whatever a busy thread has not dropped by then goes with its runtime.
    let _ = tokio::time::timeout(CLOSE_SETTLE, registry.all_closed()).await;
    proxy.finish().await;
    control.set_phase(DrainPhase::Done);
    Stopped {
        closed_paced,
        cut_at_deadline,
    }
}

/// SIGTERM and SIGINT, installed before anything is bound so that a signal during start-up
/// starts the drain (or, before it can, is held) rather than killing the process.
pub struct StopSignals {
    terminate: Signal,
    interrupt: Signal,
}

impl StopSignals {
    /// Installs the handlers (inside a tokio runtime).
    pub fn install() -> io::Result<StopSignals> {
        Ok(StopSignals {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// Resolves at the next SIGTERM or SIGINT, with the signal's name.
    pub async fn recv(&mut self) -> &'static str {
        let name = tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        };
        tracing::info!("{name} received");
        name
    }
}

/// Installs the SIGHUP handler (inside a tokio runtime): from then on SIGHUP no longer ends the
/// process. Several signals that arrive before one is handled are one.
pub fn hangup() -> io::Result<Signal> {
    signal(SignalKind::hangup())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drain_switch_flips_once() {
        let control = DrainControl::default();
        assert!(!control.is_draining());
        assert_eq!(control.phase(), DrainPhase::Serving);
        assert!(control.start("test"));
        assert!(!control.start("again"));
        assert!(control.is_draining());
        assert_eq!(control.phase(), DrainPhase::Grace);
        assert_eq!(
            control.started_at().map(|(_, why)| why),
            Some("test".to_string())
        );
    }
}
