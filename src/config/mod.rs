//! Configuration: the TOML file model (`file`), its validation into the typed [`Config`]
//! (`validate`), and the defaults. Every problem is reported with its field path, all at once.

mod check;
mod discovery;
mod duration;
mod effective;
mod fields;
mod file;
mod tls;
mod validate;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
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
/// Default `half_close_timeout`: HAProxy's `timeout client-fin` / `server-fin` for the same job.
pub const DEFAULT_HALF_CLOSE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `preread_timeout`: the time a client has to send its whole CONNECT. Clients send it
/// at once after connecting (after the TLS handshake where terminated).
pub const DEFAULT_PREREAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `admission_queue`: clients held at once while a listener is paced.
pub const DEFAULT_ADMISSION_QUEUE: u32 = 20_000;
/// Default `admission_timeout`: below the 30 s connect timeout common MQTT clients use, so a
/// client let through at the end of its hold still has time for its handshake and CONNACK.
pub const DEFAULT_ADMISSION_TIMEOUT: Duration = Duration::from_secs(20);
/// Default `[listener.tls] handshake_timeout`.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `[listener.tls] watch`: how often certificate, key, CA and CRL files are read to see
/// whether they changed (Vault, cert-manager and Nomad templates replace them by rename).
pub const DEFAULT_TLS_WATCH: Duration = Duration::from_secs(5);
/// Default `connect_timeout` per backend.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default drain `deadline`.
pub const DEFAULT_DRAIN_DEADLINE: Duration = Duration::from_secs(120);
/// Default drain `lb_grace`: the OCI network load balancer's health check, 10 s x 3.
pub const DEFAULT_LB_GRACE: Duration = Duration::from_secs(30);
/// Default drain `close_rate`, connections per second.
pub const DEFAULT_CLOSE_RATE: u32 = 500;
/// Default `failback_rate`, connections per second moved back from backups.
pub const DEFAULT_FAILBACK_RATE: u32 = 50;
/// Default admin address.
pub const DEFAULT_ADMIN_LISTEN: &str = "0.0.0.0:8080";
/// Default admin connection limit.
pub const DEFAULT_ADMIN_MAX_CONNECTIONS: u32 = 64;
/// Default admin header timeout.
pub const DEFAULT_ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Default check interval.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// Default check interval while a server is changing state.
pub const DEFAULT_CHECK_FAST_INTERVAL: Duration = Duration::from_millis(500);
/// Default check timeout.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(1);
/// Default consecutive successes to mark a server up.
pub const DEFAULT_RISE: u32 = 2;
/// Default consecutive failures to mark a server down.
pub const DEFAULT_FALL: u32 = 3;
/// Upper bound of `relay_threads`: far above any core count a sidecar gets, low enough that a
/// typo cannot ask for a million threads.
pub const MAX_RELAY_THREADS: u32 = 1024;
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
    /// The admin endpoint.
    pub admin: AdminConfig,
    /// Peer discovery sources, in file order.
    pub discovery: Vec<DiscoveryConfig>,
    /// This node's identity, which discovery leaves out of its peers.
    pub node: NodeConfig,
    /// The cluster guard.
    pub cluster: ClusterConfig,
    /// Threads of the relay.
    pub runtime: RuntimeConfig,
}

/// How the relay uses the host's cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RuntimeConfig {
    /// Relay worker threads; `None` = one per core this process may use.
    pub relay_threads: Option<NonZeroUsize>,
    /// How often the config file is read to see whether its content changed (a reload follows);
    /// `None` = never (reload on SIGHUP or `POST /reload` only).
    pub watch_config: Option<Duration>,
}

impl RuntimeConfig {
    /// The relay threads to start: the configured count, else
    /// [`std::thread::available_parallelism`], which honours CPU affinity and cgroup quotas
    /// (Nomad `cpu`/`cores`, Kubernetes `limits.cpu`).
    pub fn relay_threads(&self) -> usize {
        self.relay_threads
            .or_else(|| std::thread::available_parallelism().ok())
            .map_or(1, NonZeroUsize::get)
    }
}

/// This node's identity.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeConfig {
    /// This node's name as the cluster knows it (e.g. `emqx@10.0.0.5`); `None` = derived from
    /// `advertise` with the first source's `node_name` template.
    pub name: Option<String>,
    /// This node's address as peers see it; `None` = `$POD_IP`, else the host's first
    /// non-loopback address is not guessed: discovery then cannot leave this node out by address.
    pub advertise: Option<IpAddr>,
}

