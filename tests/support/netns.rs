//! Other hosts for real: network namespaces joined to the test's own namespace by a veth pair
//! each, links cut with `ip link set down` and impaired with `tc ... netem`, programs run inside
//! with `ip netns exec`, and a tokio runtime on a thread that entered a namespace, so that sockets
//! its tasks create (a rumqttc client's) belong to that namespace.
//!
//! Every name carries the test process's id: namespaces are `bsfaults-<pid>-<tag>`, devices
//! `bf<pid><kind><n>`, and each link is a /30 of 10.213.0.0/16 that no device of this host holds
//! yet. Traffic goes only to those addresses. Dropping a [`Netns`] (also while a failed assertion
//! unwinds) stops what runs inside, deletes the namespace and the host-side devices; leftovers of
//! a test process that was killed are deleted by the next one.
//!
//! Needs root and iproute2. Where the kernel has no sch_netem, [`Netns::impairable`] gives a link
//! of two TUN devices instead, whose packets the test process carries across itself, dropping
//! and delaying them as netem would.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::WAIT;

/// Every namespace of these tests is named `<PREFIX>-<pid>-<tag>`.
const PREFIX: &str = "bsfaults";

/// The path of a program of the base system, also where `PATH` leaves out the sbin directories.
pub fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Runs `program args`; its stdout, or what went wrong with its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let path = tool(program).ok_or_else(|| format!("no `{program}` program on this host"))?;
    let output = Command::new(&path)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{program} {}: {e}", args.join(" ")))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// `ip args`, which must succeed.
fn ip(args: &[&str]) -> String {
    run("ip", args).unwrap_or_else(|e| panic!("{e}"))
}

/// `ip -n ns args`, which must succeed.
fn ip_in(ns: &str, args: &[&str]) -> String {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    ip(&all)
}

/// Fails the test, saying why, unless this process can create network namespaces (root and
/// iproute2). Checked once per process; also deletes what killed test processes left behind.
pub fn require() {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(why) = CHECKED.get_or_init(check) {
        panic!(
            "these tests run brokers and clients in network namespaces, and this host cannot \
             create one: {why}"
        );
    }
}

fn check() -> Result<(), String> {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Err(format!(
            "not running as root (euid {euid}); `ip netns add` needs CAP_SYS_ADMIN. Run the \
             tests as root, as CI does"
        ));
    }
    if tool("ip").is_none() {
        return Err("no `ip` program: apt-get install iproute2".into());
    }
    sweep_stale();
    let probe = format!("{PREFIX}-{}-probe", std::process::id());
    run("ip", &["netns", "add", &probe])?;
    let up = run("ip", &["-n", &probe, "link", "set", "lo", "up"]);
    let deleted = run("ip", &["netns", "del", &probe]);
    up.and(deleted).map(|_| ())
}

/// Whether `tc qdisc ... netem` works here: Ok, or why not (no `tc`, or a kernel without
/// sch_netem). Checked once per process, on the loopback of a namespace of its own.
pub fn netem() -> Result<(), String> {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    CHECKED
        .get_or_init(|| {
            require();
            if tool("tc").is_none() {
                return Err("no `tc` program: apt-get install iproute2".into());
            }
            let ns = Netns::new("netem");
            run(
                "tc",
                &[
                    "-n", &ns.name, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms",
                ],
            )
            .map(|_| ())
            .map_err(|e| {
                format!(
                    "{e} (an unknown qdisc kind: the kernel has no sch_netem, CONFIG_NET_SCH_NETEM)"
                )
            })
        })
        .clone()
}

