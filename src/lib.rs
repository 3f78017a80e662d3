//! brokerside: a sidecar proxy for clustered MQTT brokers.
//!
//! Data flows one way: [`config`] is validated first; [`runtime`] builds from it the snapshot of
//! everything a reload can change, and its controller runs (and on reload changes by difference)
//! the control tasks; [`discovery`] finds peers; [`backend`] holds server groups (local servers,
//! then backups and peers); [`health`] probes every server and publishes up/down; [`proxy`]
//! accepts clients and relays them to the best server that is up; [`admin`] and [`metrics`] only
//! read the shared [`state`]; [`shutdown`] drains it all in order. [`net`] holds the socket and
//! PROXY-header helpers that the relay, the probes and admin share; [`tls`] the material of
//! TLS-terminating listeners; [`mqtt`] reads a client's CONNECT. [`sidecar`] assembles the
//! parts. Only the binary (`main.rs`) installs signal handlers and exits the process.

pub mod admin;
pub mod backend;
pub mod cluster;
pub mod config;
pub mod discovery;
pub mod health;
pub mod http_get;
pub mod memory;
pub mod metrics;
pub mod mqtt;
pub mod net;
pub mod proxy;
pub mod runtime;
pub mod shutdown;
pub mod sidecar;
pub mod state;
pub mod task;
pub mod time_text;
pub mod tls;
