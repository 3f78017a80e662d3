//! Discovered peers as backup servers: keeps each backend's `peers` list, and a checker per
//! peer, in step with its discovery source. A peer that stays keeps its server (and so its
//! health state and open connections); one that leaves loses its checker; a new one starts
//! down until it passes its checks, like any checked server.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::task::JoinHandle;

use super::checker::spawn_checker;
use crate::backend::{Backend, Role, Server};
use crate::discovery::Source;
use crate::metrics::Metrics;

/// Follows `source` for `backend` until aborted.
pub fn spawn_peer_sync(
    backend: Arc<Backend>,
    source: Arc<Source>,
    metrics: Metrics,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut changes = source.subscribe();
        let mut checkers: HashMap<SocketAddr, Option<JoinHandle<()>>> = HashMap::new();
        loop {
            sync(&backend, &source, &metrics, &mut checkers);
            if changes.changed().await.is_err() {
                break;
            }
        }
        for checker in checkers.into_values().flatten() {
            checker.abort();
        }
    })
}

/// One step: the backend's peers become the source's current set.
fn sync(
    backend: &Backend,
    source: &Source,
    metrics: &Metrics,
    checkers: &mut HashMap<SocketAddr, Option<JoinHandle<()>>>,
) {
    let set = source.peers();
    let current = backend.peers.load_full();
    let configured: Vec<SocketAddr> = backend.servers.iter().map(|s| s.addr).collect();
    let mut next: Vec<Arc<Server>> = Vec::with_capacity(set.peers.len());
    for peer in &set.peers {
        let addr = SocketAddr::new(peer.ip, backend.peer_port.unwrap_or(peer.port));
        // A peer that is also configured (the local broker's own address, or a static backup)
        // is already served and checked as configured.
        if configured.contains(&addr) || next.iter().any(|s| s.addr == addr) {
            continue;
        }
        match current.iter().find(|s| s.addr == addr) {
            Some(kept) => next.push(Arc::clone(kept)),
            None => {
                let server = Arc::new(Server::new(
                    &backend.name,
                    addr,
                    Role::Backup,
                    backend.check.is_some(),
                    metrics,
                ));
                checkers.insert(addr, spawn_checker(backend, &server, metrics));
                tracing::info!(backend = %backend.name, peer = %addr, node = %peer.node, "peer joined as a backup");
                next.push(server);
            }
        }
    }
    checkers.retain(|addr, checker| {
        let keep = next.iter().any(|s| s.addr == *addr);
        if !keep {
            tracing::info!(backend = %backend.name, peer = %addr, "peer left");
            if let Some(checker) = checker.take() {
                checker.abort();
            }
        }
        keep
    });
    backend.peers.store(Arc::new(next));
}
