//! The relay: listeners bound from the config, relay threads that accept on them, one task per
//! client connection, the registry of open connections, and failback. A listener can be added
//! to the running threads and stopped again, which is what a reload does; the drain
//! (`shutdown.rs`) stops them all and closes what is open through the registry.

mod connection;
pub mod failback;
mod held;
mod listener;
mod pacing;
mod pipe;
mod registry;
pub mod relay;
mod tls;
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
use pacing::Pacer;
pub use registry::{ClosePacer, Registry, Which};
#[doc(hidden)]
pub use tls::{Fed, feed_client_bytes};
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
        let open = Arc::default();
        // One schedule for the listener, whichever thread accepts: a rate per thread would let
        // the threads together through at a multiple of it.
        let pacer = Arc::new(Pacer::new(&bound.name, metrics.admission.clone()));
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
                    open: Arc::clone(&open),
                    pacer: Arc::clone(&pacer),
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::{Duration, SystemTime};

    use tokio::io::AsyncReadExt;

    use super::*;
    use crate::config::Config;
    use crate::metrics::Metrics;
    use crate::runtime::{ListenerSocket, Loaded, Secrets};

    /// What a stop and the end of the threads do to a listener and its connections: stopping
    /// closes the port and nothing else; finishing closes what is left and ends the threads.
    #[tokio::test]
    async fn stopping_closes_the_port_and_finishing_closes_the_connections() {
        let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend_addr = backend.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = backend.accept().await {
                held.push(stream);
            }
        });
        let config = Config::from_toml(&format!(
            "[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:0\"\nbackend = \"b\"\n\
             [[backend]]\nname = \"b\"\nservers = [\"{backend_addr}\"]\nloopback_sources = \"off\"\n"
        ))
        .unwrap();
        let metrics = Metrics::new();
        let bound = BoundListener::bind(&config.listeners[0], 2).unwrap();
        let addr = bound.addr;
        let listener_metrics = metrics.listener("l");
        let sockets = HashMap::from([(
            "l".to_string(),
            ListenerSocket {
                id: bound.id,
                addr,
                metrics: listener_metrics.clone(),
            },
        )]);
        let loaded = Loaded {
            at: SystemTime::now(),
            file: None,
            sha256: None,
        };
        let runtime = Runtime::build(config, None, &sockets, Secrets::default(), loaded, &metrics);
        let runtime = Arc::new(ArcSwap::from_pointee(runtime));
        let registry = Arc::new(Registry::default());
        let mut proxy = Proxy::start(2, runtime, Arc::clone(&registry))
            .await
            .unwrap();
        let id = bound.id;
        proxy.accept(bound, listener_metrics.clone());

        let mut clients = Vec::new();
        for _ in 0..8 {
            clients.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        let relayed = tokio::time::timeout(Duration::from_secs(5), async {
            while listener_metrics.active.get() < 8 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        relayed.await.expect("8 connections open");

        proxy.stop_accepting(id).await;
        let refused = tokio::net::TcpStream::connect(addr).await.unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
        assert_eq!(
            registry.open(),
            8,
            "stopping the listener closed connections"
        );

        proxy.finish().await;
        assert_eq!(registry.open(), 0);
        assert_eq!(listener_metrics.active.get(), 0);
        for mut client in clients {
            let mut buf = [0u8; 1];
            let read = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf));
            assert!(
                matches!(read.await, Ok(Ok(0) | Err(_))),
                "client still open"
            );
        }
        held.abort();
    }
}
