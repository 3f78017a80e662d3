//! The relay's threads, one per core as HAProxy, NGINX and Envoy run theirs: each is a std thread
//! with its own single-threaded runtime that accepts on its own SO_REUSEPORT socket of every
//! listener, so the kernel spreads new clients over the threads and a connection lives and dies
//! on the thread that accepted it. Nothing on the relay path wakes another thread (a shared
//! multi-thread runtime spends about a tenth of its CPU per connection on such hand-offs). The
//! drain and failback reach connections through the registry's abort handles, which work across
//! runtimes.

use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;

use super::listener::{self, ListenerShared};

/// What one thread accepts on: its own socket of each listener.
pub(crate) type Sockets = Vec<(std::net::TcpListener, Arc<ListenerShared>)>;

/// The running relay threads.
pub(crate) struct Workers {
    workers: Vec<Worker>,
    /// Set, or dropped with `Workers`, to end the threads: each then drops its runtime.
    release: watch::Sender<bool>,
}

struct Worker {
    thread: JoinHandle<()>,
    /// Resolves once every accept loop of the thread has ended and its sockets are closed.
    accepting: oneshot::Receiver<()>,
    /// Resolves as the thread ends, its runtime dropped.
    ended: oneshot::Receiver<()>,
}

impl Workers {
    /// Starts one thread per entry of `sockets`; each accepts until `stop` turns true, then
    /// keeps serving its open connections until [`Workers::finish`]. Returns once every thread
    /// accepts, or with the first thread's failure (the others then end).
    pub(crate) async fn start(
        sockets: Vec<Sockets>,
        stop: &watch::Receiver<bool>,
    ) -> io::Result<Workers> {
        let (release, released) = watch::channel(false);
        let mut workers = Workers {
            workers: Vec::with_capacity(sockets.len()),
            release,
        };
        let mut ready = Vec::with_capacity(sockets.len());
        for (index, sockets) in sockets.into_iter().enumerate() {
            let (ready_tx, ready_rx) = oneshot::channel();
            let (accepting_tx, accepting) = oneshot::channel();
            let (ended_tx, ended) = oneshot::channel();
            let stop = stop.clone();
            let released = released.clone();
            let thread = std::thread::Builder::new()
                .name(format!("relay-{index}"))
                .spawn(move || {
                    let signals = Signals {
                        ready: ready_tx,
                        accepting: accepting_tx,
                    };
                    run(sockets, stop, released, signals);
                    let _ = ended_tx.send(());
                })?;
            workers.workers.push(Worker {
                thread,
                accepting,
                ended,
            });
            ready.push(ready_rx);
        }
        for ready in ready {
            ready
                .await
                .map_err(|_| io::Error::other("a relay thread ended before it accepted"))??;
        }
        Ok(workers)
    }

    /// Resolves once every thread has stopped accepting and closed its listening sockets.
    pub(crate) async fn accepting_stopped(&mut self) {
        for worker in &mut self.workers {
            // An error means the thread is gone, and its sockets with it.
            let _ = (&mut worker.accepting).await;
        }
    }

    /// Ends the threads: each drops its runtime, and with it every task still there (a
    /// connection task dropped closes its sockets, as an aborted one does). Resolves once all
    /// have exited.
    pub(crate) async fn finish(self) {
        let _ = self.release.send(true);
        for worker in self.workers {
            // The thread's last act is to say so, which leaves join() only its exit to wait for.
            let _ = worker.ended.await;
            if worker.thread.join().is_err() {
                tracing::error!("a relay thread panicked");
            }
        }
    }
}

/// How a thread reports its progress to `serve`.
struct Signals {
    ready: oneshot::Sender<io::Result<()>>,
    accepting: oneshot::Sender<()>,
}

/// One relay thread: its runtime, its accept loops, then its connections until released.
fn run(
    sockets: Sockets,
    stop: watch::Receiver<bool>,
    mut released: watch::Receiver<bool>,
    signals: Signals,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            let _ = signals.ready.send(Err(error));
            return;
        }
    };
    runtime.block_on(async move {
        let mut loops = JoinSet::new();
        for (socket, shared) in sockets {
            match TcpListener::from_std(socket) {
                // Connections that an accept loop spawns run on this thread's runtime.
                Ok(socket) => {
                    loops.spawn(listener::accept_loop(socket, shared, stop.clone()));
                }
                Err(error) => {
                    let _ = signals.ready.send(Err(error));
                    return;
                }
            }
        }
        let _ = signals.ready.send(Ok(()));
        while loops.join_next().await.is_some() {}
        let _ = signals.accepting.send(());
        // Ends when released, or when `Workers` is dropped without `finish` (serve cancelled).
        let _ = released.wait_for(|released| *released).await;
    });
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncReadExt;

    use super::*;
    use crate::backend::Backend;
    use crate::config::Config;
    use crate::metrics::Metrics;
    use crate::proxy::registry::Registry;
    use crate::shutdown::Tracker;

    /// Two threads on one port, a backend that accepts and holds; returns the workers, the
    /// port, and the shared counters.
    async fn two_threads(
        backend: std::net::SocketAddr,
        stop: &watch::Receiver<bool>,
    ) -> (Workers, std::net::SocketAddr, Arc<Tracker>, Metrics) {
        let config = Config::from_toml(&format!(
            "[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:0\"\nbackend = \"b\"\n\
             [[backend]]\nname = \"b\"\nservers = [\"{backend}\"]\nloopback_sources = \"off\"\n"
        ))
        .unwrap();
        let metrics = Metrics::new();
        let tracker = Arc::new(Tracker::default());
        let registry = Arc::new(Registry::default());
        let group =
            crate::proxy::socket::listen_shared("127.0.0.1:0".parse().unwrap(), 16, 2).unwrap();
        let addr = group[0].local_addr().unwrap();
        let backend = Arc::new(Backend::new(&config.backends[0], &metrics));
        let sockets = group
            .into_iter()
            .map(|socket| {
                let shared = Arc::new(ListenerShared::new(
                    &config.listeners[0],
                    Arc::clone(&backend),
                    metrics.listener("l"),
                    Arc::clone(&tracker),
                    Arc::clone(&registry),
                ));
                vec![(socket, shared)]
            })
            .collect();
        let workers = Workers::start(sockets, stop).await.unwrap();
        (workers, addr, tracker, metrics)
    }

    /// What happens to connections still open when a thread's runtime is dropped: their tasks
    /// are dropped, which closes both sockets and counts them closed. And no thread is left.
    #[tokio::test]
    async fn finishing_closes_what_is_left_and_ends_the_threads() {
        let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend_addr = backend.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = backend.accept().await {
                held.push(stream);
            }
        });
        let (stop_tx, stop) = watch::channel(false);
        let (mut workers, addr, tracker, metrics) = two_threads(backend_addr, &stop).await;
        let mut clients = Vec::new();
        for _ in 0..8 {
            clients.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        let relayed = tokio::time::timeout(Duration::from_secs(5), async {
            while metrics.listener("l").active.get() < 8 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        relayed.await.expect("8 connections open");

        stop_tx.send(true).unwrap();
        workers.accepting_stopped().await;
        let refused = tokio::net::TcpStream::connect(addr).await.unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
        assert_eq!(
            tracker.count(),
            8,
            "stopping the accept loops closed connections"
        );

        workers.finish().await;
        assert_eq!(tracker.count(), 0);
        assert_eq!(metrics.listener("l").active.get(), 0);
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
