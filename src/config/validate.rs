//! File model -> typed [`Config`]. Collects every problem with its field path instead of
//! stopping at the first, so one `check-config` run shows all that needs fixing.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::file::{FileBackend, FileDrain, FileListener, FileSources};
use super::{
    BackendConfig, Config, ConfigError, DEFAULT_BACKLOG, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_DRAIN_DEADLINE, DEFAULT_MAX_CONNECTIONS, DEFAULT_PROXY_HEADER_TIMEOUT, DrainConfig,
    ListenerConfig, LoopbackSources, ProxyProtocol, parse_duration,
};

const SECTIONS: &[&str] = &["listener", "backend", "drain"];

/// Accumulates problems while the config is checked.
struct Problems(Vec<ConfigError>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// Parses and validates `text`, returning every problem found.
pub fn validate(text: &str) -> Result<Config, Vec<ConfigError>> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        vec![ConfigError {
            path: String::new(),
            message: syntax_message(text, &e),
        }]
    })?;
    let mut problems = Problems(Vec::new());
    for key in table.keys() {
        if !SECTIONS.contains(&key.as_str()) {
            problems.add(
                key.as_str(),
                format!("unknown section; expected one of {}", SECTIONS.join(", ")),
            );
        }
    }
    let file_listeners: Vec<Option<FileListener>> = decode_array(&table, "listener", &mut problems);
    let file_backends: Vec<Option<FileBackend>> = decode_array(&table, "backend", &mut problems);
    let file_drain: FileDrain = match table.get("drain") {
        Some(value) => decode(value, "drain", &mut problems).unwrap_or_default(),
        None => FileDrain::default(),
    };

    let backends: Vec<Option<BackendConfig>> = file_backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            b.as_ref()
                .and_then(|b| backend(b, &format!("backend[{i}]"), &mut problems))
        })
        .collect();
    // Names and references are checked as written, so that one bad field does not hide a
    // duplicate elsewhere or make every listener naming that backend report "no such backend".
    let backend_names: Vec<Option<&str>> = file_backends
        .iter()
        .map(|b| b.as_ref().and_then(|b| b.name.as_deref()))
        .collect();
    unique_names(&backend_names, "backend", &mut problems);
    if file_listeners.is_empty() {
        problems.add("listener", "at least one [[listener]] is required");
    }
    let listeners: Vec<Option<ListenerConfig>> = file_listeners
        .iter()
        .enumerate()
        .map(|(i, l)| {
            l.as_ref()
                .and_then(|l| listener(l, &format!("listener[{i}]"), &backend_names, &mut problems))
        })
        .collect();
    let listener_names: Vec<Option<&str>> = file_listeners
        .iter()
        .map(|l| l.as_ref().and_then(|l| l.name.as_deref()))
        .collect();
    unique_names(&listener_names, "listener", &mut problems);
    let mut addresses = HashSet::new();
    for (i, l) in file_listeners.iter().enumerate() {
        let listen = l
            .as_ref()
            .and_then(|l| l.listen.as_deref()?.parse::<SocketAddr>().ok());
        if let Some(listen) = listen
            && listen.port() != 0
            && !addresses.insert(listen)
        {
            problems.add(
                format!("listener[{i}].listen"),
                format!("{listen} is used by an earlier listener"),
            );
        }
    }

    let drain = DrainConfig {
        deadline: duration(
            file_drain.deadline.as_deref(),
            "drain.deadline",
            DEFAULT_DRAIN_DEADLINE,
            &mut problems,
        ),
    };

    if !problems.0.is_empty() {
        return Err(problems.0);
    }
    Ok(Config {
        listeners: listeners.into_iter().flatten().collect(),
        backends: backends.into_iter().flatten().collect(),
        drain,
    })
}

/// A TOML syntax error as one line with its position.
fn syntax_message(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim();
    match error.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("TOML syntax error at line {line}, column {column}: {message}")
        }
        None => format!("TOML syntax error: {message}"),
    }
}

/// Decodes one table, naming the offending key on failure (`listener[0].max_connections`).
fn decode<T: DeserializeOwned>(
    value: &toml::Value,
    path: &str,
    problems: &mut Problems,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value.clone()) {
        Ok(decoded) => Some(decoded),
        Err(error) => {
            let inner = error.path().to_string();
            let full = if inner == "." || inner.is_empty() {
                path.to_string()
            } else {
                format!("{path}.{inner}")
            };
            // serde's messages may run on with "in `field`" lines; the path already says where.
            let message = error.into_inner().to_string();
            let first_line = message.lines().next().unwrap_or("invalid value").trim();
            problems.add(full, first_line);
            None
        }
    }
}

