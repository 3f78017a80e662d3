#!/usr/bin/env bash
# The storm figure (issue 12): 9,000 MQTT clients reconnecting at once with Paho C's back-off,
# against mosquitto through brokerside (max_connection_rate), HAProxy (rate-limit sessions) and
# no proxy.
#
#   benches/storm.sh             # 3 rounds (about 5 min on 2 cores after the build)
#   benches/storm.sh --smoke     # 1 round of 1,000 clients at 500/s (about 30 s)
#   benches/storm.sh --help      # every option
#
# Needs haproxy and mosquitto (benches/compare.sh installs them with the rest of its programs).
# Raises the open-files limit to the hard limit (a proxy holds two fds per client), then runs the
# bench through cargo, which builds the release binary it measures. Writes
# benches/results/storm{,-smoke}.md; see benches/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n "$(ulimit -Hn)"
exec cargo bench --bench storm -- "$@"
