//! TLS termination on the relay path: the handshake, then a relay that decrypts what the client
//! sends and encrypts what the broker answers, with rustls' unbuffered API.
//!
//! rustls' buffered `ServerConnection` keeps a 4 KiB deframer buffer and a send queue inside
//! every connection (rustls#794, #1362): several KiB for each of hundreds of thousands of idle
//! MQTT connections. The unbuffered API lets the caller own the buffers, so here, as on the
//! plain path, an idle connection holds no buffer: client bytes are read into a per-thread
//! buffer and decrypted from there, broker bytes are read a record at a time into another and
//! encrypted into a third. Only bytes a side cannot take yet are kept, in a vector of their own
//! that is freed once sent: a partial record from the client, plaintext the broker is behind
//! on, or (at most one record of) ciphertext a client that does not read is behind on.
//!
//! Once the handshake is done, a connection leaves rustls' connection for the record layer of
//! `tls/record.rs`, which holds only the raw traffic keys while idle (see there for why); a
//! suite that layer does not seal stays on rustls.
//!
//! A close_notify from the client is a FIN to the broker; a FIN from the broker is a
//! close_notify and a FIN to the client; resets end the other side as on the plain path.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use rustls::server::{ServerConfig, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::relay::{Counters, Failure, RelayEnd, Side, Timeouts, Timer};
use crate::metrics::HandshakeFailure;
use crate::mqtt::ConnectSource;
use crate::net::memory_wait::{MemoryWait, send_now};
use crate::net::socket::shutdown_write;
use crate::tls::record::Records;

/// Client bytes read per call.
const TLS_READ: usize = 64 * 1024;
/// The most a partial record carried between reads can hold: one record on the wire (16 KiB
/// of payload, 2 KiB of expansion, the 5-byte header).
const MAX_CARRY: usize = 16 * 1024 + 2048 + 5;
/// Broker bytes read per call: one full TLS record, so that a client that does not read leaves
/// at most one record queued here beyond its socket.
const RECORD_PLAINTEXT: usize = 16 * 1024;
/// Bytes read per call during the handshake (a ClientHello, a client certificate chain).
const HANDSHAKE_READ: usize = 8 * 1024;
/// Reads per direction before yielding, so a bulk stream cannot starve other connections.
const READS_PER_POLL: usize = 16;

thread_local! {
    /// Client TLS bytes: the carried partial record first, then the new read.
    static INCOMING: RefCell<Box<[u8]>> =
        RefCell::new(vec![0; MAX_CARRY + TLS_READ].into_boxed_slice());
    /// Plaintext read from the broker.
    static PLAIN: RefCell<Box<[u8]>> = RefCell::new(vec![0; RECORD_PLAINTEXT].into_boxed_slice());
    /// What processing produced: plaintext for the broker, TLS bytes for the client.
    static OUTPUT: RefCell<Output> = RefCell::new(Output::default());
}

/// Scratch space for one round of processing; emptied (capacity kept) after each.
#[derive(Default)]
struct Output {
    plain: Vec<u8>,
    tls: Vec<u8>,
}

/// What one round of processing found.
#[derive(Default)]
struct Progress {
    /// Bytes of the input fully processed (the rest is a partial record).
    consumed: usize,
    /// The client's close_notify arrived.
    peer_closed: bool,
    /// What was asked to be sent was encrypted.
    sent: bool,
}

/// What to encrypt once the connection may send.
#[derive(Clone, Copy)]
enum Send<'a> {
    Nothing,
    Data(&'a [u8]),
    CloseNotify,
}

/// A TLS failure, and how much of the input was processed before it: the next call (the one
/// that fetches the alert rustls queued) must be given the rest of the same input, because
/// rustls keeps positions in it while it joins a handshake message that spans records.
struct Failed {
    error: rustls::Error,
    consumed: usize,
}

