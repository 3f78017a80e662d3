//! TLS records after the handshake, opened and sealed here rather than by rustls' connection,
//! so that an idle terminated connection holds little more than its keys.
//!
//! Why by hand: a finished rustls connection keeps about 1 KiB of state inline and, for its
//! whole life, one expanded AEAD key per direction (ring's AES-GCM key schedule and GHASH table,
//! about 0.5 KiB each); its `MessageEncrypter` can only be built from an `AeadKey`, which cannot
//! be copied, so the expanded keys cannot be dropped while idle and built again. Here, once the
//! handshake is done, rustls hands over the traffic keys and a `KernelConnection` (the API it
//! offers for kTLS), which stays only to derive the next keys on a KeyUpdate. An idle
//! connection holds the raw keys (at most 32 bytes and a 12-byte IV per direction); ring's
//! expanded key is built for each batch of records (well under a microsecond) and dropped with
//! it.
//!
//! What this implements of RFC 8446 is the record layer after the handshake (§5.2–5.4): AEAD
//! with the per-record nonce (IV xor sequence number) and the record header as additional data,
//! the inner content type after the content and any zero padding, the length limits; alerts
//! (close_notify ends the stream, user_canceled is ignored, any other ends the connection); and
//! KeyUpdate (§4.6.3): the client's is followed, answered when it asks, and sent before the
//! cipher suite's confidentiality limit, as rustls does. Nothing else may follow the handshake
//! from a client that was not asked for post-handshake authentication; it is refused with the
//! alert rustls would send.
//!
//! TLS 1.2 (RFC 5246 §6.2.3.3, RFC 5288, RFC 7905) differs in the record: the content type is
//! the record's own, the additional data is sequence number, type, version and length, and
//! AES-GCM carries an explicit 8-byte nonce in each record (here, as in rustls, the IV xor the
//! sequence number; the peer's is read from its record). TLS 1.2 has no KeyUpdate: at the
//! confidentiality limit the connection ends, as rustls ends it. A client's renegotiation is
//! refused with a fatal alert (HAProxy closes such a connection too); a warning alert is
//! ignored.
//!
//! Suites not listed in [`Records::seals`] stay on rustls' connection.

use ring::aead::{self, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use rustls::crypto::cipher::AeadKey;
use rustls::kernel::KernelConnection;
use rustls::server::ServerConnectionData;
use rustls::{
    AlertDescription, ConnectionTrafficSecrets, ContentType, Error, ExtractedSecrets,
    InvalidMessage, PeerMisbehaved, ProtocolVersion, SupportedCipherSuite,
};
use zeroize::Zeroize;

/// A record header: content type, legacy version, length.
const HEADER: usize = 5;
/// The most content a record carries (2^14).
pub const MAX_PLAINTEXT: usize = 16 * 1024;
/// The longest protected record allowed: content, type, padding and tag within 2^14 + 256.
const MAX_CIPHERTEXT: usize = MAX_PLAINTEXT + 256;
const TAG_LEN: usize = 16;
/// rustls' limit on sequence numbers: keys are updated before it, so they never wrap.
const SEQ_SOFT_LIMIT: u64 = 0xffff_ffff_ffff_0000;
/// TLS 1.2: the longest protected record allowed (2^14 + 2048), and AES-GCM's explicit nonce.
const MAX_CIPHERTEXT_TLS12: usize = MAX_PLAINTEXT + 2048;
const GCM_EXPLICIT_NONCE: usize = 8;
/// The level of an alert that is only a warning (TLS 1.2).
const WARNING: u8 = 1;

const CHANGE_CIPHER_SPEC: u8 = 20;
const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
const APPLICATION_DATA: u8 = 23;
/// The handshake message type of KeyUpdate, and its one-byte body's values.
const KEY_UPDATE: u8 = 24;
const UPDATE_NOT_REQUESTED: u8 = 0;
const UPDATE_REQUESTED: u8 = 1;
/// The alert that ends the stream, and the warning that precedes it (ignored).
const CLOSE_NOTIFY: u8 = 0;
const USER_CANCELED: u8 = 90;

/// What one call of [`Records::open`] found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    /// Bytes of the input taken: whole records (the rest is the start of one).
    pub consumed: usize,
    /// The peer's close_notify arrived; nothing after it was read.
    pub closed: bool,
}

