#!/usr/bin/env bash
# Idle keep-alive client connections: resident memory per connection, and what is left
# a while after they close (docs/PERFORMANCE.md).
#
#   SY_BIN=target/release/switchyard N=9000 benches/proxy/idle-bench.sh
#
# Starts three nginx backends and Switchyard (one thread, round robin, access log off) on
# private ports, reads Switchyard's VmRSS, opens N keep-alive connections that each make
# one request and then stay idle (../shared/bench/idleconns.py), reads VmRSS again, closes
# them and reads VmRSS after AFTER seconds (space-separated list). Prints
#   IDLE n=<ok> rss_before_kib=… rss_idle_kib=… bytes_per_conn=… rss_after_<s>s_kib=…
# Optional: SY_ENV='VAR=value …' is put in Switchyard's environment; PINGORA_MIN=1
# measures ../shared/bench/pingora-min instead (same backends and port). CPU=1 first
# measures CPU per request (utime+stime of the proxy ÷ requests, wrk -t1 -c64 for
# DURATION s on a 2-byte and a 16 KiB body; proxy pinned to CPU 1, wrk and backends to
# CPU 0, as ../shared/bench/run.sh does) and prints
#   CPU ok_us_per_req=… 16k_us_per_req=…
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BENCH=${BENCH:-$HERE/../../../shared/bench}
N=${N:-9000}
AFTER=${AFTER:-"5 60"}
PORT=${PORT:-18080}
BE_BASE=${BE_BASE:-19000}
SY_BIN=${SY_BIN:-$HERE/../../target/release/switchyard}
WORK=$(mktemp -d /tmp/idle-bench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
for tool in nginx python3 curl; do
  command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 2; }
done

mkdir -p "$WORK/www" "$WORK/tmp"; printf ok > "$WORK/www/index.html"
head -c 16384 /dev/zero | tr '\0' x > "$WORK/www/16k"
backends=""
for i in 1 2 3; do
  p=$((BE_BASE + i))
  backends+="      - address: 127.0.0.1:$p"$'\n'
  cat > "$WORK/be-$p.conf" <<EOF
daemon off; master_process off; worker_processes 1; pid $WORK/be-$p.pid; error_log $WORK/be-$p.err;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 100000000; keepalive_timeout 300s;
  client_body_temp_path $WORK/tmp/b$p; proxy_temp_path $WORK/tmp/p$p; fastcgi_temp_path $WORK/tmp/f$p;
  uwsgi_temp_path $WORK/tmp/u$p; scgi_temp_path $WORK/tmp/s$p;
  server { listen 127.0.0.1:$p; root $WORK/www; location / { add_header X-Backend $p; } } }
EOF
  taskset -c 0 nginx -c "$WORK/be-$p.conf" -p "$WORK" >/dev/null 2>&1 & pids+=($!)
done

cat > "$WORK/sy.yaml" <<EOF
server: { threads: 1, pid_file: $WORK/sy.pid, upgrade_sock: $WORK/sy.sock, grace_period: 1s, shutdown_timeout: 1s }
log: { level: warn, access_log: "off" }
listeners: [ { name: web, listen: "127.0.0.1:$PORT", limits: { keepalive_timeout: 300s } } ]
pools:
  - name: web
    algorithm: round_robin
    health_check: { kind: none }
    backends:
$backends
routes: [ { name: all, pool: web } ]
EOF

if [ "${PINGORA_MIN:-0}" = 1 ]; then
  PINGORA_THREADS=1 $BENCH/pingora-min/target/release/pingora-min "127.0.0.1:$PORT" \
    127.0.0.1:$((BE_BASE + 1)) 127.0.0.1:$((BE_BASE + 2)) 127.0.0.1:$((BE_BASE + 3)) \
    >"$WORK/proxy.log" 2>&1 &
else
  env ${SY_ENV:-} "$SY_BIN" -c "$WORK/sy.yaml" >"$WORK/proxy.log" 2>&1 &
fi
px=$!; pids+=($px)
for _ in $(seq 1 150); do curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.2; done
curl -sf -o /dev/null "http://127.0.0.1:$PORT/" || { echo "proxy did not answer" >&2; cat "$WORK/proxy.log" >&2; exit 1; }
rss() { awk '/^VmRSS/ {print $2}' "/proc/$px/status"; }
if [ "${CPU:-0}" = 1 ]; then
  command -v wrk >/dev/null || { echo "CPU=1 needs wrk" >&2; exit 2; }
  for t in /proc/$px/task/*; do taskset -pc 1 "${t##*/}" >/dev/null; done
  ticks() { awk '{print $14 + $15}' "/proc/$px/stat"; }
  hz=$(getconf CLK_TCK); cpu="CPU"
  for path in / /16k; do
    taskset -c 0 wrk -t1 -c64 -d2s "http://127.0.0.1:$PORT$path" >/dev/null 2>&1
    t0=$(ticks)
    out=$(taskset -c 0 wrk -t1 -c64 -d"${DURATION:-8}"s "http://127.0.0.1:$PORT$path" 2>&1)
    t1=$(ticks)
    n=$(awk '/requests in/ {print $1}' <<<"$out")
    name=$([ "$path" = / ] && echo ok || echo 16k)
    cpu+=" ${name}_us_per_req=$(awk -v a="$t0" -v b="$t1" -v n="$n" -v hz="$hz" 'BEGIN{printf "%.1f", (b-a)/hz*1e6/n}')"
    cpu+=" ${name}_rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
  done
  echo "$cpu"
fi
sleep 1
before=$(rss)

fifo="$WORK/ready"; mkfifo "$fifo"
python3 "$BENCH/idleconns.py" 127.0.0.1 "$PORT" "$N" --hold 600 --setup-timeout 300 >"$fifo" &
cl=$!; pids+=($cl)
exec 3<"$fifo"
read -r ready <&3
sleep 2
idle=$(rss)
ok=$(sed -E 's/.*ok=([0-9]+).*/\1/' <<<"$ready")
kill -TERM "$cl"; wait "$cl" 2>/dev/null
line="IDLE n=$ok rss_before_kib=$before rss_idle_kib=$idle"
line+=" bytes_per_conn=$(( (idle - before) * 1024 / (ok > 0 ? ok : 1) ))"
elapsed=0
for t in $AFTER; do
  sleep $((t - elapsed)); elapsed=$t
  line+=" rss_after_${t}s_kib=$(rss)"
done
echo "$ready"
echo "$line"