/// Processes `incoming` (client TLS bytes) as far as it goes: decrypted application data is
/// appended to `out.plain`, TLS bytes for the client (handshake, alerts, key updates) to
/// `out.tls`; `send` is encrypted into `out.tls` once the connection may send. `incoming` must
/// start where the previous call's input stopped being consumed.
fn process(
    conn: &mut UnbufferedServerConnection,
    incoming: &mut [u8],
    out: &mut Output,
    send: Send<'_>,
) -> Result<Progress, Failed> {
    let mut progress = Progress::default();
    loop {
        let status = conn.process_tls_records(&mut incoming[progress.consumed..]);
        let discard = status.discard;
        let failed = |error, progress: &Progress| Failed {
            error,
            consumed: progress.consumed + discard,
        };
        let state = match status.state {
            Ok(state) => state,
            Err(error) => return Err(failed(error, &progress)),
        };
        let mut done = false;
        match state {
            ConnectionState::ReadTraffic(mut traffic) => {
                while let Some(record) = traffic.next_record() {
                    match record {
                        Ok(record) => out.plain.extend_from_slice(record.payload),
                        Err(error) => return Err(failed(error, &progress)),
                    }
                }
            }
            ConnectionState::ReadEarlyData(mut early) => {
                while let Some(record) = early.next_record() {
                    match record {
                        Ok(record) => out.plain.extend_from_slice(record.payload),
                        Err(error) => return Err(failed(error, &progress)),
                    }
                }
            }
            ConnectionState::EncodeTlsData(mut encode) => {
                grow_into(&mut out.tls, |buf| match encode.encode(buf) {
                    Ok(n) => Ok(n),
                    Err(EncodeError::InsufficientSize(e)) => Err(Some(e.required_size)),
                    Err(EncodeError::AlreadyEncoded) => Err(None),
                })
                .map_err(|error| failed(error, &progress))?;
            }
            // The bytes are in `out.tls`; the caller sends them before anything else.
            ConnectionState::TransmitTlsData(transmit) => transmit.done(),
            ConnectionState::PeerClosed => progress.peer_closed = true,
            ConnectionState::WriteTraffic(mut write) => {
                match send {
                    Send::Nothing => {}
                    Send::Data(data) => {
                        grow_into(&mut out.tls, |buf| encrypted(write.encrypt(data, buf)))
                            .map_err(|error| failed(error, &progress))?;
                    }
                    Send::CloseNotify => {
                        grow_into(&mut out.tls, |buf| encrypted(write.queue_close_notify(buf)))
                            .map_err(|error| failed(error, &progress))?;
                    }
                }
                progress.sent = true;
                done = true;
            }
            // Needs more bytes from the client, or both sides have closed.
            _ => done = true,
        }
        progress.consumed += discard;
        if done {
            return Ok(progress);
        }
    }
}

/// The alert rustls queued when it refused the client: one more call hands it out before
/// anything else. Only that one call: going on would process more of the client's bytes on a
/// connection that has already failed.
fn queued_alert(conn: &mut UnbufferedServerConnection, rest: &mut [u8]) -> Option<Vec<u8>> {
    let status = conn.process_tls_records(rest);
    let Ok(ConnectionState::EncodeTlsData(mut encode)) = status.state else {
        return None;
    };
    let mut alert = Vec::new();
    grow_into(&mut alert, |buf| encode.encode(buf).map_err(|_| None)).ok()?;
    Some(alert)
}

fn encrypted(result: Result<usize, EncryptError>) -> Result<usize, Option<usize>> {
    match result {
        Ok(n) => Ok(n),
        Err(EncryptError::InsufficientSize(e)) => Err(Some(e.required_size)),
        Err(_) => Err(None),
    }
}

/// Runs `write` on free space at the end of `out`, growing it to the size `write` asks for.
fn grow_into(
    out: &mut Vec<u8>,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, Option<usize>>,
) -> Result<(), rustls::Error> {
    let start = out.len();
    let mut room = 4096;
    loop {
        out.resize(start + room, 0);
        match write(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(Some(required)) if required > room => room = required,
            Err(_) => {
                out.truncate(start);
                return Err(rustls::Error::General("cannot encode a TLS record".into()));
            }
        }
    }
}

/// The TLS state of a relayed connection, boxed: the relay stays small whichever it is.
enum Session {
    /// Records opened and sealed by `tls/record.rs` (see `Records::seals`).
    Records(Box<Records>),
    /// A suite sealed only by rustls.
    Rustls(Box<UnbufferedServerConnection>),
}

impl Session {
    /// Takes the finished handshake's connection over, to `tls/record.rs` where it can.
    fn start(conn: UnbufferedServerConnection) -> Result<Session, rustls::Error> {
        match Records::take_over(conn) {
            Ok(records) => Ok(Session::Records(Box::new(records?))),
            Err(conn) => Ok(Session::Rustls(Box::new(conn))),
        }
    }

