//! Backend groups at run time: their servers (local first, then backups), whether the group
//! lets this node report ready, the order new connections try the servers in (`select`, with
//! client-id `rendezvous` hashing and `slowstart` ramps), the source addresses used towards
//! loopback servers (`loopback`), and the discovered peers kept in step as backups (`peers`).
//! A backend is built from its config by [`Backend::build`], which takes each server's health
//! from whoever carries it across reloads.

mod loopback;
mod outage;
mod peers;
mod rendezvous;
mod select;
mod slowstart;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use prometheus::IntGauge;

use crate::config::{BackendConfig, Balance, CheckConfig, ProxyProtocol};
use crate::health::{CheckTarget, ServerHealth};
use crate::metrics::{BackendMetrics, Metrics, ServerMetrics};
pub use loopback::LoopbackRotation;
pub use outage::{Line as OutageLine, OutageLog};
pub use peers::{PeerSettings, spawn_peer_sync};

/// The discovered peers of a backend, swapped whole by its peer sync. Shared by the backends of
/// successive runtimes that keep the same peer source, so a reload neither empties nor forks it.
pub type PeerList = ArcSwap<Vec<Arc<Server>>>;

/// A backend's identity for the connection registry: kept across reloads for the same name,
/// never reused for another, so failback finds the connections of this backend only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BackendId(pub u32);

impl BackendId {
    /// An id no backend has had before.
    pub fn fresh() -> BackendId {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        BackendId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// Whether a server is this node's own broker or a backup (a static or discovered peer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Preferred whenever one is up.
    Local,
    /// Used only while no local server is up.
    Backup,
}

impl Role {
    /// `"local"` or `"backup"`, as `/health` writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Local => "local",
            Role::Backup => "backup",
        }
    }
}

/// One server of a backend group.
#[derive(Debug)]
pub struct Server {
    /// Where the server listens.
    pub addr: SocketAddr,
    /// Local or backup.
    pub role: Role,
    /// Its health, written by its checker.
    pub health: Arc<ServerHealth>,
    /// Its series, removed from `/metrics` once no server object of that address is left.
    pub metrics: ServerMetrics,
    /// Its seed for client-id rendezvous hashing, from its address.
    key: u64,
}

impl Server {
    /// A server of `backend` with the given health.
    pub fn new(
        backend: &str,
        addr: SocketAddr,
        role: Role,
        health: Arc<ServerHealth>,
        metrics: &Metrics,
    ) -> Server {
        Server {
            addr,
            role,
            health,
            metrics: metrics.server(backend, &addr.to_string(), role.as_str()),
            key: rendezvous::server_key(addr),
        }
    }
}

/// One client connection relayed to a server: counted in the server's
/// `brokerside_backend_connections_active` from [`Server::lease`] until dropped. It holds the
/// gauge, not the server: the series of a server that a reload removed go at once, as every
/// series of a server that is gone does, while its last connections run on uncounted there.
#[derive(Debug)]
pub struct Lease(IntGauge);

