#!/usr/bin/env bash
# Soak test: 9,000 MQTT connections through brokerside to mosquitto, 100 of them closed and 100
# opened every second, publisher/subscriber pairs doing QoS 0 round trips throughout; brokerside's
# RSS, fds, pipes and threads sampled every 10 s must stay flat.
#
#   benches/soak.sh                # 30 minutes (the run we quote)
#   benches/soak.sh --minutes 60   # any other length
#   benches/soak.sh --smoke        # 2 minutes, the same shape, for CI
#
# Installs mosquitto when it is missing, raises the open-files limit to the hard limit (the proxy
# needs two fds per connection), then runs the bench through cargo, which builds the release
# binary it measures. Writes benches/results/soak{,-smoke}.{csv,md}; see benches/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
    echo "soak.sh: installing mosquitto" >&2
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null
fi

ulimit -n "$(ulimit -Hn)"
exec cargo bench --bench soak -- "$@"
