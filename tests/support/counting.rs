//! A counting backend: a TCP forwarder in front of a real broker that records when it accepted
//! each connection, so a test sees the rate at which the relay opens backend connections.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A forwarder from a free loopback port to `target` that timestamps every accept.
pub struct CountingBackend {
    /// Where the relay's backend connections go.
    pub addr: SocketAddr,
    accepts: Arc<Mutex<Vec<Instant>>>,
    task: JoinHandle<()>,
}

impl CountingBackend {
    /// Listens on a free loopback port and forwards each connection to `target`.
    pub async fn start(target: SocketAddr) -> CountingBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let accepts: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let seen = Arc::clone(&accepts);
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                seen.lock().expect("accept times").push(Instant::now());
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        CountingBackend {
            addr,
            accepts,
            task,
        }
    }

    /// Every accept so far, in order.
    pub fn accepts(&self) -> Vec<Instant> {
        let mut times = self.accepts.lock().expect("accept times").clone();
        times.sort();
        times
    }
}

impl Drop for CountingBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}
