//! What the admin endpoint reads: the runtime snapshot (listeners, backends with their health,
//! discovery sources), the drain, the cluster view and the metrics, and the handle that asks
//! for a reload. Nothing here reaches back into the proxy.

use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::cluster::Clustering;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::runtime::{Reloader, Runtime, Secrets};
use crate::shutdown::DrainControl;

/// Everything the admin endpoint reads.
pub struct SidecarState {
    /// The running runtime snapshot: listeners, backends, sources, secrets, its config.
    pub runtime: Arc<ArcSwap<Runtime>>,
    /// The drain.
    pub drain: Arc<DrainControl>,
    /// The metric registry.
    pub metrics: Metrics,
    /// The cluster view, written by the cluster guard.
    pub clustering: Arc<ArcSwap<Clustering>>,
    /// Asks for a reload (`POST /reload`).
    pub reloader: Reloader,
}

impl SidecarState {
    /// The state of `config` as if bound at its configured addresses, nothing running: no
    /// listener, probe, discovery or controller. Every server is not yet checked, the cluster
    /// view is empty, and nothing answers reloads (`POST /reload` reports the sidecar stopped).
    /// For tools and fuzzing, which need what the admin endpoint reads without a sidecar.
    pub fn offline(config: Config, secrets: Secrets) -> SidecarState {
        let metrics = Metrics::new();
        let runtime = Runtime::unbound(config, &metrics, secrets);
        // Dropping the receiving end is what makes a reload request answer "stopped".
        let (reloader, _requests) = Reloader::new();
        SidecarState {
            runtime: Arc::new(ArcSwap::from_pointee(runtime)),
            drain: Arc::new(DrainControl::default()),
            metrics,
            clustering: Arc::default(),
            reloader,
        }
    }

    /// `Ok` when this node should receive clients: not draining and every backend that a
    /// listener uses has its local broker up. Otherwise one line saying why.
    pub fn readiness(&self) -> Result<(), String> {
        if self.drain.is_draining() {
            return Err("draining".to_string());
        }
        let runtime = self.runtime.load();
        runtime.readiness()?;
        let clustering = self.clustering.load();
        if runtime.config.cluster.fail_health_when_partitioned
            && clustering.enabled
            && clustering.partitioned
        {
            return Err(format!(
                "partitioned: the broker sees {} of {} expected nodes, quorum is {}",
                clustering.node_count, clustering.expected_nodes, clustering.quorum
            ));
        }
        Ok(())
    }

    /// Every discovered peer with its health, for `/peers`.
    pub fn peers(&self) -> Vec<PeerView> {
        let runtime = self.runtime.load();
        let mut views = Vec::new();
        for source in &runtime.sources {
            let set = source.peers();
            for peer in &set.peers {
                views.push(PeerView {
                    ip: peer.ip,
                    port: peer.port,
                    node: peer.node.clone(),
                    source: source.name.clone(),
                    healthy: peer_healthy(&runtime, &source.name, peer.ip),
                });
            }
        }
        views
    }
}

/// Whether a peer passes the checks of the backends that use its source: `None` when no backend
/// checks it.
fn peer_healthy(runtime: &Runtime, source: &str, ip: IpAddr) -> Option<bool> {
    let mut seen = None;
    for backend in runtime
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
