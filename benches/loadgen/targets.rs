//! What the benches put between a client and its backend: nothing (direct), HAProxy as shipped,
//! HAProxy with splice, NGINX stream, or brokerside, each a child process on a loopback port with
//! a config generated into the scratch directory; and mosquitto, the MQTT broker behind them.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

use super::procs::{Process, Scratch, find_program, free_port};
use super::tls::ServerTls;

/// One column of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// No proxy: clients connect to the backend itself.
    Direct,
    /// HAProxy `mode tcp`, as shipped.
    Haproxy,
    /// HAProxy with `option splice-request` and `option splice-response`.
    HaproxySplice,
    /// NGINX `stream { proxy_pass }`.
    Nginx,
    /// The release brokerside binary.
    Brokerside,
}

impl Target {
    /// Every target, in the order of the table's columns.
    pub const ALL: [Target; 5] = [
        Target::Direct,
        Target::Haproxy,
        Target::HaproxySplice,
        Target::Nginx,
        Target::Brokerside,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Haproxy => "HAProxy",
            Target::HaproxySplice => "HAProxy+splice",
            Target::Nginx => "NGINX",
            Target::Brokerside => "brokerside",
        }
    }

    /// The name of the scratch files and log of this target's process.
    fn file_stem(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Haproxy => "haproxy",
            Target::HaproxySplice => "haproxy-splice",
            Target::Nginx => "nginx",
            Target::Brokerside => "brokerside",
        }
    }
}

/// Where clients connect for one measurement, and the proxy process if there is one.
pub struct Path {
    pub port: u16,
    pub proxy: Option<Process>,
}

/// Starts `target` relaying a fresh loopback port to 127.0.0.1:`backend_port` and waits until it
/// listens; with `tls`, it terminates TLS with that certificate, accepting that version and
/// newer, and relays plaintext. Direct
/// starts nothing: clients get the backend's own port (and there is no TLS to terminate).
pub fn start(
    target: Target,
    scratch: &Scratch,
    backend_port: u16,
    tls: Option<ServerTls<'_>>,
) -> Result<Path, String> {
    if target == Target::Direct {
        if tls.is_some() {
            return Err("direct has no proxy to terminate TLS".into());
        }
        return Ok(Path {
            port: backend_port,
            proxy: None,
        });
    }
    let port = free_port()?;
    let proxy = match target {
        Target::Direct => unreachable!("handled above"),
        Target::Haproxy => start_haproxy(scratch, port, backend_port, false, tls)?,
        Target::HaproxySplice => start_haproxy(scratch, port, backend_port, true, tls)?,
        Target::Nginx => start_nginx(scratch, port, backend_port, tls)?,
        Target::Brokerside => start_brokerside(scratch, port, backend_port, tls)?,
    };
    // Watch the socket table rather than connect: a probe connection would be the first client.
    proxy.wait_listening(port)?;
    Ok(Path {
        port,
        proxy: Some(proxy),
    })
}

/// The proxy binary under test: `BROKERSIDE_BIN`, else the release binary cargo built for the
/// bench (cargo builds the package's binaries, with the bench's own profile, before a bench).
pub fn brokerside_bin() -> PathBuf {
    match std::env::var_os("BROKERSIDE_BIN") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env!("CARGO_BIN_EXE_brokerside")),
    }
}

/// brokerside with one listener on `port` relaying to `backend_port`: admin on a free port, no
/// checks, a drain that does not wait; with `tls`, a `[listener.tls]` with that certificate and
/// `min_version`.
pub fn start_brokerside(
    scratch: &Scratch,
    port: u16,
    backend_port: u16,
    tls: Option<ServerTls<'_>>,
) -> Result<Process, String> {
    let mut text = brokerside_config(port, backend_port, 0, None);
    if let Some(ServerTls { files, min_version }) = tls {
        // `[listener.tls]` belongs to the last `[[listener]]` defined, wherever it comes.
        text.push_str(&format!(
            "\n[listener.tls]\n\
             cert = \"{}\"\n\
             key = \"{}\"\n\
             min_version = \"{}\"\n",
            files.cert.display(),
            files.key.display(),
            min_version.number()
        ));
    }
    spawn_brokerside(scratch, &text).map(|(process, _config)| process)
}

