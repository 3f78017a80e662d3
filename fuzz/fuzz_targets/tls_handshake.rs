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

use std::sync::{Arc, OnceLock};

use brokerside::config::Config;
use brokerside::proxy::{Fed, feed_client_bytes};
use libfuzzer_sys::fuzz_target;
use rustls::server::ServerConfig;

/// A P-256 test certificate (100 years) and its key, committed beside the target.
const CERT: &str = include_str!("../tls/cert.pem");
const KEY: &str = include_str!("../tls/key.pem");

fn server() -> Arc<ServerConfig> {
    static SERVER: OnceLock<Arc<ServerConfig>> = OnceLock::new();
    Arc::clone(SERVER.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("brokerside-fuzz-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, CERT).expect("write the certificate");
        std::fs::write(&key, KEY).expect("write the key");
        let config = Config::from_toml(&format!(
            "[[listener]]\nname = \"t\"\nlisten = \"127.0.0.1:0\"\nbackend = \"b\"\n\
             [listener.tls]\ncert = \"{}\"\nkey = \"{}\"\nalpn = [\"mqtt\"]\n\
             [[backend]]\nname = \"b\"\nservers = [\"127.0.0.1:1\"]\n",
            cert.display(),
            key.display()
        ))
        .expect("a valid config");
        let (loaded, _) =
            brokerside::tls::load_listeners(&config).expect("the test certificate loads");
        Arc::clone(&loaded["t"].server)
    }))
}

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