impl Server {
    /// Counts one more connection relayed to this server, for as long as the lease lives.
    pub fn lease(&self) -> Lease {
        self.metrics.active.inc();
        Lease(self.metrics.active.clone())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A backend group as the proxy uses it.
#[derive(Debug)]
pub struct Backend {
    /// Its identity in the connection registry.
    pub id: BackendId,
    /// The group's name from the config.
    pub name: String,
    /// Configured servers: local first, then static backups, each in config order.
    pub servers: Vec<Arc<Server>>,
    /// Backups found by discovery.
    pub peers: Arc<PeerList>,
    /// The discovery source whose peers become `peers`, if any.
    pub peer_source: Option<String>,
    /// Time allowed to connect to one server.
    pub connect_timeout: Duration,
    /// Source addresses for connections to loopback servers.
    pub loopback: LoopbackRotation,
    /// Health checks, if any.
    pub check: Option<CheckConfig>,
    /// The PROXY header this backend's connections (and so its probes) start with.
    pub proxy_protocol: ProxyProtocol,
    /// Whether this node reports ready while only backups are up.
    pub ready_on_backup: bool,
    /// Connections per second moved back from backups once a local server is up again.
    pub failback_rate: u32,
    /// How servers are ordered within the tier that is up.
    pub balance: Balance,
    /// The ramp of a server that came back up; zero = none.
    pub slowstart: Duration,
    /// Refused clients told as an outage (state changes), not one log line each.
    pub outage: OutageLog,
    /// Its connect-latency histogram.
    pub metrics: BackendMetrics,
}

impl Backend {
    /// Builds the run-time group from its config. `health` gives each configured server its
    /// health (a fresh one, or the one a previous runtime's server had, so that a reload keeps
    /// its state); `peers` is the list its peer sync keeps.
    pub fn build(
        config: &BackendConfig,
        id: BackendId,
        mut health: impl FnMut(SocketAddr) -> Arc<ServerHealth>,
        peers: Arc<PeerList>,
        metrics: &Metrics,
    ) -> Backend {
        let local = config.servers.iter().map(|&addr| (addr, Role::Local));
        let backup = config.backup.iter().map(|&addr| (addr, Role::Backup));
        Backend {
            id,
            name: config.name.clone(),
            servers: local
                .chain(backup)
                .map(|(addr, role)| {
                    Arc::new(Server::new(&config.name, addr, role, health(addr), metrics))
                })
                .collect(),
            peers,
            peer_source: config.peers.clone(),
            connect_timeout: config.connect_timeout,
            loopback: LoopbackRotation::new(&config.loopback_sources),
            check: config.check.clone(),
            proxy_protocol: config.proxy_protocol,
            ready_on_backup: config.ready_on_backup,
            failback_rate: config.failback_rate,
            balance: config.balance,
            slowstart: config.slowstart,
            outage: OutageLog::default(),
            metrics: metrics.backend(&config.name),
        }
    }

    /// A group with fresh health everywhere (checked servers pending) and no peers yet.
    pub fn new(config: &BackendConfig, metrics: &Metrics) -> Backend {
        let checked = config.check.is_some();
        Backend::build(
            config,
            BackendId::fresh(),
            |_| Arc::new(ServerHealth::fresh(checked)),
            Arc::default(),
            metrics,
        )
    }

    /// What the checker of server `addr` of this group probes; `None` without a check.
    pub fn check_target(&self, addr: SocketAddr) -> Option<CheckTarget> {
        Some(CheckTarget {
            backend: self.name.clone(),
            server: addr,
            check: self.check.clone()?,
            proxy: self.proxy_protocol,
        })
    }

    /// Every server: configured ones, then discovered peers.
    pub fn all_servers(&self) -> Vec<Arc<Server>> {
        self.servers
            .iter()
            .chain(self.peers.load().iter())
            .cloned()
            .collect()
    }

    /// Whether a local server is up.
    pub fn local_up(&self) -> bool {
        self.servers
            .iter()
            .any(|s| s.role == Role::Local && s.health.is_up())
    }

    /// Whether a local server is up and done with its slow start at `now`: failback waits for
    /// this, since clients it moved during the ramp would mostly land on a backup again.
    pub fn local_up_at_full(&self, now: Instant) -> bool {
        self.servers
            .iter()
            .any(|s| s.role == Role::Local && s.health.is_up() && self.weight(s, now) >= 1.0)
    }

    /// `Ok` when this backend lets the node report ready; otherwise one line saying why.
    pub fn readiness(&self) -> Result<(), String> {
        if self.local_up() {
            return Ok(());
        }
        let backup_up = self
            .all_servers()
            .iter()
            .any(|s| s.role == Role::Backup && s.health.is_up());
        if backup_up && self.ready_on_backup {
            return Ok(());
        }
        let reasons: Vec<String> = self
            .servers
            .iter()
            .filter(|s| s.role == Role::Local)
            .map(|s| {
                let report = s.health.report();
                match report.last.as_ref().and_then(|last| last.error.as_deref()) {
                    Some(error) => format!("{} {}", s.addr, error),
                    None => format!("{} not yet checked", s.addr),
                }
            })
            .collect();
        let backups = if backup_up {
            "; only backups are up"
        } else {
            ""
        };
        Err(format!(
            "backend {}: local broker down ({}){backups}",
            self.name,
            reasons.join(", ")
        ))
    }
}
