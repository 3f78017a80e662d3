//! brokerside: a sidecar proxy for clustered MQTT brokers.
//!
//! Data flows one way: [`config`] is validated first; [`backend`] turns it into server groups
//! (local servers, then backups); [`health`] probes every server and publishes up/down;
//! [`proxy`] accepts clients and relays them to the best server that is up; [`admin`] and
//! [`metrics`] only read the shared [`state`]; [`shutdown`] drains it all in order. [`sidecar`]
//! assembles the parts. Only the binary (`main.rs`) handles signals and process exit.

pub mod admin;
pub mod backend;
pub mod cluster;
pub mod config;
pub mod discovery;
pub mod health;
pub mod http_get;
pub mod metrics;
pub mod proxy;
pub mod shutdown;
pub mod sidecar;
pub mod state;
