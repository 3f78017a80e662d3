//! The byte relay between a client and its backend, both directions in one task.
//!
//! An idle MQTT connection must cost almost nothing, so this holds no buffer while a connection
//! waits: it parks on socket readiness (`poll_read_ready`, which keeps its waker in the socket's
//! own registration, not in this task), and only when bytes are ready borrows the worker thread's
//! buffer, reads, and writes straight on. Only bytes the other side cannot take yet are copied
//! into a buffer of their own, and reading that way stops until they are flushed (backpressure).

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use prometheus::IntCounter;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::socket::{set_reset_on_close, shutdown_write};

/// Bytes read per call: large enough for bulk transfers, borrowed only while data is ready.
const BUFFER_SIZE: usize = 64 * 1024;
/// Reads per direction before yielding, so a bulk stream cannot starve other connections.
const READS_PER_POLL: usize = 16;

thread_local! {
    static BUFFER: RefCell<Box<[u8]>> = RefCell::new(vec![0; BUFFER_SIZE].into_boxed_slice());
}

/// Which end of a relayed connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The MQTT client (or the load balancer in front of it).
    Client,
    /// The broker.
    Backend,
}

/// How a relay ended.
#[derive(Debug)]
pub enum RelayEnd {
    /// Both directions finished with a FIN.
    Closed,
    /// One side sent a reset; the other side was reset too.
    Reset(Side),
    /// No byte moved for the idle timeout.
    IdleTimeout,
    /// A socket error other than a reset, on the given side.
    Failed(Side, io::Error),
}

/// The byte counters of one relay, one per direction.
pub struct Counters<'a> {
    /// Client -> backend bytes.
    pub to_backend: &'a IntCounter,
    /// Backend -> client bytes.
    pub to_client: &'a IntCounter,
}

/// Bytes read but not yet accepted by the destination.
struct Owed {
    bytes: Vec<u8>,
    written: usize,
}

/// One direction of the relay: what is owed to the destination and whether the source ended.
/// Kept to a pointer and two flags, because every idle connection carries two of these.
#[derive(Default)]
struct Direction {
    /// Present only while the destination is behind.
    owed: Option<Box<Owed>>,
    /// The source sent its FIN and it was passed on.
    done: bool,
    /// Bytes moved since the relay last looked (for the idle timer).
    moved: bool,
}

/// A failure while moving bytes, with the side it happened on.
struct Failure {
    side: Side,
    error: io::Error,
}

enum Step {
    /// Everything read was written.
    Sent(usize),
    /// Part was written; the rest is owed.
    Owed(Vec<u8>, usize),
    /// The source sent a FIN.
    Eof,
    /// Nothing to read after all.
    WouldBlock,
    Failed(Failure),
}

