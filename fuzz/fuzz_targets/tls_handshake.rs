//! The server side of a TLS connection (rustls' unbuffered API as the relay drives it) on
//! arbitrary client bytes, split into reads of a size the input chooses.
//!
//! Besides never panicking (rustls keeps positions in the caller's buffer while it joins a
//! handshake message that spans records, so the relay's carrying of unprocessed bytes between
//! reads and its fetching of the alert after a failure must be exact; debug assertions are on),
//! checks that how the bytes are split across reads never decides how a handshake ends: the same
//! bytes in one read and in the input's reads end the same way, as long as they are refused or
//! still waiting.
//!
//! Input: the first byte is the read size (0 = everything in one read), the rest are the bytes.

#![no_main]

use brokerside::proxy::{Fed, feed_client_bytes};
use libfuzzer_sys::fuzz_target;

#[path = "shared/tls_server.rs"]
mod tls_server;

use tls_server::server;

fuzz_target!(|data: &[u8]| {
    let Some((&size, bytes)) = data.split_first() else {
        return;
    };
    let chunks: Vec<&[u8]> = if size == 0 || bytes.is_empty() {
        vec![bytes]
    } else {
        bytes.chunks(usize::from(size)).collect()
    };
    let split = feed_client_bytes(server(), &chunks);
    let whole = feed_client_bytes(server(), &[bytes]);
    if matches!(split, Fed::Refused(_)) || matches!(whole, Fed::Refused(_)) {
        assert_eq!(
            split, whole,
            "the same bytes ended differently split into reads of {size}"
        );
    }
});
