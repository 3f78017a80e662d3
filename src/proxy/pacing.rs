//! Admission pacing of one listener, shared by all its relay threads: one schedule per
//! listener, not per thread (EMQX's per-acceptor limiter let several acceptors each take the
//! whole rate: emqx#3598, #15082).
//!
//! The schedule is GCRA's virtual scheduling turned into a queue. Every client let through takes
//! the next ticket; ticket `k` is due at `line(k)`, one interval (1 / rate) after ticket `k - 1`.
//! A client whose ticket is due now (after a quiet spell the line lags `burst - 1` intervals
//! behind the clock) goes on at once; a later one is held until its ticket is due, plus a
//! jitter below one interval, so that a synchronized wave leaves as an even stream in arrival
//! order. A client whose wait would pass `admission_timeout`, or that finds `admission_queue`
//! clients held already, is closed at once and takes no ticket.
//!
//! A reload that changes the rate redraws the line: slower, from the first ticket still held
//! (held clients move later, and those then past their timeout are closed when they wake);
//! faster, from the next ticket (held clients keep their turn, so the two rates never add up).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::Pacing;
use crate::metrics::{AdmissionMetrics, ShedReason};

/// Nanoseconds since the pacer's epoch: signed, so that a line drawn a burst into the past
/// before the first client needs no special case.
type Nanos = i64;

/// What a client that arrives meets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// Its ticket is due: on at once.
    Admit,
    /// Held until `until` with `ticket`.
    Hold { ticket: u64, until: Nanos },
    /// Closed at once.
    Shed(ShedReason),
}

/// What a held client finds when it wakes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Turn {
    /// Its ticket is due: on.
    Now,
    /// Not yet (the line moved later): wait until then.
    Later(Nanos),
    /// Its turn comes after its deadline: closed.
    Timeout,
}

/// How late a held client may wake before the line is redrawn from it: well above a timer's
/// slack (a millisecond), well below a second.
const LATE: Nanos = 20_000_000;

/// The line tickets are due on, and the count of clients held.
#[derive(Debug)]
pub(crate) struct Schedule {
    /// The rate the line is drawn with; 0 before the first paced client.
    rate: u32,
    /// Nanoseconds between two tickets.
    interval: Nanos,
    /// The ticket the line is anchored at, and when it is due.
    anchor: u64,
    at: Nanos,
    /// Tickets given out so far.
    issued: u64,
    /// Clients held now.
    held: u32,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            rate: 0,
            interval: 0,
            anchor: 0,
            at: Nanos::MIN / 4,
            issued: 0,
            held: 0,
        }
    }
}

impl Schedule {
    /// When ticket `ticket` is due.
    fn line(&self, ticket: u64) -> Nanos {
        let offset = ticket as i128 - self.anchor as i128;
        let at = self.at as i128 + offset * self.interval as i128;
        at.clamp(Nanos::MIN as i128, Nanos::MAX as i128) as Nanos
    }

    /// A jitter below one interval, the same for a ticket each time it is asked, so that
    /// a held client that wakes early and checks again finds the same time.
    fn jitter(&self, ticket: u64) -> Nanos {
        let spread = ticket.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
        ((u128::from(spread) * self.interval as u128) >> 32) as Nanos
    }

    /// When held ticket `ticket` goes on. A ticket before the anchor was due by the time the
    /// line was redrawn: no jitter of the new interval puts it off again.
    fn due(&self, ticket: u64) -> Nanos {
        if ticket < self.anchor {
            self.line(ticket)
        } else {
            self.line(ticket).saturating_add(self.jitter(ticket))
        }
    }

    /// Redraws the line when the rate changed (see the module's note).
    fn follow(&mut self, now: Nanos, pacing: &Pacing) {
        if pacing.rate == self.rate || pacing.rate == 0 {
            return;
        }
        let interval = (1_000_000_000 / u64::from(pacing.rate)) as Nanos;
        if self.rate != 0 {
            let from = if interval > self.interval {
                self.first_waiting(now)
            } else {
                self.issued
            };
            self.at = self.line(from);
            self.anchor = from;
        }
        self.rate = pacing.rate;
        self.interval = interval;
    }

    /// The first ticket not yet due at `now`.
    fn first_waiting(&self, now: Nanos) -> u64 {
        if now < self.at || self.interval == 0 {
            return self.anchor.min(self.issued);
        }
        let passed = ((now - self.at) / self.interval) as u64;
        self.anchor
            .saturating_add(passed)
            .saturating_add(1)
            .min(self.issued)
    }

