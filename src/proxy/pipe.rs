//! Kernel pipes for splice(2), so bulk bytes go socket → pipe → socket without being copied
//! through user space. A pipe is lent to a connection only while bytes are in flight and goes back
//! to its thread's pool as soon as it is empty, so an idle connection holds no pipe (and no file
//! descriptors beyond its two sockets). Pipes are capped process-wide: past the cap, or when the
//! kernel refuses one (EMFILE), the relay copies through its buffer instead.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes a pipe is asked to hold. More than the default 64 KiB means fewer splice calls per
/// gigabyte; the pages are the socket buffers' own, referenced rather than allocated.
const PIPE_SIZE: libc::c_int = 1024 * 1024;
/// Pipes open in the whole process at most (two descriptors each): bulk transfers are a few
/// connections at a time, and the descriptors belong first to clients.
const MAX_PIPES: usize = 1024;
/// Empty pipes a thread keeps for the next transfer.
const POOL_PER_THREAD: usize = 16;

/// Pipes open now, lent or pooled.
static OPEN: AtomicUsize = AtomicUsize::new(0);
/// Pipes ever lent to a transfer, counted only in tests (no shared counter on the hot path).
#[cfg(test)]
static LENT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static POOL: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

/// One pipe: its two ends and what it can hold.
pub(super) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
}

impl Pipe {
    /// An empty pipe from this thread's pool, or a new one. `None` at the cap or when the kernel
    /// has no descriptor to give: the caller copies instead.
    pub(super) fn take() -> Option<Pipe> {
        let pooled = POOL.try_with(|pool| pool.borrow_mut().pop()).ok().flatten();
        let pipe = match pooled {
            Some(pipe) => pipe,
            None => Pipe::open()?,
        };
        #[cfg(test)]
        LENT.fetch_add(1, Ordering::Relaxed);
        Some(pipe)
    }

    /// Returns an empty pipe to this thread's pool (or closes it when the pool is full).
    pub(super) fn give_back(self) {
        let _ = POOL.try_with(|pool| {
            let mut pool = pool.borrow_mut();
            if pool.len() < POOL_PER_THREAD {
                pool.push(self);
            }
        });
    }

    fn open() -> Option<Pipe> {
        if OPEN.fetch_add(1, Ordering::Relaxed) >= MAX_PIPES {
            OPEN.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes on success.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            OPEN.fetch_sub(1, Ordering::Relaxed);
            tracing::debug!(error = %io::Error::last_os_error(), "no pipe for splice; copying");
            return None;
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: F_SETPIPE_SZ takes an int; a refusal (over a user's pipe quota) leaves the
        // pipe at its previous size, which F_GETPIPE_SZ then reports.
        let capacity = unsafe {
            libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE);
            libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ)
        };
        Some(Pipe {
            read,
            write,
            capacity: usize::try_from(capacity).unwrap_or(4096).max(4096),
        })
    }

    /// Moves what `src` has ready (up to the pipe's size) into the pipe. `Ok(0)` is the source's
    /// end of stream; WouldBlock means nothing was ready.
    pub(super) fn fill_from(&self, src: RawFd) -> io::Result<usize> {
        splice(src, self.write.as_raw_fd(), self.capacity)
    }

    /// Moves up to `len` bytes from the pipe to `dst`.
    pub(super) fn drain_to(&self, dst: RawFd, len: usize) -> io::Result<usize> {
        splice(self.read.as_raw_fd(), dst, len)
    }

    /// Pipes lent since the process started.
    #[cfg(test)]
    pub(super) fn lent() -> usize {
        LENT.load(Ordering::Relaxed)
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::Relaxed);
    }
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: both descriptors are open for the duration of the call (owned by the pipe and the
    // caller's socket); null offsets are what splice takes for pipes and sockets.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (b, _) = listener.accept().unwrap();
        (a, b)
    }

    #[test]
    fn bytes_cross_a_pipe_unchanged_and_eof_reads_as_zero() {
        let (mut writer, reader) = pair();
        let (sink_in, mut sink_out) = pair();
        reader.set_nonblocking(true).unwrap();
        let pipe = Pipe::take().expect("a pipe");
        assert!(pipe.capacity >= 4096);
        assert_eq!(
            pipe.fill_from(reader.as_raw_fd()).unwrap_err().kind(),
            io::ErrorKind::WouldBlock,
            "nothing sent yet"
        );
        writer.write_all(b"hello, splice").unwrap();
        writer.shutdown(std::net::Shutdown::Write).unwrap();
        let mut filled = 0;
        while filled < 13 {
            match pipe.fill_from(reader.as_raw_fd()) {
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(pipe.drain_to(sink_in.as_raw_fd(), filled).unwrap(), 13);
        assert_eq!(
            pipe.fill_from(reader.as_raw_fd()).unwrap(),
            0,
            "end of stream"
        );
        pipe.give_back();
        drop(sink_in);
        let mut out = Vec::new();
        sink_out.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"hello, splice");
    }
}