    /// [`process`] for either kind of state.
    fn process(
        &mut self,
        incoming: &mut [u8],
        out: &mut Output,
        send: Send<'_>,
    ) -> Result<Progress, Failed> {
        let records = match self {
            Session::Rustls(conn) => return process(conn, incoming, out, send),
            Session::Records(records) => records,
        };
        // The alert for a refused record is already in `out.tls`: nothing is left to fetch.
        let failed = |error| Failed { error, consumed: 0 };
        let opened = records
            .open(incoming, &mut out.plain, &mut out.tls)
            .map_err(failed)?;
        match send {
            Send::Nothing => Ok(()),
            Send::Data(data) => records.seal(data, &mut out.tls),
            Send::CloseNotify => records.seal_close_notify(&mut out.tls),
        }
        .map_err(failed)?;
        Ok(Progress {
            consumed: opened.consumed,
            peer_closed: opened.closed,
            sent: true,
        })
    }
}

/// A finished handshake: the connection, and what came with it.
pub(crate) struct Handshaken {
    /// The TLS state, ready for application data.
    pub(crate) conn: UnbufferedServerConnection,
    /// Client bytes received after the handshake, not yet a whole record.
    carried: Vec<u8>,
    /// Application data that arrived with the handshake (an MQTT CONNECT sent at once).
    pub(crate) early: Vec<u8>,
    /// The client sent close_notify already.
    peer_closed: bool,
}

impl Handshaken {
    /// The verified client certificate's common name, if the client sent one.
    pub(crate) fn client_cn(&self) -> Option<String> {
        let certificate = self.conn.peer_certificates()?.first()?;
        crate::tls::material::common_name(certificate)
    }

    /// Whether the client resumed a session (with a ticket) rather than doing a full handshake.
    pub(crate) fn resumed(&self) -> bool {
        self.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
    }

    /// The TLS version as OpenSSL names it (`TLSv1.3`), for the PROXY v2 SSL TLV.
    pub(crate) fn version_name(&self) -> &'static str {
        match self.conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "TLSv1.3",
        }
    }
}

/// A handshake that failed: the bounded reason and what happened.
pub(crate) struct HandshakeError {
    pub(crate) reason: HandshakeFailure,
    pub(crate) error: String,
}

impl HandshakeError {
    fn eof(error: impl ToString) -> HandshakeError {
        HandshakeError {
            reason: HandshakeFailure::Eof,
            error: error.to_string(),
        }
    }
}

/// Runs the server side of a TLS handshake on `client` with `server`. A failure sends the
/// client the alert rustls chose (best effort) and says why.
pub(crate) async fn handshake(
    client: &mut TcpStream,
    server: Arc<ServerConfig>,
) -> Result<Handshaken, HandshakeError> {
    let mut conn = UnbufferedServerConnection::new(server).map_err(|e| HandshakeError {
        reason: HandshakeFailure::Protocol,
        error: e.to_string(),
    })?;
    let mut buf: Vec<u8> = Vec::new();
    let mut out = Output::default();
    loop {
        buf.reserve(HANDSHAKE_READ);
        client.readable().await.map_err(HandshakeError::eof)?;
        match client.try_read_buf(&mut buf) {
            Ok(0) => return Err(HandshakeError::eof("the client closed the connection")),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(HandshakeError::eof(e)),
        }
        let processed = process(&mut conn, &mut buf, &mut out, Send::Nothing);
        if !out.tls.is_empty() {
            // An alert after a failure is sent as far as the socket takes it at once.
            let sent = if processed.is_ok() {
                client.write_all(&out.tls).await
            } else {
                client.try_write(&out.tls).map(|_| ())
            };
            out.tls.clear();
            if let (Err(e), Ok(_)) = (sent, &processed) {
                return Err(HandshakeError::eof(e));
            }
        }
        let progress = match processed {
            Ok(progress) => progress,
            Err(Failed { error, consumed }) => {
                // The alert rustls queued for this failure comes out of one more round.
                let rest = buf.get_mut(consumed..).unwrap_or_default();
                if let Some(alert) = queued_alert(&mut conn, rest) {
                    let _ = client.try_write(&alert);
                }
                return Err(HandshakeError {
                    reason: HandshakeFailure::of(&error),
                    error: error.to_string(),
                });
            }
        };
        buf.drain(..progress.consumed);
        if !conn.is_handshaking() {
            buf.shrink_to_fit();
            return Ok(Handshaken {
                conn,
                carried: buf,
                early: out.plain,
                peer_closed: progress.peer_closed,
            });
        }
        if progress.peer_closed || buf.len() > 64 * 1024 {
            return Err(HandshakeError::eof("the client ended the handshake"));
        }
    }
}

