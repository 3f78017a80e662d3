//! PROXY protocol as the broker sees it: the exact bytes a raw backend receives ahead of the
//! client's own (v1 text, v2 binary; IPv4 and IPv6 clients), an inbound header from a load balancer
//! carried through as the outbound one, and a bad inbound header refused for that client alone.

mod support;

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};

use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The v2 signature, section 2.2 of the spec.
const SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// The v1 line for a TCP connection from `src` to `dst`, written out as section 2.1 gives it.
fn v1(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let family = if src.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {family} {} {} {} {}\r\n",
        src.ip(),
        dst.ip(),
        src.port(),
        dst.port()
    )
    .into_bytes()
}

/// The v2 header for a TCP connection from `src` to `dst`: signature, version 2 + PROXY, family
/// (0x11 TCP over IPv4, 0x21 over IPv6), address length, addresses, ports, big-endian.
fn v2(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let octets = |ip: IpAddr| match ip {
        IpAddr::V4(ip) => ip.octets().to_vec(),
        IpAddr::V6(ip) => ip.octets().to_vec(),
    };
    let (family, len): (u8, u16) = if src.is_ipv4() {
        (0x11, 12)
    } else {
        (0x21, 36)
    };
    let mut out = SIGNATURE.to_vec();
    out.extend([0x21, family]);
    out.extend(len.to_be_bytes());
    out.extend(octets(src.ip()));
    out.extend(octets(dst.ip()));
    out.extend(src.port().to_be_bytes());
    out.extend(dst.port().to_be_bytes());
    out
}

/// Connects through a proxy listening on `listen` with `listener_extra`, sends `sent`, and
/// returns what the backend received first (`expected.len()` bytes, `expected` computed from the
/// client's and the proxy's addresses) with the connected pair.
async fn backend_sees(
    listen: &str,
    listener_extra: &str,
    sent: &[u8],
    expected: impl FnOnce(SocketAddr, SocketAddr) -> Vec<u8>,
) -> (Vec<u8>, Vec<u8>, TcpStream, TcpStream) {
    let mut backend = RawBackend::start("127.0.0.1:0").await;
    let proxy = start_proxy(&listener_config(
        "mqtt",
        listen,
        &[backend.addr],
        listener_extra,
        "",
    ));
    let mut client = connect(proxy.addr("mqtt")).await;
    client.write_all(sent).await.unwrap();
    let expected = expected(client.local_addr().unwrap(), proxy.addr("mqtt"));
    let (mut served, _) = backend.accept().await;
    let received = read_n(&mut served, expected.len()).await;
    (received, expected, client, served)
}

/// A CONNECT-like first packet: what an MQTT client sends at once.
const FIRST_BYTES: &[u8] = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00";

/// The backend gets `header(client, proxy) + FIRST_BYTES`, and the client gets the backend's
/// reply with nothing added.
async fn outbound_header_is_exact(
    listen: &str,
    version: &str,
    header: fn(SocketAddr, SocketAddr) -> Vec<u8>,
) {
    let (received, expected, mut client, mut served) = backend_sees(
        listen,
        &format!("proxy_protocol = \"{version}\""),
        FIRST_BYTES,
        |client, proxy| [header(client, proxy), FIRST_BYTES.to_vec()].concat(),
    )
    .await;
    assert_eq!(received, expected, "{version} from {listen}");
    served.write_all(b"\x20\x02\x00\x00").await.unwrap();
    assert_eq!(read_n(&mut client, 4).await, b"\x20\x02\x00\x00");
}

/// Whether this host has an IPv6 loopback to listen on.
fn has_ipv6_loopback() -> bool {
    match std::net::TcpListener::bind("[::1]:0") {
        Ok(_) => true,
        Err(error) => {
            eprintln!("note: skipping the IPv6 case, this host has no [::1]: {error}");
            false
        }
    }
}

#[tokio::test]
async fn v1_header_from_an_ipv4_client() {
    outbound_header_is_exact("127.0.0.1:0", "v1", v1).await;
}

#[tokio::test]
async fn v2_header_from_an_ipv4_client() {
    outbound_header_is_exact("127.0.0.1:0", "v2", v2).await;
}

