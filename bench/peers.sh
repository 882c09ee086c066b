#!/usr/bin/env bash
# bench/peers.sh — illumitunnel beside bore and rathole (raw TCP tunnels) on one machine, in one
# run: nginx answers `200 {"received":true}`, wrk POSTs the 1,433-byte IllumiChat envelope through
# each tunnel and straight to nginx (the direct baseline), and every figure is read against
# SPEC's "Numbers it must reach".
#
#   bench/peers.sh install        wrk + nginx-light (apt), bore-cli + rathole (cargo install)
#   bench/peers.sh                build the release relay and client, run, print the tables
#   bench/peers.sh report DIR     print the tables again from a finished run's results.jsonl
#
# Settings (environment):
#   TUNNELS="bore rathole illumitunnel"  tools to run beside direct (also: illumitunnel-tls, the
#                                        relay with --self-signed and an https sender)
#   REPEATS=3 DURATION=5 WARMUP=1        repeats of the whole set; measured / unrecorded seconds
#   CONCURRENCIES="1 32 1c"              senders; "1c" = one sender, a new connection per webhook
#   ILLUMI_RELAY, ILLUMI_CLIENT          binaries (default: target/release, built if missing)
#   ILLUMI_RELAY_B, ILLUMI_CLIENT_B      a second build, run as the entry illumitunnel-b
#   BORE, RATHOLE, WRK, NGINX            other binaries; OUT_DIR where logs and results go
#
# Repeats are interleaved: each repeat runs direct and then every tool, in an order rotated by
# the repeat, so a slow minute on the shared machine lands on different tools. Tables show the
# mean with (min–max) over repeats; ratios (×bore, ×direct) are taken within one repeat.
#
# Everything listens on 127.0.0.1; every process this script starts is stopped by its PID.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CARGO_BIN=${CARGO_BIN:-$HOME/.cargo/bin}
BORE=${BORE:-$CARGO_BIN/bore}
RATHOLE=${RATHOLE:-$CARGO_BIN/rathole}
WRK=${WRK:-$(command -v wrk || echo /usr/bin/wrk)}
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
ILLUMI_RELAY=${ILLUMI_RELAY:-}
ILLUMI_CLIENT=${ILLUMI_CLIENT:-}
ILLUMI_RELAY_B=${ILLUMI_RELAY_B:-}
ILLUMI_CLIENT_B=${ILLUMI_CLIENT_B:-}

TUNNELS=${TUNNELS-"bore rathole illumitunnel"}
REPEATS=${REPEATS:-3}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
CONCURRENCIES=${CONCURRENCIES:-"1 32 1c"}
READY_SECS=${READY_SECS:-30}
OUT_DIR=${OUT_DIR:-${TMPDIR:-/tmp}/illumitunnel-peers.$(date +%Y%m%d-%H%M%S)}
HOOK_PATH=/webhooks/illumichat

