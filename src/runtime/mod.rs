//! The runtime snapshot: everything that a reload can change, built from one validated
//! [`Config`] by [`Runtime::build`] and published whole through one `ArcSwap` (the controller
//! swaps it; the relay, failback, the drain and the admin endpoint load it).
//!
//! - Backends with their servers, backups and peers, and each server's health: a server that
//!   the previous runtime had, checked the same way, keeps its health object and so its state.
//! - Per-listener plans: what a new connection of that listener does (backend, PROXY headers,
//!   timeouts, limit). A connection loads its plan once, at accept, and keeps it through its
//!   set-up, so a swap never changes a connection under way.
//! - The discovery sources (carried by name, so that whoever follows one keeps following it),
//!   this node's identity, the drain settings, the admin secrets.
//!
//! What is fixed at bind time (the listening sockets, their metrics, the connection registry)
//! lives with the proxy; what runs (checkers, refreshes, peer syncs, the guard) is owned by the
//! controller, which starts and stops it by comparing two snapshots.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::backend::{Backend, BackendId, PeerList};
use crate::config::{Config, ConfigError, DiscoveryKind, Pacing, ProxyProtocol, TokenSource};
use crate::discovery::{SelfNode, Source};
use crate::health::ServerHealth;
use crate::metrics::{ListenerMetrics, Metrics};
use crate::tls::{Terminator, TlsMaterial};

pub mod controller;
pub mod reload;
#[cfg(test)]
pub(crate) mod testing;
mod watch;

pub use controller::Controller;
pub use reload::{Candidate, ReloadError, Reloaded, Reloader};

/// One bound listener's identity: assigned when its sockets are bound, never reused, so that a
/// listener removed and added again under the same name is told apart from the old one (whose
/// connections a reload closes at a measured pace).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenerId(pub u32);

/// What the proxy tells the builder about one bound listener.
#[derive(Debug, Clone)]
pub struct ListenerSocket {
    /// Its identity.
    pub id: ListenerId,
    /// The address it is bound to (its real port when the config asked for port 0).
    pub addr: SocketAddr,
    /// Its series (connections open now among them), kept while a runtime lists it.
    pub metrics: ListenerMetrics,
}

/// Where a runtime's config came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// When it was loaded.
    pub at: SystemTime,
    /// The file given with `--config`; `None` for the embedded default or a config built in
    /// code (neither can be reloaded).
    pub file: Option<PathBuf>,
    /// SHA-256 of the text, in hex, when there was one.
    pub sha256: Option<String>,
}

/// Secrets read from files or the environment when a config is loaded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Secrets {
    /// The token that allows `POST /drain` and `POST /reload` from other hosts.
    pub admin_token: Option<String>,
    /// The TLS material of each TLS-terminating listener, by listener name.
    pub tls: HashMap<String, Arc<TlsMaterial>>,
}

/// What a new connection of one listener does.
#[derive(Debug)]
pub struct ListenerPlan {
    /// The backend its connections are relayed to.
    pub backend: Arc<Backend>,
    /// PROXY header sent towards the backend.
    pub proxy_protocol: ProxyProtocol,
    /// Whether clients send a PROXY header first.
    pub accept_proxy_protocol: bool,
    /// Time a client has to send that header.
    pub proxy_header_timeout: Duration,
    /// Close after this long with no byte either way; `None` = never.
    pub idle_timeout: Option<Duration>,
    /// Close this long after one direction ended if the other stays silent; `None` = never.
    pub half_close_timeout: Option<Duration>,
    /// Connections held at once.
    pub max_connections: u32,
    /// The client's CONNECT is read before a server is chosen, within these limits.
    pub preread: Option<Preread>,
    /// Admission pacing of new clients; `None` = unpaced.
    pub pacing: Option<Pacing>,
    /// TLS terminated before anything else; `None` = bytes pass through.
    pub tls: Option<Arc<Terminator>>,
}

/// How a listener reads its clients' CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preread {
    /// The largest CONNECT read, fixed header included.
    pub max_size: usize,
    /// Time a client has to send the whole of it.
    pub timeout: Duration,
}

