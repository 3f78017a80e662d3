//! The HAProxy PROXY protocol, v1 (text) and v2 (binary): encoding the header brokerside sends
//! ahead of a relayed connection, and reading the header a load balancer in front of us sends.
//!
//! Spec: <https://www.haproxy.org/download/2.8/doc/proxy-protocol.txt>. Section numbers in the
//! comments below refer to it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Every v1 header starts with these bytes (section 2.1).
const V1_PREFIX: &[u8] = b"PROXY ";

/// Longest v1 line the spec lets a sender emit, CRLF included ("PROXY UNKNOWN" followed by two
/// full-length IPv6 addresses and two ports); anything longer is refused (section 2.1).
const V1_MAX_LEN: usize = 107;

/// The v2 signature (section 2.2), picked by the spec so that no common protocol starts with it.
const V2_SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];

/// Signature, version/command byte, family/transport byte and the 2-byte length.
const V2_FIXED_LEN: usize = 16;

/// Cap on a whole v2 header. The length field allows 16 + 65535 bytes, but the address block is at
/// most 216 bytes (AF_UNIX) and the TLVs real senders add (AWS VPC endpoint id, Azure link id,
/// HAProxy's SSL, unique-id and authority TLVs) come to a few hundred bytes at most. One page
/// leaves ample room for those while bounding what a pending connection holds: `read_inbound`
/// keeps the header in a buffer of this size until it is complete.
const V2_MAX_LEN: usize = 4096;

/// Size of `read_inbound`'s buffer: the largest header of either version.
const MAX_HEADER_LEN: usize = V2_MAX_LEN;
const _: () = assert!(MAX_HEADER_LEN >= V1_MAX_LEN);

const V2_VERSION: u8 = 0x2;
const V2_CMD_LOCAL: u8 = 0x0;
const V2_CMD_PROXY: u8 = 0x1;
/// Family/transport bytes (section 2.2): high nibble address family, low nibble transport.
const V2_UNSPEC: u8 = 0x00;
const V2_TCP4: u8 = 0x11;
const V2_TCP6: u8 = 0x21;
/// Address block sizes for TCP over IPv4 / IPv6: two addresses and two ports.
const V2_ADDR_LEN_INET: u16 = 2 * 4 + 2 * 2;
const V2_ADDR_LEN_INET6: u16 = 2 * 16 + 2 * 2;

/// The header a connection to a backend starts with, by the backend's setting: `None` for
/// `off`. The data path and the health probes both call this, so they always agree.
pub fn header(
    protocol: crate::config::ProxyProtocol,
    src: SocketAddr,
    dst: SocketAddr,
) -> Option<Vec<u8>> {
    match protocol {
        crate::config::ProxyProtocol::Off => None,
        crate::config::ProxyProtocol::V1 => Some(encode_v1(src, dst)),
        crate::config::ProxyProtocol::V2 => Some(encode_v2(src, dst)),
    }
}

/// Encodes a v1 (text) header: `PROXY TCP4 <src ip> <dst ip> <src port> <dst port>\r\n` (TCP6
/// for IPv6). IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, which a dual-stack listener reports)
/// are written as IPv4. If the two addresses are of different families after that, writes
/// `PROXY UNKNOWN\r\n`.
pub fn encode_v1(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (src, dst) = (canonical(src), canonical(dst));
    let family = match (src, dst) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) => "TCP4",
        (SocketAddr::V6(_), SocketAddr::V6(_)) => "TCP6",
        _ => return b"PROXY UNKNOWN\r\n".to_vec(),
    };
    format!(
        "PROXY {family} {} {} {} {}\r\n",
        src.ip(),
        dst.ip(),
        src.port(),
        dst.port()
    )
    .into_bytes()
}

/// Encodes a v2 (binary) header, command PROXY, transport STREAM, family INET or INET6 (same
/// v4-mapped normalisation; mixed families -> family UNSPEC with zero address length). No TLVs.
pub fn encode_v2(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (src, dst) = (canonical(src), canonical(dst));
    let mut out = Vec::with_capacity(V2_FIXED_LEN + usize::from(V2_ADDR_LEN_INET6));
    out.extend_from_slice(&V2_SIGNATURE);
    out.push((V2_VERSION << 4) | V2_CMD_PROXY);
    match (src, dst) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            out.push(V2_TCP4);
            out.extend_from_slice(&V2_ADDR_LEN_INET.to_be_bytes());
            out.extend_from_slice(&s.ip().octets());
            out.extend_from_slice(&d.ip().octets());
        }
        (SocketAddr::V6(s), SocketAddr::V6(d)) => {
            out.push(V2_TCP6);
            out.extend_from_slice(&V2_ADDR_LEN_INET6.to_be_bytes());
            out.extend_from_slice(&s.ip().octets());
            out.extend_from_slice(&d.ip().octets());
        }
        _ => {
            // Section 2.2: UNSPEC tells the receiver to ignore addresses and keep the real ones.
            out.push(V2_UNSPEC);
            out.extend_from_slice(&0u16.to_be_bytes());
            return out;
        }
    }
    out.extend_from_slice(&src.port().to_be_bytes());
    out.extend_from_slice(&dst.port().to_be_bytes());
    out
}

