//! New connections per second, plain or with a full TLS handshake each: a raw backend that
//! writes one byte and closes, on its own thread and runtime, and clients that each connect
//! through the target (and finish a TLS handshake with it), read that byte and close, a fixed
//! number at once for a fixed time. The same backend can instead read and discard everything
//! (the sink of the TLS bulk figure).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use super::procs::{Process, Scratch};
use super::targets::{self, Target};
use super::tls::Connector;

/// The backend's listen(2) backlog: enough that 64 clients never wait on it.
const BACKLOG: i32 = 4096;
/// Time allowed for one connection: connect, then the byte.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// What the backend does with each connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serve {
    /// Writes one byte and closes.
    OneByte,
    /// Reads and discards everything until the peer closes, counting the bytes.
    Sink,
}

/// A loopback server that serves each connection as [`Serve`] says. It runs a current-thread
/// runtime on a thread of its own, so it does not share a thread with the clients.
pub struct Backend {
    pub port: u16,
    tally: Arc<SinkTally>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// What a sink received: bytes, and connections read to their end.
#[derive(Default)]
struct SinkTally {
    bytes: AtomicU64,
    finished: AtomicU64,
}

impl Backend {
    pub fn start(mode: Serve) -> Result<Backend, String> {
        let listener =
            bind().map_err(|error| format!("cannot bind the one-byte backend: {error}"))?;
        let port = listener
            .local_addr()
            .map_err(|error| error.to_string())?
            .port();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| format!("cannot start the backend's runtime: {error}"))?;
        let (stop, stopped) = oneshot::channel();
        let tally = Arc::new(SinkTally::default());
        let counted = Arc::clone(&tally);
        let thread = std::thread::Builder::new()
            .name("one-byte-backend".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = TcpListener::from_std(listener) else {
                        return;
                    };
                    tokio::select! {
                        () = serve(listener, mode, counted) => {}
                        _ = stopped => {}
                    }
                });
            })
            .map_err(|error| format!("cannot start the backend's thread: {error}"))?;
        Ok(Backend {
            port,
            tally,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

/// A non-blocking listener on a free loopback port with a deep backlog.
fn bind() -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

impl Backend {
    /// Bytes a sink has received so far.
    pub fn received(&self) -> u64 {
        self.tally.bytes.load(Ordering::Relaxed)
    }

    /// Connections a sink has read to their end (or to an error).
    pub fn finished(&self) -> u64 {
        self.tally.finished.load(Ordering::Relaxed)
    }
}

async fn serve(listener: TcpListener, mode: Serve, tally: Arc<SinkTally>) {
    loop {
        match listener.accept().await {
            Ok((mut stream, _)) => {
                let tally = Arc::clone(&tally);
                tokio::spawn(async move {
                    // A client that went away early is the client's business.
                    match mode {
                        Serve::OneByte => {
                            let _ = stream.write_all(b"x").await;
                        }
                        Serve::Sink => {
                            let mut buffer = vec![0u8; 256 * 1024];
                            while let Ok(n @ 1..) = stream.read(&mut buffer).await {
                                tally.bytes.fetch_add(n as u64, Ordering::Relaxed);
                            }
                            tally.finished.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
            // Out of fds or a connection reset before accept: keep serving the others.
            Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What one run of the connection loop measured.
pub struct ConnRun {
    /// Connections completed (byte received) per second.
    pub per_second: f64,
    pub completed: u64,
    /// Connections that failed, and the first error seen.
    pub failed: u64,
    pub first_error: Option<String>,
    /// The proxy's CPU time over the run; `None` for direct.
    pub proxy_cpu: Option<Duration>,
}

/// Runs `concurrency` clients through `target` to a fresh one-byte backend for `duration`, each
/// connection made with `connector`: plain, or a full TLS handshake that the target terminates.
pub async fn run<C: Connector>(
    scratch: &Scratch,
    target: Target,
    connector: &C,
    concurrency: usize,
    duration: Duration,
) -> Result<ConnRun, String> {
    let backend = Backend::start(Serve::OneByte)?;
    let path = targets::start(target, scratch, backend.port, connector.server_tls())?;
    let addr = SocketAddr::from(([127, 0, 0, 1], path.port));

    let cpu_before = path.proxy.as_ref().map(Process::cpu).transpose()?;
    let started = Instant::now();
    let deadline = started + duration;
    let mut clients = JoinSet::new();
    for _ in 0..concurrency {
        clients.spawn(client_loop(connector.clone(), addr, deadline));
    }
    let (mut completed, mut failed, mut first_error) = (0, 0, None);
    while let Some(joined) = clients.join_next().await {
        let tally = joined.map_err(|error| format!("a client task failed: {error}"))?;
        completed += tally.completed;
        failed += tally.failed;
        first_error = first_error.or(tally.first_error);
    }
    let elapsed = started.elapsed();
    let proxy_cpu = match (&path.proxy, cpu_before) {
        (Some(proxy), Some(before)) => Some(proxy.cpu()?.saturating_sub(before)),
        _ => None,
    };
    if completed == 0 {
        return Err(format!(
            "no connection through {} completed: {}",
            target.label(),
            first_error.unwrap_or_default()
        ));
    }
    Ok(ConnRun {
        per_second: completed as f64 / elapsed.as_secs_f64(),
        completed,
        failed,
        first_error,
        proxy_cpu,
    })
}

#[derive(Default)]
struct Tally {
    completed: u64,
    failed: u64,
    first_error: Option<String>,
}

/// One client: connect (and shake hands), read one byte, close, until the deadline.
async fn client_loop<C: Connector>(connector: C, addr: SocketAddr, deadline: Instant) -> Tally {
    let mut tally = Tally::default();
    while Instant::now() < deadline {
        match tokio::time::timeout(STEP_TIMEOUT, one_connection(&connector, addr)).await {
            Ok(Ok(())) => tally.completed += 1,
            Ok(Err(error)) => {
                tally.failed += 1;
                tally.first_error.get_or_insert_with(|| error.to_string());
            }
            Err(_) => {
                tally.failed += 1;
                tally
                    .first_error
                    .get_or_insert_with(|| format!("no byte within {STEP_TIMEOUT:?}"));
            }
        }
    }
    tally
}

async fn one_connection<C: Connector>(connector: &C, addr: SocketAddr) -> io::Result<()> {
    let mut stream = connector.wrap(TcpStream::connect(addr).await?).await?;
    let mut byte = [0u8; 1];
    stream.read_exact(&mut byte).await?;
    Ok(())
}