    /// A client arrives at `now`.
    pub(crate) fn arrive(&mut self, now: Nanos, pacing: &Pacing) -> Arrival {
        self.follow(now, pacing);
        let tolerance = Nanos::from(pacing.burst.saturating_sub(1)).saturating_mul(self.interval);
        let mut due = self.line(self.issued);
        if due.saturating_add(tolerance) < now {
            // Quiet since the last ticket: the line restarts a burst behind the clock.
            self.anchor = self.issued;
            self.at = now - tolerance;
            due = self.at;
        }
        if due <= now {
            self.issued += 1;
            return Arrival::Admit;
        }
        let timeout = Nanos::try_from(pacing.timeout.as_nanos()).unwrap_or(Nanos::MAX);
        if due - now > timeout {
            return Arrival::Shed(ShedReason::Timeout);
        }
        if self.held >= pacing.queue {
            return Arrival::Shed(ShedReason::QueueFull);
        }
        let ticket = self.issued;
        self.issued += 1;
        self.held += 1;
        Arrival::Hold {
            ticket,
            until: self.due(ticket),
        }
    }

    /// Held ticket `ticket` wakes at `now`; `pacing` is the listener's pacing now (`None`: a
    /// reload turned it off, and every held client goes on), `deadline` the end of its hold.
    pub(crate) fn wake(
        &mut self,
        ticket: u64,
        now: Nanos,
        deadline: Nanos,
        pacing: Option<&Pacing>,
    ) -> Turn {
        let Some(pacing) = pacing else {
            return Turn::Now;
        };
        self.follow(now, pacing);
        let due = self.due(ticket);
        if due <= now {
            // Woken this late, the relay thread was starved, and the clients due meanwhile would
            // all leave at once: the line restarts from this one, so they leave one interval
            // apart again (the time lost is not made up: the broker never sees more than the
            // rate plus the burst).
            if ticket >= self.anchor && now - due > LATE {
                self.anchor = ticket;
                self.at = now;
            }
            Turn::Now
        } else if due > deadline {
            Turn::Timeout
        } else {
            Turn::Later(due)
        }
    }

    /// A held client left the queue (let through, closed, or gone).
    pub(crate) fn leave(&mut self) {
        self.held = self.held.saturating_sub(1);
    }

    /// Clients held now.
    pub(crate) fn held(&self) -> u32 {
        self.held
    }
}

/// Between two "pacing" log lines of one listener at least this long, so that a load that
/// hovers at the rate (the queue filling and emptying many times a second) is not a log line
/// each time.
const QUIET: Duration = Duration::from_secs(10);

/// A spell of holding that was logged as it began, logged again as it ends.
#[derive(Debug)]
struct Spell {
    started: Instant,
    held: u64,
    most: u32,
    shed: [u64; 2],
}

/// What the pacer logs: state changes, never a line per client.
#[derive(Debug, Default)]
struct Log {
    spell: Option<Spell>,
    /// When the last spell ended (or the last unlogged shed was told).
    quiet_since: Option<Instant>,
}

/// One listener's pacer: the schedule and its log, shared by the listener's relay threads.
pub(crate) struct Pacer {
    epoch: Instant,
    state: Mutex<(Schedule, Log)>,
    metrics: AdmissionMetrics,
    listener: String,
}

impl Pacer {
    /// The pacer of listener `listener`, nothing held.
    pub(crate) fn new(listener: &str, metrics: AdmissionMetrics) -> Pacer {
        Pacer {
            epoch: Instant::now(),
            state: Mutex::default(),
            metrics,
            listener: listener.to_string(),
        }
    }

    fn nanos(&self, at: Instant) -> Nanos {
        Nanos::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(Nanos::MAX)
    }

    /// The instant `nanos` stands for.
    pub(crate) fn instant(&self, nanos: Nanos) -> Instant {
        self.epoch + Duration::from_nanos(u64::try_from(nanos).unwrap_or(0))
    }