/// Bytes one side is behind on: boxed, and there only while it is, because every idle TLS
/// connection carries two of these (a bare vector and offset would be 32 bytes each, and push
/// the relay past an allocator size class).
#[derive(Default)]
struct Pending(Option<Box<Owed>>);

struct Owed {
    bytes: Vec<u8>,
    sent: usize,
    /// Retries where the kernel refused a write for want of memory (no wake-up would come).
    wait: MemoryWait,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// Sends `data` after what is already owed: straight to `dst` when nothing is, keeping what
    /// it does not take. Returns the bytes sent now.
    fn send(&mut self, data: &[u8], dst: &TcpStream) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        if let Some(owed) = &mut self.0 {
            owed.bytes.extend_from_slice(data);
            return Ok(0);
        }
        let sent = match dst.try_write(data) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(e),
        };
        if sent < data.len() {
            self.0 = Some(Box::new(Owed {
                bytes: data[sent..].to_vec(),
                sent: 0,
                wait: MemoryWait::default(),
            }));
        }
        Ok(sent)
    }

    /// Writes what is owed until it is all sent (Ready with the bytes written) or `dst` would
    /// block.
    fn poll_flush(&mut self, cx: &mut Context<'_>, dst: &mut TcpStream) -> Poll<io::Result<usize>> {
        let Some(owed) = &mut self.0 else {
            return Poll::Ready(Ok(0));
        };
        let start = owed.sent;
        while owed.sent < owed.bytes.len() {
            let n = match Pin::new(&mut *dst).poll_write(cx, &owed.bytes[owed.sent..]) {
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending if owed.sent > start => break,
                Poll::Pending => {
                    ready!(owed.wait.poll_retry(cx, dst));
                    match send_now(dst, &owed.bytes[owed.sent..]) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                }
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            owed.wait.clear();
            owed.sent += n;
        }
        let written = owed.sent - start;
        if owed.sent == owed.bytes.len() {
            // Sent: give the memory back, so an idle connection holds none.
            self.0 = None;
        }
        Poll::Ready(Ok(written))
    }
}

/// One direction's end: its source ended, and the end was passed on.
#[derive(Default, Clone, Copy)]
struct Flow {
    eof: bool,
    fin_sent: bool,
}

fn fail<T>(side: Side, error: io::Error) -> Result<T, Failure> {
    Err(Failure { side, error })
}

fn tls_failure(failed: Failed) -> Failure {
    Failure {
        side: Side::Client,
        error: io::Error::new(io::ErrorKind::InvalidData, failed.error),
    }
}

/// The relay of one terminated connection. Boxed by the connection: it is larger than a plain
/// relay, and only TLS connections pay for it.
pub(crate) struct TlsRelay {
    client: TcpStream,
    backend: TcpStream,
    session: Session,
    /// Client TLS bytes received but not yet a whole record.
    carried: Vec<u8>,
    /// Plaintext the broker has not taken yet.
    to_backend: Pending,
    /// TLS bytes the client has not taken yet.
    to_client: Pending,
    up: Flow,
    down: Flow,
    /// Bytes moved since the timer last looked.
    moved: bool,
    half_close: Option<Duration>,
    timer: Option<Pin<Box<Timer>>>,
}

impl TlsRelay {
    /// A relay between the client of `session` and `backend`; what arrived with the handshake
    /// must already have been sent to `backend`. Fails only if rustls will not hand a finished
    /// connection over.
    pub(crate) fn new(
        client: TcpStream,
        backend: TcpStream,
        session: Handshaken,
        timeouts: Timeouts,
    ) -> Result<TlsRelay, (io::Error, TcpStream, TcpStream)> {
        let tls = match Session::start(session.conn) {
            Ok(tls) => tls,
            Err(e) => {
                return Err((
                    io::Error::new(io::ErrorKind::InvalidData, e),
                    client,
                    backend,
                ));
            }
        };
        Ok(TlsRelay {
            client,
            backend,
            session: tls,
            carried: session.carried,
            to_backend: Pending::default(),
            to_client: Pending::default(),
            up: Flow {
                eof: session.peer_closed,
                fin_sent: false,
            },
            down: Flow::default(),
            moved: false,
            half_close: timeouts.half_close,
            timer: timeouts.idle.map(|idle| Timer::new(Some(idle))),
        })
    }

