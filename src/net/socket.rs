//! Socket set-up through socket2: listening sockets with a real backlog (a group sharing one
//! port, one per relay thread), and the options every relayed stream gets on both sides
//! (TCP_NODELAY, keepalive).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};
use tokio::net::{TcpSocket, TcpStream};

/// Idle time before the first keepalive probe: long enough to cost nothing on busy connections,
/// short enough to free the slots of clients that vanished without a FIN.
const KEEPALIVE_TIME: Duration = Duration::from_secs(120);
/// Interval between keepalive probes.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// Unanswered probes before the kernel resets the connection.
const KEEPALIVE_RETRIES: u32 = 4;

fn keepalive() -> TcpKeepalive {
    TcpKeepalive::new()
        .with_time(KEEPALIVE_TIME)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_RETRIES)
}

/// Opens a listening socket on `addr` (SO_REUSEADDR, non-blocking) with `backlog`. The options
/// every client stream needs — no Nagle delay (MQTT packets are small and latency-bound) and
/// keepalive (dead clients must not hold a slot forever) — are set here once: Linux copies them
/// to every accepted socket, which saves five system calls per connection.
pub fn listen(addr: SocketAddr, backlog: u32) -> io::Result<std::net::TcpListener> {
    open_listener(addr, backlog, false)
}

/// Opens `count` listening sockets on `addr` that share one port through SO_REUSEPORT, one per
/// relay thread: the kernel spreads new connections over them by a hash of the addresses, and
/// each thread accepts only from its own. Port 0 means the port the first socket got.
///
/// SO_REUSEPORT would also let another process of the same user join the group, so that a
/// second brokerside started by mistake silently took a share of the clients; a plain bind is
/// tried first, which fails, as it always did, when anything else holds the port.
pub fn listen_shared(
    addr: SocketAddr,
    backlog: u32,
    count: usize,
) -> io::Result<Vec<std::net::TcpListener>> {
    if addr.port() != 0 {
        let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        probe.set_reuse_address(true)?;
        probe.bind(&addr.into())?;
    }
    let first = open_listener(addr, backlog, true)?;
    let addr = first.local_addr()?;
    let mut sockets = Vec::with_capacity(count.max(1));
    sockets.push(first);
    for _ in 1..count {
        sockets.push(open_listener(addr, backlog, true)?);
    }
    Ok(sockets)
}

fn open_listener(
    addr: SocketAddr,
    backlog: u32,
    reuse_port: bool,
) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.set_tcp_keepalive(&keepalive())?;
    socket.bind(&addr.into())?;
    // The value is bounded at validation (1..=65535); the kernel also caps it at somaxconn.
    socket.listen(backlog as i32)?;
    Ok(socket.into())
}