    /// A client arrives now: admitted, held until an instant (with its ticket), or shed. The
    /// caller closes a shed client; this counts it.
    pub(crate) fn arrive(&self, now: Instant, pacing: &Pacing) -> Arrival {
        let Ok(mut state) = self.state.lock() else {
            // A panic elsewhere poisoned the lock: let clients through unpaced.
            return Arrival::Admit;
        };
        let (schedule, log) = &mut *state;
        let arrival = schedule.arrive(self.nanos(now), pacing);
        match arrival {
            Arrival::Admit => {
                self.metrics.admitted.inc();
                self.metrics.wait.observe(0.0);
            }
            Arrival::Hold { .. } => {
                self.metrics.queued.set(i64::from(schedule.held()));
                self.held(log, now, schedule.held(), pacing);
            }
            Arrival::Shed(reason) => {
                self.metrics.shed(reason);
                self.shed(log, now, reason, pacing);
            }
        }
        arrival
    }

    /// Held ticket `ticket` wakes now (see [`Schedule::wake`]). Leaves the queue unless it is
    /// to wait longer.
    pub(crate) fn wake(
        &self,
        ticket: u64,
        arrived: Instant,
        now: Instant,
        pacing: Option<&Pacing>,
    ) -> Turn {
        let Ok(mut state) = self.state.lock() else {
            return Turn::Now;
        };
        let (schedule, log) = &mut *state;
        let timeout = pacing.map_or(Duration::ZERO, |p| p.timeout);
        let deadline = self.nanos(arrived + timeout);
        let turn = schedule.wake(ticket, self.nanos(now), deadline, pacing);
        match turn {
            Turn::Later(_) => return turn,
            Turn::Now => {
                self.metrics.admitted.inc();
                self.metrics
                    .wait
                    .observe(now.saturating_duration_since(arrived).as_secs_f64());
            }
            Turn::Timeout => {
                self.metrics.shed(ShedReason::Timeout);
                if let Some(pacing) = pacing {
                    self.shed(log, now, ShedReason::Timeout, pacing);
                }
            }
        }
        self.leave_locked(schedule, log, now);
        turn
    }

    /// A held client left before its turn (it reset, or the drain closed it).
    pub(crate) fn gone(&self) {
        if let Ok(mut state) = self.state.lock() {
            let (schedule, log) = &mut *state;
            self.leave_locked(schedule, log, Instant::now());
        }
    }

    fn leave_locked(&self, schedule: &mut Schedule, log: &mut Log, now: Instant) {
        schedule.leave();
        self.metrics.queued.set(i64::from(schedule.held()));
        if schedule.held() == 0
            && let Some(spell) = log.spell.take()
        {
            tracing::info!(
                listener = %self.listener,
                held = spell.held,
                most_held = spell.most,
                shed_queue_full = spell.shed[ShedReason::QueueFull as usize],
                shed_timeout = spell.shed[ShedReason::Timeout as usize],
                lasted = ?now.saturating_duration_since(spell.started),
                "admission queue drained: no client held"
            );
            log.quiet_since = Some(now);
        }
    }

    fn quiet(log: &Log, now: Instant) -> bool {
        log.quiet_since
            .is_none_or(|since| now.saturating_duration_since(since) >= QUIET)
    }

    fn held(&self, log: &mut Log, now: Instant, held: u32, pacing: &Pacing) {
        let quiet = Self::quiet(log, now);
        match &mut log.spell {
            Some(spell) => {
                spell.held += 1;
                spell.most = spell.most.max(held);
            }
            None if quiet => {
                tracing::info!(
                    listener = %self.listener,
                    rate = pacing.rate,
                    burst = pacing.burst,
                    queue_limit = pacing.queue,
                    "admission queue filling: clients beyond max_connection_rate are held (brokerside_admission_queue)"
                );
                log.spell = Some(Spell {
                    started: now,
                    held: 1,
                    most: held,
                    shed: [0; 2],
                });
            }
            None => {}
        }
    }

