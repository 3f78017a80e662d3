//! Health checks: probes of each backend server (tcp, mqtt, http, amqp), the rise/fall state
//! machine that turns probe outcomes into up/down, the status the rest of the sidecar reads, and
//! the discovered peers kept in step as backup servers.

pub mod checker;
pub mod peers;
pub mod probe;
pub mod state;
pub mod status;

pub use checker::{spawn_checker, spawn_checkers};
pub use peers::spawn_peer_sync;
pub use probe::{ProbeError, probe, probe_within};
pub use state::{RiseFall, Transition};
pub use status::{CheckOutcome, HealthReport, ServerHealth, ServerState};
