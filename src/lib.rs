//! brokerside: a sidecar proxy for clustered MQTT brokers.
//!
//! Data flows one way: [`config`] is validated first; [`backend`] turns it into server groups;
//! [`proxy`] accepts clients and relays them to those groups; [`metrics`] counts what happens and
//! [`shutdown`] stops it in order. Only the binary (`main.rs`) reads the environment.

pub mod backend;
pub mod config;
pub mod metrics;
pub mod proxy;
pub mod shutdown;
