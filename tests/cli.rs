//! The binary as an operator meets it: version, a port already in use, logs, SIGTERM.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Every config here puts the admin endpoint on a free loopback port, so tests never contend
/// for 8080.
const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n";

fn brokerside() -> Command {
    Command::new(env!("CARGO_BIN_EXE_brokerside"))
}

fn write_config(dir: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("brokerside-cli-{dir}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("brokerside.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[test]
fn version_is_printed() {
    let output = brokerside().arg("--version").output().expect("runs");
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("brokerside {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn a_port_in_use_names_the_listener_and_address() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let config = write_config(
        "in-use",
        &format!(
            "{ADMIN}[[listener]]\nname = \"mqtt\"\nlisten = \"{addr}\"\nbackend = \"b\"\n\
             [[backend]]\nname = \"b\"\nservers = [\"127.0.0.1:1\"]\n"
        ),
    );
    let output = brokerside()
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "listener `mqtt` cannot listen on {addr}: the address is already in use"
        )),
        "{stderr}"
    );
}

#[test]
fn an_invalid_config_exits_2_before_binding() {
    let port = free_port();
    let config = write_config(
        "invalid",
        &format!(
            "[[listener]]\nname = \"mqtt\"\nlisten = \"127.0.0.1:{port}\"\nbackend = \"nope\"\n"
        ),
    );
    let output = brokerside()
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).trim(),
        "listener[0].backend: no [[backend]] is named `nope`"
    );
}

#[test]
fn sigterm_closes_the_listeners_and_exits_0_with_json_logs() {
    let port = free_port();
    let listen: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let config = write_config(
        "sigterm",
        &format!(
            "{ADMIN}[[listener]]\nname = \"mqtt\"\nlisten = \"{listen}\"\nbackend = \"b\"\n\
             [[backend]]\nname = \"b\"\nservers = [\"127.0.0.1:1\"]\n[drain]\nlb_grace = \"0s\"\ndeadline = \"5s\"\n"
        ),
    );
    let mut child = brokerside()
        .args(["--log-format", "json", "run", "--config"])
        .arg(&config)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns");
    let started = Instant::now();
    while TcpStream::connect(listen).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the listener never opened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // SIGHUP (a supervisor's "config changed") must not end the process.
    // SAFETY: kill(2) on the pid of a child this test owns and has not reaped.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGHUP) };
    assert_eq!(rc, 0);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        child.try_wait().expect("wait").is_none(),
        "SIGHUP ended the process"
    );
    assert!(
        TcpStream::connect(listen).is_ok(),
        "not listening after SIGHUP"
    );
    // SAFETY: as above.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let stderr = child.stderr.take().expect("piped");
    let status = child.wait().expect("exits");
    assert_eq!(status.code(), Some(0));
    assert!(
        TcpStream::connect(listen).is_err(),
        "the port is still open after exit"
    );
    let lines: Vec<serde_json::Value> = BufReader::new(stderr)
        .lines()
        .map(|line| serde_json::from_str(&line.expect("log line")).expect("every log line is JSON"))
        .collect();
    let messages: Vec<&str> = lines
        .iter()
        .filter_map(|l| l["fields"]["message"].as_str())
        .collect();
    assert!(messages.contains(&"listening"), "{messages:?}");
    assert!(messages.contains(&"SIGTERM received"), "{messages:?}");
    assert!(messages.contains(&"stopped"), "{messages:?}");
    assert!(
        messages.iter().any(|m| m.starts_with("SIGHUP received")),
        "{messages:?}"
    );
}

#[test]
fn check_config_on_a_fifo_says_so_instead_of_waiting_for_a_writer() {
    let dir = std::env::temp_dir().join(format!("brokerside-cli-fifo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let fifo = dir.join("brokerside.toml");
    let _ = std::fs::remove_file(&fifo);
    let path = std::ffi::CString::new(fifo.to_str().expect("utf-8 path")).expect("no NUL");
    // SAFETY: mkfifo(3) with a valid NUL-terminated path this test owns.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0, "mkfifo");
    let mut child = brokerside()
        .arg("check-config")
        .arg(&fifo)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("check-config on a FIFO still waits after 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("read stderr");
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not a regular file"), "{stderr}");
    assert!(stderr.contains(fifo.to_str().expect("utf-8")), "{stderr}");
    let _ = std::fs::remove_file(&fifo);
}
