//! Test helpers: a runtime built from a config without binding anything.

use super::{Runtime, Secrets};
use crate::config::Config;
use crate::metrics::Metrics;

/// The runtime of `config`, each listener given an identity and its configured address as if
/// bound there, no secrets, no file.
pub(crate) fn unbound_runtime(config: Config, metrics: &Metrics) -> Runtime {
    unbound_runtime_with(config, metrics, Secrets::default())
}

/// As [`unbound_runtime`], with `secrets`.
pub(crate) fn unbound_runtime_with(config: Config, metrics: &Metrics, secrets: Secrets) -> Runtime {
    Runtime::unbound(config, metrics, secrets)
}
