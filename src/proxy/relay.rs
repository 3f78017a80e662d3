//! The byte relay between a client and its backend, both directions in one task.
//!
//! An idle MQTT connection must cost almost nothing, so this holds no buffer while a connection
//! waits: it parks on socket readiness (the waker lives in the socket's own registration, not in
//! this task), and only when bytes are ready borrows the worker thread's buffer, reads, and writes
//! straight on. Only bytes the other side cannot take yet are kept, in a buffer or pipe of their
//! own, and reading that way stops until they are flushed (backpressure).
//!
//! A direction whose read fills the whole buffer is carrying bulk data: from then on it moves
//! bytes with splice(2) through a borrowed kernel pipe, so they are never copied through user
//! space. Small MQTT packets stay on the copy path, which is as few system calls per packet.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::pipe::Pipe;
use crate::net::memory_wait::{MemoryWait, send_now};
use crate::net::socket::{set_reset_on_close, shutdown_write};

/// Bytes read per call: large enough for bulk transfers, borrowed only while data is ready.
const BUFFER_SIZE: usize = 64 * 1024;
/// A sleep with nothing due is set this far ahead (tokio's own "never" is not public).
const FAR_FUTURE: Duration = Duration::from_secs(365 * 24 * 3600);
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
    /// One side sent a reset: the broker was reset too, or the client got a FIN.
    Reset(Side),
    /// No byte moved for the idle timeout.
    IdleTimeout,
    /// One direction had ended and the other stayed silent for the half-close timeout.
    HalfCloseTimeout,
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

/// Bytes read but not yet accepted by the destination, and how a write of them is waited for.
struct Owed {
    bytes: OwedBytes,
    /// Retries where the kernel refused a write for want of memory (no wake-up would come).
    wait: MemoryWait,
}

/// Where the owed bytes are.
enum OwedBytes {
    /// Copied out of the thread's buffer; `written` of them are sent.
    Copied { bytes: Vec<u8>, written: usize },
    /// Still in a pipe: `len` bytes.
    Piped { pipe: Pipe, len: usize },
}

impl Owed {
    fn new(bytes: OwedBytes) -> Box<Owed> {
        Box::new(Owed {
            bytes,
            wait: MemoryWait::default(),
        })
    }