/// Whether process `pid` is running.
fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The test process id in one of our names (`bsfaults-<pid>-...`, `bf<pid><kind><n>`).
fn owner(name: &str) -> Option<u32> {
    if let Some(rest) = name.strip_prefix(&format!("{PREFIX}-")) {
        return rest.split('-').next()?.parse().ok();
    }
    let rest = name.strip_prefix("bf")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let tail = &rest[digits.len()..];
    let mut tail = tail.chars();
    let kind_ok = tail.next().is_some_and(|c| "hptu".contains(c));
    let n: String = tail.collect();
    (kind_ok && !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// Deletes the namespaces and host-side devices of test processes that no longer run.
fn sweep_stale() {
    let namespaces = run("ip", &["netns", "list"]).unwrap_or_default();
    for name in namespaces
        .lines()
        .filter_map(|l| l.split_whitespace().next())
    {
        if owner(name).is_some_and(|pid| !alive(pid)) {
            let _ = run("ip", &["netns", "del", name]);
        }
    }
    let links = run("ip", &["-o", "link", "show"]).unwrap_or_default();
    for line in links.lines() {
        // "12: bf123h0@if11: <...>"
        let Some(name) = line.split(": ").nth(1) else {
            continue;
        };
        let name = name.split('@').next().unwrap_or(name);
        if owner(name).is_some_and(|pid| !alive(pid)) {
            let _ = run("ip", &["link", "del", name]);
        }
    }
}

/// A /30 of 10.213.0.0/16 whose two addresses no device of this namespace holds: `(host, peer)`.
fn next_subnet() -> (Ipv4Addr, Ipv4Addr) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let pid = std::process::id();
    for _ in 0..16_384 {
        let k = (pid
            .wrapping_mul(8)
            .wrapping_add(NEXT.fetch_add(1, Ordering::SeqCst)))
            % 16_384;
        let base = k * 4;
        let (third, fourth) = ((base / 256) as u8, (base % 256) as u8);
        let host = Ipv4Addr::new(10, 213, third, fourth + 1);
        let peer = Ipv4Addr::new(10, 213, third, fourth + 2);
        let held = ip(&["-o", "-4", "addr", "show"]);
        let taken = [host, peer].iter().any(|a| {
            held.contains(&format!("inet {a}/"))
                || held.contains(&format!("inet {a} "))
                || held.contains(&format!("peer {a}/"))
        });
        if !taken {
            return (host, peer);
        }
    }
    panic!("no free /30 left in 10.213.0.0/16");
}

/// A device name of this process: `bf<pid><kind><n>` (at most 15 bytes).
fn device(kind: char) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "bf{}{kind}{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    );
    assert!(name.len() <= 15, "device name {name} too long");
    name
}

/// Runs `f` on a new thread that has entered namespace `ns` (sockets it creates live there).
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let name = ns.to_string();
    std::thread::spawn(move || {
        enter(&name);
        f()
    })
    .join()
    .unwrap_or_else(|_| panic!("the thread in namespace {ns} panicked"))
}

/// Moves the calling thread into namespace `ns` (setns(2) changes one thread only).
fn enter(ns: &str) {
    let path = format!("/run/netns/{ns}");
    let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // SAFETY: setns(2) on a descriptor this function holds open; it changes only the calling
    // thread's network namespace, which the caller dedicates to that namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        panic!("setns {path}: {}", std::io::Error::last_os_error());
    }
}

/// A network namespace: another host. Deleted, with everything in it, when dropped.
pub struct Netns {
    /// Its name for `ip netns` and `ip -n`.
    pub name: String,
    dir: PathBuf,
    devices: Mutex<Vec<String>>,
    children: Mutex<Vec<(String, Child)>>,
    wires: Mutex<Vec<WireThreads>>,
    runtime: OnceLock<NsRuntime>,
}

