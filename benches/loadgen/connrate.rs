//! New connections per second: a raw backend that writes one byte and closes, on its own thread
//! and runtime, and clients that each connect through the target, read that byte and close, a
//! fixed number at once for a fixed time.

use std::io;
use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use super::procs::{Process, Scratch};
use super::targets::{self, Target};

/// The backend's listen(2) backlog: enough that 64 clients never wait on it.
const BACKLOG: i32 = 4096;
/// Time allowed for one connection: connect, then the byte.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// A loopback server that writes one byte to each connection and closes it. It runs a
/// current-thread runtime on a thread of its own, so it does not share a thread with the clients.
pub struct OneByteServer {
    pub port: u16,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl OneByteServer {
    pub fn start() -> Result<OneByteServer, String> {
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
        let thread = std::thread::Builder::new()
            .name("one-byte-backend".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = TcpListener::from_std(listener) else {
                        return;
                    };
                    tokio::select! {
                        () = serve(listener) => {}
                        _ = stopped => {}
                    }
                });
            })
            .map_err(|error| format!("cannot start the backend's thread: {error}"))?;
        Ok(OneByteServer {
            port,
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

async fn serve(listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((mut stream, _)) => {
                tokio::spawn(async move {
                    // A client that went away early is the client's business.
                    let _ = stream.write_all(b"x").await;
                });
            }
            // Out of fds or a connection reset before accept: keep serving the others.
            Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
}

impl Drop for OneByteServer {
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

/// Runs `concurrency` clients through `target` to a fresh one-byte backend for `duration`.
pub async fn run(
    scratch: &Scratch,
    target: Target,
    concurrency: usize,
    duration: Duration,
) -> Result<ConnRun, String> {
    let backend = OneByteServer::start()?;
    let path = targets::start(target, scratch, backend.port)?;
    let addr = SocketAddr::from(([127, 0, 0, 1], path.port));

    let cpu_before = path.proxy.as_ref().map(Process::cpu).transpose()?;
    let started = Instant::now();
    let deadline = started + duration;
    let mut clients = JoinSet::new();
    for _ in 0..concurrency {
        clients.spawn(client_loop(addr, deadline));
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

/// One client: connect, read one byte, close, until the deadline.
async fn client_loop(addr: SocketAddr, deadline: Instant) -> Tally {
    let mut tally = Tally::default();
    while Instant::now() < deadline {
        match tokio::time::timeout(STEP_TIMEOUT, one_connection(addr)).await {
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

async fn one_connection(addr: SocketAddr) -> io::Result<()> {
    let mut stream = TcpStream::connect(addr).await?;
    let mut byte = [0u8; 1];
    stream.read_exact(&mut byte).await?;
    Ok(())
}
