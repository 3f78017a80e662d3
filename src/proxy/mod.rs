//! The relay: listeners bound from the config, relay threads that accept on them, one task per
//! client connection, the registry of open connections, and failback. A listener can be added
//! to the running threads and stopped again, which is what a reload does; the drain
//! (`shutdown.rs`) stops them all and closes what is open through the registry.

mod connection;
pub mod failback;
mod listener;
mod pipe;
mod registry;
pub mod relay;
mod upstream;
mod workers;

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, watch};

use crate::metrics::ListenerMetrics;
use crate::runtime::{ListenerId, Runtime};
use connection::ListenerShared;
pub use listener::{BindKey, BoundListener};
pub use registry::{ClosePacer, Registry, Which};
use workers::{Accept, Workers};

/// The relay threads and the listeners they accept on.
pub struct Proxy {
    workers: Workers,
    listeners: HashMap<ListenerId, Accepting>,
    registry: Arc<Registry>,
    runtime: Arc<ArcSwap<Runtime>>,
}

/// A listener the threads accept on.
struct Accepting {
    name: String,
    key: BindKey,
    stop: watch::Sender<bool>,
    /// Yields `None` once every thread's accept loop has ended and closed its socket.
    ended: mpsc::Receiver<()>,
}

impl Proxy {
    /// Starts `threads` relay threads, accepting on nothing yet. New connections find their
    /// listener's plan in `runtime`; every connection is registered in `registry`.
    pub async fn start(
        threads: usize,
        runtime: Arc<ArcSwap<Runtime>>,
        registry: Arc<Registry>,
    ) -> io::Result<Proxy> {
        Ok(Proxy {
            workers: Workers::start(threads).await?,
            listeners: HashMap::new(),
            registry,
            runtime,
        })
    }

    /// How many relay threads run (each listener is bound once per thread).
    pub fn threads(&self) -> usize {
        self.workers.threads()
    }

    /// The running listener named `name` bound with `key`, if there is one: a reload keeps it.
    pub fn find(&self, name: &str, key: BindKey) -> Option<ListenerId> {
        self.listeners
            .iter()
            .find(|(_, l)| l.name == name && l.key == key)
            .map(|(id, _)| *id)
    }

    /// Starts accepting on `bound`, one socket per relay thread. Its plan must be in the
    /// runtime already: a connection accepted before that is closed.
    pub fn accept(&mut self, bound: BoundListener, metrics: ListenerMetrics) {
        let (stop, stopped) = watch::channel(false);
        let (done, ended) = mpsc::channel(1);
        let accepts = bound
            .sockets
            .into_iter()
            .map(|socket| Accept {
                socket,
                shared: Arc::new(ListenerShared {
                    id: bound.id,
                    name: bound.name.clone(),
                    metrics: metrics.clone(),
                    registry: Arc::clone(&self.registry),
                    runtime: Arc::clone(&self.runtime),
                }),
                stop: stopped.clone(),
                done: done.clone(),
            })
            .collect();
        self.workers.accept(accepts);
        tracing::info!(listener = %bound.name, addr = %bound.addr, threads = self.threads(), "listening");
        self.listeners.insert(
            bound.id,
            Accepting {
                name: bound.name,
                key: bound.key,
                stop,
                ended,
            },
        );
    }

    /// Stops accepting on listener `id`; resolves once every thread has closed its socket. Its
    /// open connections are untouched.
    pub async fn stop_accepting(&mut self, id: ListenerId) {
        if let Some(mut listener) = self.listeners.remove(&id) {
            let _ = listener.stop.send(true);
            while listener.ended.recv().await.is_some() {}
            tracing::info!(listener = %listener.name, "listener closed");
        }
    }

    /// Stops accepting on every listener (the drain's second step).
    pub async fn stop_accepting_all(&mut self) {
        let ids: Vec<ListenerId> = self.listeners.keys().copied().collect();
        for listener in &ids {
            if let Some(accepting) = self.listeners.get(listener) {
                let _ = accepting.stop.send(true);
            }
        }
        for id in ids {
            self.stop_accepting(id).await;
        }
    }

    /// Ends the relay threads, closing every connection still open.
    pub async fn finish(self) {
        self.workers.finish().await;
    }
}
