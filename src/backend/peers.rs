//! Discovered peers as backup servers: keeps a backend's [`PeerList`], and a checker per peer,
//! in step with its discovery source. A peer that stays keeps its server (and so its health state
//! and open connections); one that leaves loses its checker and its series; a new one starts
//! down until it passes its checks, like any checked server. A sync restarted by a reload takes
//! over the list as it is: peers that stay keep their state, and get a checker with the new
//! settings.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use super::{PeerList, Role, Server};
use crate::config::{BackendConfig, CheckConfig, ProxyProtocol};
use crate::discovery::Source;
use crate::health::{CheckTarget, ServerHealth, spawn_checker};
use crate::metrics::Metrics;
use crate::task::Task;

/// What a backend's peer sync follows, as plain data: a reload compares these to tell whether
/// the sync must restart.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerSettings {
    /// The backend's name.
    pub backend: String,
    /// The discovery source's name.
    pub source: String,
    /// The peers' port for this backend; `None` = the port discovery found.
    pub peer_port: Option<u16>,
    /// The backend's configured servers: a peer at one of these addresses is already served.
    pub configured: Vec<SocketAddr>,
    /// The backend's check, which its peers get too.
    pub check: Option<CheckConfig>,
    /// The PROXY header the backend's probes send.
    pub proxy: ProxyProtocol,
}

impl PeerSettings {
    /// The settings of `backend`'s peer sync; `None` when it takes no peers.
    pub fn of(backend: &BackendConfig) -> Option<PeerSettings> {
        Some(PeerSettings {
            backend: backend.name.clone(),
            source: backend.peers.clone()?,
            peer_port: backend.peer_port,
            configured: backend
                .servers
                .iter()
                .chain(&backend.backup)
                .copied()
                .collect(),
            check: backend.check.clone(),
            proxy: backend.proxy_protocol,
        })
    }
}

/// Follows `source` into `peers` until the returned [`Task`] is dropped.
pub fn spawn_peer_sync(
    settings: PeerSettings,
    source: Arc<Source>,
    peers: Arc<PeerList>,
    metrics: Metrics,
) -> Task {
    Task::spawn(async move {
        let mut changes = source.subscribe();
        // Dropped with the task: every peer checker stops with it.
        let mut checkers: HashMap<SocketAddr, Task> = HashMap::new();
        loop {
            sync(&settings, &source, &peers, &metrics, &mut checkers);
            if changes.changed().await.is_err() {
                break;
            }
        }
    })
}

/// One step: the backend's peers become the source's current set.
fn sync(
    settings: &PeerSettings,
    source: &Source,
    peers: &PeerList,
    metrics: &Metrics,
    checkers: &mut HashMap<SocketAddr, Task>,
) {
    let set = source.peers();
    let current = peers.load_full();
    let checked = settings.check.is_some();
    let mut next: Vec<Arc<Server>> = Vec::with_capacity(set.peers.len());
    for peer in &set.peers {
        let addr = SocketAddr::new(peer.ip, settings.peer_port.unwrap_or(peer.port));
        // A peer that is also configured (the local broker's own address, or a static backup)
        // is already served and checked as configured.
        if settings.configured.contains(&addr) || next.iter().any(|s| s.addr == addr) {
            continue;
        }
        // A server checked under other settings keeps its state; one whose checks were turned
        // on or off starts afresh.
        let kept = current
            .iter()
            .find(|s| s.addr == addr && s.health.report().checked == checked);
        let server = match kept {
            Some(kept) => Arc::clone(kept),
            None => {
                tracing::info!(backend = %settings.backend, peer = %addr, node = %peer.node, "peer joined as a backup");
                Arc::new(Server::new(
                    &settings.backend,
                    addr,
                    Role::Backup,
                    Arc::new(ServerHealth::fresh(checked)),
                    metrics,
                ))
            }
        };
        if let Some(check) = &settings.check
            && !checkers.contains_key(&addr)
        {
            let target = CheckTarget {
                backend: settings.backend.clone(),
                server: addr,
                check: check.clone(),
                proxy: settings.proxy,
            };
            checkers.insert(
                addr,
                spawn_checker(target, Arc::clone(&server.health), metrics),
            );
        }
        next.push(server);
    }
    for gone in current
        .iter()
        .filter(|s| !next.iter().any(|n| n.addr == s.addr))
    {
        tracing::info!(backend = %settings.backend, peer = %gone.addr, "peer left");
    }
    checkers.retain(|addr, _| next.iter().any(|s| s.addr == *addr));
    peers.store(Arc::new(next));
}
