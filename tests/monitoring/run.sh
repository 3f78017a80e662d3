#!/usr/bin/env bash
# The operator's view, for real: the alert rules and their unit tests through promtool, every
# dashboard query parsed (promtool) and run (a real Prometheus), every metric name they use found
# in a real /metrics of the running sidecar (except deploy/monitoring/pending-metrics.txt), a
# real Prometheus scraping the sidecar with the rules loaded while the broker behind it (mosquitto)
# is killed and brought back, and the status page in headless Chromium (DOM and screenshot).
#
#   bash tests/monitoring/run.sh        (installs prometheus, chromium, mosquitto, mosquitto-clients if missing)
#
# BROKERSIDE_BIN picks the binary (default: target/debug/brokerside, built if missing). The
# screenshots are left in target/monitoring/ (status-page.png with the broker up,
# status-page-broker-down.png with it stopped). Takes about a minute.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
monitoring=deploy/monitoring

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
need=()
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_sub >/dev/null 2>&1 || need+=(mosquitto-clients)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
python3 -c 'import yaml' 2>/dev/null || need+=(python3-yaml)
if [ "${#need[@]}" -gt 0 ]; then
    echo "installing ${need[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
mosquitto_bin=$(command -v mosquitto || echo /usr/sbin/mosquitto)

fail() { echo "FAIL: $*" >&2; exit 1; }
step() { echo "-- $*"; }

