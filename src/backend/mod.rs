//! Backend groups at run time: their servers, the order new connections try them in, and the
//! source addresses used towards loopback servers.

mod sources;

use std::net::SocketAddr;
use std::time::Duration;

use prometheus::IntCounter;

use crate::config::BackendConfig;
use crate::metrics::Metrics;
pub use sources::SourceRotation;

/// One server of a backend group.
#[derive(Debug)]
pub struct Server {
    /// Where the server listens.
    pub addr: SocketAddr,
    /// Failed connection attempts to it.
    pub connect_failures: IntCounter,
}

/// A backend group as the proxy uses it.
#[derive(Debug)]
pub struct Backend {
    /// The group's name from the config.
    pub name: String,
    /// Servers in the order new connections try them.
    pub servers: Vec<Server>,
    /// Time allowed to connect to one server.
    pub connect_timeout: Duration,
    /// Source addresses for connections to loopback servers.
    pub sources: SourceRotation,
}

impl Backend {
    /// Builds the run-time group from its config, with its metric handles.
    pub fn new(config: &BackendConfig, metrics: &Metrics) -> Backend {
        Backend {
            name: config.name.clone(),
            servers: config
                .servers
                .iter()
                .map(|&addr| Server {
                    addr,
                    connect_failures: metrics
                        .backend_connect_failures(&config.name, &addr.to_string()),
                })
                .collect(),
            connect_timeout: config.connect_timeout,
            sources: SourceRotation::new(&config.loopback_sources),
        }
    }

    /// The servers a new connection tries, best first.
    pub fn candidates(&self) -> impl Iterator<Item = &Server> {
        self.servers.iter()
    }
}