/// The record layer of one TLS 1.3 or 1.2 connection after its handshake. `D` is the side's
/// connection data: the relay is a server; the fuzz target also drives a client.
pub struct Records<D = ServerConnectionData> {
    /// Derives the next traffic keys on a TLS 1.3 KeyUpdate; nothing else. Boxed, and dropped
    /// for TLS 1.2, which has no key update.
    kernel: Option<Box<KernelConnection<D>>>,
    aead: &'static aead::Algorithm,
    /// Records sealed under one key before it is updated.
    limit: u64,
    rx: Keys,
    tx: Keys,
    /// The peer's close_notify arrived: nothing after it is opened.
    closed: bool,
    /// TLS 1.2 records (else TLS 1.3).
    tls12: bool,
}

/// One direction's traffic key, IV and next sequence number.
struct Keys {
    key: [u8; 32],
    iv: [u8; NONCE_LEN],
    seq: u64,
}

impl Drop for Keys {
    fn drop(&mut self) {
        self.key.zeroize();
        self.iv.zeroize();
    }
}

impl Keys {
    /// Keys from what rustls derived, with the AEAD they are for.
    fn new(
        (seq, secrets): (u64, ConnectionTrafficSecrets),
    ) -> Result<(&'static aead::Algorithm, Keys), Error> {
        let (aead, key, iv) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&aead::CHACHA20_POLY1305, key, iv)
            }
            _ => return Err(Error::General("an AEAD brokerside does not seal".into())),
        };
        let mut keys = Keys {
            key: [0; 32],
            iv: [0; NONCE_LEN],
            seq,
        };
        let bytes: &[u8] = AeadKey::as_ref(&key);
        if bytes.len() != aead.key_len() || iv.as_ref().len() != NONCE_LEN {
            return Err(Error::General("traffic keys of an unexpected size".into()));
        }
        keys.key[..bytes.len()].copy_from_slice(bytes);
        keys.iv.copy_from_slice(iv.as_ref());
        Ok((aead, keys))
    }

    /// ring's key, expanded for a batch of records.
    fn expand(&self, aead: &'static aead::Algorithm) -> Result<LessSafeKey, Error> {
        UnboundKey::new(aead, &self.key[..aead.key_len()])
            .map(LessSafeKey::new)
            .map_err(|_| Error::General("ring refused a traffic key".into()))
    }

    /// The next record's nonce (RFC 8446 §5.3) and sequence number; the sequence number moves
    /// on.
    fn next_nonce(&mut self) -> Result<([u8; NONCE_LEN], u64), Error> {
        if self.seq >= SEQ_SOFT_LIMIT {
            return Err(Error::EncryptError);
        }
        let mut nonce = self.iv;
        for (n, s) in nonce[NONCE_LEN - 8..]
            .iter_mut()
            .zip(self.seq.to_be_bytes())
        {
            *n ^= s;
        }
        self.seq += 1;
        Ok((nonce, self.seq - 1))
    }
}

impl Records<ServerConnectionData> {
    /// Takes over a finished server connection, or gives it back (a suite sealed only by rustls)
    /// to stay on rustls. Secret extraction must be enabled in its config.
    #[allow(clippy::result_large_err)]
    pub fn take_over(
        conn: rustls::server::UnbufferedServerConnection,
    ) -> Result<Result<Records, Error>, rustls::server::UnbufferedServerConnection> {
        if !Self::seals(conn.protocol_version(), conn.negotiated_cipher_suite()) {
            return Err(conn);
        }
        Ok(conn
            .dangerous_into_kernel_connection()
            .and_then(|(secrets, kernel)| Records::new(secrets, kernel)))
    }
}

impl<D> Records<D> {
    /// Whether a connection of this version and suite is sealed here.
    pub fn seals(version: Option<ProtocolVersion>, suite: Option<SupportedCipherSuite>) -> bool {
        use rustls::CipherSuite::*;
        match (version, suite.map(|s| s.suite())) {
            (Some(ProtocolVersion::TLSv1_3), Some(suite)) => matches!(
                suite,
                TLS13_AES_128_GCM_SHA256
                    | TLS13_AES_256_GCM_SHA384
                    | TLS13_CHACHA20_POLY1305_SHA256
            ),
            (Some(ProtocolVersion::TLSv1_2), Some(suite)) => matches!(
                suite,
                TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                    | TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
                    | TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
                    | TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
                    | TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
                    | TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
            ),
            _ => false,
        }
    }

