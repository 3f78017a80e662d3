//! The idle-connection ladder both memory benches climb: RSS at start, then with 1, N/2 and N idle
//! MQTT connections open through the proxy, each reading taken after the processes settle.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use super::mqtt;
use super::procs::{self, Process};
use super::tls::Connector;

/// Pause before each RSS reading, so freed memory and in-flight work settle.
pub const SETTLE: Duration = Duration::from_secs(1);

/// RSS of the proxy and the broker at one moment, in KiB.
pub struct Sample {
    pub proxy: u64,
    pub broker: u64,
}

impl Sample {
    pub fn take(proxy: &Process, broker: &Process) -> Result<Sample, String> {
        broker.check_running()?;
        Ok(Sample {
            proxy: proxy.rss_kib()?,
            broker: broker.rss_kib()?,
        })
    }
}

/// The readings of one climb, and the clients (TCP or TLS streams), still open.
pub struct Ladder<S> {
    pub n: usize,
    pub half: usize,
    pub at_start: Sample,
    pub at_one: Sample,
    pub at_half: Sample,
    pub at_full: Sample,
    /// How long opening the N connections took, settling excluded.
    pub opening: Duration,
    pub clients: Vec<S>,
}

impl<S> Ladder<S> {
    /// Proxy RSS per connection from 1 to N, in bytes: the first relayed bytes allocate each
    /// worker's buffers, a fixed cost, so the base is 1 connection, not the start.
    pub fn proxy_per_connection(&self) -> f64 {
        slope(&self.at_one, &self.at_full, self.n - 1, |s| s.proxy)
    }

    /// The same slope over the second half only: if it matches, the cost is linear.
    pub fn proxy_per_connection_second_half(&self) -> f64 {
        slope(&self.at_half, &self.at_full, self.n - self.half, |s| {
            s.proxy
        })
    }

    /// The broker's RSS per connection from 1 to N, in bytes.
    pub fn broker_per_connection(&self) -> f64 {
        slope(&self.at_one, &self.at_full, self.n - 1, |s| s.broker)
    }
}

impl<S> Ladder<S> {
    /// Closes every client, waits until the proxy has let go of their sockets (its fd count
    /// holds still for [`SETTLE`], at most [`CLOSE_TIMEOUT`]), and reads RSS: does memory come
    /// back when connections close?
    pub async fn close_all(&mut self, proxy: &Process, broker: &Process) -> Result<Sample, String> {
        self.clients.clear();
        let fds =
            || -> Result<usize, String> { proxy.family().into_iter().map(procs::count_fds).sum() };
        let started = std::time::Instant::now();
        let mut last = fds()?;
        while started.elapsed() < CLOSE_TIMEOUT {
            tokio::time::sleep(SETTLE).await;
            let now = fds()?;
            if now == last {
                break;
            }
            last = now;
        }
        Sample::take(proxy, broker)
    }
}

/// Longest wait for the proxy to close its side of every connection after the clients closed.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);

fn slope(from: &Sample, to: &Sample, connections: usize, pick: fn(&Sample) -> u64) -> f64 {
    (pick(to) as f64 - pick(from) as f64) * 1024.0 / connections as f64
}

/// Reads RSS at start, then opens 1, N/2 and N idle connections to `addr` with `connector`
/// (plain or TLS; `concurrency` at a time), reading RSS after each step, and checks that every
/// client is still connected: an idle connection the proxy dropped would cost nothing.
pub async fn climb<C: Connector>(
    connector: &C,
    proxy: &Process,
    broker: &Process,
    addr: SocketAddr,
    n: usize,
    concurrency: usize,
) -> Result<Ladder<C::Stream>, String> {
    tokio::time::sleep(SETTLE).await;
    let at_start = Sample::take(proxy, broker)?;

    let mut clients = Vec::with_capacity(n);
    let mut opening = mqtt::open(connector, &mut clients, addr, concurrency, 0..1).await?;
    tokio::time::sleep(SETTLE).await;
    let at_one = Sample::take(proxy, broker)?;

    let half = n / 2;
    opening += mqtt::open(connector, &mut clients, addr, concurrency, 1..half).await?;
    tokio::time::sleep(SETTLE).await;
    let at_half = Sample::take(proxy, broker)?;

    opening += mqtt::open(connector, &mut clients, addr, concurrency, half..n).await?;
    tokio::time::sleep(SETTLE).await;
    let at_full = Sample::take(proxy, broker)?;
    mqtt::check_still_open(&clients)?;

    Ok(Ladder {
        n,
        half,
        at_start,
        at_one,
        at_half,
        at_full,
        opening,
        clients,
    })
}
