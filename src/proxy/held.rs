//! A client held by admission pacing until its turn: accepted, nothing read, nothing sent. It
//! holds its socket, its place in the listener's count and the registry (so the drain closes
//! it), and a timer; its set-up (PROXY header, TLS handshake, backend connect) starts only once
//! it is let through. Kept in its own box, smaller than the set-up's, so that a queue of held
//! clients costs no more than as many idle relayed ones.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Sleep;

use super::connection::{ListenerShared, close_cleanly};
use super::pacing::{Pacer, Turn};
use crate::metrics::RefuseReason;
use crate::net::socket::peer_closed;
use crate::runtime::ListenerPlan;

/// A held client and when it may go on.
pub(crate) struct Held {
    /// `None` once it left the queue.
    client: Option<TcpStream>,
    peer: SocketAddr,
    /// The plan it was accepted with, which its set-up follows.
    plan: Arc<ListenerPlan>,
    pacer: Arc<Pacer>,
    ticket: u64,
    arrived: Instant,
    wake: Pin<Box<Sleep>>,
}

impl Held {
    /// Holds `client`, which has ticket `ticket` and is let through at `until`.
    pub(crate) fn new(
        client: TcpStream,
        peer: SocketAddr,
        plan: Arc<ListenerPlan>,
        pacer: Arc<Pacer>,
        ticket: u64,
        until: Instant,
    ) -> Held {
        Held {
            client: Some(client),
            peer,
            plan,
            pacer,
            ticket,
            arrived: Instant::now(),
            wake: Box::pin(tokio::time::sleep_until(until.into())),
        }
    }

    /// Waits for the client's turn. `Some` with what its set-up needs when it is let through;
    /// `None` when it was closed (past its timeout: quietly, with a FIN) or had left.
    pub(crate) fn poll_turn(
        &mut self,
        cx: &mut Context<'_>,
        shared: &ListenerShared,
    ) -> Poll<Option<(TcpStream, SocketAddr, Arc<ListenerPlan>)>> {
        loop {
            if self.wake.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            // The listener's pacing now: a reload may have changed or removed it.
            let pacing = shared
                .runtime
                .load()
                .listener(shared.id)
                .and_then(|listener| listener.plan.pacing);
            let now = Instant::now();
            match self
                .pacer
                .wake(self.ticket, self.arrived, now, pacing.as_ref())
            {
                Turn::Later(until) => {
                    let until = self.pacer.instant(until);
                    self.wake.as_mut().reset(until.into());
                }
                Turn::Timeout => {
                    let client = self.client.take();
                    tracing::debug!(peer = %self.peer, "held past admission_timeout: closed");
                    if let Some(client) = &client {
                        close_cleanly(client);
                    }
                    return Poll::Ready(None);
                }
                Turn::Now => {
                    let Some(client) = self.client.take() else {
                        return Poll::Ready(None);
                    };
                    // A client that gave up while held is not worth a TLS handshake and a
                    // backend connection.
                    if peer_closed(&client) {
                        tracing::debug!(peer = %self.peer, "the client left while held");
                        shared.metrics.refused(RefuseReason::ClientGone);
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some((client, self.peer, Arc::clone(&self.plan))));
                }
            }
        }
    }
}

/// How long a shed client's socket stays open after its FIN, to read what it still sends.
const LINGER: Duration = Duration::from_secs(2);

/// Closes a client that pacing sheds as it arrives, quietly: a FIN and nothing else. Its
/// CONNECT (or TLS ClientHello) may reach the socket only after the accept, and bytes that
/// reach a closed socket draw a reset; so the socket is read and emptied until the client
/// closes its side (it does at once on the FIN) or [`LINGER`] passes.
pub(crate) fn close_quietly(client: TcpStream) {
    close_cleanly(&client);
    tokio::spawn(async move {
        let mut client = client;
        let mut scratch = [0u8; 256];
        let _ = tokio::time::timeout(LINGER, async {
            while matches!(client.read(&mut scratch).await, Ok(n) if n > 0) {}
        })
        .await;
    });
}

impl Drop for Held {
    fn drop(&mut self) {
        // Still queued: the drain (or the end of the relay threads) closed it while held.
        if self.client.is_some() {
            self.pacer.gone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A held client costs its task, this box and its timer's box, and one socket: less than
    /// an idle relayed client, which holds a second socket (the backend's) and its registration.
    #[test]
    fn a_held_client_is_small() {
        let size = std::mem::size_of::<Held>() + std::mem::size_of::<Sleep>();
        assert!(size <= 256, "a held client's boxes grew to {size} bytes");
    }
}
