//! The MQTT CONNECT parser: the fixed header, the variable header and the payload of a client's
//! first packet (MQTT 3.1 `MQIsdp` level 3, 3.1.1 level 4, 5.0 level 5), read far enough to know
//! who is connecting: protocol, client id, clean start, keep alive, username, will flag.
//!
//! Hand-written rather than rumqttc's `mqttbytes` codec, which the health probe uses: that codec
//! allocates and copies the whole packet (client id, will, password) into owned values, takes any
//! protocol name for its level, and only answers once the whole frame is in hand. A proxy reading
//! the first bytes of every connection needs a parse that borrows from the bytes it was given,
//! never looks past the length the client declared, is bounded by a size the operator chooses,
//! and tells a prefix of a valid packet ("send more") from bytes that can never become one.
//!
//! It checks what it must to find the fields, and no more: the bytes are forwarded unchanged, so
//! what the broker alone can judge (a will QoS of 3, a 3.1.1 password without a username, the
//! contents of MQTT 5 properties, a 3.1 client id over 23 characters) is left to the broker.

use std::fmt;

/// The packet type and flags byte of a CONNECT (type 1, flags 0).
const CONNECT_BYTE: u8 = 0x10;

/// Connect flags (MQTT 3.1.1 section 3.1.2.3, 5.0 section 3.1.2.3).
const FLAG_RESERVED: u8 = 0x01;
const FLAG_CLEAN_START: u8 = 0x02;
const FLAG_WILL: u8 = 0x04;
const FLAG_PASSWORD: u8 = 0x40;
const FLAG_USERNAME: u8 = 0x80;

/// A variable byte integer (the remaining length, MQTT 5 property lengths) has at most 4 bytes.
const VARINT_MAX_BYTES: usize = 4;

/// The shortest fixed header: the type byte and one byte of remaining length.
const MIN_FIXED_HEADER_LEN: usize = 2;

/// The MQTT protocol version a CONNECT asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// MQTT 3.1: protocol name `MQIsdp`, level 3.
    V3_1,
    /// MQTT 3.1.1: protocol name `MQTT`, level 4.
    V3_1_1,
    /// MQTT 5.0: protocol name `MQTT`, level 5.
    V5,
}

impl Protocol {
    /// The protocol level byte of the CONNECT.
    pub fn level(self) -> u8 {
        match self {
            Protocol::V3_1 => 3,
            Protocol::V3_1_1 => 4,
            Protocol::V5 => 5,
        }
    }

    /// The protocol name the CONNECT carries for this level.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::V3_1 => "MQIsdp",
            Protocol::V3_1_1 | Protocol::V5 => "MQTT",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::V3_1 => "MQTT 3.1",
            Protocol::V3_1_1 => "MQTT 3.1.1",
            Protocol::V5 => "MQTT 5.0",
        })
    }
}

/// What a CONNECT says, borrowed from the bytes it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connect<'a> {
    /// The protocol version.
    pub protocol: Protocol,
    /// The client identifier; empty when the client asks the broker to assign one (3.1.1, 5.0).
    pub client_id: &'a str,
    /// Clean session (3.1, 3.1.1) or clean start (5.0).
    pub clean_start: bool,
    /// Keep alive in seconds; 0 turns it off.
    pub keep_alive: u16,
    /// The username, when the username flag is set. For logs only, never a metric label.
    pub username: Option<&'a str>,
    /// Whether the client sent a will (last will and testament).
    pub will: bool,
}

/// What a CONNECT says, owned, to keep after the bytes it was read from are gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectInfo {
    /// The protocol version.
    pub protocol: Protocol,
    /// The client identifier; empty when the client asks the broker to assign one (3.1.1, 5.0).
    pub client_id: String,
    /// Clean session (3.1, 3.1.1) or clean start (5.0).
    pub clean_start: bool,
    /// Keep alive in seconds; 0 turns it off.
    pub keep_alive: u16,
    /// The username, when the username flag is set. For logs only, never a metric label.
    pub username: Option<String>,
    /// Whether the client sent a will (last will and testament).
    pub will: bool,
}

