//! What the admin endpoint reads: listeners, backends with their health, the drain, the
//! cluster view and the metrics. Built once at start-up from the pieces that own the state;
//! nothing here reaches back into the proxy.

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus::IntGauge;

use crate::backend::Backend;
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
    /// The cluster view.
    pub clustering: Clustering,
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
        if self.clustering.enabled && self.clustering.partitioned {
            return Err("partitioned".to_string());
        }
        Ok(())
    }
}
