//! A public listener: its sockets bound from the config (one per relay thread, sharing the port),
//! and the accept loop each relay thread runs on its own socket. What a listener keeps is fixed
//! at bind time (name, sockets, metrics, the registry); what its new connections do comes from
//! the runtime snapshot, loaded once per accepted connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use super::connection::{self, Connection, ListenerShared, Slot};
use super::held::{self, Held};
use super::pacing::Arrival;
use crate::config::ListenerConfig;
use crate::metrics::RefuseReason;
use crate::net::{ACCEPT_BACKOFF, BindError, is_per_connection, socket};
use crate::runtime::ListenerId;

/// What a listener's sockets were bound with: a reload that changes any of it binds anew.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindKey {
    /// The address asked for (port 0 included: it stays the port first given).
    pub listen: SocketAddr,
    /// The accept backlog.
    pub backlog: u32,
}

impl BindKey {
    /// The key of `config`.
    pub fn of(config: &ListenerConfig) -> BindKey {
        BindKey {
            listen: config.listen,
            backlog: config.backlog,
        }
    }
}

/// A listener's sockets, bound and not yet accepting.
#[derive(Debug)]
pub struct BoundListener {
    /// Its identity, new for every bind.
    pub id: ListenerId,
    /// Its name.
    pub name: String,
    /// What it was bound with.
    pub key: BindKey,
    /// The address it is bound to (its real port when the config asked for port 0).
    pub addr: SocketAddr,
    pub(crate) sockets: Vec<std::net::TcpListener>,
}

impl BoundListener {
    /// Binds `config`'s address once per relay thread (SO_REUSEPORT). Fails naming the listener
    /// and the address.
    pub fn bind(config: &ListenerConfig, threads: usize) -> Result<BoundListener, BindError> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let sockets = socket::listen_shared(config.listen, config.backlog, threads)
            .map_err(|error| BindError::new(&config.name, config.listen, &error))?;
        let addr = sockets
            .first()
            .and_then(|socket| socket.local_addr().ok())
            .unwrap_or(config.listen);
        Ok(BoundListener {
            id: ListenerId(NEXT.fetch_add(1, Ordering::Relaxed)),
            name: config.name.clone(),
            key: BindKey::of(config),
            addr,
            sockets,
        })
    }
}

/// Accepts clients until `stop` turns true, then drops the listening socket so the port closes
/// (on this thread: the listener's other threads close theirs alike). `done` is dropped last,
/// which is how the proxy learns that every thread has let the socket go.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<ListenerShared>,
    mut stop: watch::Receiver<bool>,
    done: mpsc::Sender<()>,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((client, peer)) => {
                // The plan is loaded once here and carried through this connection's set-up.
                let plan = shared
                    .runtime
                    .load()
                    .listener(shared.id)
                    .map(|listener| Arc::clone(&listener.plan));
                let Some(plan) = plan else {
                    // A reload removed this listener and is about to stop this loop.
                    connection::close_cleanly(&client);
                    continue;
                };
                // Pacing comes before anything else the client costs: its PROXY header, TLS
                // handshake, CONNECT and backend connection.
                let arrival = match &plan.pacing {
                    Some(pacing) => shared.pacer.arrive(Instant::now(), pacing),
                    None => Arrival::Admit,
                };
                if let Arrival::Shed(reason) = arrival {
                    tracing::debug!(listener = %shared.name, %peer, reason = reason.label(), "admission pacing closed the client");
                    held::close_quietly(client);
                    continue;
                }
                let Some(slot) = Slot::acquire(&shared, plan.max_connections) else {
                    if let Arrival::Hold { .. } = arrival {
                        shared.pacer.gone();
                    }
                    shared.metrics.refused(RefuseReason::Limit);
                    tracing::debug!(listener = %shared.name, %peer, "connection limit reached");
                    connection::close_cleanly(&client);
                    continue;
                };
                let connection = match arrival {
                    Arrival::Hold { ticket, until } => {
                        tracing::debug!(listener = %shared.name, %peer, "held by admission pacing");
                        let until = shared.pacer.instant(until);
                        let pacer = Arc::clone(&shared.pacer);
                        Connection::held(Held::new(client, peer, plan, pacer, ticket, until), slot)
                    }
                    _ => Connection::new(client, peer, slot, plan),
                };
                shared.registry.spawn(connection, shared.id);
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
    drop(listener);
    drop(done);
}