impl From<Connect<'_>> for ConnectInfo {
    fn from(connect: Connect<'_>) -> ConnectInfo {
        ConnectInfo {
            protocol: connect.protocol,
            client_id: connect.client_id.to_string(),
            clean_start: connect.clean_start,
            keep_alive: connect.keep_alive,
            username: connect.username.map(str::to_string),
            will: connect.will,
        }
    }
}

/// The answer of [`parse`] for bytes that are, so far, a valid CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parse<'a> {
    /// Every byte given belongs to a CONNECT that is not complete yet.
    Incomplete {
        /// How many more bytes are needed at least (1 or more). Exact once the fixed header is
        /// in: the rest of the packet. So a reader that asks for no more than this never reads a
        /// byte past the CONNECT.
        needed: usize,
    },
    /// A complete CONNECT starts the bytes given.
    Complete {
        /// What it says.
        connect: Connect<'a>,
        /// Its length, fixed header included: the bytes to forward. What follows is the next
        /// packet.
        len: usize,
    },
}

/// A field of a CONNECT, named in [`ConnectError::Malformed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The protocol name (`MQTT`, `MQIsdp`).
    ProtocolName,
    /// The protocol level byte.
    ProtocolLevel,
    /// The connect flags byte.
    ConnectFlags,
    /// The keep alive.
    KeepAlive,
    /// The MQTT 5 CONNECT properties.
    Properties,
    /// The client identifier.
    ClientId,
    /// The MQTT 5 will properties.
    WillProperties,
    /// The will topic.
    WillTopic,
    /// The will payload.
    WillPayload,
    /// The username.
    Username,
    /// The password.
    Password,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::ProtocolName => "protocol name",
            Field::ProtocolLevel => "protocol level",
            Field::ConnectFlags => "connect flags",
            Field::KeepAlive => "keep alive",
            Field::Properties => "properties",
            Field::ClientId => "client id",
            Field::WillProperties => "will properties",
            Field::WillTopic => "will topic",
            Field::WillPayload => "will payload",
            Field::Username => "username",
            Field::Password => "password",
        })
    }
}

/// What is wrong with a field, in [`ConnectError::Malformed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// The field ends after the packet's declared remaining length.
    PastEnd,
    /// A string field is not valid UTF-8.
    NotUtf8,
    /// The reserved bit 0 of the connect flags is set.
    ReservedFlag,
    /// A property length is not a valid variable byte integer.
    BadLength,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Problem::PastEnd => "runs past the packet's remaining length",
            Problem::NotUtf8 => "is not valid UTF-8",
            Problem::ReservedFlag => "have the reserved bit 0 set",
            Problem::BadLength => {
                "length is not a variable byte integer (over 4 bytes, or not in its shortest form)"
            }
        })
    }
}

/// Why bytes can never be a valid CONNECT. Messages are one line, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// The first byte is not 0x10 (type CONNECT, flags 0).
    #[error("not an MQTT CONNECT: the first byte is {first:#04x}, a CONNECT starts with 0x10")]
    NotConnect {
        /// The byte that came instead.
        first: u8,
    },
    /// The remaining length is over 4 bytes or not in its shortest form.
    #[error(
        "CONNECT remaining length is not a variable byte integer (over 4 bytes, or not in its shortest form)"
    )]
    BadRemainingLength,
    /// The packet the fixed header declares is larger than allowed.
    #[error("CONNECT of {size} bytes is over the {max}-byte limit")]
    TooLarge {
        /// The whole packet's declared size, fixed header included.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The protocol name is neither `MQIsdp` nor `MQTT`, or not the one its level goes with.
    #[error(
        "wrong protocol name: a CONNECT says `MQIsdp` with level 3 (MQTT 3.1), `MQTT` with level 4 or 5 (3.1.1, 5.0)"
    )]
    WrongProtocolName,
    /// A protocol level other than 3, 4 or 5 (MQTT 3.1, 3.1.1, 5.0).
    #[error("unsupported MQTT protocol level {0} (3, 4 and 5 are MQTT 3.1, 3.1.1 and 5.0)")]
    UnsupportedLevel(u8),
    /// A field cannot be read.
    #[error("malformed CONNECT: {field} {problem}")]
    Malformed {
        /// The field.
        field: Field,
        /// What is wrong with it.
        problem: Problem,
    },
    /// Bytes are left inside the remaining length after the last field the flags announce.
    #[error("malformed CONNECT: {extra} bytes after its last field")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
}

