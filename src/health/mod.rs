//! Health checks: probes of each backend server (tcp, mqtt, http, amqp), the rise/fall state
//! machine that turns probe outcomes into up/down, and the status the rest of the sidecar reads.

pub mod checker;
pub mod probe;
pub mod state;
pub mod status;

pub use checker::spawn_checkers;
pub use probe::{ProbeError, probe, probe_within};
pub use state::{RiseFall, Transition};
pub use status::{CheckOutcome, HealthReport, ServerHealth, ServerState};
