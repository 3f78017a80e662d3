//! What the admin endpoint reads: listeners, backends with their health, the drain, the
//! cluster view and the metrics. Built once at start-up from the pieces that own the state;
//! nothing here reaches back into the proxy.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use arc_swap::ArcSwap;
use prometheus::IntGauge;

use crate::backend::Backend;
use crate::discovery::Source;
use crate::metrics::Metrics;
use crate::shutdown::DrainControl;

/// One listener as `/health` shows it.
#[derive(Debug, Clone)]
pub struct ListenerView {
    /// Its name.
    pub name: String,
    /// The address it is bound to.
    pub addr: SocketAddr,
    /// The backend it relays to.
    pub backend: String,
    /// Connections open now.
    pub active: IntGauge,
}

/// The `clustering` block of `/health`. Static until peer discovery and the cluster guard fill it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Clustering {
    /// Whether a cluster guard runs.
    pub enabled: bool,
    /// This node's name (e.g. `emqx@10.0.0.5`), empty when unknown.
    pub current_node: String,
    /// Nodes the broker reports as running.
    pub connected_nodes: Vec<String>,
    /// How many of them.
    pub node_count: usize,
    /// This node plus discovered peers.
    pub expected_nodes: usize,
    /// floor(expected / 2) + 1.
    pub quorum: usize,
    /// Whether this node sees fewer than a quorum.
    pub partitioned: bool,
}

/// Everything the admin endpoint reads.
pub struct SidecarState {
    /// Listeners in config order.
    pub listeners: Vec<ListenerView>,
    /// Backends in config order.
    pub backends: Vec<Arc<Backend>>,
    /// The drain.
    pub drain: Arc<DrainControl>,
    /// The metric registry.
    pub metrics: Metrics,
    /// The cluster view, written by the cluster guard.
    pub clustering: Arc<ArcSwap<Clustering>>,
    /// Whether a partition makes this node report not ready.
    pub fail_when_partitioned: bool,
    /// The discovery sources.
    pub sources: Vec<Arc<Source>>,
    /// The token that allows `POST /drain` from other hosts, if one is configured.
    pub drain_token: Option<String>,
}

impl SidecarState {
    /// `Ok` when this node should receive clients: not draining and every backend that a
    /// listener uses has its local broker up. Otherwise one line saying why.
    pub fn readiness(&self) -> Result<(), String> {
        if self.drain.is_draining() {
            return Err("draining".to_string());
        }
        for backend in &self.backends {
            let used = self.listeners.iter().any(|l| l.backend == backend.name);
            if used {
                backend.readiness()?;
            }
        }
        let clustering = self.clustering.load();
        if self.fail_when_partitioned && clustering.enabled && clustering.partitioned {
            return Err(format!(
                "partitioned: the broker sees {} of {} expected nodes, quorum is {}",
                clustering.node_count, clustering.expected_nodes, clustering.quorum
            ));
        }
        Ok(())
    }

    /// Every discovered peer with its health, for `/peers`.
    pub fn peers(&self) -> Vec<PeerView> {
        let mut views = Vec::new();
        for source in &self.sources {
            let set = source.peers();
            for peer in &set.peers {
                views.push(PeerView {
                    ip: peer.ip,
                    port: peer.port,
                    node: peer.node.clone(),
                    source: source.name.clone(),
                    healthy: self.peer_healthy(&source.name, peer.ip),
                });
            }
        }
        views
    }

    /// Whether a peer passes the checks of the backends that use its source: `None` when no
    /// backend checks it.
    fn peer_healthy(&self, source: &str, ip: IpAddr) -> Option<bool> {
        let mut seen = None;
        for backend in self
            .backends
            .iter()
            .filter(|b| b.peer_source.as_deref() == Some(source))
        {
            for server in backend.peers.load().iter().filter(|s| s.addr.ip() == ip) {
                if server.health.report().checked {
                    let up = server.health.is_up();
                    seen = Some(seen.unwrap_or(false) || up);
                }
            }
        }
        seen
    }
}

/// One discovered peer as `/peers` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerView {
    /// Its address.
    pub ip: IpAddr,
    /// Its port as discovered.
    pub port: u16,
    /// Its node name, e.g. `emqx@10.0.0.5`.
    pub node: String,
    /// The source that found it.
    pub source: String,
    /// Whether it passes its health checks; `None` when nothing checks it.
    pub healthy: Option<bool>,
}
