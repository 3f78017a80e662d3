//! The TLS 1.3 record layer the relay takes a connection over with (`tls/record.rs`), on a
//! connection handshaken in memory (`tls::testing::pair`): a client does what the input says,
//! and the server opens the client's bytes in reads of the sizes the input chooses, carrying
//! what it did not consume as the relay does.
//!
//! Besides never panicking, checks against a model of what RFC 8446 makes of each record the
//! client sealed: while nothing corrupted the wire, the server delivers exactly the client's
//! application data, in order, up to the first record it must refuse or close_notify, and ends
//! there (refused, closed) or with every byte consumed; with garbage or a flipped byte, what it
//! delivers is a prefix of that. What the server sends back (answers to key updates, then data
//! sealed after each read) opens on the client, which must follow the server's key updates;
//! after a refusal the client reads the server's alert.
//!
//! TLS 1.2 connections are checked against RFC 5246's rules instead (the record's own type, no
//! key update, no renegotiation).
//!
//! Input: the first byte picks the suite (mod 6: three TLS 1.3, three TLS 1.2); then
//! operations, each a tag byte (mod 7) and its arguments (missing bytes read as 0):
//! 0 seal `len:u8` bytes of application data; 1 seal `len:u16` bytes made from a `seed:u8`;
//! 2 seal_raw of type `typ:u8` with content `n:u16` (at most 17000) bytes of `fill:u8` then
//! `len:u8` bytes; 3 request a key update; 4 append `len:u8` bytes of garbage to the wire;
//! 5 xor the wire's byte at `offset:u16` (mod its length) with `mask:u8` (0 = 0x80);
//! 6 feed the wire so far to the server in reads of `read:u16` bytes (0 = one read). What is
//! left is fed at the end in reads of the last size given.

#![no_main]

use std::sync::{Arc, OnceLock};

use brokerside::tls::record::{MAX_PLAINTEXT, Records};
use brokerside::tls::testing::{self, Ended, Fed};
use libfuzzer_sys::fuzz_target;
use rustls::Error;
use rustls::client::{ClientConfig, ClientConnectionData};
use rustls::crypto::ring::cipher_suite::{
    TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, TLS13_AES_128_GCM_SHA256,
    TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
};
use rustls::server::ServerConnectionData;

#[path = "shared/tls_server.rs"]
mod tls_server;

use tls_server::server;

/// The client for `suite` (mod 6: three TLS 1.3 suites, then three TLS 1.2 ones), and whether
/// it speaks TLS 1.2.
fn client(suite: u8) -> (Arc<ClientConfig>, bool) {
    static CLIENTS: OnceLock<[Arc<ClientConfig>; 6]> = OnceLock::new();
    let clients = CLIENTS.get_or_init(|| {
        [
            TLS13_AES_128_GCM_SHA256,
            TLS13_AES_256_GCM_SHA384,
            TLS13_CHACHA20_POLY1305_SHA256,
            TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ]
        .map(|suite| testing::client_config(suite).expect("a client config"))
    });
    let index = usize::from(suite % 6);
    (Arc::clone(&clients[index]), index >= 3)
}

/// The input, read from the front; missing bytes are zeros.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn u8(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        b
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (bytes, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        bytes
    }
}

/// RFC 5246 and what the server accepts after a TLS 1.2 handshake, for a record of type `typ`
/// with `content`: data; close_notify; a warning or user_canceled is ignored; a fatal alert,
/// renegotiation or any other type ends the connection.
fn classify_tls12(typ: u8, content: &[u8]) -> Record<'_> {
    if content.len() > MAX_PLAINTEXT {
        return Record::Refused;
    }
    match (typ, content) {
        (23, data) => Record::Data(data),
        (21, [_, 0]) => Record::Close,
        (21, [_, 90] | [1, _]) => Record::Nothing,
        _ => Record::Refused,
    }
}

/// What the server must make of one client record, while the wire is intact.
enum Record<'a> {
    Data(&'a [u8]),
    /// A key update the client's keys follow, or user_canceled: nothing to deliver.
    Nothing,
    Close,
    Refused,
    /// A KeyUpdate sent with seal_raw: the server updates its keys, the client does not, so
    /// the next record cannot be opened.
    Desync,
}

/// RFC 8446 §5.4 and what the server accepts after the handshake, for a record with inner
/// plaintext `content` then `typ`.
fn classify(typ: u8, content: &[u8]) -> Record<'_> {
    if content.len() + 1 > MAX_PLAINTEXT + 1 {
        return Record::Refused;
    }
    let end = if typ != 0 {
        content.len()
    } else {
        match content.iter().rposition(|&b| b != 0) {
            Some(end) => end,
            None => return Record::Refused,
        }
    };
    let typ = content.get(end).copied().unwrap_or(typ);
    match (typ, &content[..end]) {
        (23, data) => Record::Data(data),
        (21, [_, 0]) => Record::Close,
        (21, [_, 90]) => Record::Nothing,
        (22, [24, 0, 0, 1, 0 | 1]) => Record::Desync,
        _ => Record::Refused,
    }
}

/// What the server should deliver and how it should end, record by record.
#[derive(Default)]
struct Model {
    plain: Vec<u8>,
    closed: bool,
    refused: bool,
    desync: bool,
}

impl Model {
    fn record(&mut self, record: Record<'_>) {
        if self.closed || self.refused {
            return;
        }
        if self.desync {
            self.refused = true;
            return;
        }
        match record {
            Record::Data(data) => self.plain.extend_from_slice(data),
            Record::Nothing => {}
            Record::Close => self.closed = true,
            Record::Refused => self.refused = true,
            Record::Desync => self.desync = true,
        }
    }
}

