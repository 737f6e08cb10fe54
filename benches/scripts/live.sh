#!/usr/bin/env bash
# The service live at a fixed rate, timed on its own: what a live event costs each process
# (BENCHMARKS.md, "Twenty-third round"). Starts a nats-server (GOGC=400) and a redis-server
# on free loopback ports in a temporary directory (benches/scripts/servers.sh), the
# service, `match-stats loadgen` at RATE for 5 s to start the matches, then at RATE for
# SECONDS: prints the load generator's publish-to-delta figures and the CPU per event of
# the service and of nats-server over that run.
#
#   benches/scripts/live.sh RATE SECONDS [VAR=VALUE ...]
#
# The settings go to the load generator and the service alike (e.g. BATCH_LINGER=5ms).
# Environment: BIN (the binary of both; default the release build), SERVICE_BIN (another
# binary for the service only, e.g. one built with `--features heap-profile`, whose
# `dhat-heap.json` lands in the repository's root on exit: move it away), MATCHES,
# PLAYERS, NOREDIS=1, NATS_GOGC and NATS_GOMEMLIMIT (nats-server's collector: GOGC 400
# unless set), PERF=1 with PERFOPT (a `perf record` of the service over the run
# into PERF_OUT, by default $TMPDIR/match-stats-perf.live.data).
# Needs `make deps` (nats-server) and `cargo build --release`. Run it alone.
set -euo pipefail
PERF_OUT=$(realpath -m "${PERF_OUT:-${TMPDIR:-/tmp}/match-stats-perf.live.data}")
[ -z "${BIN:-}" ] || BIN=$(realpath -m "$BIN")
[ -z "${SERVICE_BIN:-}" ] || SERVICE_BIN=$(realpath -m "$SERVICE_BIN")
cd "$(dirname "$0")/../.."
usage="usage: benches/scripts/live.sh RATE SECONDS [VAR=VALUE ...]"
RATE=${1:?$usage}
SECONDS_LIVE=${2:?$usage}
shift 2
SETTINGS="$*"
for setting in "$@"; do export "${setting?}"; done
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/match-stats}
# shellcheck source=benches/scripts/servers.sh
. benches/scripts/servers.sh
start_service "${SERVICE_BIN:-$BIN}" /ready
load() { "$BIN" loadgen --matches "${MATCHES:-1000}" --players "${PLAYERS:-64}" --rate "$RATE" --events 0 "$@"; }
load --duration 5s --no-freshness >/dev/null 2>&1
service_before=$(cpu "$service_pid"); nats_before=$(cpu "$nats_pid"); start=$(date +%s.%N)
if [ -n "${PERF:-}" ]; then
  perf record ${PERFOPT:--F 149 --call-graph dwarf,16384} -o "$PERF_OUT" -p "$service_pid" >/dev/null 2>&1 &
  perf_pid=$!
fi
load --duration "${SECONDS_LIVE}s" >"$dir/loadgen.txt" 2>&1 || { cat "$dir/loadgen.txt"; exit 1; }
service_cpu=$(( $(cpu "$service_pid") - service_before )); nats_cpu=$(( $(cpu "$nats_pid") - nats_before ))
end=$(date +%s.%N)
stop_perf
grep -E "^loadgen: (published .* events in|publish to delta:)" "$dir/loadgen.txt"
published=$(grep -oE "published [0-9]+ events in" "$dir/loadgen.txt" | grep -oE "[0-9]+")
awk -v n="$published" -v sc="$service_cpu" -v nc="$nats_cpu" -v s="$start" -v e="$end" -v settings="$SETTINGS" 'BEGIN {
  printf "live: CPU per event: service %.1f µs, nats-server %.1f µs (%.2f and %.2f cores) [%s]\n",
    sc * 1e4 / n, nc * 1e4 / n, sc / 100 / (e - s), nc / 100 / (e - s), settings }'
