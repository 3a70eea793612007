#!/usr/bin/env bash
# Soak and exhaustion run (issue #15 item 8): SOAK_SECONDS of mixed traffic against the
# release binary while it is reloaded 20 times, upgraded once and loses a backend, then a
# report of failed requests, latency, RSS and open fds.
#
#   benches/soak.sh                         # 10 minutes against target/release/switchyard
#   SOAK_SECONDS=60 benches/soak.sh         # a short run to check the script
#
# Knobs: SOAK_SECONDS [600], SY_BIN [target/release/switchyard], SOAK_PORT_BASE [18480]
# (proxy, +1 admin, +2 metrics, +11..+13 backends), SOAK_KA_CONNS [16] keep-alive wrk
# connections, SOAK_CLOSE_CONNS [2] connection-per-request wrk connections, SOAK_THREADS [2]
# proxy worker threads, SOAK_OUT [a new /tmp/soak.XXXXXX] where logs and samples are kept.
#
# Needs wrk (scripts/ensure-build-deps wrk), nginx (nginx-light), curl. Everything listens on
# 127.0.0.1; every process started here is stopped by PID on exit; every loop is bounded.
# The last lines printed are machine-readable `SOAK key=value ...` lines.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DUR=${SOAK_SECONDS:-600}
SY_BIN=${SY_BIN:-$ROOT/target/release/switchyard}
BASE=${SOAK_PORT_BASE:-18480}
KA_CONNS=${SOAK_KA_CONNS:-16}
CLOSE_CONNS=${SOAK_CLOSE_CONNS:-2}
THREADS=${SOAK_THREADS:-2}
OUT=${SOAK_OUT:-$(mktemp -d /tmp/soak.XXXXXX)}
mkdir -p "$OUT"

PROXY_PORT=$BASE
ADMIN_PORT=$((BASE + 1))
METRICS_PORT=$((BASE + 2))
BACKEND_PORTS=("$((BASE + 11))" "$((BASE + 12))" "$((BASE + 13))")
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

# Event schedule (seconds after traffic starts). Reloads are spread evenly; the backend kill
# sits 7 s after the third, so it never coincides with a reload; the upgrade 5 s after the
# middle, so the middle RSS sample is still the first process.
N_RELOADS=20
KILL_AT=$((DUR / 3 + 7))
RESTART_AFTER=$((DUR >= 180 ? 30 : DUR / 6))
RESTART_AT=$((KILL_AT + RESTART_AFTER))
UPGRADE_AT=$((DUR / 2 + 5))
SAMPLE_EVERY=10
KILLED_IDX=1 # the second backend

log() { echo "[soak $(date +%T)] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for tool in wrk curl "$NGINX"; do command -v "$tool" >/dev/null || die "$tool not found (scripts/ensure-build-deps wrk nginx-light curl)"; done
[[ -x $SY_BIN ]] || die "$SY_BIN is not built (cargo build --release)"
(( DUR >= 30 )) || die "SOAK_SECONDS must be at least 30"

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$PROXY_PORT" "$ADMIN_PORT" "$METRICS_PORT" "${BACKEND_PORTS[@]}"; do
  port_busy "$p" && die "port $p is in use (set SOAK_PORT_BASE)"
done

# ---------------------------------------------------------------- cleanup
BACKEND_PIDS=("" "" "")
SY_PIDS=()   # every switchyard process started (old ones exit after the upgrade)
CLIENT_PIDS=()
cleanup() {
  local p
  for p in "${CLIENT_PIDS[@]}" "${SY_PIDS[@]}" "${BACKEND_PIDS[@]}"; do
    [[ -n $p ]] && kill -TERM "$p" 2>/dev/null || true
  done
  # the segment loop's current wrk, by its parent's PID
  for p in "${CLIENT_PIDS[@]}"; do [[ -n $p ]] && pkill -TERM -P "$p" 2>/dev/null || true; done
  sleep 2
  for p in "${CLIENT_PIDS[@]}" "${SY_PIDS[@]}" "${BACKEND_PIDS[@]}"; do
    [[ -n $p ]] && kill -KILL "$p" 2>/dev/null || true
  done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- backends (nginx, one process each)
mkdir -p "$OUT/www" "$OUT/tmp"
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
  default_type text/plain;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  client_body_temp_path $OUT/tmp/body-$port;
  proxy_temp_path $OUT/tmp/proxy-$port;
  fastcgi_temp_path $OUT/tmp/fcgi-$port;
  uwsgi_temp_path $OUT/tmp/uwsgi-$port;
  scgi_temp_path $OUT/tmp/scgi-$port;
  server {
    listen 127.0.0.1:$port backlog=4096;
    add_header X-Backend $port;
    location / { return 200 "ok"; }
  }
}
EOF
  "$NGINX" -e "$OUT/be-$port.err" -p "$OUT" -c "$OUT/be-$port.conf" >>"$OUT/be-$port.log" 2>&1 &
  BACKEND_PIDS[i]=$!
}
wait_http() {  # port path: up to 10 s for a 200
  local n
  for n in $(seq 100); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$1$2" || true) == 200 ]] && return 0
    sleep 0.1
  done
  return 1
}
for i in 0 1 2; do start_backend "$i"; done
for p in "${BACKEND_PORTS[@]}"; do wait_http "$p" / || die "backend $p did not start (see $OUT/be-$p.err)"; done

