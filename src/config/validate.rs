//! File model -> typed [`Config`]. Collects every problem with its field path instead of
//! stopping at the first, so one `check-config` run shows all that needs fixing.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::time::Duration;

use super::check::check;
use super::discovery::{cluster, discovery, node, token_source};
use super::fields::{
    Problems, bounded, decode_array, decode_table, duration, keyword, name, positive_duration,
    socket_addr, socket_addrs, syntax_message, unique_names,
};
use super::file::{
    FileAdmin, FileBackend, FileCluster, FileDiscovery, FileDrain, FileListener, FileNode,
    FileRuntime, FileSources,
};
use super::{
    AdminConfig, BackendConfig, Balance, Config, ConfigError, DEFAULT_ADMIN_HEADER_TIMEOUT,
    DEFAULT_ADMIN_LISTEN, DEFAULT_ADMIN_MAX_CONNECTIONS, DEFAULT_ADMISSION_QUEUE,
    DEFAULT_ADMISSION_TIMEOUT, DEFAULT_BACKLOG, DEFAULT_CLOSE_RATE, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_DRAIN_DEADLINE, DEFAULT_FAILBACK_RATE, DEFAULT_HALF_CLOSE_TIMEOUT, DEFAULT_LB_GRACE,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_PREREAD_TIMEOUT, DEFAULT_PROXY_HEADER_TIMEOUT, DrainConfig,
    ListenerConfig, LoopbackSources, MAX_RELAY_THREADS, Pacing, ProxyProtocol, RuntimeConfig,
};

const SECTIONS: &[&str] = &[
    "admin",
    "node",
    "listener",
    "backend",
    "discovery",
    "cluster",
    "drain",
    "runtime",
];

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
    let file_drain: FileDrain = decode_table(&table, "drain", &mut problems);
    let file_admin: FileAdmin = decode_table(&table, "admin", &mut problems);
    let file_node: FileNode = decode_table(&table, "node", &mut problems);
    let file_cluster: FileCluster = decode_table(&table, "cluster", &mut problems);
    let file_runtime: FileRuntime = decode_table(&table, "runtime", &mut problems);
    let file_discovery: Vec<Option<FileDiscovery>> =
        decode_array(&table, "discovery", &mut problems);
    let discovery: Vec<Option<crate::config::DiscoveryConfig>> = file_discovery
        .iter()
        .enumerate()
        .map(|(i, d)| {
            d.as_ref()
                .and_then(|d| discovery(d, &format!("discovery[{i}]"), &mut problems))
        })
        .collect();
    let source_names: Vec<Option<&str>> = file_discovery
        .iter()
        .map(|d| d.as_ref().and_then(|d| d.name.as_deref()))
        .collect();
    unique_names(&source_names, "discovery", &mut problems);

    let backends: Vec<Option<BackendConfig>> = file_backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            b.as_ref()
                .and_then(|b| backend(b, &format!("backend[{i}]"), &source_names, &mut problems))
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

    let admin = admin(&file_admin, &mut problems);
    if let Some(admin) = &admin
        && admin.listen.port() != 0
        && addresses.contains(&admin.listen)
    {
        problems.add(
            "admin.listen",
            format!("{} is also a listener's address", admin.listen),
        );
    }
    let drain = drain(&file_drain, &mut problems);
    let node = node(&file_node, &mut problems);
    let cluster = cluster(&file_cluster, &source_names, &mut problems);
    let runtime = runtime(&file_runtime, &mut problems);

    if !problems.0.is_empty() {
        return Err(problems.0);
    }
    let listeners: Vec<ListenerConfig> = listeners.into_iter().flatten().collect();
    let mut backends: Vec<BackendConfig> = backends.into_iter().flatten().collect();
    probe_headers(&listeners, &mut backends, &mut problems);
    client_id_needs_preread(&listeners, &backends, &mut problems);
    if !problems.0.is_empty() {
        return Err(problems.0);
    }
    Ok(Config {
        listeners,
        backends,
        drain,
        admin: admin.ok_or_else(|| problems.0.clone())?,
        discovery: discovery.into_iter().flatten().collect(),
        node,
        cluster,
        runtime,
    })
}

