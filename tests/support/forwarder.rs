//! A broker the test can kill and bring back, or hang: a TCP forwarder in front of a real
//! broker (rumqttd cannot be stopped in-process). Killed, its port refuses and every connection
//! through it is cut, as when the broker process dies; hung, it accepts TCP and never answers,
//! as a wedged broker does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use super::within;

/// A forwarder from a fixed loopback port to `target`.
pub struct Forwarder {
    /// Where clients reach "the broker".
    pub addr: SocketAddr,
    target: SocketAddr,
    hung: Arc<AtomicBool>,
    task: Option<JoinHandle<()>>,
}

impl Forwarder {
    /// Listens on a free loopback port and forwards to `target`.
    pub async fn start(target: SocketAddr) -> Forwarder {
        let mut forwarder = Forwarder {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            target,
            hung: Arc::new(AtomicBool::new(false)),
            task: None,
        };
        forwarder.restart().await;
        forwarder
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
        let (target, hung) = (self.target, Arc::clone(&self.hung));
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
                connections.spawn(async move {
                    if let Ok(mut broker) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut broker).await;
                    }
                });
            }
        }));
    }
}
