//! The metric registry and its handles. The proxy updates them through cheap atomic handles
//! resolved once per listener; the admin endpoint only reads the registry.

use prometheus::{
    Encoder, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
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

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let vec = IntCounterVec::new(Opts::new(name, help).namespace("brokerside"), labels)
        .expect("static metric definition is valid");
    registry
        .register(Box::new(vec.clone()))
        .expect("each metric is registered once");
    vec
}

impl Metrics {
    /// A fresh registry with every brokerside metric in it.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let connections_active = IntGaugeVec::new(
            Opts::new("connections_active", "Client connections open now.").namespace("brokerside"),
            &["listener"],
        )
        .expect("static metric definition is valid");
        registry
            .register(Box::new(connections_active.clone()))
            .expect("each metric is registered once");
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
            connections_active,
            registry,
        }
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
