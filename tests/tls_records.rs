//! The record layer the relay takes a connection over with (`tls/record.rs`), on both ends of
//! connections handshaken in memory by rustls (`tls::testing::pair`), for each of the three TLS
//! 1.3 suites: what each side decrypts, how key updates are followed and answered, and what a
//! bad record is refused with (the error, and the alert the peer then reads); then the same
//! for TLS 1.2's AES-GCM (explicit nonces) and ChaCha20-Poly1305 suites, which have no key
//! update and refuse renegotiation.

use std::sync::{Arc, OnceLock};

use brokerside::tls::record::{MAX_PLAINTEXT, Records};
use brokerside::tls::testing::{self, Ended, Fed, Pair, feed};
use rustls::crypto::ring::cipher_suite::{
    TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, TLS13_AES_128_GCM_SHA256,
    TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
};
use rustls::server::ServerConfig;
use rustls::{AlertDescription, ContentType, Error, InvalidMessage, PeerMisbehaved};

const SUITES: [rustls::SupportedCipherSuite; 3] = [
    TLS13_AES_128_GCM_SHA256,
    TLS13_AES_256_GCM_SHA384,
    TLS13_CHACHA20_POLY1305_SHA256,
];

/// The relay's server config for a self-signed `localhost` certificate (made once).
fn server() -> Arc<ServerConfig> {
    static SERVER: OnceLock<Arc<ServerConfig>> = OnceLock::new();
    Arc::clone(SERVER.get_or_init(|| {
        let issued = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
            .expect("a test certificate");
        testing::server_config(&issued.cert.pem(), &issued.signing_key.serialize_pem())
            .expect("the test certificate loads")
    }))
}

fn pair(suite: rustls::SupportedCipherSuite) -> Pair {
    let client = testing::client_config(suite).expect("a client config");
    let pair = testing::pair(server(), client).expect("the in-memory handshake");
    let version = match suite {
        rustls::SupportedCipherSuite::Tls12(_) => rustls::ProtocolVersion::TLSv1_2,
        rustls::SupportedCipherSuite::Tls13(_) => rustls::ProtocolVersion::TLSv1_3,
    };
    assert!(Records::<()>::seals(Some(version), Some(suite)));
    pair
}

/// Opens `wire` in one read.
fn open_all<D>(records: &mut Records<D>, wire: &[u8]) -> Fed {
    feed(records, wire, || wire.len())
}