# ---------------------------------------------------------------- switchyard
CONF=$OUT/switchyard.yaml
write_config() {  # reload number: stamped on every response so each reload changes the route
  cat > "$CONF.new" <<EOF
server:
  threads: $THREADS
  pid_file: $OUT/switchyard.pid
  upgrade_sock: $OUT/upgrade.sock
  grace_period: 5s
  shutdown_timeout: 2s
log:
  level: info
  access_log: "off"
admin:
  listen: 127.0.0.1:$ADMIN_PORT
  state_file: $OUT/state.json
metrics:
  listen: 127.0.0.1:$METRICS_PORT
listeners:
  - name: web
    listen: 127.0.0.1:$PROXY_PORT
pools:
  - name: web
    algorithm: round_robin
    retries: 1
    health_check:
      kind: http
      path: /health
      interval: 1s
      timeout: 1s
    backends:
      - address: 127.0.0.1:${BACKEND_PORTS[0]}
      - address: 127.0.0.1:${BACKEND_PORTS[1]}
      - address: 127.0.0.1:${BACKEND_PORTS[2]}
routes:
  - name: all
    pool: web
    response_headers:
      set: { X-Soak-Reload: "$1" }
EOF
  mv "$CONF.new" "$CONF"
}
write_config 0
"$SY_BIN" -t -c "$CONF" >"$OUT/check.log" 2>&1 || die "switchyard -t rejected the config: $(cat "$OUT/check.log")"
"$SY_BIN" -c "$CONF" >"$OUT/sy-0.out" 2>"$OUT/sy-0.err" &
SY_PID=$!
SY_PIDS+=("$SY_PID")
wait_http "$PROXY_PORT" / || die "switchyard did not answer 200 on :$PROXY_PORT (see $OUT/sy-0.err)"

# ---------------------------------------------------------------- traffic
# A wrk script: non-2xx responses counted per wall-clock second (to attribute them to events),
# and one machine-readable result line.
cat > "$OUT/soak.lua" <<'EOF'
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) bad = {} end
function response(status, headers, body)
  if status < 200 or status > 299 then
    local k = tostring(os.time()) .. ":" .. tostring(status)
    bad[k] = (bad[k] or 0) + 1
  end
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRKRESULT requests=%d duration_us=%d err_connect=%d err_read=%d err_write=%d " ..
    "err_status=%d err_timeout=%d p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
  for _, t in ipairs(threads) do
    local b = t:get("bad")
    if b then for k, n in pairs(b) do io.write(string.format("BAD %s %d\n", k, n)) end end
  end
end
EOF
T0=$(date +%s)
WRK_DUR=$((DUR + 2))
# wrk's own timeout (5 s) bounds every request; -d bounds the run.
nice wrk -t1 -c"$KA_CONNS" -d"${WRK_DUR}s" --timeout 5s --latency -s "$OUT/soak.lua" \
  "http://127.0.0.1:$PROXY_PORT/ka" >"$OUT/wrk-keepalive.out" 2>&1 &
