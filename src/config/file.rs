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
    pub backlog: Option<i64>,
}

/// One `[[backend]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileBackend {
    pub name: Option<String>,
    pub servers: Option<Vec<String>>,
    pub connect_timeout: Option<String>,
    pub loopback_sources: Option<FileSources>,
}

/// `loopback_sources`: `"auto"`, `"off"` or a list of addresses.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum FileSources {
    Keyword(String),
    List(Vec<String>),
}

/// `[drain]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDrain {
    pub deadline: Option<String>,
}
