//! Shutdown: the signals that start it, the drain switch that health and the proxy read, and
//! the tracking of open connections that it waits for.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, watch};

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

/// Counts open connections so shutdown can wait for them to finish.
#[derive(Debug, Default)]
pub struct Tracker {
    open: AtomicUsize,
    all_closed: Notify,
}

impl Tracker {
    /// Counts one more open connection; each call is paired with one [`Tracker::closed`].
    pub fn opened(&self) {
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one connection closed, waking `all_closed` waiters at the last.
    pub fn closed(&self) {
        if self.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.all_closed.notify_waiters();
        }
    }

    /// Connections open now.
    pub fn count(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Resolves once no connection is open.
    pub async fn all_closed(&self) {
        loop {
            let notified = self.all_closed.notified();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Paces the closing of connections during a drain: each step says how many to close and how
/// long to wait before the next step. Waits are stretched by up to half at random, so closes
/// never come in lockstep and the rate never exceeds `close_rate`.
#[derive(Debug, Clone, Copy)]
pub struct ClosePacer {
    period: Duration,
    batch: usize,
}

/// Shortest wait between steps: below this timers cost more than they pace.
const MIN_PERIOD: Duration = Duration::from_millis(10);

impl ClosePacer {
    /// A pacer for `rate` connections per second (at least 1).
    pub fn new(rate: u32) -> ClosePacer {
        let rate = rate.max(1);
        let period = Duration::from_secs_f64(1.0 / f64::from(rate)).max(MIN_PERIOD);
        let batch = (period.as_secs_f64() * f64::from(rate)).floor().max(1.0) as usize;
        ClosePacer { period, batch }
    }

    /// The next step for a random `jitter` in 0..1: (wait after closing, how many to close).
    pub fn step(&self, jitter: f64) -> (Duration, usize) {
        (
            self.period.mul_f64(1.0 + 0.5 * jitter.clamp(0.0, 1.0)),
            self.batch,
        )
    }
}

/// Resolves at the next SIGTERM or SIGINT, with the signal's name.
pub async fn signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!("{name} received");
    name
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_pacer_never_exceeds_the_rate() {
        for rate in [1, 7, 100, 500, 5_000, 100_000] {
            let pacer = ClosePacer::new(rate);
            for jitter in [0.0, 0.3, 1.0] {
                let (wait, batch) = pacer.step(jitter);
                assert!(batch >= 1);
                let per_second = batch as f64 / wait.as_secs_f64();
                assert!(
                    per_second <= f64::from(rate) * 1.0001,
                    "rate {rate}: {per_second}/s"
                );
                // and not far below it either: at least two thirds of the rate
                assert!(
                    per_second >= f64::from(rate) / 1.5 * 0.99,
                    "rate {rate}: {per_second}/s"
                );
            }
        }
    }

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

    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn waits_for_the_last_connection() {
        let tracker = Arc::new(Tracker::default());
        tracker.all_closed().await;
        tracker.opened();
        tracker.opened();
        let waiter = tokio::spawn({
            let tracker = Arc::clone(&tracker);
            async move { tracker.all_closed().await }
        });
        tracker.closed();
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        tracker.closed();
        waiter.await.unwrap();
        assert_eq!(tracker.count(), 0);
    }
}
