//! The TLS series of terminating listeners: handshakes by version, failed handshakes by bounded
//! reason, each configured certificate's expiry, and reloads of the material.

use std::sync::{Arc, Mutex};

use prometheus::core::Collector;
use prometheus::{IntCounterVec, IntGaugeVec, Registry};

use super::{counter_vec, opts, register};
use crate::tls::CertificateInfo;

/// Why a TLS handshake failed: a bounded set, so the label cannot grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// A client certificate is required and none was sent.
    NoCertificate,
    /// The client certificate does not verify (unknown CA, wrong usage, bad signature).
    BadCertificate,
    /// The client certificate is on a revocation list.
    Revoked,
    /// The client certificate has expired (or is not yet valid).
    Expired,
    /// Anything else the TLS protocol refused: garbage, no shared version or cipher suite.
    Protocol,
    /// The handshake did not finish within `handshake_timeout`.
    Timeout,
    /// The client closed (or reset) the connection during the handshake.
    Eof,
}

impl HandshakeFailure {
    /// Every reason, for pre-creating the series.
    pub const ALL: [HandshakeFailure; 7] = [
        HandshakeFailure::NoCertificate,
        HandshakeFailure::BadCertificate,
        HandshakeFailure::Revoked,
        HandshakeFailure::Expired,
        HandshakeFailure::Protocol,
        HandshakeFailure::Timeout,
        HandshakeFailure::Eof,
    ];

    /// The `reason` label value.
    pub fn label(self) -> &'static str {
        match self {
            HandshakeFailure::NoCertificate => "no_certificate",
            HandshakeFailure::BadCertificate => "bad_certificate",
            HandshakeFailure::Revoked => "revoked",
            HandshakeFailure::Expired => "expired",
            HandshakeFailure::Protocol => "protocol",
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::Eof => "eof",
        }
    }

    /// The reason a rustls error stands for.
    pub fn of(error: &rustls::Error) -> HandshakeFailure {
        use rustls::CertificateError;
        match error {
            rustls::Error::NoCertificatesPresented => HandshakeFailure::NoCertificate,
            rustls::Error::InvalidCertificate(CertificateError::Revoked) => {
                HandshakeFailure::Revoked
            }
            rustls::Error::InvalidCertificate(
                CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. },
            ) => HandshakeFailure::Expired,
            rustls::Error::InvalidCertificate(_) => HandshakeFailure::BadCertificate,
            _ => HandshakeFailure::Protocol,
        }
    }
}

/// The TLS metric families.
#[derive(Clone)]
pub(super) struct TlsFamilies {
    handshakes: IntCounterVec,
    resumed: IntCounterVec,
    failures: IntCounterVec,
    expiry: IntGaugeVec,
    reloads: IntCounterVec,
}

const VERSIONS: [&str; 2] = ["1.2", "1.3"];

impl TlsFamilies {
    pub(super) fn register(registry: &Registry) -> TlsFamilies {
        TlsFamilies {
            handshakes: counter_vec(
                registry,
                "tls_handshakes_total",
                "TLS handshakes completed, by protocol version (1.2, 1.3).",
                &["listener", "version"],
            ),
            resumed: counter_vec(
                registry,
                "tls_resumed_handshakes_total",
                "TLS handshakes completed that resumed a session with a ticket (session_tickets), also counted in tls_handshakes_total.",
                &["listener"],
            ),
            failures: counter_vec(
                registry,
                "tls_handshake_errors_total",
                "TLS handshakes that failed, by reason (no_certificate, bad_certificate, revoked, expired, protocol, timeout, eof).",
                &["listener", "reason"],
            ),
            expiry: register(
                registry,
                IntGaugeVec::new(
                    opts(
                        "tls_certificate_expiry_timestamp_seconds",
                        "When each configured certificate expires (its notAfter), in Unix seconds; certificate = its file.",
                    ),
                    &["listener", "certificate"],
                ),
            ),
            reloads: counter_vec(
                registry,
                "tls_reloads_total",
                "TLS material read again because its files changed, by result (ok, error: the old material stays).",
                &["listener", "result"],
            ),
        }
    }

