//! The `/health` document: the node (name, version, uptime), its verdict with its reason, the
//! drain, each listener (connections, rate, refusals, admission pacing where configured), each backend server's check state and
//! connections, the discovery sources and the cluster view. Built from atomics and report
//! snapshots; times are Unix seconds (fractional, millisecond precision) so that any client can
//! compare them. The status page ([`super::page`]) is drawn from this same document.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::backend::Backend;
use crate::config::{ClientAuth, Pacing};
use crate::metrics::{AdmissionMetrics, RefuseReason, ShedReason};
use crate::runtime::Runtime;
use crate::state::SidecarState;
use crate::tls::Terminator;

/// The whole `/health` document.
pub(super) fn health(state: &SidecarState) -> Value {
    let readiness = state.readiness();
    let started = state.drain.started_at();
    let clustering = state.clustering.load();
    let runtime = state.runtime.load();
    let rates = state.metrics.connection_rates();
    rates.retain(|name| runtime.listeners.iter().any(|l| l.name == name));
    let up_since = state.metrics.started_at();
    json!({
        "node": {
            "name": node_name(&runtime, &clustering.current_node),
            "version": env!("CARGO_PKG_VERSION"),
            "started_at": unix_seconds(up_since),
            "uptime_seconds": SystemTime::now().duration_since(up_since).map_or(0, |up| up.as_secs()),
        },
        "status": if readiness.is_ok() { "ok" } else { "unavailable" },
        "reason": readiness.err(),
        "draining": state.drain.is_draining(),
        "drain": {
            "phase": state.drain.phase().as_str(),
            "started_at": started.as_ref().map(|(at, _)| unix_seconds(*at)),
            "why": started.map(|(_, why)| why),
        },
        "config": {
            "generation": runtime.generation,
            "loaded_at": unix_seconds(runtime.loaded.at),
            "file": runtime.loaded.file.as_ref().map(|file| file.display().to_string()),
            "sha256": runtime.loaded.sha256,
        },
        "listeners": runtime.listeners.iter().map(|listener| {
            let total = listener.metrics.total.get();
            let refused: serde_json::Map<String, Value> = RefuseReason::ALL
                .iter()
                .map(|&reason| (reason.label().to_string(), listener.metrics.refused_count(reason).into()))
                .collect();
            json!({
                "name": listener.name,
                "address": listener.addr.to_string(),
                "backend": listener.plan.backend.name,
                "active_connections": listener.metrics.active.get(),
                "max_connections": listener.plan.max_connections,
                "connections_total": total,
                "new_per_second": rates.rate(&listener.name, total),
                "refused": refused,
                "tls": listener.plan.tls.as_ref().map(|tls| tls_json(tls)),
                "admission": listener.plan.pacing.as_ref().map(|pacing| admission_json(pacing, &listener.metrics.admission)),
            })
        }).collect::<Vec<_>>(),
        "backends": runtime.backends.iter().map(|backend| backend_json(backend)).collect::<Vec<_>>(),
        "discovery": runtime.sources.iter().map(|source| {
            let set = source.peers();
            json!({
                "name": source.name,
                "peers": set.peers.len(),
                "refreshed_at": set.refreshed.map(unix_seconds),
                "error": set.error,
                "errors_total": state.metrics.discovery_errors_of(&source.name),
            })
        }).collect::<Vec<_>>(),
        "clustering": {
            "enabled": clustering.enabled,
            "current_node": clustering.current_node,
            "connected_nodes": clustering.connected_nodes,
            "node_count": clustering.node_count,
            "expected_nodes": clustering.expected_nodes,
            "quorum": clustering.quorum,
            "partitioned": clustering.partitioned,
        },
    })
}

/// A paced listener's admission: its settings, clients held now, let through and shed.
fn admission_json(pacing: &Pacing, metrics: &AdmissionMetrics) -> Value {
    let shed: serde_json::Map<String, Value> = ShedReason::ALL
        .iter()
        .map(|&reason| {
            (
                reason.label().to_string(),
                metrics.shed_count(reason).into(),
            )
        })
        .collect();
    json!({
        "queued": metrics.queued.get(),
        "rate": pacing.rate,
        "burst": pacing.burst,
        "queue_limit": pacing.queue,
        "timeout_seconds": pacing.timeout.as_secs_f64(),
        "admitted": metrics.admitted.get(),
        "shed": shed,
    })
}

/// A TLS listener's certificates as served now, and whether client certificates are asked for.
fn tls_json(tls: &Terminator) -> Value {
    let material = tls.material();
    let client_certificates = match material.client_auth {
        None => "none",
        Some(ClientAuth::Required) => "required",
        Some(ClientAuth::Optional) => "optional",
    };
    json!({
        "min_version": tls.config.min_version.label(),
        "client_certificates": client_certificates,
        "certificates": material.certificates.iter().map(|c| json!({
            "file": c.label,
            "subject": c.subject,
            "serial": c.serial,
            "not_after": c.not_after,
            "sni_names": c.names,
        })).collect::<Vec<_>>(),
    })
}

/// This node's name: `[node] name` (or the name its discovery template gives it), else the
/// broker's name for it as the cluster guard last saw it, else the host name.
fn node_name(runtime: &Runtime, current_node: &str) -> String {
    if let Some(name) = &runtime.self_node.name {
        return name.clone();
    }
    if !current_node.is_empty() {
        return current_node.to_string();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|host| host.trim().to_string())
        .unwrap_or_default()
}

