//! Writes the kernel refuses for want of memory rather than room.
//!
//! A socket write that would block normally means the peer is behind: bytes sit in the send
//! queue, and the ACKs that drain it wake the writer (epoll's EPOLLOUT). When the host is past
//! its TCP memory limit (`net.ipv4.tcp_mem`), the kernel refuses writes to a socket whose send
//! queue is empty. No ACK is due on such a socket, so no wake-up ever comes: a relay waiting for
//! one stalled until something else happened on the connection (a keepalive, minutes later).
//! The kernel's own blocking writers retry after a random 2-200 ms in that state
//! (`sk_stream_wait_memory`); [`MemoryWait`] does the same for the relay, and only when the send
//! queue is empty, so a client that merely reads slowly costs no timer.

use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::time::Sleep;

/// Retries wait between these two (the kernel's own blocking writers wait 2-200 ms).
const RETRY_MIN: Duration = Duration::from_millis(5);
const RETRY_MAX: Duration = Duration::from_millis(200);
/// The warning that the host is out of TCP memory is logged at most this often.
const WARN_EVERY_SECS: u64 = 60;

/// A write blocked on a socket: waits for its writability as usual, and retries on a short
/// random timer where the kernel refused it for want of memory. Present only on a direction
/// that owes bytes (boxed with them); empty until the case arises.
#[derive(Default)]
pub struct MemoryWait(Option<Pin<Box<Sleep>>>);

impl MemoryWait {
    /// Called after a write to `socket` would block (its writability waker is registered):
    /// Ready when the write should be tried again directly, because the send queue is empty (no
    /// ACK will wake the writer) and the retry timer has fired; Pending otherwise.
    pub fn poll_retry(&mut self, cx: &mut Context<'_>, socket: &impl AsRawFd) -> Poll<()> {
        let sleep = match &mut self.0 {
            Some(sleep) => sleep,
            None => {
                if !send_queue_empty(socket) {
                    return Poll::Pending;
                }
                warn_now_and_then();
                let wait = RETRY_MIN + (RETRY_MAX - RETRY_MIN).mul_f64(fastrand::f64());
                self.0.insert(Box::pin(tokio::time::sleep(wait)))
            }
        };
        ready!(sleep.as_mut().poll(cx));
        self.0 = None;
        Poll::Ready(())
    }

    /// A write went through: nothing to retry.
    pub fn clear(&mut self) {
        self.0 = None;
    }
}

/// Whether `socket` has nothing in its send queue, neither unsent nor unacknowledged (TIOCOUTQ,
/// which is SIOCOUTQ for sockets). An error reads as not empty: the usual wake-up then applies.
pub fn send_queue_empty(socket: &impl AsRawFd) -> bool {
    let mut queued: libc::c_int = 0;
    // SAFETY: TIOCOUTQ writes one int through the pointer, which points at a live local.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
    rc == 0 && queued == 0
}

/// Sends `bytes` on `socket` now, whatever the runtime last learned of its writability (a retry
/// after [`MemoryWait::poll_retry`]: the runtime's readiness was cleared by the refusal).
pub fn send_now(socket: &impl AsRawFd, bytes: &[u8]) -> io::Result<usize> {
    // SAFETY: the pointer and length describe `bytes`, which outlives the call; the descriptor
    // belongs to the caller's open socket.
    let sent = unsafe {
        libc::send(
            socket.as_raw_fd(),
            bytes.as_ptr().cast(),
            bytes.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    usize::try_from(sent).map_err(|_| io::Error::last_os_error())
}

/// One warning a minute at most while writes wait for memory: a state of the host an operator
/// should know about, not a line per connection.
fn warn_now_and_then() {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let last = LAST.load(Ordering::Relaxed);
    if now >= last + WARN_EVERY_SECS
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(
            "the kernel refuses socket writes for want of TCP memory (net.ipv4.tcp_mem): relays retry them every few ms until it has some"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    use super::*;

    #[test]
    fn the_send_queue_is_empty_until_bytes_wait_for_a_peer_that_does_not_read() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut writer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut reader, _) = listener.accept().unwrap();
        assert!(send_queue_empty(&writer), "a fresh socket queues nothing");
        writer.set_nonblocking(true).unwrap();
        // Fill the reader's receive buffer and then the writer's send queue.
        let chunk = vec![7u8; 64 * 1024];
        let mut sent = 0;
        loop {
            match send_now(&writer, &chunk) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(
            !send_queue_empty(&writer),
            "{sent} bytes sent, none of them queued"
        );
        writer.flush().unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut read = 0;
        while read < sent {
            read += reader.read(&mut buf).unwrap();
        }
        // The last ACK may lag the last read by a moment.
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while !send_queue_empty(&writer) && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            send_queue_empty(&writer),
            "everything read and acknowledged"
        );
    }
}
