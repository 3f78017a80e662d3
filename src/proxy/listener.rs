//! A public listener: its bound sockets, the accept loop each relay thread runs on its own, and
//! the per-listener connection limit (counted across threads).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use super::connection::{self, Connection, Slot};
use super::registry::Registry;
use crate::backend::Backend;
use crate::config::{ListenerConfig, ProxyProtocol};
use crate::metrics::{ListenerMetrics, RefuseReason};
use crate::shutdown::Tracker;

/// Pause after an accept error such as EMFILE, so a full fd table does not spin the loop.
pub(crate) const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What every connection of one listener shares.
pub(crate) struct ListenerShared {
    pub(crate) name: String,
    pub(crate) backend: Arc<Backend>,
    pub(crate) metrics: ListenerMetrics,
    pub(crate) proxy_protocol: ProxyProtocol,
    pub(crate) accept_proxy_protocol: bool,
    pub(crate) proxy_header_timeout: Duration,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) max_connections: u32,
    pub(crate) tracker: Arc<Tracker>,
    pub(crate) registry: Arc<Registry>,
    /// The backend's index in the config, as the registry records it.
    pub(crate) backend_index: usize,
}

impl ListenerShared {
    pub(crate) fn new(
        config: &ListenerConfig,
        backend: Arc<Backend>,
        metrics: ListenerMetrics,
        tracker: Arc<Tracker>,
        registry: Arc<Registry>,
    ) -> ListenerShared {
        ListenerShared {
            name: config.name.clone(),
            backend,
            metrics,
            proxy_protocol: config.proxy_protocol,
            accept_proxy_protocol: config.accept_proxy_protocol,
            proxy_header_timeout: config.proxy_header_timeout,
            idle_timeout: config.idle_timeout,
            max_connections: config.max_connections,
            tracker,
            registry,
            backend_index: config.backend,
        }
    }
}

/// Accepts clients until `stop` turns true, then drops the listening socket so the port closes.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<ListenerShared>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((client, peer)) => {
                if shared.metrics.active.get() >= i64::from(shared.max_connections) {
                    shared.metrics.refused(RefuseReason::Limit);
                    tracing::debug!(listener = %shared.name, %peer, "connection limit reached");
                    connection::close_cleanly(&client);
                    continue;
                }
                let slot = Slot::new(Arc::clone(&shared));
                shared.registry.spawn(Connection::new(client, peer, slot));
            }
            Err(error) if is_per_connection(&error) => {
                tracing::debug!(listener = %shared.name, %error, "accept");
            }
            Err(error) => {
                tracing::warn!(listener = %shared.name, %error, "accept failed; backing off");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
    tracing::info!(listener = %shared.name, "listener closed");
}

/// Errors that concern one pending connection only, not the listener.
pub(crate) fn is_per_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// A listener's bound sockets (one per relay thread, sharing the port), before they are handed
/// to the threads.
pub(crate) struct Bound {
    pub(crate) config: ListenerConfig,
    pub(crate) sockets: Vec<std::net::TcpListener>,
    pub(crate) addr: SocketAddr,
}