/// PP2_TYPE_SSL: the client connected over TLS (section 2.2.5).
const PP2_TYPE_SSL: u8 = 0x20;
/// PP2_SUBTYPE_SSL_VERSION: the TLS version, as text.
const PP2_SUBTYPE_SSL_VERSION: u8 = 0x21;
/// PP2_SUBTYPE_SSL_CN: the client certificate's common name, as text.
const PP2_SUBTYPE_SSL_CN: u8 = 0x22;
/// `client` bits of PP2_TYPE_SSL.
const PP2_CLIENT_SSL: u8 = 0x01;
const PP2_CLIENT_CERT_CONN: u8 = 0x02;
const PP2_CLIENT_CERT_SESS: u8 = 0x04;

/// What a TLS-terminating listener tells the broker about the client's TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SslInfo {
    /// The version as OpenSSL names it: `TLSv1.2`, `TLSv1.3`.
    pub version: &'static str,
    /// Whether the client presented a certificate (it was verified: rustls ends a handshake
    /// whose certificate does not verify).
    pub client_cert: bool,
    /// The verified client certificate's common name, if it has one.
    pub common_name: Option<String>,
    /// The session was resumed: its client certificate was verified when the session began,
    /// not on this connection.
    pub resumed: bool,
}

/// Appends a PP2_TYPE_SSL TLV to the v2 `header` (and raises its length field), laid out as
/// HAProxy's `send-proxy-v2-ssl-cn` lays it out: the client flags (SSL, and with a client
/// certificate CERT_SESS, plus CERT_CONN when it was sent on this connection rather than in the
/// session it resumed), verify = 0 (verified), then the version and CN sub-TLVs. EMQX reads the
/// CN from it (`peer_cert_as_username = cn`).
pub fn append_ssl_tlv(header: &mut Vec<u8>, ssl: &SslInfo) {
    let mut value = Vec::with_capacity(64);
    let mut client = PP2_CLIENT_SSL;
    if ssl.client_cert {
        client |= PP2_CLIENT_CERT_SESS;
        if !ssl.resumed {
            client |= PP2_CLIENT_CERT_CONN;
        }
    }
    value.push(client);
    value.extend_from_slice(&0u32.to_be_bytes());
    push_tlv(&mut value, PP2_SUBTYPE_SSL_VERSION, ssl.version.as_bytes());
    if let Some(cn) = &ssl.common_name {
        // A TLV's length is 16 bits, and the whole header stays within what a parser accepts.
        let cn = &cn.as_bytes()[..cn.len().min(1024)];
        push_tlv(&mut value, PP2_SUBTYPE_SSL_CN, cn);
    }
    push_tlv(header, PP2_TYPE_SSL, &value);
    if header.len() >= V2_FIXED_LEN {
        let length = u16::try_from(header.len() - V2_FIXED_LEN).unwrap_or(u16::MAX);
        header[14..16].copy_from_slice(&length.to_be_bytes());
    }
}

fn push_tlv(out: &mut Vec<u8>, kind: u8, value: &[u8]) {
    out.push(kind);
    out.extend_from_slice(&u16::try_from(value.len()).unwrap_or(u16::MAX).to_be_bytes());
    out.extend_from_slice(value);
}

/// What an inbound header said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound {
    /// The original client and the address it connected to.
    Proxied {
        /// The original client.
        src: SocketAddr,
        /// The address the original client connected to.
        dst: SocketAddr,
    },
    /// v1 UNKNOWN, or v2 LOCAL command / UNSPEC / UNIX family: keep the real socket addresses.
    Local,
}

