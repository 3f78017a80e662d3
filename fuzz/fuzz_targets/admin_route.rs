//! `admin::route` (method, path and query matching, the `/peers` format parameter, the drain
//! token check on `Authorization`) on fuzzed requests against the embedded default config.
//!
//! Input: one flag byte, then `METHOD \n URI [\n AUTHORIZATION]`. Inputs that hyper could never
//! hand to `route` (an invalid method, URI or header value, and `POST /reload`, which the server
//! answers itself) are skipped. The flag byte picks the peer (loopback or not, IPv4, IPv6 or
//! IPv4-mapped IPv6) and the state: whether a drain token is configured, whether the local
//! brokers are up, whether the node is already draining, whether the cluster view is
//! partitioned.
//!
//! Besides never panicking, checks that every answer has one of the statuses the admin endpoint
//! documents, is marked uncacheable with a content type, and that a 405 says what is allowed.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use brokerside::cluster::Clustering;
use brokerside::config::Config;
use brokerside::health::{CheckOutcome, HealthReport, ServerState};
use brokerside::runtime::Secrets;
use brokerside::shutdown::DrainControl;
use brokerside::state::SidecarState;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Uri};
use libfuzzer_sys::fuzz_target;

/// The drain token of the states that have one; seeds use it.
const TOKEN: &str = "fuzz-token";

const LOOPBACK: u8 = 1 << 0;
/// Two bits: 0 IPv4, 1 IPv6, 2 and 3 IPv4-mapped IPv6.
const FAMILY_SHIFT: u8 = 1;
const WITH_TOKEN: u8 = 1 << 3;
const BROKERS_UP: u8 = 1 << 4;
const DRAINING: u8 = 1 << 5;
const PARTITIONED: u8 = 1 << 6;

const STATUSES: [u16; 7] = [200, 202, 400, 403, 404, 405, 503];

/// The four shared states (token or not × brokers up or not), built once: indexed by
/// `with_token as usize * 2 + up as usize`.
fn bases() -> &'static [SidecarState; 4] {
    static BASES: OnceLock<[SidecarState; 4]> = OnceLock::new();
    BASES.get_or_init(|| {
        let build = |with_token: bool, up: bool| {
            let config = Config::embedded_default().expect("the embedded default is valid");
            let secrets = Secrets {
                admin_token: with_token.then(|| TOKEN.to_string()),
                ..Secrets::default()
            };
            let state = SidecarState::offline(config, secrets);
            if up {
                mark_up(&state);
            }
            state
        };
        [
            build(false, false),
            build(false, true),
            build(true, false),
            build(true, true),
        ]
    })
}

/// Publishes a passing report for every server of every backend.
fn mark_up(state: &SidecarState) {
    let now = SystemTime::now();
    for backend in &state.runtime.load().backends {
        for server in &backend.servers {
            server.health.publish(HealthReport {
                state: ServerState::Up,
                checked: true,
                last: Some(CheckOutcome {
                    at: now,
                    latency: Duration::from_millis(1),
                    error: None,
                }),
                streak: 3,
                since: now,
            });
        }
    }
}

/// The state one input sees: a shared base with its own drain and cluster view, so that a
/// `POST /drain` (or a flag) changes nothing for the inputs after it, and every input replays
/// alone as it ran.
fn state(flags: u8) -> SidecarState {
    let index = usize::from(flags & WITH_TOKEN != 0) * 2 + usize::from(flags & BROKERS_UP != 0);
    let base = &bases()[index];
    let drain = DrainControl::default();
    if flags & DRAINING != 0 {
        drain.start("fuzz");
    }
    SidecarState {
        runtime: Arc::clone(&base.runtime),
        drain: Arc::new(drain),
        metrics: base.metrics.clone(),
        clustering: clustering(flags & PARTITIONED != 0),
        reloader: base.reloader.clone(),
    }
}

/// A client address: loopback or not, in the family the flags pick.
fn peer(flags: u8) -> SocketAddr {
    let v4 = if flags & LOOPBACK != 0 {
        Ipv4Addr::LOCALHOST
    } else {
        Ipv4Addr::new(10, 0, 0, 7)
    };
    let ip = match (flags >> FAMILY_SHIFT) & 0b11 {
        0 => IpAddr::V4(v4),
        1 if flags & LOOPBACK != 0 => IpAddr::V6(Ipv6Addr::LOCALHOST),
        1 => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7)),
        _ => IpAddr::V6(v4.to_ipv6_mapped()),
    };
    SocketAddr::new(ip, 40000)
}

/// An empty cluster view, or one in which this node sees 1 of 3 nodes.
fn clustering(partitioned: bool) -> Arc<ArcSwap<Clustering>> {
    if !partitioned {
        return Arc::default();
    }
    Arc::new(ArcSwap::from_pointee(Clustering {
        enabled: true,
        current_node: "emqx@10.0.0.5".to_string(),
        connected_nodes: vec!["emqx@10.0.0.5".to_string()],
        node_count: 1,
        expected_nodes: 3,
        quorum: 2,
        partitioned: true,
    }))
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut lines = rest.splitn(3, |&b| b == b'\n');
    let (Some(method), Some(uri)) = (lines.next(), lines.next()) else {
        return;
    };
    let (Ok(method), Ok(uri)) = (Method::from_bytes(method), Uri::try_from(uri)) else {
        return;
    };
    if method == Method::POST && uri.path() == "/reload" {
        return;
    }
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    if let Some(authorization) = lines.next() {
        let Ok(value) = HeaderValue::from_bytes(authorization) else {
            return;
        };
        request.headers_mut().insert(header::AUTHORIZATION, value);
    }
    let (parts, ()) = request.into_parts();

    let state = state(flags);
    let response = brokerside::admin::route(&parts, peer(flags), &state);

    let status = response.status().as_u16();
    assert!(
        STATUSES.contains(&status),
        "{status} for {} {}",
        parts.method,
        parts.uri
    );
    let headers = response.headers();
    assert!(
        headers.contains_key(header::CONTENT_TYPE),
        "{status}: no type"
    );
    assert_eq!(
        headers
            .get(header::CACHE_CONTROL)
            .map(HeaderValue::as_bytes),
        Some(&b"no-store"[..]),
        "{status}: cacheable"
    );
    if status == 405 {
        assert!(headers.contains_key(header::ALLOW), "405 without Allow");
    }
});