    /// Writes what is owed to `dst` until it is all sent (Ready(Ok)) or `dst` would block.
    fn poll_flush(
        &mut self,
        cx: &mut Context<'_>,
        dst: &mut TcpStream,
        counter: &IntCounter,
    ) -> Poll<io::Result<()>> {
        let wait = &mut self.wait;
        match &mut self.bytes {
            OwedBytes::Copied { bytes, written } => {
                while *written < bytes.len() {
                    let n = match Pin::new(&mut *dst).poll_write(cx, &bytes[*written..]) {
                        Poll::Ready(result) => result?,
                        Poll::Pending => {
                            ready!(wait.poll_retry(cx, dst));
                            match send_now(dst, &bytes[*written..]) {
                                Ok(n) => n,
                                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                                Err(error) => return Poll::Ready(Err(error)),
                            }
                        }
                    };
                    if n == 0 {
                        return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                    }
                    wait.clear();
                    *written += n;
                    counter.inc_by(n as u64);
                }
            }
            OwedBytes::Piped { pipe, len } => {
                while *len > 0 {
                    let fd = dst.as_raw_fd();
                    let drained = match dst.poll_write_ready(cx) {
                        Poll::Ready(Ok(())) => {
                            dst.try_io(Interest::WRITABLE, || pipe.drain_to(fd, *len))
                        }
                        Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                        Poll::Pending => {
                            ready!(wait.poll_retry(cx, dst));
                            pipe.drain_to(fd, *len)
                        }
                    };
                    match drained {
                        Ok(n) => {
                            wait.clear();
                            *len -= n;
                            counter.inc_by(n as u64);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(error) => return Poll::Ready(Err(error)),
                    }
                }
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Gives an emptied pipe back for the next transfer.
    fn release(self) {
        if let OwedBytes::Piped { pipe, .. } = self.bytes {
            pipe.give_back();
        }
    }
}

/// One direction of the relay: what is owed to the destination and whether the source ended.
/// Kept to a pointer, three flags and a timeout, because every idle connection carries two.
#[derive(Default)]
struct Direction {
    /// Present only while the destination is behind.
    owed: Option<Box<Owed>>,
    /// The source sent its FIN and it was passed on.
    done: bool,
    /// Bytes moved since the relay last looked (for the idle timer).
    moved: bool,
    /// Bulk data seen: move bytes with splice.
    splice: bool,
    /// The half-close timeout to arm once either direction ends, in milliseconds (0 = none, or
    /// armed). Kept here, in padding the struct has anyway, rather than as a field of `Relay`
    /// that would make every idle connection's task 8 bytes larger than tokio's 128-byte step.
    half_close_ms: u32,
}

/// A failure while moving bytes, with the side it happened on.
pub(super) struct Failure {
    pub(super) side: Side,
    pub(super) error: io::Error,
}

impl Failure {
    /// How a relay that failed ends; any error other than a reset is a failure.
    ///
    /// A client's reset is passed on to the broker as a reset: it is on this host or a near one,
    /// and learns at once that the client is gone. A broker's reset reaches the client as a FIN
    /// after the bytes already queued to it, as HAProxy, NGINX and Envoy end it by default. A
    /// reset is sent once and never retransmitted: a client whose receive window was shrunk by
    /// memory pressure, or that had dropped the last segment, refuses it, and then waits, with
    /// nothing queued, for its keepalive (issue 13). A FIN is retransmitted until it arrives.
    pub(super) fn end(self, backend: &TcpStream) -> RelayEnd {
        if !is_reset(&self.error) {
            return RelayEnd::Failed(self.side, self.error);
        }
        if self.side == Side::Client {
            set_reset_on_close(backend);
        }
        RelayEnd::Reset(self.side)
    }
}

enum Step {
    /// Everything read was written.
    Sent(usize),
    /// Part was written; the rest is owed.
    Owed(Box<Owed>, usize),
    /// The source sent a FIN.
    Eof,
    Failed(Failure),
}

impl Step {
    fn failed(side: Side, error: io::Error) -> Step {
        Step::Failed(Failure { side, error })
    }
}

/// A socket and the side it is on.
type End<'a> = (&'a mut TcpStream, Side);

impl Direction {
    /// Moves bytes from `src` to `dst` until one of them would block. Ready(Ok) once the source's
    /// FIN has been passed on. `last` says the other direction has already ended: then the FIN
    /// goes out with the close that follows, one system call fewer.
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        src: End<'_>,
        dst: End<'_>,
        counter: &IntCounter,
        last: bool,
    ) -> Poll<Result<(), Failure>> {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        for _ in 0..READS_PER_POLL {
            if let Some(owed) = &mut self.owed {
                if let Err(error) = ready!(owed.poll_flush(cx, dst.0, counter)) {
                    return Poll::Ready(Err(Failure { side: dst.1, error }));
                }
                self.moved = true;
                // Flushed: give the memory (or pipe) back, so an idle connection holds none.
                if let Some(owed) = self.owed.take() {
                    owed.release();
                }
            }
            let step = if self.splice {
                ready!(splice_transfer(
                    cx,
                    (&mut *src.0, src.1),
                    (&mut *dst.0, dst.1)
                ))
            } else {
                ready!(copy_transfer(
                    cx,
                    (&mut *src.0, src.1),
                    (&mut *dst.0, dst.1)
                ))
            };
            match step {
                Step::Sent(n) => {
                    self.moved = true;
                    self.splice |= n == BUFFER_SIZE;
                    counter.inc_by(n as u64);
                }
                Step::Owed(owed, sent) => {
                    self.moved = true;
                    counter.inc_by(sent as u64);
                    self.owed = Some(owed);
                }
                Step::Eof => {
                    if !last {
                        shutdown_write(dst.0);
                    }
                    self.done = true;
                    return Poll::Ready(Ok(()));
                }
                Step::Failed(failure) => return Poll::Ready(Err(failure)),
            }
        }
        // Budget spent with data still flowing: let other connections run, then come back.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// One read from `src` into the thread's buffer and one write of it to `dst`. Pending (with the
/// waker registered) when `src` has nothing. A short read marks the socket drained, so the next
/// poll waits for readiness instead of spending a system call on EAGAIN.
fn copy_transfer(
    cx: &mut Context<'_>,
    (src, src_side): End<'_>,
    (dst, dst_side): End<'_>,
) -> Poll<Step> {
    BUFFER.with_borrow_mut(|buffer| {
        let mut read_buf = ReadBuf::new(buffer);
        let read = match ready!(Pin::new(&mut *src).poll_read(cx, &mut read_buf)) {
            Ok(()) if read_buf.filled().is_empty() => return Poll::Ready(Step::Eof),
            Ok(()) => read_buf.filled().len(),
            Err(error) => {
                return Poll::Ready(Step::failed(src_side, error));
            }
        };
        let sent = match dst.try_write(&buffer[..read]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(error) => return Poll::Ready(Step::failed(dst_side, error)),
        };
        Poll::Ready(if sent == read {
            Step::Sent(read)
        } else {
            let bytes = buffer[sent..read].to_vec();
            Step::Owed(Owed::new(OwedBytes::Copied { bytes, written: 0 }), sent)
        })
    })
}

/// One splice from `src` into a borrowed pipe and on to `dst`; the pipe goes back as soon as it
/// is empty. Without a pipe to borrow, one copy instead.
fn splice_transfer(
    cx: &mut Context<'_>,
    (src, src_side): End<'_>,
    (dst, dst_side): End<'_>,
) -> Poll<Step> {
    let (pipe, read) = loop {
        if let Err(error) = ready!(src.poll_read_ready(cx)) {
            return Poll::Ready(Step::failed(src_side, error));
        }
        // Borrowed only once bytes are ready: a direction waiting for data holds no pipe.
        let Some(pipe) = Pipe::take() else {
            return copy_transfer(cx, (src, src_side), (dst, dst_side));
        };
        let fd = src.as_raw_fd();
        match src.try_io(Interest::READABLE, || pipe.fill_from(fd)) {
            Ok(0) => {
                pipe.give_back();
                return Poll::Ready(Step::Eof);
            }
            Ok(read) => break (pipe, read),
            // WouldBlock cleared the readiness: wait for the next bytes.
            Err(error) => {
                pipe.give_back();
                if error.kind() != io::ErrorKind::WouldBlock {
                    return Poll::Ready(Step::failed(src_side, error));
                }
            }
        }
    };
    let fd = dst.as_raw_fd();
    let mut left = read;
    while left > 0 {
        match dst.try_io(Interest::WRITABLE, || pipe.drain_to(fd, left)) {
            Ok(n) => left -= n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let owed = Owed::new(OwedBytes::Piped { pipe, len: left });
                return Poll::Ready(Step::Owed(owed, read - left));
            }
            // The pipe still holds bytes: it is dropped (closed), never pooled.
            Err(error) => {
                return Poll::Ready(Step::failed(dst_side, error));
            }
        }
    }
    pipe.give_back();
    Poll::Ready(Step::Sent(read))
}

fn is_reset(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
    )
}

/// The relay's timer: re-armed lazily, from the time of the last transfer, when it fires, rather
/// than on every transfer. Boxed, and present only where an idle timeout is configured or once a
/// direction has ended with a half-close timeout configured.
pub(super) struct Timer {
    sleep: Sleep,
    deadlines: Deadlines,
}

/// What the timer times, as plain data.
struct Deadlines {
    /// Close after this long with no byte either way.
    idle: Option<Duration>,
    /// Armed once one direction has ended: close after this long without a byte on the other.
    half_close: Option<Duration>,
    /// The last transfer (or when the timer started, or when the half-close timeout was armed).
    last: Instant,
}

impl Deadlines {
    fn idle_due(&self) -> Option<Instant> {
        self.idle.map(|timeout| self.last + timeout)
    }

    fn half_close_due(&self) -> Option<Instant> {
        self.half_close.map(|timeout| self.last + timeout)
    }

    /// The earliest deadline; far in the future when none is set.
    fn next(&self) -> Instant {
        [self.idle_due(), self.half_close_due()]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(self.last + FAR_FUTURE)
    }
}

impl Timer {
    pub(super) fn new(idle: Option<Duration>) -> Pin<Box<Timer>> {
        let deadlines = Deadlines {
            idle,
            half_close: None,
            last: Instant::now(),
        };
        Box::pin(Timer {
            sleep: tokio::time::sleep_until(deadlines.next()),
            deadlines,
        })
    }

    /// The pinned sleep and the plain deadlines.
    fn project(self: Pin<&mut Self>) -> (Pin<&mut Sleep>, &mut Deadlines) {
        // SAFETY: `sleep` is structurally pinned inside the pinned box and never moved out;
        // `deadlines` is plain data, never pinned.
        let Timer { sleep, deadlines } = unsafe { self.get_unchecked_mut() };
        (unsafe { Pin::new_unchecked(sleep) }, deadlines)
    }

    /// The timeout that ends the relay now, if one is due; else the sleep is set for the next.
    pub(super) fn poll_due(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        moved: bool,
    ) -> Option<RelayEnd> {
        let (mut sleep, deadlines) = self.project();
        if moved {
            deadlines.last = Instant::now();
        }
        while sleep.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            if deadlines.half_close_due().is_some_and(|due| now >= due) {
                return Some(RelayEnd::HalfCloseTimeout);
            }
            if deadlines.idle_due().is_some_and(|due| now >= due) {
                return Some(RelayEnd::IdleTimeout);
            }
            sleep.as_mut().reset(deadlines.next());
        }
        None
    }

    /// Starts the half-close timeout, counted from now.
    pub(super) fn arm_half_close(self: Pin<&mut Self>, timeout: Duration) {
        let (sleep, deadlines) = self.project();
        deadlines.half_close = Some(timeout);
        deadlines.last = Instant::now();
        sleep.reset(deadlines.next());
    }
}

/// The relay of one connection: it owns both sockets and a few words of state, because every
/// idle connection holds one for its whole life.
pub struct Relay {
    client: TcpStream,
    backend: TcpStream,
    upstream: Direction,
    downstream: Direction,
    /// Allocated only when there is something to time: an idle timeout from the start, a
    /// half-close timeout once a direction ends.
    timer: Option<Pin<Box<Timer>>>,
}

/// What ends a relay besides its sockets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timeouts {
    /// Close after this long with no byte either way.
    pub idle: Option<Duration>,
    /// Once one direction has ended, close after this long without a byte on the other.
    pub half_close: Option<Duration>,
}

