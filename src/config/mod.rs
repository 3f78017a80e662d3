//! Configuration: the TOML file model (`file`), its validation into the typed [`Config`]
//! (`validate`), and the defaults. Every problem is reported with its field path, all at once.

mod duration;
mod effective;
mod file;
mod validate;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

pub use duration::{format_duration, parse_duration};

/// The text of `config/brokerside.toml`, run when no `--config` is given.
pub const DEFAULT_CONFIG: &str = include_str!("../../config/brokerside.toml");

/// Default `proxy_header_timeout`.
pub const DEFAULT_PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Default `max_connections` per listener.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 500_000;
/// Default listen(2) backlog.
pub const DEFAULT_BACKLOG: u32 = 4096;
/// Default `connect_timeout` per backend.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default drain `deadline`.
pub const DEFAULT_DRAIN_DEADLINE: Duration = Duration::from_secs(120);
/// How many 127.0.0.x sources `loopback_sources = "auto"` rotates over (x = 1..=this): each gives
/// the kernel's ~28k ephemeral ports towards one broker port.
pub const AUTO_LOOPBACK_SOURCES: u8 = 32;

/// A validated configuration: every address parsed, every reference resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Public listeners, in file order.
    pub listeners: Vec<ListenerConfig>,
    /// Backend groups, in file order.
    pub backends: Vec<BackendConfig>,
    /// Shutdown behaviour.
    pub drain: DrainConfig,
}

/// One listener: a public port relayed to a backend group.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    /// Unique name, used in logs and metric labels.
    pub name: String,
    /// Address to accept clients on.
    pub listen: SocketAddr,
    /// Index into [`Config::backends`].
    pub backend: usize,
    /// PROXY protocol header sent towards the backend.
    pub proxy_protocol: ProxyProtocol,
    /// Whether clients (or a load balancer in front) send a PROXY header first.
    pub accept_proxy_protocol: bool,
    /// How long a client may take to send its inbound PROXY header.
    pub proxy_header_timeout: Duration,
    /// Connections held at once; past it new clients are refused.
    pub max_connections: u32,
    /// Close after this long without a byte either way; `None` = never.
    pub idle_timeout: Option<Duration>,
    /// listen(2) backlog.
    pub backlog: u32,
}

/// Which PROXY protocol header, if any, goes to the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyProtocol {
    /// No header.
    Off,
    /// The text header (`PROXY TCP4 ...\r\n`).
    V1,
    /// The binary header.
    V2,
}

/// A group of servers that a listener relays to.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendConfig {
    /// Unique name.
    pub name: String,
    /// Servers, tried in order.
    pub servers: Vec<SocketAddr>,
    /// Time allowed to connect to one server.
    pub connect_timeout: Duration,
    /// Source addresses for connections to loopback servers.
    pub loopback_sources: LoopbackSources,
}

/// Source-address rotation towards loopback servers.
#[derive(Debug, Clone, PartialEq)]
pub enum LoopbackSources {
    /// The kernel chooses (one source address: ~28k connections per broker port).
    Off,
    /// 127.0.0.1 ..= 127.0.0.[`AUTO_LOOPBACK_SOURCES`].
    Auto,
    /// These addresses, in rotation.
    List(Vec<IpAddr>),
}

/// Shutdown behaviour.
#[derive(Debug, Clone, PartialEq)]
pub struct DrainConfig {
    /// How long open connections may take to finish after SIGTERM/SIGINT.
    pub deadline: Duration,
}

/// One problem in a config file, named by its field path (`listener[1].listen`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where: `listener[1].listen`, or empty for the file as a whole.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in one config file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl Config {
    /// Parses and validates config text.
    pub fn from_toml(text: &str) -> Result<Config, ConfigErrors> {
        validate::validate(text).map_err(ConfigErrors)
    }

    /// Reads, parses and validates a config file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                path: String::new(),
                message: format!("cannot read {}: {e}", path.display()),
            }])
        })?;
        Config::from_toml(&text)
    }

    /// The embedded default configuration.
    pub fn embedded_default() -> Result<Config, ConfigErrors> {
        Config::from_toml(DEFAULT_CONFIG)
    }

    /// The effective configuration as TOML, every default filled in.
    pub fn to_toml(&self) -> String {
        effective::to_toml(self)
    }

    /// The backend a listener relays to.
    pub fn backend_of(&self, listener: &ListenerConfig) -> &BackendConfig {
        &self.backends[listener.backend]
    }
}