/// A socket ready to connect to `server`, bound to `source` when one is given. With a source,
/// IP_BIND_ADDRESS_NO_PORT defers the port choice to connect(), where the kernel can reuse a port
/// for different destinations instead of reserving one per bind.
pub fn upstream_socket(server: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpSocket> {
    let socket = if server.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_nodelay(true)?;
    // A broker on this host cannot vanish without the kernel noticing; keepalive (four system
    // calls) is for backups and peers across the network.
    if !server.ip().is_loopback() {
        SockRef::from(&socket).set_tcp_keepalive(&keepalive())?;
    }
    if let Some(source) = source {
        set_bind_address_no_port(&socket)?;
        socket.bind(SocketAddr::new(source, 0))?;
    }
    Ok(socket)
}

fn set_bind_address_no_port(socket: &TcpSocket) -> io::Result<()> {
    let enable: libc::c_int = 1;
    // SAFETY: the fd is a live socket owned by `socket`; the option value is a c_int that
    // outlives the call, and its size is passed alongside.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&enable as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Closes `stream` with a reset (SO_LINGER 0), to carry a reset from the other side across.
pub fn set_reset_on_close(stream: &TcpStream) {
    // Best effort: if it fails the close is an ordinary FIN, which still ends the connection.
    let _ = SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

/// Sends a FIN on `stream` while its read side stays open: carries a half-close across.
pub fn shutdown_write(stream: &TcpStream) {
    // ENOTCONN here means the peer is already gone; the read side will report it.
    let _ = SockRef::from(stream).shutdown(std::net::Shutdown::Write);
}

/// Whether the peer of `stream` has closed or reset it (POLLRDHUP, POLLHUP or POLLERR), without
/// reading: what it sent before closing stays unread. One poll(2) that never waits.
pub fn peer_closed(stream: &TcpStream) -> bool {
    let mut fd = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: `fd` is one valid pollfd that outlives the call, whose descriptor is a live socket
    // owned by `stream`; a zero timeout never blocks.
    let ready = unsafe { libc::poll(&mut fd, 1, 0) };
    ready > 0 && fd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The relay relies on accepted sockets inheriting the listener's options instead of
    /// setting them per connection.
    #[tokio::test]
    async fn accepted_sockets_inherit_nodelay_and_keepalive() {
        let listener =
            tokio::net::TcpListener::from_std(listen("127.0.0.1:0".parse().unwrap(), 16).unwrap())
                .unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        assert!(accepted.nodelay().unwrap());
        let options = SockRef::from(&accepted);
        assert!(options.keepalive().unwrap());
        assert_eq!(options.tcp_keepalive_time().unwrap(), KEEPALIVE_TIME);
        assert_eq!(
            options.tcp_keepalive_interval().unwrap(),
            KEEPALIVE_INTERVAL
        );
        assert_eq!(options.tcp_keepalive_retries().unwrap(), KEEPALIVE_RETRIES);
    }

    #[test]
    fn a_shared_port_takes_its_whole_group_and_nobody_else() {
        let group = listen_shared("127.0.0.1:0".parse().unwrap(), 16, 3).unwrap();
        let addr = group[0].local_addr().unwrap();
        assert_ne!(addr.port(), 0);
        assert!(group.iter().all(|s| s.local_addr().unwrap() == addr));
        // Another group on the same port (a second brokerside) is refused, and so is a plain
        // listener.
        let again = listen_shared(addr, 16, 2).unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::AddrInUse);
        assert_eq!(
            listen(addr, 16).unwrap_err().kind(),
            io::ErrorKind::AddrInUse
        );
        // Once the group is closed the port is free again at once.
        drop(group);
        assert_eq!(listen_shared(addr, 16, 2).unwrap().len(), 2);
    }

    #[tokio::test]
    async fn bound_source_is_the_one_the_peer_sees() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = listener.local_addr().unwrap();
        let source: IpAddr = "127.0.0.9".parse().unwrap();
        let socket = upstream_socket(server, Some(source)).unwrap();
        let stream = socket.connect(server).await.unwrap();
        let (_accepted, peer) = listener.accept().await.unwrap();
        assert_eq!(peer.ip(), source);
        assert_eq!(stream.local_addr().unwrap().ip(), source);
        assert!(stream.nodelay().unwrap());
    }

    /// A peer that sent bytes and closed reads as closed, its bytes left unread; a live one
    /// with bytes waiting does not.
    #[tokio::test]
    async fn a_closed_peer_is_seen_without_reading() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut live = TcpStream::connect(addr).await.unwrap();
        let (live_side, _) = listener.accept().await.unwrap();
        let mut leaving = TcpStream::connect(addr).await.unwrap();
        let (leaving_side, _) = listener.accept().await.unwrap();
        live.write_all(b"hello").await.unwrap();
        leaving.write_all(b"hello").await.unwrap();
        drop(leaving);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!peer_closed(&live_side));
        assert!(peer_closed(&leaving_side));
        let mut unread = [0u8; 5];
        assert_eq!(leaving_side.try_read(&mut unread).unwrap(), 5);
    }
}
