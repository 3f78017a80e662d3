//! The checker tasks: one per health-checked server, probing it on its interval, feeding the
//! rise/fall state machine and publishing the result to the server's [`ServerHealth`] and
//! metrics. These tasks are the only writers of that state: admin requests and the proxy only
//! read it, so no probe ever runs inside a request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::task::JoinHandle;

use super::probe::{ProbeError, probe_within};
use super::state::{RiseFall, Transition};
use super::status::{CheckOutcome, HealthReport, ServerHealth, ServerState};
use crate::backend::{Backend, Server};
use crate::config::{CheckConfig, ProxyProtocol};
use crate::metrics::{CheckMetrics, Metrics};

/// Starts one checker task per server of every backend that has a `check`. Each task runs until
/// aborted through its handle (at shutdown or when a reload replaces the backends); its first
/// probe runs at once.
pub fn spawn_checkers(backends: &[Arc<Backend>], metrics: &Metrics) -> Vec<JoinHandle<()>> {
    backends
        .iter()
        .flat_map(|backend| {
            backend
                .servers
                .iter()
                .filter_map(|server| spawn_checker(backend, server, metrics))
        })
        .collect()
}

/// Starts the checker of one server of `backend` (discovered peers get theirs this way as they
/// appear); `None` when the backend has no `check`.
pub fn spawn_checker(
    backend: &Backend,
    server: &Server,
    metrics: &Metrics,
) -> Option<JoinHandle<()>> {
    let check = backend.check.as_ref()?;
    let checker = Checker {
        backend: backend.name.clone(),
        server: server.addr,
        check: check.clone(),
        proxy: backend.proxy_protocol,
        health: Arc::clone(&server.health),
        metrics: metrics.check(&backend.name, &server.addr.to_string()),
        tracker: Tracker::new(check, server.health.report().since),
    };
    Some(tokio::spawn(checker.run()))
}

/// One server's checker.
struct Checker {
    backend: String,
    server: SocketAddr,
    check: CheckConfig,
    proxy: ProxyProtocol,
    health: Arc<ServerHealth>,
    metrics: CheckMetrics,
    tracker: Tracker,
}

impl Checker {
    async fn run(mut self) {
        self.metrics.up.set(i64::from(self.health.is_up()));
        loop {
            let changing = self.check_once().await;
            let pause = if changing {
                self.check.fast_interval
            } else {
                self.check.interval
            };
            tokio::time::sleep(jittered(pause)).await;
        }
    }

    /// Runs one probe and publishes its outcome; returns whether the server is changing state.
    async fn check_once(&mut self) -> bool {
        let started = Instant::now();
        let result = probe_within(
            &self.check.kind,
            self.server,
            self.proxy,
            self.check.timeout,
        )
        .await;
        let latency = started.elapsed();
        self.metrics.duration.observe(latency.as_secs_f64());
        if result.is_err() {
            self.metrics.failures.inc();
        }
        let first = !self.tracker.probed;
        let (transition, report) = self.tracker.record(result, latency, SystemTime::now());
        self.metrics
            .up
            .set(i64::from(report.state == ServerState::Up));
        self.log(transition, first, &report);
        self.health.publish(report);
        self.tracker.machine.changing()
    }

    fn log(&self, transition: Transition, first: bool, report: &HealthReport) {
        let (backend, server) = (&self.backend, self.server);
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
struct Tracker {
    machine: RiseFall,
    /// When the state last changed.
    since: SystemTime,
    /// Whether a probe has run, to tell the first one apart in logs.
    probed: bool,
}

impl Tracker {
    fn new(check: &CheckConfig, since: SystemTime) -> Tracker {
        Tracker {
            machine: RiseFall::new(check.rise, check.fall),
            since,
            probed: false,
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
    use crate::config::{CheckKind, Config};

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
        let mut tracker = Tracker::new(&check(2, 2), start);
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

    #[tokio::test]
    async fn checker_marks_a_server_up_then_down() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let config = Config::from_toml(&format!(
            r#"
            [[listener]]
            name = "mqtt"
            listen = "127.0.0.1:0"
            backend = "broker"
            [[backend]]
            name = "broker"
            servers = ["{addr}"]
            [backend.check]
            kind = "tcp"
            interval = "50ms"
            fast_interval = "20ms"
            timeout = "1s"
            rise = 2
            fall = 2
            "#
        ))
        .unwrap();
        let metrics = Metrics::new();
        let backends: Vec<Arc<Backend>> = config
            .backends
            .iter()
            .map(|b| Arc::new(Backend::new(b, &metrics)))
            .collect();
        let health = Arc::clone(&backends[0].servers[0].health);
        assert!(!health.is_up(), "pending until rise probes pass");

        let tasks = spawn_checkers(&backends, &metrics);
        assert_eq!(tasks.len(), 1);
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

        for task in tasks {
            task.abort();
        }
    }
}
