//! The metric registry and its handles. The proxy updates them through cheap atomic handles
//! resolved once per listener; the admin endpoint only reads the registry.

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Why a client connection was refused or cut before relaying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseReason {
    /// The listener already holds `max_connections`.
    Limit,
    /// No server of the backend accepted the connection.
    NoBackend,
    /// The inbound PROXY header was missing, malformed or late.
    ProxyHeader,
}

impl RefuseReason {
    /// Every reason, for pre-creating label sets so that each series exists from the start.
    pub const ALL: [RefuseReason; 3] = [
        RefuseReason::Limit,
        RefuseReason::NoBackend,
        RefuseReason::ProxyHeader,
    ];

    /// The `reason` label value.
    pub fn label(self) -> &'static str {
        match self {
            RefuseReason::Limit => "limit",
            RefuseReason::NoBackend => "no_backend",
            RefuseReason::ProxyHeader => "proxy_header",
        }
    }
}

/// Every brokerside metric, registered in one registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    connections_active: IntGaugeVec,
    connections_total: IntCounterVec,
    connections_refused: IntCounterVec,
    connections_reset: IntCounterVec,
    bytes: IntCounterVec,
    backend_connect_failures: IntCounterVec,
    backend_up: IntGaugeVec,
    check_duration: HistogramVec,
    check_failures: IntCounterVec,
    draining: IntGauge,
    closed_by_drain: IntCounter,
    moved_by_failback: IntCounter,
    peers: IntGaugeVec,
    discovery_errors: IntCounterVec,
    cluster_partitioned: IntGauge,
}

/// The handles one server's health checker updates.
#[derive(Clone)]
pub struct CheckMetrics {
    /// 1 while the server is up, 0 while down.
    pub up: IntGauge,
    /// Probe durations in seconds.
    pub duration: Histogram,
    /// Failed probes.
    pub failures: IntCounter,
}

/// The handles one listener's connections update; cloned into each connection.
#[derive(Clone)]
pub struct ListenerMetrics {
    /// Connections open now.
    pub active: IntGauge,
    /// Connections accepted since start.
    pub total: IntCounter,
    refused: [IntCounter; 3],
    /// Connections ended by a reset from the client side.
    pub reset_by_client: IntCounter,
    /// Connections ended by a reset from the backend side.
    pub reset_by_backend: IntCounter,
    /// Bytes relayed from clients to the backend.
    pub bytes_to_backend: IntCounter,
    /// Bytes relayed from the backend to clients.
    pub bytes_to_client: IntCounter,
}

impl ListenerMetrics {
    /// Counts one refusal.
    pub fn refused(&self, reason: RefuseReason) {
        self.refused[reason as usize].inc();
    }
}

/// Registers `metric`; the definitions are static, so failure is a programming error.
fn register<M: Collector + Clone + 'static>(
    registry: &Registry,
    metric: Result<M, prometheus::Error>,
) -> M {
    let metric = metric.expect("static metric definition is valid");
    registry
        .register(Box::new(metric.clone()))
        .expect("each metric is registered once");
    metric
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace("brokerside")
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(registry, IntCounterVec::new(opts(name, help), labels))
}

