#!/usr/bin/env bash
# A catch-up timed on its own, for comparing variants of the service run by run
# (BENCHMARKS.md, "The hot path (issue 14)"). Starts a nats-server (GOGC=400, as the load
# test) and a redis-server on free loopback ports in a temporary directory, pre-publishes
# EVENTS with `match-stats loadgen --no-freshness` (1,000 matches x 64 players), then
# starts the service with the given settings and times it until every event is decided
# and the read model holds every delta. Prints events/s (and for the command side alone),
# the CPU seconds of the service and of nats-server, the service's RSS and both peaks.
#
#   benches/scripts/catchup.sh EVENTS [VAR=VALUE ...]
#
# The settings go to the load generator and the service alike (e.g. PARTITIONS=8,
# DELTA_FORMAT=3). Environment: BIN (the service binary; default the release build),
# MATCHES, PLAYERS, NOREDIS=1 (no Redis), NATS_GOGC and NATS_GOMEMLIMIT (nats-server's
# collector: GOGC 400 unless set), THREADS=1 (CPU seconds per thread name),
# TRACE=FILE (both processes' CPU and the deltas published and projected, every second),
# PERF=svc|nats with PERFOPT (a `perf record` of either process into PERF_OUT, by default
# $TMPDIR/match-stats-perf.<svc|nats>.data).
# Needs `make deps` (nats-server) and `cargo build --release`. Run it alone: anything
# else on the 2 cores shows in its figures.
set -euo pipefail
# Paths given relative to where it is run from stay so after the cd below.
[ -z "${TRACE:-}" ] || TRACE=$(realpath -m "$TRACE")
PERF_OUT=$(realpath -m "${PERF_OUT:-${TMPDIR:-/tmp}/match-stats-perf.${PERF:-none}.data}")
[ -z "${BIN:-}" ] || BIN=$(realpath -m "$BIN")
cd "$(dirname "$0")/../.."
EVENTS=${1:?usage: benches/scripts/catchup.sh EVENTS [VAR=VALUE ...]}
shift
SETTINGS="$*"
for setting in "$@"; do export "${setting?}"; done
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/match-stats}
# shellcheck source=benches/scripts/servers.sh
. benches/scripts/servers.sh
"$BIN" loadgen --matches "${MATCHES:-1000}" --players "${PLAYERS:-64}" --events "$EVENTS" --no-freshness >"$dir/loadgen.txt" 2>&1 \
  || { cat "$dir/loadgen.txt"; exit 1; }
nats_cpu_before=$(cpu "$nats_pid")
start=$(date +%s.%N)
start_service "$BIN" /health
metric() { awk -v name="$1" '$1 ~ "^"name {s += $2} END {printf "%d", s}'; }
if [ -n "${PERF:-}" ]; then
  target=$service_pid; [ "$PERF" = nats ] && target=$nats_pid
  perf record ${PERFOPT:--F 199 -g} -o "$PERF_OUT" -p "$target" >/dev/null 2>&1 &
  perf_pid=$!
fi
if [ -n "${TRACE:-}" ]; then
  (while kill -0 "$service_pid" 2>/dev/null; do
    m=$(curl -s "$http/metrics" || true)
    echo "$(date +%s.%N) $(cpu "$service_pid") $(cpu "$nats_pid") $(echo "$m" | metric match_stats_deltas_published_total) $(echo "$m" | metric match_stats_deltas_projected_total)"
    sleep 1
  done >"$TRACE" 2>/dev/null) &
fi
decided_at=""
while true; do
  ready=$(curl -s "$http/ready")
  received=$(echo "$ready" | grep -o '"received":[0-9]*' | head -1 | cut -d: -f2)
  if [ "${received:-0}" -ge "$EVENTS" ]; then
    [ -n "$decided_at" ] || decided_at=$(date +%s.%N)
    m=$(curl -s "$http/metrics" || true)
    if [ "$(echo "$m" | metric match_stats_deltas_projected_total)" -ge "$(echo "$m" | metric match_stats_deltas_published_total)" ] \
      && echo "$ready" | grep -q '"read_model_caught_up":true'; then
      break
    fi
  fi
  sleep 0.1
done
end=$(date +%s.%N)
service_cpu=$(cpu "$service_pid"); nats_cpu=$(( $(cpu "$nats_pid") - nats_cpu_before ))
rss=$(awk '/VmRSS/{print int($2/1024)}' "/proc/$service_pid/status")
peak=$(awk '/VmHWM/{print int($2/1024)}' "/proc/$service_pid/status")
nats_peak=$(awk '/VmHWM/{print int($2/1024)}' "/proc/$nats_pid/status")
if [ -n "${THREADS:-}" ]; then
  for task in /proc/"$service_pid"/task/*; do echo "$(cat "$task/comm") $(awk '{print $14+$15}' "$task/stat")"; done \
    | awk '{c[$1] += $2} END {for (k in c) printf "%s %.2f s  ", k, c[k] / 100; print ""}'
fi
stop_perf
awk -v n="$EVENTS" -v s="$start" -v d="$decided_at" -v e="$end" -v sc="$service_cpu" -v nc="$nats_cpu" \
  -v rss="$rss" -v peak="$peak" -v nats_peak="$nats_peak" -v settings="$SETTINGS" 'BEGIN {
  printf "catch-up %d events/s in %.2f s (command side %d/s); CPU: service %.2f s, nats-server %.2f s; RSS %d MiB (peak %d; nats-server peak %d) [%s]\n",
    n / (e - s), e - s, n / (d - s), sc / 100, nc / 100, rss, peak, nats_peak, settings }'