CLIENT_PIDS+=($!)
# The connection-per-request client runs as back-to-back ${SEG}-second wrk runs, so that its
# socket errors (which wrk does not time) fall into a known ${SEG}-second window; with no
# connection kept, the split changes nothing for the traffic.
SEG=5
(
  w=""
  trap '[[ -n $w ]] && kill -TERM "$w" 2>/dev/null; exit 0' TERM
  for s in $(seq $((WRK_DUR / SEG + 1))); do
    (( $(date +%s) - T0 >= WRK_DUR )) && break
    echo "SEGMENT $(date +%s)"
    nice wrk -t1 -c"$CLOSE_CONNS" -d"${SEG}s" --timeout 5s -s "$OUT/soak.lua" \
      -H "Connection: close" "http://127.0.0.1:$PROXY_PORT/close" 2>&1 &
    w=$!
    wait $w || true
  done
) >"$OUT/wrk-close.out" 2>&1 &
CLIENT_PIDS+=($!)
log "traffic started: ${DUR}s, keep-alive c$KA_CONNS + connection-per-request c$CLOSE_CONNS; out=$OUT"
log "schedule: $N_RELOADS reloads every ~$((DUR / (N_RELOADS + 1)))s, kill backend ${BACKEND_PORTS[$KILLED_IDX]} at ${KILL_AT}s, restart at ${RESTART_AT}s, upgrade at ${UPGRADE_AT}s"

EVENTS=$OUT/events.tsv     # t_epoch  elapsed  event  detail
SAMPLES=$OUT/samples.tsv   # elapsed  pid  rss_kb  fds  loadavg1
printf 'epoch\telapsed\tevent\tdetail\n' > "$EVENTS"
printf 'elapsed\tpid\trss_kb\tfds\tloadavg1\n' > "$SAMPLES"
event() { local now; now=$(date +%s); printf '%s\t%s\t%s\t%s\n' "$now" "$((now - T0))" "$1" "$2" >> "$EVENTS"; log "t=$((now - T0))s $1 $2"; }
sample() {
  local el=$1 rss fds
  rss=$(awk '/^VmRSS:/{print $2}' "/proc/$SY_PID/status" 2>/dev/null || echo 0)
  fds=$( (ls "/proc/$SY_PID/fd" 2>/dev/null || true) | wc -l)
  printf '%s\t%s\t%s\t%s\t%s\n' "$el" "$SY_PID" "${rss:-0}" "$fds" "$(cut -d' ' -f1 /proc/loadavg)" >> "$SAMPLES"
}

reloads_done=0
next_reload_at() { echo $(( (reloads_done + 1) * DUR / (N_RELOADS + 1) )); }
killed=0; restarted=0; upgraded=0; next_sample=0
OLD_PID=""

do_upgrade() {
  rm -f "$OUT/upgrade.sock"
  "$SY_BIN" -u -c "$CONF" >"$OUT/sy-1.out" 2>"$OUT/sy-1.err" &
  local new=$! n
  SY_PIDS+=("$new")
  for n in $(seq 100); do [[ -S $OUT/upgrade.sock ]] && break; sleep 0.1; done
  [[ -S $OUT/upgrade.sock ]] || { event upgrade-failed "no $OUT/upgrade.sock after 10 s"; return 0; }
  kill -QUIT "$SY_PID"
  OLD_PID=$SY_PID
  SY_PID=$new
  event upgrade "old=$OLD_PID new=$new (SIGQUIT sent)"
  # Until its SIGHUP watcher runs, a SIGHUP would end the new process (the default action),
  # so the next reload waits for it (10 s at most).
  for n in $(seq 100); do grep -q 'Starting service: BG reload on SIGHUP' "$OUT/sy-1.err" && break; sleep 0.1; done
  sleep 0.5
  event upgrade-ready "new=$new $(grep -q 'Starting service: BG reload on SIGHUP' "$OUT/sy-1.err" && echo 'SIGHUP watcher started' || echo 'SIGHUP watcher not seen in 10 s')"
}
proc_gone() {  # pid: exited (or a zombie waiting to be reaped)
  [[ ! -e /proc/$1 ]] || [[ $(awk '/^State:/{print $2}' "/proc/$1/status" 2>/dev/null) == Z ]]
}