# --- processes ----------------------------------------------------------------------------------
PIDS=()
stop() {  # stop PID: TERM, then KILL after 3 s
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
stop_all() {
  local pid
  for pid in "${PIDS[@]}"; do stop "$pid"; done
  PIDS=()
}
trap stop_all EXIT
trap 'exit 130' INT TERM

spawn() {  # spawn LOG ARGV... ; sets SPAWNED to the PID (the tool itself, not a shell)
  local log=$1; shift
  "$@" >"$log" 2>&1 </dev/null &
  SPAWNED=$!
  PIDS+=("$SPAWNED")
}

port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

ticks() {  # utime + stime of a process (all its threads, live and ended), in clock ticks
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
  stat=${stat##*) }
  # shellcheck disable=SC2086
  set -- $stat
  echo $(( ${12} + ${13} ))
}

# --- install --------------------------------------------------------------------------------------
install_peers() {
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y wrk nginx-light curl python3
  cargo install bore-cli
  # rathole 0.5.0's lock file pins a `time` that no longer builds with current rustc: unlocked.
  cargo install rathole
}

# --- the load --------------------------------------------------------------------------------------
write_inputs() {
  # The 1,433-byte IllumiChat ticket.created envelope the bench sends too.
  cp "$REPO/bench/src/envelope.json" "$1/body.json"
  cat >"$1/post.lua" <<'EOF'
local f = assert(io.open(os.getenv("PEERS_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["User-Agent"] = "IllumiChat-Webhooks/1.0"
wrk.headers["X-IllumiChat-Event"] = "ticket.created"
if os.getenv("PEERS_CLOSE") == "1" then wrk.headers["Connection"] = "close" end
done = function(s, latency, requests)
  local out = assert(io.open(os.getenv("PEERS_OUT"), "w"))
  local e = s.errors
  out:write(string.format('{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"non2xx":%d,"errors":%d}\n', s.requests, s.duration, latency:percentile(50),
    latency:percentile(99), latency.max, e.status, e.connect + e.read + e.write + e.timeout))
  out:close()
end
EOF
}

# wrk URL CONC SECS OUT — one load run; its summary as a JSON line in OUT
load() {
  local url=$1 conc=$2 secs=$3 out=$4 close=0
  if [[ $conc == *c ]]; then close=1; conc=${conc%c}; fi
  PEERS_BODY="$RUN/body.json" PEERS_OUT="$out" PEERS_CLOSE=$close \
    "$WRK" -t1 -c"$conc" -d"${secs}s" --timeout 5s -s "$RUN/post.lua" "$url" >"$out.log" 2>&1 || true
}

post_once() {  # one POST through URL answered `200 {"received":true}`
  local got
  got=$(curl -s --max-time 3 -w ' %{http_code}' -H 'Content-Type: application/json' \
    --data-binary @"$RUN/body.json" "$1" 2>/dev/null) || return 1
  [[ $got == '{"received":true} 200' ]]
}

nginx_count() {  # requests nginx has answered (stub_status), this query included
  curl -s --max-time 3 "http://127.0.0.1:$TARGET_PORT/__count" | awk 'NR==3 {print $3}'
}

start_nginx() {
  TARGET_PORT=$(port)
  local dir=$RUN/nginx
  mkdir -p "$dir/tmp"
  cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir/tmp;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  server {
    listen 127.0.0.1:$TARGET_PORT;
    client_body_buffer_size 64k;
    location = /__count { stub_status; }
    location / { default_type application/json; return 200 '{"received":true}'; }
  }
}
EOF
  spawn "$dir/nginx.log" "$NGINX" -p "$dir" -c "$dir/nginx.conf"
  TARGET_PID=$SPAWNED
  local i
  for i in $(seq 100); do post_once "http://127.0.0.1:$TARGET_PORT$HOOK_PATH" && return; sleep 0.1; done
  echo "nginx did not answer; see $dir" >&2
  exit 1
}

# --- one tool ------------------------------------------------------------------------------------
# start_TOOL DIR: starts the tool's server and client; sets SERVER_PID, CLIENT_PID and URL.
start_bore() {
  local pub; pub=$(port)
  # bore's control port is fixed (7835); one bore server at a time.
  spawn "$1/server.log" "$BORE" server --bind-addr 127.0.0.1 --min-port "$pub" --max-port "$pub"
  SERVER_PID=$SPAWNED; sleep 0.3
  spawn "$1/client.log" "$BORE" local "$TARGET_PORT" --local-host 127.0.0.1 --to 127.0.0.1 --port "$pub"
  CLIENT_PID=$SPAWNED
  URL=http://127.0.0.1:$pub$HOOK_PATH
}

start_rathole() {
  local pub ctrl; pub=$(port); ctrl=$(port)
  printf '[server]\nbind_addr = "127.0.0.1:%s"\n[server.services.hook]\ntoken = "peers"\nbind_addr = "127.0.0.1:%s"\n' \
    "$ctrl" "$pub" >"$1/server.toml"
  printf '[client]\nremote_addr = "127.0.0.1:%s"\n[client.services.hook]\ntoken = "peers"\nlocal_addr = "127.0.0.1:%s"\n' \
    "$ctrl" "$TARGET_PORT" >"$1/client.toml"
  spawn "$1/server.log" "$RATHOLE" --server "$1/server.toml"; SERVER_PID=$SPAWNED; sleep 0.3
  spawn "$1/client.log" "$RATHOLE" --client "$1/client.toml"; CLIENT_PID=$SPAWNED
  URL=http://127.0.0.1:$pub$HOOK_PATH
}

# illumitunnel: the relay in --http mode (or --self-signed for illumitunnel-tls, where the
# sender's URL is https), `listen --no-tui --json` recording every delivery in its own store.
start_illumi() {
  local dir=$1 ingress=$2 scheme=$3 pub; pub=$(port)
  spawn "$dir/server.log" env RUST_LOG=warn "$ILLUMI_RELAY" --listen "127.0.0.1:$pub" "$ingress" \
    --allow-anonymous --data-dir "$dir/relay"
  SERVER_PID=$SPAWNED; sleep 0.3
  local relay=$scheme://127.0.0.1:$pub trust=()
  [[ $scheme == https ]] && trust=(--insecure)
  spawn "$dir/client.log" "$ILLUMI_CLIENT" listen --relay "$relay" "${trust[@]}" --tunnel peersbench \
    --forward-to "http://127.0.0.1:$TARGET_PORT$HOOK_PATH" --no-tui --json --store "$dir/captures.db"
  CLIENT_PID=$SPAWNED
  URL=$relay/t/peersbench
}
start_illumitunnel() { start_illumi "$1" --http http; }
start_illumitunnel-tls() { start_illumi "$1" --self-signed https; }
# Another build beside the current one in the same run (before/after a change):
# ILLUMI_RELAY_B, ILLUMI_CLIENT_B name its binaries.
start_illumitunnel-b() {
  ILLUMI_RELAY=$ILLUMI_RELAY_B ILLUMI_CLIENT=$ILLUMI_CLIENT_B start_illumi "$1" --http http
}

# measure TOOL REP CONC URL SERVER_PID CLIENT_PID — one JSON line into results.jsonl
measure() {
  local tool=$1 rep=$2 conc=$3 url=$4 spid=$5 cpid=$6 out
  out="$RUN/$tool-r$rep-c$conc"
  (( WARMUP > 0 )) && load "$url" "$conc" "$WARMUP" "$out.warmup.json"
  local s0 c0 t0 n0 s1 c1 t1 n1 w0 w1
  s0=$(ticks "$spid"); c0=$(ticks "$cpid"); t0=$(ticks "$TARGET_PID"); n0=$(nginx_count)
  w0=$(date +%s%N)
  load "$url" "$conc" "$DURATION" "$out.json"
  w1=$(date +%s%N)
  s1=$(ticks "$spid"); c1=$(ticks "$cpid"); t1=$(ticks "$TARGET_PID"); n1=$(nginx_count)
  python3 - "$out.json" "$tool" "$rep" "$conc" $((s1 - s0)) $((c1 - c0)) $((t1 - t0)) \
    $((n1 - n0 - 1)) "$(getconf CLK_TCK)" "$(cut -d' ' -f1 /proc/loadavg)" >>"$RUN/results.jsonl" <<'EOF'
import json, sys
path, tool, rep, conc, sd, cd, td, reached, tck, load = sys.argv[1:]
try:
    r = json.load(open(path))
except Exception as e:
    r = {"error": "wrk gave no result (%s)" % e}
else:
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    r.update(server_s=int(sd) / int(tck), client_s=int(cd) / int(tck), target_s=int(td) / int(tck),
             reached=int(reached), load=float(load))
r.update(tool=tool, rep=int(rep), conc=conc)
print(json.dumps(r))
EOF
  tail -n1 "$RUN/results.jsonl" | python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
if "error" in r: print("  %-16s c=%-3s %s" % (r["tool"], r["conc"], r["error"])); sys.exit()
n = max(r["requests"], 1)
print("  %-16s c=%-3s %8.0f req/s  p50 %.3f  p99 %.3f ms  cpu/req server %.0f client %.0f us  errors %d/%d" % (
  r["tool"], r["conc"], r["rps"], r["p50_us"] / 1e3, r["p99_us"] / 1e3, r["server_s"] / n * 1e6,
  r["client_s"] / n * 1e6, r["non2xx"], r["errors"]))' >&2
}

run_tool() {
  local tool=$1 rep=$2 dir="$RUN/$1-r$2" c
  mkdir -p "$dir"
  echo "== $tool (repeat $rep)" >&2
  if ! "start_$tool" "$dir"; then
    echo "{\"tool\":\"$tool\",\"rep\":$rep,\"conc\":\"-\",\"error\":\"could not start\"}" >>"$RUN/results.jsonl"
    return
  fi
  local t0=$SECONDS ready=0
  while (( SECONDS - t0 < READY_SECS )); do
    kill -0 "$SERVER_PID" 2>/dev/null && kill -0 "$CLIENT_PID" 2>/dev/null || break
    if post_once "$URL"; then ready=1; break; fi
    sleep 0.2
  done
  if (( ready )); then
    for c in $CONCURRENCIES; do measure "$tool" "$rep" "$c" "$URL" "$SERVER_PID" "$CLIENT_PID"; done
    post_once "$URL" || echo "  $tool: a POST after the load failed" >&2
  else
    echo "  $tool did not pass a webhook within ${READY_SECS}s; logs in $dir" >&2
    echo "{\"tool\":\"$tool\",\"rep\":$rep,\"conc\":\"-\",\"error\":\"not ready\"}" >>"$RUN/results.jsonl"
  fi
  stop "$CLIENT_PID"; stop "$SERVER_PID"
}

direct() {
  local rep=$1 c
  echo "== direct (repeat $rep)" >&2
  for c in $CONCURRENCIES; do
    measure direct "$rep" "$c" "http://127.0.0.1:$TARGET_PORT$HOOK_PATH" "$TARGET_PID" "$TARGET_PID"
  done
}

# --- report --------------------------------------------------------------------------------------
report() {
  python3 - "$1/results.jsonl" <<'EOF'
import json, sys, statistics as st
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ok = [r for r in rows if "error" not in r]
tools = []
for r in rows:
    if r["tool"] not in tools: tools.append(r["tool"])
def key(c): return (c.endswith("c"), int(c.rstrip("c")))
concs = sorted({r["conc"] for r in ok}, key=key)
def label(c): return "1, new conn each" if c == "1c" else c
by = {(r["tool"], r["rep"], r["conc"]): r for r in ok}
def cpu(r): return (r["server_s"] + r["client_s"]) / max(r["requests"], 1) * 1e6
def span(xs, f):
    if not xs: return "–"
    s = f % st.mean(xs)
    return s if len(xs) < 2 else "%s (%s–%s)" % (s, f % min(xs), f % max(xs))
def paired(tool, other, conc, fn):
    """fn(this repeat's row, the other tool's row of the same repeat), over repeats"""
    out = []
    for r in ok:
        if r["tool"] == tool and r["conc"] == conc and (other, r["rep"], conc) in by:
            out.append(fn(r, by[(other, r["rep"], conc)]))
    return out
print("| tool | conc | req/s | ×direct | p50 ms | p99 ms | added p50 ms | added p99 ms | tunnel CPU µs/req (server + client) | reached target | non-2xx / errors |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for tool in tools:
    for c in concs:
        rs = [r for r in ok if r["tool"] == tool and r["conc"] == c]
        if not rs: continue
        tun = tool != "direct"
        ratio = paired(tool, "direct", c, lambda a, b: a["rps"] / b["rps"])
        d50 = paired(tool, "direct", c, lambda a, b: (a["p50_us"] - b["p50_us"]) / 1e3)
        d99 = paired(tool, "direct", c, lambda a, b: (a["p99_us"] - b["p99_us"]) / 1e3)
        srv = st.mean(r["server_s"] / max(r["requests"], 1) * 1e6 for r in rs)
        cli = st.mean(r["client_s"] / max(r["requests"], 1) * 1e6 for r in rs)
        reached = 100.0 * sum(r["reached"] for r in rs) / max(1, sum(r["requests"] for r in rs))
        print("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %.1f%% | %d / %d |" % (
            tool, label(c), span([r["rps"] for r in rs], "%.0f"),
            span(ratio, "%.2f") if tun else "1",
            span([r["p50_us"] / 1e3 for r in rs], "%.3f"), span([r["p99_us"] / 1e3 for r in rs], "%.3f"),
            span(d50, "%+.3f") if tun else "–", span(d99, "%+.3f") if tun else "–",
            "%s = %.0f + %.0f" % (span([cpu(r) for r in rs], "%.0f"), srv, cli) if tun else "–",
            reached, sum(r["non2xx"] for r in rs), sum(r["errors"] for r in rs)))
for r in rows:
    if "error" in r:
        print("| %s | %s | failed in repeat %d: %s | | | | | | | | |" % (r["tool"], r["conc"], r["rep"], r["error"]))
print()
print("Mean over repeats, (min–max) in brackets. ×direct and added latency are paired with the direct run "
      "of the same repeat. Tunnel CPU = utime + stime of the tunnel's server and client over the window ÷ "
      "requests answered. 'reached target' = POSTs nginx counted ÷ requests wrk completed.")
loads = [r["load"] for r in ok]
if loads: print("Load average (1 min) at the end of each window: %.1f–%.1f." % (min(loads), max(loads)))
print()
def verdict(xs, ok_fn):
    if not xs: return "not measured"
    return "pass" if ok_fn(st.mean(xs)) else "**miss**"
for me in [t for t in tools if t.startswith("illumitunnel")]:
    lines = []
    d50 = paired(me, "direct", "1", lambda a, b: (a["p50_us"] - b["p50_us"]) / 1e3)
    d99 = paired(me, "direct", "1", lambda a, b: (a["p99_us"] - b["p99_us"]) / 1e3)
    lines.append(("c=1 added median (direct as baseline)", span(d50, "%+.3f ms"), "≤ 0.15 ms", verdict(d50, lambda m: m <= 0.15)))
    lines.append(("c=1 added p99", span(d99, "%+.3f ms"), "≤ 0.5 ms", verdict(d99, lambda m: m <= 0.5)))
    for peer in ("bore", "rathole"):
        x = paired(me, peer, "32", lambda a, b: a["rps"] / b["rps"])
        lines.append(("c=32 req/s, × %s (same repeat)" % peer, span(x, "%.2f×"),
                      "≥ 0.85× bore" if peer == "bore" else "–", verdict(x, lambda m: m >= 0.85) if peer == "bore" else "–"))
        y = paired(me, peer, "32", lambda a, b: cpu(a) / cpu(b))
        lines.append(("c=32 tunnel CPU per request, × %s" % peer, span(y, "%.2f×"),
                      "≤ 1.5× bore" if peer == "bore" else "–", verdict(y, lambda m: m <= 1.5) if peer == "bore" else "–"))
        z = paired(me, peer, "1c", lambda a, b: a["rps"] / b["rps"])
        lines.append(("1c req/s (new connection per webhook), × %s" % peer, span(z, "%.2f×"), "> 1× (ahead)",
                      verdict(z, lambda m: m > 1.0)))
    print("| figure (%s) | measured, mean (min–max) | SPEC target | verdict |" % me)
    print("|---|---:|---|---|")
    for l in lines: print("| %s | %s | %s | %s |" % l)
    print()
EOF
}

# --- main ----------------------------------------------------------------------------------------
build_illumi() {
  if [[ -z $ILLUMI_RELAY || -z $ILLUMI_CLIENT ]]; then
    (cd "$REPO" && cargo build --release -p illumitunnel-relay -p illumitunnel-client) >&2
    ILLUMI_RELAY=${ILLUMI_RELAY:-$REPO/target/release/illumitunnel-relay}
    ILLUMI_CLIENT=${ILLUMI_CLIENT:-$REPO/target/release/illumitunnel}
  fi
}

check_tools() {
  local missing=() t
  [[ -x $WRK ]] || missing+=("wrk")
  [[ -x $NGINX ]] || missing+=("nginx")
  for t in $TUNNELS; do
    case $t in
      bore) [[ -x $BORE ]] || missing+=("bore ($BORE)") ;;
      rathole) [[ -x $RATHOLE ]] || missing+=("rathole ($RATHOLE)") ;;
    esac
  done
  if (( ${#missing[@]} )); then
    echo "missing: ${missing[*]}; run \`bench/peers.sh install\` or set the paths" >&2
    exit 2
  fi
}

main() {
  case ${1:-run} in
    install) install_peers; return ;;
    report) report "$2"; return ;;
    run) ;;
    *) echo "usage: bench/peers.sh [install | run | report DIR]" >&2; exit 2 ;;
  esac
  check_tools
  [[ " $TUNNELS " == *" illumitunnel"* ]] && build_illumi
  RUN=$OUT_DIR; mkdir -p "$RUN"; : >"$RUN/results.jsonl"
  write_inputs "$RUN"
  {
    echo "date: $(date -u +%FT%TZ); commit: $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), Linux $(uname -r)"
    echo "nginx: $("$NGINX" -v 2>&1 | cut -d/ -f2); wrk: $("$WRK" -v 2>&1 | head -1 | awk '{print $2}')"
    [[ -x $BORE ]] && echo "bore: $("$BORE" --version)"
    [[ -x $RATHOLE ]] && echo "rathole: $("$RATHOLE" --version | awk -F': *' '/Build Version/ {print $2}')"
    echo "settings: TUNNELS='$TUNNELS' REPEATS=$REPEATS DURATION=$DURATION WARMUP=$WARMUP CONCURRENCIES='$CONCURRENCIES'"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  } | tee "$RUN/versions.txt" >&2
  echo "results in $RUN" >&2
  start_nginx
  local rep i n tools
  read -r -a tools <<<"$TUNNELS"
  n=${#tools[@]}
  for rep in $(seq "$REPEATS"); do
    direct "$rep"
    for ((i = 0; i < n; i++)); do run_tool "${tools[(i + rep - 1) % n]}" "$rep"; done
  done
  stop_all
  report "$RUN" | tee "$RUN/table.md"
}

main "$@"