/// Parses the CONNECT at the start of `bytes`, a packet of at most `max_size` bytes.
///
/// Reads only `bytes[..fixed header + remaining length]`: what follows (a client that sent its
/// next packets at once) is never looked at. Every proper prefix of a valid CONNECT is
/// [`Parse::Incomplete`], so how the packet is split into TCP segments never decides anything;
/// bytes that can no longer become a valid CONNECT are an error as soon as the bad field is in,
/// and the same error whatever arrives after them. Never panics, never allocates.
pub fn parse(bytes: &[u8], max_size: usize) -> Result<Parse<'_>, ConnectError> {
    let Some(&first) = bytes.first() else {
        return Ok(Parse::Incomplete {
            needed: MIN_FIXED_HEADER_LEN,
        });
    };
    if first != CONNECT_BYTE {
        return Err(ConnectError::NotConnect { first });
    }
    let remaining = match varint(&bytes[1..]) {
        Varint::Value { value, len } => Some((value, len)),
        Varint::Short => None,
        Varint::Bad => return Err(ConnectError::BadRemainingLength),
    };
    let Some((remaining, varint_len)) = remaining else {
        return Ok(Parse::Incomplete {
            needed: MIN_FIXED_HEADER_LEN.saturating_sub(bytes.len()).max(1),
        });
    };
    let header_len = 1 + varint_len;
    // At most 5 + 268,435,455: no overflow, even where usize has 32 bits.
    let len = header_len + remaining;
    if len > max_size {
        return Err(ConnectError::TooLarge {
            size: len,
            max: max_size,
        });
    }
    let mut reader = Reader {
        bytes: &bytes[..len.min(bytes.len())],
        pos: header_len,
        end: len,
    };
    match body(&mut reader) {
        Ok(connect) => Ok(Parse::Complete { connect, len }),
        Err(Stop::Invalid(error)) => Err(error),
        Err(Stop::More) => {
            // A reader stops for more only when the packet is not all there.
            debug_assert!(
                bytes.len() < len,
                "{} of {len} bytes ask for more",
                bytes.len()
            );
            Ok(Parse::Incomplete {
                needed: len.saturating_sub(bytes.len()).max(1),
            })
        }
    }
}

/// The variable header and payload, from `reader`'s position (just after the fixed header).
fn body<'a>(reader: &mut Reader<'a>) -> Result<Connect<'a>, Stop> {
    // The name's length alone tells most other protocols apart, before their bytes arrive.
    let name_len = reader.u16(Field::ProtocolName)?;
    if name_len != 4 && name_len != 6 {
        return Err(ConnectError::WrongProtocolName.into());
    }
    let name = reader.take(usize::from(name_len), Field::ProtocolName)?;
    if name != b"MQTT" && name != b"MQIsdp" {
        return Err(ConnectError::WrongProtocolName.into());
    }
    let protocol = match (name, reader.u8(Field::ProtocolLevel)?) {
        (b"MQIsdp", 3) => Protocol::V3_1,
        (b"MQTT", 4) => Protocol::V3_1_1,
        (b"MQTT", 5) => Protocol::V5,
        (_, 3..=5) => return Err(ConnectError::WrongProtocolName.into()),
        (_, level) => return Err(ConnectError::UnsupportedLevel(level).into()),
    };
    let flags = reader.u8(Field::ConnectFlags)?;
    if flags & FLAG_RESERVED != 0 {
        return Err(malformed(Field::ConnectFlags, Problem::ReservedFlag));
    }
    let keep_alive = reader.u16(Field::KeepAlive)?;
    if protocol == Protocol::V5 {
        reader.properties(Field::Properties)?;
    }
    let client_id = utf8(reader.string(Field::ClientId)?, Field::ClientId)?;
    let will = flags & FLAG_WILL != 0;
    if will {
        if protocol == Protocol::V5 {
            reader.properties(Field::WillProperties)?;
        }
        reader.string(Field::WillTopic)?;
        reader.string(Field::WillPayload)?;
    }
    let username = if flags & FLAG_USERNAME != 0 {
        Some(utf8(reader.string(Field::Username)?, Field::Username)?)
    } else {
        None
    };
    if flags & FLAG_PASSWORD != 0 {
        reader.string(Field::Password)?;
    }
    if reader.pos < reader.end {
        return Err(ConnectError::TrailingBytes {
            extra: reader.end - reader.pos,
        }
        .into());
    }
    Ok(Connect {
        protocol,
        client_id,
        clean_start: flags & FLAG_CLEAN_START != 0,
        keep_alive,
        username,
        will,
    })
}

