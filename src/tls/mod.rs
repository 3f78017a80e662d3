//! TLS termination's material: each TLS listener's certificates, keys, client CA and revocation
//! lists, read and checked ([`material`]), chosen by SNI ([`resolver`]), and held by a
//! [`Terminator`] whose material is swapped whole when the files change or a reload re-reads
//! them: new handshakes take the new material, open connections keep what they started with.
//! The handshake and the relay of a terminated connection live with the rest of the relay
//! (`proxy/tls.rs`); after the handshake, the relay's records are opened and sealed by
//! [`record`].

pub mod material;
pub mod record;
mod resolver;
#[doc(hidden)]
pub mod testing;
pub mod watch;

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{Config, ConfigError, TlsConfig};
use crate::metrics::TlsMetrics;
pub use material::{CertificateInfo, TlsMaterial, Warning};

/// Every TLS listener's material by listener name, and the warnings loading gave.
pub type Loaded = (HashMap<String, Arc<TlsMaterial>>, Vec<Warning>);

/// Loads the TLS material of every listener of `config` that terminates TLS, by listener name;
/// every problem names its field. Warnings (a certificate that expires soon) come back beside.
pub fn load_listeners(config: &Config) -> Result<Loaded, Vec<ConfigError>> {
    let mut loaded = HashMap::new();
    let mut warnings = Vec::new();
    let mut problems = Vec::new();
    for (i, listener) in config.listeners.iter().enumerate() {
        let Some(tls) = &listener.tls else { continue };
        match material::load(tls, &format!("listener[{i}].tls")) {
            Ok((material, more)) => {
                warnings.extend(more);
                loaded.insert(listener.name.clone(), Arc::new(material));
            }
            Err(more) => problems.extend(more),
        }
    }
    if problems.is_empty() {
        Ok((loaded, warnings))
    } else {
        Err(problems)
    }
}

/// One listener's TLS: its settings and the material new handshakes use. Kept by a reload that
/// leaves the listener's `[listener.tls]` as it was, so the file watcher that holds it follows
/// the listener across reloads.
#[derive(Debug)]
pub struct Terminator {
    /// The listener's name.
    pub listener: String,
    /// `[listener.tls]` as configured.
    pub config: TlsConfig,
    material: ArcSwap<TlsMaterial>,
    /// The listener's TLS series.
    pub metrics: TlsMetrics,
}

impl Terminator {
    /// A terminator serving `material`.
    pub fn new(
        listener: &str,
        config: TlsConfig,
        material: Arc<TlsMaterial>,
        metrics: TlsMetrics,
    ) -> Terminator {
        metrics.certificates(&material.certificates);
        Terminator {
            listener: listener.to_string(),
            config,
            material: ArcSwap::new(material),
            metrics,
        }
    }

    /// The material new handshakes use now.
    pub fn material(&self) -> Arc<TlsMaterial> {
        self.material.load_full()
    }

    /// Serves `material` to new handshakes from now on; open connections are untouched.
    /// Material read from the same files as the one served is not installed: the one served
    /// stays, and with it the ticket keys of the sessions it issued.
    pub fn install(&self, material: Arc<TlsMaterial>) {
        if *self.material.load_full() == *material {
            return;
        }
        self.metrics.certificates(&material.certificates);
        self.material.store(material);
    }
}