/// A backend that balances by client id learns it from the CONNECT, which only a listener with
/// `mqtt_preread` reads: every listener relaying to it must have it on.
fn client_id_needs_preread(
    listeners: &[ListenerConfig],
    backends: &[BackendConfig],
    problems: &mut Problems,
) {
    for (i, listener) in listeners.iter().enumerate() {
        let backend = &backends[listener.backend];
        if backend.balance == Balance::ClientId && !listener.mqtt_preread {
            problems.add(
                format!("listener[{i}].mqtt_preread"),
                format!(
                    "backend `{}` has balance = \"client-id\", which reads the client id from \
                     each client's CONNECT: set mqtt_preread = true (WebSocket listeners cannot; \
                     give them a local-first backend)",
                    backend.name
                ),
            );
        }
    }
}

/// A backend's probes send the PROXY header its listeners send, so all of them must agree.
fn probe_headers(
    listeners: &[ListenerConfig],
    backends: &mut [BackendConfig],
    problems: &mut Problems,
) {
    for (b, backend) in backends.iter_mut().enumerate() {
        let mut first: Option<(usize, ProxyProtocol)> = None;
        for (i, listener) in listeners.iter().enumerate().filter(|(_, l)| l.backend == b) {
            match first {
                None => first = Some((i, listener.proxy_protocol)),
                Some((j, protocol)) if protocol != listener.proxy_protocol => problems.add(
                    format!("listener[{i}].proxy_protocol"),
                    format!(
                        "differs from listener[{j}], which uses the same backend `{}`: its health probes can send only one kind of header",
                        backend.name
                    ),
                ),
                Some(_) => {}
            }
        }
        backend.proxy_protocol = first.map_or(ProxyProtocol::Off, |(_, protocol)| protocol);
    }
}

fn admin(file: &FileAdmin, problems: &mut Problems) -> Option<AdminConfig> {
    let listen = socket_addr(
        file.listen.as_deref().unwrap_or(DEFAULT_ADMIN_LISTEN),
        "admin.listen",
        problems,
    );
    let max_connections = bounded(
        file.max_connections,
        "admin.max_connections",
        DEFAULT_ADMIN_MAX_CONNECTIONS,
        1..=10_000,
        problems,
    );
    let header_timeout = positive_duration(
        file.header_timeout.as_deref(),
        "admin.header_timeout",
        DEFAULT_ADMIN_HEADER_TIMEOUT,
        problems,
    );
    let drain_token = token_source(
        &file.drain_token_file,
        &file.drain_token_env,
        "admin",
        "drain_token",
        problems,
    );
    Some(AdminConfig {
        listen: listen?,
        max_connections,
        header_timeout,
        drain_token,
    })
}

fn runtime(file: &FileRuntime, problems: &mut Problems) -> RuntimeConfig {
    let relay_threads = file.relay_threads.map(|count| {
        bounded(
            Some(count),
            "runtime.relay_threads",
            1,
            1..=i64::from(MAX_RELAY_THREADS),
            problems,
        )
    });
    let watch = duration(
        file.watch_config.as_deref(),
        "runtime.watch_config",
        Duration::ZERO,
        problems,
    );
    RuntimeConfig {
        relay_threads: relay_threads.and_then(|count| NonZeroUsize::new(count as usize)),
        watch_config: (!watch.is_zero()).then_some(watch),
    }
}