    /// The handles of listener `name`, every series created at zero.
    pub(super) fn listener(&self, name: &str) -> TlsMetrics {
        let per = |vec: &IntCounterVec, values: &[&str]| {
            values
                .iter()
                .map(|v| vec.with_label_values(&[name, v]))
                .collect::<Vec<_>>()
        };
        let reasons: Vec<&str> = HandshakeFailure::ALL.iter().map(|r| r.label()).collect();
        TlsMetrics {
            listener: name.to_string(),
            handshakes: per(&self.handshakes, &VERSIONS),
            resumed: self.resumed.with_label_values(&[name]),
            failures: per(&self.failures, &reasons),
            reloads: per(&self.reloads, &["ok", "error"]),
            expiry: self.expiry.clone(),
            certificates: Arc::default(),
        }
    }

    /// Removes every series of listener `name`.
    pub(super) fn remove(&self, name: &str) {
        for version in VERSIONS {
            let _ = self.handshakes.remove_label_values(&[name, version]);
        }
        let _ = self.resumed.remove_label_values(&[name]);
        for reason in HandshakeFailure::ALL {
            let _ = self.failures.remove_label_values(&[name, reason.label()]);
        }
        for result in ["ok", "error"] {
            let _ = self.reloads.remove_label_values(&[name, result]);
        }
        let certificates: Vec<String> = self
            .expiry
            .collect()
            .iter()
            .flat_map(|family| family.get_metric())
            .filter_map(|metric| {
                let label = |key: &str| {
                    metric
                        .get_label()
                        .iter()
                        .find(|pair| pair.name() == key)
                        .map(|pair| pair.value().to_string())
                };
                (label("listener").as_deref() == Some(name)).then(|| label("certificate"))?
            })
            .collect();
        for certificate in certificates {
            let _ = self.expiry.remove_label_values(&[name, &certificate]);
        }
    }
}

/// One TLS listener's handles.
#[derive(Clone, Debug)]
pub struct TlsMetrics {
    listener: String,
    handshakes: Vec<prometheus::IntCounter>,
    resumed: prometheus::IntCounter,
    failures: Vec<prometheus::IntCounter>,
    reloads: Vec<prometheus::IntCounter>,
    expiry: IntGaugeVec,
    /// The certificate labels set now, so that one no longer configured loses its series.
    certificates: Arc<Mutex<Vec<String>>>,
}

impl TlsMetrics {
    /// Counts a completed handshake, and whether it resumed a session.
    pub fn handshake(&self, version: Option<rustls::ProtocolVersion>, resumed: bool) {
        let index = usize::from(version != Some(rustls::ProtocolVersion::TLSv1_2));
        self.handshakes[index].inc();
        if resumed {
            self.resumed.inc();
        }
    }

    /// Counts a failed handshake.
    pub fn failed(&self, reason: HandshakeFailure) {
        self.failures[reason as usize].inc();
    }

    /// Counts a re-read of the material.
    pub fn reloaded(&self, ok: bool) {
        self.reloads[usize::from(!ok)].inc();
    }

    /// Handshakes completed with `version` (`1.2`, `1.3`), for tests and the status page.
    pub fn handshakes(&self, version: &str) -> u64 {
        VERSIONS
            .iter()
            .position(|v| *v == version)
            .map_or(0, |i| self.handshakes[i].get())
    }

    /// Failed handshakes counted for `reason`.
    pub fn failures(&self, reason: HandshakeFailure) -> u64 {
        self.failures[reason as usize].get()
    }

    /// Sets the expiry series to `certificates`, removing those of certificates now gone.
    pub(crate) fn certificates(&self, certificates: &[CertificateInfo]) {
        let Ok(mut current) = self.certificates.lock() else {
            return;
        };
        let next: Vec<String> = certificates.iter().map(|c| c.label.clone()).collect();
        for gone in current.iter().filter(|label| !next.contains(label)) {
            let _ = self
                .expiry
                .remove_label_values(&[self.listener.as_str(), gone.as_str()]);
        }
        for certificate in certificates {
            self.expiry
                .with_label_values(&[self.listener.as_str(), certificate.label.as_str()])
                .set(certificate.not_after);
        }
        *current = next;
    }
}