# The scheduler: one tick per 0.5 s, at most 4*DUR ticks.
for tick in $(seq $((DUR * 4))); do
  el=$(( $(date +%s) - T0 ))
  (( el >= DUR )) && break
  if (( el >= next_sample )); then sample "$el"; next_sample=$((next_sample + SAMPLE_EVERY)); fi
  if (( reloads_done < N_RELOADS && el >= $(next_reload_at) )); then
    reloads_done=$((reloads_done + 1))
    write_config "$reloads_done"
    kill -HUP "$SY_PID"
    event reload "$reloads_done pid=$SY_PID"
  fi
  if (( !killed && el >= KILL_AT )); then
    kill -KILL "${BACKEND_PIDS[$KILLED_IDX]}"; killed=1
    event backend-kill "${BACKEND_PORTS[$KILLED_IDX]} pid=${BACKEND_PIDS[$KILLED_IDX]}"
  fi
  if (( killed && !restarted && el >= RESTART_AT )); then
    start_backend "$KILLED_IDX"; restarted=1
    event backend-restart "${BACKEND_PORTS[$KILLED_IDX]} pid=${BACKEND_PIDS[$KILLED_IDX]}"
  fi
  if (( !upgraded && el >= UPGRADE_AT )); then upgraded=1; do_upgrade; fi
  if [[ -n $OLD_PID ]] && proc_gone "$OLD_PID"; then event old-exited "$OLD_PID"; OLD_PID=""; fi
  sleep 0.5
done
sample "$(( $(date +%s) - T0 ))"
log "events done; waiting for wrk to finish (at most 30 s)"
for n in $(seq 60); do
  proc_gone "${CLIENT_PIDS[0]}" && proc_gone "${CLIENT_PIDS[1]}" && break
  sleep 0.5
done
wait "${CLIENT_PIDS[@]}" 2>/dev/null || true
CLIENT_PIDS=()
METRICS_OK=$(curl -s --max-time 2 "http://127.0.0.1:$METRICS_PORT/metrics" > "$OUT/metrics-end.txt" && echo 1 || echo 0)

# ---------------------------------------------------------------- report
reloads_logged=$(cat "$OUT"/sy-*.err | grep -c 'reloaded ' || true)
upgrade_ok=0
grep -q $'\tupgrade\t' "$EVENTS" && ! proc_gone "$SY_PID" && upgrade_ok=1
kill_epoch=$(awk -F'\t' '$3=="backend-kill"{print $1}' "$EVENTS")
rss_at() {  # elapsed -> rss of the sample nearest that time
  awk -F'\t' -v t="$1" 'NR>1 { d = $1 - t; if (d < 0) d = -d; if (best == "" || d < best) { best = d; r = $3 } } END { print r + 0 }' "$SAMPLES"
}
fds_first=$(awk -F'\t' 'NR==2{print $4}' "$SAMPLES")
fds_last=$(awk -F'\t' 'END{print $4}' "$SAMPLES")
rss_start=$(awk -F'\t' 'NR==2{print $3}' "$SAMPLES")
rss_min2=$(rss_at 120)
rss_mid=$(rss_at $((DUR / 2)))
rss_end=$(awk -F'\t' 'END{print $3}' "$SAMPLES")
rss_drift=$(awk -v a="$rss_min2" -v b="$rss_end" 'BEGIN { if (a > 0) printf "%.1f", (b - a) * 100 / a; else print "nan" }')