impl Direction {
    /// Moves bytes from `src` to `dst` until one of them would block. Ready(Ok) once the source's
    /// FIN has been passed on. `last` says the other direction has already ended: then the FIN
    /// goes out with the close that follows, one system call fewer.
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        src: (&TcpStream, Side),
        dst: (&TcpStream, Side),
        counter: &IntCounter,
        last: bool,
    ) -> Poll<Result<(), Failure>> {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        let fail = |side, error| Poll::Ready(Err(Failure { side, error }));
        for _ in 0..READS_PER_POLL {
            if let Some(owed) = &mut self.owed {
                while owed.written < owed.bytes.len() {
                    if let Err(error) = ready!(dst.0.poll_write_ready(cx)) {
                        return fail(dst.1, error);
                    }
                    match dst.0.try_write(&owed.bytes[owed.written..]) {
                        Ok(n) => {
                            owed.written += n;
                            self.moved = true;
                            counter.inc_by(n as u64);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(error) => return fail(dst.1, error),
                    }
                }
                // Flushed: give the memory back, so an idle connection holds none.
                self.owed = None;
            }
            if let Err(error) = ready!(src.0.poll_read_ready(cx)) {
                return fail(src.1, error);
            }
            match transfer(src, dst) {
                Step::Sent(n) => {
                    self.moved = true;
                    counter.inc_by(n as u64);
                }
                Step::Owed(bytes, sent) => {
                    self.moved = true;
                    counter.inc_by(sent as u64);
                    self.owed = Some(Box::new(Owed { bytes, written: 0 }));
                }
                Step::Eof => {
                    if !last {
                        shutdown_write(dst.0);
                    }
                    self.done = true;
                    return Poll::Ready(Ok(()));
                }
                Step::WouldBlock => {}
                Step::Failed(failure) => return Poll::Ready(Err(failure)),
            }
        }
        // Budget spent with data still flowing: let other connections run, then come back.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// One read from `src` into the thread's buffer and one write of it to `dst`.
fn transfer(src: (&TcpStream, Side), dst: (&TcpStream, Side)) -> Step {
    BUFFER.with_borrow_mut(|buffer| {
        let read = match src.0.try_read(buffer) {
            Ok(0) => return Step::Eof,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::WouldBlock,
            Err(error) => return Step::Failed(Failure { side: src.1, error }),
        };
        match dst.0.try_write(&buffer[..read]) {
            Ok(n) if n == read => Step::Sent(n),
            Ok(n) => Step::Owed(buffer[n..read].to_vec(), n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                Step::Owed(buffer[..read].to_vec(), 0)
            }
            Err(error) => Step::Failed(Failure { side: dst.1, error }),
        }
    })
}

fn is_reset(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
    )
}

/// The idle timer: re-armed lazily, from the time of the last transfer, when it fires, rather
/// than on every transfer. Boxed, and present only where an idle timeout is configured.
struct IdleTimer {
    sleep: Sleep,
    timeout: Duration,
    last: Instant,
}

/// The relay of one connection: it owns both sockets and a few words of state, because every
/// idle connection holds one for its whole life.
pub struct Relay {
    client: TcpStream,
    backend: TcpStream,
    upstream: Direction,
    downstream: Direction,
    idle: Option<Pin<Box<IdleTimer>>>,
}

impl Relay {
    /// A relay between `client` and `backend` that ends after `idle_timeout` without traffic.
    pub fn new(client: TcpStream, backend: TcpStream, idle_timeout: Option<Duration>) -> Relay {
        Relay {
            client,
            backend,
            upstream: Direction::default(),
            downstream: Direction::default(),
            idle: idle_timeout.map(|timeout| {
                Box::pin(IdleTimer {
                    sleep: tokio::time::sleep(timeout),
                    timeout,
                    last: Instant::now(),
                })
            }),
        }
    }

    /// The client's socket.
    pub fn client(&self) -> &TcpStream {
        &self.client
    }

    /// The backend's socket.
    pub fn backend(&self) -> &TcpStream {
        &self.backend
    }

    /// Moves bytes both ways until both directions have ended, one side resets, or nothing
    /// moves for the idle timeout. Half-closes are carried across; a reset from one side is
    /// passed on as a reset to the other.
    pub fn poll_relay(&mut self, cx: &mut Context<'_>, counters: Counters<'_>) -> Poll<RelayEnd> {
        match self.poll_inner(cx, counters) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(end)) => Poll::Ready(end),
            Poll::Ready(Err(Failure { side, error })) if is_reset(&error) => {
                // Pass the reset on: the other side learns at once, as it would without a proxy.
                set_reset_on_close(match side {
                    Side::Client => &self.backend,
                    Side::Backend => &self.client,
                });
                Poll::Ready(RelayEnd::Reset(side))
            }
            Poll::Ready(Err(Failure { side, error })) => Poll::Ready(RelayEnd::Failed(side, error)),
        }
    }

    fn poll_inner(
        &mut self,
        cx: &mut Context<'_>,
        counters: Counters<'_>,
    ) -> Poll<Result<RelayEnd, Failure>> {
        let up = self.upstream.poll(
            cx,
            (&self.client, Side::Client),
            (&self.backend, Side::Backend),
            counters.to_backend,
            self.downstream.done,
        );
        let down = self.downstream.poll(
            cx,
            (&self.backend, Side::Backend),
            (&self.client, Side::Client),
            counters.to_client,
            self.upstream.done,
        );
        for result in [up, down] {
            if let Poll::Ready(Err(failure)) = result {
                return Poll::Ready(Err(failure));
            }
        }
        if self.upstream.done && self.downstream.done {
            return Poll::Ready(Ok(RelayEnd::Closed));
        }
        if let Some(idle) = &mut self.idle {
            let moved = std::mem::take(&mut self.upstream.moved)
                | std::mem::take(&mut self.downstream.moved);
            // SAFETY: `sleep` is structurally pinned inside the pinned box and never moved out;
            // the other fields are plain data.
            let IdleTimer {
                sleep,
                timeout,
                last,
            } = unsafe { idle.as_mut().get_unchecked_mut() };
            let mut sleep = unsafe { Pin::new_unchecked(sleep) };
            if moved {
                *last = Instant::now();
            }
            while sleep.as_mut().poll(cx).is_ready() {
                let due = *last + *timeout;
                if Instant::now() >= due {
                    return Poll::Ready(Ok(RelayEnd::IdleTimeout));
                }
                sleep.as_mut().reset(due);
            }
        }
        Poll::Pending
    }
}
