//! The rise/fall state machine: turns a server's stream of probe outcomes into up/down. A plain
//! type with no clock and no I/O, so that its every path can be walked in a unit test.

use super::report::ServerState;

/// What one outcome did to the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The state stayed as it was.
    Stay,
    /// The server passed `rise` probes in a row and is up now.
    WentUp,
    /// The server failed `fall` probes in a row and is down now.
    WentDown,
}

/// Consecutive-success / consecutive-failure thresholds over a server's probe outcomes.
///
/// It starts down and pending: a server must pass `rise` probes before it takes clients, so that
/// a node does not report ready before its broker has answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RiseFall {
    rise: u32,
    fall: u32,
    state: ServerState,
    /// The latest outcome; `None` before the first.
    last: Option<bool>,
    /// Consecutive outcomes equal to `last`.
    streak: u32,
}

impl RiseFall {
    /// A machine that goes up after `rise` successes in a row and down after `fall` failures in a
    /// row, starting down. A threshold of 0 is taken as 1: a state change needs some evidence.
    pub fn new(rise: u32, fall: u32) -> RiseFall {
        RiseFall {
            rise: rise.max(1),
            fall: fall.max(1),
            state: ServerState::Down,
            last: None,
            streak: 0,
        }
    }

    /// A machine that carries on from a verdict reached before (a reload changed the check's
    /// settings): it starts in `state` with `streak` agreeing outcomes, so the server neither
    /// drops to pending nor takes its new thresholds as already met.
    pub fn resume(rise: u32, fall: u32, state: ServerState, streak: u32) -> RiseFall {
        RiseFall {
            state,
            last: Some(state == ServerState::Up),
            streak,
            ..RiseFall::new(rise, fall)
        }
    }

    /// Feeds one probe outcome (`true` = passed) and says whether the state changed.
    pub fn observe(&mut self, ok: bool) -> Transition {
        if self.last == Some(ok) {
            self.streak = self.streak.saturating_add(1);
        } else {
            self.last = Some(ok);
            self.streak = 1;
        }
        match (self.state, ok) {
            (ServerState::Down, true) if self.streak >= self.rise => {
                self.state = ServerState::Up;
                Transition::WentUp
            }
            (ServerState::Up, false) if self.streak >= self.fall => {
                self.state = ServerState::Down;
                Transition::WentDown
            }
            _ => Transition::Stay,
        }
    }

    /// The current state.
    pub fn state(&self) -> ServerState {
        self.state
    }

    /// Consecutive outcomes that agree with the latest one (0 before the first).
    pub fn streak(&self) -> u32 {
        self.streak
    }