/// `n` bytes that do not repeat with any short period.
fn payload(n: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// The records of `wire`, split by their headers' lengths.
fn records(mut wire: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while !wire.is_empty() {
        let len = 5 + usize::from(u16::from_be_bytes([wire[3], wire[4]]));
        let (record, rest) = wire.split_at(len);
        out.push(record);
        wire = rest;
    }
    out
}

/// Asserts that `fed` delivered exactly `plain`, sealed nothing in answer and consumed every
/// byte.
#[track_caller]
fn assert_clean(fed: &Fed, plain: &[u8], what: impl std::fmt::Debug) {
    assert!(
        fed.plain == plain,
        "{what:?}: {} bytes delivered for {}",
        fed.plain.len(),
        plain.len()
    );
    assert!(fed.tls.is_empty(), "{what:?}: nothing to answer");
    assert_waiting(fed, 0);
}

#[track_caller]
fn assert_waiting(fed: &Fed, carried: usize) {
    match fed.ended {
        Ended::Waiting(n) => assert_eq!(n, carried, "bytes left carried"),
        ref other => panic!("expected to wait for more, got {other:?}"),
    }
}

fn failed(fed: Fed) -> (Error, Vec<u8>) {
    match fed.ended {
        Ended::Failed(error) => (error, fed.tls),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn application_data_round_trips_both_ways() {
    for suite in SUITES {
        let (mut server, mut client) = pair(suite);
        let mut wire = Vec::new();
        client.seal(b"CONNECT", &mut wire).unwrap();
        let fed = open_all(&mut server, &wire);
        assert_clean(&fed, b"CONNECT", suite);

        let mut wire = Vec::new();
        server.seal(b"CONNACK", &mut wire).unwrap();
        let fed = open_all(&mut client, &wire);
        assert_clean(&fed, b"CONNACK", suite);
    }
}

#[test]
fn a_large_payload_survives_any_split_of_reads() {
    let data = payload(100 * 1024);
    for suite in SUITES {
        // Each read schedule gets its own connection; both directions for each.
        let schedules: [&[usize]; 4] = [&[1], &[5], &[16 * 1024 + 7, 3], &[16 * 1024 + 300, 1, 17]];
        for schedule in schedules {
            let (mut server, mut client) = pair(suite);
            let mut reads = schedule.iter().copied().cycle();
            let mut wire = Vec::new();
            client.seal(&data, &mut wire).unwrap();
            assert_eq!(records(&wire).len(), data.len().div_ceil(MAX_PLAINTEXT));
            let fed = feed(&mut server, &wire, &mut || reads.next().unwrap());
            assert_clean(&fed, &data, (suite, schedule, "client to server"));

            let mut wire = Vec::new();
            server.seal(&data, &mut wire).unwrap();
            let fed = feed(&mut client, &wire, &mut || reads.next().unwrap());
            assert_clean(&fed, &data, (suite, schedule, "server to client"));
        }
    }
}

#[test]
fn a_partial_record_is_carried_not_consumed() {
    let (mut server, mut client) = pair(TLS13_AES_128_GCM_SHA256);
    let mut wire = Vec::new();
    client.seal(b"one", &mut wire).unwrap();
    let first = wire.len();
    client.seal(b"two", &mut wire).unwrap();
    let fed = open_all(&mut server, &wire[..first + 7]);
    assert_eq!(fed.plain, b"one");
    assert_waiting(&fed, 7);
}

#[test]
fn an_unrequested_key_update_from_the_client_is_followed() {
    for suite in SUITES {
        let (mut server, mut client) = pair(suite);
        // The client's own limit makes it update its key (without a request) every 2 records.
        client.set_key_limit(2);
        let mut wire = Vec::new();
        for i in 0..5u8 {
            client.seal(&[b'a' + i; 10], &mut wire).unwrap();
        }
        assert_eq!(records(&wire).len(), 5 + 2, "{suite:?}: two KeyUpdates");
        let fed = feed(&mut server, &wire, || 3);
        let expected: Vec<u8> = (0..5u8).flat_map(|i| [b'a' + i; 10]).collect();
        assert_clean(&fed, &expected, suite);
    }
}

#[test]
fn a_requested_key_update_is_answered_and_the_client_follows_the_answer() {
    for suite in SUITES {
        let (mut server, mut client) = pair(suite);
        let mut wire = Vec::new();
        client.request_key_update(&mut wire).unwrap();
        client.seal(b"after the update", &mut wire).unwrap();
        let fed = open_all(&mut server, &wire);
        assert_eq!(fed.plain, b"after the update", "{suite:?}");
        let answer = fed.tls;
        assert_eq!(
            records(&answer).len(),
            1,
            "{suite:?}: one KeyUpdate in answer"
        );

        let mut later = Vec::new();
        server.seal(b"under the new key", &mut later).unwrap();
        // Skipping the answer, the client's old key cannot open what follows it: the server
        // did change its key.
        let (mut server2, mut client2) = pair(suite);
        let mut wire2 = Vec::new();
        client2.request_key_update(&mut wire2).unwrap();
        let answer2 = open_all(&mut server2, &wire2).tls;
        assert_eq!(records(&answer2).len(), 1);
        let mut later2 = Vec::new();
        server2.seal(b"under the new key", &mut later2).unwrap();
        let (error, _) = failed(open_all(&mut client2, &later2));
        assert_eq!(error, Error::DecryptError, "{suite:?}");

        // Opening the answer, the client follows it, and asks nothing back.
        let fed = open_all(&mut client, &[answer, later].concat());
        assert_clean(&fed, b"under the new key", suite);
        // And keeps following, both ways.
        let mut wire = Vec::new();
        server.seal(b"more", &mut wire).unwrap();
        assert_eq!(open_all(&mut client, &wire).plain, b"more");
        let mut wire = Vec::new();
        client.seal(b"back", &mut wire).unwrap();
        assert_eq!(open_all(&mut server, &wire).plain, b"back");
    }
}

#[test]
fn requests_in_one_batch_get_one_answer_and_in_two_batches_two() {
    for suite in SUITES {
        let (mut server, mut client) = pair(suite);
        let mut wire = Vec::new();
        client.request_key_update(&mut wire).unwrap();
        client.request_key_update(&mut wire).unwrap();
        client.seal(b"x", &mut wire).unwrap();
        let fed = open_all(&mut server, &wire);
        assert_eq!(fed.plain, b"x");
        assert_eq!(records(&fed.tls).len(), 1, "{suite:?}: one answer");
        let mut answers = fed.tls;

        let mut wire = Vec::new();
        client.request_key_update(&mut wire).unwrap();
        let fed = open_all(&mut server, &wire);
        assert_eq!(
            records(&fed.tls).len(),
            1,
            "{suite:?}: the next batch's answer"
        );
        answers.extend_from_slice(&fed.tls);

        server.seal(b"y", &mut answers).unwrap();
        let fed = open_all(&mut client, &answers);
        assert_clean(&fed, b"y", suite);
    }
}

#[test]
fn the_key_limit_makes_the_server_update_its_key() {
    for suite in SUITES {
        let (mut server, mut client) = pair(suite);
        server.set_key_limit(3);
        let mut wire = Vec::new();
        let mut expected = Vec::new();
        for i in 0..10u8 {
            let data = [i; 100];
            server.seal(&data, &mut wire).unwrap();
            expected.extend_from_slice(&data);
        }
        // 3 records under each key: a KeyUpdate after the 3rd, 6th and 9th.
        assert_eq!(records(&wire).len(), 10 + 3, "{suite:?}");
        let fed = feed(&mut client, &wire, || 50);
        assert_clean(&fed, &expected, suite);
        // Within one seal too.
        let mut wire = Vec::new();
        let data = payload(10 * MAX_PLAINTEXT);
        server.seal(&data, &mut wire).unwrap();
        assert!(records(&wire).len() > 10);
        assert!(open_all(&mut client, &wire).plain == data, "{suite:?}");
    }
}

#[test]
fn a_flipped_byte_is_a_bad_record_mac() {
    for suite in SUITES {
        // A byte of the ciphertext, of the tag, of the header's version (additional data).
        let places: [fn(usize) -> usize; 3] = [|len| len / 2, |len| len - 1, |_| 2];
        for at in places {
            let (mut server, mut client) = pair(suite);
            let mut wire = Vec::new();
            client.seal(b"before", &mut wire).unwrap();
            let start = wire.len();
            client.seal(b"a record to corrupt", &mut wire).unwrap();
            let flip = start + at(wire.len() - start);
            wire[flip] ^= 0x40;
            let fed = open_all(&mut server, &wire);
            assert_eq!(fed.plain, b"before", "{suite:?}");
            let (error, alert) = failed(fed);
            assert_eq!(error, Error::DecryptError, "{suite:?} byte {flip}");
            let (error, answer) = failed(open_all(&mut client, &alert));
            assert_eq!(
                error,
                Error::AlertReceived(AlertDescription::BadRecordMac),
                "{suite:?}"
            );
            assert!(answer.is_empty(), "no alert answers an alert");
        }
    }
}

type Client = Records<rustls::client::ClientConnectionData>;

/// On a new connection of `suite`, the client seals what `write` seals, and the server opens
/// it in reads of `read` bytes: what the server made of it, and the connection.
fn client_sends(
    suite: rustls::SupportedCipherSuite,
    read: usize,
    write: impl FnOnce(&mut Client, &mut Vec<u8>),
) -> (Fed, Pair) {
    let (mut server, mut client) = pair(suite);
    let mut wire = Vec::new();
    write(&mut client, &mut wire);
    let fed = feed(&mut server, &wire, || read);
    (fed, (server, client))
}

/// Sends what `make` seals on the client after a record of data, and checks that the data is
/// delivered, that what follows is refused with `error` and that the client reads the alert
/// `alert` from the server's answer.
fn assert_refused(make: impl Fn(&mut Client, &mut Vec<u8>), error: Error, alert: AlertDescription) {
    for suite in SUITES {
        let (fed, (_, mut client)) = client_sends(suite, 4, |client, wire| {
            client.seal(b"ok", wire).unwrap();
            make(client, wire);
        });
        assert!(
            fed.plain == b"ok",
            "{suite:?}: what came before is delivered"
        );
        let (got, answer) = failed(fed);
        assert_eq!(got, error, "{suite:?}");
        let (got, _) = failed(open_all(&mut client, &answer));
        assert_eq!(got, Error::AlertReceived(alert), "{suite:?}: {error:?}");
    }
}

/// [`assert_refused`] for one record of inner type `typ` with `content`.
fn assert_raw_refused(typ: u8, content: &[u8], error: Error, alert: AlertDescription) {
    assert_refused(
        |client, wire| client.seal_raw(typ, content, wire).unwrap(),
        error,
        alert,
    );
}

#[test]
fn a_change_cipher_spec_after_the_handshake_is_refused() {
    assert_refused(
        |_, wire| wire.extend_from_slice(&[20, 3, 3, 0, 1, 1]),
        PeerMisbehaved::IllegalMiddleboxChangeCipherSpec.into(),
        AlertDescription::UnexpectedMessage,
    );
}

#[test]
fn a_plaintext_record_after_the_handshake_is_refused() {
    assert_refused(
        |_, wire| wire.extend_from_slice(&[22, 3, 3, 0, 4, 24, 0, 0, 0]),
        Error::InappropriateMessage {
            expect_types: vec![ContentType::ApplicationData],
            got_type: ContentType::Handshake,
        },
        AlertDescription::UnexpectedMessage,
    );
}

#[test]
fn an_oversize_record_header_is_refused() {
    // 2^14 + 256 is the longest protected record; the header alone decides.
    let [hi, lo] = u16::try_from(16 * 1024 + 256 + 1).unwrap().to_be_bytes();
    assert_refused(
        |_, wire| wire.extend_from_slice(&[23, 3, 3, hi, lo]),
        InvalidMessage::MessageTooLarge.into(),
        AlertDescription::RecordOverflow,
    );
}

#[test]
fn an_oversize_plaintext_is_refused() {
    assert_raw_refused(
        23,
        &[7; MAX_PLAINTEXT + 1],
        InvalidMessage::MessageTooLarge.into(),
        AlertDescription::RecordOverflow,
    );
    // RFC 8446 §5.4: the inner plaintext (content, type and padding) is within 2^14 + 1.
    assert_refused(
        |client, wire| {
            let mut content = vec![7; MAX_PLAINTEXT];
            content.push(23);
            content.extend_from_slice(&[0; 100]);
            client.seal_raw(0, &content, wire).unwrap()
        },
        InvalidMessage::MessageTooLarge.into(),
        AlertDescription::RecordOverflow,
    );
}

#[test]
fn a_padded_record_of_full_size_is_accepted() {
    let (mut server, mut client) = pair(TLS13_AES_128_GCM_SHA256);
    let mut wire = Vec::new();
    client.seal_raw(0, b"abc\x17\0\0\0\0", &mut wire).unwrap();
    let data = payload(MAX_PLAINTEXT);
    client.seal(&data, &mut wire).unwrap();
    let fed = open_all(&mut server, &wire);
    assert_clean(&fed, &[b"abc".as_slice(), &data].concat(), "padded");
}

#[test]
fn an_inner_change_cipher_spec_is_refused() {
    assert_raw_refused(
        20,
        &[1],
        Error::InappropriateMessage {
            expect_types: vec![ContentType::ApplicationData],
            got_type: ContentType::ChangeCipherSpec,
        },
        AlertDescription::UnexpectedMessage,
    );
    assert_raw_refused(
        99,
        b"what",
        Error::InappropriateMessage {
            expect_types: vec![ContentType::ApplicationData],
            got_type: ContentType::Unknown(99),
        },
        AlertDescription::UnexpectedMessage,
    );
}

#[test]
fn an_inner_plaintext_without_a_type_is_refused() {
    // Type 0 and nothing before it (one byte), or only padding.
    for content in [&[][..], &[0; 30]] {
        assert_raw_refused(
            0,
            content,
            PeerMisbehaved::IllegalTlsInnerPlaintext.into(),
            AlertDescription::UnexpectedMessage,
        );
    }
}

#[test]
fn a_handshake_message_other_than_key_update_is_refused() {
    // A NewSessionTicket (what a server may send, never a client), and an empty handshake record.
    for (content, got) in [
        (&[4, 0, 0, 0][..], rustls::HandshakeType::NewSessionTicket),
        (&[], rustls::HandshakeType::Unknown(0)),
    ] {
        assert_raw_refused(
            22,
            content,
            Error::InappropriateHandshakeMessage {
                expect_types: vec![rustls::HandshakeType::KeyUpdate],
                got_type: got,
            },
            AlertDescription::UnexpectedMessage,
        );
    }
}

#[test]
fn a_malformed_key_update_is_refused() {
    let bad: [&[u8]; 5] = [
        &[24, 0, 0, 1, 0, 0],              // trailing byte
        &[24, 0, 0, 1, 0, 24, 0, 0, 1, 0], // two in one record
        &[24, 0, 0, 1, 2],                 // request value
        &[24, 0, 0, 2, 0, 0],              // length
        &[24, 0, 0, 1],                    // truncated
    ];
    for content in bad {
        assert_raw_refused(
            22,
            content,
            InvalidMessage::InvalidKeyUpdate.into(),
            AlertDescription::DecodeError,
        );
    }
}

#[test]
fn a_malformed_alert_is_refused() {
    for content in [&[1][..], &[1, 0, 0]] {
        assert_raw_refused(
            21,
            content,
            InvalidMessage::InvalidContentType.into(),
            AlertDescription::DecodeError,
        );
    }
}

#[test]
fn a_fatal_alert_ends_the_connection_unanswered() {
    for suite in SUITES {
        let (fed, _) = client_sends(suite, usize::MAX, |client, wire| {
            client.seal_raw(21, &[2, 40], wire).unwrap();
            client.seal(b"after", wire).unwrap();
        });
        assert!(fed.plain.is_empty());
        let (error, answer) = failed(fed);
        assert_eq!(
            error,
            Error::AlertReceived(AlertDescription::HandshakeFailure)
        );
        assert!(answer.is_empty());
    }
}

#[test]
fn close_notify_ends_the_stream_and_what_follows_is_not_read() {
    for suite in SUITES {
        for read in [1, 6, 4096] {
            let (mut server, mut client) = pair(suite);
            let mut wire = Vec::new();
            client.seal(b"last words", &mut wire).unwrap();
            client.seal_close_notify(&mut wire).unwrap();
            let end = wire.len();
            client.seal(b"after the end", &mut wire).unwrap();
            let fed = feed(&mut server, &wire, || read);
            assert_eq!(fed.plain, b"last words", "{suite:?}");
            assert!(fed.tls.is_empty());
            match fed.ended {
                Ended::Closed(rest) => assert_eq!(rest, wire.len() - end, "{suite:?} {read}"),
                other => panic!("{suite:?}: expected close_notify, got {other:?}"),
            }
        }
        // In one read: consumed stops right after it.
        let (mut server, mut client) = pair(suite);
        let mut wire = Vec::new();
        client.seal_close_notify(&mut wire).unwrap();
        let end = wire.len();
        client.seal(b"after the end", &mut wire).unwrap();
        let (mut plain, mut tls) = (Vec::new(), Vec::new());
        let opened = server.open(&mut wire, &mut plain, &mut tls).unwrap();
        assert!(opened.closed);
        assert_eq!(opened.consumed, end);
        // The relay carries the rest and calls again to seal the broker's data: nothing after
        // close_notify is opened then either.
        let mut rest = wire[end..].to_vec();
        let opened = server.open(&mut rest, &mut plain, &mut tls).unwrap();
        assert!(opened.closed, "{suite:?}: still closed");
        assert_eq!(opened.consumed, 0);
        assert!(plain.is_empty() && tls.is_empty(), "{suite:?}");
        // The server's close_notify, the other way.
        let mut wire = Vec::new();
        server.seal(b"bye", &mut wire).unwrap();
        server.seal_close_notify(&mut wire).unwrap();
        let fed = open_all(&mut client, &wire);
        assert_eq!(fed.plain, b"bye");
        assert!(matches!(fed.ended, Ended::Closed(0)), "{:?}", fed.ended);
    }
}

#[test]
fn user_canceled_is_ignored() {
    for suite in SUITES {
        let (fed, _) = client_sends(suite, 3, |client, wire| {
            client.seal(b"a", wire).unwrap();
            client.seal_raw(21, &[1, 90], wire).unwrap();
            client.seal(b"b", wire).unwrap();
        });
        assert_clean(&fed, b"ab", suite);
    }
}

#[test]
fn zero_length_application_data_is_accepted() {
    for suite in SUITES {
        let (fed, _) = client_sends(suite, 2, |client, wire| {
            client.seal_raw(23, &[], wire).unwrap();
            client.seal(b"", wire).unwrap();
            assert_eq!(records(wire).len(), 1, "seal of nothing seals nothing");
            client.seal(b"then data", wire).unwrap();
        });
        assert_clean(&fed, b"then data", suite);
    }
}

const TLS12_SUITES: [rustls::SupportedCipherSuite; 3] = [
    TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
];

#[test]
fn tls_1_2_data_round_trips_both_ways_in_any_split_of_reads() {
    let data = payload(100 * 1024);
    for suite in TLS12_SUITES {
        for read in [1, 5, 16 * 1024 + 7, data.len() * 2] {
            let (mut server, mut client) = pair(suite);
            let mut wire = Vec::new();
            client.seal(&data, &mut wire).unwrap();
            let fed = feed(&mut server, &wire, || read);
            assert_clean(&fed, &data, (suite, read));

            let mut wire = Vec::new();
            server.seal(&data, &mut wire).unwrap();
            let fed = feed(&mut client, &wire, || read);
            assert_clean(&fed, &data, (suite, read));
        }
        // A full record: its content, AES-GCM's explicit nonce, the tag; its own content type.
        let (mut server, _) = pair(suite);
        let mut wire = Vec::new();
        server.seal(&data, &mut wire).unwrap();
        let first = records(&wire)[0];
        let explicit = if suite == TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 {
            0
        } else {
            8
        };
        assert_eq!(first.len(), 5 + explicit + MAX_PLAINTEXT + 16, "{suite:?}");
        assert_eq!(first[0], 23, "{suite:?}: application data on the wire");
    }
}

#[test]
fn tls_1_2_ignores_a_warning_and_ends_at_close_notify() {
    for suite in TLS12_SUITES {
        let (fed, _) = client_sends(suite, 3, |client, wire| {
            client.seal(b"a", wire).unwrap();
            // no_renegotiation, a warning.
            client.seal_raw(21, &[1, 100], wire).unwrap();
            client.seal(b"b", wire).unwrap();
            client.seal_close_notify(wire).unwrap();
            client.seal(b"after the end", wire).unwrap();
        });
        assert_eq!(fed.plain, b"ab", "{suite:?}");
        assert!(
            matches!(fed.ended, Ended::Closed(_)),
            "{suite:?}: {:?}",
            fed.ended
        );
    }
}

#[test]
fn tls_1_2_refuses_renegotiation_a_fatal_alert_and_a_flipped_byte() {
    for suite in TLS12_SUITES {
        // A ClientHello after the handshake: renegotiation.
        let (fed, (_, mut client)) = client_sends(suite, 7, |client, wire| {
            client.seal(b"ok", wire).unwrap();
            client.seal_raw(22, &[1, 0, 0, 2, 3, 3], wire).unwrap();
        });
        assert_eq!(fed.plain, b"ok", "{suite:?}");
        let (error, answer) = failed(fed);
        assert_eq!(
            error,
            Error::InappropriateHandshakeMessage {
                expect_types: Vec::new(),
                got_type: rustls::HandshakeType::ClientHello,
            },
            "{suite:?}"
        );
        let (error, _) = failed(open_all(&mut client, &answer));
        assert_eq!(
            error,
            Error::AlertReceived(AlertDescription::UnexpectedMessage)
        );

        let (fed, _) = client_sends(suite, 7, |client, wire| {
            client.seal_raw(21, &[2, 40], wire).unwrap();
        });
        let (error, answer) = failed(fed);
        assert_eq!(
            error,
            Error::AlertReceived(AlertDescription::HandshakeFailure)
        );
        assert!(answer.is_empty(), "no alert answers an alert");

        let (mut server, mut client) = pair(suite);
        let mut wire = Vec::new();
        client.seal(b"a record to corrupt", &mut wire).unwrap();
        let last = wire.len() - 1;
        wire[last] ^= 1;
        let (error, alert) = failed(open_all(&mut server, &wire));
        assert_eq!(error, Error::DecryptError, "{suite:?}");
        let (error, _) = failed(open_all(&mut client, &alert));
        assert_eq!(error, Error::AlertReceived(AlertDescription::BadRecordMac));
    }
}

#[test]
fn tls_1_2_has_no_key_update_and_ends_at_the_key_limit() {
    for suite in TLS12_SUITES {
        let (mut server, mut client) = pair(suite);
        let mut wire = Vec::new();
        assert!(client.request_key_update(&mut wire).is_err(), "{suite:?}");
        assert!(wire.is_empty(), "{suite:?}: nothing sent");

        // The limit counts the handshake's Finished record too.
        server.set_key_limit(3);
        let data = payload(10 * MAX_PLAINTEXT);
        assert_eq!(server.seal(&data, &mut wire), Err(Error::EncryptError));
        let sealed = records(&wire).len();
        assert!((1..3).contains(&sealed), "{suite:?}: {sealed} records");
        let fed = open_all(&mut client, &wire);
        assert_clean(&fed, &data[..sealed * MAX_PLAINTEXT], suite);
    }
}
