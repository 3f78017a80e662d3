//! `net::proxy_protocol::parse` on arbitrary bytes, and the encoders' headers read back.
//!
//! Besides never panicking, checks what `read_inbound` (which peeks whatever has arrived and
//! calls `parse` on it) relies on:
//! - a reported header length is within the input and not zero;
//! - the header alone parses to the same answer, so the bytes after it (the client's MQTT
//!   CONNECT) never change what the header says;
//! - every proper prefix of an accepted header asks for more bytes, so how the header is split
//!   across TCP segments never decides whether it is accepted;
//! - "need more bytes" is only answered below the largest header `read_inbound` buffers;
//! - error messages are one non-empty line (they go into the log);
//! - `encode_v1` / `encode_v2` of addresses taken from the input, followed by the input as
//!   payload, parse back to those addresses and exactly the header's length.

#![no_main]

use std::net::{IpAddr, SocketAddr};

use arbitrary::{Arbitrary, Unstructured};
use brokerside::net::proxy_protocol::{Inbound, encode_v1, encode_v2, parse};
use libfuzzer_sys::fuzz_target;

/// The size of `read_inbound`'s buffer (`MAX_HEADER_LEN` in the module, the v2 cap): it can
/// never hold more than this, so `Ok(None)` for this many bytes would stall a connection.
const MAX_HEADER_LEN: usize = 4096;

fuzz_target!(|data: &[u8]| {
    check_parse(data);
    round_trip(data);
});

fn check_parse(data: &[u8]) {
    match parse(data) {
        Ok(Some((inbound, len))) => {
            assert!(len > 0, "an empty header was accepted");
            assert!(
                len <= data.len(),
                "header length {len} > {} given",
                data.len()
            );
            let header = &data[..len];
            match parse(header) {
                Ok(Some(again)) => assert_eq!(again, (inbound, len), "the header alone differs"),
                other => panic!("the header alone: {other:?}, with what follows: {inbound:?}"),
            }
            for cut in 0..len {
                let prefix = parse(&header[..cut]);
                assert!(
                    matches!(prefix, Ok(None)),
                    "prefix of {cut} bytes of an accepted {len}-byte header: {prefix:?}"
                );
            }
        }
        Ok(None) => assert!(
            data.len() < MAX_HEADER_LEN,
            "{} bytes still ask for more",
            data.len()
        ),
        Err(error) => {
            let message = error.to_string();
            assert!(
                !message.is_empty() && !message.contains('\n'),
                "{message:?}"
            );
        }
    }
}

fn round_trip(data: &[u8]) {
    let mut input = Unstructured::new(data);
    let (Ok(src), Ok(dst)) = (
        SocketAddr::arbitrary(&mut input),
        SocketAddr::arbitrary(&mut input),
    ) else {
        return;
    };
    let expected = expected(src, dst);
    let payload = input.take_rest();
    for header in [encode_v1(src, dst), encode_v2(src, dst)] {
        let mut bytes = header.clone();
        bytes.extend_from_slice(payload);
        match parse(&bytes) {
            Ok(Some(parsed)) => assert_eq!(
                parsed,
                (expected, header.len()),
                "{src} -> {dst}: {:?}",
                String::from_utf8_lossy(&header)
            ),
            other => panic!(
                "{src} -> {dst}: {other:?} for {:?}",
                String::from_utf8_lossy(&header)
            ),
        }
    }
}

/// What a header of `src` and `dst` must say: the encoders write IPv4-mapped IPv6 as IPv4 and
/// only the IP and port (no flow label or scope id), and mixed families as "unknown".
fn expected(src: SocketAddr, dst: SocketAddr) -> Inbound {
    let plain = |addr: SocketAddr| SocketAddr::new(addr.ip().to_canonical(), addr.port());
    let (src, dst) = (plain(src), plain(dst));
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
            Inbound::Proxied { src, dst }
        }
        _ => Inbound::Local,
    }
}
