//! Health checks: probes of each backend server (tcp, mqtt, http, amqp), the rise/fall state
//! machine that turns probe outcomes into up/down, the checker task that runs them, and the
//! report the rest of the sidecar reads. Checkers take a plain [`CheckTarget`]: this module knows
//! nothing of backends.

pub mod checker;
pub mod probe;
pub mod report;
pub mod rise_fall;

pub use checker::{CheckTarget, spawn_checker};
pub use probe::{ProbeError, probe, probe_within};
pub use report::{CheckOutcome, HealthReport, ServerHealth, ServerState};
pub use rise_fall::{RiseFall, Transition};