/// The same brokerside with its admin endpoint on 127.0.0.1:`admin_port` and
/// `[drain] close_rate = RELOAD_CLOSE_RATES[0]`, for a bench that reloads it: returns the process
/// and the config file, which [`brokerside_config`] with the other close rate rewrites
/// harmlessly. Waits until the relay port listens.
pub fn start_brokerside_with_admin(
    scratch: &Scratch,
    port: u16,
    backend_port: u16,
    admin_port: u16,
) -> Result<(Process, PathBuf), String> {
    let text = brokerside_config(port, backend_port, admin_port, Some(RELOAD_CLOSE_RATES[0]));
    let (process, config) = spawn_brokerside(scratch, &text)?;
    process.wait_listening(port)?;
    Ok((process, config))
}

/// Two `[drain] close_rate` values a reload bench alternates between: valid, different (so each
/// rewrite changes the file's SHA-256) and without effect while nothing drains.
pub const RELOAD_CLOSE_RATES: [u32; 2] = [500, 501];

/// The config every bench runs brokerside with: one listener on `port` relaying to
/// `backend_port`, admin on 127.0.0.1:`admin_port` (0: any free port), no checks, a drain that
/// does not wait, and `close_rate` when given (else the default).
pub fn brokerside_config(
    port: u16,
    backend_port: u16,
    admin_port: u16,
    close_rate: Option<u32>,
) -> String {
    let close_rate = close_rate
        .map(|rate| format!("close_rate = {rate}\n"))
        .unwrap_or_default();
    format!(
        "[admin]\n\
         listen = \"127.0.0.1:{admin_port}\"\n\
         \n\
         [[listener]]\n\
         name = \"mqtt\"\n\
         listen = \"127.0.0.1:{port}\"\n\
         backend = \"broker\"\n\
         \n\
         [[backend]]\n\
         name = \"broker\"\n\
         servers = [\"127.0.0.1:{backend_port}\"]\n\
         \n\
         [drain]\n\
         lb_grace = \"0s\"\n\
         deadline = \"1s\"\n\
         {close_rate}"
    )
}

/// Writes `text` as brokerside's config in the scratch directory and starts the release binary
/// on it; returns the process and the config's path.
pub fn spawn_brokerside(scratch: &Scratch, text: &str) -> Result<(Process, PathBuf), String> {
    let program = brokerside_bin();
    let stem = Target::Brokerside.file_stem();
    let config = scratch.write(&format!("{stem}.toml"), text)?;
    let process = Process::spawn(
        "brokerside",
        program.clone(),
        Command::new(&program)
            .args(["--log-level", "warn", "run", "--config"])
            .arg(&config),
        scratch.path(&format!("{stem}.log")),
    )?;
    Ok((process, config))
}

/// HAProxy in the foreground (`-db`), one process with two threads, `mode tcp`; with `tls`,
/// `bind ... ssl crt` with the certificate and key in one file and `ssl-min-ver`.
fn start_haproxy(
    scratch: &Scratch,
    port: u16,
    backend_port: u16,
    splice: bool,
    tls: Option<ServerTls<'_>>,
) -> Result<Process, String> {
    let program = find_program("haproxy", "HAPROXY_BIN")?;
    let stem = if splice {
        Target::HaproxySplice.file_stem()
    } else {
        Target::Haproxy.file_stem()
    };
    let splice_options = if splice {
        "    option splice-request\n    option splice-response\n"
    } else {
        ""
    };
    let ssl = tls
        .map(|ServerTls { files, min_version }| {
            format!(
                " ssl crt {} ssl-min-ver {}",
                files.combined.display(),
                min_version.haproxy_min_ver()
            )
        })
        .unwrap_or_default();
    // Timeouts longer than any idle phase of a bench. maxconn 40000 asks for more fds than this
    // machine's cap of 20,000; HAProxy refuses to start on that unless told `no strict-limits`,
    // and then runs with the 20,000 it gets (which the benches stay under).
    let config = scratch.write(
        &format!("{stem}.cfg"),
        &format!(
            "global\n\
             \x20   maxconn 40000\n\
             \x20   nbthread 2\n\
             \x20   no strict-limits\n\
             \n\
             defaults\n\
             \x20   mode tcp\n\
             \x20   timeout connect 5s\n\
             \x20   timeout client 10m\n\
             \x20   timeout server 10m\n\
             \n\
             listen relay\n\
             \x20   bind 127.0.0.1:{port}{ssl}\n\
             {splice_options}\
             \x20   server broker 127.0.0.1:{backend_port}\n"
        ),
    )?;
    Process::spawn(
        if splice { "HAProxy+splice" } else { "HAProxy" },
        program.clone(),
        Command::new(&program).arg("-db").arg("-f").arg(&config),
        scratch.path(&format!("{stem}.log")),
    )
}