    /// The client's socket.
    pub(crate) fn client(&self) -> &TcpStream {
        &self.client
    }

    /// The backend's socket.
    pub(crate) fn backend(&self) -> &TcpStream {
        &self.backend
    }

    /// Moves bytes both ways until both directions have ended, one side resets, TLS fails, or a
    /// timeout is due.
    pub(crate) fn poll_relay(
        &mut self,
        cx: &mut Context<'_>,
        counters: Counters<'_>,
    ) -> Poll<RelayEnd> {
        match ready!(self.poll_inner(cx, &counters)) {
            Ok(end) => Poll::Ready(end),
            Err(failure) => Poll::Ready(failure.end(&self.backend)),
        }
    }

    fn poll_inner(
        &mut self,
        cx: &mut Context<'_>,
        counters: &Counters<'_>,
    ) -> Poll<Result<RelayEnd, Failure>> {
        let mut rounds = 0;
        loop {
            let mut progressed = false;
            if !self.to_client.is_empty() {
                match self.to_client.poll_flush(cx, &mut self.client) {
                    Poll::Ready(Ok(_)) => progressed = true,
                    Poll::Ready(Err(e)) => return Poll::Ready(fail(Side::Client, e)),
                    Poll::Pending => {}
                }
            }
            if self.down.eof && !self.down.fin_sent && self.to_client.is_empty() {
                shutdown_write(&self.client);
                self.down.fin_sent = true;
                progressed = true;
            }
            if !self.to_backend.is_empty() {
                match self.to_backend.poll_flush(cx, &mut self.backend) {
                    Poll::Ready(Ok(n)) => {
                        counters.to_backend.inc_by(n as u64);
                        progressed = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(fail(Side::Backend, e)),
                    Poll::Pending => {}
                }
            }
            if self.up.eof && !self.up.fin_sent && self.to_backend.is_empty() {
                shutdown_write(&self.backend);
                self.up.fin_sent = true;
                progressed = true;
            }
            if !self.up.eof
                && self.to_backend.is_empty()
                && let Poll::Ready(result) = self.read_client(cx, counters)
            {
                result?;
                progressed = true;
            }
            if !self.down.eof
                && self.to_client.is_empty()
                && let Poll::Ready(result) = self.read_backend(cx, counters)
            {
                result?;
                progressed = true;
            }
            if self.up.fin_sent && self.down.fin_sent {
                return Poll::Ready(Ok(RelayEnd::Closed));
            }
            self.moved |= progressed;
            rounds += 1;
            if !progressed {
                break;
            }
            if rounds == READS_PER_POLL {
                // Budget spent with data still flowing: let other connections run, then come back.
                cx.waker().wake_by_ref();
                break;
            }
        }
        if (self.up.fin_sent || self.down.fin_sent)
            && let Some(timeout) = self.half_close.take()
        {
            let timer = self.timer.get_or_insert_with(|| Timer::new(None));
            timer.as_mut().arm_half_close(timeout);
        }
        if let Some(timer) = &mut self.timer
            && let Some(end) = timer.as_mut().poll_due(cx, std::mem::take(&mut self.moved))
        {
            return Poll::Ready(Ok(end));
        }
        Poll::Pending
    }

    /// One read of client TLS bytes, decrypted and passed on. Pending when the client has
    /// nothing to read (the waker registered).
    fn read_client(
        &mut self,
        cx: &mut Context<'_>,
        counters: &Counters<'_>,
    ) -> Poll<Result<(), Failure>> {
        INCOMING.with_borrow_mut(|buf| {
            let carried = self.carried.len();
            if carried > MAX_CARRY {
                return Poll::Ready(fail(
                    Side::Client,
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a TLS record longer than the protocol allows",
                    ),
                ));
            }
            let mut read_buf = ReadBuf::new(&mut buf[carried..carried + TLS_READ]);
            match ready!(Pin::new(&mut self.client).poll_read(cx, &mut read_buf)) {
                Ok(()) if read_buf.filled().is_empty() => {
                    // A FIN without close_notify: the broker gets a FIN all the same.
                    self.up.eof = true;
                    return Poll::Ready(Ok(()));
                }
                Ok(()) => {}
                Err(e) => return Poll::Ready(fail(Side::Client, e)),
            }
            let total = carried + read_buf.filled().len();
            buf[..carried].copy_from_slice(&self.carried);
            let result = OUTPUT.with_borrow_mut(|out| {
                let processed = self.session.process(&mut buf[..total], out, Send::Nothing);
                let delivered = self.deliver(out, counters);
                let progress = processed.map_err(tls_failure)?;
                delivered?;
                Ok(progress)
            });
            let progress = match result {
                Ok(progress) => progress,
                Err(failure) => return Poll::Ready(Err(failure)),
            };
            let rest = &buf[progress.consumed..total];
            // Nothing after close_notify is read: keep none of it.
            if rest.is_empty() || progress.peer_closed {
                self.carried = Vec::new();
            } else {
                self.carried = rest.to_vec();
            }
            self.up.eof |= progress.peer_closed;
            Poll::Ready(Ok(()))
        })
    }