    /// The record layer of a connection from its secrets and kernel connection.
    pub fn new(secrets: ExtractedSecrets, kernel: KernelConnection<D>) -> Result<Self, Error> {
        let (tls12, common) = match kernel.negotiated_cipher_suite() {
            SupportedCipherSuite::Tls13(suite) => (false, &suite.common),
            SupportedCipherSuite::Tls12(suite) => (true, &suite.common),
        };
        let (aead, rx) = Keys::new(secrets.rx)?;
        let (_, tx) = Keys::new(secrets.tx)?;
        Ok(Records {
            // TLS 1.2 has no key update: nothing to keep the kernel connection for.
            kernel: (!tls12).then(|| Box::new(kernel)),
            aead,
            limit: common.confidentiality_limit.min(SEQ_SOFT_LIMIT),
            rx,
            tx,
            closed: false,
            tls12,
        })
    }

    /// Lowers the number of records sealed under one key before it is updated, so that a test
    /// can reach the limit.
    #[doc(hidden)]
    pub fn set_key_limit(&mut self, limit: u64) {
        self.limit = limit.min(self.limit);
    }

    /// Opens the whole records at the start of `incoming` (in place): application data is
    /// appended to `plain`; what the connection answers (a KeyUpdate) is sealed into `tls`.
    /// Stops at the first partial record or after close_notify; once close_notify has come, a
    /// call opens nothing (and says `closed` again). A record that must be refused ends the
    /// connection: the alert for it is sealed into `tls`, to be sent before closing.
    pub fn open(
        &mut self,
        incoming: &mut [u8],
        plain: &mut Vec<u8>,
        tls: &mut Vec<u8>,
    ) -> Result<Opened, Error> {
        let mut opened = Opened {
            consumed: 0,
            closed: self.closed,
        };
        let mut key: Option<LessSafeKey> = None;
        let mut answer = false;
        while !opened.closed {
            let rest = &mut incoming[opened.consumed..];
            let Some((header, body)) = rest.split_first_chunk_mut::<HEADER>() else {
                break;
            };
            let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
            let wire_type = header[0];
            let allowed = match self.tls12 {
                true => matches!(wire_type, ALERT | HANDSHAKE | APPLICATION_DATA),
                false => wire_type == APPLICATION_DATA,
            };
            if !allowed {
                let error = if header[0] == CHANGE_CIPHER_SPEC {
                    PeerMisbehaved::IllegalMiddleboxChangeCipherSpec.into()
                } else {
                    Error::InappropriateMessage {
                        expect_types: vec![ContentType::ApplicationData],
                        got_type: ContentType::from(header[0]),
                    }
                };
                return Err(self.refuse(tls, AlertDescription::UnexpectedMessage, error));
            }
            if len
                > if self.tls12 {
                    MAX_CIPHERTEXT_TLS12
                } else {
                    MAX_CIPHERTEXT
                }
            {
                let error = InvalidMessage::MessageTooLarge.into();
                return Err(self.refuse(tls, AlertDescription::RecordOverflow, error));
            }
            let Some(record) = body.get_mut(..len) else {
                break;
            };
            let opener = match &mut key {
                Some(key) => key,
                empty => empty.insert(self.rx.expand(self.aead)?),
            };
            let (nonce, seq) = self.rx.next_nonce()?;
            let opened_record = match self.tls12 {
                true => open_tls12(opener, *header, record, nonce, seq),
                false => opener
                    .open_in_place(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(*header),
                        record,
                    )
                    .map_err(|_| ()),
            };
            let Ok(inner) = opened_record else {
                return Err(self.refuse(tls, AlertDescription::BadRecordMac, Error::DecryptError));
            };
            opened.consumed += HEADER + len;
            // RFC 8446 §5.4: content, type and padding within 2^14 + 1 bytes; RFC 5246: content
            // within 2^14.
            if inner.len() > MAX_PLAINTEXT + usize::from(!self.tls12) {
                let error = InvalidMessage::MessageTooLarge.into();
                return Err(self.refuse(tls, AlertDescription::RecordOverflow, error));
            }
            let (content, typ) = if self.tls12 {
                (&inner[..], wire_type)
            } else {
                // The content type is the last byte that is not padding.
                let Some(end) = inner.iter().rposition(|&b| b != 0) else {
                    let error = PeerMisbehaved::IllegalTlsInnerPlaintext.into();
                    return Err(self.refuse(tls, AlertDescription::UnexpectedMessage, error));
                };
                (&inner[..end], inner[end])
            };
            match typ {
                APPLICATION_DATA => plain.extend_from_slice(content),
                ALERT => match *content {
                    [_, CLOSE_NOTIFY] => (self.closed, opened.closed) = (true, true),
                    [_, USER_CANCELED] => {}
                    [WARNING, _] if self.tls12 => {}
                    [_, description] => return Err(Error::AlertReceived(description.into())),
                    _ => {
                        let error = InvalidMessage::InvalidContentType.into();
                        return Err(self.refuse(tls, AlertDescription::DecodeError, error));
                    }
                },
                HANDSHAKE if self.tls12 => {
                    let error = Error::InappropriateHandshakeMessage {
                        expect_types: Vec::new(),
                        got_type: content
                            .first()
                            .map_or(rustls::HandshakeType::Unknown(0), |&t| t.into()),
                    };
                    return Err(self.refuse(tls, AlertDescription::UnexpectedMessage, error));
                }
                HANDSHAKE => {
                    // Only a KeyUpdate may come, alone in its record: keys change after it
                    // (§4.6.3), so nothing may follow it in the record, and a 5-byte message
                    // split over records is not worth joining.
                    let requested = match *content {
                        [KEY_UPDATE, 0, 0, 1, UPDATE_NOT_REQUESTED] => false,
                        [KEY_UPDATE, 0, 0, 1, UPDATE_REQUESTED] => true,
                        [KEY_UPDATE, ..] => {
                            let error = InvalidMessage::InvalidKeyUpdate.into();
                            return Err(self.refuse(tls, AlertDescription::DecodeError, error));
                        }
                        _ => {
                            let error = Error::InappropriateHandshakeMessage {
                                expect_types: vec![rustls::HandshakeType::KeyUpdate],
                                got_type: content
                                    .first()
                                    .map_or(rustls::HandshakeType::Unknown(0), |&t| t.into()),
                            };
                            return Err(self.refuse(
                                tls,
                                AlertDescription::UnexpectedMessage,
                                error,
                            ));
                        }
                    };
                    // One answer however many records asked in this batch, as rustls queues
                    // one: a client that asks and never reads cannot make answers pile up.
                    answer |= requested;
                    (_, self.rx) = Keys::new(self.kernel()?.update_rx_secret()?)?;
                    key = None;
                }
                _ => {
                    let error = Error::InappropriateMessage {
                        expect_types: vec![ContentType::ApplicationData],
                        got_type: ContentType::from(typ),
                    };
                    return Err(self.refuse(tls, AlertDescription::UnexpectedMessage, error));
                }
            }
        }
        if answer {
            let mut key = self.tx.expand(self.aead)?;
            self.update_tx(&mut key, tls)?;
        }
        Ok(opened)
    }

