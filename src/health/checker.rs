//! The checker tasks: one per health-checked server, probing it on its interval, feeding the
//! rise/fall state machine and publishing the result to the server's [`ServerHealth`] and
//! metrics. These tasks are the only writers of that state: admin requests and the proxy only
//! read it, so no probe ever runs inside a request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::probe::{ProbeError, probe_within};
use super::report::{CheckOutcome, HealthReport, ServerHealth, ServerState};
use super::rise_fall::{RiseFall, Transition};
use crate::config::{CheckConfig, ProxyProtocol};
use crate::metrics::{CheckMetrics, Metrics};
use crate::task::Task;

/// What one checker probes and how: plain data, so that a reload can tell whether a server's
/// check changed (and its checker must restart) or not (and it keeps running).
#[derive(Debug, Clone, PartialEq)]
pub struct CheckTarget {
    /// The backend the server belongs to (a metric label and a log field).
    pub backend: String,
    /// The server's address.
    pub server: SocketAddr,
    /// The backend's check settings.
    pub check: CheckConfig,
    /// The PROXY header the backend's connections start with, which its probes send too.
    pub proxy: ProxyProtocol,
}

/// Starts the checker of one server, publishing into `health`. It carries on from the verdict
/// `health` holds (a restarted checker neither drops its server to pending nor forgets its
/// streak); a fresh, pending `health` starts down. The first probe runs at once; the task runs
/// until the returned [`Task`] is dropped.
pub fn spawn_checker(target: CheckTarget, health: Arc<ServerHealth>, metrics: &Metrics) -> Task {
    let metrics = metrics.check(&target.backend, &target.server.to_string());
    let history = History::resume(&target.check, &health.report());
    Task::spawn(
        Checker {
            target,
            health,
            metrics,
            history,
        }
        .run(),
    )
}

/// One server's checker.
struct Checker {
    target: CheckTarget,
    health: Arc<ServerHealth>,
    metrics: CheckMetrics,
    history: History,
}

impl Checker {
    async fn run(mut self) {
        self.metrics.up.set(i64::from(self.health.is_up()));
        loop {
            let changing = self.check_once().await;
            let pause = if changing {
                self.target.check.fast_interval
            } else {
                self.target.check.interval
            };
            tokio::time::sleep(jittered(pause)).await;
        }
    }

    /// Runs one probe and publishes its outcome; returns whether the server is changing state.
    async fn check_once(&mut self) -> bool {
        let started = Instant::now();
        let target = &self.target;
        let result = probe_within(
            &target.check.kind,
            target.server,
            target.proxy,
            target.check.timeout,
        )
        .await;
        let latency = started.elapsed();
        self.metrics.duration.observe(latency.as_secs_f64());
        if result.is_err() {
            self.metrics.failures.inc();
        }
        let first = !self.history.probed;
        let (transition, report) = self.history.record(result, latency, SystemTime::now());
        self.metrics
            .up
            .set(i64::from(report.state == ServerState::Up));
        self.log(transition, first, &report);
        self.health.publish(report);
        self.history.machine.changing()
    }

    fn log(&self, transition: Transition, first: bool, report: &HealthReport) {
        let (backend, server) = (&self.target.backend, self.target.server);
        let error = report.last.as_ref().and_then(|last| last.error.as_deref());
        match (transition, error) {
            (Transition::WentUp, _) => {
                let reason = format!("passed {} checks in a row", report.streak);
                tracing::info!(%backend, %server, %reason, "server up");
            }
            (Transition::WentDown, Some(reason)) => {
                tracing::warn!(%backend, %server, %reason, "server down");
            }
            // A server starts down, so its first failure changes no state; without this line a
            // broker that is down from the start would never be named in the log.
            (Transition::Stay, Some(reason)) if first => {
                tracing::warn!(%backend, %server, %reason, "server down");
            }
            (_, Some(reason)) => {
                tracing::debug!(%backend, %server, %reason, streak = report.streak, "check failed");
            }
            (_, None) => {}
        }
    }
}

/// The clock-free part of a checker: outcomes in, reports out.
#[derive(Debug)]
struct History {
    machine: RiseFall,
    /// When the state last changed.
    since: SystemTime,
    /// Whether a probe has run, to tell the first one apart in logs.
    probed: bool,
}

impl History {
    fn new(check: &CheckConfig, since: SystemTime) -> History {
        History {
            machine: RiseFall::new(check.rise, check.fall),
            since,
            probed: false,
        }
    }

    /// Carries on from `report`: a server that has been probed keeps its state and streak; one
    /// that has not (or was not checked) starts pending.
    fn resume(check: &CheckConfig, report: &HealthReport) -> History {
        if !report.checked || report.last.is_none() {
            return History::new(check, report.since);
        }
        History {
            machine: RiseFall::resume(check.rise, check.fall, report.state, report.streak),
            since: report.since,
            probed: true,
        }
    }

