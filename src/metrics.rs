//! The metric registry and its handles. The proxy updates them through cheap atomic handles
//! resolved once per listener; the admin endpoint only reads the registry.
//!
//! Series labelled by something that can go away (a listener, a backend server, a discovered
//! peer, a discovery source) are owned: each handle set holds a share of its series, and when the
//! last share is dropped (the peer left, a reload removed the server and its checker stopped) the
//! series are removed from the registry, so label churn never grows the scrape without bound. A
//! share taken again before that (a checker restarted with new settings) keeps the series and
//! their values.

mod admission;
mod tls;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub use admission::{AdmissionMetrics, ShedReason};
pub use tls::{HandshakeFailure, TlsMetrics};

/// Why a client connection was refused or cut before relaying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseReason {
    /// The listener already holds `max_connections`.
    Limit,
    /// No server of the backend accepted the connection.
    NoBackend,
    /// The inbound PROXY header was missing, malformed or late.
    ProxyHeader,
    /// The backend connection failed while it was set up (the PROXY header could not be sent).
    BackendError,
    /// The client left before relaying began (its socket could no longer tell its address).
    ClientGone,
    /// The client's first packet was not a CONNECT within `max_connect_size` and
    /// `preread_timeout` (garbage, a wrong protocol name, too large, truncated, late).
    MqttConnect,
}

impl RefuseReason {
    /// Every reason, for pre-creating label sets so that each series exists from the start.
    pub const ALL: [RefuseReason; 6] = [
        RefuseReason::Limit,
        RefuseReason::NoBackend,
        RefuseReason::ProxyHeader,
        RefuseReason::BackendError,
        RefuseReason::ClientGone,
        RefuseReason::MqttConnect,
    ];

    /// The `reason` label value.
    pub fn label(self) -> &'static str {
        match self {
            RefuseReason::Limit => "limit",
            RefuseReason::NoBackend => "no_backend",
            RefuseReason::ProxyHeader => "proxy_header",
            RefuseReason::BackendError => "backend_error",
            RefuseReason::ClientGone => "client_gone",
            RefuseReason::MqttConnect => "mqtt_connect",
        }
    }
}

/// Every brokerside metric, registered in one registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    connections_active: IntGaugeVec,
    connections_max: IntGaugeVec,
    connections_total: IntCounterVec,
    connections_refused: IntCounterVec,
    connections_reset: IntCounterVec,
    connections_failed: IntCounterVec,
    connections_timed_out: IntCounterVec,
    bytes: IntCounterVec,
    backend_connect_failures: IntCounterVec,
    backend_connections_active: IntGaugeVec,
    backend_server_info: IntGaugeVec,
    backend_server_weight: GaugeVec,
    backend_connect_duration: HistogramVec,
    backend_up: IntGaugeVec,
    check_duration: HistogramVec,
    check_failures: IntCounterVec,
    draining: IntGauge,
    closed_by_drain: IntCounter,
    closed_by_reload: IntCounter,
    moved_by_failback: IntCounter,
    peers: IntGaugeVec,
    discovery_errors: IntCounterVec,
    cluster_partitioned: IntGauge,
    config_reloads: IntCounterVec,
    config_last_reload_success: Gauge,
    config_last_reload_successful: IntGauge,
    admin_connections: IntGauge,
    admin_requests: IntCounterVec,
    admin_refused: IntCounterVec,
    admin_timeouts: IntCounterVec,
    tls: tls::TlsFamilies,
    admission: admission::AdmissionFamilies,
    owners: Arc<Mutex<HashMap<SeriesKey, Weak<Owner>>>>,
    started: SystemTime,
    rates: Arc<RateMeter>,
}

/// The label values of one set of owned series.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum SeriesKey {
    /// A listener's connection, refusal, reset and byte series.
    Listener(String),
    /// A backend server's connect failures and relayed connections: (backend, server).
    Server(String, String),
    /// A backend's connect latency.
    Backend(String),
    /// A backend server's check series: (backend, server).
    Check(String, String),
    /// A discovery source's peer gauge and error counter.
    Source(String),
}

/// One share of a set of series; the last share dropped removes them.
struct Owner {
    key: SeriesKey,
    metrics: Metrics,
}

impl fmt::Debug for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Owner({:?})", self.key)
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        let Ok(mut owners) = self.metrics.owners.lock() else {
            return;
        };
        // A share taken after this one's last holder let go (a checker restarted at once) lives
        // on under the same key: its series stay.
        if owners
            .get(&self.key)
            .is_some_and(|owner| owner.strong_count() > 0)
        {
            return;
        }
        owners.remove(&self.key);
        drop(owners);
        self.metrics.remove_series(&self.key);
    }
}

