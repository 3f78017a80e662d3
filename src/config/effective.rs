//! The effective configuration written back as TOML, for `check-config`: what will run, with
//! every default made visible. Built as a TOML document so that quoting is always right.

use std::time::Duration;

use toml::{Table, Value};

use super::{
    CheckConfig, CheckKind, ClientAuth, ClusterMembers, Config, DiscoveryKind, DnsRecord,
    LoopbackSources, PeersFileFormat, ProxyProtocol, TlsConfig, TokenSource, format_duration,
};

/// Writes `<key>_file` or `<key>_env` for a secret's source (never the secret).
fn token(table: &mut Table, key: &str, source: &Option<TokenSource>) {
    match source {
        Some(TokenSource::File(path)) => {
            table.insert(format!("{key}_file"), text(path.display()));
        }
        Some(TokenSource::Env(var)) => {
            table.insert(format!("{key}_env"), text(var));
        }
        None => {}
    }
}

fn text(value: impl ToString) -> Value {
    Value::String(value.to_string())
}

fn time(duration: Duration) -> Value {
    Value::String(format_duration(duration))
}

fn list<T: std::fmt::Display>(items: &[T]) -> Value {
    Value::Array(items.iter().map(text).collect())
}

fn protocol(protocol: ProxyProtocol) -> Value {
    text(match protocol {
        ProxyProtocol::Off => "off",
        ProxyProtocol::V1 => "v1",
        ProxyProtocol::V2 => "v2",
    })
}

fn check_table(check: &CheckConfig) -> Table {
    let mut t = Table::new();
    let kind = match &check.kind {
        CheckKind::Tcp => "tcp",
        CheckKind::Mqtt(_) => "mqtt",
        CheckKind::Http(_) => "http",
        CheckKind::Amqp => "amqp",
    };
    t.insert("kind".into(), text(kind));
    t.insert("interval".into(), time(check.interval));
    t.insert("fast_interval".into(), time(check.fast_interval));
    t.insert("timeout".into(), time(check.timeout));
    t.insert("rise".into(), Value::Integer(check.rise.into()));
    t.insert("fall".into(), Value::Integer(check.fall.into()));
    match &check.kind {
        CheckKind::Mqtt(mqtt) => {
            t.insert("client_id".into(), text(&mqtt.client_id));
            if let Some(username) = &mqtt.username {
                t.insert("username".into(), text(username));
            }
            if mqtt.password.is_some() {
                // Never print a secret; a placeholder keeps the shape of the config visible.
                t.insert("password".into(), text("<set>"));
            }
            if let Some(topic) = &mqtt.loopback_topic {
                t.insert("loopback_topic".into(), text(topic));
            }
        }
        CheckKind::Http(http) => {
            if let Some(port) = http.port {
                t.insert("port".into(), Value::Integer(port.into()));
            }
            t.insert("path".into(), text(&http.path));
            t.insert(
                "expect_status".into(),
                Value::Integer(http.expect_status.into()),
            );
            if let Some(body) = &http.expect_body {
                t.insert("expect_body".into(), text(body));
            }
        }
        CheckKind::Tcp | CheckKind::Amqp => {}
    }
    t
}

/// `[listener.tls]` with every default written out.
fn tls_table(tls: &TlsConfig) -> Table {
    let mut t = Table::new();
    t.insert("cert".into(), text(tls.cert.cert.display()));
    t.insert("key".into(), text(tls.cert.key.display()));
    if let Some(ca) = &tls.client_ca {
        t.insert("client_ca".into(), text(ca.display()));
        let auth = match tls.client_auth {
            ClientAuth::Required => "required",
            ClientAuth::Optional => "optional",
        };
        t.insert("client_auth".into(), text(auth));
        let crls: Vec<String> = tls.crl.iter().map(|p| p.display().to_string()).collect();
        t.insert("crl".into(), list(&crls));
    }
    t.insert("min_version".into(), text(tls.min_version.label()));
    t.insert("alpn".into(), list(&tls.alpn));
    t.insert("handshake_timeout".into(), time(tls.handshake_timeout));
    t.insert("watch".into(), time(tls.watch.unwrap_or_default()));
    t.insert(
        "session_tickets".into(),
        Value::Boolean(tls.session_tickets),
    );
    if !tls.sni.is_empty() {
        let sni = tls.sni.iter().map(|sni| {
            let mut s = Table::new();
            s.insert("names".into(), list(&sni.names));
            s.insert("cert".into(), text(sni.files.cert.display()));
            s.insert("key".into(), text(sni.files.key.display()));
            Value::Table(s)
        });
        t.insert("sni".into(), Value::Array(sni.collect()));
    }
    t
}