/// One connection and what has been done to it.
struct Run {
    server: Records<ServerConnectionData>,
    client: Records<ClientConnectionData>,
    /// What the server should make of the client's records.
    model: Model,
    /// The connection is TLS 1.2 (else 1.3).
    tls12: bool,
    /// Garbage or a flipped byte went on the wire.
    corrupted: bool,
    /// The client's bytes not yet fed to the server.
    wire: Vec<u8>,
    /// What the server made of the client's bytes.
    server_got: Fed,
    /// What the client made of the server's bytes, and what the server sealed for it.
    client_got: Fed,
    sent_back: Vec<u8>,
}

impl Run {
    fn op(&mut self, input: &mut Input<'_>) {
        match input.u8() % 7 {
            0 => {
                let len = input.u8();
                self.seal(input.bytes(usize::from(len)));
            }
            1 => {
                let len = input.u16();
                let seed = input.u8();
                let data: Vec<u8> = (0..len).map(|i| seed ^ (i % 251) as u8).collect();
                self.seal(&data);
            }
            2 => {
                let typ = input.u8();
                let fill = input.u8();
                let n = input.u16().min(17_000);
                let len = input.u8();
                let mut content = vec![fill; usize::from(n)];
                content.extend_from_slice(input.bytes(usize::from(len)));
                if self.client.seal_raw(typ, &content, &mut self.wire).is_ok() {
                    self.model.record(match self.tls12 {
                        true => classify_tls12(typ, &content),
                        false => classify(typ, &content),
                    });
                }
            }
            3 => {
                let asked = self.client.request_key_update(&mut self.wire);
                // TLS 1.2 has no key update: the client refuses to send one.
                assert_eq!(asked.is_ok(), !self.tls12, "a key update: {asked:?}");
                self.model.record(Record::Nothing);
            }
            4 => {
                let len = input.u8();
                self.wire.extend_from_slice(input.bytes(usize::from(len)));
                self.corrupted |= len > 0;
            }
            5 => {
                let offset = usize::from(input.u16());
                let mask = match input.u8() {
                    0 => 0x80,
                    mask => mask,
                };
                if !self.wire.is_empty() {
                    let at = offset % self.wire.len();
                    self.wire[at] ^= mask;
                    self.corrupted = true;
                }
            }
            _ => {
                let read = input.u16();
                self.feed(usize::from(read));
            }
        }
    }

    fn seal(&mut self, data: &[u8]) {
        self.client
            .seal(data, &mut self.wire)
            .expect("the client seals");
        for chunk in data.chunks(MAX_PLAINTEXT) {
            self.model.record(Record::Data(chunk));
        }
    }

    /// Feeds the client's bytes to the server in reads of `read` bytes (0: one read), the
    /// server then seals a little data, and its bytes go to the client.
    fn feed(&mut self, read: usize) {
        let size = if read == 0 { self.wire.len() } else { read };
        self.server_got
            .read_all(&mut self.server, &self.wire, || size);
        self.wire.clear();
        if !matches!(self.server_got.ended, Ended::Failed(_)) {
            // As the relay seals the broker's data, also after the client's close_notify.
            let data = format!("pong {}.", self.sent_back.len());
            self.server
                .seal(data.as_bytes(), &mut self.server_got.tls)
                .expect("the server seals");
            self.sent_back.extend_from_slice(data.as_bytes());
        }
        let tls = std::mem::take(&mut self.server_got.tls);
        self.client_got.read(&mut self.client, &tls);

        match (&self.server_got.ended, &self.client_got.ended) {
            // A refusal is answered with an alert, an alert is not.
            (Ended::Failed(Error::AlertReceived(_)), Ended::Waiting(0)) => {}
            (Ended::Failed(_), Ended::Failed(Error::AlertReceived(_))) => {}
            (Ended::Waiting(_) | Ended::Closed(_), Ended::Waiting(0)) => {}
            (server, client) => panic!("the server ended {server:?}, its client {client:?}"),
        }
        assert!(
            self.client_got.plain == self.sent_back,
            "the client read {} bytes of the {} the server sealed",
            self.client_got.plain.len(),
            self.sent_back.len()
        );

        let (got, model) = (&self.server_got, &self.model);
        if self.corrupted {
            assert!(
                model.plain.starts_with(&got.plain),
                "the server delivered {} bytes that the client did not seal",
                got.plain.len()
            );
            return;
        }
        assert!(
            got.plain == model.plain,
            "the server delivered {} bytes for {} sealed",
            got.plain.len(),
            model.plain.len()
        );
        match got.ended {
            Ended::Closed(_) => assert!(model.closed, "closed early"),
            Ended::Failed(ref error) => assert!(model.refused, "refused: {error:?}"),
            Ended::Waiting(carried) => {
                assert!(!model.closed && !model.refused, "not refused or closed");
                assert_eq!(carried, 0, "whole records were left carried");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let (client, tls12) = client(input.u8());
    let (server, client) = testing::pair(server(), client).expect("the in-memory handshake");
    let mut run = Run {
        server,
        client,
        model: Model::default(),
        tls12,
        corrupted: false,
        wire: Vec::new(),
        server_got: Fed::default(),
        client_got: Fed::default(),
        sent_back: Vec::new(),
    };
    let mut last_read = 0;
    while !input.0.is_empty() {
        if input.0[0] % 7 == 6 {
            last_read = usize::from(u16::from_be_bytes([
                input.0.get(1).copied().unwrap_or(0),
                input.0.get(2).copied().unwrap_or(0),
            ]));
        }
        run.op(&mut input);
    }
    run.feed(last_read);
});
