#!/usr/bin/env bash
# Deploy simulation (issue #19): DEPLOY_SECONDS of keep-alive GET load through switchyard
# to two nginx backends, one of which is stopped (SIGTERM: nginx's fast shutdown, open
# connections cut) and started again 1 s later every 10 s, alternating. Run twice: with
# try_duration, slow_start and retry_on [connect_failure, reset] ("on"), and with the
# defaults ("off"). Prints failed requests (non-2xx + socket errors) and latency per run.
#
#   benches/deploy.sh                          # 2 minutes per run, target/release/switchyard
#   DEPLOY_SECONDS=30 SY_BIN=target/debug/switchyard benches/deploy.sh
#
# Knobs: DEPLOY_SECONDS [120], SY_BIN [target/release/switchyard], DEPLOY_PORT_BASE [18580]
# (proxy, +11/+12 backends), DEPLOY_CONNS [8] wrk connections, DEPLOY_OUT [a new
# /tmp/deploy.XXXXXX]. Needs wrk, nginx, curl. Everything listens on 127.0.0.1; every
# process started here is stopped by PID on exit; every loop is bounded.
# The last lines are machine-readable `DEPLOY mode=... key=value ...` lines.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DUR=${DEPLOY_SECONDS:-120}
SY_BIN=${SY_BIN:-$ROOT/target/release/switchyard}
BASE=${DEPLOY_PORT_BASE:-18580}
CONNS=${DEPLOY_CONNS:-8}
OUT=${DEPLOY_OUT:-$(mktemp -d /tmp/deploy.XXXXXX)}
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
PROXY_PORT=$BASE
BACKEND_PORTS=("$((BASE + 11))" "$((BASE + 12))")
mkdir -p "$OUT/tmp"

log() { echo "[deploy $(date +%T)] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
for tool in wrk curl "$NGINX"; do command -v "$tool" >/dev/null || die "$tool not found"; done
[[ -x $SY_BIN ]] || die "$SY_BIN is not built"
(( DUR >= 20 )) || die "DEPLOY_SECONDS must be at least 20"

BACKEND_PIDS=("" "")
SY_PID=""
cleanup() {
  local p
  for p in "$SY_PID" "${BACKEND_PIDS[@]}"; do [[ -n $p ]] && kill -TERM "$p" 2>/dev/null || true; done
  sleep 1
  for p in "$SY_PID" "${BACKEND_PIDS[@]}"; do [[ -n $p ]] && kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_backend() {  # index
  local i=$1 port=${BACKEND_PORTS[$1]}
  cat > "$OUT/be-$port.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $OUT/be-$port.pid;
error_log $OUT/be-$port.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000000;
  client_body_temp_path $OUT/tmp/body-$port;
  proxy_temp_path $OUT/tmp/proxy-$port;
  fastcgi_temp_path $OUT/tmp/fcgi-$port;
  uwsgi_temp_path $OUT/tmp/uwsgi-$port;
  scgi_temp_path $OUT/tmp/scgi-$port;
  server { listen 127.0.0.1:$port backlog=4096; location / { return 200 "ok"; } }
}
EOF
  "$NGINX" -e "$OUT/be-$port.err" -p "$OUT" -c "$OUT/be-$port.conf" >>"$OUT/be-$port.log" 2>&1 &
  BACKEND_PIDS[i]=$!
}
wait_http() {  # port: up to 10 s for a 200
  local n
  for n in $(seq 100); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$1/" || true) == 200 ]] && return 0
    sleep 0.1
  done
  return 1
}

run() {  # mode: on | off
  local mode=$1 keys=""
  if [[ $mode == on ]]; then
    keys="    try_duration: 5s
    slow_start: 5s
    retries: 2
    retry_on: [connect_failure, reset]"
  fi
  cat > "$OUT/sy-$mode.yaml" <<EOF
server:
  threads: 2
  pid_file: $OUT/sy.pid
  upgrade_sock: $OUT/sy.sock
  grace_period: 1s
  shutdown_timeout: 1s
log:
  level: info
  access_log: "off"
listeners:
  - name: web
    listen: 127.0.0.1:$PROXY_PORT
pools:
  - name: p
    health_check: { interval: 1s, timeout: 500ms, healthy_threshold: 1, unhealthy_threshold: 1 }
$keys
    backends:
      - address: 127.0.0.1:${BACKEND_PORTS[0]}
      - address: 127.0.0.1:${BACKEND_PORTS[1]}
routes:
  - name: all
    pool: p
EOF
  "$SY_BIN" -c "$OUT/sy-$mode.yaml" >"$OUT/sy-$mode.out" 2>"$OUT/sy-$mode.err" &
  SY_PID=$!
  wait_http "$PROXY_PORT" || die "switchyard did not start (see $OUT/sy-$mode.err)"
  log "mode $mode: $DUR s of load, a backend restarted every 10 s"
  wrk -t2 -c"$CONNS" -d"${DUR}s" --latency "http://127.0.0.1:$PROXY_PORT/" >"$OUT/wrk-$mode.txt" 2>&1 &
  local wrk_pid=$! t idx=0 restarts=0
  for (( t = 10; t < DUR; t += 10 )); do
    sleep 10
    kill -TERM "${BACKEND_PIDS[idx]}" 2>/dev/null || true
    wait "${BACKEND_PIDS[idx]}" 2>/dev/null || true
    sleep 1
    start_backend "$idx"
    restarts=$((restarts + 1))
    idx=$(( (idx + 1) % 2 ))
  done
  wait "$wrk_pid" || true
  kill -TERM "$SY_PID" 2>/dev/null || true
  wait "$SY_PID" 2>/dev/null || true
  SY_PID=""
  local total non2xx sockerr p50 p99
  total=$(awk '/requests in/ {print $1}' "$OUT/wrk-$mode.txt")
  non2xx=$(awk '/Non-2xx/ {print $NF}' "$OUT/wrk-$mode.txt")
  sockerr=$(awk -F'[ ,]+' '/Socket errors/ {print $4 + $6 + $8 + $10}' "$OUT/wrk-$mode.txt")
  p50=$(awk '$1 == "50%" {print $2}' "$OUT/wrk-$mode.txt")
  p99=$(awk '$1 == "99%" {print $2}' "$OUT/wrk-$mode.txt")
  echo "DEPLOY mode=$mode seconds=$DUR restarts=$restarts requests=${total:-0} failed=$(( ${non2xx:-0} + ${sockerr:-0} )) non2xx=${non2xx:-0} socket_errors=${sockerr:-0} p50=${p50:-?} p99=${p99:-?}"
}

for i in 0 1; do start_backend "$i"; done
for p in "${BACKEND_PORTS[@]}"; do wait_http "$p" || die "backend $p did not start"; done
run on
run off
log "logs and wrk output in $OUT"
