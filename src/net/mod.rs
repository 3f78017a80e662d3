//! Network helpers shared by the relay, the health probes and the admin endpoint: listening and
//! upstream sockets with their options (`socket`), the PROXY protocol header (`proxy_protocol`),
//! and the words an operator reads when a port cannot be opened. A leaf: it imports nothing of
//! the sidecar but the config's types.

pub mod memory_wait;
pub mod proxy_protocol;
pub mod socket;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// Pause after an accept error such as EMFILE, so a full fd table does not spin the loop.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// A listener that could not be opened.
#[derive(Debug, Clone, thiserror::Error)]
#[error("listener `{listener}` cannot listen on {addr}: {reason}")]
pub struct BindError {
    /// The listener's name.
    pub listener: String,
    /// The address it asked for.
    pub addr: SocketAddr,
    /// What the OS said, in words.
    pub reason: String,
}

impl BindError {
    /// Describes `error` from binding `listener` on `addr`.
    pub fn new(listener: &str, addr: SocketAddr, error: &io::Error) -> BindError {
        let reason = match error.kind() {
            io::ErrorKind::AddrInUse => "the address is already in use".to_string(),
            io::ErrorKind::AddrNotAvailable => "the address is not on this host".to_string(),
            io::ErrorKind::PermissionDenied => {
                "permission denied (ports below 1024 need CAP_NET_BIND_SERVICE)".to_string()
            }
            _ => error.to_string(),
        };
        BindError {
            listener: listener.to_string(),
            addr,
            reason,
        }
    }
}

/// Opens a listening socket (for listeners outside the relay, such as the admin endpoint).
pub fn listen(
    name: &str,
    addr: SocketAddr,
    backlog: u32,
) -> Result<std::net::TcpListener, BindError> {
    socket::listen(addr, backlog).map_err(|error| BindError::new(name, addr, &error))
}

/// Errors that concern one pending connection only, not the listener.
pub fn is_per_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}
