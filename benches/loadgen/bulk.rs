//! Bulk throughput with iperf3: a one-off iperf3 server as the backend, an iperf3 client through
//! the target for a fixed time with 1 or more parallel streams, and the proxy's CPU time over
//! the run. iperf3 cannot speak TLS, so TLS bulk has a client of its own here: one TLS stream
//! through the target, which terminates it, to a plaintext sink in this process.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::connrate::{Backend, Serve};
use super::procs::{Process, Scratch, find_program, free_port};
use super::targets::{self, Target};
use super::tls::{Connector, Tls};

/// What the TLS bulk client writes per call: four full TLS records.
const TLS_CHUNK: usize = 64 * 1024;

/// Time past the test's own length that the client may take (connect, exchange results).
const CLIENT_SLACK: Duration = Duration::from_secs(15);

/// What one iperf3 run through a target measured.
pub struct BulkRun {
    /// Received bits per second, all streams together (iperf3's `end.sum_received`).
    pub bits_per_second: f64,
    /// Bytes the server received.
    pub bytes: f64,
    /// The proxy's CPU time over the client's run; `None` for direct.
    pub proxy_cpu: Option<Duration>,
}

/// Runs `iperf3 -c` through `target` to a fresh `iperf3 -s -1` for `seconds` with `streams`
/// parallel streams.
pub async fn run(
    scratch: &Scratch,
    target: Target,
    streams: usize,
    seconds: u64,
) -> Result<BulkRun, String> {
    let iperf3 = find_program("iperf3", "IPERF3_BIN")?;
    let backend_port = free_port()?;
    let _server = Process::spawn(
        "iperf3 server",
        iperf3.clone(),
        Command::new(&iperf3).args([
            "-s",
            "-1",
            "-B",
            "127.0.0.1",
            "-p",
            &backend_port.to_string(),
        ]),
        scratch.path("iperf3-server.log"),
    )
    .and_then(|server| server.wait_listening(backend_port).map(|()| server))?;
    let path = targets::start(target, scratch, backend_port, None)?;

    let report = scratch.path("iperf3-client.json");
    let _ = std::fs::remove_file(&report);
    let cpu_before = path.proxy.as_ref().map(Process::cpu).transpose()?;
    let mut client = Process::spawn(
        "iperf3 client",
        iperf3.clone(),
        Command::new(&iperf3)
            .args(["-c", "127.0.0.1", "-J", "--logfile"])
            .arg(&report)
            .args(["-p", &path.port.to_string()])
            .args(["-t", &seconds.to_string()])
            .args(["-P", &streams.to_string()]),
        scratch.path("iperf3-client.log"),
    )?;
    let status = client
        .exit(Duration::from_secs(seconds) + CLIENT_SLACK)
        .await?;
    let proxy_cpu = match (&path.proxy, cpu_before) {
        (Some(proxy), Some(before)) => Some(proxy.cpu()?.saturating_sub(before)),
        _ => None,
    };
    let (bits_per_second, bytes) = parse_report(&report).map_err(|error| {
        format!(
            "iperf3 client ({status}) through {}: {error}{}",
            target.label(),
            match &path.proxy {
                Some(proxy) => format!("\n  proxy stderr:\n{}", proxy.log_tail()),
                None => String::new(),
            }
        )
    })?;
    Ok(BulkRun {
        bits_per_second,
        bytes,
        proxy_cpu,
    })
}

/// `end.sum_received.bits_per_second` and `.bytes` from iperf3's JSON report.
fn parse_report(path: &Path) -> Result<(f64, f64), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|error| format!("bad JSON report: {error}"))?;
    if let Some(error) = json.get("error").and_then(|e| e.as_str()) {
        return Err(format!("iperf3 says: {error}"));
    }
    let sum = &json["end"]["sum_received"];
    match (sum["bits_per_second"].as_f64(), sum["bytes"].as_f64()) {
        (Some(bps), Some(bytes)) if bps > 0.0 => Ok((bps, bytes)),
        _ => Err("no end.sum_received in the report".into()),
    }
}

/// Streams through `target` over one TLS connection of `tls`'s version (full handshake, then
/// [`TLS_CHUNK`] writes) for `seconds`, then close_notify and FIN, to a plaintext sink; the rate
/// is the bytes the sink received over the time from the first write to the sink reading the
/// end. The proxy's CPU is read after the handshake, so it is the bulk's alone.
pub async fn tls_run(
    scratch: &Scratch,
    target: Target,
    tls: &Tls,
    seconds: u64,
) -> Result<BulkRun, String> {
    let sink = Backend::start(Serve::Sink)?;
    let path = targets::start(target, scratch, sink.port, tls.server_tls())?;
    let addr = SocketAddr::from(([127, 0, 0, 1], path.port));
    let failed = |what: &str, error: std::io::Error| {
        format!("TLS bulk through {}: {what}: {error}", target.label())
    };
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|error| failed("connect", error))?;
    let mut stream = tls
        .wrap(tcp)
        .await
        .map_err(|error| failed("handshake", error))?;

    let cpu_before = path.proxy.as_ref().map(Process::cpu).transpose()?;
    let chunk = vec![0x5a; TLS_CHUNK];
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let streaming = async {
        while Instant::now() < deadline {
            stream.write_all(&chunk).await?;
        }
        stream.shutdown().await
    };
    tokio::time::timeout(Duration::from_secs(seconds) + CLIENT_SLACK, streaming)
        .await
        .map_err(|_| format!("TLS bulk through {}: writes stalled", target.label()))?
        .map_err(|error| failed("write", error))?;
    // The sink has it all once it has read the end the proxy passed on.
    let ended = Instant::now() + CLIENT_SLACK;
    while sink.finished() == 0 {
        if Instant::now() > ended {
            return Err(format!(
                "TLS bulk through {}: the sink never saw the stream end",
                target.label()
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    let proxy_cpu = match (&path.proxy, cpu_before) {
        (Some(proxy), Some(before)) => Some(proxy.cpu()?.saturating_sub(before)),
        _ => None,
    };
    let bytes = sink.received() as f64;
    if bytes == 0.0 {
        return Err(format!(
            "TLS bulk through {}: the sink received nothing",
            target.label()
        ));
    }
    Ok(BulkRun {
        bits_per_second: bytes * 8.0 / elapsed.as_secs_f64(),
        bytes,
        proxy_cpu,
    })
}
