//! The relay: listeners bound from the config, one task per client connection, PROXY protocol,
//! and the orderly stop that shutdown asks for.

mod connection;
mod listener;
pub mod proxy_protocol;
pub mod relay;
mod socket;
mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::backend::Backend;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::shutdown::Tracker;
use listener::{Bound, ListenerShared};

/// A listener that could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("listener `{listener}` cannot listen on {addr}: {reason}")]
pub struct BindError {
    /// The listener's name.
    pub listener: String,
    /// The address it asked for.
    pub addr: SocketAddr,
    /// What the OS said, in words.
    pub reason: String,
}

/// Every listener of a config, bound and ready to serve.
pub struct Proxy {
    bound: Vec<Bound>,
    backends: Vec<Arc<Backend>>,
    metrics: Metrics,
    deadline: Duration,
    tracker: Arc<Tracker>,
}

/// How [`Proxy::serve`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    /// Connections still open when the deadline passed (closed as the proxy exits).
    pub cut_at_deadline: usize,
}

impl Proxy {
    /// Binds every listener of `config`. Fails on the first port that cannot be opened, naming
    /// the listener and the address.
    pub fn bind(config: &Config, metrics: &Metrics) -> Result<Proxy, BindError> {
        let mut bound = Vec::with_capacity(config.listeners.len());
        for listener in &config.listeners {
            let socket =
                socket::listen(listener.listen, listener.backlog).map_err(|error| BindError {
                    listener: listener.name.clone(),
                    addr: listener.listen,
                    reason: match error.kind() {
                        std::io::ErrorKind::AddrInUse => {
                            "the address is already in use".to_string()
                        }
                        std::io::ErrorKind::AddrNotAvailable => {
                            "the address is not on this host".to_string()
                        }
                        std::io::ErrorKind::PermissionDenied => {
                            "permission denied (ports below 1024 need CAP_NET_BIND_SERVICE)"
                                .to_string()
                        }
                        _ => error.to_string(),
                    },
                })?;
            let addr = socket.local_addr().unwrap_or(listener.listen);
            bound.push(Bound {
                config: listener.clone(),
                socket,
                addr,
            });
        }
        Ok(Proxy {
            bound,
            backends: config
                .backends
                .iter()
                .map(|b| Arc::new(Backend::new(b, metrics)))
                .collect(),
            metrics: metrics.clone(),
            deadline: config.drain.deadline,
            tracker: Arc::new(Tracker::default()),
        })
    }

    /// The address a listener is bound to (its real port when the config asked for port 0).
    pub fn local_addr(&self, listener: &str) -> Option<SocketAddr> {
        self.bound
            .iter()
            .find(|b| b.config.name == listener)
            .map(|b| b.addr)
    }

    /// The connection tracker, for reporting open connections.
    pub fn tracker(&self) -> Arc<Tracker> {
        Arc::clone(&self.tracker)
    }

    /// Serves until `shutdown` resolves, then closes the listeners and waits for open
    /// connections to finish, at most the drain deadline.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> std::io::Result<Stopped> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut loops = Vec::with_capacity(self.bound.len());
        for bound in self.bound {
            let listener = tokio::net::TcpListener::from_std(bound.socket)?;
            let backend = Arc::clone(&self.backends[bound.config.backend]);
            let shared = Arc::new(ListenerShared::new(
                &bound.config,
                backend,
                self.metrics.listener(&bound.config.name),
                Arc::clone(&self.tracker),
            ));
            tracing::info!(listener = %bound.config.name, addr = %bound.addr, "listening");
            loops.push(tokio::spawn(listener::accept_loop(
                listener,
                shared,
                stop_rx.clone(),
            )));
        }
        shutdown.await;
        let _ = stop_tx.send(true);
        for accept_loop in loops {
            let _ = accept_loop.await;
        }
        let open = self.tracker.count();
        tracing::info!(open, deadline = ?self.deadline, "listeners closed; waiting for open connections");
        let cut_at_deadline =
            match tokio::time::timeout(self.deadline, self.tracker.all_closed()).await {
                Ok(()) => 0,
                Err(_) => self.tracker.count(),
            };
        Ok(Stopped { cut_at_deadline })
    }
}
