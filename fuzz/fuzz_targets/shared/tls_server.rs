//! The server config of the TLS targets: a listener's, as `tls::load_listeners` builds it, for
//! the P-256 test certificate (100 years) and key committed in `fuzz/tls/`.

use std::sync::{Arc, OnceLock};

use brokerside::tls::testing;
use rustls::server::ServerConfig;

const CERT: &str = include_str!("../../tls/cert.pem");
const KEY: &str = include_str!("../../tls/key.pem");

/// The config, made once.
pub fn server() -> Arc<ServerConfig> {
    static SERVER: OnceLock<Arc<ServerConfig>> = OnceLock::new();
    Arc::clone(
        SERVER
            .get_or_init(|| testing::server_config(CERT, KEY).expect("the test certificate loads")),
    )
}
