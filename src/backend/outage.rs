//! Refused clients during an outage, told as state changes rather than one line each: the first
//! client that no server of a backend accepts is one WARN, a summary with the count follows at
//! most every [`SUMMARY_EVERY`] while refusals go on, and one INFO says when a connection gets
//! through again. `brokerside_connections_refused_total{reason="no_backend"}` counts every one.
//! At 100k reconnecting clients an outage is a handful of lines, not 100k.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Longest silence in the log while an outage goes on.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(10);

/// One backend's outage state, shared by every relay thread.
#[derive(Debug, Default)]
pub struct OutageLog {
    /// Set while an outage is under way: the only thing the path of an accepted connection
    /// reads, one atomic load.
    refusing: AtomicBool,
    state: Mutex<Outage>,
}

#[derive(Debug, Default)]
struct Outage {
    /// When the first refusal of this outage came.
    since: Option<Instant>,
    /// When the last line was written.
    last_line: Option<Instant>,
    /// Refusals since that line.
    since_line: u64,
    /// Refusals in this outage.
    total: u64,
}

/// What one call asks the caller to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    /// Nothing: a refusal inside a quiet period, or an accept outside an outage.
    None,
    /// The outage started with this refusal.
    Started,
    /// Still refusing: `refused` since the last line, `total` in this outage.
    Summary { refused: u64, total: u64 },
    /// A connection got through after `total` refusals over `lasted`.
    Ended { total: u64, lasted: Duration },
}

impl OutageLog {
    /// Records one refused client at `now` and says what to log.
    pub fn refused(&self, now: Instant) -> Line {
        let Ok(mut outage) = self.state.lock() else {
            return Line::None;
        };
        outage.total += 1;
        outage.since_line += 1;
        let line = match (outage.since, outage.last_line) {
            (None, _) | (_, None) => {
                outage.since = Some(now);
                self.refusing.store(true, Ordering::Release);
                Line::Started
            }
            (Some(_), Some(last)) if now.saturating_duration_since(last) >= SUMMARY_EVERY => {
                Line::Summary {
                    refused: outage.since_line,
                    total: outage.total,
                }
            }
            _ => return Line::None,
        };
        outage.last_line = Some(now);
        outage.since_line = 0;
        line
    }

    /// Records one connection that got through and says what to log. Outside an outage this is
    /// one atomic load.
    pub fn accepted(&self) -> Line {
        if !self.refusing.load(Ordering::Acquire) {
            return Line::None;
        }
        self.accepted_at(Instant::now())
    }

    /// [`OutageLog::accepted`] at `now`.
    pub fn accepted_at(&self, now: Instant) -> Line {
        let Ok(mut outage) = self.state.lock() else {
            return Line::None;
        };
        let Some(since) = outage.since else {
            return Line::None;
        };
        let line = Line::Ended {
            total: outage.total,
            lasted: now.saturating_duration_since(since),
        };
        *outage = Outage::default();
        self.refusing.store(false, Ordering::Release);
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_one_line_a_summary_every_period_and_one_line_at_the_end() {
        let log = OutageLog::default();
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        assert_eq!(log.accepted_at(at(0)), Line::None, "no outage yet");
        assert_eq!(log.refused(at(0)), Line::Started);
        for i in 1..1000 {
            assert_eq!(log.refused(at(i)), Line::None, "refusal {i}");
        }
        assert_eq!(
            log.refused(at(10_000)),
            Line::Summary {
                refused: 1000,
                total: 1001
            }
        );
        assert_eq!(log.refused(at(10_001)), Line::None);
        assert_eq!(
            log.accepted_at(at(12_000)),
            Line::Ended {
                total: 1002,
                lasted: Duration::from_secs(12)
            }
        );
        assert_eq!(log.accepted_at(at(12_001)), Line::None, "told once");
        assert_eq!(log.refused(at(13_000)), Line::Started, "a new outage");
    }
}