fn drain(file: &FileDrain, problems: &mut Problems) -> DrainConfig {
    let lb_grace = duration(
        file.lb_grace.as_deref(),
        "drain.lb_grace",
        DEFAULT_LB_GRACE,
        problems,
    );
    let close_rate = bounded(
        file.close_rate,
        "drain.close_rate",
        DEFAULT_CLOSE_RATE,
        1..=1_000_000,
        problems,
    );
    let deadline = positive_duration(
        file.deadline.as_deref(),
        "drain.deadline",
        DEFAULT_DRAIN_DEADLINE,
        problems,
    );
    if lb_grace >= deadline && !deadline.is_zero() {
        problems.add(
            "drain.lb_grace",
            format!(
                "{} is not shorter than deadline {}: the connections would have no time to close",
                super::format_duration(lb_grace),
                super::format_duration(deadline)
            ),
        );
    }
    DrainConfig {
        lb_grace,
        close_rate,
        deadline,
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
    let proxy_header_timeout = positive_duration(
        file.proxy_header_timeout.as_deref(),
        &format!("{path}.proxy_header_timeout"),
        DEFAULT_PROXY_HEADER_TIMEOUT,
        problems,
    );
    let idle = duration(
        file.idle_timeout.as_deref(),
        &format!("{path}.idle_timeout"),
        Duration::ZERO,
        problems,
    );
    let half_close = duration(
        file.half_close_timeout.as_deref(),
        &format!("{path}.half_close_timeout"),
        DEFAULT_HALF_CLOSE_TIMEOUT,
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
    // 16 bytes is the smallest CONNECT (3.1.1, empty client id); MQTT's own limit on a packet
    // is 256 MiB, far above any CONNECT worth reading.
    let max_connect_size = bounded(
        file.max_connect_size,
        &format!("{path}.max_connect_size"),
        crate::mqtt::DEFAULT_MAX_CONNECT_SIZE as u32,
        16..=16 * 1024 * 1024,
        problems,
    );
    let preread_timeout = positive_duration(
        file.preread_timeout.as_deref(),
        &format!("{path}.preread_timeout"),
        DEFAULT_PREREAD_TIMEOUT,
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
        half_close_timeout: (!half_close.is_zero()).then_some(half_close),
        backlog,
        mqtt_preread: file.mqtt_preread.unwrap_or(false),
        max_connect_size: max_connect_size as usize,
        preread_timeout,
        pacing: pacing(file, path, problems),
        tls: file
            .tls
            .as_ref()
            .and_then(|tls| super::tls::tls(tls, &format!("{path}.tls"), problems)),
    })
}

/// `max_connection_rate`, `burst`, `admission_queue` and `admission_timeout`.
fn pacing(file: &FileListener, path: &str, problems: &mut Problems) -> Pacing {
    let key = |key: &str| format!("{path}.{key}");
    let rate = bounded(
        file.max_connection_rate,
        &key("max_connection_rate"),
        0,
        0..=1_000_000,
        problems,
    );
    let burst = Pacing::default_burst(rate);
    let burst = bounded(file.burst, &key("burst"), burst, 1..=1_000_000, problems);
    let queue = DEFAULT_ADMISSION_QUEUE;
    let queue = bounded(
        file.admission_queue,
        &key("admission_queue"),
        queue,
        0..=10_000_000,
        problems,
    );
    let timeout = file.admission_timeout.as_deref();
    let timeout = duration(
        timeout,
        &key("admission_timeout"),
        DEFAULT_ADMISSION_TIMEOUT,
        problems,
    );
    // An out-of-range rate is reported once, not again through the keys that depend on it.
    if file.max_connection_rate.unwrap_or(0) == 0 {
        for (key, set) in [
            ("burst", file.burst.is_some()),
            ("admission_queue", file.admission_queue.is_some()),
            ("admission_timeout", file.admission_timeout.is_some()),
        ] {
            if set {
                problems.add(
                    format!("{path}.{key}"),
                    "only applies with max_connection_rate above 0",
                );
            }
        }
    }
    Pacing {
        rate,
        burst,
        queue,
        timeout,
    }
}

fn backend(
    file: &FileBackend,
    path: &str,
    sources: &[Option<&str>],
    problems: &mut Problems,
) -> Option<BackendConfig> {
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
        Some(list) => socket_addrs(list, &format!("{path}.servers"), problems),
    };
    let connect_timeout = positive_duration(
        file.connect_timeout.as_deref(),
        &format!("{path}.connect_timeout"),
        DEFAULT_CONNECT_TIMEOUT,
        problems,
    );
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
    let backup = socket_addrs(
        file.backup.as_deref().unwrap_or_default(),
        &format!("{path}.backup"),
        problems,
    );
    for (i, addr) in backup.iter().enumerate() {
        if let Some(addr) = addr
            && servers.contains(&Some(*addr))
        {
            problems.add(
                format!("{path}.backup[{i}]"),
                format!("{addr} is also in `servers`"),
            );
        }
    }
    let failback_rate = bounded(
        file.failback_rate,
        &format!("{path}.failback_rate"),
        DEFAULT_FAILBACK_RATE,
        0..=1_000_000,
        problems,
    );
    let balance = keyword(
        file.balance.as_deref(),
        &format!("{path}.balance"),
        &[
            (Balance::LocalFirst.as_str(), Balance::LocalFirst),
            (Balance::ClientId.as_str(), Balance::ClientId),
        ],
        problems,
    );
    let slowstart = duration(
        file.slowstart.as_deref(),
        &format!("{path}.slowstart"),
        Duration::ZERO,
        problems,
    );
    let check = match &file.check {
        Some(table) => Some(check(table, &format!("{path}.check"), problems)?),
        None => None,
    };
    let peers = file.peers.clone();
    if let Some(wanted) = &peers
        && !sources.contains(&Some(wanted.as_str()))
    {
        problems.add(
            format!("{path}.peers"),
            format!("no [[discovery]] is named `{wanted}`"),
        );
    }
    let peer_port = file.peer_port.map(|p| {
        bounded(
            Some(p),
            &format!("{path}.peer_port"),
            0,
            1..=65_535,
            problems,
        ) as u16
    });
    if peer_port.is_some() && peers.is_none() {
        problems.add(format!("{path}.peer_port"), "needs `peers`");
    }
    if servers.iter().chain(&backup).any(Option::is_none) {
        return None;
    }
    Some(BackendConfig {
        name: name?,
        servers: servers.into_iter().flatten().collect(),
        connect_timeout,
        loopback_sources,
        backup: backup.into_iter().flatten().collect(),
        ready_on_backup: file.ready_on_backup.unwrap_or(false),
        failback_rate,
        balance,
        slowstart,
        check,
        // Set from the listeners that use this backend, once they are validated.
        proxy_protocol: ProxyProtocol::Off,
        peers,
        peer_port,
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
    fn balance_and_slowstart_default_to_local_first_at_once() {
        let base = "[[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nbackend = \"b\"\nmqtt_preread = true\n\
                    [[backend]]\nname = \"b\"\nservers = [\"127.0.0.1:2\"]\n";
        let plain = validate(base).unwrap();
        assert_eq!(plain.backends[0].balance, Balance::LocalFirst);
        assert_eq!(plain.backends[0].slowstart, Duration::ZERO);
        let set = validate(&format!(
            "{base}balance = \"client-id\"\nslowstart = \"30s\"\n"
        ))
        .unwrap();
        assert_eq!(set.backends[0].balance, Balance::ClientId);
        assert_eq!(set.backends[0].slowstart, Duration::from_secs(30));
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

    #[test]
    fn pacing_keys_are_checked_and_defaulted() {
        let listener = |extra: &str| {
            format!(
                "[[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nbackend = \"b\"\n{extra}\n\
                 [[backend]]\nname = \"b\"\nservers = [\"127.0.0.1:2\"]\n"
            )
        };
        let paced = validate(&listener("max_connection_rate = 2000")).unwrap();
        let pacing = paced.listeners[0].pacing;
        assert_eq!(
            pacing,
            Pacing {
                rate: 2000,
                burst: 200,
                queue: DEFAULT_ADMISSION_QUEUE,
                timeout: DEFAULT_ADMISSION_TIMEOUT,
            }
        );
        let unpaced = validate(&listener("")).unwrap();
        assert!(!unpaced.listeners[0].pacing.enabled());
        assert_eq!(
            errors(&listener(
                "max_connection_rate = -1\nburst = 0\nadmission_timeout = \"soon\""
            )),
            [
                "listener[0].max_connection_rate: -1 is out of range 0..=1000000",
                "listener[0].burst: 0 is out of range 1..=1000000",
                "listener[0].admission_timeout: `soon` is not a duration: write e.g. \"5s\", \"500ms\", \"2m\"",
            ]
        );
        assert_eq!(
            errors(&listener("admission_queue = 10")),
            ["listener[0].admission_queue: only applies with max_connection_rate above 0"]
        );
    }
}