/// Decodes an array of tables, keeping a slot per element so indices in messages stay true.
fn decode_array<T: DeserializeOwned>(
    table: &toml::Table,
    key: &str,
    problems: &mut Problems,
) -> Vec<Option<T>> {
    match table.get(key) {
        None => Vec::new(),
        Some(toml::Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| decode(item, &format!("{key}[{i}]"), problems))
            .collect(),
        Some(_) => {
            problems.add(key, format!("must be an array of tables: write [[{key}]]"));
            Vec::new()
        }
    }
}

fn unique_names(names: &[Option<&str>], section: &str, problems: &mut Problems) {
    let mut seen = HashSet::new();
    for (i, name) in names.iter().enumerate() {
        if let Some(name) = name
            && !seen.insert(*name)
        {
            problems.add(
                format!("{section}[{i}].name"),
                format!("`{name}` is used by an earlier {section}"),
            );
        }
    }
}

fn name(value: Option<&str>, path: &str, problems: &mut Problems) -> Option<String> {
    let Some(value) = value else {
        problems.add(path, "is required");
        return None;
    };
    let valid = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if !valid {
        problems.add(
            path,
            format!("`{value}` must be non-empty and use only letters, digits, '-', '_' and '.'"),
        );
        return None;
    }
    Some(value.to_string())
}

fn socket_addr(value: &str, path: &str, problems: &mut Problems) -> Option<SocketAddr> {
    match value.parse() {
        Ok(addr) => Some(addr),
        Err(_) => {
            problems.add(
                path,
                format!(
                    "`{value}` is not an address with a port, such as 0.0.0.0:1883 or [::]:1883"
                ),
            );
            None
        }
    }
}

fn duration(
    value: Option<&str>,
    path: &str,
    default: Duration,
    problems: &mut Problems,
) -> Duration {
    match value.map(parse_duration) {
        None => default,
        Some(Ok(d)) => d,
        Some(Err(message)) => {
            problems.add(path, message);
            default
        }
    }
}

fn bounded(
    value: Option<i64>,
    path: &str,
    default: u32,
    range: std::ops::RangeInclusive<i64>,
    problems: &mut Problems,
) -> u32 {
    match value {
        None => default,
        Some(v) if range.contains(&v) => v as u32,
        Some(v) => {
            problems.add(
                path,
                format!("{v} is out of range {}..={}", range.start(), range.end()),
            );
            default
        }
    }
}

fn listener(
    file: &FileListener,
    path: &str,
    backend_names: &[Option<&str>],
    problems: &mut Problems,
) -> Option<ListenerConfig> {
    let name = name(file.name.as_deref(), &format!("{path}.name"), problems);
    let listen = match file.listen.as_deref() {
        Some(text) => socket_addr(text, &format!("{path}.listen"), problems),
        None => {
            problems.add(format!("{path}.listen"), "is required");
            None
        }
    };
    let backend = match file.backend.as_deref() {
        None => {
            problems.add(format!("{path}.backend"), "is required");
            None
        }
        Some(wanted) => {
            let found = backend_names.iter().position(|b| *b == Some(wanted));
            if found.is_none() {
                problems.add(
                    format!("{path}.backend"),
                    format!("no [[backend]] is named `{wanted}`"),
                );
            }
            found
        }
    };
    let proxy_protocol = match file.proxy_protocol.as_deref() {
        None | Some("off") => ProxyProtocol::Off,
        Some("v1") => ProxyProtocol::V1,
        Some("v2") => ProxyProtocol::V2,
        Some(other) => {
            problems.add(
                format!("{path}.proxy_protocol"),
                format!("`{other}` is not one of off, v1, v2"),
            );
            ProxyProtocol::Off
        }
    };
    let proxy_header_timeout = duration(
        file.proxy_header_timeout.as_deref(),
        &format!("{path}.proxy_header_timeout"),
        DEFAULT_PROXY_HEADER_TIMEOUT,
        problems,
    );
    if proxy_header_timeout.is_zero() {
        problems.add(
            format!("{path}.proxy_header_timeout"),
            "must be more than 0s",
        );
    }
    let idle = duration(
        file.idle_timeout.as_deref(),
        &format!("{path}.idle_timeout"),
        Duration::ZERO,
        problems,
    );
    let max_connections = bounded(
        file.max_connections,
        &format!("{path}.max_connections"),
        DEFAULT_MAX_CONNECTIONS,
        1..=10_000_000,
        problems,
    );
    let backlog = bounded(
        file.backlog,
        &format!("{path}.backlog"),
        DEFAULT_BACKLOG,
        1..=65_535,
        problems,
    );
    Some(ListenerConfig {
        name: name?,
        listen: listen?,
        backend: backend?,
        proxy_protocol,
        accept_proxy_protocol: file.accept_proxy_protocol.unwrap_or(false),
        proxy_header_timeout,
        max_connections,
        idle_timeout: (!idle.is_zero()).then_some(idle),
        backlog,
    })
}

