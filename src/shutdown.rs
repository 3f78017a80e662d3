//! Shutdown: the signals that start it and the tracking of open connections that it waits for.
//! The full drain sequence (health 503, load-balancer grace, paced closing) builds on this.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// Counts open connections so shutdown can wait for them to finish.
#[derive(Debug, Default)]
pub struct Tracker {
    open: AtomicUsize,
    all_closed: Notify,
}

impl Tracker {
    /// Counts one more open connection; each call is paired with one [`Tracker::closed`].
    pub fn opened(&self) {
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one connection closed, waking `all_closed` waiters at the last.
    pub fn closed(&self) {
        if self.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.all_closed.notify_waiters();
        }
    }

    /// Connections open now.
    pub fn count(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Resolves once no connection is open.
    pub async fn all_closed(&self) {
        loop {
            let notified = self.all_closed.notified();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Resolves at the first SIGTERM or SIGINT.
pub async fn signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn waits_for_the_last_connection() {
        let tracker = Arc::new(Tracker::default());
        tracker.all_closed().await;
        tracker.opened();
        tracker.opened();
        let waiter = tokio::spawn({
            let tracker = Arc::clone(&tracker);
            async move { tracker.all_closed().await }
        });
        tracker.closed();
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        tracker.closed();
        waiter.await.unwrap();
        assert_eq!(tracker.count(), 0);
    }
}