    /// One read of broker plaintext, encrypted and passed on; a FIN becomes close_notify.
    fn read_backend(
        &mut self,
        cx: &mut Context<'_>,
        counters: &Counters<'_>,
    ) -> Poll<Result<(), Failure>> {
        PLAIN.with_borrow_mut(|plain| {
            let mut read_buf = ReadBuf::new(plain);
            let read = match ready!(Pin::new(&mut self.backend).poll_read(cx, &mut read_buf)) {
                Ok(()) => read_buf.filled().len(),
                Err(e) => return Poll::Ready(fail(Side::Backend, e)),
            };
            let send = if read == 0 {
                self.down.eof = true;
                Send::CloseNotify
            } else {
                Send::Data(&plain[..read])
            };
            let result = OUTPUT.with_borrow_mut(|out| {
                let processed = self.session.process(&mut self.carried, out, send);
                let delivered = self.deliver(out, counters);
                let progress = processed.map_err(tls_failure)?;
                delivered?;
                Ok(progress)
            });
            match result {
                Ok(progress) => {
                    self.carried.drain(..progress.consumed);
                    self.up.eof |= progress.peer_closed;
                    if !progress.sent && read > 0 {
                        return Poll::Ready(fail(
                            Side::Client,
                            io::Error::other("the TLS connection can no longer send"),
                        ));
                    }
                    counters.to_client.inc_by(read as u64);
                    Poll::Ready(Ok(()))
                }
                Err(failure) => Poll::Ready(Err(failure)),
            }
        })
    }

    /// Sends what a round of processing produced: plaintext to the broker, TLS bytes to the
    /// client; what either cannot take yet is kept. Leaves `out` empty.
    fn deliver(&mut self, out: &mut Output, counters: &Counters<'_>) -> Result<(), Failure> {
        let to_client = self.to_client.send(&out.tls, &self.client);
        let to_backend = self.to_backend.send(&out.plain, &self.backend);
        out.tls.clear();
        out.plain.clear();
        if let Err(e) = to_client {
            return fail(Side::Client, e);
        }
        match to_backend {
            Ok(n) => {
                counters.to_backend.inc_by(n as u64);
                Ok(())
            }
            Err(e) => fail(Side::Backend, e),
        }
    }
}

impl Handshaken {
    /// What arrived with the handshake (and the CONNECT preread), to go to the broker before
    /// relaying starts.
    pub(crate) fn take_early(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.early)
    }

    /// The client's plaintext after the handshake, decrypted as it is read: where the CONNECT
    /// preread of a terminating listener reads from. What it decrypts is appended to `early`.
    pub(crate) fn plaintext<'a>(&'a mut self, client: &'a mut TcpStream) -> Plaintext<'a> {
        Plaintext {
            client,
            session: self,
        }
    }
}

/// A terminated client's stream of plaintext, read for the CONNECT preread (see
/// [`Handshaken::plaintext`]).
pub(crate) struct Plaintext<'a> {
    client: &'a mut TcpStream,
    session: &'a mut Handshaken,
}