fn backend(file: &FileBackend, path: &str, problems: &mut Problems) -> Option<BackendConfig> {
    let name = name(file.name.as_deref(), &format!("{path}.name"), problems);
    let servers: Vec<Option<SocketAddr>> = match &file.servers {
        None => {
            problems.add(format!("{path}.servers"), "is required");
            Vec::new()
        }
        Some(list) if list.is_empty() => {
            problems.add(format!("{path}.servers"), "needs at least one server");
            Vec::new()
        }
        Some(list) => list
            .iter()
            .enumerate()
            .map(|(i, s)| socket_addr(s, &format!("{path}.servers[{i}]"), problems))
            .collect(),
    };
    let connect_timeout = duration(
        file.connect_timeout.as_deref(),
        &format!("{path}.connect_timeout"),
        DEFAULT_CONNECT_TIMEOUT,
        problems,
    );
    if connect_timeout.is_zero() {
        problems.add(format!("{path}.connect_timeout"), "must be more than 0s");
    }
    let sources_path = format!("{path}.loopback_sources");
    let loopback_sources = match &file.loopback_sources {
        None => LoopbackSources::Auto,
        Some(FileSources::Keyword(k)) if k == "auto" => LoopbackSources::Auto,
        Some(FileSources::Keyword(k)) if k == "off" => LoopbackSources::Off,
        Some(FileSources::Keyword(k)) => {
            problems.add(
                sources_path,
                format!("`{k}` is not \"auto\", \"off\" or a list of addresses"),
            );
            LoopbackSources::Auto
        }
        Some(FileSources::List(list)) if list.is_empty() => {
            problems.add(
                sources_path,
                "an empty list: write \"off\" to let the kernel choose",
            );
            LoopbackSources::Auto
        }
        Some(FileSources::List(list)) => {
            let parsed: Vec<IpAddr> = list
                .iter()
                .enumerate()
                .filter_map(|(i, a)| match a.parse() {
                    Ok(ip) => Some(ip),
                    Err(_) => {
                        problems.add(
                            format!("{sources_path}[{i}]"),
                            format!("`{a}` is not an IP address"),
                        );
                        None
                    }
                })
                .collect();
            LoopbackSources::List(parsed)
        }
    };
    if servers.iter().any(Option::is_none) {
        return None;
    }
    Some(BackendConfig {
        name: name?,
        servers: servers.into_iter().flatten().collect(),
        connect_timeout,
        loopback_sources,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        validate(text)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn embedded_default_is_valid() {
        let config = validate(super::super::DEFAULT_CONFIG).unwrap();
        assert_eq!(config.listeners.len(), 4);
        assert_eq!(config.listeners[0].listen, "0.0.0.0:1883".parse().unwrap());
    }

    #[test]
    fn reports_every_problem_at_once() {
        let found = errors(
            r#"
            [[listener]]
            name = "mqtt"
            listen = "nowhere"
            backend = "missing"
            proxy_protocol = "v3"
            [[backend]]
            name = "b"
            servers = ["127.0.0.1"]
            connect_timeout = "5"
            "#,
        );
        assert_eq!(
            found,
            [
                "backend[0].servers[0]: `127.0.0.1` is not an address with a port, such as 0.0.0.0:1883 or [::]:1883",
                "backend[0].connect_timeout: `5` has no unit: write e.g. \"5s\", \"500ms\", \"2m\"",
                "listener[0].listen: `nowhere` is not an address with a port, such as 0.0.0.0:1883 or [::]:1883",
                "listener[0].backend: no [[backend]] is named `missing`",
                "listener[0].proxy_protocol: `v3` is not one of off, v1, v2",
            ]
        );
    }

    #[test]
    fn unknown_keys_name_their_table() {
        let found = errors(
            "[[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nbackend = \"b\"\ncolour = 1\n\
             [[backend]]\nname = \"b\"\nservers = [\"127.0.0.1:2\"]\n[extra]\n",
        );
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("extra: unknown section"), "{found:?}");
        assert!(
            found[1].starts_with("listener[0].colour: unknown field `colour`, expected one of"),
            "{found:?}"
        );
    }

    #[test]
    fn wrong_types_name_the_field() {
        let found = errors(
            "[[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nbackend = \"b\"\nmax_connections = \"many\"\n\
             [[backend]]\nname = \"b\"\nservers = [\"127.0.0.1:2\"]\n",
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("listener[0].max_connections: invalid type"),
            "{found:?}"
        );
    }

    #[test]
    fn syntax_errors_give_the_line() {
        let found = errors("[[listener]]\nname = \"a\nlisten = 1\n");
        assert_eq!(found.len(), 1);
        assert!(
            found[0].starts_with("TOML syntax error at line 2"),
            "{found:?}"
        );
    }
}