fn backend_json(backend: &Backend) -> Value {
    let configured = backend.servers.len();
    let now = Instant::now();
    let servers: Vec<Value> = backend
        .all_servers()
        .iter()
        .enumerate()
        .map(|(index, server)| {
            let report = server.health.report();
            let last = report.last.as_ref();
            json!({
                "address": server.addr.to_string(),
                "role": server.role.as_str(),
                "state": report.state.as_str(),
                "checked": report.checked,
                "last_check": last.map(|last| unix_seconds(last.at)),
                "latency_ms": last.map(|last| milliseconds(last.latency)),
                "error": last.and_then(|last| last.error.as_deref()),
                "streak": report.streak,
                "since": unix_seconds(report.since),
                "discovered": index >= configured,
                "active_connections": server.metrics.active.get(),
                // Rounded: a ramp moves on every instant, and 1 is what most servers show.
                "weight": (backend.weight(server, now) * 1000.0).round() / 1000.0,
            })
        })
        .collect();
    json!({
        "name": backend.name,
        "checked": backend.check.is_some(),
        "balance": backend.balance.as_str(),
        "servers": servers,
    })
}

/// Seconds since the Unix epoch, to the millisecond; 0 for a clock set before 1970.
fn unix_seconds(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .map(|since| since.as_millis() as f64 / 1000.0)
        .unwrap_or(0.0)
}

/// A latency in milliseconds, to the microsecond.
fn milliseconds(latency: Duration) -> f64 {
    latency.as_micros() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::super::testing;
    use super::*;

    #[test]
    fn every_field_of_a_fresh_node() {
        let (state, server) = testing::state(None);
        let json = health(&state);
        assert_eq!(json["status"], "unavailable");
        assert_eq!(
            json["reason"],
            format!("backend broker-mqtt: local broker down ({server} not yet checked)")
        );
        assert_eq!(json["draining"], false);
        assert_eq!(
            json["drain"],
            json!({"phase": "serving", "started_at": null, "why": null})
        );
        let listener = &json["listeners"][0];
        assert_eq!(listener["name"], "mqtt");
        assert_eq!(listener["backend"], "broker-mqtt");
        assert_eq!(listener["active_connections"], 0);
        assert_eq!(listener["max_connections"], 500_000);
        assert_eq!(listener["connections_total"], 0);
        assert_eq!(
            listener["new_per_second"],
            Value::Null,
            "one read makes no rate"
        );
        assert_eq!(listener["refused"]["limit"], 0);
        assert_eq!(listener["refused"]["client_gone"], 0);
        assert_eq!(json["node"]["version"], env!("CARGO_PKG_VERSION"));
        assert!(json["node"]["uptime_seconds"].is_u64(), "{json}");
        assert_eq!(json["discovery"], json!([]));
        assert!(
            listener["address"]
                .as_str()
                .is_some_and(|a| a.parse::<std::net::SocketAddr>().is_ok()),
            "{listener}"
        );

        let backend = &json["backends"][0];
        assert_eq!(backend["name"], "broker-mqtt");
        assert_eq!(backend["checked"], true);
        let first = &backend["servers"][0];
        assert_eq!(first["address"], server.to_string());
        assert_eq!(first["role"], "local");
        assert_eq!(first["state"], "down");
        assert_eq!(first["checked"], true);
        assert_eq!(first["last_check"], Value::Null);
        assert_eq!(first["latency_ms"], Value::Null);
        assert_eq!(first["error"], Value::Null);
        assert_eq!(first["streak"], 0);
        assert_eq!(first["discovered"], false);
        assert_eq!(first["active_connections"], 0);
        assert!(
            first["since"].as_f64().is_some_and(|s| s > 1.6e9),
            "{first}"
        );
        let backup = &backend["servers"][1];
        assert_eq!(backup["role"], "backup");

        assert_eq!(
            json["clustering"],
            json!({
                "enabled": false,
                "current_node": "",
                "connected_nodes": [],
                "node_count": 0,
                "expected_nodes": 0,
                "quorum": 0,
                "partitioned": false,
            })
        );
    }

    #[test]
    fn a_checked_server_shows_its_last_probe() {
        let (state, _) = testing::state(None);
        testing::mark_down(&state, "connection refused");
        let json = health(&state);
        let server = &json["backends"][0]["servers"][0];
        assert_eq!(server["state"], "down");
        assert_eq!(server["error"], "connection refused");
        assert_eq!(server["latency_ms"], 1.5);
        assert_eq!(server["streak"], 3);
        assert!(
            server["last_check"].as_f64().is_some_and(|s| s > 1.6e9),
            "{server}"
        );

        testing::mark_up(&state);
        state.runtime.load().listeners[0].metrics.active.set(7);
        let json = health(&state);
        assert_eq!(json["status"], "ok");
        assert_eq!(json["reason"], Value::Null);
        assert_eq!(json["listeners"][0]["active_connections"], 7);
        assert_eq!(json["backends"][0]["servers"][0]["state"], "up");
        assert_eq!(json["backends"][0]["servers"][0]["error"], Value::Null);
    }

    #[test]
    fn unix_seconds_keeps_milliseconds() {
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(unix_seconds(at), 1_700_000_000.123);
        assert_eq!(milliseconds(Duration::from_micros(2_500)), 2.5);
    }
}