/// One peer discovery source.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscoveryConfig {
    /// Unique name; backends refer to it with `peers = "<name>"`.
    pub name: String,
    /// Where peers come from.
    pub kind: DiscoveryKind,
    /// Node-name template: `{ip}`, `{host}` (the SRV target or the query without a trailing
    /// dot), `{target}` (the SRV target as returned).
    pub node_name: String,
    /// Shortest time between refreshes (DNS honours the TTL between this and `max_interval`).
    pub interval: Duration,
    /// Longest time between refreshes.
    pub max_interval: Duration,
    /// How long a failing source keeps serving its last good peer set.
    pub keep_last_good: Duration,
    /// File written atomically with the peer set whenever it changes, if set.
    pub peers_file: Option<PathBuf>,
    /// Format of `peers_file`.
    pub peers_file_format: PeersFileFormat,
}

/// Where peers come from.
#[derive(Debug, Clone, PartialEq)]
pub enum DiscoveryKind {
    /// DNS: SRV, A or AAAA records.
    Dns(DnsDiscovery),
    /// Consul's HTTP health API with blocking queries.
    Consul(ConsulDiscovery),
    /// A fixed list.
    Static(Vec<SocketAddr>),
}

/// Which DNS records a `dns` source asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsRecord {
    /// SRV: target and port per peer (Consul, Kubernetes named ports).
    Srv,
    /// A: IPv4 addresses (Kubernetes headless services), port from `port`.
    A,
    /// AAAA: IPv6 addresses, port from `port`.
    Aaaa,
}

/// A `dns` source.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsDiscovery {
    /// Record type.
    pub record: DnsRecord,
    /// The name to resolve, e.g. `emqx.service.consul` or `emqx-headless.ns.svc.cluster.local`.
    pub query: String,
    /// Nameservers (`ip:port`, e.g. Consul's `127.0.0.1:8600`); empty = the system's.
    pub nameservers: Vec<SocketAddr>,
    /// Port of each peer for A/AAAA answers (SRV answers carry their own).
    pub port: Option<u16>,
}

/// A `consul` source.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsulDiscovery {
    /// Consul's HTTP address, e.g. `http://127.0.0.1:8500`.
    pub url: String,
    /// The service name.
    pub service: String,
    /// ACL token source, if any.
    pub token: Option<TokenSource>,
    /// Blocking-query wait (Consul caps it at 10m).
    pub wait: Duration,
}

/// Format of a peers file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeersFileFormat {
    /// One node name a line (EMQX static seeds, BEAM `sys.config` helpers).
    Lines,
    /// A JSON list of `{address, port, node, source}`: `GET /peers` without health.
    Json,
}

/// The cluster guard: the broker's own view of its cluster against the discovered peers.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// Whose API to ask.
    pub members: ClusterMembers,
    /// The broker's API endpoint (EMQX `http://127.0.0.1:18083/api/v5/nodes`, RabbitMQ
    /// `http://127.0.0.1:15672/api/nodes`).
    pub url: String,
    /// The discovery source whose peers are the expected members (with this node).
    pub discovery: Option<String>,
    /// Basic-auth user (EMQX API key, RabbitMQ user), read from a file or the environment.
    pub username: Option<TokenSource>,
    /// Basic-auth password (EMQX API secret), read from a file or the environment.
    pub password: Option<TokenSource>,
    /// Time between asks.
    pub interval: Duration,
    /// Time one ask may take.
    pub timeout: Duration,
    /// Whether `/haproxy_health` answers 503 "partitioned" while partitioned.
    pub fail_health_when_partitioned: bool,
}

/// Whose API the cluster guard asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterMembers {
    /// No guard.
    None,
    /// EMQX `GET /api/v5/nodes`.
    Emqx,
    /// RabbitMQ `GET /api/nodes`.
    Rabbitmq,
}

/// The admin HTTP endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    /// Address to serve on.
    pub listen: SocketAddr,
    /// Connections held at once.
    pub max_connections: u32,
    /// Time a client has to send its request headers.
    pub header_timeout: Duration,
    /// Where the token that allows `POST /drain` from other hosts comes from.
    pub drain_token: Option<TokenSource>,
}

/// Where a secret is read from (never written in the config itself).
#[derive(Debug, Clone, PartialEq)]
pub enum TokenSource {
    /// A file whose trimmed contents are the token.
    File(std::path::PathBuf),
    /// An environment variable.
    Env(String),
}