impl Netns {
    /// A fresh namespace `bsfaults-<pid>-<tag>` with its loopback up.
    pub fn new(tag: &str) -> Netns {
        require();
        let name = format!("{PREFIX}-{}-{tag}", std::process::id());
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        // Constructed before the first command, so that a failure below still deletes it.
        let ns = Netns {
            name,
            dir,
            devices: Mutex::new(Vec::new()),
            children: Mutex::new(Vec::new()),
            wires: Mutex::new(Vec::new()),
            runtime: OnceLock::new(),
        };
        ip(&["netns", "add", &ns.name]);
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// A veth pair between this host (the test's namespace) and the namespace, each end with its
    /// address of a fresh /30 and up.
    pub fn veth(&self) -> Link {
        let (host, peer) = next_subnet();
        let (host_dev, ns_dev) = (device('h'), device('p'));
        self.devices.lock().unwrap().push(host_dev.clone());
        ip(&[
            "link", "add", &host_dev, "type", "veth", "peer", "name", &ns_dev, "netns", &self.name,
        ]);
        ip(&["addr", "add", &format!("{host}/30"), "dev", &host_dev]);
        ip(&["link", "set", &host_dev, "up"]);
        ip_in(
            &self.name,
            &["addr", "add", &format!("{peer}/30"), "dev", &ns_dev],
        );
        ip_in(&self.name, &["link", "set", &ns_dev, "up"]);
        Link {
            host,
            peer,
            ns: self.name.clone(),
            host_dev,
            ns_dev,
            wire: None,
        }
    }

    /// A link whose packets can be lost and delayed: a veth pair when netem works here,
    /// otherwise an emulated one (see [`Netns::wire`]). Says on stdout which.
    pub fn impairable(&self) -> Link {
        match netem() {
            Ok(()) => {
                println!("impairments by tc netem on a veth pair");
                self.veth()
            }
            Err(why) => {
                println!(
                    "tc netem is not available ({why}); impairments are emulated on a TUN pair"
                );
                self.wire()
            }
        }
    }

    /// A point-to-point link of two TUN devices, one here and one in the namespace, whose IP
    /// packets a thread pair of this process carries across: as a cable would, or dropping and
    /// delaying them as set by [`Link::impair`] (netem's `loss` and `delay`, in each direction).
    pub fn wire(&self) -> Link {
        let (host, peer) = next_subnet();
        let (host_dev, ns_dev) = (device('t'), device('u'));
        self.devices.lock().unwrap().push(host_dev.clone());
        let host_tun = open_tun(&host_dev);
        let ns_tun = {
            let ns_dev = ns_dev.clone();
            in_netns(&self.name, move || open_tun(&ns_dev))
        };
        ip(&[
            "addr",
            "add",
            &host.to_string(),
            "peer",
            &format!("{peer}/32"),
            "dev",
            &host_dev,
        ]);
        ip(&["link", "set", &host_dev, "up"]);
        let host_32 = format!("{host}/32");
        ip_in(
            &self.name,
            &[
                "addr",
                "add",
                &peer.to_string(),
                "peer",
                &host_32,
                "dev",
                &ns_dev,
            ],
        );
        ip_in(&self.name, &["link", "set", &ns_dev, "up"]);
        let impairment = Arc::new(Impairment::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (host_tun, ns_tun) = (Arc::new(host_tun), Arc::new(ns_tun));
        let carry = |from: &Arc<File>, to: &Arc<File>, name: String| {
            let (from, to) = (Arc::clone(from), Arc::clone(to));
            let (impairment, stop) = (Arc::clone(&impairment), Arc::clone(&stop));
            std::thread::Builder::new()
                .name(name)
                .spawn(move || carry_packets(&from, &to, &impairment, &stop))
                .expect("spawn a wire thread")
        };
        let threads = vec![
            carry(&ns_tun, &host_tun, format!("wire-{ns_dev}")),
            carry(&host_tun, &ns_tun, format!("wire-{host_dev}")),
        ];
        self.wires
            .lock()
            .unwrap()
            .push(WireThreads { stop, threads });
        Link {
            host,
            peer,
            ns: self.name.clone(),
            host_dev,
            ns_dev,
            wire: Some(impairment),
        }
    }

    /// Writes `text` to file `name` of this namespace's temporary directory; its path.
    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// Starts `program args` inside the namespace (`ip netns exec`), its output in the log
    /// [`Netns::log`] reads as `what`; killed when the namespace is dropped, or when the thread
    /// that started it ends (PR_SET_PDEATHSIG, so that a killed test process leaves no program
    /// running: call it from the test's body, not from a short-lived thread). Returns its pid
    /// (`ip netns exec` execs the program in its place).
    pub fn spawn(&self, what: &str, program: &str, args: &[&str]) -> u32 {
        let package = match program {
            "dnsmasq" => "dnsmasq-base",
            "mosquitto_pub" | "mosquitto_sub" => "mosquitto-clients",
            "ip" | "tc" => "iproute2",
            other => other,
        };
        let program = tool(program).unwrap_or_else(|| {
            panic!("no `{program}` program on this host: apt-get install {package}")
        });
        let log = File::create(self.dir.join(format!("{what}.log"))).expect("a log file");
        let mut command = Command::new(tool("ip").expect("ip"));
        command
            .args(["netns", "exec", &self.name])
            .arg(&program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup the log"))
            .stderr(log);
        // SAFETY: prctl(2) only, between fork and exec: async-signal-safe, no allocation.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
        let pid = child.id();
        self.children
            .lock()
            .unwrap()
            .push((what.to_string(), child));
        pid
    }

    /// Sends `signal` to a program [`Netns::spawn`] started.
    pub fn signal(&self, pid: u32, signal: libc::c_int) {
        let mut children = self.children.lock().unwrap();
        let (what, child) = children
            .iter_mut()
            .find(|(_, c)| c.id() == pid)
            .expect("a program of this namespace");
        assert!(
            child.try_wait().expect("wait").is_none(),
            "{what} has exited:\n{}",
            self.log(what)
        );
        // SAFETY: kill(2) on a child this namespace started and has not reaped.
        let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill -{signal} {what}");
    }

    /// What program `what` wrote so far.
    pub fn log(&self, what: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{what}.log"))).unwrap_or_default()
    }

    /// Waits until `addr` (in this namespace) accepts TCP connections from here: `what`, a
    /// program [`Netns::spawn`] started, is listening. Fails with its log otherwise.
    pub async fn until_listening(&self, what: &str, addr: SocketAddr) {
        let until = Instant::now() + WAIT;
        loop {
            let attempt = tokio::time::timeout(
                Duration::from_millis(500),
                tokio::net::TcpStream::connect(addr),
            )
            .await;
            if matches!(attempt, Ok(Ok(_))) {
                return;
            }
            let exited = self
                .children
                .lock()
                .unwrap()
                .iter_mut()
                .any(|(w, c)| w == what && !matches!(c.try_wait(), Ok(None)));
            if exited || Instant::now() > until {
                panic!(
                    "{what} is not listening on {addr} in {} ({}):\n{}",
                    self.name,
                    if exited { "it exited" } else { "timed out" },
                    self.log(what)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs `future` on this namespace's own runtime (one thread that entered the namespace):
    /// the sockets it and the tasks it spawns create belong to the namespace. What it returns
    /// can be used from the test's runtime, e.g. an [`super::MqttClient`], whose event loop
    /// stays on the namespace's thread.
    pub fn spawn_task<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.runtime
            .get_or_init(|| NsRuntime::start(&self.name))
            .handle
            .spawn(future)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // The runtime's thread holds the namespace (and sockets in it) until it ends.
        drop(self.runtime.take());
        for (what, mut child) in self.children.lock().unwrap().drain(..) {
            let _ = child.kill();
            let _ = child.wait();
            if std::thread::panicking() {
                eprintln!("---- {what} in {}:\n{}", self.name, self.log(&what));
            }
        }
        for wire in self.wires.lock().unwrap().drain(..) {
            wire.stop.store(true, Ordering::SeqCst);
            for thread in wire.threads {
                let _ = thread.join();
            }
        }
        if let Err(e) = run("ip", &["netns", "del", &self.name]) {
            eprintln!("cleanup: {e}");
        }
        // Deleting the namespace deletes the veth pairs with it, unless something still holds
        // it; the host side goes here in any case.
        let links = run("ip", &["-o", "link", "show"]).unwrap_or_default();
        for dev in self.devices.lock().unwrap().iter() {
            let present =
                links.contains(&format!(": {dev}:")) || links.contains(&format!(": {dev}@"));
            if let Err(e) = present
                .then(|| run("ip", &["link", "del", dev]))
                .transpose()
            {
                eprintln!("cleanup: {e}");
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One link between this host and a namespace: `host` is this side's address, `peer` the
/// namespace's.
#[derive(Clone)]
pub struct Link {
    /// The address on this side (the test's namespace).
    pub host: Ipv4Addr,
    /// The address inside the namespace.
    pub peer: Ipv4Addr,
    ns: String,
    host_dev: String,
    ns_dev: String,
    wire: Option<Arc<Impairment>>,
}

impl Link {
    /// Cuts the link at the namespace's end (`ip link set <veth> down` there): packets to it
    /// vanish, as when a cable or a switch port fails between two hosts.
    pub fn cut(&self) {
        ip(&["-n", &self.ns, "link", "set", "dev", &self.ns_dev, "down"]);
    }

    /// Puts the namespace's end back up.
    pub fn restore(&self) {
        ip(&["-n", &self.ns, "link", "set", "dev", &self.ns_dev, "up"]);
    }

    /// Loses `loss_percent` of the packets and delays the others by `delay`, in both directions
    /// (`tc qdisc add dev <each end> root netem loss <loss>% delay <delay>`, or the same
    /// emulated on a wire).
    pub fn impair(&self, loss_percent: u32, delay: Duration) -> Result<(), String> {
        if let Some(wire) = &self.wire {
            wire.loss_ppm.store(loss_percent * 10_000, Ordering::SeqCst);
            wire.delay_us
                .store(delay.as_micros() as u64, Ordering::SeqCst);
            return Ok(());
        }
        let (loss, delay) = (
            format!("{loss_percent}%"),
            format!("{}ms", delay.as_millis()),
        );
        let netem = ["root", "netem", "loss", &loss, "delay", &delay];
        let mut in_ns = vec!["-n", &self.ns, "qdisc", "add", "dev", &self.ns_dev];
        in_ns.extend_from_slice(&netem);
        run("tc", &in_ns)?;
        let mut here = vec!["qdisc", "add", "dev", &self.host_dev];
        here.extend_from_slice(&netem);
        run("tc", &here)?;
        Ok(())
    }

    /// From now on loses every TCP reset, both ways; a wire's only (see [`Netns::wire`]).
    pub fn drop_resets(&self) {
        let wire = self
            .wire
            .as_ref()
            .expect("resets are dropped on a wire only");
        wire.drop_resets.store(true, Ordering::SeqCst);
    }

    /// TCP resets the link has lost.
    pub fn resets_dropped(&self) -> u64 {
        self.wire
            .as_ref()
            .map_or(0, |wire| wire.resets_dropped.load(Ordering::SeqCst))
    }

    /// How the link is impaired: `"netem"` or `"emulated"` (a wire).
    pub fn how(&self) -> &'static str {
        if self.wire.is_some() {
            "emulated"
        } else {
            "netem"
        }
    }

    /// Packets offered to the link since it was impaired, and how many of them it dropped,
    /// both directions.
    pub fn packets(&self) -> (u64, u64) {
        if let Some(wire) = &self.wire {
            return (
                wire.offered.load(Ordering::SeqCst),
                wire.dropped.load(Ordering::SeqCst),
            );
        }
        // "Sent 1234 bytes 12 pkt (dropped 3, overlimits 0 requeues 0)" per netem qdisc.
        let number = |text: &str, after: &str, word: usize| -> u64 {
            text.split(after)
                .nth(1)
                .and_then(|rest| rest.split_whitespace().nth(word))
                .and_then(|n| n.trim_end_matches(',').parse().ok())
                .unwrap_or(0)
        };
        let shown = [
            run(
                "tc",
                &["-s", "-n", &self.ns, "qdisc", "show", "dev", &self.ns_dev],
            ),
            run("tc", &["-s", "qdisc", "show", "dev", &self.host_dev]),
        ];
        shown.iter().fold((0, 0), |(offered, dropped), shown| {
            let shown = shown.as_deref().unwrap_or("");
            let (sent, lost) = (number(shown, "Sent ", 2), number(shown, "(dropped ", 0));
            (offered + sent + lost, dropped + lost)
        })
    }
}

/// How a wire treats the packets it carries.
#[derive(Default)]
struct Impairment {
    /// Packets lost, per million.
    loss_ppm: AtomicU32,
    /// Delay of every packet, µs.
    delay_us: AtomicU64,
    /// Packets read while impaired.
    offered: AtomicU64,
    /// Packets dropped so far.
    dropped: AtomicU64,
    /// Lose every TCP reset, as a stateful firewall does one outside its window.
    drop_resets: AtomicBool,
    /// TCP resets lost so far.
    resets_dropped: AtomicU64,
}

/// Whether `packet` is an IPv4 TCP segment with RST set.
fn is_tcp_reset(packet: &[u8]) -> bool {
    let header = usize::from(packet.first().map_or(0, |b| b & 0x0f)) * 4;
    packet.first().is_some_and(|b| b >> 4 == 4)
        && packet.get(9) == Some(&6)
        && packet
            .get(header + 13)
            .is_some_and(|flags| flags & 0x04 != 0)
}

struct WireThreads {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// Opens TUN device `name` (IP packets, no packet-info header) in the calling thread's
/// namespace; it exists while the descriptor is open.
fn open_tun(name: &str) -> File {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .unwrap_or_else(|e| panic!("open /dev/net/tun: {e}"));
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        flags: libc::c_short,
        pad: [u8; 22],
    }
    let mut request = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short,
        pad: [0; 22],
    };
    request.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which IfReq lays out (name, flags,
    // padding to 40 bytes), on a descriptor this function holds.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut request) };
    if rc != 0 {
        panic!("TUNSETIFF {name}: {}", std::io::Error::last_os_error());
    }
    file
}

/// Carries packets from `from` to `to` until `stop`: each lost with the wire's probability or
/// written out once its delay has passed, in order.
fn carry_packets(from: &File, to: &File, impairment: &Impairment, stop: &AtomicBool) {
    let mut queue: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut buf = vec![0u8; 65_536];
    let (mut reader, mut writer) = (from, to);
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        while queue.front().is_some_and(|(due, _)| *due <= now) {
            let (_, packet) = queue.pop_front().expect("a packet");
            // A device that is down refuses it: lost, as on a cut cable.
            let _ = writer.write(&packet);
        }
        let wait = queue
            .front()
            .map(|(due, _)| due.saturating_duration_since(now))
            .unwrap_or(Duration::from_millis(50))
            .min(Duration::from_millis(50));
        let mut poll = libc::pollfd {
            fd: from.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let timeout = wait.as_micros().div_ceil(1000) as libc::c_int;
        // SAFETY: poll(2) on one pollfd that lives across the call.
        let ready = unsafe { libc::poll(&mut poll, 1, timeout) };
        if ready <= 0 || poll.revents & libc::POLLIN == 0 {
            continue;
        }
        let Ok(n) = reader.read(&mut buf) else {
            continue;
        };
        if impairment.drop_resets.load(Ordering::SeqCst) && is_tcp_reset(&buf[..n]) {
            impairment.resets_dropped.fetch_add(1, Ordering::SeqCst);
            continue;
        }
        let loss = impairment.loss_ppm.load(Ordering::SeqCst);
        let delay = Duration::from_micros(impairment.delay_us.load(Ordering::SeqCst));
        if loss > 0 || !delay.is_zero() {
            impairment.offered.fetch_add(1, Ordering::SeqCst);
        }
        if loss > 0 && fastrand::u32(0..1_000_000) < loss {
            impairment.dropped.fetch_add(1, Ordering::SeqCst);
            continue;
        }
        queue.push_back((Instant::now() + delay, buf[..n].to_vec()));
    }
}

/// A current-thread tokio runtime on a thread inside a namespace, until dropped.
struct NsRuntime {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl NsRuntime {
    fn start(ns: &str) -> NsRuntime {
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let name = ns.to_string();
        let thread = std::thread::Builder::new()
            .name(format!("netns-{ns}"))
            .spawn(move || {
                enter(&name);
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime in the namespace");
                handle_tx
                    .send(runtime.handle().clone())
                    .expect("send the handle");
                let _ = runtime.block_on(stopped);
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .expect("spawn the namespace's thread");
        NsRuntime {
            handle: handle_rx.recv().expect("the namespace's runtime"),
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for NsRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
