//! What the proxy costs per crossing (issue 15): pinning processes and threads to one CPU, so
//! that a round trip through the proxy runs every hop on one core and shows what each crossing
//! costs; and 64 publishers and 64 subscribers through the proxy at a fixed aggregate rate, with
//! the proxy's and the broker's CPU read over the same window.
#![allow(dead_code)]

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream as StdStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::task::JoinSet;

use super::mqtt;
use super::procs::Process;

/// The CPU every pinned process and thread runs on.
pub const PINNED_CPU: usize = 0;
/// Publisher/subscriber pairs, each on a topic of its own.
pub const PAIRS: usize = 64;
/// Published messages per second, all publishers together (each crosses the proxy twice).
pub const DEFAULT_RATE: u64 = 50_000;
/// The rate with `--smoke`.
pub const SMOKE_RATE: u64 = 5_000;
/// Load before the measured window: connections warm, the broker's queues steady.
pub const WARM_UP: Duration = Duration::from_secs(1);
/// Time allowed, after the publishers stop, for every message to reach its subscriber.
const DRAIN: Duration = Duration::from_secs(5);
/// How often the publishing thread catches up with the schedule.
const TICK: Duration = Duration::from_micros(200);

/// Pins the calling thread to `cpu`.
pub fn pin_this_thread(cpu: usize) -> Result<(), String> {
    pin_task(0, cpu).map_err(|error| format!("cannot pin a bench thread to CPU {cpu}: {error}"))
}

/// Pins every thread of `process` and of its descendants (NGINX's workers) to `cpu`, as
/// `taskset -a -p` does. Threads they start later inherit it.
pub fn pin_family(process: &Process, cpu: usize) -> Result<(), String> {
    for pid in process.family() {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
            .map_err(|error| format!("cannot list the threads of {}: {error}", process.name))?;
        for task in tasks.flatten() {
            let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
                continue;
            };
            pin_task(tid, cpu).map_err(|error| {
                format!(
                    "cannot pin {} (thread {tid}) to CPU {cpu}: {error}",
                    process.name
                )
            })?;
        }
    }
    Ok(())
}

fn pin_task(tid: libc::pid_t, cpu: usize) -> io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET writes inside it, and
    // sched_setaffinity reads exactly the size passed.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// What one message-cost run measured over its window.
pub struct Run {
    /// Messages published in the window (each crosses the proxy once on its way in).
    pub published: u64,
    /// Messages the subscribers received in the window (each crossed the proxy on its way out).
    pub delivered: u64,
    /// The window's length.
    pub window: Duration,
    /// The proxy's CPU over the window; `None` for direct.
    pub proxy_cpu: Option<Duration>,
    /// The broker's CPU over the window.
    pub broker_cpu: Duration,
    /// Messages sent in the whole run that never arrived within [`DRAIN`] of the end.
    pub lost: u64,
}

impl Run {
    /// Messages relayed in the window, both directions counted: published plus delivered.
    pub fn relayed(&self) -> u64 {
        self.published + self.delivered
    }

    /// Published messages per second over the window.
    pub fn rate(&self) -> f64 {
        self.published as f64 / self.window.as_secs_f64()
    }
}