impl TokenSource {
    /// Reads the secret now: a file's contents trimmed (editors and `echo` add a newline), or the
    /// variable's value. The error says which file or variable, never the secret.
    pub fn read(&self) -> Result<String, String> {
        match self {
            TokenSource::File(path) => std::fs::read_to_string(path)
                .map(|text| text.trim().to_string())
                .map_err(|e| format!("cannot read {}: {e}", path.display())),
            TokenSource::Env(var) => {
                std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))
            }
        }
    }
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
    /// Once one direction has ended (a FIN passed on), close the connection when the other
    /// stays silent this long; `None` = never.
    pub half_close_timeout: Option<Duration>,
    /// listen(2) backlog.
    pub backlog: u32,
    /// Read the client's MQTT CONNECT before choosing a server (after TLS where terminated).
    pub mqtt_preread: bool,
    /// The largest CONNECT read, fixed header included; a larger one closes the connection.
    pub max_connect_size: usize,
    /// Time a client has to send its whole CONNECT.
    pub preread_timeout: Duration,
    /// Admission pacing of new clients.
    pub pacing: Pacing,
    /// TLS terminated here; `None` = bytes pass through untouched.
    pub tls: Option<TlsConfig>,
}

/// Admission pacing of one listener: new clients let through at most `rate` per second (after
/// a burst of `burst`), the rest held in arrival order, at most `queue` of them and none longer
/// than `timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacing {
    /// `max_connection_rate`: clients per second let through; 0 = unpaced.
    pub rate: u32,
    /// `burst`: clients let through at once after a quiet spell, before the spacing starts.
    pub burst: u32,
    /// `admission_queue`: clients held at once; past it new ones are closed.
    pub queue: u32,
    /// `admission_timeout`: the longest hold; a client that would wait longer is closed.
    pub timeout: Duration,
}

impl Pacing {
    /// The default `burst` of `rate`: a tenth of a second's worth, at least 1.
    pub fn default_burst(rate: u32) -> u32 {
        (rate / 10).max(1)
    }

    /// Whether new clients are paced at all.
    pub fn enabled(&self) -> bool {
        self.rate > 0
    }
}

/// `[listener.tls]`: terminate TLS on this listener and relay plaintext to the backend.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsConfig {
    /// The default certificate: for clients that send no SNI name or one no `sni` entry has.
    pub cert: CertFiles,
    /// More certificates, each for the names it lists (or its own DNS names).
    pub sni: Vec<SniCert>,
    /// CA certificates (PEM) that client certificates must chain to; `None` = no client
    /// certificates are asked for.
    pub client_ca: Option<PathBuf>,
    /// Whether a client certificate is required or only verified when one is sent.
    pub client_auth: ClientAuth,
    /// Certificate revocation lists (PEM or DER) checked against client certificates.
    pub crl: Vec<PathBuf>,
    /// The oldest TLS version accepted.
    pub min_version: TlsVersion,
    /// ALPN protocols offered, in order of preference (e.g. `mqtt`); empty = none.
    pub alpn: Vec<String>,
    /// Time a client has to finish its handshake.
    pub handshake_timeout: Duration,
    /// How often the files are read to see whether they changed; `None` = only on reload.
    pub watch: Option<Duration>,
    /// Whether clients get a session ticket to resume with (stateless, keys of this process).
    pub session_tickets: bool,
}

/// A certificate chain and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// The chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// A certificate chosen by the client's SNI name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SniCert {
    /// Names it is served for (lower case; `*.example.com` matches one label); empty = the
    /// DNS names the certificate itself lists.
    pub names: Vec<String>,
    /// Its files.
    pub files: CertFiles,
}

/// Client certificates with `client_ca`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// A handshake without a valid client certificate fails.
    Required,
    /// A certificate is verified when sent; clients without one are let through.
    Optional,
}

/// A TLS protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// TLS 1.2.
    V1_2,
    /// TLS 1.3.
    V1_3,
}

impl TlsVersion {
    /// As written in the config and in labels: `1.2`, `1.3`.
    pub fn label(self) -> &'static str {
        match self {
            TlsVersion::V1_2 => "1.2",
            TlsVersion::V1_3 => "1.3",
        }
    }
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

/// How a backend orders the servers of the tier that is up (its local servers, else its backups,
/// else every server).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Balance {
    /// Config order: the first server that accepts gets the connection.
    #[default]
    LocalFirst,
    /// Rendezvous hashing of the MQTT client id, so a client returns to the node of its session;
    /// config order for a connection without one.
    ClientId,
}