/// The admin endpoint's handles.
#[derive(Clone, Debug)]
pub struct AdminMetrics {
    /// Connections open now.
    pub connections: IntGauge,
    requests: IntCounterVec,
    refused: IntCounterVec,
    timeouts: IntCounterVec,
}

impl AdminMetrics {
    /// Counts one answered request; `route` is one of a fixed set of names.
    pub fn request(&self, route: &str, code: u16) {
        self.requests
            .with_label_values(&[route, itoa_code(code)])
            .inc();
    }

    /// Counts one connection refused for `reason` (`limit`, `per_source`).
    pub fn refused(&self, reason: &str) {
        self.refused.with_label_values(&[reason]).inc();
    }

    /// Counts one connection cut by a timeout (`header`, `write_stall`).
    pub fn timed_out(&self, reason: &str) {
        self.timeouts.with_label_values(&[reason]).inc();
    }
}

/// A status code as a label value, without formatting on the common ones.
fn itoa_code(code: u16) -> &'static str {
    match code {
        200 => "200",
        202 => "202",
        400 => "400",
        403 => "403",
        404 => "404",
        405 => "405",
        409 => "409",
        503 => "503",
        _ => "other",
    }
}

/// The handles one server's health checker updates.
#[derive(Clone, Debug)]
pub struct CheckMetrics {
    /// 1 while the server is up, 0 while down.
    pub up: IntGauge,
    /// Probe durations in seconds.
    pub duration: Histogram,
    /// Failed probes.
    pub failures: IntCounter,
    _owner: Arc<Owner>,
}

/// The handles of one backend server that the connection path updates.
#[derive(Clone, Debug)]
pub struct ServerMetrics {
    /// Failed connection attempts to the server.
    pub connect_failures: IntCounter,
    /// Client connections relayed to the server now.
    pub active: IntGauge,
    /// Its slow-start weight, set when `/metrics` is scraped.
    pub weight: Gauge,
    _owner: Arc<Owner>,
}

/// The handle of one backend that the connection path updates.
#[derive(Clone, Debug)]
pub struct BackendMetrics {
    /// Durations of successful connects to the backend's servers, in seconds.
    pub connect_duration: Histogram,
    _owner: Arc<Owner>,
}

/// The handles of one discovery source.
#[derive(Clone, Debug)]
pub struct DiscoveryMetrics {
    /// Peers the source reports now.
    pub peers: IntGauge,
    /// Failed refreshes.
    pub errors: IntCounter,
    _owner: Arc<Owner>,
}

/// The handles one listener's connections update; shared by its connections.
#[derive(Clone, Debug)]
pub struct ListenerMetrics {
    /// Connections open now.
    pub active: IntGauge,
    /// The listener's `max_connections`, set by the runtime that plans its connections.
    pub limit: IntGauge,
    /// Connections accepted since start.
    pub total: IntCounter,
    refused: [IntCounter; RefuseReason::ALL.len()],
    /// Connections ended by a reset from the client side.
    pub reset_by_client: IntCounter,
    /// Connections ended by a reset from the backend side.
    pub reset_by_backend: IntCounter,
    /// Relayed connections ended by another socket error on the client side.
    pub failed_on_client: IntCounter,
    /// Relayed connections ended by another socket error on the backend side.
    pub failed_on_backend: IntCounter,
    /// Connections closed after `idle_timeout` without a byte either way.
    pub idle_timeouts: IntCounter,
    /// Connections closed after `half_close_timeout` of silence once one direction had ended.
    pub half_close_timeouts: IntCounter,
    /// Bytes relayed from clients to the backend.
    pub bytes_to_backend: IntCounter,
    /// Bytes relayed from the backend to clients.
    pub bytes_to_client: IntCounter,
    /// Admission pacing.
    pub admission: AdmissionMetrics,
    _owner: Arc<Owner>,
}

impl ListenerMetrics {
    /// Counts one refusal.
    pub fn refused(&self, reason: RefuseReason) {
        self.refused[reason as usize].inc();
    }

    /// Refusals for `reason` so far.
    pub fn refused_count(&self, reason: RefuseReason) -> u64 {
        self.refused[reason as usize].get()
    }
}

