//! The relay: listeners bound from the config, relay threads that accept on them, one task per
//! client connection, PROXY protocol, and the orderly stop that shutdown asks for.

mod connection;
mod failback;
mod listener;
mod pipe;
pub mod proxy_protocol;
mod registry;
pub mod relay;
mod socket;
mod upstream;
mod workers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::backend::Backend;
use crate::config::{Config, DrainConfig};
use crate::metrics::Metrics;
use crate::shutdown::{ClosePacer, DrainControl, DrainPhase, Tracker};
use crate::state::ListenerView;
pub(crate) use listener::{ACCEPT_BACKOFF, is_per_connection};
use listener::{Bound, ListenerShared};
use registry::Registry;
use workers::Workers;

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

impl BindError {
    /// Describes `error` from binding `listener` on `addr`.
    pub fn new(listener: &str, addr: SocketAddr, error: &std::io::Error) -> BindError {
        let reason = match error.kind() {
            std::io::ErrorKind::AddrInUse => "the address is already in use".to_string(),
            std::io::ErrorKind::AddrNotAvailable => "the address is not on this host".to_string(),
            std::io::ErrorKind::PermissionDenied => {
                "permission denied (ports below 1024 need CAP_NET_BIND_SERVICE)".to_string()
            }
            _ => error.to_string(),
        };
        BindError {
            listener: listener.to_string(),
            addr,
            reason,
        }
    }
}

/// Opens a listening socket (for listeners outside the relay, such as the admin endpoint).
pub fn listen(
    name: &str,
    addr: SocketAddr,
    backlog: u32,
) -> Result<std::net::TcpListener, BindError> {
    socket::listen(addr, backlog).map_err(|error| BindError::new(name, addr, &error))
}

/// Every listener of a config, bound and ready to serve.
pub struct Proxy {
    bound: Vec<Bound>,
    /// Relay threads: each accepts on its own socket of every listener.
    threads: usize,
    backends: Vec<Arc<Backend>>,
    metrics: Metrics,
    drain: DrainConfig,
    tracker: Arc<Tracker>,
    registry: Arc<Registry>,
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    /// Connections closed at the pace of `close_rate`.
    pub closed_paced: usize,
    /// Connections still open at the deadline, closed all at once.
    pub cut_at_deadline: usize,
}

impl Proxy {
    /// Binds every listener of `config`, one socket per relay thread. Fails on the first port
    /// that cannot be opened, naming the listener and the address.
    pub fn bind(config: &Config, metrics: &Metrics) -> Result<Proxy, BindError> {
        let threads = config.runtime.relay_threads();
        let mut bound = Vec::with_capacity(config.listeners.len());
        for listener in &config.listeners {
            let sockets = socket::listen_shared(listener.listen, listener.backlog, threads)
                .map_err(|error| BindError::new(&listener.name, listener.listen, &error))?;
            let addr = sockets
                .first()
                .and_then(|socket| socket.local_addr().ok())
                .unwrap_or(listener.listen);
            bound.push(Bound {
                config: listener.clone(),
                sockets,
                addr,
            });
        }
        Ok(Proxy {
            bound,
            threads,
            backends: config
                .backends
                .iter()
                .map(|b| Arc::new(Backend::new(b, metrics)))
                .collect(),
            metrics: metrics.clone(),
            drain: config.drain.clone(),
            tracker: Arc::new(Tracker::default()),
            registry: Arc::new(Registry::default()),
        })
    }

    /// The address a listener is bound to (its real port when the config asked for port 0).
    pub fn local_addr(&self, listener: &str) -> Option<SocketAddr> {
        self.bound
            .iter()
            .find(|b| b.config.name == listener)
            .map(|b| b.addr)
    }

    /// The run-time backends, shared with the health checkers and the admin endpoint.
    pub fn backends(&self) -> &[Arc<Backend>] {
        &self.backends
    }