work=$(mktemp -d /tmp/brokerside-monitoring.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# Polls `command...` every 0.2 s until it succeeds or `seconds` pass.
until_true() {
    local seconds=$1 what=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || fail "timed out after ${seconds}s: $what"
        sleep 0.2
    done
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

step "promtool check rules / test rules ($monitoring/alerts.yml)"
promtool check rules "$monitoring/alerts.yml"
(cd "$monitoring" && promtool test rules alerts.test.yml)

step "every dashboard query parses (promtool check rules on them as recording rules)"
python3 tests/monitoring/check_queries.py exprs "$monitoring/dashboard.json" \
    "$monitoring/alerts.yml" "$work/dashboard-rules.yml" >"$work/queries.txt"
promtool check rules "$work/dashboard-rules.yml"

bin=${BROKERSIDE_BIN:-target/debug/brokerside}
if [ ! -x "$bin" ]; then
    step "building $bin"
    cargo build --bin brokerside
fi

mosquitto_port=$(free_port)
admin_port=$(free_port)
mqtt_port=$(free_port)
ws_port=$(free_port)
closed_port=$(free_port)
prometheus_port=$(free_port)

cat >"$work/mosquitto.conf" <<EOF
listener $mosquitto_port 127.0.0.1
allow_anonymous true
persistence false
log_dest stderr
EOF
start_mosquitto() {
    "$mosquitto_bin" -c "$work/mosquitto.conf" 2>>"$work/mosquitto.log" &
    mosquitto_pid=$!
    pids+=("$mosquitto_pid")
}

# The second listener terminates TLS, so the TLS series (handshakes, errors, certificate expiry)
# are in the real /metrics the dashboard is checked against.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -keyout "$work/tls.key" -out "$work/tls.crt" -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost 2>/dev/null

cat >"$work/brokerside.toml" <<EOF
[node]
name = "emqx@127.0.0.1"

[admin]
listen = "127.0.0.1:$admin_port"

[runtime]
relay_threads = 1

[[listener]]
name = "mqtt"
listen = "127.0.0.1:$mqtt_port"
backend = "broker-mqtt"
max_connections = 1000
# Paced, so /health and the status page show its admission queue (the admission series exist
# on every listener).
max_connection_rate = 1000

[[listener]]
name = "mqtt-second"
listen = "127.0.0.1:$ws_port"
backend = "broker-mqtt"
[listener.tls]
cert = "$work/tls.crt"
key = "$work/tls.key"

[[backend]]
name = "broker-mqtt"
servers = ["127.0.0.1:$mosquitto_port"]
backup = ["127.0.0.1:$closed_port"]
peers = "static-peers"
peer_port = $closed_port
[backend.check]
kind = "mqtt"
interval = "500ms"
fast_interval = "200ms"
timeout = "400ms"
rise = 1
fall = 2

[[discovery]]
name = "static-peers"
kind = "static"
peers = ["127.0.0.3:$closed_port"]
node_name = "emqx@{ip}"
EOF
"$bin" check-config "$work/brokerside.toml" >/dev/null

step "mosquitto on :$mosquitto_port, brokerside admin on :$admin_port"
start_mosquitto
"$bin" run --config "$work/brokerside.toml" 2>"$work/brokerside.log" &
pids+=($!)
admin="http://127.0.0.1:$admin_port"
ready() { [ "$(curl -s -o /dev/null -w '%{http_code}' "$admin/readyz")" = 200 ]; }
until_true 30 "brokerside ready (local broker up)" ready

step "every metric name the dashboard and the rules use is in a real /metrics (or listed as pending)"
curl -sf "$admin/metrics" >"$work/metrics.txt"
python3 tests/monitoring/check_queries.py names "$monitoring/dashboard.json" \
    "$monitoring/alerts.yml" "$monitoring/pending-metrics.txt" "$work/metrics.txt"

# The shipped rules with every `for:` shortened, so the test does not wait minutes; the rules in
# deploy/ stay as they are.
sed -E 's/^( +)for: .*/\1for: 2s/' "$monitoring/alerts.yml" >"$work/alerts.yml"
cat >"$work/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $work/alerts.yml
scrape_configs:
  - job_name: brokerside
    static_configs:
      - targets: ["127.0.0.1:$admin_port"]
EOF
step "Prometheus on :$prometheus_port scraping brokerside, alerts.yml loaded"
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
    --web.listen-address="127.0.0.1:$prometheus_port" --log.level=warn 2>"$work/prometheus.log" &
pids+=($!)
prom="http://127.0.0.1:$prometheus_port"

# query EXPR: prints the JSON answer of an instant query.
query() { curl -s --get --data-urlencode "query=$1" "$prom/api/v1/query"; }
scraped() {
    query 'up{job="brokerside"} == 1 and on (instance) brokerside_backend_up == 1' |
        python3 -c 'import json, sys; sys.exit(0 if json.load(sys.stdin)["data"]["result"] else 1)' 2>/dev/null
}
until_true 60 "Prometheus has scraped brokerside with its broker up" scraped

step "every dashboard query runs on the real Prometheus"
count=0
while IFS= read -r expr; do
    answer=$(query "$expr")
    status=$(printf '%s' "$answer" | python3 -c 'import json, sys; print(json.load(sys.stdin)["status"])')
    [ "$status" = success ] || fail "query failed: $expr: $answer"
    count=$((count + 1))
done <"$work/queries.txt"
echo "$count queries answered"

# alert NAME: prints the state of alert NAME in /api/v1/alerts (firing, pending or none).
alert() {
    curl -s "$prom/api/v1/alerts" | python3 -c '
import json, sys
states = [a["state"] for a in json.load(sys.stdin)["data"]["alerts"] if a["labels"]["alertname"] == sys.argv[1]]
print("firing" if "firing" in states else (states[0] if states else "none"))' "$1"
}
alert_is() { [ "$(alert "$1")" = "$2" ]; }
# A few evaluations with the broker up must pass without the alert.
rules_evaluated() {
    curl -s "$prom/api/v1/rules" | python3 -c '
import json, sys
rules = [r for g in json.load(sys.stdin)["data"]["groups"] for r in g["rules"]]
sys.exit(0 if len(rules) == 8 and all(r.get("lastEvaluation", "").startswith("2") and r.get("health") == "ok" for r in rules) else 1)'
}
until_true 30 "Prometheus evaluates all 8 rules" rules_evaluated
[ "$(alert BrokersideLocalBrokerDown)" = none ] || fail "BrokersideLocalBrokerDown is active with the broker up"

chrome() {
    local profile
    profile=$(mktemp -d "$work/chromium.XXXXXX")
    chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --user-data-dir="$profile" "$@" 2>>"$work/chromium.log"
}
# page STATE NAME: loads the status page in Chromium, lets it refresh itself (virtual time runs
# its 2 s refresh a few times before the DOM is dumped), and checks that the DOM shows every
# listener and server and the local broker in STATE (UP with the subscriber relayed to it, or
# DOWN in a red row); then saves a screenshot as target/monitoring/NAME.png.
page() {
    local state=$1 name=$2
    chrome --virtual-time-budget=7000 --dump-dom "$admin/" >"$work/$name.html"
    python3 - "$work/$name.html" "$state" "$mosquitto_port" "$closed_port" "$mqtt_port" "$ws_port" <<'EOF'
import re, sys
dom = open(sys.argv[1], encoding="utf-8").read()
state, mosquitto, closed, mqtt, second = sys.argv[2:7]
polls = re.search(r'<body[^>]*data-polls="(\d+)"', dom)
assert polls and int(polls.group(1)) >= 1, "the page did not refresh itself:\n" + dom[:3000]
for cell in ["mqtt", f"127.0.0.1:{mqtt}", "mqtt-second", f"127.0.0.1:{second}",
             f"127.0.0.1:{mosquitto}", f"127.0.0.1:{closed}", f"127.0.0.3:{closed}", "static-peers"]:
    assert f"<td>{cell}</td>" in dom, f"no cell {cell} in the page:\n{dom}"
rows = re.findall(r"<tr[^>]*>.*?</tr>", dom, re.S)
tls_row = next(row for row in rows if f"<td>127.0.0.1:{second}</td>" in row)
assert "<td>TLS</td>" in tls_row, f"the TLS listener is not shown as TLS: {tls_row}"
local = next(row for row in rows if f"<td>127.0.0.1:{mosquitto}</td>" in row)
if state == "DOWN":
    assert 'class="alarm"' in local and "<td>DOWN for " in local, f"the stopped broker is not shown down: {local}"
else:
    assert 'class="alarm"' not in local and "<td>UP for " in local, f"the broker is not shown up: {local}"
    assert local.endswith("<td>1</td><td></td></tr>"), f"the subscriber is not counted on the broker: {local}"
    listener = next(row for row in rows if f"<td>127.0.0.1:{mqtt}</td>" in row)
    assert "<td>1 / 1000</td>" in listener, f"the subscriber is not counted on its listener: {listener}"
    assert listener.endswith("<td>0</td></tr>"), f"the paced listener shows no admission queue: {listener}"
print(f"DOM after {polls.group(1)} refreshes: every listener and server, the local broker {state}")
EOF
    mkdir -p target/monitoring
    chrome --virtual-time-budget=3000 --hide-scrollbars --window-size=1280,1000 \
        --screenshot="$root/target/monitoring/$name.png" "$admin/" >/dev/null
    [ -s "target/monitoring/$name.png" ] || fail "no screenshot $name.png"
    echo "screenshot: target/monitoring/$name.png"
}

step "the status page in headless Chromium, a subscriber relayed to the broker"
mosquitto_sub -h 127.0.0.1 -p "$mqtt_port" -i status-page-subscriber -t 'status/#' &
pids+=($!)
relayed() {
    curl -s "$admin/metrics" | grep -q "^brokerside_backend_connections_active{backend=\"broker-mqtt\",server=\"127.0.0.1:$mosquitto_port\"} 1\$"
}
until_true 30 "the subscriber counted on the broker" relayed
page UP status-page

step "the broker dies: kill mosquitto"
kill "$mosquitto_pid"
wait "$mosquitto_pid" 2>/dev/null || true
local_down() { [ "$(curl -s -o /dev/null -w '%{http_code}' "$admin/readyz")" = 503 ]; }
until_true 30 "brokerside sees its local broker down" local_down
until_true 60 "BrokersideLocalBrokerDown firing in Prometheus' /api/v1/alerts" alert_is BrokersideLocalBrokerDown firing
echo "BrokersideLocalBrokerDown is firing"

step "the status page in headless Chromium, the broker stopped"
page DOWN status-page-broker-down

step "the broker comes back: the alert clears"
start_mosquitto
until_true 30 "brokerside ready again" ready
until_true 60 "BrokersideLocalBrokerDown gone from /api/v1/alerts" alert_is BrokersideLocalBrokerDown none
echo "BrokersideLocalBrokerDown cleared"
echo "monitoring checks passed"