    /// Feeds one probe result, finished at `at` after `latency`, and builds the report to publish.
    fn record(
        &mut self,
        result: Result<(), ProbeError>,
        latency: Duration,
        at: SystemTime,
    ) -> (Transition, HealthReport) {
        let transition = self.machine.observe(result.is_ok());
        if transition != Transition::Stay {
            self.since = at;
        }
        self.probed = true;
        let error = result.err();
        let report = HealthReport {
            state: self.machine.state(),
            checked: true,
            last: Some(CheckOutcome {
                at,
                latency,
                error: error.map(|e| e.to_string()),
            }),
            streak: self.machine.streak(),
            since: self.since,
        };
        (transition, report)
    }
}

/// `base` moved by up to ±10 %, so that the checks of many servers started together drift apart
/// instead of probing in lockstep.
fn jittered(base: Duration) -> Duration {
    base.mul_f64(0.9 + 0.2 * fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CheckKind;

    fn check(rise: u32, fall: u32) -> CheckConfig {
        CheckConfig {
            kind: CheckKind::Tcp,
            interval: Duration::from_secs(2),
            fast_interval: Duration::from_millis(500),
            timeout: Duration::from_secs(1),
            rise,
            fall,
        }
    }

    #[test]
    fn tracker_reports_each_probe_and_dates_changes() {
        let start = SystemTime::UNIX_EPOCH;
        let mut tracker = History::new(&check(2, 2), start);
        let at = |s: u64| start + Duration::from_secs(s);
        let ms = Duration::from_millis(3);

        let (transition, report) = tracker.record(Ok(()), ms, at(1));
        assert_eq!(transition, Transition::Stay);
        assert_eq!(report.state, ServerState::Down);
        assert_eq!(
            (report.checked, report.streak, report.since),
            (true, 1, start)
        );
        assert_eq!(
            report.last,
            Some(CheckOutcome {
                at: at(1),
                latency: ms,
                error: None
            })
        );

        let (transition, report) = tracker.record(Ok(()), ms, at(2));
        assert_eq!(transition, Transition::WentUp);
        assert_eq!((report.state, report.since), (ServerState::Up, at(2)));

        let refused = Err(ProbeError::Connect("connection refused".into()));
        let (_, report) = tracker.record(refused.clone(), ms, at(3));
        assert_eq!(
            (report.state, report.streak, report.since),
            (ServerState::Up, 1, at(2))
        );
        assert_eq!(
            report.last.unwrap().error.as_deref(),
            Some("connection refused")
        );

        let (transition, report) = tracker.record(refused, ms, at(4));
        assert_eq!(transition, Transition::WentDown);
        assert_eq!(
            (report.state, report.streak, report.since),
            (ServerState::Down, 2, at(4))
        );
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        let base = Duration::from_secs(2);
        for _ in 0..1000 {
            let pause = jittered(base);
            assert!(pause >= Duration::from_millis(1800) && pause <= Duration::from_millis(2200));
        }
    }

    /// Polls `condition` every 10 ms for up to 5 s.
    async fn eventually(what: &str, condition: impl Fn() -> bool) {
        for _ in 0..500 {
            if condition() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("not within 5s: {what}");
    }

    fn target(server: SocketAddr) -> CheckTarget {
        CheckTarget {
            backend: "broker".into(),
            server,
            check: CheckConfig {
                interval: Duration::from_millis(50),
                fast_interval: Duration::from_millis(20),
                ..check(2, 2)
            },
            proxy: ProxyProtocol::Off,
        }
    }

    #[tokio::test]
    async fn checker_marks_a_server_up_then_down() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Metrics::new();
        let health = Arc::new(ServerHealth::pending());
        assert!(!health.is_up(), "pending until rise probes pass");

        let task = spawn_checker(target(addr), Arc::clone(&health), &metrics);
        eventually("server up", || health.is_up()).await;
        let report = health.report();
        assert!(report.checked && report.streak >= 2);
        assert_eq!(metrics.check("broker", &addr.to_string()).up.get(), 1);

        drop(listener);
        eventually("server down", || !health.is_up()).await;
        let report = health.report();
        let last = report.last.as_ref().unwrap();
        assert_eq!(last.error.as_deref(), Some("connection refused"));
        assert_eq!(metrics.check("broker", &addr.to_string()).up.get(), 0);
        assert!(metrics.check("broker", &addr.to_string()).failures.get() >= 2);
        assert!(
            metrics
                .check("broker", &addr.to_string())
                .duration
                .get_sample_count()
                >= 4
        );
        drop(task);
    }

    /// A reload that changes a check restarts its checker on the same health: the server stays
    /// up (no flap) and goes down only after `fall` failures of the new checker.
    #[tokio::test]
    async fn a_restarted_checker_carries_the_verdict_on() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Metrics::new();
        let health = Arc::new(ServerHealth::pending());
        let first = spawn_checker(target(addr), Arc::clone(&health), &metrics);
        eventually("server up", || health.is_up()).await;
        drop(first);

        let mut slower = target(addr);
        slower.check.interval = Duration::from_millis(80);
        let _second = spawn_checker(slower, Arc::clone(&health), &metrics);
        assert!(health.is_up(), "restarting the checker kept the server up");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(health.is_up());
        assert!(health.report().streak >= 3, "{:?}", health.report());
        drop(listener);
        eventually("server down", || !health.is_up()).await;
    }
}