/// [`PAIRS`] publishers and subscribers through `addr` (a proxy, or the broker itself), QoS 0
/// messages of `payload` bytes at `rate` published per second in all, for [`WARM_UP`] and then a
/// window of `window`, over which the proxy's and the broker's CPU are read.
pub async fn run(
    addr: SocketAddr,
    proxy: Option<&Process>,
    broker: &Process,
    payload: usize,
    rate: u64,
    window: Duration,
) -> Result<Run, String> {
    let (publishers, subscribers, message_len) = tokio::task::spawn_blocking(move || {
        connect_pairs(addr, payload).map_err(|error| format!("opening the pairs: {error}"))
    })
    .await
    .map_err(|error| format!("the connecting thread failed: {error}"))??;

    // Subscribers: tasks on this runtime that count bytes; every message has the same length.
    let received_bytes = Arc::new(AtomicU64::new(0));
    let mut reading = JoinSet::new();
    for stream in subscribers {
        stream.set_nonblocking(true).map_err(|e| e.to_string())?;
        let mut stream = tokio::net::TcpStream::from_std(stream).map_err(|e| e.to_string())?;
        let counted = Arc::clone(&received_bytes);
        reading.spawn(async move {
            let mut buffer = vec![0u8; 16 * 1024];
            loop {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        counted.fetch_add(n as u64, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    let received = || received_bytes.load(Ordering::Relaxed) / message_len as u64;

    // Publishers: one thread on a schedule, one write per message, round robin over the pairs.
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let publishing = {
        let (sent, stop) = (Arc::clone(&sent), Arc::clone(&stop));
        std::thread::Builder::new()
            .name("msgcost-publishers".into())
            .spawn(move || publish(publishers, payload, rate, &sent, &stop))
            .map_err(|error| format!("cannot start the publishing thread: {error}"))?
    };
    let cpu = |process: Option<&Process>| process.map(Process::cpu).transpose();

    tokio::time::sleep(WARM_UP).await;
    let (proxy_before, broker_before) = (cpu(proxy)?, broker.cpu()?);
    let (sent_before, received_before, started) =
        (sent.load(Ordering::Relaxed), received(), Instant::now());
    tokio::time::sleep(window).await;
    let (proxy_after, broker_after) = (cpu(proxy)?, broker.cpu()?);
    let (sent_after, received_after, window) =
        (sent.load(Ordering::Relaxed), received(), started.elapsed());

    stop.store(true, Ordering::Relaxed);
    let published_total = publishing
        .join()
        .map_err(|_| "the publishing thread panicked".to_string())?
        .map_err(|error| format!("publishing: {error}"))?;
    let deadline = Instant::now() + DRAIN;
    while received() < published_total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let lost = published_total.saturating_sub(received());
    reading.abort_all();

    Ok(Run {
        published: sent_after - sent_before,
        delivered: received_after - received_before,
        window,
        proxy_cpu: proxy_before
            .zip(proxy_after)
            .map(|(b, a)| a.saturating_sub(b)),
        broker_cpu: broker_after.saturating_sub(broker_before),
        lost,
    })
}

/// Connects every subscriber (and subscribes it to its topic), then every publisher; returns
/// both and the length of one PUBLISH packet.
fn connect_pairs(
    addr: SocketAddr,
    payload: usize,
) -> io::Result<(Vec<StdStream>, Vec<StdStream>, usize)> {
    let mut subscribers = Vec::with_capacity(PAIRS);
    for pair in 0..PAIRS {
        let mut stream = mqtt::connect_blocking(addr, &format!("msgcost-sub-{pair}"))?;
        mqtt::subscribe_blocking(&mut stream, &topic(pair))?;
        subscribers.push(stream);
    }
    let publishers = (0..PAIRS)
        .map(|pair| mqtt::connect_blocking(addr, &format!("msgcost-pub-{pair}")))
        .collect::<io::Result<Vec<_>>>()?;
    let message_len = mqtt::publish_packet(&topic(0), &vec![0; payload]).len();
    Ok((publishers, subscribers, message_len))
}

/// Topics of equal length, so that every message is the same size.
fn topic(pair: usize) -> String {
    format!("cost/{pair:03}")
}

/// Publishes on schedule until `stop`: `rate` messages per second in all, each publisher in turn
/// on its own topic. Returns how many were sent.
fn publish(
    mut publishers: Vec<StdStream>,
    payload: usize,
    rate: u64,
    sent: &AtomicU64,
    stop: &AtomicBool,
) -> io::Result<u64> {
    let messages: Vec<Vec<u8>> = (0..publishers.len())
        .map(|pair| mqtt::publish_packet(&topic(pair), &vec![b'x'; payload]))
        .collect();
    let started = Instant::now();
    let mut count: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
        while count < due {
            let pair = (count % publishers.len() as u64) as usize;
            publishers[pair].write_all(&messages[pair])?;
            count += 1;
        }
        sent.store(count, Ordering::Relaxed);
        std::thread::sleep(TICK);
    }
    Ok(count)
}