/// The stream module's shared object, where Debian's libnginx-mod-stream puts it.
const NGINX_STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

/// NGINX in the foreground with a master and two workers, one `stream` server; with `tls`,
/// `listen ... ssl` with the certificate and `ssl_protocols` from the minimum version up.
fn start_nginx(
    scratch: &Scratch,
    port: u16,
    backend_port: u16,
    tls: Option<ServerTls<'_>>,
) -> Result<Process, String> {
    let program = find_program("nginx", "NGINX_BIN")?;
    let stem = Target::Nginx.file_stem();
    // Debian builds the stream module dynamic; a build with it compiled in needs no load_module.
    let load_module = if std::path::Path::new(NGINX_STREAM_MODULE).is_file() {
        format!("load_module {NGINX_STREAM_MODULE};\n")
    } else {
        String::new()
    };
    let (listen_ssl, ssl) = match tls {
        Some(ServerTls { files, min_version }) => (
            " ssl",
            format!(
                "\x20       ssl_certificate {};\n\
                 \x20       ssl_certificate_key {};\n\
                 \x20       ssl_protocols {};\n",
                files.cert.display(),
                files.key.display(),
                min_version.nginx_protocols()
            ),
        ),
        None => ("", String::new()),
    };
    let prefix = scratch.path(stem);
    std::fs::create_dir_all(prefix.join("logs"))
        .map_err(|error| format!("cannot create {}: {error}", prefix.display()))?;
    let config = scratch.write(
        &format!("{stem}.conf"),
        &format!(
            "{load_module}\
             worker_processes 2;\n\
             worker_rlimit_nofile 20000;\n\
             daemon off;\n\
             pid {pid};\n\
             error_log {error_log} warn;\n\
             events {{ worker_connections 20000; }}\n\
             stream {{\n\
             \x20   server {{\n\
             \x20       listen 127.0.0.1:{port}{listen_ssl};\n\
             {ssl}\
             \x20       proxy_pass 127.0.0.1:{backend_port};\n\
             \x20   }}\n\
             }}\n",
            pid = prefix.join("nginx.pid").display(),
            error_log = scratch.path(&format!("{stem}.log")).display(),
        ),
    )?;
    Process::spawn(
        "NGINX",
        program.clone(),
        Command::new(&program)
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&config)
            // Debian's default error log path is outside the prefix; this one is in scratch.
            .args(["-e", "stderr"]),
        scratch.path(&format!("{stem}.stderr.log")),
    )
}

/// mosquitto on `port` with a minimal config: anonymous, unlimited connections, no disk.
pub fn start_broker(scratch: &Scratch, port: u16) -> Result<Process, String> {
    let program = find_program("mosquitto", "MOSQUITTO_BIN")?;
    let config = scratch.write(
        "mosquitto.conf",
        &format!(
            "allow_anonymous true\n\
             persistence false\n\
             log_dest stderr\n\
             log_type error\n\
             log_type warning\n\
             listener {port} 127.0.0.1\n\
             max_connections -1\n"
        ),
    )?;
    let broker = Process::spawn(
        "mosquitto",
        program.clone(),
        Command::new(&program).arg("-c").arg(&config),
        scratch.path("mosquitto.log"),
    )?;
    broker.wait_listening(port)?;
    Ok(broker)
}
