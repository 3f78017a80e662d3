//! The `static` source: a fixed list of addresses from the config, published once.

use std::net::SocketAddr;
use std::time::Duration;

use super::{Discover, Discovered, DiscoveryError, Found};

/// A fixed list of peers.
#[derive(Debug, Clone)]
pub struct StaticSource {
    peers: Vec<SocketAddr>,
}

impl StaticSource {
    /// The source for `peers`.
    pub fn new(peers: &[SocketAddr]) -> StaticSource {
        StaticSource {
            peers: peers.to_vec(),
        }
    }
}

impl Discover for StaticSource {
    async fn discover(&mut self) -> Result<Discovered, DiscoveryError> {
        Ok(Discovered {
            records: self
                .peers
                .iter()
                .map(|addr| Found {
                    ip: addr.ip(),
                    port: addr.port(),
                    host: None,
                    target: None,
                })
                .collect(),
            ttl: None,
        })
    }

    fn after_success(&mut self, _: &Discovered) -> Option<Duration> {
        // The list cannot change without a restart.
        None
    }

    fn after_error(&mut self) -> Duration {
        // Unreachable: a static list cannot fail; retry soon if it ever did.
        Duration::from_secs(1)
    }
}
