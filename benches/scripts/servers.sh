# Sourced by the scripts beside it (from the repository's root, after their settings are
# exported): a nats-server (GOGC=400 as the load test, or NATS_GOGC; NATS_GOMEMLIMIT, if
# set, becomes its GOMEMLIMIT) and, unless NOREDIS is set, a
# redis-server on free loopback ports in a temporary directory, stopped with everything
# the script started (`pids`) when it exits. Sets `dir`, `nats_pid`, `http_port` (free,
# for the service), `redis_addr` (empty without Redis) and exports NATS_URL; defines
# `cpu PID` (a process's CPU so far, in hundredths of a second), `start_service BINARY
# PATH` (the service on `http_port` against these servers, waited for until PATH answers;
# sets `service_pid` and `http`) and `stop_perf` (ends a `perf record` started as
# `perf_pid`, if any, and says where its data is).
NATS_SERVER=${NATS_SERVER_BIN:-.tools/bin/nats-server}
dir=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
nats_port=$(free_port); http_port=$(free_port); redis_port=$(free_port)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
GOGC=${NATS_GOGC:-400} GOMEMLIMIT=${NATS_GOMEMLIMIT:-} "$NATS_SERVER" -a 127.0.0.1 -p "$nats_port" -js -sd "$dir/js" -l "$dir/nats.log" &
nats_pid=$!; pids+=("$nats_pid")
redis_addr=""
if [ -z "${NOREDIS:-}" ]; then
  redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no --dir "$dir" >/dev/null &
  pids+=($!); redis_addr=127.0.0.1:$redis_port
fi
export NATS_URL=nats://127.0.0.1:$nats_port
until (exec 3<>"/dev/tcp/127.0.0.1/$nats_port") 2>/dev/null; do
  kill -0 "$nats_pid" 2>/dev/null || { cat "$dir/nats.log"; exit 1; }
  sleep 0.1
done
start_service() {
  HTTP_ADDR=127.0.0.1:$http_port LOG_LEVEL=warn REDIS_ADDR=$redis_addr "$1" >"$dir/service.log" 2>&1 &
  service_pid=$!; pids+=("$service_pid")
  http=http://127.0.0.1:$http_port
  until curl -sf "$http$2" >/dev/null; do
    kill -0 "$service_pid" 2>/dev/null || { tail -3 "$dir/service.log"; exit 1; }
    sleep 0.05
  done
}
stop_perf() {
  [ -n "${perf_pid:-}" ] || return 0
  kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true
  echo "perf: $PERF_OUT"
}