/// Per-second rates of counters (new connections per listener), for people reading the admin
/// endpoint: each read compares the counter with the sample kept from a read at least a second
/// earlier. Prometheus computes its own rates from the counters; this is for the status page.
#[derive(Debug, Default)]
pub struct RateMeter {
    samples: Mutex<HashMap<String, RateSample>>,
}

#[derive(Debug)]
struct RateSample {
    at: Instant,
    count: u64,
    rate: Option<f64>,
}

/// Shortest interval a rate is computed over, so that two reads in quick succession do not
/// make a rate out of noise.
const RATE_WINDOW: Duration = Duration::from_secs(1);

impl RateMeter {
    /// The per-second rate of counter `key`, which reads `count` now, since the last sample;
    /// `None` until two reads at least [`RATE_WINDOW`] apart have been seen.
    pub fn rate(&self, key: &str, count: u64) -> Option<f64> {
        self.rate_at(key, count, Instant::now())
    }

    fn rate_at(&self, key: &str, count: u64, now: Instant) -> Option<f64> {
        let Ok(mut samples) = self.samples.lock() else {
            return None;
        };
        let Some(sample) = samples.get_mut(key) else {
            samples.insert(
                key.to_string(),
                RateSample {
                    at: now,
                    count,
                    rate: None,
                },
            );
            return None;
        };
        let elapsed = now.saturating_duration_since(sample.at);
        if elapsed >= RATE_WINDOW {
            // A counter that went backwards belongs to a listener that was removed and added
            // again: start over from it.
            sample.rate = count
                .checked_sub(sample.count)
                .map(|new| new as f64 / elapsed.as_secs_f64());
            sample.at = now;
            sample.count = count;
        }
        sample.rate
    }

    /// Forgets every key `keep` rejects (listeners that are gone), so the map stays bounded.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        if let Ok(mut samples) = self.samples.lock() {
            samples.retain(|key, _| keep(key));
        }
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

/// The values of the `role` label of `brokerside_backend_server_info`.
const ROLES: [&str; 2] = ["local", "backup"];

/// Histogram buckets for network round trips on one host or one network, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The prometheus crate's process collector (Linux: it reads `/proc/self`), which exports the
/// conventional `process_*` series: resident and virtual memory, open and maximum file
/// descriptors, CPU seconds, start time and threads.
#[cfg(target_os = "linux")]
fn register_process_collector(registry: &Registry) {
    let collector = prometheus::process_collector::ProcessCollector::for_self();
    registry
        .register(Box::new(collector))
        .expect("the process collector is registered once");
}

/// Elsewhere the process collector does not exist; only the brokerside series are exported.
#[cfg(not(target_os = "linux"))]
fn register_process_collector(_registry: &Registry) {}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace("brokerside")
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(registry, IntCounterVec::new(opts(name, help), labels))
}

impl Metrics {
    /// A fresh registry with every brokerside metric in it, the build's version and the
    /// process's own metrics (memory, file descriptors, CPU, start time).
    pub fn new() -> Metrics {
        let metrics = Metrics::registered();
        // Both results exist from the start, so that a rate over them works before the first
        // reload.
        for result in ["ok", "error"] {
            metrics.config_reloads.with_label_values(&[result]);
        }
        metrics
    }

