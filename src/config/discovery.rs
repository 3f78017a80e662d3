//! Validation of `[[discovery]]`, `[node]` and `[cluster]`: where peers come from, who this
//! node is, and how the cluster guard asks the broker for its own view.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::fields::{
    Problems, bounded, duration, misplaced, name, positive_duration, socket_addrs,
};
use super::file::{FileCluster, FileDiscovery, FileNode};
use super::{
    ClusterConfig, ClusterMembers, ConsulDiscovery, DiscoveryConfig, DiscoveryKind, DnsDiscovery,
    DnsRecord, NodeConfig, PeersFileFormat, TokenSource,
};

/// Default shortest time between refreshes.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// Default longest time between refreshes.
const DEFAULT_MAX_INTERVAL: Duration = Duration::from_secs(60);
/// Default time a failing source keeps its last good set.
const DEFAULT_KEEP_LAST_GOOD: Duration = Duration::from_secs(300);
/// Default Consul blocking-query wait.
const DEFAULT_CONSUL_WAIT: Duration = Duration::from_secs(30);
/// Default cluster-guard interval and timeout.
const DEFAULT_CLUSTER_INTERVAL: Duration = Duration::from_secs(5);
const DEFAULT_CLUSTER_TIMEOUT: Duration = Duration::from_secs(2);

/// A secret read from a file or the environment: `<key>_file` or `<key>_env`, not both.
pub(super) fn token_source(
    file: &Option<String>,
    env: &Option<String>,
    path: &str,
    key: &str,
    problems: &mut Problems,
) -> Option<TokenSource> {
    match (file, env) {
        (Some(_), Some(_)) => {
            problems.add(
                format!("{path}.{key}_env"),
                format!("set either {key}_file or {key}_env, not both"),
            );
            None
        }
        (Some(file), None) => {
            let file = PathBuf::from(file);
            if !file.is_file() {
                problems.add(
                    format!("{path}.{key}_file"),
                    format!("file not found: {}", file.display()),
                );
            }
            Some(TokenSource::File(file))
        }
        (None, Some(var)) => {
            if var.is_empty() {
                problems.add(format!("{path}.{key}_env"), "names no variable");
            }
            Some(TokenSource::Env(var.clone()))
        }
        (None, None) => None,
    }
}

/// Validates one `[[discovery]]` table at `path`.
pub(super) fn discovery(
    file: &FileDiscovery,
    path: &str,
    problems: &mut Problems,
) -> Option<DiscoveryConfig> {
    let source_name = name(file.name.as_deref(), &format!("{path}.name"), problems);
    let kind_name = file.kind.as_deref().unwrap_or("");
    misplaced(
        problems,
        path,
        kind_name,
        &[
            ("record", file.record.is_some(), "dns"),
            ("query", file.query.is_some(), "dns"),
            ("nameservers", file.nameservers.is_some(), "dns"),
            ("port", file.port.is_some(), "dns"),
            ("url", file.url.is_some(), "consul"),
            ("service", file.service.is_some(), "consul"),
            ("token_file", file.token_file.is_some(), "consul"),
            ("token_env", file.token_env.is_some(), "consul"),
            ("wait", file.wait.is_some(), "consul"),
            ("peers", file.peers.is_some(), "static"),
        ],
    );
    let kind = match kind_name {
        "dns" => {
            let record = match file.record.as_deref().unwrap_or("srv") {
                "srv" => Some(DnsRecord::Srv),
                "a" => Some(DnsRecord::A),
                "aaaa" => Some(DnsRecord::Aaaa),
                other => {
                    problems.add(
                        format!("{path}.record"),
                        format!("`{other}` is not one of srv, a, aaaa"),
                    );
                    None
                }
            };
            let query = file.query.clone().filter(|q| !q.is_empty());
            if query.is_none() {
                problems.add(format!("{path}.query"), "is required for kind = \"dns\"");
            }
            let nameservers = socket_addrs(
                file.nameservers.as_deref().unwrap_or_default(),
                &format!("{path}.nameservers"),
                problems,
            );
            let port = file
                .port
                .map(|p| bounded(Some(p), &format!("{path}.port"), 0, 1..=65_535, problems) as u16);
            if matches!(record, Some(DnsRecord::A | DnsRecord::Aaaa)) && port.is_none() {
                problems.add(
                    format!("{path}.port"),
                    "is required for A and AAAA records, which carry no port",
                );
            }
            // A closure so that a missing part ends only this value, not the whole table's checks.
            (|| {
                Some(DiscoveryKind::Dns(DnsDiscovery {
                    record: record?,
                    query: query?,
                    nameservers: nameservers.into_iter().collect::<Option<Vec<_>>>()?,
                    port,
                }))
            })()
        }
        "consul" => {
            let url = file
                .url
                .clone()
                .unwrap_or_else(|| "http://127.0.0.1:8500".to_string());
            if !url.starts_with("http://") {
                problems.add(
                    format!("{path}.url"),
                    format!("`{url}` must start with http:// (Consul's local agent)"),
                );
            }
            let service = file.service.clone().filter(|s| !s.is_empty());
            if service.is_none() {
                problems.add(
                    format!("{path}.service"),
                    "is required for kind = \"consul\"",
                );
            }
            let wait = positive_duration(
                file.wait.as_deref(),
                &format!("{path}.wait"),
                DEFAULT_CONSUL_WAIT,
                problems,
            );
            if wait > Duration::from_secs(600) {
                problems.add(
                    format!("{path}.wait"),
                    "Consul caps blocking queries at 10m",
                );
            }
            let token = token_source(&file.token_file, &file.token_env, path, "token", problems);
            service.map(|service| {
                DiscoveryKind::Consul(ConsulDiscovery {
                    url: url.trim_end_matches('/').to_string(),
                    service,
                    token,
                    wait,
                })
            })
        }
        "static" => {
            let peers = socket_addrs(
                file.peers.as_deref().unwrap_or_default(),
                &format!("{path}.peers"),
                problems,
            );
            peers
                .into_iter()
                .collect::<Option<Vec<_>>>()
                .map(DiscoveryKind::Static)
        }
        "" => {
            problems.add(format!("{path}.kind"), "is required: dns, consul or static");
            None
        }
        other => {
            problems.add(
                format!("{path}.kind"),
                format!("`{other}` is not one of dns, consul, static"),
            );
            None
        }
    };
    let node_name = file.node_name.clone().unwrap_or_else(|| "{ip}".to_string());
    let unknown: Vec<&str> = placeholders(&node_name)
        .filter(|p| !["ip", "host", "target"].contains(p))
        .collect();
    if !unknown.is_empty() {
        problems.add(
            format!("{path}.node_name"),
            format!(
                "unknown placeholder {{{}}}: use {{ip}}, {{host}} or {{target}}",
                unknown[0]
            ),
        );
    }
    let interval = positive_duration(
        file.interval.as_deref(),
        &format!("{path}.interval"),
        DEFAULT_INTERVAL,
        problems,
    );
    let max_interval = positive_duration(
        file.max_interval.as_deref(),
        &format!("{path}.max_interval"),
        DEFAULT_MAX_INTERVAL.max(interval),
        problems,
    );
    if max_interval < interval {
        problems.add(format!("{path}.max_interval"), "is shorter than interval");
    }
    let keep_last_good = duration(
        file.keep_last_good.as_deref(),
        &format!("{path}.keep_last_good"),
        DEFAULT_KEEP_LAST_GOOD,
        problems,
    );
    let peers_file_format = match file.peers_file_format.as_deref().unwrap_or("lines") {
        "lines" => PeersFileFormat::Lines,
        "json" => PeersFileFormat::Json,
        other => {
            problems.add(
                format!("{path}.peers_file_format"),
                format!("`{other}` is not one of lines, json"),
            );
            PeersFileFormat::Lines
        }
    };
    let peers_file = file.peers_file.as_ref().map(PathBuf::from);
    if let Some(peers_file) = &peers_file {
        let dir = peers_file.parent().filter(|d| !d.as_os_str().is_empty());
        if dir.is_some_and(|d| !d.is_dir()) {
            problems.add(
                format!("{path}.peers_file"),
                format!(
                    "directory not found: {}",
                    dir.map(|d| d.display().to_string()).unwrap_or_default()
                ),
            );
        }
    }
    Some(DiscoveryConfig {
        name: source_name?,
        kind: kind?,
        node_name,
        interval,
        max_interval,
        keep_last_good,
        peers_file,
        peers_file_format,
    })
}