/// Renders `config` as TOML that parses back to the same [`Config`] (a password prints as
/// `"<set>"`).
pub fn to_toml(config: &Config) -> String {
    let mut doc = Table::new();

    let mut admin = Table::new();
    admin.insert("listen".into(), text(config.admin.listen));
    admin.insert(
        "max_connections".into(),
        Value::Integer(config.admin.max_connections.into()),
    );
    admin.insert("header_timeout".into(), time(config.admin.header_timeout));
    token(&mut admin, "drain_token", &config.admin.drain_token);
    doc.insert("admin".into(), Value::Table(admin));

    let mut node = Table::new();
    if let Some(name) = &config.node.name {
        node.insert("name".into(), text(name));
    }
    if let Some(advertise) = config.node.advertise {
        node.insert("advertise".into(), text(advertise));
    }
    doc.insert("node".into(), Value::Table(node));

    let listeners = config.listeners.iter().map(|l| {
        let mut t = Table::new();
        t.insert("name".into(), text(&l.name));
        t.insert("listen".into(), text(l.listen));
        t.insert("backend".into(), text(&config.backends[l.backend].name));
        t.insert("proxy_protocol".into(), protocol(l.proxy_protocol));
        t.insert(
            "accept_proxy_protocol".into(),
            Value::Boolean(l.accept_proxy_protocol),
        );
        t.insert("proxy_header_timeout".into(), time(l.proxy_header_timeout));
        t.insert(
            "max_connections".into(),
            Value::Integer(l.max_connections.into()),
        );
        t.insert(
            "idle_timeout".into(),
            time(l.idle_timeout.unwrap_or_default()),
        );
        t.insert(
            "half_close_timeout".into(),
            time(l.half_close_timeout.unwrap_or_default()),
        );
        t.insert("backlog".into(), Value::Integer(l.backlog.into()));
        t.insert("mqtt_preread".into(), Value::Boolean(l.mqtt_preread));
        t.insert(
            "max_connect_size".into(),
            Value::Integer(l.max_connect_size as i64),
        );
        t.insert("preread_timeout".into(), time(l.preread_timeout));
        let pacing = &l.pacing;
        t.insert(
            "max_connection_rate".into(),
            Value::Integer(pacing.rate.into()),
        );
        // The other keys are refused on an unpaced listener.
        if pacing.enabled() {
            t.insert("burst".into(), Value::Integer(pacing.burst.into()));
            t.insert(
                "admission_queue".into(),
                Value::Integer(pacing.queue.into()),
            );
            t.insert("admission_timeout".into(), time(pacing.timeout));
        }
        if let Some(tls) = &l.tls {
            t.insert("tls".into(), Value::Table(tls_table(tls)));
        }
        Value::Table(t)
    });
    doc.insert("listener".into(), Value::Array(listeners.collect()));

    let backends = config.backends.iter().map(|b| {
        let mut t = Table::new();
        t.insert("name".into(), text(&b.name));
        t.insert("servers".into(), list(&b.servers));
        t.insert("backup".into(), list(&b.backup));
        t.insert("connect_timeout".into(), time(b.connect_timeout));
        let sources = match &b.loopback_sources {
            LoopbackSources::Off => text("off"),
            LoopbackSources::Auto => text("auto"),
            LoopbackSources::List(addresses) => list(addresses),
        };
        t.insert("loopback_sources".into(), sources);
        t.insert("ready_on_backup".into(), Value::Boolean(b.ready_on_backup));
        t.insert(
            "failback_rate".into(),
            Value::Integer(b.failback_rate.into()),
        );
        t.insert("balance".into(), text(b.balance.as_str()));
        t.insert("slowstart".into(), time(b.slowstart));
        if let Some(peers) = &b.peers {
            t.insert("peers".into(), text(peers));
        }
        if let Some(port) = b.peer_port {
            t.insert("peer_port".into(), Value::Integer(port.into()));
        }
        if let Some(check) = &b.check {
            t.insert("check".into(), Value::Table(check_table(check)));
        }
        Value::Table(t)
    });
    doc.insert("backend".into(), Value::Array(backends.collect()));

    let sources = config.discovery.iter().map(|d| {
        let mut t = Table::new();
        t.insert("name".into(), text(&d.name));
        match &d.kind {
            DiscoveryKind::Dns(dns) => {
                t.insert("kind".into(), text("dns"));
                let record = match dns.record {
                    DnsRecord::Srv => "srv",
                    DnsRecord::A => "a",
                    DnsRecord::Aaaa => "aaaa",
                };
                t.insert("record".into(), text(record));
                t.insert("query".into(), text(&dns.query));
                t.insert("nameservers".into(), list(&dns.nameservers));
                if let Some(port) = dns.port {
                    t.insert("port".into(), Value::Integer(port.into()));
                }
            }
            DiscoveryKind::Consul(consul) => {
                t.insert("kind".into(), text("consul"));
                t.insert("url".into(), text(&consul.url));
                t.insert("service".into(), text(&consul.service));
                token(&mut t, "token", &consul.token);
                t.insert("wait".into(), time(consul.wait));
            }
            DiscoveryKind::Static(peers) => {
                t.insert("kind".into(), text("static"));
                t.insert("peers".into(), list(peers));
            }
        }
        t.insert("node_name".into(), text(&d.node_name));
        t.insert("interval".into(), time(d.interval));
        t.insert("max_interval".into(), time(d.max_interval));
        t.insert("keep_last_good".into(), time(d.keep_last_good));
        if let Some(file) = &d.peers_file {
            t.insert("peers_file".into(), text(file.display()));
        }
        let format = match d.peers_file_format {
            PeersFileFormat::Lines => "lines",
            PeersFileFormat::Json => "json",
        };
        t.insert("peers_file_format".into(), text(format));
        Value::Table(t)
    });
    doc.insert("discovery".into(), Value::Array(sources.collect()));

    let mut cluster = Table::new();
    let members = match config.cluster.members {
        ClusterMembers::None => "none",
        ClusterMembers::Emqx => "emqx",
        ClusterMembers::Rabbitmq => "rabbitmq",
    };
    cluster.insert("members".into(), text(members));
    cluster.insert("url".into(), text(&config.cluster.url));
    if let Some(source) = &config.cluster.discovery {
        cluster.insert("discovery".into(), text(source));
    }
    token(&mut cluster, "username", &config.cluster.username);
    token(&mut cluster, "password", &config.cluster.password);
    cluster.insert("interval".into(), time(config.cluster.interval));
    cluster.insert("timeout".into(), time(config.cluster.timeout));
    cluster.insert(
        "fail_health_when_partitioned".into(),
        Value::Boolean(config.cluster.fail_health_when_partitioned),
    );
    doc.insert("cluster".into(), Value::Table(cluster));

    let mut drain = Table::new();
    drain.insert("lb_grace".into(), time(config.drain.lb_grace));
    drain.insert(
        "close_rate".into(),
        Value::Integer(config.drain.close_rate.into()),
    );
    drain.insert("deadline".into(), time(config.drain.deadline));
    doc.insert("drain".into(), Value::Table(drain));

    // Left out when unset: the default is this host's core count, which may not be the count
    // where the config runs.
    let mut runtime = Table::new();
    if let Some(threads) = config.runtime.relay_threads {
        runtime.insert("relay_threads".into(), Value::Integer(threads.get() as i64));
    }
    if let Some(every) = config.runtime.watch_config {
        runtime.insert("watch_config".into(), time(every));
    }
    doc.insert("runtime".into(), Value::Table(runtime));

    toml::to_string(&doc).unwrap_or_else(|e| format!("# cannot render the effective config: {e}\n"))
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, DEFAULT_CONFIG};

    #[test]
    fn effective_config_parses_back_to_itself() {
        let config = Config::from_toml(DEFAULT_CONFIG).unwrap();
        assert_eq!(Config::from_toml(&config.to_toml()).unwrap(), config);
        let paced = DEFAULT_CONFIG.replace("max_connection_rate = 0", "max_connection_rate = 500");
        let config = Config::from_toml(&paced).unwrap();
        let effective = config.to_toml();
        assert!(
            effective.contains("admission_timeout = \"20s\""),
            "{effective}"
        );
        assert_eq!(Config::from_toml(&effective).unwrap(), config);
    }
}
