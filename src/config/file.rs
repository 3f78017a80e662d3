//! The config file as written: serde models of its tables, each rejecting unknown keys. Values stay as text
//! here; `validate` turns them into typed values and reports every problem with its path.

use serde::Deserialize;

/// One `[[listener]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileListener {
    pub name: Option<String>,
    pub listen: Option<String>,
    pub backend: Option<String>,
    pub proxy_protocol: Option<String>,
    pub accept_proxy_protocol: Option<bool>,
    pub proxy_header_timeout: Option<String>,
    pub max_connections: Option<i64>,
    pub idle_timeout: Option<String>,
    pub half_close_timeout: Option<String>,
    pub backlog: Option<i64>,
    pub mqtt_preread: Option<bool>,
    pub max_connect_size: Option<i64>,
    pub preread_timeout: Option<String>,
    pub max_connection_rate: Option<i64>,
    pub burst: Option<i64>,
    pub admission_queue: Option<i64>,
    pub admission_timeout: Option<String>,
    pub tls: Option<FileTls>,
}

/// `[listener.tls]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTls {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub sni: Option<Vec<FileSni>>,
    pub client_ca: Option<String>,
    pub client_auth: Option<String>,
    pub crl: Option<Vec<String>>,
    pub min_version: Option<String>,
    pub alpn: Option<Vec<String>>,
    pub handshake_timeout: Option<String>,
    pub watch: Option<String>,
    pub session_tickets: Option<bool>,
}

/// One `[[listener.tls.sni]]`: a certificate served to clients that ask for its names.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSni {
    pub names: Option<Vec<String>>,
    pub cert: Option<String>,
    pub key: Option<String>,
}

/// One `[[backend]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileBackend {
    pub name: Option<String>,
    pub servers: Option<Vec<String>>,
    pub connect_timeout: Option<String>,
    pub loopback_sources: Option<FileSources>,
    pub backup: Option<Vec<String>>,
    pub ready_on_backup: Option<bool>,
    pub failback_rate: Option<i64>,
    pub balance: Option<String>,
    pub slowstart: Option<String>,
    pub check: Option<FileCheck>,
    pub peers: Option<String>,
    pub peer_port: Option<i64>,
}

/// One `[[discovery]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDiscovery {
    pub name: Option<String>,
    pub kind: Option<String>,
    pub record: Option<String>,
    pub query: Option<String>,
    pub nameservers: Option<Vec<String>>,
    pub port: Option<i64>,
    pub url: Option<String>,
    pub service: Option<String>,
    pub token_file: Option<String>,
    pub token_env: Option<String>,
    pub wait: Option<String>,
    pub peers: Option<Vec<String>>,
    pub node_name: Option<String>,
    pub interval: Option<String>,
    pub max_interval: Option<String>,
    pub keep_last_good: Option<String>,
    pub peers_file: Option<String>,
    pub peers_file_format: Option<String>,
}

/// `[node]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileNode {
    pub name: Option<String>,
    pub advertise: Option<String>,
}

/// `[cluster]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCluster {
    pub members: Option<String>,
    pub url: Option<String>,
    pub discovery: Option<String>,
    pub username_file: Option<String>,
    pub username_env: Option<String>,
    pub password_file: Option<String>,
    pub password_env: Option<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub fail_health_when_partitioned: Option<bool>,
}

/// `[backend.check]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCheck {
    pub kind: Option<String>,
    pub interval: Option<String>,
    pub fast_interval: Option<String>,
    pub timeout: Option<String>,
    pub rise: Option<i64>,
    pub fall: Option<i64>,
    pub port: Option<i64>,
    pub client_id: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub loopback_topic: Option<String>,
    pub path: Option<String>,
    pub expect_status: Option<i64>,
    pub expect_body: Option<String>,
}

/// `[admin]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAdmin {
    pub listen: Option<String>,
    pub max_connections: Option<i64>,
    pub header_timeout: Option<String>,
    pub drain_token_file: Option<String>,
    pub drain_token_env: Option<String>,
}

/// `loopback_sources`: `"auto"`, `"off"` or a list of addresses.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum FileSources {
    Keyword(String),
    List(Vec<String>),
}

/// `[runtime]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRuntime {
    pub relay_threads: Option<i64>,
    pub watch_config: Option<String>,
}

/// `[drain]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDrain {
    pub lb_grace: Option<String>,
    pub close_rate: Option<i64>,
    pub deadline: Option<String>,
}
