#!/usr/bin/env bash
# Interop: brokerside discovering peers from a real DNS server, Debian's dnsmasq, as it would from
# Consul's DNS (SRV records for a service, the targets' A records) and from a Kubernetes headless
# service (several A records under one name). dnsmasq serves them on a free loopback port;
# brokerside runs with two `[[discovery]] kind = "dns"` sources pointed at it, and its
# `GET /peers?format=nodes` must list exactly the expected node names.
#
# Installs dnsmasq if missing (apt-get; sudo only when not root). Never touches /etc/resolv.conf,
# port 53 or a system dnsmasq service: everything runs from a temporary directory and is stopped
# on exit. BROKERSIDE_BIN picks the binary; by default `cargo build` and target/debug/brokerside.
# Exits 0 when the lists match, non-zero with the reason and both logs otherwise.
set -euo pipefail
cd "$(dirname "$0")/../.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
fail() {
    echo "dnsmasq interop: FAILED: $*" >&2
    exit 1
}

for tool in curl python3; do
    command -v "$tool" >/dev/null 2>&1 || fail "$tool is needed (apt-get install $tool)"
done
DNSMASQ=$(command -v dnsmasq 2>/dev/null || true)
if [ -z "$DNSMASQ" ] && [ -x /usr/sbin/dnsmasq ]; then DNSMASQ=/usr/sbin/dnsmasq; fi
if [ -z "$DNSMASQ" ]; then
    echo "== installing dnsmasq"
    as_root apt-get update -qq
    # dnsmasq-base: the program alone, without the package that starts a system service.
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dnsmasq-base >/dev/null
    DNSMASQ=$(command -v dnsmasq 2>/dev/null || echo /usr/sbin/dnsmasq)
    [ -x "$DNSMASQ" ] || fail "dnsmasq did not install"
fi

if [ -n "${BROKERSIDE_BIN:-}" ]; then
    BIN=$BROKERSIDE_BIN
else
    echo "== cargo build"
    cargo build --quiet --bin brokerside
    BIN=${CARGO_TARGET_DIR:-target}/debug/brokerside
fi
[ -x "$BIN" ] || fail "no brokerside binary at $BIN"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/brokerside-dnsmasq.XXXXXX")
DNSMASQ_PID=""
BROKERSIDE_PID=""
cleanup() {
    local status=$?
    for pid in "$BROKERSIDE_PID" "$DNSMASQ_PID"; do
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    if [ "$status" -ne 0 ]; then
        for log in dnsmasq brokerside; do
            if [ -f "$WORK/$log.log" ]; then
                echo "---- $log log (last 40 lines)" >&2
                tail -n 40 "$WORK/$log.log" >&2 || true
            fi
        done
    fi
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A port free on 127.0.0.1 for both UDP and TCP (DNS uses both on one port).
free_port() {
    python3 - <<'EOF'
import socket
while True:
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 0))
    port = tcp.getsockname()[1]
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        udp.bind(("127.0.0.1", port))
    except OSError:
        continue
    print(port)
    break
EOF
}
DNS_PORT=$(free_port)
ADMIN_PORT=$(free_port)
MQTT_PORT=$(free_port)
BROKER_PORT=$(free_port) # nothing listens there: the local broker is not needed here

echo "== dnsmasq on 127.0.0.1:$DNS_PORT"
# Consul-style: SRV records for _emqx._tcp.service.consul (dnsmasq's SRV form; Consul answers
# the same records for emqx.service.consul too), targets with their own A records. Kubernetes
# style: two A records under one headless-service name. Nothing else is answered: no upstream,
# no /etc/hosts, no config file.
"$DNSMASQ" --keep-in-foreground --log-facility=- --log-queries \
    --port="$DNS_PORT" --listen-address=127.0.0.1 --bind-interfaces \
    --no-resolv --no-hosts --conf-file=/dev/null --pid-file="$WORK/dnsmasq.pid" \
    --srv-host=_emqx._tcp.service.consul,emqx-a.node.dc1.consul,1883 \
    --srv-host=_emqx._tcp.service.consul,emqx-b.node.dc1.consul,1884 \
    --host-record=emqx-a.node.dc1.consul,127.0.0.5 \
    --host-record=emqx-b.node.dc1.consul,127.0.0.6 \
    --host-record=emqx-headless.brokerside.svc.cluster.local,127.0.0.7 \
    --host-record=emqx-headless.brokerside.svc.cluster.local,127.0.0.8 \
    >"$WORK/dnsmasq.log" 2>&1 &