summarise() {  # name file -> the report lines for one client (one or several wrk runs)
  local name=$1 f=$2
  grep -q '^WRKRESULT' "$f" || { echo "  $name: wrk produced no result: $(tail -3 "$f" | tr '\n' ' ')"; echo "SOAK client=$name result=missing"; return 0; }
  awk -v name="$name" -v k="${kill_epoch:-0}" -v t0="$T0" -v seg="${3:-0}" '
    function near(t,  d) { d = t - k; if (d < 0) d = -d; return k > 0 && d <= 2 }
    $1 == "SEGMENT" { start = $2 }
    $1 == "WRKRESULT" {
      delete r
      for (i = 2; i <= NF; i++) { split($i, x, "="); r[x[1]] = x[2] }
      runs++; req += r["requests"]; us += r["duration_us"]
      se = r["err_connect"] + r["err_read"] + r["err_write"] + r["err_timeout"]
      for (e in r) if (e ~ /^err_/) err[e] += r[e]
      sock += se
      if (se > 0) {
        # a socket error in a run of seg seconds: attributable only to that window
        w = sprintf("%ds-%ds", start - t0, start - t0 + seg)
        if (k > 0 && start <= k + 2 && start + seg >= k - 2) { sock_near += se; where = where " " w "(near kill):" se }
        else where = where " " w ":" se
      }
      p50[runs] = r["p50_us"]; p99[runs] = r["p99_us"]; p999[runs] = r["p999_us"]
      if (r["max_us"] > max) max = r["max_us"]
    }
    $1 == "BAD" { split($2, a, ":"); bad += $3; if (near(a[1])) bad_near += $3; else badline = badline sprintf("      %ds: status %s x %d\n", a[1] - t0, a[2], $3) }
    function median(a, n,  i, j, t) {
      for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j+1] = a[j]; a[j+1] = t }
      return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    END {
      if (runs == 1) { q50 = p50[1]; q99 = p99[1]; q999 = p999[1]; how = "" }
      else { q50 = median(p50, runs); q999 = median(p999, runs); hi = 0; for (i = 1; i <= runs; i++) if (p99[i] > hi) hi = p99[i]; q99 = median(p99, runs)
             how = sprintf(" (medians over %d runs of %ds; worst run p99=%.2fms)", runs, seg, hi / 1000) }
      printf "  %-10s requests=%d rps=%.0f non2xx=%d (within 2 s of the kill: %d, elsewhere: %d) socket_errors=%d (connect %d, read %d, write %d, timeout %d; near the kill: %d) p50=%.2fms p99=%.2fms p99.9=%.2fms max=%.1fms%s\n",
        name, req, req / (us / 1e6), bad, bad_near, bad - bad_near, sock,
        err["err_connect"], err["err_read"], err["err_write"], err["err_timeout"], sock_near,
        q50 / 1000, q99 / 1000, q999 / 1000, max / 1000, how
      if (where != "") printf "    socket errors by window (elapsed):%s\n", where
      if (badline != "") printf "    non-2xx away from the kill (elapsed s):\n%s", badline
      printf "SOAK client=%s requests=%d non2xx=%d non2xx_near_kill=%d non2xx_elsewhere=%d socket_errors=%d socket_errors_near_kill=%d err_connect=%d err_read=%d err_write=%d err_timeout=%d p50_us=%d p99_us=%d p999_us=%d max_us=%d\n",
        name, req, bad, bad_near, bad - bad_near, sock, sock_near, err["err_connect"], err["err_read"], err["err_write"], err["err_timeout"],
        q50, q99, q999, max
    }' "$f"
}

