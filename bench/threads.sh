#!/usr/bin/env bash
# bench/threads.sh — where a delivery's CPU goes, thread by thread: nginx answers
# `200 {"received":true}`, the relay runs with --http, `listen --no-tui --json` forwards to nginx,
# wrk POSTs the 1,433-byte IllumiChat envelope, and the CPU each thread of the relay and the
# client used during the window is printed per request, with the bytes the client wrote.
#
#   bench/threads.sh RELAY CLIENT [CONC [SECS]]      e.g. target/release/illumitunnel-relay
#                                                    target/release/illumitunnel 32 4
# Settings (environment):
#   CLOSE=1      a new connection per webhook (wrk sends Connection: close)
#   PERF='…'     a command run one second into the window, with $RELAY_PID and $CLIENT_PID set,
#                e.g. PERF='perf record -F 999 -g -p $RELAY_PID -o relay.data -- sleep 2'
#   OUT_DIR      where each run's new directory (logs, store) goes (default: /tmp)
#
# Everything listens on 127.0.0.1; every process this script starts is stopped by its PID.
set -euo pipefail

RELAY=${1:?usage: bench/threads.sh RELAY CLIENT [CONC [SECS]]}
CLIENT=${2:?usage: bench/threads.sh RELAY CLIENT [CONC [SECS]]}
CONC=${3:-32}
SECS=${4:-4}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$(mktemp -d "${OUT_DIR:-/tmp}/illumitunnel-threads.XXXXXX")
mkdir -p "$OUT/nginx/tmp"

PIDS=()
stop_all() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap stop_all EXIT
port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

TARGET_PORT=$(port)
cat >"$OUT/nginx/nginx.conf" <<EOC
worker_processes 1; daemon off; pid $OUT/nginx/nginx.pid; error_log $OUT/nginx/error.log warn;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path $OUT/nginx/tmp; keepalive_timeout 300s;
  server { listen 127.0.0.1:$TARGET_PORT; client_body_buffer_size 64k;
    location / { default_type application/json; return 200 '{"received":true}'; } } }
EOC
nginx -p "$OUT/nginx" -c "$OUT/nginx/nginx.conf" >"$OUT/nginx.log" 2>&1 &
PIDS+=($!)
PUBLIC_PORT=$(port)
RUST_LOG=warn "$RELAY" --listen "127.0.0.1:$PUBLIC_PORT" --http --allow-anonymous \
  --data-dir "$OUT/relay" >"$OUT/relay.log" 2>&1 &
RELAY_PID=$!
PIDS+=("$RELAY_PID")
"$CLIENT" listen --relay "http://127.0.0.1:$PUBLIC_PORT" --tunnel threads --no-tui --json \
  --forward-to "http://127.0.0.1:$TARGET_PORT/webhooks/illumichat" --store "$OUT/captures.db" \
  >"$OUT/client.log" 2>&1 </dev/null &
CLIENT_PID=$!
PIDS+=("$CLIENT_PID")

cp "$REPO/bench/src/envelope.json" "$OUT/body.json"
cat >"$OUT/post.lua" <<'EOL'
local f = assert(io.open(os.getenv("THREADS_BODY"), "rb"))
wrk.method = "POST"; wrk.body = f:read("*a"); f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-IllumiChat-Event"] = "ticket.created"
if os.getenv("THREADS_CLOSE") == "1" then wrk.headers["Connection"] = "close" end
done = function(s, latency)
  io.stderr:write(string.format("RESULT %d %.0f %d %d %d\n", s.requests,
    s.requests / (s.duration / 1e6), latency:percentile(50), latency:percentile(99), s.errors.status))
end
EOL
URL=http://127.0.0.1:$PUBLIC_PORT/t/threads/webhooks/illumichat
ready=no
for _ in $(seq 100); do
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 --data-binary @"$OUT/body.json" "$URL" || true)
  if [[ $code == 200 ]]; then ready=yes; break; fi
  sleep 0.1
done
[[ $ready == yes ]] || { echo "the tunnel did not answer; see $OUT" >&2; exit 1; }

load() {  # load SECS — wrk's summary line on stderr
  THREADS_CLOSE=${CLOSE:-0} THREADS_BODY=$OUT/body.json \
    wrk -t1 -c"$CONC" -d"$1s" --timeout 5s -s "$OUT/post.lua" "$URL" >/dev/null
}
threads() {  # threads PID — "name ticks" per thread (utime + stime)
  local t stat
  for t in /proc/"$1"/task/*; do
    stat=$(cat "$t/stat") || continue
    stat=${stat##*) }
    # shellcheck disable=SC2086
    set -- $stat
    echo "$(cat "$t/comm" | tr ' ' '_') $t $(( ${12} + ${13} ))"
  done
}
written() { awk '/^wchar/ {print $2}' "/proc/$CLIENT_PID/io"; }

load 1 2>/dev/null
threads "$RELAY_PID" >"$OUT/relay.0"; threads "$CLIENT_PID" >"$OUT/client.0"; w0=$(written)
if [[ -n ${PERF:-} ]]; then
  (sleep 1; RELAY_PID=$RELAY_PID CLIENT_PID=$CLIENT_PID bash -c "$PERF") &
  PERF_PID=$!
fi
load "$SECS" 2>"$OUT/wrk.txt"
[[ -n ${PERF:-} ]] && wait "$PERF_PID"
threads "$RELAY_PID" >"$OUT/relay.1"; threads "$CLIENT_PID" >"$OUT/client.1"; w1=$(written)

read -r _ requests rps p50 p99 non2xx < <(grep RESULT "$OUT/wrk.txt")
how=""; [[ ${CLOSE:-0} == 1 ]] && how=" (a new connection each)"
echo "c=$CONC$how: $requests requests, $rps req/s, p50 ${p50} µs, p99 ${p99} µs, non-2xx $non2xx"
echo "client wrote $(( (w1 - w0) / requests )) bytes a request"
for side in relay client; do
  join -j 2 <(sort -k2 "$OUT/$side.0") <(sort -k2 "$OUT/$side.1") |
    awk -v side="$side" -v n="$requests" -v tck="$(getconf CLK_TCK)" '
      { d = $5 - $3; if (d > 0) { printf "  %-6s %-18s %6.1f µs a request\n", side, $2, d * 1e6 / tck / n; sum += d } }
      END { printf "  %-6s %-18s %6.1f µs a request\n", side, "(all threads)", sum * 1e6 / tck / n }'
done