/// Why a field could not be read.
enum Stop {
    /// Its bytes have not all arrived, and they fit in the remaining length.
    More,
    /// It can never be read.
    Invalid(ConnectError),
}

impl From<ConnectError> for Stop {
    fn from(error: ConnectError) -> Stop {
        Stop::Invalid(error)
    }
}

fn malformed(field: Field, problem: Problem) -> Stop {
    Stop::Invalid(ConnectError::Malformed { field, problem })
}

fn utf8(bytes: &[u8], field: Field) -> Result<&str, Stop> {
    std::str::from_utf8(bytes).map_err(|_| malformed(field, Problem::NotUtf8))
}

/// A cursor over the packet's bytes that tells "not arrived yet" from "past the declared end".
struct Reader<'a> {
    /// The bytes that have arrived, never beyond `end`.
    bytes: &'a [u8],
    /// The next byte to read.
    pos: usize,
    /// The end of the packet its fixed header declares.
    end: usize,
}

impl<'a> Reader<'a> {
    /// The next `n` bytes, as part of `field`.
    fn take(&mut self, n: usize, field: Field) -> Result<&'a [u8], Stop> {
        let next = self.pos.saturating_add(n);
        if next > self.end {
            return Err(malformed(field, Problem::PastEnd));
        }
        let taken = self.bytes.get(self.pos..next).ok_or(Stop::More)?;
        self.pos = next;
        Ok(taken)
    }

    fn u8(&mut self, field: Field) -> Result<u8, Stop> {
        Ok(self.take(1, field)?[0])
    }

    fn u16(&mut self, field: Field) -> Result<u16, Stop> {
        let bytes = self.take(2, field)?;
        Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
    }

    /// A UTF-8 string or binary data field: a 2-byte length, then that many bytes.
    fn string(&mut self, field: Field) -> Result<&'a [u8], Stop> {
        let len = self.u16(field)?;
        self.take(usize::from(len), field)
    }

    /// Skips MQTT 5 properties: a variable byte integer length, then that many bytes.
    fn properties(&mut self, field: Field) -> Result<(), Stop> {
        let rest = self.bytes.get(self.pos..).unwrap_or_default();
        match varint(rest) {
            Varint::Value { value, len } => {
                self.take(len, field)?;
                self.take(value, field)?;
                Ok(())
            }
            Varint::Bad => Err(malformed(field, Problem::BadLength)),
            // Everything that arrived is a prefix of the length: short of the declared end, more
            // may come; at the end, the length runs past it.
            Varint::Short if self.bytes.len() < self.end => Err(Stop::More),
            Varint::Short => Err(malformed(field, Problem::PastEnd)),
        }
    }
}

/// A variable byte integer read from the start of some bytes.
enum Varint {
    Value {
        value: usize,
        len: usize,
    },
    /// The bytes end inside it.
    Short,
    /// Over 4 bytes, or not in its shortest form (a last byte of 0 after the first).
    Bad,
}

