#!/usr/bin/env bash
# Idle-connection memory benchmark: the proxy's RSS at start and per idle proxied MQTT connection.
#
#   benches/idle_rss.sh                      # 9,000 connections (the figure the README quotes)
#   benches/idle_rss.sh --connections 4000   # any other count
#   benches/idle_rss.sh --smoke              # 200 connections, for CI
#
# Installs mosquitto when it is missing, raises the open-files limit to the hard limit (the proxy
# needs two fds per connection), then runs the bench through cargo, which builds the release
# binary it measures. See benches/README.md for how to read the table it prints.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
    echo "idle_rss.sh: installing mosquitto" >&2
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq mosquitto >/dev/null
fi

ulimit -n "$(ulimit -Hn)"
exec cargo bench --bench idle_rss -- "$@"
