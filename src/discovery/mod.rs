//! Peer discovery: sources (DNS SRV/A/AAAA, Consul's catalog, a static list), each refreshed in
//! its own task and published as an atomically swapped [`PeerSet`]. Backends that name a source
//! take its healthy peers as backups; `/peers` and the peers file show the set; the cluster
//! guard counts it as the expected members.
//!
//! - [`Discover`]: one refresh of one source (`dns.rs`, `consul.rs`, `static_list.rs`) and when
//!   to do the next one.
//! - `naming.rs`: node names from the `node_name` template, this node's identity.
//! - `refresh.rs`: [`spawn_refresh`], the task of one source publishing its [`PeerSet`].
//! - `peers_file.rs`: the `/peers` JSON and the atomically written peers file.

mod consul;
mod dns;
mod naming;
mod peers_file;
mod refresh;
mod static_list;
// The in-process DNS and Consul servers that the unit tests here and the integration tests use:
// one copy each, under tests/support.
#[cfg(test)]
#[path = "../../tests/support/consul_server.rs"]
mod test_consul;
#[cfg(test)]
#[path = "../../tests/support/dns_server.rs"]
mod test_dns;

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::watch;

pub use consul::ConsulSource;
pub use dns::DnsSource;
pub use naming::{SelfNode, node_name};
pub use peers_file::{peers_json, peers_lines, write_peers_file};
pub use refresh::{spawn_refresh, spawn_source};
pub use static_list::StaticSource;

/// One discovered peer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Peer {
    /// Its address.
    pub ip: IpAddr,
    /// Its port as discovered (SRV, Consul's ServicePort, the static entry or the source's `port`).
    pub port: u16,
    /// Its node name from the source's template, e.g. `emqx@10.0.0.5`.
    pub node: String,
}

/// What a source reports now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeerSet {
    /// The peers, this node left out, sorted by address and port.
    pub peers: Vec<Peer>,
    /// When the set was last refreshed successfully; `None` before the first success.
    pub refreshed: Option<SystemTime>,
    /// The last refresh error, while the source keeps serving its last good set.
    pub error: Option<String>,
}

/// One named discovery source: the latest set, and a signal when it changes.
#[derive(Debug)]
pub struct Source {
    /// The source's name from the config.
    pub name: String,
    set: ArcSwap<PeerSet>,
    changed: watch::Sender<u64>,
}

impl Source {
    /// An empty source named `name`.
    pub fn new(name: &str) -> Source {
        Source {
            name: name.to_string(),
            set: ArcSwap::from_pointee(PeerSet::default()),
            changed: watch::Sender::new(0),
        }
    }

    /// The current set. Cheap: an atomic load.
    pub fn peers(&self) -> Arc<PeerSet> {
        self.set.load_full()
    }

    /// Replaces the set; subscribers are told when the peers differ from before.
    pub fn publish(&self, set: PeerSet) {
        let peers_changed = self.set.load().peers != set.peers;
        self.set.store(Arc::new(set));
        if peers_changed {
            self.changed.send_modify(|generation| *generation += 1);
        }
    }

    /// A receiver that sees a new value whenever the peers change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// One address a source found, before naming and self-exclusion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The peer's address.
    pub ip: IpAddr,
    /// The peer's port.
    pub port: u16,
    /// Its host name: the SRV target or the A/AAAA query without the trailing dot, Consul's node
    /// name; `None` for static entries.
    pub host: Option<String>,
    /// The SRV target exactly as returned (with its trailing dot); `None` for other records.
    pub target: Option<String>,
}

/// The answer of one refresh.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovered {
    /// What was found, in answer order, possibly with duplicates.
    pub records: Vec<Found>,
    /// The answer's lifetime where the source has one (DNS: the smallest TTL).
    pub ttl: Option<Duration>,
}

/// Why a refresh failed. An empty answer is not an error: it is an empty [`Discovered`].
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DiscoveryError {
    /// The resolver could not be built (no usable system configuration).
    #[error("DNS resolver: {0}")]
    Resolver(String),
    /// A DNS lookup failed: SERVFAIL, REFUSED, timeout, connection error.
    #[error("DNS lookup of {query} failed: {reason}")]
    Dns {
        /// The name that was asked for.
        query: String,
        /// The resolver's reason.
        reason: String,
    },
    /// The HTTP server could not be reached or the exchange broke off.
    #[error("{url}: {reason}")]
    Connect {
        /// The server's base URL.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The HTTP request took longer than its deadline.
    #[error("{0}: timed out")]
    Timeout(String),
    /// The HTTP server answered with an error status.
    #[error("{url}: HTTP {status}")]
    Status {
        /// The server's base URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The answer could not be used: bad JSON, too large.
    #[error("{url}: {reason}")]
    Response {
        /// The server's base URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The ACL token could not be read.
    #[error("ACL token: {0}")]
    Token(String),
}

/// One kind of discovery source: a refresh, and the pacing between refreshes.
pub trait Discover: Send {
    /// Asks the source once.
    fn discover(&mut self) -> impl Future<Output = Result<Discovered, DiscoveryError>> + Send;

    /// How long to wait after a successful refresh; `None` = the set cannot change, stop.
    fn after_success(&mut self, found: &Discovered) -> Option<Duration>;

    /// How long to wait after a failed refresh.
    fn after_error(&mut self) -> Duration;
}