impl Balance {
    /// The value as the config file writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Balance::LocalFirst => "local-first",
            Balance::ClientId => "client-id",
        }
    }
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
    /// Servers used only when no server of `servers` is up (static peers).
    pub backup: Vec<SocketAddr>,
    /// Whether this node reports ready while only backups are up.
    pub ready_on_backup: bool,
    /// Connections per second moved from backups back to a recovered server; 0 = never.
    pub failback_rate: u32,
    /// How a new connection's servers are ordered within the tier that is up.
    pub balance: Balance,
    /// How long a server that came back up takes to ramp from 10% to its full share of new
    /// connections; zero = at once.
    pub slowstart: Duration,
    /// Health checks; `None` = servers are always taken as up.
    pub check: Option<CheckConfig>,
    /// The PROXY header the backend's listeners send, which its probes send too.
    pub proxy_protocol: ProxyProtocol,
    /// A discovery source whose healthy peers are backup servers, if any.
    pub peers: Option<String>,
    /// Port of the peers' brokers for this backend (default: the port discovery found).
    pub peer_port: Option<u16>,
}

/// Health checks of a backend's servers.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckConfig {
    /// What a probe does.
    pub kind: CheckKind,
    /// Time between probes while a server's state is settled.
    pub interval: Duration,
    /// Time between probes while a server is changing state.
    pub fast_interval: Duration,
    /// Time a probe may take.
    pub timeout: Duration,
    /// Consecutive successes that mark a server up.
    pub rise: u32,
    /// Consecutive failures that mark a server down.
    pub fall: u32,
}

/// What a probe does.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckKind {
    /// Connect, then close.
    Tcp,
    /// MQTT CONNECT, expect CONNACK accepted; optionally a publish/subscribe loop-back.
    Mqtt(MqttCheck),
    /// HTTP GET, expect a status and optionally a body substring.
    Http(HttpCheck),
    /// Send the AMQP 0-9-1 protocol header, expect Connection.Start (RabbitMQ).
    Amqp,
}

/// The MQTT probe.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttCheck {
    /// Client id of the probe's connection.
    pub client_id: String,
    /// Optional credentials.
    pub username: Option<String>,
    /// Optional password (with `username`).
    pub password: Option<String>,
    /// When set, subscribe to this topic and publish to it: proves the broker routes.
    pub loopback_topic: Option<String>,
}

/// The HTTP probe.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpCheck {
    /// Port probed on the server's address (e.g. EMQX's API on 18083); `None` = the server's port.
    pub port: Option<u16>,
    /// Path to GET.
    pub path: String,
    /// Status that counts as healthy.
    pub expect_status: u16,
    /// Substring the body must contain, if set.
    pub expect_body: Option<String>,
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
    /// How long health answers 503 while the listeners still accept, so the load balancer
    /// notices before the ports close.
    pub lb_grace: Duration,
    /// Connections closed per second once the listeners are closed.
    pub close_rate: u32,
    /// Time from the start of the drain after which what is left is closed and the process exits.
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

/// Reads a config file's text. Only a regular file (or a link to one) is read: opening a FIFO
/// blocks until something writes to it, and a device may never end, so `check-config` or a
/// reload would hang instead of saying what is wrong.
pub fn read_file(path: &Path) -> Result<String, ConfigError> {
    let problem = |message: String| ConfigError {
        path: String::new(),
        message,
    };
    let bytes = read_file_bytes(path).map_err(problem)?;
    String::from_utf8(bytes).map_err(|e| problem(format!("cannot read {}: {e}", path.display())))
}

/// Reads a regular file (or a link to one) whole, as [`read_file`] does; the message names the
/// file and says what is wrong.
pub fn read_file_bytes(path: &Path) -> Result<Vec<u8>, String> {
    let problem = |message: String| format!("cannot read {}: {message}", path.display());
    let metadata = std::fs::metadata(path).map_err(|e| problem(e.to_string()))?;
    if !metadata.is_file() {
        let kind = if metadata.is_dir() {
            "a directory"
        } else {
            "not a regular file (a FIFO, socket or device)"
        };
        return Err(problem(format!("it is {kind}")));
    }
    std::fs::read(path).map_err(|e| problem(e.to_string()))
}

impl Config {
    /// Parses and validates config text.
    pub fn from_toml(text: &str) -> Result<Config, ConfigErrors> {
        validate::validate(text).map_err(ConfigErrors)
    }

    /// Reads, parses and validates a config file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigErrors> {
        let text = read_file(path).map_err(|error| ConfigErrors(vec![error]))?;
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