/// The `{name}` placeholders of a template.
fn placeholders(template: &str) -> impl Iterator<Item = &str> {
    template
        .split('{')
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
}

/// Validates `[node]`.
pub(super) fn node(file: &FileNode, problems: &mut Problems) -> NodeConfig {
    let advertise = file
        .advertise
        .as_deref()
        .and_then(|text| match text.parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                problems.add("node.advertise", format!("`{text}` is not an IP address"));
                None
            }
        });
    NodeConfig {
        name: file.name.clone().filter(|n| !n.is_empty()),
        advertise,
    }
}

/// Validates `[cluster]`; `sources` are the discovery names, for the reference check.
pub(super) fn cluster(
    file: &FileCluster,
    sources: &[Option<&str>],
    problems: &mut Problems,
) -> ClusterConfig {
    let members = match file.members.as_deref().unwrap_or("none") {
        "none" => ClusterMembers::None,
        "emqx" => ClusterMembers::Emqx,
        "rabbitmq" => ClusterMembers::Rabbitmq,
        other => {
            problems.add(
                "cluster.members",
                format!("`{other}` is not one of emqx, rabbitmq, none"),
            );
            ClusterMembers::None
        }
    };
    let default_url = match members {
        ClusterMembers::Rabbitmq => "http://127.0.0.1:15672/api/nodes",
        _ => "http://127.0.0.1:18083/api/v5/nodes",
    };
    let url = file.url.clone().unwrap_or_else(|| default_url.to_string());
    if !url.starts_with("http://") {
        problems.add(
            "cluster.url",
            format!("`{url}` must start with http:// (the broker's local API)"),
        );
    }
    if let Some(wanted) = &file.discovery
        && !sources.contains(&Some(wanted.as_str()))
    {
        problems.add(
            "cluster.discovery",
            format!("no [[discovery]] is named `{wanted}`"),
        );
    }
    if members != ClusterMembers::None && file.discovery.is_none() && sources.len() != 1 {
        problems.add(
            "cluster.discovery",
            "name the [[discovery]] source whose peers are the expected members",
        );
    }
    let discovery = file.discovery.clone().or_else(|| match sources {
        [Some(only)] => Some((*only).to_string()),
        _ => None,
    });
    ClusterConfig {
        members,
        url,
        discovery,
        username: token_source(
            &file.username_file,
            &file.username_env,
            "cluster",
            "username",
            problems,
        ),
        password: token_source(
            &file.password_file,
            &file.password_env,
            "cluster",
            "password",
            problems,
        ),
        interval: positive_duration(
            file.interval.as_deref(),
            "cluster.interval",
            DEFAULT_CLUSTER_INTERVAL,
            problems,
        ),
        timeout: positive_duration(
            file.timeout.as_deref(),
            "cluster.timeout",
            DEFAULT_CLUSTER_TIMEOUT,
            problems,
        ),
        fail_health_when_partitioned: file.fail_health_when_partitioned.unwrap_or(true),
    }
}