    /// What `/health` shows of each listener.
    pub fn listener_views(&self) -> Vec<ListenerView> {
        self.bound
            .iter()
            .map(|b| ListenerView {
                name: b.config.name.clone(),
                addr: b.addr,
                backend: self.backends[b.config.backend].name.clone(),
                active: self.metrics.listener(&b.config.name).active,
            })
            .collect()
    }

    /// Serves until `drain` starts, then drains: the listeners keep accepting for `lb_grace`,
    /// then close; open connections are closed at most `close_rate` per second; at `deadline`
    /// the rest are closed. Returns once no connection is left and the relay threads have
    /// ended. The relay runs on its own threads; this future (drain pacing, failback) runs on
    /// the caller's runtime.
    pub async fn serve(self, drain: Arc<DrainControl>) -> std::io::Result<Stopped> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut sockets: Vec<workers::Sockets> = (0..self.threads).map(|_| Vec::new()).collect();
        for bound in self.bound {
            tracing::info!(listener = %bound.config.name, addr = %bound.addr, threads = self.threads, "listening");
            let backend = &self.backends[bound.config.backend];
            for (thread, socket) in sockets.iter_mut().zip(bound.sockets) {
                // One copy per thread keeps the reference count that every connection takes
                // in that thread's core.
                let shared = Arc::new(ListenerShared::new(
                    &bound.config,
                    Arc::clone(backend),
                    self.metrics.listener(&bound.config.name),
                    Arc::clone(&self.tracker),
                    Arc::clone(&self.registry),
                ));
                thread.push((socket, shared));
            }
        }
        let mut workers = Workers::start(sockets, &stop_rx).await?;
        let failback = tokio::spawn(failback::run(
            self.backends.clone(),
            Arc::clone(&self.registry),
            self.metrics.clone(),
        ));

        drain.started().await;
        // A draining node moves nobody back: its clients are about to leave anyway.
        failback.abort();
        let started = Instant::now();
        let deadline = started + self.drain.deadline;
        self.metrics.draining().set(1);
        tracing::info!(lb_grace = ?self.drain.lb_grace, "draining: health answers 503, listeners stay open for the grace period");
        tokio::time::sleep_until((started + self.drain.lb_grace).min(deadline)).await;

        drain.set_phase(DrainPhase::Closing);
        let _ = stop_tx.send(true);
        workers.accepting_stopped().await;
        tracing::info!(
            open = self.tracker.count(),
            close_rate = self.drain.close_rate,
            "listeners closed; closing connections"
        );
        let pacer = ClosePacer::new(self.drain.close_rate);
        let mut closed_paced = 0;
        while self.tracker.count() > 0 && Instant::now() < deadline {
            let (wait, batch) = pacer.step(fastrand::f64());
            let closed = self.registry.close(batch, None);
            closed_paced += closed;
            self.metrics.closed_by_drain().inc_by(closed as u64);
            tokio::time::sleep_until((Instant::now() + wait).min(deadline)).await;
        }
        let cut_at_deadline = self.registry.close(usize::MAX, None);
        self.metrics
            .closed_by_drain()
            .inc_by(cut_at_deadline as u64);
        if cut_at_deadline > 0 {
            tracing::warn!(
                connections = cut_at_deadline,
                "drain deadline passed; closing the rest"
            );
        }
        // Aborted tasks close their sockets when their thread's runtime drops them, which is
        // at once; whatever a busy thread has not dropped by then goes with its runtime.
        let _ = tokio::time::timeout(CLOSE_SETTLE, self.tracker.all_closed()).await;
        workers.finish().await;
        drain.set_phase(DrainPhase::Done);
        Ok(Stopped {
            closed_paced,
            cut_at_deadline,
        })
    }
}

/// Time allowed for aborted connection tasks to drop their sockets before `serve` returns.
const CLOSE_SETTLE: Duration = Duration::from_secs(2);
