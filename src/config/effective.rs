//! The effective configuration written back as TOML, for `check-config`: what will run, with
//! every default made visible.

use std::fmt::Write;

use super::{Config, LoopbackSources, ProxyProtocol, format_duration};

/// Renders `config` as TOML that parses back to the same [`Config`].
pub fn to_toml(config: &Config) -> String {
    let mut out = String::new();
    for l in &config.listeners {
        let protocol = match l.proxy_protocol {
            ProxyProtocol::Off => "off",
            ProxyProtocol::V1 => "v1",
            ProxyProtocol::V2 => "v2",
        };
        let _ = writeln!(out, "[[listener]]");
        let _ = writeln!(out, "name = {:?}", l.name);
        let _ = writeln!(out, "listen = \"{}\"", l.listen);
        let _ = writeln!(out, "backend = {:?}", config.backends[l.backend].name);
        let _ = writeln!(out, "proxy_protocol = \"{protocol}\"");
        let _ = writeln!(out, "accept_proxy_protocol = {}", l.accept_proxy_protocol);
        let _ = writeln!(
            out,
            "proxy_header_timeout = \"{}\"",
            format_duration(l.proxy_header_timeout)
        );
        let _ = writeln!(out, "max_connections = {}", l.max_connections);
        let _ = writeln!(
            out,
            "idle_timeout = \"{}\"",
            format_duration(l.idle_timeout.unwrap_or_default())
        );
        let _ = writeln!(out, "backlog = {}\n", l.backlog);
    }
    for b in &config.backends {
        let servers: Vec<String> = b.servers.iter().map(|s| format!("\"{s}\"")).collect();
        let sources = match &b.loopback_sources {
            LoopbackSources::Off => "\"off\"".to_string(),
            LoopbackSources::Auto => "\"auto\"".to_string(),
            LoopbackSources::List(list) => {
                let items: Vec<String> = list.iter().map(|ip| format!("\"{ip}\"")).collect();
                format!("[{}]", items.join(", "))
            }
        };
        let _ = writeln!(out, "[[backend]]");
        let _ = writeln!(out, "name = {:?}", b.name);
        let _ = writeln!(out, "servers = [{}]", servers.join(", "));
        let _ = writeln!(
            out,
            "connect_timeout = \"{}\"",
            format_duration(b.connect_timeout)
        );
        let _ = writeln!(out, "loopback_sources = {sources}\n");
    }
    let _ = writeln!(out, "[drain]");
    let _ = writeln!(
        out,
        "deadline = \"{}\"",
        format_duration(config.drain.deadline)
    );
    out
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, DEFAULT_CONFIG};

    #[test]
    fn effective_config_parses_back_to_itself() {
        let config = Config::from_toml(DEFAULT_CONFIG).unwrap();
        assert_eq!(Config::from_toml(&config.to_toml()).unwrap(), config);
    }
}