    fn registered() -> Metrics {
        let registry = Registry::new();
        let build_info = register(
            &registry,
            IntGaugeVec::new(
                opts(
                    "build_info",
                    "Always 1; the version label names the running brokerside build.",
                ),
                &["version"],
            ),
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        register_process_collector(&registry);
        let connections_active = register(
            &registry,
            IntGaugeVec::new(
                opts("connections_active", "Client connections open now."),
                &["listener"],
            ),
        );
        Metrics {
            connections_max: register(
                &registry,
                IntGaugeVec::new(
                    opts(
                        "connections_max",
                        "The listener's max_connections: client connections it holds at once before it refuses new ones.",
                    ),
                    &["listener"],
                ),
            ),
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
            connections_failed: counter_vec(
                &registry,
                "connections_failed_total",
                "Relayed connections ended by a socket error other than a reset, by the side it happened on (client, backend).",
                &["listener", "side"],
            ),
            connections_timed_out: counter_vec(
                &registry,
                "connections_timed_out_total",
                "Connections closed by a timeout: idle (no byte either way for idle_timeout), half_close (one direction ended and the other silent for half_close_timeout).",
                &["listener", "timeout"],
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
            backend_connections_active: register(
                &registry,
                IntGaugeVec::new(
                    opts(
                        "backend_connections_active",
                        "Client connections relayed to a backend server now.",
                    ),
                    &["backend", "server"],
                ),
            ),
            backend_server_info: register(
                &registry,
                IntGaugeVec::new(
                    opts(
                        "backend_server_info",
                        "Always 1; the role label says whether a backend server is a local broker (local) or a backup (static or discovered).",
                    ),
                    &["backend", "server", "role"],
                ),
            ),
            backend_server_weight: register(
                &registry,
                GaugeVec::new(
                    opts(
                        "backend_server_weight",
                        "Slow-start weight of a backend server: 1 = its full share of new connections; from 0.1 up to 1 over slowstart after it came back up. Read at scrape time.",
                    ),
                    &["backend", "server"],
                ),
            ),
            backend_connect_duration: register(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "backend_connect_duration_seconds",
                        "Time to connect to a backend server, for connects that succeeded, in seconds.",
                    )
                    .namespace("brokerside")
                    .buckets(LATENCY_BUCKETS.to_vec()),
                    &["backend"],
                ),
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
                        .buckets(LATENCY_BUCKETS.to_vec()),
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
            closed_by_reload: register(
                &registry,
                IntCounter::with_opts(opts(
                    "reload_closed_connections_total",
                    "Connections closed because a reload removed their listener (paced as the drain is).",
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
            config_reloads: counter_vec(
                &registry,
                "config_reloads_total",
                "Config reloads (SIGHUP, POST /reload, a changed file), by result (ok, error).",
                &["result"],
            ),
            config_last_reload_success: register(
                &registry,
                Gauge::with_opts(opts(
                    "config_last_reload_success_timestamp_seconds",
                    "When the running config was loaded (at start or by the last successful reload), in Unix seconds.",
                )),
            ),
            config_last_reload_successful: register(
                &registry,
                IntGauge::with_opts(opts(
                    "config_last_reload_successful",
                    "1 when the last reload (or the start) applied its config, 0 when the last reload was refused and an older config runs.",
                )),
            ),
            admin_connections: register(
                &registry,
                IntGauge::with_opts(opts(
                    "admin_connections",
                    "Connections to the admin endpoint open now.",
                )),
            ),
            admin_requests: counter_vec(
                &registry,
                "admin_requests_total",
                "Admin endpoint requests answered, by route (the path, or other) and status code.",
                &["route", "code"],
            ),
            admin_refused: counter_vec(
                &registry,
                "admin_connections_refused_total",
                "Admin connections closed at once: limit (every slot open to the caller taken), per_source (the source address holds its share).",
                &["reason"],
            ),
            admin_timeouts: counter_vec(
                &registry,
                "admin_timeouts_total",
                "Admin connections cut by a timeout: header (no complete request head in time, idle keep-alive included), write_stall (the client read nothing for the timeout).",
                &["reason"],
            ),
            tls: tls::TlsFamilies::register(&registry),
            admission: admission::AdmissionFamilies::register(&registry),
            owners: Arc::default(),
            started: SystemTime::now(),
            rates: Arc::default(),
            connections_active,
            registry,
        }
    }

    /// The TLS handles of listener `name` (its series go with the listener's).
    pub fn tls_listener(&self, name: &str) -> TlsMetrics {
        self.tls.listener(name)
    }

    /// A share of the series under `key`: the one already held, or a new one.
    fn own(&self, key: SeriesKey) -> Arc<Owner> {
        let Ok(mut owners) = self.owners.lock() else {
            // A poisoned map only means a panic elsewhere; the series then stay.
            return Arc::new(Owner {
                key,
                metrics: self.clone(),
            });
        };
        if let Some(owner) = owners.get(&key).and_then(Weak::upgrade) {
            return owner;
        }
        let owner = Arc::new(Owner {
            key: key.clone(),
            metrics: self.clone(),
        });
        owners.insert(key, Arc::downgrade(&owner));
        owner
    }

    /// Removes every series of `key` from the registry.
    fn remove_series(&self, key: &SeriesKey) {
        // `remove_label_values` fails only for series that do not exist, which is fine here.
        match key {
            SeriesKey::Listener(name) => {
                let name = name.as_str();
                let _ = self.connections_active.remove_label_values(&[name]);
                let _ = self.connections_max.remove_label_values(&[name]);
                let _ = self.connections_total.remove_label_values(&[name]);
                for reason in RefuseReason::ALL {
                    let _ = self
                        .connections_refused
                        .remove_label_values(&[name, reason.label()]);
                }
                for side in ["client", "backend"] {
                    let _ = self.connections_reset.remove_label_values(&[name, side]);
                    let _ = self.connections_failed.remove_label_values(&[name, side]);
                }
                for timeout in ["idle", "half_close"] {
                    let _ = self
                        .connections_timed_out
                        .remove_label_values(&[name, timeout]);
                }
                for direction in ["to_backend", "to_client"] {
                    let _ = self.bytes.remove_label_values(&[name, direction]);
                }
                self.tls.remove(name);
                self.admission.remove(name);
            }
            SeriesKey::Server(backend, server) => {
                let labels = [backend.as_str(), server.as_str()];
                let _ = self.backend_connect_failures.remove_label_values(&labels);
                let _ = self.backend_connections_active.remove_label_values(&labels);
                let _ = self.backend_server_weight.remove_label_values(&labels);
                for role in ROLES {
                    let _ = self
                        .backend_server_info
                        .remove_label_values(&[backend, server, role]);
                }
            }
            SeriesKey::Backend(backend) => {
                let _ = self
                    .backend_connect_duration
                    .remove_label_values(&[backend]);
            }
            SeriesKey::Check(backend, server) => {
                let labels = [backend.as_str(), server.as_str()];
                let _ = self.backend_up.remove_label_values(&labels);
                let _ = self.check_duration.remove_label_values(&labels);
                let _ = self.check_failures.remove_label_values(&labels);
            }
            SeriesKey::Source(source) => {
                let _ = self.peers.remove_label_values(&[source]);
                let _ = self.discovery_errors.remove_label_values(&[source]);
            }
        }
    }

    /// The peer-count gauge and error counter of one discovery source, created at zero.
    pub fn discovery(&self, source: &str) -> DiscoveryMetrics {
        DiscoveryMetrics {
            peers: self.peers.with_label_values(&[source]),
            errors: self.discovery_errors.with_label_values(&[source]),
            _owner: self.own(SeriesKey::Source(source.to_string())),
        }
    }

    /// Counts one reload, `ok` or not; a successful one also dates the running config.
    pub fn config_loaded(&self, ok: bool) {
        self.config_reloads
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
        if ok {
            self.config_dated();
        } else {
            self.config_last_reload_successful.set(0);
        }
    }

    /// Dates the running config now (at start, and on each successful reload).
    pub fn config_dated(&self) {
        self.config_last_reload_successful.set(1);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |since| since.as_secs_f64());
        self.config_last_reload_success.set(now);
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
            _owner: self.own(SeriesKey::Check(backend.to_string(), server.to_string())),
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

    /// The admin endpoint's own handles, every series created at zero.
    pub fn admin(&self) -> AdminMetrics {
        for reason in ["limit", "per_source"] {
            self.admin_refused.with_label_values(&[reason]);
        }
        for reason in ["header", "write_stall"] {
            self.admin_timeouts.with_label_values(&[reason]);
        }
        AdminMetrics {
            connections: self.admin_connections.clone(),
            requests: self.admin_requests.clone(),
            refused: self.admin_refused.clone(),
            timeouts: self.admin_timeouts.clone(),
        }
    }

    /// Connections closed because a reload removed their listener.
    pub fn closed_by_reload(&self) -> &IntCounter {
        &self.closed_by_reload
    }

    /// Connections closed by failback.
    pub fn moved_by_failback(&self) -> &IntCounter {
        &self.moved_by_failback
    }

    /// The handles for one listener, every series created at zero.
    pub fn listener(&self, name: &str) -> ListenerMetrics {
        ListenerMetrics {
            active: self.connections_active.with_label_values(&[name]),
            limit: self.connections_max.with_label_values(&[name]),
            total: self.connections_total.with_label_values(&[name]),
            refused: RefuseReason::ALL.map(|r| {
                self.connections_refused
                    .with_label_values(&[name, r.label()])
            }),
            reset_by_client: self.connections_reset.with_label_values(&[name, "client"]),
            reset_by_backend: self.connections_reset.with_label_values(&[name, "backend"]),
            failed_on_client: self.connections_failed.with_label_values(&[name, "client"]),
            failed_on_backend: self
                .connections_failed
                .with_label_values(&[name, "backend"]),
            idle_timeouts: self
                .connections_timed_out
                .with_label_values(&[name, "idle"]),
            half_close_timeouts: self
                .connections_timed_out
                .with_label_values(&[name, "half_close"]),
            bytes_to_backend: self.bytes.with_label_values(&[name, "to_backend"]),
            bytes_to_client: self.bytes.with_label_values(&[name, "to_client"]),
            admission: self.admission.listener(name),
            _owner: self.own(SeriesKey::Listener(name.to_string())),
        }
    }

    /// The handles of one backend server, its series created at zero; `role` (`local` or
    /// `backup`) is what its info series says.
    pub fn server(&self, backend: &str, server: &str, role: &str) -> ServerMetrics {
        // A reload that turned a backup into a local server (or back) keeps the server's
        // series: only its role changes.
        for other in ROLES.into_iter().filter(|other| *other != role) {
            let _ = self
                .backend_server_info
                .remove_label_values(&[backend, server, other]);
        }
        self.backend_server_info
            .with_label_values(&[backend, server, role])
            .set(1);
        ServerMetrics {
            connect_failures: self
                .backend_connect_failures
                .with_label_values(&[backend, server]),
            active: self
                .backend_connections_active
                .with_label_values(&[backend, server]),
            weight: {
                let weight = self
                    .backend_server_weight
                    .with_label_values(&[backend, server]);
                weight.set(1.0);
                weight
            },
            _owner: self.own(SeriesKey::Server(backend.to_string(), server.to_string())),
        }
    }

    /// The connect-latency histogram of one backend, its series created empty.
    pub fn backend(&self, backend: &str) -> BackendMetrics {
        BackendMetrics {
            connect_duration: self.backend_connect_duration.with_label_values(&[backend]),
            _owner: self.own(SeriesKey::Backend(backend.to_string())),
        }
    }

    /// New connections per second by listener, for the status page.
    pub fn connection_rates(&self) -> &RateMeter {
        &self.rates
    }

    /// When this registry was made: the sidecar's start.
    pub fn started_at(&self) -> SystemTime {
        self.started
    }

    /// Failed refreshes of discovery source `source` so far; `None` when it has no series (yet).
    /// Reads without creating a series, so a source that is gone does not come back.
    pub fn discovery_errors_of(&self, source: &str) -> Option<u64> {
        self.discovery_errors
            .collect()
            .iter()
            .flat_map(|family| family.get_metric())
            .find(|metric| {
                metric
                    .get_label()
                    .iter()
                    .any(|label| label.name() == "source" && label.value() == source)
            })
            .map(|metric| metric.get_counter().get_value() as u64)
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

    #[test]
    fn rates_need_two_reads_a_second_apart() {
        let meter = RateMeter::default();
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        assert_eq!(meter.rate_at("mqtt", 100, at(0)), None);
        assert_eq!(meter.rate_at("mqtt", 150, at(500)), None, "too soon");
        assert_eq!(meter.rate_at("mqtt", 300, at(2_000)), Some(100.0));
        assert_eq!(meter.rate_at("mqtt", 900, at(2_500)), Some(100.0), "kept");
        assert_eq!(
            meter.rate_at("mqtt", 5, at(4_000)),
            None,
            "counter restarted"
        );
        meter.retain(|key| key != "mqtt");
        assert_eq!(meter.rate_at("mqtt", 5, at(9_000)), None, "forgotten");
    }

    #[test]
    fn discovery_errors_are_read_without_creating_series() {
        let metrics = Metrics::new();
        assert_eq!(metrics.discovery_errors_of("dns"), None);
        assert!(!metrics.render().contains("source=\"dns\""));
        let handles = metrics.discovery("dns");
        handles.errors.inc();
        assert_eq!(metrics.discovery_errors_of("dns"), Some(1));
    }

    #[test]
    fn series_go_with_their_last_owner() {
        let metrics = Metrics::new();
        let up = "brokerside_backend_up{backend=\"b\",server=\"10.0.0.5:1883\"}";
        let first = metrics.check("b", "10.0.0.5:1883");
        first.up.set(1);
        let second = metrics.check("b", "10.0.0.5:1883");
        drop(first);
        assert!(
            metrics.render().contains(&format!("{up} 1")),
            "kept while shared"
        );
        drop(second);
        assert!(
            !metrics.render().contains(up),
            "removed with the last share"
        );

        // Taken again afterwards: the series comes back, from zero.
        let again = metrics.check("b", "10.0.0.5:1883");
        assert!(metrics.render().contains(&format!("{up} 0")));
        drop(again);

        let listener = metrics.listener("gone");
        listener.refused(RefuseReason::Limit);
        drop(listener);
        let text = metrics.render();
        assert!(!text.contains("listener=\"gone\""), "{text}");
    }
}