/// Reads a variable byte integer (MQTT 5 section 1.5.5; the remaining length of 3.1.1 section
/// 2.2.3): 7 bits a byte, least significant first, the top bit set on every byte but the last.
fn varint(bytes: &[u8]) -> Varint {
    let mut value = 0;
    for (i, &byte) in bytes.iter().take(VARINT_MAX_BYTES).enumerate() {
        value |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            // 1.5.5: "MUST use the minimum number of bytes"; a trailing zero byte adds nothing.
            if i > 0 && byte == 0 {
                return Varint::Bad;
            }
            return Varint::Value { value, len: i + 1 };
        }
    }
    if bytes.len() >= VARINT_MAX_BYTES {
        Varint::Bad
    } else {
        Varint::Short
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::testing::{self, Sample};

    const MAX: usize = crate::mqtt::DEFAULT_MAX_CONNECT_SIZE;

    fn complete(bytes: &[u8]) -> (Connect<'_>, usize) {
        match parse(bytes, MAX) {
            Ok(Parse::Complete { connect, len }) => (connect, len),
            other => panic!("expected a complete CONNECT, got {other:?}"),
        }
    }

    #[test]
    fn every_sample_parses_to_what_its_client_sent() {
        for Sample { name, bytes, info } in testing::samples() {
            let (connect, len) = complete(&bytes);
            assert_eq!(len, bytes.len(), "{name}");
            assert_eq!(ConnectInfo::from(connect), info, "{name}");
        }
    }

    #[test]
    fn the_next_packet_is_neither_read_nor_counted() {
        // A PINGREQ pipelined after the CONNECT, then a byte that is no CONNECT at all.
        for Sample { name, bytes, info } in testing::samples() {
            let mut pipelined = bytes.clone();
            pipelined.extend_from_slice(&[0xc0, 0x00, 0xff]);
            let (connect, len) = complete(&pipelined);
            assert_eq!(len, bytes.len(), "{name}");
            assert_eq!(ConnectInfo::from(connect), info, "{name}");
        }
    }

    #[test]
    fn every_prefix_of_a_sample_asks_for_more_and_never_past_its_end() {
        for Sample { name, bytes, .. } in testing::samples() {
            for cut in 0..bytes.len() {
                match parse(&bytes[..cut], MAX) {
                    Ok(Parse::Incomplete { needed }) => {
                        assert!(needed >= 1, "{name}: {cut} bytes");
                        assert!(cut + needed <= bytes.len(), "{name}: {cut} bytes, {needed}");
                        // Once the fixed header is in, the rest of the packet exactly.
                        if cut >= bytes.len() - bytes_after_header(&bytes) {
                            assert_eq!(cut + needed, bytes.len(), "{name}: {cut} bytes");
                        }
                    }
                    other => panic!("{name}: {cut} of {} bytes: {other:?}", bytes.len()),
                }
            }
        }
    }

    /// The remaining length the sample declares.
    fn bytes_after_header(bytes: &[u8]) -> usize {
        match varint(&bytes[1..]) {
            Varint::Value { value, .. } => value,
            _ => panic!("a sample's fixed header is valid"),
        }
    }

    #[test]
    fn mqtt_5_properties_are_skipped_by_their_length() {
        // Properties whose bytes look like a client id and flags: only their length counts.
        let mut packet = vec![0x10, 0];
        packet.extend_from_slice(b"\x00\x04MQTT\x05\x02\x00\x3c");
        packet.extend_from_slice(b"\x08\x00\x04abcd\x11\x00"); // 8 bytes of properties
        packet.extend_from_slice(b"\x00\x02id");
        packet[1] = u8::try_from(packet.len() - 2).expect("short");
        let (connect, len) = complete(&packet);
        assert_eq!((connect.client_id, len), ("id", packet.len()));
        assert_eq!((connect.protocol, connect.keep_alive), (Protocol::V5, 60));
    }

    #[test]
    fn garbage_is_not_a_connect() {
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\n", MAX),
            Err(ConnectError::NotConnect { first: b'G' })
        );
        // TLS ClientHello on a plain listener; a PUBLISH first; CONNECT type with flags set.
        for first in [0x16, 0x30, 0x12] {
            assert_eq!(
                parse(&[first], MAX),
                Err(ConnectError::NotConnect { first })
            );
        }
        assert_eq!(
            parse(b"GET", MAX).map_err(|e| e.to_string()),
            Err(
                "not an MQTT CONNECT: the first byte is 0x47, a CONNECT starts with 0x10"
                    .to_string()
            )
        );
    }

    #[test]
    fn a_remaining_length_over_the_limit_is_refused_with_both_sizes() {
        // 16,384 bytes declared (0x80 0x80 0x01), from the fixed header alone.
        let error = parse(&[0x10, 0x80, 0x80, 0x01], 1024).unwrap_err();
        assert_eq!(
            error,
            ConnectError::TooLarge {
                size: 4 + 16_384,
                max: 1024
            }
        );
        assert_eq!(
            error.to_string(),
            "CONNECT of 16388 bytes is over the 1024-byte limit"
        );
        // A real CONNECT one byte over the limit, and exactly at it.
        let bytes = testing::v4_with_everything();
        assert_eq!(
            parse(&bytes, bytes.len() - 1),
            Err(ConnectError::TooLarge {
                size: bytes.len(),
                max: bytes.len() - 1
            })
        );
        assert!(matches!(
            parse(&bytes, bytes.len()),
            Ok(Parse::Complete { .. })
        ));
        // The largest remaining length there is, against the default limit.
        assert_eq!(
            parse(&[0x10, 0xff, 0xff, 0xff, 0x7f], MAX),
            Err(ConnectError::TooLarge {
                size: 5 + 268_435_455,
                max: MAX
            })
        );
    }

    #[test]
    fn a_malformed_remaining_length_is_refused() {
        // Five bytes, and a shortest-form violation (0x80 0x00 is 0 in two bytes).
        for header in [
            &[0x10, 0xff, 0xff, 0xff, 0xff][..],
            &[0x10, 0x80, 0x00],
            &[0x10, 0x8a, 0x80, 0x00],
        ] {
            assert_eq!(
                parse(header, MAX),
                Err(ConnectError::BadRemainingLength),
                "{header:02x?}"
            );
        }
        // Still arriving: not decided yet.
        assert_eq!(
            parse(&[0x10, 0xff, 0xff], MAX),
            Ok(Parse::Incomplete { needed: 1 })
        );
    }

    /// A CONNECT with protocol `name` and `level`, clean start, keep alive 60, client id `c`;
    /// level 5 has an empty property list (byte 12).
    fn with_protocol(name: &[u8], level: u8) -> Vec<u8> {
        let mut packet = vec![0x10, 0, 0, u8::try_from(name.len()).expect("short")];
        packet.extend_from_slice(name);
        packet.extend_from_slice(&[level, 0x02, 0x00, 0x3c]);
        if level == 5 {
            packet.push(0);
        }
        packet.extend_from_slice(&[0x00, 0x01, b'c']);
        packet[1] = u8::try_from(packet.len() - 2).expect("short");
        packet
    }

    #[test]
    fn protocol_name_and_level_must_agree() {
        assert_eq!(
            complete(&with_protocol(b"MQTT", 4)).0.protocol,
            Protocol::V3_1_1
        );
        assert_eq!(
            complete(&with_protocol(b"MQTT", 5)).0.protocol,
            Protocol::V5
        );
        assert_eq!(
            complete(&with_protocol(b"MQIsdp", 3)).0.protocol,
            Protocol::V3_1
        );
        for (name, level) in [
            (&b"MQIsdp"[..], 4),
            (b"MQTT", 3),
            (b"MQIsdp", 5),
            (b"mqtt", 4),
            (b"HTTP", 4),
            (b"", 4),
        ] {
            assert_eq!(
                parse(&with_protocol(name, level), MAX),
                Err(ConnectError::WrongProtocolName),
                "{name:?} level {level}"
            );
        }
        for level in [0, 2, 6, 0x84, 0x83] {
            assert_eq!(
                parse(&with_protocol(b"MQTT", level), MAX),
                Err(ConnectError::UnsupportedLevel(level))
            );
        }
    }

    #[test]
    fn a_wrong_protocol_name_is_refused_as_soon_as_it_is_in() {
        // A name of another length: refused from its length, before its bytes.
        let packet = with_protocol(b"AMQP0091", 4);
        assert_eq!(
            parse(&packet[..4], MAX),
            Err(ConnectError::WrongProtocolName)
        );
        let packet = with_protocol(b"HTTP", 4);
        // Fixed header, name length and the four bytes of the name: nothing more is awaited.
        assert_eq!(
            parse(&packet[..8], MAX),
            Err(ConnectError::WrongProtocolName)
        );
        assert_eq!(
            parse(&packet[..7], MAX),
            Ok(Parse::Incomplete {
                needed: packet.len() - 7
            })
        );
    }

    #[test]
    fn reserved_flag_and_bad_utf8_name_their_field() {
        let mut reserved = with_protocol(b"MQTT", 4);
        reserved[9] |= 0x01;
        let error = parse(&reserved, MAX).unwrap_err();
        assert_eq!(
            error,
            ConnectError::Malformed {
                field: Field::ConnectFlags,
                problem: Problem::ReservedFlag
            }
        );
        assert_eq!(
            error.to_string(),
            "malformed CONNECT: connect flags have the reserved bit 0 set"
        );

        let mut not_utf8 = with_protocol(b"MQTT", 4);
        let last = not_utf8.len() - 1;
        not_utf8[last] = 0xff;
        let error = parse(&not_utf8, MAX).unwrap_err();
        assert_eq!(
            error.to_string(),
            "malformed CONNECT: client id is not valid UTF-8"
        );
    }

    /// The field and problem `bytes` are refused for, when they are malformed.
    fn refused_field(bytes: &[u8]) -> Option<(Field, Problem)> {
        match parse(bytes, MAX) {
            Err(ConnectError::Malformed { field, problem }) => Some((field, problem)),
            _ => None,
        }
    }

    #[test]
    fn a_field_past_the_remaining_length_is_malformed_not_awaited() {
        // The client id says 5 bytes, the remaining length leaves room for 1: the bytes after
        // the packet are not read as the rest of the client id.
        let mut packet = with_protocol(b"MQTT", 4);
        let id_len = packet.len() - 2;
        packet[id_len] = 5;
        packet.extend_from_slice(b"dddd");
        assert_eq!(
            refused_field(&packet),
            Some((Field::ClientId, Problem::PastEnd))
        );
        // A username flag with nothing left for the username.
        let mut no_username = with_protocol(b"MQTT", 4);
        no_username[9] |= 0x80;
        assert_eq!(
            refused_field(&no_username),
            Some((Field::Username, Problem::PastEnd))
        );
        // MQTT 5 properties whose length runs past the end, or is not a valid integer.
        let mut properties = with_protocol(b"MQTT", 5);
        properties[12] = 0x20;
        assert_eq!(
            refused_field(&properties),
            Some((Field::Properties, Problem::PastEnd))
        );
        properties[12] = 0x80;
        properties.insert(13, 0x00);
        properties[1] += 1;
        assert_eq!(
            refused_field(&properties),
            Some((Field::Properties, Problem::BadLength))
        );
    }

    #[test]
    fn bytes_after_the_last_field_inside_the_packet_are_refused() {
        let mut packet = with_protocol(b"MQTT", 4);
        packet.extend_from_slice(b"xy");
        packet[1] += 2;
        assert_eq!(
            parse(&packet, MAX),
            Err(ConnectError::TrailingBytes { extra: 2 })
        );
    }
}
