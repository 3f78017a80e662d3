//! A broker the test can kill and bring back, or hang: a TCP forwarder in front of a real
//! broker (rumqttd cannot be stopped in-process). Killed, its port refuses and every connection
//! through it is cut, as when the broker process dies; hung, it accepts TCP and never answers,
//! as a wedged broker does. A recording forwarder also reads each client's CONNECT and notes
//! its client id, so a test can tell which broker a client landed on.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use super::within;

/// How long a recording forwarder waits for a client's CONNECT.
const WAIT_CONNECT: Duration = Duration::from_secs(5);

/// A forwarder from a fixed loopback port to `target`.
pub struct Forwarder {
    /// Where clients reach "the broker".
    pub addr: SocketAddr,
    target: SocketAddr,
    hung: Arc<AtomicBool>,
    /// The CONNECTs seen, when recording.
    seen: Option<Arc<Mutex<Vec<Seen>>>>,
    task: Option<JoinHandle<()>>,
}

/// A client's CONNECT as a recording forwarder saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Its client id.
    pub client_id: String,
    /// When the forwarder had read it.
    pub at: Instant,
}

impl Forwarder {
    /// Listens on a free loopback port and forwards to `target`.
    pub async fn start(target: SocketAddr) -> Forwarder {
        Forwarder::with(target, None).await
    }

    /// As [`Forwarder::start`], reading each client's CONNECT before it forwards it and noting
    /// its client id ([`Forwarder::seen`]); a connection that sends no CONNECT is closed.
    pub async fn recording(target: SocketAddr) -> Forwarder {
        Forwarder::with(target, Some(Arc::default())).await
    }

    async fn with(target: SocketAddr, seen: Option<Arc<Mutex<Vec<Seen>>>>) -> Forwarder {
        let mut forwarder = Forwarder {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            target,
            hung: Arc::new(AtomicBool::new(false)),
            seen,
            task: None,
        };
        forwarder.restart().await;
        forwarder
    }

    /// The CONNECTs a recording forwarder has seen, in order, across restarts.
    pub fn seen(&self) -> Vec<Seen> {
        let seen = self.seen.as_ref().expect("a recording forwarder");
        seen.lock().expect("the record").clone()
    }

    /// Closes the port and cuts every connection through it.
    pub async fn kill(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            // Wait until the task (which owns the listener and the connections) is dropped.
            let _ = within("the forwarder to stop", task).await;
        }
    }

    /// From now on, accepts connections and never answers them (`false`: forwards again).
    pub fn hang(&self, hung: bool) {
        self.hung.store(hung, Ordering::SeqCst);
    }

    /// Listens again on the same port (the first time: on a fresh one).
    pub async fn restart(&mut self) {
        self.kill().await;
        let addr = self.addr;
        let listener = within(&format!("rebind {addr}"), async {
            loop {
                let socket = TcpSocket::new_v4().expect("socket");
                socket.set_reuseaddr(true).expect("SO_REUSEADDR");
                match socket.bind(addr).and_then(|()| socket.listen(128)) {
                    Ok(listener) => return listener,
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        })
        .await;
        self.addr = listener.local_addr().expect("forwarder address");
        let (target, hung, seen) = (self.target, Arc::clone(&self.hung), self.seen.clone());
        self.task = Some(tokio::spawn(async move {
            // Owned here so that aborting this task drops (and so cuts) every connection.
            let mut connections = JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                while connections.try_join_next().is_some() {}
                if hung.load(Ordering::SeqCst) {
                    connections.spawn(async move {
                        let mut sink = [0u8; 1024];
                        while matches!(client.read(&mut sink).await, Ok(n) if n > 0) {}
                    });
                    continue;
                }
                let seen = seen.clone();
                connections.spawn(async move {
                    let mut first = Vec::new();
                    if let Some(seen) = seen {
                        let limit = brokerside::mqtt::DEFAULT_MAX_CONNECT_SIZE;
                        let read = brokerside::mqtt::read_connect(&mut client, limit, WAIT_CONNECT);
                        let Ok((bytes, info)) = read.await else {
                            return;
                        };
                        let at = Instant::now();
                        let client_id = info.client_id;
                        seen.lock()
                            .expect("the record")
                            .push(Seen { client_id, at });
                        first = bytes;
                    }
                    if let Ok(mut broker) = TcpStream::connect(target).await
                        && broker.write_all(&first).await.is_ok()
                    {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut broker).await;
                    }
                });
            }
        }));
    }
}