DNSMASQ_PID=$!

cat >"$WORK/brokerside.toml" <<EOF
[admin]
listen = "127.0.0.1:$ADMIN_PORT"

[drain]
lb_grace = "0s"

[[listener]]
name = "mqtt"
listen = "127.0.0.1:$MQTT_PORT"
backend = "broker"

[[backend]]
name = "broker"
servers = ["127.0.0.1:$BROKER_PORT"]
peers = "consul"

[[discovery]]
name = "consul"
kind = "dns"
record = "srv"
query = "_emqx._tcp.service.consul"
nameservers = ["127.0.0.1:$DNS_PORT"]
node_name = "emqx@{host}"
interval = "200ms"

[[discovery]]
name = "k8s"
kind = "dns"
record = "a"
query = "emqx-headless.brokerside.svc.cluster.local"
port = 1883
nameservers = ["127.0.0.1:$DNS_PORT"]
node_name = "app@{ip}"
interval = "200ms"
EOF

echo "== brokerside $BIN"
"$BIN" run --config "$WORK/brokerside.toml" >"$WORK/brokerside.log" 2>&1 &
BROKERSIDE_PID=$!

EXPECTED=$'app@127.0.0.7\napp@127.0.0.8\nemqx@emqx-a.node.dc1.consul\nemqx@emqx-b.node.dc1.consul'
NODES=""
for _ in $(seq 1 150); do # 150 x 0.2 s = 30 s at most
    kill -0 "$DNSMASQ_PID" 2>/dev/null || fail "dnsmasq exited"
    kill -0 "$BROKERSIDE_PID" 2>/dev/null || fail "brokerside exited"
    NODES=$(curl -fsS --max-time 2 "http://127.0.0.1:$ADMIN_PORT/peers?format=nodes" 2>/dev/null || true)
    if [ "$NODES" = "$EXPECTED" ]; then
        break
    fi
    sleep 0.2
done
if [ "$NODES" != "$EXPECTED" ]; then
    echo "expected:" >&2
    echo "$EXPECTED" >&2
    echo "got:" >&2
    echo "$NODES" >&2
    fail "/peers?format=nodes did not list the expected nodes within 30 s"
fi

# The JSON form carries the SRV ports and each peer's source.
PEERS=$(curl -fsS --max-time 2 "http://127.0.0.1:$ADMIN_PORT/peers")
echo "$PEERS" | python3 -c '
import json, sys
rows = sorted((p["source"], p["address"], p["port"], p["node"]) for p in json.load(sys.stdin))
want = [
    ("consul", "127.0.0.5", 1883, "emqx@emqx-a.node.dc1.consul"),
    ("consul", "127.0.0.6", 1884, "emqx@emqx-b.node.dc1.consul"),
    ("k8s", "127.0.0.7", 1883, "app@127.0.0.7"),
    ("k8s", "127.0.0.8", 1883, "app@127.0.0.8"),
]
if rows != want:
    sys.exit(f"/peers: {rows}, expected {want}")
' || fail "/peers JSON: $PEERS"

ERRORS=$(curl -fsS --max-time 2 "http://127.0.0.1:$ADMIN_PORT/metrics" |
    awk '/^brokerside_discovery_errors_total/ { sum += $NF } END { print sum + 0 }')
[ "$ERRORS" = "0" ] || fail "$ERRORS discovery errors against dnsmasq"

echo "dnsmasq interop: OK"
echo "$NODES"
