//! Loopback source rotation as the broker sees it: the source addresses of the connections the
//! proxy opens to a backend on 127.0.0.1, under each `loopback_sources` setting.

mod support;

use std::collections::BTreeSet;
use std::net::IpAddr;

use support::*;

const CONNECTIONS: usize = 8;

/// Opens [`CONNECTIONS`] clients through a proxy whose backend has `backend_extra`, and returns
/// the source address of each connection the backend accepted.
async fn sources_seen(backend_extra: &str) -> Vec<IpAddr> {
    let mut backend = RawBackend::start("127.0.0.1:0").await;
    let proxy = start_proxy(&relay_config(&[backend.addr], "", backend_extra));
    let mut seen = Vec::new();
    let mut held = Vec::new();
    for _ in 0..CONNECTIONS {
        // Each client waits for its backend connection, so the proxy opens them in order.
        held.push(connect(proxy.addr("mqtt")).await);
        let (served, peer) = backend.accept().await;
        seen.push(peer.ip());
        held.push(served);
    }
    seen
}

fn distinct(sources: &[IpAddr]) -> BTreeSet<IpAddr> {
    sources.iter().copied().collect()
}

#[tokio::test]
async fn auto_leaves_the_source_to_the_kernel_while_ports_are_plenty() {
    // `loopback_sources` left out: "auto" is the default. It binds a source (two system calls per
    // connection) only once a server holds many connections or a connect ran out of ports; the
    // rotation itself is unit-tested in `backend::loopback`.
    let seen = sources_seen("").await;
    assert!(
        seen.iter().all(|ip| ip.is_loopback() && ip.is_ipv4()),
        "{seen:?}"
    );
    assert_eq!(distinct(&seen).len(), 1, "rotated too early: {seen:?}");
}

#[tokio::test]
async fn a_configured_list_is_exactly_what_the_backend_sees() {
    let seen = sources_seen("loopback_sources = [\"127.0.0.5\", \"127.0.0.6\"]").await;
    let want: BTreeSet<IpAddr> = ["127.0.0.5", "127.0.0.6"]
        .iter()
        .map(|ip| ip.parse().unwrap())
        .collect();
    assert_eq!(distinct(&seen), want, "{seen:?}");
}

#[tokio::test]
async fn off_leaves_one_source_address() {
    let seen = sources_seen("loopback_sources = \"off\"").await;
    assert_eq!(distinct(&seen).len(), 1, "{seen:?}");
}