impl ConnectSource for Plaintext<'_> {
    /// Reads client bytes until at least one byte of plaintext comes out of them (records are
    /// decrypted whole, so this may append more than `want`). TLS bytes rustls answers with
    /// (a key update) are sent to the client. A TLS error sends its alert and fails the read.
    async fn read_more(&mut self, buf: &mut Vec<u8>, _want: usize) -> io::Result<usize> {
        let session = &mut *self.session;
        let mut out = Output::default();
        loop {
            if session.peer_closed {
                return Ok(0);
            }
            session.carried.reserve(HANDSHAKE_READ);
            self.client.readable().await?;
            match self.client.try_read_buf(&mut session.carried) {
                Ok(0) => return Ok(0),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
            let processed = process(
                &mut session.conn,
                &mut session.carried,
                &mut out,
                Send::Nothing,
            );
            let progress = match processed {
                Ok(progress) => progress,
                Err(Failed { error, consumed }) => {
                    let rest = session.carried.get_mut(consumed..).unwrap_or_default();
                    if let Some(alert) = queued_alert(&mut session.conn, rest) {
                        let _ = self.client.try_write(&alert);
                    }
                    return Err(io::Error::new(io::ErrorKind::InvalidData, error));
                }
            };
            if !out.tls.is_empty() {
                self.client.write_all(&out.tls).await?;
                out.tls.clear();
            }
            session.carried.drain(..progress.consumed);
            session.peer_closed |= progress.peer_closed;
            if session.carried.len() > MAX_CARRY {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a TLS record longer than TLS allows",
                ));
            }
            if !out.plain.is_empty() {
                let read = out.plain.len();
                buf.append(&mut out.plain);
                return Ok(read);
            }
        }
    }
}

/// How [`feed_client_bytes`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fed {
    /// Every chunk was taken and the connection still waits for more.
    Waiting,
    /// The handshake finished (then the rest went through the relay's path).
    Established,
    /// The client's close_notify arrived.
    PeerClosed,
    /// TLS refused the bytes, for this reason; the alert was fetched as the handshake does.
    Refused(HandshakeFailure),
    /// The bytes after the handshake were more than a record (the relay closes the connection).
    Oversized,
}

/// Feeds `chunks` of client bytes, one read each, through the same processing the handshake and
/// the relay give them, without sockets: for the fuzz target, which checks that no input makes
/// this panic (rustls keeps positions in the caller's buffer, so the carrying of unprocessed
/// bytes between reads must be exact).
#[doc(hidden)]
pub fn feed_client_bytes(server: Arc<ServerConfig>, chunks: &[&[u8]]) -> Fed {
    let Ok(mut conn) = UnbufferedServerConnection::new(server) else {
        return Fed::Refused(HandshakeFailure::Protocol);
    };
    let mut buf: Vec<u8> = Vec::new();
    let mut out = Output::default();
    let mut established = false;
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        let send = if established {
            Send::Data(b"x")
        } else {
            Send::Nothing
        };
        match process(&mut conn, &mut buf, &mut out, send) {
            Ok(progress) => {
                buf.drain(..progress.consumed);
                out = Output::default();
                if progress.peer_closed {
                    return Fed::PeerClosed;
                }
                established |= !conn.is_handshaking();
                if established && buf.len() > MAX_CARRY {
                    return Fed::Oversized;
                }
            }
            Err(Failed { error, consumed }) => {
                let rest = buf.get_mut(consumed..).unwrap_or_default();
                let _ = queued_alert(&mut conn, rest);
                return Fed::Refused(HandshakeFailure::of(&error));
            }
        }
    }
    if established {
        Fed::Established
    } else {
        Fed::Waiting
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every idle TLS connection holds one boxed relay for its whole life, and its boxed
    /// records: each must stay within its mimalloc size class (192 and 160 bytes), or every
    /// connection pays for the next class. (A TLS 1.3 connection also holds rustls'
    /// `KernelConnection`, whose size is rustls'.)
    #[test]
    fn an_idle_tls_relay_stays_within_its_allocation_classes() {
        let size = std::mem::size_of::<TlsRelay>();
        assert!(size <= 192, "the TLS relay grew to {size} bytes");
        let size = std::mem::size_of::<Records>();
        assert!(size <= 160, "the TLS records grew to {size} bytes");
    }
}
