#!/usr/bin/env bash
# brokerside side by side with HAProxy, HAProxy+splice, NGINX stream and no proxy (issue 5).
#
#   benches/compare.sh             # 3 rounds, the figures we quote (about 15-25 min on 2 cores)
#   benches/compare.sh --smoke     # 1 short round, for CI: keeps the harness from rotting
#   benches/compare.sh --help      # every option
#
# Installs what it needs when it is missing (haproxy, nginx + its stream module, mosquitto,
# iperf3, a TrueType font for the chart), raises the open-files limit to the hard limit, then runs
# the bench through cargo, which builds the release binary it measures. Writes
# benches/results/compare{,-smoke}.{md,csv,png}; see benches/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
have haproxy || missing+=(haproxy)
have nginx || missing+=(nginx)
[ -f /usr/lib/nginx/modules/ngx_stream_module.so ] || missing+=(libnginx-mod-stream)
have mosquitto || missing+=(mosquitto)
have iperf3 || missing+=(iperf3)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "compare.sh: installing ${missing[*]}" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

ulimit -n "$(ulimit -Hn)"
exec cargo bench --bench compare -- "$@"