impl Metrics {
    /// A fresh registry with every brokerside metric in it.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let connections_active = register(
            &registry,
            IntGaugeVec::new(
                opts("connections_active", "Client connections open now."),
                &["listener"],
            ),
        );
        Metrics {
            connections_total: counter_vec(
                &registry,
                "connections_total",
                "Client connections accepted.",
                &["listener"],
            ),
            connections_refused: counter_vec(
                &registry,
                "connections_refused_total",
                "Client connections closed before relaying, by reason (limit, no_backend, proxy_header).",
                &["listener", "reason"],
            ),
            connections_reset: counter_vec(
                &registry,
                "connections_reset_total",
                "Relayed connections ended by a TCP reset, by the side that sent it (client, backend).",
                &["listener", "side"],
            ),
            bytes: counter_vec(
                &registry,
                "bytes_total",
                "Bytes relayed, by direction (to_backend, to_client).",
                &["listener", "direction"],
            ),
            backend_connect_failures: counter_vec(
                &registry,
                "backend_connect_failures_total",
                "Failed connection attempts to a backend server (refused, unreachable or timed out).",
                &["backend", "server"],
            ),
            backend_up: register(
                &registry,
                IntGaugeVec::new(
                    opts(
                        "backend_up",
                        "1 while a backend server passes its health checks, else 0.",
                    ),
                    &["backend", "server"],
                ),
            ),
            check_duration: register(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new("health_check_duration_seconds", "Health probe durations.")
                        .namespace("brokerside")
                        .buckets(vec![
                            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                        ]),
                    &["backend", "server"],
                ),
            ),
            check_failures: counter_vec(
                &registry,
                "health_check_failures_total",
                "Failed health probes.",
                &["backend", "server"],
            ),
            draining: register(
                &registry,
                IntGauge::with_opts(opts("draining", "1 once the drain has started, else 0.")),
            ),
            closed_by_drain: register(
                &registry,
                IntCounter::with_opts(opts(
                    "drain_closed_connections_total",
                    "Connections closed by the drain (paced, or at its deadline).",
                )),
            ),
            moved_by_failback: register(
                &registry,
                IntCounter::with_opts(opts(
                    "failback_closed_connections_total",
                    "Connections on backup servers closed so that they reconnect to the recovered local broker.",
                )),
            ),
            peers: register(
                &registry,
                IntGaugeVec::new(
                    opts(
                        "peers",
                        "Peers a discovery source currently reports (this node left out).",
                    ),
                    &["source"],
                ),
            ),
            discovery_errors: counter_vec(
                &registry,
                "discovery_errors_total",
                "Failed discovery refreshes (timeouts, SERVFAIL, HTTP errors); the last good peer set is kept.",
                &["source"],
            ),
            cluster_partitioned: register(
                &registry,
                IntGauge::with_opts(opts(
                    "cluster_partitioned",
                    "1 while the broker sees fewer cluster members than a quorum of the expected ones.",
                )),
            ),
            connections_active,
            registry,
        }
    }

    /// The peer-count gauge and error counter of one discovery source, created at zero.
    pub fn discovery(&self, source: &str) -> (IntGauge, IntCounter) {
        (
            self.peers.with_label_values(&[source]),
            self.discovery_errors.with_label_values(&[source]),
        )
    }

    /// 1 while partitioned.
    pub fn cluster_partitioned(&self) -> &IntGauge {
        &self.cluster_partitioned
    }

    /// The handles for one server's health checker, every series created.
    pub fn check(&self, backend: &str, server: &str) -> CheckMetrics {
        CheckMetrics {
            up: self.backend_up.with_label_values(&[backend, server]),
            duration: self.check_duration.with_label_values(&[backend, server]),
            failures: self.check_failures.with_label_values(&[backend, server]),
        }
    }

    /// 1 once the drain has started.
    pub fn draining(&self) -> &IntGauge {
        &self.draining
    }

    /// Connections closed by the drain.
    pub fn closed_by_drain(&self) -> &IntCounter {
        &self.closed_by_drain
    }

    /// Connections closed by failback.
    pub fn moved_by_failback(&self) -> &IntCounter {
        &self.moved_by_failback
    }

    /// The handles for one listener, every series created at zero.
    pub fn listener(&self, name: &str) -> ListenerMetrics {
        ListenerMetrics {
            active: self.connections_active.with_label_values(&[name]),
            total: self.connections_total.with_label_values(&[name]),
            refused: RefuseReason::ALL.map(|r| {
                self.connections_refused
                    .with_label_values(&[name, r.label()])
            }),
            reset_by_client: self.connections_reset.with_label_values(&[name, "client"]),
            reset_by_backend: self.connections_reset.with_label_values(&[name, "backend"]),
            bytes_to_backend: self.bytes.with_label_values(&[name, "to_backend"]),
            bytes_to_client: self.bytes.with_label_values(&[name, "to_client"]),
        }
    }

    /// The counter of failed connects to one backend server.
    pub fn backend_connect_failures(&self, backend: &str, server: &str) -> IntCounter {
        self.backend_connect_failures
            .with_label_values(&[backend, server])
    }

    /// The registry, for the admin endpoint.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Every metric in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_series_exist_from_the_start() {
        let metrics = Metrics::new();
        let handles = metrics.listener("mqtt");
        handles.refused(RefuseReason::NoBackend);
        let text = metrics.render();
        assert!(
            text.contains("brokerside_connections_active{listener=\"mqtt\"} 0"),
            "{text}"
        );
        assert!(
            text.contains(
                "brokerside_connections_refused_total{listener=\"mqtt\",reason=\"limit\"} 0"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "brokerside_connections_refused_total{listener=\"mqtt\",reason=\"no_backend\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("brokerside_bytes_total{direction=\"to_client\",listener=\"mqtt\"} 0"),
            "{text}"
        );
    }
}
