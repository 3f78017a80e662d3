//! The admission-pacing series of every listener: clients held now, how long admitted clients
//! were held, clients let through, and clients closed instead of held (by reason). Created for
//! every listener, paced or not, so that dashboards and alerts find them from the start.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Registry,
};

use super::{counter_vec, opts, register};

/// Why a client was closed instead of held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShedReason {
    /// `admission_queue` clients were held already.
    QueueFull,
    /// Its turn would come (or came) after `admission_timeout`.
    Timeout,
}

impl ShedReason {
    /// Every reason, for pre-creating the series.
    pub const ALL: [ShedReason; 2] = [ShedReason::QueueFull, ShedReason::Timeout];

    /// The `reason` label value.
    pub fn label(self) -> &'static str {
        match self {
            ShedReason::QueueFull => "queue_full",
            ShedReason::Timeout => "timeout",
        }
    }
}

/// Hold times in seconds: a few milliseconds of spacing up to the 20 s default timeout.
const WAIT_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0,
];

/// The admission metric families.
#[derive(Clone)]
pub(super) struct AdmissionFamilies {
    queue: IntGaugeVec,
    wait: HistogramVec,
    admitted: IntCounterVec,
    shed: IntCounterVec,
}

impl AdmissionFamilies {
    pub(super) fn register(registry: &Registry) -> AdmissionFamilies {
        AdmissionFamilies {
            queue: register(
                registry,
                IntGaugeVec::new(
                    opts(
                        "admission_queue",
                        "Clients accepted and held now by admission pacing (max_connection_rate), waiting for their turn.",
                    ),
                    &["listener"],
                ),
            ),
            wait: register(
                registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "admission_wait_seconds",
                        "How long each client a paced listener let through was held first (0 within the burst), in seconds.",
                    )
                    .namespace("brokerside")
                    .buckets(WAIT_BUCKETS.to_vec()),
                    &["listener"],
                ),
            ),
            admitted: counter_vec(
                registry,
                "admission_admitted_total",
                "Clients a paced listener let through to the set-up (TLS, backend connect), held or not.",
                &["listener"],
            ),
            shed: counter_vec(
                registry,
                "admission_shed_total",
                "Clients a paced listener closed quietly (FIN, no CONNACK) instead of holding them, by reason (queue_full, timeout).",
                &["listener", "reason"],
            ),
        }
    }

    /// The handles of listener `name`, every series created at zero.
    pub(super) fn listener(&self, name: &str) -> AdmissionMetrics {
        AdmissionMetrics {
            queued: self.queue.with_label_values(&[name]),
            wait: self.wait.with_label_values(&[name]),
            admitted: self.admitted.with_label_values(&[name]),
            shed: ShedReason::ALL.map(|r| self.shed.with_label_values(&[name, r.label()])),
        }
    }

    /// Removes every series of listener `name`.
    pub(super) fn remove(&self, name: &str) {
        let _ = self.queue.remove_label_values(&[name]);
        let _ = self.wait.remove_label_values(&[name]);
        let _ = self.admitted.remove_label_values(&[name]);
        for reason in ShedReason::ALL {
            let _ = self.shed.remove_label_values(&[name, reason.label()]);
        }
    }
}

/// One listener's admission handles.
#[derive(Clone, Debug)]
pub struct AdmissionMetrics {
    /// Clients held now.
    pub queued: IntGauge,
    /// Hold times of the clients let through.
    pub wait: Histogram,
    /// Clients let through.
    pub admitted: IntCounter,
    shed: [IntCounter; 2],
}

impl AdmissionMetrics {
    /// Counts one client closed instead of held.
    pub fn shed(&self, reason: ShedReason) {
        self.shed[reason as usize].inc();
    }

    /// Clients closed for `reason` so far.
    pub fn shed_count(&self, reason: ShedReason) -> u64 {
        self.shed[reason as usize].get()
    }
}
