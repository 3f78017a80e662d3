//! The whole sidecar assembled from its parts: the relay's listeners, the health checkers, the
//! admin endpoint and the drain. Binding is separate from running so that every port is known
//! (and every bind error reported) before anything serves, and so tests can bind port 0.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{Config, TokenSource};
use crate::discovery::Discovery;
use crate::metrics::Metrics;
use crate::proxy::{BindError, Proxy, Stopped};
use crate::shutdown::DrainControl;
use crate::state::{Clustering, SidecarState};
use crate::{admin, cluster, health};

/// Backlog of the admin listener: a handful of probes and scrapes at once.
const ADMIN_BACKLOG: u32 = 128;

/// Why the sidecar could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A port could not be opened.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The drain token could not be read.
    #[error("admin.drain_token: {0}")]
    Token(String),
}

/// A sidecar with every port bound, ready to run.
pub struct Sidecar {
    config: Config,
    discovery: Discovery,
    proxy: Proxy,
    admin: std::net::TcpListener,
    admin_addr: SocketAddr,
    state: Arc<SidecarState>,
}

impl Sidecar {
    /// Binds every listener and the admin endpoint, and reads the drain token.
    pub fn bind(config: Config) -> Result<Sidecar, StartError> {
        let metrics = Metrics::new();
        let proxy = Proxy::bind(&config, &metrics)?;
        let admin = crate::proxy::listen("admin", config.admin.listen, ADMIN_BACKLOG)?;
        let admin_addr = admin.local_addr().unwrap_or(config.admin.listen);
        let drain_token = config
            .admin
            .drain_token
            .as_ref()
            .map(TokenSource::read)
            .transpose()
            .map_err(StartError::Token)?;
        if drain_token.as_deref() == Some("") {
            return Err(StartError::Token("the token is empty".to_string()));
        }
        let discovery = Discovery::new(&config.discovery, &config.node);
        let state = Arc::new(SidecarState {
            listeners: proxy.listener_views(),
            backends: proxy.backends().to_vec(),
            drain: Arc::new(DrainControl::default()),
            metrics,
            // The guard fills in the rest when it runs; the node's own name is known now.
            clustering: Arc::new(ArcSwap::from_pointee(Clustering {
                current_node: discovery.current_node(),
                ..Clustering::default()
            })),
            fail_when_partitioned: config.cluster.fail_health_when_partitioned,
            sources: discovery.sources().to_vec(),
            drain_token,
        });
        Ok(Sidecar {
            discovery,
            config,
            proxy,
            admin,
            admin_addr,
            state,
        })
    }

    /// The address a listener is bound to.
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.proxy.local_addr(name)
    }

    /// The admin endpoint's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The drain switch: `start` it to drain (signals and `POST /drain` do).
    pub fn drain(&self) -> Arc<DrainControl> {
        Arc::clone(&self.state.drain)
    }

    /// The metrics.
    pub fn metrics(&self) -> Metrics {
        self.state.metrics.clone()
    }

    /// This node's name as discovery and the cluster guard use it.
    pub fn current_node(&self) -> String {
        self.discovery.current_node()
    }

    /// Runs until the drain has finished: discovery, health checks, the cluster guard, the
    /// admin endpoint and the relay.
    pub async fn run(self) -> std::io::Result<Stopped> {
        let metrics = &self.state.metrics;
        let mut tasks = self.discovery.spawn(metrics);
        tasks.extend(health::spawn_checkers(&self.state.backends, metrics));
        for backend in &self.state.backends {
            if let Some(source) = backend
                .peer_source
                .as_deref()
                .and_then(|name| self.discovery.source(name))
            {
                tasks.push(health::spawn_peer_sync(
                    Arc::clone(backend),
                    source,
                    metrics.clone(),
                ));
            }
        }
        let guard_source = self
            .config
            .cluster
            .discovery
            .as_deref()
            .and_then(|name| self.discovery.source(name));
        tasks.extend(cluster::spawn_guard(
            self.config.cluster.clone(),
            self.discovery.current_node(),
            guard_source,
            Arc::clone(&self.state.clustering),
            metrics.clone(),
        ));
        let admin = tokio::spawn(admin::serve(
            self.admin,
            Arc::clone(&self.state),
            self.config.admin.clone(),
        ));
        let stopped = self.proxy.serve(Arc::clone(&self.state.drain)).await;
        for task in tasks {
            task.abort();
        }
        admin.abort();
        stopped
    }
}
