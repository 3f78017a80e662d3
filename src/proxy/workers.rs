//! The relay's threads, one per core as HAProxy, NGINX and Envoy run theirs: each is a std thread
//! with its own single-threaded runtime that accepts on its own SO_REUSEPORT socket of every
//! listener, so the kernel spreads new clients over the threads and a connection lives and dies
//! on the thread that accepted it. Nothing on the relay path wakes another thread (a shared
//! multi-thread runtime spends about a tenth of its CPU per connection on such hand-offs).
//! Listeners are handed to the running threads as commands, so a reload can add one; the drain,
//! a reload and failback reach connections through the registry's abort handles, which work
//! across runtimes.

use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

use super::connection::ListenerShared;
use super::listener;

/// One listener's socket for one thread, and how its accept loop is stopped and awaited.
pub(crate) struct Accept {
    pub(crate) socket: std::net::TcpListener,
    pub(crate) shared: Arc<ListenerShared>,
    pub(crate) stop: watch::Receiver<bool>,
    /// Dropped when the accept loop has ended and its socket is closed.
    pub(crate) done: mpsc::Sender<()>,
}

/// The running relay threads.
pub(crate) struct Workers {
    workers: Vec<Worker>,
}

struct Worker {
    thread: JoinHandle<()>,
    /// Listeners to accept on; dropping it ends the thread (its runtime with it).
    commands: mpsc::UnboundedSender<Accept>,
    /// Resolves as the thread ends, its runtime dropped.
    ended: oneshot::Receiver<()>,
}

impl Workers {
    /// Starts `threads` relay threads, accepting on nothing yet. Returns once every thread runs,
    /// or with the first thread's failure (the others then end).
    pub(crate) async fn start(threads: usize) -> io::Result<Workers> {
        let mut workers = Workers {
            workers: Vec::with_capacity(threads),
        };
        let mut ready = Vec::with_capacity(threads);
        for index in 0..threads {
            let (ready_tx, ready_rx) = oneshot::channel();
            let (ended_tx, ended) = oneshot::channel();
            let (commands, received) = mpsc::unbounded_channel();
            let thread = std::thread::Builder::new()
                .name(format!("relay-{index}"))
                .spawn(move || {
                    run(received, ready_tx);
                    let _ = ended_tx.send(());
                })?;
            workers.workers.push(Worker {
                thread,
                commands,
                ended,
            });
            ready.push(ready_rx);
        }
        for ready in ready {
            ready
                .await
                .map_err(|_| io::Error::other("a relay thread ended before it started"))??;
        }
        Ok(workers)
    }

    /// How many threads run.
    pub(crate) fn threads(&self) -> usize {
        self.workers.len()
    }

    /// Hands each thread its socket of one listener (`accepts[i]` to thread `i`).
    pub(crate) fn accept(&self, accepts: Vec<Accept>) {
        for (worker, accept) in self.workers.iter().zip(accepts) {
            // A thread that is gone drops the command, and its socket with it.
            let _ = worker.commands.send(accept);
        }
    }

    /// Ends the threads: each drops its runtime, and with it every task still there (a
    /// connection task dropped closes its sockets, as an aborted one does). Resolves once all
    /// have exited.
    pub(crate) async fn finish(self) {
        for worker in self.workers {
            drop(worker.commands);
            // The thread's last act is to say so, which leaves join() only its exit to wait for.
            let _ = worker.ended.await;
            if worker.thread.join().is_err() {
                tracing::error!("a relay thread panicked");
            }
        }
    }
}

/// One relay thread: its runtime, then an accept loop for each listener it is handed, until
/// the command channel closes.
fn run(mut commands: mpsc::UnboundedReceiver<Accept>, ready: oneshot::Sender<io::Result<()>>) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            let _ = ready.send(Err(error));
            return;
        }
    };
    runtime.block_on(async move {
        let _ = ready.send(Ok(()));
        tokio::spawn(crate::memory::reclaim_periodically());
        while let Some(accept) = commands.recv().await {
            match TcpListener::from_std(accept.socket) {
                // Connections that an accept loop spawns run on this thread's runtime.
                Ok(socket) => {
                    tokio::spawn(listener::accept_loop(
                        socket,
                        accept.shared,
                        accept.stop,
                        accept.done,
                    ));
                }
                Err(error) => {
                    tracing::error!(listener = %accept.shared.name, %error, "a relay thread cannot accept on its socket");
                }
            }
        }
    });
}
