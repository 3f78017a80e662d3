//! Test helpers: a runtime built from a config without binding anything.

use std::collections::HashMap;
use std::time::SystemTime;

use super::{ListenerId, ListenerSocket, Loaded, Runtime, Secrets};
use crate::config::Config;
use crate::metrics::Metrics;

/// The runtime of `config`, each listener given an identity and its configured address as if
/// bound there, no secrets, no file.
pub(crate) fn unbound_runtime(config: Config, metrics: &Metrics) -> Runtime {
    unbound_runtime_with(config, metrics, Secrets::default())
}

/// As [`unbound_runtime`], with `secrets`.
pub(crate) fn unbound_runtime_with(config: Config, metrics: &Metrics, secrets: Secrets) -> Runtime {
    let listeners: HashMap<String, ListenerSocket> = config
        .listeners
        .iter()
        .enumerate()
        .map(|(i, listener)| {
            let socket = ListenerSocket {
                id: ListenerId(u32::try_from(i).unwrap_or(u32::MAX)),
                addr: listener.listen,
                metrics: metrics.listener(&listener.name),
            };
            (listener.name.clone(), socket)
        })
        .collect();
    let loaded = Loaded {
        at: SystemTime::now(),
        file: None,
        sha256: None,
    };
    Runtime::build(config, None, &listeners, secrets, loaded, metrics)
}