impl Relay {
    /// A relay between `client` and `backend` that ends on `timeouts` as well as on its sockets.
    pub fn new(client: TcpStream, backend: TcpStream, timeouts: Timeouts) -> Relay {
        let half_close_ms = timeouts.half_close.map_or(0, |timeout| {
            u32::try_from(timeout.as_millis())
                .unwrap_or(u32::MAX)
                .max(1)
        });
        let direction = || Direction {
            half_close_ms,
            ..Direction::default()
        };
        Relay {
            client,
            backend,
            upstream: direction(),
            downstream: direction(),
            timer: timeouts.idle.map(|idle| Timer::new(Some(idle))),
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
    /// moves for the idle timeout. Half-closes are carried across; a reset ends the other side
    /// as [`Failure::end`] says.
    pub fn poll_relay(&mut self, cx: &mut Context<'_>, counters: Counters<'_>) -> Poll<RelayEnd> {
        match ready!(self.poll_inner(cx, counters)) {
            Ok(end) => Poll::Ready(end),
            Err(failure) => Poll::Ready(failure.end(&self.backend)),
        }
    }

    fn poll_inner(
        &mut self,
        cx: &mut Context<'_>,
        counters: Counters<'_>,
    ) -> Poll<Result<RelayEnd, Failure>> {
        let up = self.upstream.poll(
            cx,
            (&mut self.client, Side::Client),
            (&mut self.backend, Side::Backend),
            counters.to_backend,
            self.downstream.done,
        );
        let down = self.downstream.poll(
            cx,
            (&mut self.backend, Side::Backend),
            (&mut self.client, Side::Client),
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
        if self.upstream.done || self.downstream.done {
            // Armed once, as the first direction ends; the idle timeout (if any) still applies.
            let ms = std::mem::take(&mut self.upstream.half_close_ms)
                .max(std::mem::take(&mut self.downstream.half_close_ms));
            if ms > 0 {
                let timeout = Duration::from_millis(u64::from(ms));
                let timer = self.timer.get_or_insert_with(|| Timer::new(None));
                timer.as_mut().arm_half_close(timeout);
            }
        }
        if let Some(timer) = &mut self.timer {
            let moved = std::mem::take(&mut self.upstream.moved)
                | std::mem::take(&mut self.downstream.moved);
            if let Some(end) = timer.as_mut().poll_due(cx, moved) {
                return Poll::Ready(Ok(end));
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let outer = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (inner, _) = listener.accept().await.unwrap();
        (outer, inner)
    }

    fn pattern(i: usize) -> u8 {
        (i % 251) as u8
    }

    /// A bulk upload with a stalled reader: the relay switches to splice, holds the unsent bytes
    /// in a pipe while the backend is behind, and delivers every byte in order before the FIN.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bulk_bytes_go_through_splice_in_order_and_half_close_follows() {
        const TOTAL: usize = 32 * 1024 * 1024;
        let (mut client, client_inner) = pair().await;
        let (mut backend, backend_inner) = pair().await;
        let lent_before = Pipe::lent();
        let relay = tokio::spawn(async move {
            let (up, down) = (
                IntCounter::new("up", "up").unwrap(),
                IntCounter::new("d", "d").unwrap(),
            );
            let mut relay = Relay::new(client_inner, backend_inner, Timeouts::default());
            let end = std::future::poll_fn(|cx| {
                relay.poll_relay(
                    cx,
                    Counters {
                        to_backend: &up,
                        to_client: &down,
                    },
                )
            })
            .await;
            (end, up.get(), down.get())
        });
        let writer = tokio::spawn(async move {
            let data: Vec<u8> = (0..TOTAL).map(pattern).collect();
            client.write_all(&data).await.unwrap();
            client.shutdown().await.unwrap();
            let mut reply = Vec::new();
            client.read_to_end(&mut reply).await.unwrap();
            reply
        });
        // Let the relay fill every buffer on the way before reading anything.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut received = Vec::with_capacity(TOTAL);
        backend.read_to_end(&mut received).await.unwrap();
        assert_eq!(received.len(), TOTAL);
        let first_wrong = received
            .iter()
            .enumerate()
            .position(|(i, b)| *b != pattern(i));
        assert_eq!(first_wrong, None, "bytes reordered or corrupted");
        backend.write_all(b"done").await.unwrap();
        backend.shutdown().await.unwrap();
        assert_eq!(writer.await.unwrap(), b"done");
        let (end, up, down) = relay.await.unwrap();
        assert!(matches!(end, RelayEnd::Closed), "{end:?}");
        assert_eq!((up, down), (TOTAL as u64, 4));
        assert!(
            Pipe::lent() > lent_before,
            "the bulk upload never used splice"
        );
    }
}