    fn shed(&self, log: &mut Log, now: Instant, reason: ShedReason, pacing: &Pacing) {
        let first = match &mut log.spell {
            Some(spell) => {
                spell.shed[reason as usize] += 1;
                spell.shed.iter().sum::<u64>() == 1
            }
            None => {
                let tell = Self::quiet(log, now);
                if tell {
                    log.quiet_since = Some(now);
                }
                tell
            }
        };
        if first {
            tracing::warn!(
                listener = %self.listener,
                reason = reason.label(),
                queue_limit = pacing.queue,
                timeout = ?pacing.timeout,
                "admission pacing closes new clients quietly (counted in brokerside_admission_shed_total)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Nanos = 1_000_000;

    fn pacing(rate: u32, burst: u32, queue: u32, timeout_ms: u64) -> Pacing {
        Pacing {
            rate,
            burst,
            queue,
            timeout: Duration::from_millis(timeout_ms),
        }
    }

    /// The time each of `arrivals` (all at `now`) is let through, or `None` when shed.
    fn release_times(
        schedule: &mut Schedule,
        now: Nanos,
        arrivals: usize,
        p: &Pacing,
    ) -> Vec<Option<Nanos>> {
        (0..arrivals)
            .map(|_| match schedule.arrive(now, p) {
                Arrival::Admit => Some(now),
                Arrival::Hold { until, .. } => Some(until),
                Arrival::Shed(_) => None,
            })
            .collect()
    }

    #[test]
    fn a_burst_goes_at_once_and_the_rest_leave_one_interval_apart_in_order() {
        // 100/s: 10 ms apart; a burst of 5.
        let p = pacing(100, 5, 1000, 20_000);
        let mut schedule = Schedule::default();
        let now = 1_000 * MS;
        let times = release_times(&mut schedule, now, 25, &p);
        assert!(times[..5].iter().all(|t| *t == Some(now)), "{times:?}");
        let held: Vec<Nanos> = times[5..].iter().map(|t| t.unwrap()).collect();
        assert_eq!(schedule.held(), 20);
        for (i, at) in held.iter().enumerate() {
            // Ticket 5 + i is due (i + 1) intervals after now, plus a jitter below one interval.
            let slot = now + (i as Nanos + 1) * 10 * MS;
            assert!(
                (slot..slot + 10 * MS).contains(at),
                "client {i} leaves at {at}, slot {slot}"
            );
        }
        assert!(held.windows(2).all(|w| w[0] < w[1]), "FIFO: {held:?}");
        let spread: Vec<Nanos> = held.iter().map(|at| (at - now) % (10 * MS)).collect();
        assert!(
            spread.iter().any(|j| *j != spread[0]),
            "jittered: {spread:?}"
        );
    }

    #[test]
    fn any_window_sees_at_most_the_rate_plus_the_burst() {
        let p = pacing(200, 20, 100_000, 60_000);
        let mut schedule = Schedule::default();
        let mut times = Vec::new();
        // A wave of 3,000 within one second, 3 per millisecond.
        for ms in 0..1000 {
            times.extend(
                release_times(&mut schedule, ms * MS, 3, &p)
                    .into_iter()
                    .flatten(),
            );
        }
        times.sort();
        assert_eq!(times.len(), 3000);
        let second = 1000 * MS;
        let mut start = 0;
        for end in 0..times.len() {
            while times[end] - times[start] >= second {
                start += 1;
            }
            assert!(
                end - start < 200 + 20 + 1,
                "{} in one second",
                end - start + 1
            );
        }
    }

    #[test]
    fn after_a_quiet_spell_the_burst_is_back() {
        let p = pacing(10, 3, 100, 20_000);
        let mut schedule = Schedule::default();
        let first = release_times(&mut schedule, 0, 4, &p);
        assert_eq!(first[..3], [Some(0); 3]);
        assert!(first[3].unwrap() >= 100 * MS);
        // The held one went on; a second later the bucket is full again.
        assert_eq!(schedule.wake(3, 200 * MS, 20_000 * MS, Some(&p)), Turn::Now);
        schedule.leave();
        let later = release_times(&mut schedule, 2_000 * MS, 3, &p);
        assert_eq!(later, [Some(2_000 * MS); 3]);
    }

    #[test]
    fn a_full_queue_sheds_and_takes_no_ticket() {
        let p = pacing(10, 1, 2, 60_000);
        let mut schedule = Schedule::default();
        assert_eq!(schedule.arrive(0, &p), Arrival::Admit);
        assert!(matches!(
            schedule.arrive(0, &p),
            Arrival::Hold { ticket: 1, .. }
        ));
        assert!(matches!(
            schedule.arrive(0, &p),
            Arrival::Hold { ticket: 2, .. }
        ));
        assert_eq!(schedule.arrive(0, &p), Arrival::Shed(ShedReason::QueueFull));
        assert_eq!(schedule.held(), 2);
        // Once one left, the next arrival takes the ticket the shed one did not.
        schedule.leave();
        assert!(matches!(
            schedule.arrive(MS, &p),
            Arrival::Hold { ticket: 3, .. }
        ));
    }

    #[test]
    fn a_wait_past_the_timeout_sheds_at_once() {
        // 10/s with a 250 ms timeout: the third held client would wait 300 ms.
        let p = pacing(10, 1, 100, 250);
        let mut schedule = Schedule::default();
        let times = release_times(&mut schedule, 0, 4, &p);
        assert!(times[..3].iter().all(Option::is_some), "{times:?}");
        assert_eq!(schedule.arrive(0, &p), Arrival::Shed(ShedReason::Timeout));
        assert_eq!(schedule.held(), 2, "the shed one is not held");
    }

    #[test]
    fn a_slower_rate_moves_held_clients_later_and_times_out_the_tail() {
        let fast = pacing(100, 1, 100, 1_000);
        let mut schedule = Schedule::default();
        let held: Vec<(u64, Nanos)> = (0..50)
            .filter_map(|_| match schedule.arrive(0, &fast) {
                Arrival::Hold { ticket, until } => Some((ticket, until)),
                _ => None,
            })
            .collect();
        assert_eq!(held.len(), 49);
        // At 10/s instead, the first held client is still due at its time; the line goes on
        // from the second, 100 ms apart, and past the 1 s deadline from about the tenth.
        let slow = pacing(10, 1, 100, 1_000);
        let deadline = 1_000 * MS;
        let (first, at) = held[0];
        assert_eq!(schedule.wake(first, at, deadline, Some(&slow)), Turn::Now);
        let (third, old) = held[2];
        match schedule.wake(third, old, deadline, Some(&slow)) {
            Turn::Later(new) => assert!(new >= 120 * MS, "{new}, was {old}"),
            other => panic!("{other:?}"),
        }
        let (tail, old) = held[20];
        assert_eq!(
            schedule.wake(tail, old, deadline, Some(&slow)),
            Turn::Timeout
        );
    }

    #[test]
    fn a_faster_rate_keeps_held_clients_turns_and_new_ones_queue_behind() {
        let slow = pacing(10, 1, 100, 10_000);
        let mut schedule = Schedule::default();
        let mut last = 0;
        for _ in 0..5 {
            if let Arrival::Hold { until, .. } = schedule.arrive(0, &slow) {
                last = until;
            }
        }
        let fast = pacing(1000, 1, 100, 10_000);
        match schedule.arrive(MS, &fast) {
            Arrival::Hold { until, .. } => assert!(until > last, "{until} before {last}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_late_wake_restarts_the_line_so_the_clients_behind_do_not_bunch() {
        let p = pacing(100, 1, 1000, 60_000);
        let mut schedule = Schedule::default();
        schedule.arrive(0, &p);
        let tickets: Vec<u64> = (0..20)
            .filter_map(|_| match schedule.arrive(0, &p) {
                Arrival::Hold { ticket, .. } => Some(ticket),
                _ => None,
            })
            .collect();
        // The thread slept 500 ms: tickets 1..=5 were due by then, and the first to wake goes.
        let now = 500 * MS;
        assert_eq!(
            schedule.wake(tickets[0], now, 60_000 * MS, Some(&p)),
            Turn::Now
        );
        // The next ones are due one interval apart from now, not all at once.
        for (i, ticket) in tickets[1..4].iter().enumerate() {
            match schedule.wake(*ticket, now, 60_000 * MS, Some(&p)) {
                Turn::Later(at) => {
                    let slot = now + (i as Nanos + 1) * 10 * MS;
                    assert!((slot..slot + 10 * MS).contains(&at), "{at} for slot {slot}");
                }
                other => panic!("{other:?}"),
            }
        }
        // A few milliseconds late is a timer's slack: the line stays.
        let mut steady = Schedule::default();
        steady.arrive(0, &p);
        let Arrival::Hold { ticket, until } = steady.arrive(0, &p) else {
            panic!("held");
        };
        assert_eq!(
            steady.wake(ticket, until + 2 * MS, 60_000 * MS, Some(&p)),
            Turn::Now
        );
        assert_eq!(steady.line(ticket + 1), 20 * MS);
    }

    #[test]
    fn pacing_turned_off_lets_held_clients_go() {
        let p = pacing(1, 1, 100, 60_000);
        let mut schedule = Schedule::default();
        schedule.arrive(0, &p);
        let Arrival::Hold { ticket, .. } = schedule.arrive(0, &p) else {
            panic!("held");
        };
        assert_eq!(schedule.wake(ticket, MS, 60_000 * MS, None), Turn::Now);
    }
}