/// Why an inbound header was refused. Display messages are one short line.
#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    /// The first bytes are neither "PROXY " nor the v2 signature.
    #[error("not a PROXY protocol header")]
    NotProxyProtocol,
    /// The bytes start like a PROXY header but break its grammar; the text says where.
    #[error("malformed PROXY header: {0}")]
    Malformed(&'static str),
    /// The header is longer than the spec (v1) or our cap (v2) allows.
    #[error("PROXY header longer than {max} bytes")]
    TooLong {
        /// The limit that was exceeded.
        max: usize,
    },
    /// The peer closed the connection before a full header arrived.
    #[error("connection closed before a complete PROXY header")]
    Closed,
    /// Reading from the socket failed.
    #[error("reading PROXY header: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one inbound header (v1 or v2, detected by the first bytes) from `stream`, consuming
/// exactly the header's bytes and nothing after it (the MQTT CONNECT that follows must stay in the
/// socket). Uses `stream.peek()` to find the header length, then reads exactly that many bytes, so
/// it costs a few syscalls, never one per byte. The caller applies its own timeout.
///
/// A header split across segments is waited for without polling: bytes that cannot complete a
/// header are, by `parse`'s contract, all part of it, so they are consumed and the next `peek`
/// sleeps until new data arrives. Addresses are normalised as in [`parse`]. On error the stream
/// may have lost some bytes and should be closed.
pub async fn read_inbound(stream: &mut TcpStream) -> Result<Inbound, ProxyHeaderError> {
    let mut buf = [0u8; MAX_HEADER_LEN];
    // Header bytes already taken out of the socket (into buf[..consumed]).
    let mut consumed = 0;
    loop {
        // parse() refuses anything longer than MAX_HEADER_LEN before it gets here, so the spare
        // room is never empty; the check keeps a bug from turning into a busy EOF loop.
        let spare = match buf.get_mut(consumed..) {
            Some(spare) if !spare.is_empty() => spare,
            _ => {
                return Err(ProxyHeaderError::TooLong {
                    max: MAX_HEADER_LEN,
                });
            }
        };
        // peek() waits for readiness. Data that is already buffered is returned at once, which is
        // why incomplete data is consumed below rather than peeked again.
        let peeked = stream.peek(spare).await?;
        if peeked == 0 {
            return Err(ProxyHeaderError::Closed);
        }
        let seen = consumed + peeked;
        match parse(&buf[..seen])? {
            Some((inbound, header_len)) => {
                // parse(&buf[..consumed]) said "need more", so header_len > consumed, and a
                // complete header lies within what was seen, so header_len <= seen.
                stream.read_exact(&mut buf[consumed..header_len]).await?;
                return Ok(inbound);
            }
            None => {
                // No complete header yet means every byte seen belongs to the header: taking
                // them out now is safe, and the next peek() blocks until more arrive instead of
                // returning the same bytes again.
                stream.read_exact(&mut buf[consumed..seen]).await?;
                consumed = seen;
            }
        }
    }
}

/// Parses a complete header from the start of `bytes`: Ok(Some((inbound, header_len))) when a full
/// header is there, Ok(None) when more bytes are needed, Err when it can never be a valid header.
/// `read_inbound` is built on this; it is pub so that fuzzing and benchmarks can call it.
///
/// IPv4-mapped IPv6 addresses in a header are returned as IPv4, matching the encoders. v2 TCP over
/// IPv4/IPv6 is returned as `Proxied`; the other valid v2 families (UDP, UNIX, UNSPEC) fall back
/// to `Local`, as section 2.2 allows. Ok(None) is only returned while the header could still be
/// longer than `bytes`, which `read_inbound` relies on.
pub fn parse(bytes: &[u8]) -> Result<Option<(Inbound, usize)>, ProxyHeaderError> {
    if bytes.starts_with(&V2_SIGNATURE) {
        parse_v2(bytes)
    } else if bytes.starts_with(V1_PREFIX) {
        parse_v1(bytes)
    } else if V2_SIGNATURE.starts_with(bytes) || V1_PREFIX.starts_with(bytes) {
        Ok(None)
    } else {
        Err(ProxyHeaderError::NotProxyProtocol)
    }
}

/// Parses a v1 line; `bytes` starts with `V1_PREFIX`.
fn parse_v1(bytes: &[u8]) -> Result<Option<(Inbound, usize)>, ProxyHeaderError> {
    let too_long = ProxyHeaderError::TooLong { max: V1_MAX_LEN };
    let window = &bytes[..bytes.len().min(V1_MAX_LEN)];
    let Some(eol) = window.iter().position(|&b| b == b'\r' || b == b'\n') else {
        return if bytes.len() >= V1_MAX_LEN {
            Err(too_long)
        } else {
            Ok(None)
        };
    };
    // Section 2.1: a lone CR or LF must not be taken as the end of the line.
    if window.get(eol) == Some(&b'\n') {
        return Err(ProxyHeaderError::Malformed(
            "v1: line ends in LF without CR",
        ));
    }
    let header_len = eol + 2;
    if header_len > V1_MAX_LEN {
        return Err(too_long);
    }
    match bytes.get(eol + 1) {
        None => return Ok(None),
        Some(b'\n') => {}
        Some(_) => return Err(ProxyHeaderError::Malformed("v1: CR not followed by LF")),
    }
    let line = bytes
        .get(V1_PREFIX.len()..eol)
        .ok_or(ProxyHeaderError::Malformed("v1: empty line"))?;
    Ok(Some((parse_v1_fields(line)?, header_len)))
}

/// Parses what follows "PROXY " on a v1 line, CRLF excluded.
fn parse_v1_fields(line: &[u8]) -> Result<Inbound, ProxyHeaderError> {
    // Section 2.1: after UNKNOWN the receiver must ignore anything up to the CRLF.
    if let Some(rest) = line.strip_prefix(b"UNKNOWN")
        && (rest.is_empty() || rest.starts_with(b" "))
    {
        return Ok(Inbound::Local);
    }
    let line =
        std::str::from_utf8(line).map_err(|_| ProxyHeaderError::Malformed("v1: not ASCII"))?;
    // Splitting on single spaces makes doubled spaces produce empty fields, which fail below:
    // the spec demands exactly one space between fields.
    let mut fields = line.split(' ');
    let (Some(family), Some(src), Some(dst), Some(src_port), Some(dst_port), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(ProxyHeaderError::Malformed(
            "v1: expected family, two addresses and two ports",
        ));
    };
    let (src_ip, dst_ip) = match family {
        "TCP4" => (
            IpAddr::V4(parse_v1_ip::<Ipv4Addr>(src)?),
            IpAddr::V4(parse_v1_ip::<Ipv4Addr>(dst)?),
        ),
        "TCP6" => (
            IpAddr::V6(parse_v1_ip::<Ipv6Addr>(src)?),
            IpAddr::V6(parse_v1_ip::<Ipv6Addr>(dst)?),
        ),
        _ => return Err(ProxyHeaderError::Malformed("v1: unknown protocol family")),
    };
    Ok(Inbound::Proxied {
        src: canonical(SocketAddr::new(src_ip, parse_v1_port(src_port)?)),
        dst: canonical(SocketAddr::new(dst_ip, parse_v1_port(dst_port)?)),
    })
}

/// A v1 address of the family the line announced. std's parsers already refuse what the spec
/// forbids: leading zeros in IPv4 octets, and IPv6 scope ids.
fn parse_v1_ip<T: std::str::FromStr>(text: &str) -> Result<T, ProxyHeaderError> {
    text.parse()
        .map_err(|_| ProxyHeaderError::Malformed("v1: bad address"))
}

/// A v1 port: decimal digits only (`u16::from_str` would take a leading '+'), no leading zero.
fn parse_v1_port(text: &str) -> Result<u16, ProxyHeaderError> {
    let digits_only = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    if !digits_only || (text.len() > 1 && text.starts_with('0')) {
        return Err(ProxyHeaderError::Malformed("v1: bad port"));
    }
    text.parse()
        .map_err(|_| ProxyHeaderError::Malformed("v1: port out of range"))
}

/// Parses a v2 header; `bytes` starts with `V2_SIGNATURE`.
fn parse_v2(bytes: &[u8]) -> Result<Option<(Inbound, usize)>, ProxyHeaderError> {
    // Check the version and family bytes as soon as they arrive so that a bad header is refused
    // without waiting for (possibly never sent) address bytes.
    if let Some(&ver_cmd) = bytes.get(12) {
        if ver_cmd >> 4 != V2_VERSION {
            return Err(ProxyHeaderError::Malformed("v2: version is not 2"));
        }
        if ver_cmd & 0x0F > V2_CMD_PROXY {
            return Err(ProxyHeaderError::Malformed("v2: unknown command"));
        }
    }
    if let Some(&fam) = bytes.get(13) {
        // Section 2.2: families above UNIX (3) and transports above DGRAM (2) must be rejected.
        if fam >> 4 > 0x3 {
            return Err(ProxyHeaderError::Malformed("v2: unknown address family"));
        }
        if fam & 0x0F > 0x2 {
            return Err(ProxyHeaderError::Malformed("v2: unknown transport"));
        }
    }
    let (Some(&ver_cmd), Some(&fam), Some(&len_hi), Some(&len_lo)) =
        (bytes.get(12), bytes.get(13), bytes.get(14), bytes.get(15))
    else {
        return Ok(None);
    };
    let header_len = V2_FIXED_LEN + usize::from(u16::from_be_bytes([len_hi, len_lo]));
    if header_len > V2_MAX_LEN {
        return Err(ProxyHeaderError::TooLong { max: V2_MAX_LEN });
    }
    let Some(mut block) = bytes.get(V2_FIXED_LEN..header_len) else {
        return Ok(None);
    };
    // Section 2.2: LOCAL means "use the real endpoints"; the address block is skipped unread.
    if ver_cmd & 0x0F == V2_CMD_LOCAL {
        return Ok(Some((Inbound::Local, header_len)));
    }
    let short = ProxyHeaderError::Malformed("v2: address block too short for its family");
    let (src, dst) = match fam {
        V2_TCP4 => {
            let (src, dst) = (take::<4>(&mut block), take::<4>(&mut block));
            let (Some(src), Some(dst)) = (src, dst) else {
                return Err(short);
            };
            (IpAddr::from(src), IpAddr::from(dst))
        }
        V2_TCP6 => {
            let (src, dst) = (take::<16>(&mut block), take::<16>(&mut block));
            let (Some(src), Some(dst)) = (src, dst) else {
                return Err(short);
            };
            (IpAddr::from(src), IpAddr::from(dst))
        }
        // Section 2.2 lets a receiver fall back to UNSPEC (real endpoints) for the families it
        // does not support; HAProxy does the same.
        _ => return Ok(Some((Inbound::Local, header_len))),
    };
    let (Some(src_port), Some(dst_port)) = (take::<2>(&mut block), take::<2>(&mut block)) else {
        return Err(short);
    };
    check_tlvs(block)?;
    Ok(Some((
        Inbound::Proxied {
            src: canonical(SocketAddr::new(src, u16::from_be_bytes(src_port))),
            dst: canonical(SocketAddr::new(dst, u16::from_be_bytes(dst_port))),
        },
        header_len,
    )))
}

/// Checks that what follows the addresses is a sequence of whole TLVs (type, 2-byte length,
/// value), as HAProxy does; their contents are not needed here.
fn check_tlvs(mut tlvs: &[u8]) -> Result<(), ProxyHeaderError> {
    while !tlvs.is_empty() {
        let (Some([_kind]), Some(len)) = (take::<1>(&mut tlvs), take::<2>(&mut tlvs)) else {
            return Err(ProxyHeaderError::Malformed("v2: truncated TLV"));
        };
        tlvs =
            tlvs.get(usize::from(u16::from_be_bytes(len))..)
                .ok_or(ProxyHeaderError::Malformed(
                    "v2: TLV longer than the header",
                ))?;
    }
    Ok(())
}

/// Takes the first `N` bytes off `input`, or None (leaving `input` as it was) if it is shorter.
fn take<const N: usize>(input: &mut &[u8]) -> Option<[u8; N]> {
    let (head, rest) = input.split_first_chunk::<N>()?;
    *input = rest;
    Some(*head)
}

/// Writes an IPv4-mapped IPv6 address as the IPv4 address it stands for, so that a dual-stack
/// listener's clients look the same as those of an IPv4 listener.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn v4_pair() -> (SocketAddr, SocketAddr) {
        (addr("192.0.2.1:56324"), addr("198.51.100.2:1883"))
    }

    fn v6_pair() -> (SocketAddr, SocketAddr) {
        (addr("[2001:db8::1]:56324"), addr("[2001:db8::2]:1883"))
    }

    fn proxied((src, dst): (SocketAddr, SocketAddr)) -> Inbound {
        Inbound::Proxied { src, dst }
    }

    /// A v2 header with the given version/command and family bytes and address block.
    fn v2_raw(ver_cmd: u8, fam: u8, block: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(ver_cmd);
        out.push(fam);
        out.extend_from_slice(&u16::try_from(block.len()).unwrap().to_be_bytes());
        out.extend_from_slice(block);
        out
    }

    fn is_malformed(result: Result<Option<(Inbound, usize)>, ProxyHeaderError>) -> bool {
        matches!(result, Err(ProxyHeaderError::Malformed(_)))
    }

    #[test]
    fn v1_ipv4_exact_bytes() {
        let (src, dst) = v4_pair();
        assert_eq!(
            encode_v1(src, dst),
            b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 1883\r\n"
        );
    }

    #[test]
    fn v1_ipv6_exact_bytes() {
        let (src, dst) = v6_pair();
        assert_eq!(
            encode_v1(src, dst),
            b"PROXY TCP6 2001:db8::1 2001:db8::2 56324 1883\r\n"
        );
    }

    #[test]
    fn v2_ipv4_exact_bytes() {
        let (src, dst) = v4_pair();
        let expected: Vec<u8> = vec![
            0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54,
            0x0A, // signature
            0x21, // version 2, PROXY
            0x11, // INET, STREAM
            0x00, 0x0C, // 12 address bytes
            192, 0, 2, 1, // src
            198, 51, 100, 2, // dst
            0xDC, 0x04, // 56324
            0x07, 0x5B, // 1883
        ];
        assert_eq!(encode_v2(src, dst), expected);
    }

    #[test]
    fn v2_ipv6_exact_bytes() {
        let (src, dst) = v6_pair();
        let mut expected: Vec<u8> = vec![
            0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54,
            0x0A, // signature
            0x21, // version 2, PROXY
            0x21, // INET6, STREAM
            0x00, 0x24, // 36 address bytes
        ];
        expected.extend_from_slice(&[0x20, 0x01, 0x0D, 0xB8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        expected.extend_from_slice(&[0x20, 0x01, 0x0D, 0xB8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        expected.extend_from_slice(&[0xDC, 0x04, 0x07, 0x5B]);
        assert_eq!(encode_v2(src, dst), expected);
    }

    #[test]
    fn v4_mapped_addresses_are_written_as_ipv4() {
        let src = addr("[::ffff:192.0.2.1]:56324");
        let dst = addr("[::ffff:198.51.100.2]:1883");
        let (v4_src, v4_dst) = v4_pair();
        assert_eq!(encode_v1(src, dst), encode_v1(v4_src, v4_dst));
        assert_eq!(encode_v2(src, dst), encode_v2(v4_src, v4_dst));
    }

    #[test]
    fn mixed_families_are_unknown_or_unspec() {
        let src = addr("192.0.2.1:56324");
        let dst = addr("[2001:db8::2]:1883");
        assert_eq!(encode_v1(src, dst), b"PROXY UNKNOWN\r\n");
        assert_eq!(encode_v1(dst, src), b"PROXY UNKNOWN\r\n");
        let mut expected = V2_SIGNATURE.to_vec();
        expected.extend_from_slice(&[0x21, 0x00, 0x00, 0x00]);
        assert_eq!(encode_v2(src, dst), expected);
        assert_eq!(parse(&expected).unwrap(), Some((Inbound::Local, 16)));
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n").unwrap(),
            Some((Inbound::Local, 15))
        );
    }

    #[test]
    fn round_trips_both_versions_and_families() {
        for (src, dst) in [v4_pair(), v6_pair()] {
            for header in [encode_v1(src, dst), encode_v2(src, dst)] {
                let expected = Some((Inbound::Proxied { src, dst }, header.len()));
                assert_eq!(parse(&header).unwrap(), expected);
                // Bytes after the header are not part of it.
                let mut followed = header.clone();
                followed.extend_from_slice(b"\x10\x0cMQTT");
                assert_eq!(parse(&followed).unwrap(), expected);
            }
        }
    }

    #[test]
    fn inbound_v4_mapped_addresses_are_normalised() {
        let header = b"PROXY TCP6 ::ffff:192.0.2.1 ::ffff:198.51.100.2 56324 1883\r\n";
        assert_eq!(
            parse(header).unwrap(),
            Some((proxied(v4_pair()), header.len()))
        );
    }

    #[test]
    fn v2_local_and_unsupported_families_keep_real_addresses() {
        let block = [7u8; 12];
        // LOCAL with an address block: the block is skipped, not read.
        let local = v2_raw(0x20, 0x11, &block);
        assert_eq!(parse(&local).unwrap(), Some((Inbound::Local, 28)));
        let local_empty = v2_raw(0x20, 0x00, &[]);
        assert_eq!(parse(&local_empty).unwrap(), Some((Inbound::Local, 16)));
        // PROXY with UDP, UNIX and UNSPEC falls back to the real endpoints.
        for (fam, len) in [(0x12, 12), (0x22, 36), (0x31, 216), (0x32, 216), (0x00, 0)] {
            let header = v2_raw(0x21, fam, &vec![0u8; len]);
            assert_eq!(parse(&header).unwrap(), Some((Inbound::Local, 16 + len)));
        }
    }

    #[test]
    fn v1_unknown_ignores_the_rest_of_the_line() {
        let header = b"PROXY UNKNOWN ffff:f::f ffff:f::f 65535 65535\r\nX";
        assert_eq!(
            parse(header).unwrap(),
            Some((Inbound::Local, header.len() - 1))
        );
    }

    #[test]
    fn v2_tlvs_are_skipped() {
        let (src, dst) = v4_pair();
        let mut block = encode_v2(src, dst).split_off(V2_FIXED_LEN);
        // An AWS-style TLV and a NOOP padding TLV with an empty value.
        block.extend_from_slice(&[0xEA, 0x00, 0x04, 1, 2, 3, 4, 0x04, 0x00, 0x00]);
        let header = v2_raw(0x21, 0x11, &block);
        assert_eq!(
            parse(&header).unwrap(),
            Some((proxied(v4_pair()), header.len()))
        );
    }

    #[test]
    fn v2_up_to_the_cap_is_accepted() {
        let mut block = encode_v2(v4_pair().0, v4_pair().1).split_off(V2_FIXED_LEN);
        let value_len = V2_MAX_LEN - V2_FIXED_LEN - block.len() - 3;
        block.push(0x04);
        block.extend_from_slice(&u16::try_from(value_len).unwrap().to_be_bytes());
        block.resize(block.len() + value_len, 0);
        let header = v2_raw(0x21, 0x11, &block);
        assert_eq!(header.len(), V2_MAX_LEN);
        assert_eq!(
            parse(&header).unwrap(),
            Some((proxied(v4_pair()), V2_MAX_LEN))
        );
    }

    #[test]
    fn every_proper_prefix_needs_more_bytes() {
        let (s4, d4) = v4_pair();
        let (s6, d6) = v6_pair();
        let headers = [
            encode_v1(s4, d4),
            encode_v1(s6, d6),
            encode_v2(s4, d4),
            encode_v2(s6, d6),
            b"PROXY UNKNOWN\r\n".to_vec(),
            v2_raw(0x20, 0x00, &[]),
        ];
        for header in headers {
            for len in 0..header.len() {
                assert!(
                    matches!(parse(&header[..len]), Ok(None)),
                    "prefix {len} of {header:?}"
                );
            }
            assert!(matches!(parse(&header), Ok(Some(_))));
        }
    }

    #[test]
    fn malformed_headers_are_refused() {
        let (s4, d4) = v4_pair();
        let mut bad_signature = encode_v2(s4, d4);
        bad_signature[11] = 0x0B;
        assert!(matches!(
            parse(&bad_signature),
            Err(ProxyHeaderError::NotProxyProtocol)
        ));
        let mut version_3 = encode_v2(s4, d4);
        version_3[12] = 0x31;
        assert!(is_malformed(parse(&version_3)));
        // Refused as soon as the version byte arrives, not when the rest does.
        assert!(is_malformed(parse(&version_3[..13])));
        assert!(is_malformed(parse(&v2_raw(0x22, 0x11, &[0; 12]))));
        assert!(is_malformed(parse(&v2_raw(0x21, 0x41, &[0; 12]))));
        assert!(is_malformed(parse(&v2_raw(0x21, 0x13, &[0; 12]))));
        assert!(is_malformed(parse(&v2_raw(0x21, 0x11, &[0; 11]))));
        assert!(is_malformed(parse(&v2_raw(0x21, 0x21, &[0; 35]))));
        // TLV framing: a lone byte, and a TLV claiming more than is there.
        assert!(is_malformed(parse(&v2_raw(0x21, 0x11, &[0; 13]))));
        let mut overrun = vec![0; 12];
        overrun.extend_from_slice(&[0x04, 0x00, 0x05, 1, 2]);
        assert!(is_malformed(parse(&v2_raw(0x21, 0x11, &overrun))));
        // A length beyond the cap is refused from the fixed part alone.
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xFF, 0xFF]);
        assert!(matches!(
            parse(&huge),
            Err(ProxyHeaderError::TooLong { max: V2_MAX_LEN })
        ));

        let mut no_crlf = b"PROXY TCP4 ".to_vec();
        no_crlf.resize(V1_MAX_LEN, b'1');
        assert!(matches!(
            parse(&no_crlf),
            Err(ProxyHeaderError::TooLong { .. })
        ));
        // A CRLF that would make the line 108 bytes long.
        let mut crlf_at_108 = b"PROXY UNKNOWN ".to_vec();
        crlf_at_108.resize(V1_MAX_LEN - 1, b'x');
        crlf_at_108.extend_from_slice(b"\r\n");
        assert!(matches!(
            parse(&crlf_at_108),
            Err(ProxyHeaderError::TooLong { .. })
        ));

        let bad_v1: &[&[u8]] = &[
            b"PROXY TCP4 999.1.1.1 198.51.100.2 56324 1883\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 70000 1883\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 +1883\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 056324 1883\r\n",
            b"PROXY TCP4 192.0.2.01 198.51.100.2 56324 1883\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 56324\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 1883 7\r\n",
            b"PROXY TCP4 192.0.2.1  198.51.100.2 56324 1883\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 1883 \r\n",
            b"PROXY TCP4 2001:db8::1 2001:db8::2 56324 1883\r\n",
            b"PROXY TCP6 192.0.2.1 198.51.100.2 56324 1883\r\n",
            b"PROXY TCP6 fe80::1%eth0 2001:db8::2 56324 1883\r\n",
            b"PROXY TCP5 192.0.2.1 198.51.100.2 56324 1883\r\n",
            b"PROXY tcp4 192.0.2.1 198.51.100.2 56324 1883\r\n",
            b"PROXY UNKNOWNX\r\n",
            b"PROXY \r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 1883\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 1883\rX",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 \xff\xfe\r\n",
        ];
        for header in bad_v1 {
            assert!(
                is_malformed(parse(header)),
                "{:?}",
                String::from_utf8_lossy(header)
            );
        }

        for garbage in [
            &b"\x10\x0c\x00\x04MQTT"[..],
            b"GET / HTTP/1.1\r\n",
            b"PROXYTCP4",
            b"\r\n\r\nX",
        ] {
            assert!(matches!(
                parse(garbage),
                Err(ProxyHeaderError::NotProxyProtocol)
            ));
        }
    }

    /// Parses every prefix and every single-byte mutation of valid headers; besides not
    /// panicking, checks the contract `read_inbound` relies on: a reported header length fits in
    /// the input and is longer than any prefix that was reported as incomplete.
    #[test]
    fn prefixes_and_mutations_never_panic() {
        let (s4, d4) = v4_pair();
        let (s6, d6) = v6_pair();
        let mut with_tlv = encode_v2(s4, d4);
        with_tlv[15] += 4;
        with_tlv.extend_from_slice(&[0xEA, 0x00, 0x01, 0x00]);
        let headers = [
            encode_v1(s4, d4),
            encode_v1(s6, d6),
            encode_v2(s4, d4),
            encode_v2(s6, d6),
            with_tlv,
        ];
        for header in headers {
            for at in 0..header.len() {
                for value in 0..=u8::MAX {
                    let mut mutated = header.clone();
                    mutated[at] = value;
                    let mut longest_incomplete = None;
                    for len in 0..=mutated.len() {
                        match parse(&mutated[..len]) {
                            Ok(None) => longest_incomplete = Some(len),
                            Ok(Some((_, header_len))) => {
                                assert!(header_len <= len);
                                if let Some(incomplete) = longest_incomplete {
                                    assert!(header_len > incomplete, "{mutated:?}");
                                }
                            }
                            Err(_) => {}
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn error_messages_are_one_line() {
        let errors = [
            ProxyHeaderError::NotProxyProtocol,
            ProxyHeaderError::Malformed("v1: bad port"),
            ProxyHeaderError::TooLong { max: V1_MAX_LEN },
            ProxyHeaderError::Closed,
            ProxyHeaderError::Io(std::io::Error::other("reset")),
        ];
        for error in errors {
            assert!(!error.to_string().contains('\n'));
        }
    }

    /// A connected loopback pair: (the writing peer, the accepted side `read_inbound` reads).
    async fn tcp_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    /// Writes `chunks` with a pause between them, then closes the write side.
    async fn write_slowly(mut stream: TcpStream, chunks: Vec<Vec<u8>>) {
        for (i, chunk) in chunks.into_iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            stream.write_all(&chunk).await.unwrap();
        }
        stream.shutdown().await.unwrap();
    }

    async fn read_rest(stream: &mut TcpStream) -> Vec<u8> {
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.unwrap();
        rest
    }

    #[tokio::test]
    async fn reads_header_and_leaves_the_payload() {
        let (s4, d4) = v4_pair();
        let (s6, d6) = v6_pair();
        for (header, expected) in [
            (encode_v1(s4, d4), proxied(v4_pair())),
            (encode_v2(s6, d6), proxied(v6_pair())),
        ] {
            let (client, mut server) = tcp_pair().await;
            let mut bytes = header;
            bytes.extend_from_slice(b"MQTT-CONNECT");
            let writer = tokio::spawn(write_slowly(client, vec![bytes]));
            assert_eq!(read_inbound(&mut server).await.unwrap(), expected);
            assert_eq!(read_rest(&mut server).await, b"MQTT-CONNECT");
            writer.await.unwrap();
        }
    }

    #[tokio::test]
    async fn waits_for_a_header_split_across_writes() {
        let (s4, d4) = v4_pair();
        let (s6, d6) = v6_pair();
        for (header, expected) in [
            (encode_v1(s4, d4), proxied(v4_pair())),
            (encode_v2(s6, d6), proxied(v6_pair())),
        ] {
            let (client, mut server) = tcp_pair().await;
            let (first, second) = header.split_at(20);
            let mut second = second.to_vec();
            second.extend_from_slice(b"MQTT-CONNECT");
            let writer = tokio::spawn(write_slowly(client, vec![first.to_vec(), second]));
            assert_eq!(read_inbound(&mut server).await.unwrap(), expected);
            assert_eq!(read_rest(&mut server).await, b"MQTT-CONNECT");
            writer.await.unwrap();
        }
    }

    #[tokio::test]
    async fn eof_inside_the_header_is_closed() {
        let (client, mut server) = tcp_pair().await;
        let header = encode_v2(v4_pair().0, v4_pair().1);
        let writer = tokio::spawn(write_slowly(client, vec![header[..10].to_vec()]));
        assert!(matches!(
            read_inbound(&mut server).await,
            Err(ProxyHeaderError::Closed)
        ));
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn a_client_without_a_header_is_refused_and_nothing_is_consumed() {
        let (client, mut server) = tcp_pair().await;
        let connect = b"\x10\x0c\x00\x04MQTT".to_vec();
        let writer = tokio::spawn(write_slowly(client, vec![connect.clone()]));
        assert!(matches!(
            read_inbound(&mut server).await,
            Err(ProxyHeaderError::NotProxyProtocol)
        ));
        assert_eq!(read_rest(&mut server).await, connect);
        writer.await.unwrap();
    }
}