/// One listener in a runtime.
#[derive(Debug)]
pub struct ListenerRuntime {
    /// Its bound identity.
    pub id: ListenerId,
    /// Its name.
    pub name: String,
    /// The address it is bound to.
    pub addr: SocketAddr,
    /// What its new connections do.
    pub plan: Arc<ListenerPlan>,
    /// Its series (connections open now among them).
    pub metrics: ListenerMetrics,
}

/// Everything a reload can change.
#[derive(Debug)]
pub struct Runtime {
    /// 1 at start, one more for each successful reload.
    pub generation: u64,
    /// Where the config came from.
    pub loaded: Loaded,
    /// The validated config it was built from.
    pub config: Config,
    /// Backends, in config order.
    pub backends: Vec<Arc<Backend>>,
    /// Listeners, in config order.
    pub listeners: Vec<ListenerRuntime>,
    /// Discovery sources, in config order.
    pub sources: Vec<Arc<Source>>,
    /// Who this node is.
    pub self_node: SelfNode,
    /// Secrets read with the config.
    pub secrets: Secrets,
}

impl Runtime {
    /// Builds the runtime of `config`, carrying over from `previous` what must outlive a reload:
    /// the health of each server still checked the same way, the peer lists of backends that
    /// keep a peer source, discovery sources by name, backend ids by name. `listeners` gives
    /// every listener of `config` by name, already bound.
    ///
    /// # Panics
    /// If a listener of `config` is missing from `listeners` (the caller binds them first), or a
    /// TLS listener's material is missing from `secrets` (the caller loads it first).
    pub fn build(
        config: Config,
        previous: Option<&Runtime>,
        listeners: &HashMap<String, ListenerSocket>,
        secrets: Secrets,
        loaded: Loaded,
        metrics: &Metrics,
    ) -> Runtime {
        let previous_backend =
            |name: &str| previous.and_then(|p| p.backends.iter().find(|b| b.name == name));
        let backends: Vec<Arc<Backend>> = config
            .backends
            .iter()
            .map(|backend| {
                let before = previous_backend(&backend.name);
                let checked = backend.check.is_some();
                let health = |addr: SocketAddr| {
                    before
                        .and_then(|b| b.servers.iter().find(|s| s.addr == addr))
                        .map(|s| Arc::clone(&s.health))
                        .filter(|health| health.report().checked == checked)
                        .unwrap_or_else(|| Arc::new(ServerHealth::fresh(checked)))
                };
                let peers: Arc<PeerList> = match (before, &backend.peers) {
                    (Some(before), Some(_)) if before.peer_source.is_some() => {
                        Arc::clone(&before.peers)
                    }
                    _ => Arc::default(),
                };
                let id = before.map_or_else(BackendId::fresh, |b| b.id);
                Arc::new(Backend::build(backend, id, health, peers, metrics))
            })
            .collect();
        let listeners = config
            .listeners
            .iter()
            .map(|listener| {
                let socket = listeners
                    .get(&listener.name)
                    .unwrap_or_else(|| panic!("listener `{}` is not bound", listener.name));
                // What `brokerside_connections_max` says is the limit new connections meet.
                socket
                    .metrics
                    .limit
                    .set(i64::from(listener.max_connections));
                let tls = listener.tls.as_ref().map(|tls| {
                    let material = secrets.tls.get(&listener.name).cloned().unwrap_or_else(|| {
                        panic!(
                            "the TLS material of listener `{}` is not loaded",
                            listener.name
                        )
                    });
                    // Kept while the listener's TLS settings stay as they were: the file watcher
                    // that holds it then keeps serving this listener.
                    let before = previous
                        .and_then(|p| p.listener_named(&listener.name))
                        .and_then(|l| l.plan.tls.as_ref())
                        .filter(|t| t.config == *tls);
                    match before {
                        Some(before) => {
                            before.install(material);
                            Arc::clone(before)
                        }
                        None => Arc::new(Terminator::new(
                            &listener.name,
                            tls.clone(),
                            material,
                            metrics.tls_listener(&listener.name),
                        )),
                    }
                });
                ListenerRuntime {
                    id: socket.id,
                    name: listener.name.clone(),
                    addr: socket.addr,
                    plan: Arc::new(ListenerPlan {
                        backend: Arc::clone(&backends[listener.backend]),
                        proxy_protocol: listener.proxy_protocol,
                        accept_proxy_protocol: listener.accept_proxy_protocol,
                        proxy_header_timeout: listener.proxy_header_timeout,
                        idle_timeout: listener.idle_timeout,
                        half_close_timeout: listener.half_close_timeout,
                        max_connections: listener.max_connections,
                        preread: listener.mqtt_preread.then_some(Preread {
                            max_size: listener.max_connect_size,
                            timeout: listener.preread_timeout,
                        }),
                        pacing: listener.pacing.enabled().then_some(listener.pacing),
                        tls,
                    }),
                    metrics: socket.metrics.clone(),
                }
            })
            .collect();
        let sources = config
            .discovery
            .iter()
            .map(|source| {
                previous
                    .and_then(|p| p.sources.iter().find(|s| s.name == source.name))
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Source::new(&source.name)))
            })
            .collect();
        let template = config.discovery.first().map(|c| c.node_name.as_str());
        let self_node = SelfNode::from_config(&config.node, template);
        Runtime {
            generation: previous.map_or(1, |p| p.generation + 1),
            loaded,
            backends,
            listeners,
            sources,
            self_node,
            secrets,
            config,
        }
    }

    /// The runtime of `config` as if each listener were bound at its configured address, with
    /// identities in config order: no previous runtime, no file. Nothing is bound or started;
    /// for tools, tests and fuzzing, which need a runtime without a running sidecar.
    pub fn unbound(config: Config, metrics: &Metrics, secrets: Secrets) -> Runtime {
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

    /// The listener with identity `id`.
    pub fn listener(&self, id: ListenerId) -> Option<&ListenerRuntime> {
        self.listeners.iter().find(|l| l.id == id)
    }

    /// The listener named `name`.
    pub fn listener_named(&self, name: &str) -> Option<&ListenerRuntime> {
        self.listeners.iter().find(|l| l.name == name)
    }

    /// The source named `name`.
    pub fn source(&self, name: &str) -> Option<&Arc<Source>> {
        self.sources.iter().find(|s| s.name == name)
    }

    /// `Ok` when every backend that a listener uses has its local broker up (or lets the node
    /// be ready on backups); otherwise one line saying why.
    pub fn readiness(&self) -> Result<(), String> {
        for backend in &self.backends {
            let used = self
                .listeners
                .iter()
                .any(|l| Arc::ptr_eq(&l.plan.backend, backend));
            if used {
                backend.readiness()?;
            }
        }
        Ok(())
    }
}