    /// Whether the outcomes are heading towards a state change: the latest disagrees with the
    /// state, or no probe has run yet (a pending server is on its way up). The checker probes at
    /// `fast_interval` meanwhile, so that a change is confirmed, or refuted, sooner.
    pub fn changing(&self) -> bool {
        match self.last {
            None => true,
            Some(ok) => ok != (self.state == ServerState::Up),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `outcomes` and returns the transitions they caused.
    fn feed(machine: &mut RiseFall, outcomes: &[bool]) -> Vec<Transition> {
        outcomes.iter().map(|&ok| machine.observe(ok)).collect()
    }

    #[test]
    fn starts_down_pending_and_changing() {
        let machine = RiseFall::new(2, 3);
        assert_eq!(machine.state(), ServerState::Down);
        assert_eq!(machine.streak(), 0);
        assert!(machine.changing());
    }

    #[test]
    fn rises_after_rise_successes() {
        let mut machine = RiseFall::new(2, 3);
        assert_eq!(machine.observe(true), Transition::Stay);
        assert_eq!(machine.state(), ServerState::Down);
        assert!(machine.changing());
        assert_eq!(machine.observe(true), Transition::WentUp);
        assert_eq!(machine.state(), ServerState::Up);
        assert_eq!(machine.streak(), 2);
        assert!(!machine.changing());
        // More successes keep it up and only lengthen the streak.
        assert_eq!(machine.observe(true), Transition::Stay);
        assert_eq!(machine.streak(), 3);
    }

    #[test]
    fn a_failure_resets_the_count_towards_up() {
        let mut machine = RiseFall::new(3, 3);
        assert_eq!(
            feed(&mut machine, &[true, true, false]),
            [Transition::Stay; 3]
        );
        assert_eq!(machine.state(), ServerState::Down);
        assert!(!machine.changing(), "a failure while down is no change");
        assert_eq!(feed(&mut machine, &[true, true]), [Transition::Stay; 2]);
        assert_eq!(machine.observe(true), Transition::WentUp);
    }

    #[test]
    fn falls_after_fall_failures() {
        let mut machine = RiseFall::new(1, 3);
        assert_eq!(machine.observe(true), Transition::WentUp);
        assert_eq!(machine.observe(false), Transition::Stay);
        assert!(machine.changing());
        assert_eq!(machine.observe(false), Transition::Stay);
        assert_eq!(machine.state(), ServerState::Up);
        assert_eq!(machine.observe(false), Transition::WentDown);
        assert_eq!(machine.state(), ServerState::Down);
        assert_eq!(machine.streak(), 3);
        assert!(!machine.changing());
    }

    #[test]
    fn a_success_resets_the_count_towards_down() {
        let mut machine = RiseFall::new(1, 2);
        machine.observe(true);
        assert_eq!(
            feed(&mut machine, &[false, true, false, true]),
            [Transition::Stay; 4]
        );
        assert_eq!(machine.state(), ServerState::Up);
        assert_eq!(machine.observe(false), Transition::Stay);
        assert_eq!(machine.observe(false), Transition::WentDown);
    }

    #[test]
    fn alternating_outcomes_never_change_the_state() {
        for start_up in [false, true] {
            let mut machine = RiseFall::new(2, 2);
            if start_up {
                feed(&mut machine, &[true, true]);
            }
            let before = machine.state();
            for i in 0..100 {
                // Each run starts against the state: the worst case for a flap.
                let ok = (i % 2 == 0) != start_up;
                assert_eq!(machine.observe(ok), Transition::Stay);
                assert_eq!(machine.streak(), 1);
            }
            assert_eq!(machine.state(), before);
        }
    }

    #[test]
    fn rise_one_and_fall_one_follow_every_outcome() {
        let mut machine = RiseFall::new(1, 1);
        assert_eq!(machine.observe(false), Transition::Stay, "already down");
        assert_eq!(machine.observe(true), Transition::WentUp);
        assert_eq!(machine.observe(false), Transition::WentDown);
        assert_eq!(machine.observe(true), Transition::WentUp);
        assert_eq!(machine.observe(true), Transition::Stay);
        // With thresholds of one there is never a pending change once a probe has run.
        assert!(!machine.changing());
    }

    #[test]
    fn zero_thresholds_act_as_one() {
        let mut machine = RiseFall::new(0, 0);
        assert_eq!(machine.state(), ServerState::Down);
        assert_eq!(machine.observe(true), Transition::WentUp);
        assert_eq!(machine.observe(false), Transition::WentDown);
    }

    #[test]
    fn a_resumed_machine_keeps_its_verdict_until_the_new_thresholds_say_otherwise() {
        let mut machine = RiseFall::resume(2, 3, ServerState::Up, 7);
        assert_eq!(machine.state(), ServerState::Up);
        assert_eq!(machine.streak(), 7);
        assert!(!machine.changing());
        assert_eq!(feed(&mut machine, &[false, false]), [Transition::Stay; 2]);
        assert_eq!(machine.observe(false), Transition::WentDown);

        let mut down = RiseFall::resume(2, 3, ServerState::Down, 4);
        assert!(!down.changing());
        assert_eq!(down.observe(true), Transition::Stay);
        assert_eq!(down.observe(true), Transition::WentUp);
    }

    #[test]
    fn first_failure_while_pending_settles_down() {
        let mut machine = RiseFall::new(2, 3);
        assert_eq!(machine.observe(false), Transition::Stay);
        assert_eq!(machine.state(), ServerState::Down);
        assert!(
            !machine.changing(),
            "a failing pending server probes at the normal interval"
        );
    }
}