{
  echo
  echo "=== Soak report ($(date -Is)) ==="
  echo "binary: $SY_BIN ($("$SY_BIN" --version 2>/dev/null | head -1 || echo '?'))"
  echo "machine: $(uname -srm), $(nproc) cpus; loadavg at end: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "duration: ${DUR}s; backends: ${BACKEND_PORTS[*]} (nginx); proxy threads: $THREADS; logs: $OUT"
  echo "clients:"
  { summarise keepalive "$OUT/wrk-keepalive.out"; summarise close "$OUT/wrk-close.out" "$SEG"; } | tee "$OUT/clients.txt"
  awk '$1 == "SOAK" && $2 ~ /^client=/ { for (i = 3; i <= NF; i++) { split($i, x, "="); v[x[1]] += x[2] } }
       END { printf "  total      requests=%d non2xx=%d (near the kill %d) socket_errors=%d (near the kill %d)\n", v["requests"], v["non2xx"], v["non2xx_near_kill"], v["socket_errors"], v["socket_errors_near_kill"]
             printf "SOAK client=total requests=%d non2xx=%d non2xx_near_kill=%d socket_errors=%d socket_errors_near_kill=%d failed_outside_kill=%d\n", v["requests"], v["non2xx"], v["non2xx_near_kill"], v["socket_errors"], v["socket_errors_near_kill"], v["non2xx"] - v["non2xx_near_kill"] + v["socket_errors"] - v["socket_errors_near_kill"] }' "$OUT/clients.txt" | tee "$OUT/total.txt"
  echo "events (elapsed s):"
  awk -F'\t' 'NR>1{ printf "  %4ds  %-16s %s\n", $2, $3, $4 }' "$EVENTS"
  echo "reloads: $reloads_done sent, $reloads_logged logged as applied; upgrade: $([[ $upgrade_ok == 1 ]] && echo ok || echo FAILED)"
  echo "RSS (kB): start=$rss_start minute2=$rss_min2 middle=$rss_mid end=$rss_end (minute 2 -> end: ${rss_drift}%)"
  echo "open fds: start=$fds_first end=$fds_last"
  echo "per process (the upgrade replaces it; first and last sample, from minute 2 when it ran that long):"
  awk -F'\t' 'NR>1 { if (!($2 in f)) { order[++k] = $2; f[$2] = $3; ft[$2] = $1; ff[$2] = $4 }
                   if ($1 >= 120 && !($2 in g)) { g[$2] = $3; gt[$2] = $1; gf[$2] = $4 }
                   l[$2] = $3; lt[$2] = $1; lf[$2] = $4 }
       END { for (i = 1; i <= k; i++) { p = order[i]
               if (p in g) { a = g[p]; at = gt[p]; af = gf[p] } else { a = f[p]; at = ft[p]; af = ff[p] }
               printf "  pid %s: %ds RSS %d kB, %d fds -> %ds RSS %d kB, %d fds (%+.1f%%)\n", p, at, a, af, lt[p], l[p], lf[p], a ? (l[p] - a) * 100 / a : 0 } }' "$SAMPLES"
  # the foreground process writes no pid file (only -d does), so the PIDs are the ones started here
  echo "samples (elapsed s, pid, RSS kB, fds, loadavg):"
  awk -F'\t' 'NR>1{ printf "  %4d %7d %7d %5d %s\n", $1, $2, $3, $4, $5 }' "$SAMPLES"
  echo "SOAK duration_s=$DUR reloads_sent=$reloads_done reloads_applied=$reloads_logged upgrade_ok=$upgrade_ok kill_at_s=$KILL_AT restart_at_s=$RESTART_AT upgrade_at_s=$UPGRADE_AT"
  failed_out=$(awk '$1 == "SOAK" && $2 == "client=total" { for (i = 3; i <= NF; i++) { split($i, x, "="); if (x[1] == "failed_outside_kill") print x[2] } }' "$OUT/total.txt" | head -1 || true)
  rss_ok=$(awk -v d="$rss_drift" 'BEGIN { print (d != "nan" && d <= 10 && d >= -10) ? 1 : 0 }')
  verdict="no"; [[ ${failed_out:-1} == 0 && $rss_ok == 1 && $upgrade_ok == 1 && $reloads_logged == "$N_RELOADS" ]] && verdict="yes"
  echo "done criteria (0 failures outside the kill's +-2 s, RSS minute 2 -> end within 10 %, 20 reloads applied, upgrade ok): $verdict"
  echo "SOAK failed_outside_kill=${failed_out:-?} rss_within_10pct=$rss_ok criteria_met=$verdict"
  echo "SOAK rss_start_kb=$rss_start rss_min2_kb=$rss_min2 rss_mid_kb=$rss_mid rss_end_kb=$rss_end rss_drift_min2_end_pct=$rss_drift fds_start=$fds_first fds_end=$fds_last metrics_scraped=$METRICS_OK"
} | tee "$OUT/report.txt"
