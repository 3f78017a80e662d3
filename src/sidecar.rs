//! The whole sidecar assembled from its parts: the relay's listeners, the runtime snapshot, the
//! controller with its control tasks, the admin endpoint and the drain. Binding is separate from
//! running so that every port is known (and every bind error reported) before anything serves,
//! and so tests can bind port 0.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;

use crate::admin;
use crate::cluster::Clustering;
use crate::config::{Config, ConfigErrors};
use crate::metrics::Metrics;
use crate::net::BindError;
use crate::proxy::{BoundListener, Proxy, Registry};
use crate::runtime::controller::Parts;
use crate::runtime::reload::{self, Requests};
use crate::runtime::{Controller, ListenerSocket, Loaded, Reloader, Runtime, read_secrets};
use crate::shutdown::{DrainControl, Stopped};
use crate::state::SidecarState;

/// Backlog of the admin listener: a handful of probes and scrapes at once.
const ADMIN_BACKLOG: u32 = 128;

/// Why the sidecar could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config is invalid, or names a secret that cannot be read.
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    /// A port could not be opened.
    #[error(transparent)]
    Bind(#[from] BindError),
}

/// A sidecar with every port bound, ready to run.
pub struct Sidecar {
    bound: Vec<BoundListener>,
    admin: std::net::TcpListener,
    admin_addr: SocketAddr,
    file: Option<PathBuf>,
    requests: Requests,
    state: Arc<SidecarState>,
}

impl Sidecar {
    /// Binds every listener and the admin endpoint of `config`, and reads its secrets. A sidecar
    /// bound this way has no file to reload.
    pub fn bind(config: Config) -> Result<Sidecar, StartError> {
        let loaded = Loaded {
            at: SystemTime::now(),
            file: None,
            sha256: None,
        };
        Sidecar::bind_loaded(config, loaded)
    }

    /// Reads, validates and binds the config file `path`; SIGHUP, `POST /reload` and
    /// `watch_config` reload it.
    pub fn bind_file(path: &Path) -> Result<Sidecar, StartError> {
        let candidate = reload::load(path, None).map_err(ConfigErrors)?;
        Sidecar::bind_loaded(candidate.config, candidate.loaded)
    }

    fn bind_loaded(config: Config, loaded: Loaded) -> Result<Sidecar, StartError> {
        let secrets = read_secrets(&config).map_err(ConfigErrors)?;
        let metrics = Metrics::new();
        let threads = config.runtime.relay_threads();
        let mut bound = Vec::with_capacity(config.listeners.len());
        let mut sockets = HashMap::new();
        for listener in &config.listeners {
            let listener = BoundListener::bind(listener, threads)?;
            let socket = ListenerSocket {
                id: listener.id,
                addr: listener.addr,
                metrics: metrics.listener(&listener.name),
            };
            sockets.insert(listener.name.clone(), socket);
            bound.push(listener);
        }
        let admin = crate::net::listen("admin", config.admin.listen, ADMIN_BACKLOG)?;
        let admin_addr = admin.local_addr().unwrap_or(config.admin.listen);
        let file = loaded.file.clone();
        let runtime = Runtime::build(config, None, &sockets, secrets, loaded, &metrics);
        metrics.config_dated();
        let clustering = Clustering {
            current_node: runtime.self_node.current_node(),
            ..Clustering::default()
        };
        let (reloader, requests) = Reloader::new();
        let state = Arc::new(SidecarState {
            runtime: Arc::new(ArcSwap::from_pointee(runtime)),
            drain: Arc::new(DrainControl::default()),
            metrics,
            clustering: Arc::new(ArcSwap::from_pointee(clustering)),
            reloader,
        });
        Ok(Sidecar {
            bound,
            admin,
            admin_addr,
            file,
            requests,
            state,
        })
    }

    /// The address a listener is bound to.
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.bound.iter().find(|b| b.name == name).map(|b| b.addr)
    }

    /// The admin endpoint's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The drain switch: `start` it to drain (signals and `POST /drain` do).
    pub fn drain(&self) -> Arc<DrainControl> {
        Arc::clone(&self.state.drain)
    }

    /// Asks for reloads (SIGHUP and `POST /reload` do).
    pub fn reloader(&self) -> Reloader {
        self.state.reloader.clone()
    }

    /// The metrics.
    pub fn metrics(&self) -> Metrics {
        self.state.metrics.clone()
    }

    /// This node's name as discovery and the cluster guard use it.
    pub fn current_node(&self) -> String {
        self.state.runtime.load().self_node.current_node()
    }

    /// Runs until the drain has finished: the relay, discovery, health checks, the cluster
    /// guard, the admin endpoint and reloads.
    pub async fn run(self) -> std::io::Result<Stopped> {
        let state = self.state;
        let runtime = Arc::clone(&state.runtime);
        let threads = runtime.load().config.runtime.relay_threads();
        let registry = Arc::new(Registry::default());
        let proxy = Proxy::start(threads, Arc::clone(&runtime), Arc::clone(&registry)).await?;
        let controller = Controller::start(
            Parts {
                runtime,
                proxy,
                registry,
                metrics: state.metrics.clone(),
                clustering: Arc::clone(&state.clustering),
                drain: Arc::clone(&state.drain),
                reloader: state.reloader.clone(),
                file: self.file,
            },
            self.bound,
        );
        let admin_config = state.runtime.load().config.admin.clone();
        let admin = tokio::spawn(admin::serve(self.admin, Arc::clone(&state), admin_config));
        let stopped = controller.run(self.requests).await;
        admin.abort();
        Ok(stopped)
    }
}