    /// Seals `data` as application data records into `tls`.
    pub fn seal(&mut self, data: &[u8], tls: &mut Vec<u8>) -> Result<(), Error> {
        if data.is_empty() {
            return Ok(());
        }
        let mut key = self.tx.expand(self.aead)?;
        for chunk in data.chunks(MAX_PLAINTEXT) {
            if self.tx.seq >= self.limit {
                if self.tls12 {
                    // No KeyUpdate in TLS 1.2: the connection ends, as rustls ends it.
                    return Err(Error::EncryptError);
                }
                self.update_tx(&mut key, tls)?;
            }
            self.seal_record(&key, APPLICATION_DATA, chunk, tls)?;
        }
        Ok(())
    }

    /// Seals a close_notify alert into `tls`.
    pub fn seal_close_notify(&mut self, tls: &mut Vec<u8>) -> Result<(), Error> {
        let key = self.tx.expand(self.aead)?;
        self.seal_record(&key, ALERT, &[1, CLOSE_NOTIFY], tls)
    }

    /// Seals one record of `typ` with any content, for the fuzz target's client, which must
    /// be able to send what a real client would not.
    #[doc(hidden)]
    pub fn seal_raw(&mut self, typ: u8, content: &[u8], tls: &mut Vec<u8>) -> Result<(), Error> {
        let key = self.tx.expand(self.aead)?;
        self.seal_record(&key, typ, content, tls)
    }

    /// Sends a KeyUpdate sealed under the current sending key, then updates it (RFC 8446
    /// §4.6.3); `key` becomes the new key.
    fn update_tx(&mut self, key: &mut LessSafeKey, tls: &mut Vec<u8>) -> Result<(), Error> {
        self.send_key_update(key, UPDATE_NOT_REQUESTED, tls)?;
        *key = self.tx.expand(self.aead)?;
        Ok(())
    }

    /// Sends a KeyUpdate that asks the peer to update its keys too: for the fuzz target's
    /// client, to make its peer answer.
    #[doc(hidden)]
    pub fn request_key_update(&mut self, tls: &mut Vec<u8>) -> Result<(), Error> {
        let key = self.tx.expand(self.aead)?;
        self.send_key_update(&key, UPDATE_REQUESTED, tls)
    }

