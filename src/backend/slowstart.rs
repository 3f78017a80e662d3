//! Slow start (HAProxy's `slowstart`): a server that comes back up after being down takes a
//! growing share of new connections, from [`START_WEIGHT`] to all of its share linearly over the
//! backend's `slowstart`, so that a recovering broker is not hit by the whole reconnect storm at
//! once. A pure function of the instant the server came back (recorded by its health) and the
//! time now, so tests inject the clock.

use std::time::{Duration, Instant};

/// The weight a server has the moment it comes back up: a tenth of its full share.
pub const START_WEIGHT: f64 = 0.1;

/// The weight (`START_WEIGHT..=1.0`) at `now` of a server that came back up at `back_up`, for
/// a ramp of `slowstart`. 1 when it never came back, when the ramp is over, or when slow start
/// is off.
pub fn weight(back_up: Option<Instant>, now: Instant, slowstart: Duration) -> f64 {
    let Some(back_up) = back_up else {
        return 1.0;
    };
    let elapsed = now.saturating_duration_since(back_up);
    if slowstart.is_zero() || elapsed >= slowstart {
        return 1.0;
    }
    START_WEIGHT + (1.0 - START_WEIGHT) * elapsed.as_secs_f64() / slowstart.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramps_linearly_from_a_tenth_to_full() {
        let back = Instant::now();
        let ramp = Duration::from_secs(10);
        let at = |secs: f64| weight(Some(back), back + Duration::from_secs_f64(secs), ramp);
        assert!((at(0.0) - 0.1).abs() < 1e-9);
        assert!((at(5.0) - 0.55).abs() < 1e-9);
        assert!((at(9.0) - 0.91).abs() < 1e-9);
        assert_eq!(at(10.0), 1.0);
        assert_eq!(at(3600.0), 1.0);
    }

    #[test]
    fn full_weight_without_a_ramp() {
        let back = Instant::now();
        assert_eq!(
            weight(None, back, Duration::from_secs(10)),
            1.0,
            "never back"
        );
        assert_eq!(
            weight(Some(back), back, Duration::ZERO),
            1.0,
            "slow start off"
        );
        // A clock read before the server came back (another thread's `now`) is the ramp's start.
        let earlier = back.checked_sub(Duration::from_millis(5)).unwrap_or(back);
        assert!((weight(Some(back), earlier, Duration::from_secs(1)) - 0.1).abs() < 1e-9);
    }
}