#[tokio::test]
async fn v1_header_from_an_ipv6_client() {
    if has_ipv6_loopback() {
        outbound_header_is_exact("[::1]:0", "v1", v1).await;
    }
}

#[tokio::test]
async fn v2_header_from_an_ipv6_client() {
    if has_ipv6_loopback() {
        outbound_header_is_exact("[::1]:0", "v2", v2).await;
    }
}

#[test]
fn the_expected_headers_are_what_the_spec_shows() {
    let src: SocketAddr = "192.0.2.1:56324".parse().unwrap();
    let dst: SocketAddr = "198.51.100.2:1883".parse().unwrap();
    assert_eq!(
        v1(src, dst),
        b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 1883\r\n"
    );
    assert_eq!(
        v2(src, dst),
        [
            0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54,
            0x0A, // signature
            0x21, 0x11, 0x00, 0x0C, // v2 PROXY, TCP over IPv4, 12 bytes follow
            192, 0, 2, 1, 198, 51, 100, 2, // addresses
            0xDC, 0x04, 0x07, 0x5B, // ports 56324, 1883
        ]
    );
}

/// Two addresses a load balancer in front of the proxy might report.
fn original() -> (SocketAddr, SocketAddr) {
    (
        "192.0.2.10:40000".parse().unwrap(),
        "198.51.100.20:1883".parse().unwrap(),
    )
}

/// A client sends `inbound(src, dst)` then its first bytes; the backend must get
/// `outbound(src, dst)` (the listener's `version`) then the same bytes.
async fn inbound_header_is_carried(
    (src, dst): (SocketAddr, SocketAddr),
    inbound: fn(SocketAddr, SocketAddr) -> Vec<u8>,
    version: &str,
    outbound: fn(SocketAddr, SocketAddr) -> Vec<u8>,
) {
    let sent = [inbound(src, dst), FIRST_BYTES.to_vec()].concat();
    let (received, expected, ..) = backend_sees(
        "127.0.0.1:0",
        &format!("accept_proxy_protocol = true\nproxy_protocol = \"{version}\""),
        &sent,
        |_, _| [outbound(src, dst), FIRST_BYTES.to_vec()].concat(),
    )
    .await;
    assert_eq!(received, expected);
}

#[tokio::test]
async fn an_inbound_v1_header_becomes_the_outbound_v2_header() {
    inbound_header_is_carried(original(), v1, "v2", v2).await;
}

#[tokio::test]
async fn an_inbound_v2_ipv6_header_becomes_the_outbound_v1_header() {
    let ipv6 = (
        "[2001:db8::1]:40000".parse().unwrap(),
        "[2001:db8::2]:1883".parse().unwrap(),
    );
    inbound_header_is_carried(ipv6, v2, "v1", v1).await;
}

#[tokio::test]
async fn a_bad_inbound_header_closes_that_client_only_and_is_counted() {
    let proxy = start_proxy(&relay_config(
        &[echo_backend().await],
        "accept_proxy_protocol = true",
        "",
    ));
    let addr = proxy.addr("mqtt");
    let (src, dst) = original();
    // A good client: its header is consumed, not relayed (proxy_protocol is off outbound).
    let mut good = connect(addr).await;
    good.write_all(&v1(src, dst)).await.unwrap();
    round_trip(&mut good, b"ping").await;

    let bad_headers: [&[u8]; 3] = [
        b"PROXY TCP4 300.0.2.10 198.51.100.20 40000 1883\r\nping",
        b"PROXY TCP4 192.0.2.10 198.51.100.20 40000\r\nping",
        // No header at all: an MQTT client talking straight to a listener that expects one.
        FIRST_BYTES,
    ];
    for (i, header) in bad_headers.iter().enumerate() {
        let mut bad = connect(addr).await;
        bad.write_all(header).await.unwrap();
        match read_to_eof(&mut bad).await {
            Ok(bytes) => assert_eq!(bytes, b"", "bad header {i} got a reply"),
            Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "bad header {i}: {e}"),
        }
        round_trip(&mut good, b"still here").await;
    }
    assert_eq!(
        proxy.metric(
            "brokerside_connections_refused_total",
            &[("reason", "proxy_header")]
        ),
        bad_headers.len() as u64
    );
    proxy
        .metric_reaches("brokerside_connections_active", &[], 1)
        .await;
}
