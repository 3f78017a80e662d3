//! MQTT, as far as the front door reads it: a client's first packet, the CONNECT, parsed without
//! copying ([`connect`]) and read off a client's stream within a size and a time limit
//! ([`preread`]), so a listener can know who connects before it chooses a server, then forward
//! the bytes unchanged. A leaf: it imports nothing of the sidecar.

pub mod connect;
pub mod preread;
#[cfg(test)]
mod testing;

pub use connect::{Connect, ConnectError, ConnectInfo, Parse, Protocol, parse};
pub use preread::{ConnectSource, Plain, PrereadError, read_connect, read_connect_from};

/// The largest CONNECT to read unless told otherwise, fixed header included. A CONNECT is a
/// client id, a will and credentials, a few hundred bytes in practice; 64 KiB still leaves room
/// for MQTT 5 authentication data and user properties.
pub const DEFAULT_MAX_CONNECT_SIZE: usize = 64 * 1024;