    fn send_key_update(
        &mut self,
        key: &LessSafeKey,
        request: u8,
        tls: &mut Vec<u8>,
    ) -> Result<(), Error> {
        if self.tls12 {
            return Err(Error::General("TLS 1.2 has no key update".into()));
        }
        self.seal_record(key, HANDSHAKE, &[KEY_UPDATE, 0, 0, 1, request], tls)?;
        (_, self.tx) = Keys::new(self.kernel()?.update_tx_secret()?)?;
        Ok(())
    }

    /// What derives the next keys (TLS 1.3 only).
    fn kernel(&mut self) -> Result<&mut KernelConnection<D>, Error> {
        self.kernel
            .as_deref_mut()
            .ok_or_else(|| Error::General("TLS 1.2 has no key update".into()))
    }

    /// One record: header, content, inner type (TLS 1.3) or explicit nonce (TLS 1.2 AES-GCM),
    /// tag.
    fn seal_record(
        &mut self,
        key: &LessSafeKey,
        typ: u8,
        content: &[u8],
        tls: &mut Vec<u8>,
    ) -> Result<(), Error> {
        let explicit = if self.tls12 && self.aead != &aead::CHACHA20_POLY1305 {
            GCM_EXPLICIT_NONCE
        } else {
            0
        };
        let len = explicit + content.len() + usize::from(!self.tls12) + TAG_LEN;
        let Ok(len16) = u16::try_from(len) else {
            return Err(Error::EncryptError);
        };
        let (nonce, seq) = self.tx.next_nonce()?;
        let [hi, lo] = len16.to_be_bytes();
        let header = [
            if self.tls12 { typ } else { APPLICATION_DATA },
            3,
            3,
            hi,
            lo,
        ];
        let start = tls.len();
        tls.reserve(HEADER + len);
        tls.extend_from_slice(&header);
        tls.extend_from_slice(&nonce[NONCE_LEN - explicit..]);
        tls.extend_from_slice(content);
        let mut aad = [0; TLS12_AAD];
        let aad = if self.tls12 {
            aad = tls12_aad(seq, typ, [3, 3], content.len());
            &aad[..]
        } else {
            tls.push(typ);
            aad[..HEADER].copy_from_slice(&header);
            &aad[..HEADER]
        };
        let nonce = Nonce::assume_unique_for_key(nonce);
        let tag = key
            .seal_in_place_separate_tag(
                nonce,
                Aad::from(aad),
                &mut tls[start + HEADER + explicit..],
            )
            .map_err(|_| Error::EncryptError)?;
        tls.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// Seals the fatal alert for `error` into `tls` (best effort) and gives `error` back.
    fn refuse(&mut self, tls: &mut Vec<u8>, alert: AlertDescription, error: Error) -> Error {
        if let Ok(key) = self.tx.expand(self.aead) {
            let _ = self.seal_record(&key, ALERT, &[2, u8::from(alert)], tls);
        }
        error
    }
}

/// TLS 1.2's additional data: sequence number, type, version, content length.
const TLS12_AAD: usize = 8 + 1 + 2 + 2;

fn tls12_aad(seq: u64, typ: u8, version: [u8; 2], len: usize) -> [u8; TLS12_AAD] {
    let mut aad = [0; TLS12_AAD];
    aad[..8].copy_from_slice(&seq.to_be_bytes());
    aad[8] = typ;
    aad[9..11].copy_from_slice(&version);
    // At most 2^14 + 2048: a record's length fits in its two bytes.
    aad[11..].copy_from_slice(&(len as u16).to_be_bytes());
    aad
}

/// Opens a TLS 1.2 record in place: AES-GCM takes its nonce's last 8 bytes from the record
/// (RFC 5288 §3), ChaCha20-Poly1305 uses the IV xor the sequence number (RFC 7905 §2).
fn open_tls12<'a>(
    key: &LessSafeKey,
    header: [u8; HEADER],
    record: &'a mut [u8],
    mut nonce: [u8; NONCE_LEN],
    seq: u64,
) -> Result<&'a mut [u8], ()> {
    let explicit = if key.algorithm() == &aead::CHACHA20_POLY1305 {
        0
    } else {
        GCM_EXPLICIT_NONCE
    };
    let Some(len) = record.len().checked_sub(explicit + TAG_LEN) else {
        return Err(());
    };
    nonce[NONCE_LEN - explicit..].copy_from_slice(&record[..explicit]);
    let aad = tls12_aad(seq, header[0], [header[1], header[2]], len);
    let nonce = Nonce::assume_unique_for_key(nonce);
    key.open_within(nonce, Aad::from(aad), record, explicit..)
        .map_err(|_| ())
}