/// Reads the secrets `config` names: the admin token's value, every TLS listener's certificates
/// and keys (checked as `check-config` checks them), and every other token and credential once, so that a config whose secret cannot be read is refused as a whole rather
/// than failing later in a discovery refresh or a cluster-guard ask.
pub fn read_secrets(config: &Config) -> Result<Secrets, Vec<ConfigError>> {
    let mut wanted: Vec<(String, &TokenSource)> = Vec::new();
    if let Some(token) = &config.admin.drain_token {
        wanted.push(("admin.drain_token".to_string(), token));
    }
    for (i, source) in config.discovery.iter().enumerate() {
        if let DiscoveryKind::Consul(consul) = &source.kind
            && let Some(token) = &consul.token
        {
            wanted.push((format!("discovery[{i}].token"), token));
        }
    }
    if let Some(username) = &config.cluster.username {
        wanted.push(("cluster.username".to_string(), username));
    }
    if let Some(password) = &config.cluster.password {
        wanted.push(("cluster.password".to_string(), password));
    }
    let mut problems = Vec::new();
    let tls = match crate::tls::load_listeners(config) {
        Ok((tls, warnings)) => {
            for warning in warnings {
                tracing::warn!(field = %warning.path, "{}", warning.message);
            }
            tls
        }
        Err(more) => {
            problems.extend(more);
            HashMap::new()
        }
    };
    let mut admin_token = None;
    for (path, source) in wanted {
        match source.read() {
            // An empty admin token would let any `Bearer ` header through.
            Ok(token) if path == "admin.drain_token" && token.is_empty() => {
                problems.push(ConfigError {
                    path,
                    message: "the token is empty".to_string(),
                });
            }
            Ok(token) if path == "admin.drain_token" => admin_token = Some(token),
            Ok(_) => {}
            Err(message) => problems.push(ConfigError { path, message }),
        }
    }
    if problems.is_empty() {
        Ok(Secrets { admin_token, tls })
    } else {
        Err(problems)
    }
}
