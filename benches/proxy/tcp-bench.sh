#!/usr/bin/env bash
# TCP proxying: Switchyard (a tcp_service) against HAProxy in TCP mode, same machine,
# same backends, one worker thread each on CPU 1 (load generators and backends on CPU 0),
# interleaved repetitions. Per repetition and proxy:
#   - throughput: iperf3, one stream, SECONDS_PER_RUN s;
#   - connection rate: wrk -t1 -c32 with `Connection: close` (every request a new TCP
#     session through the proxy) to a one-worker nginx answering 200 "ok";
#   - database round trips: pgbench -S -c 8 -j 2 (select-only, simple protocol) against a
#     private PostgreSQL, also run direct, so each proxy's tps is a ratio of direct;
#   - idle sessions: IDLE_N connections held open through the proxy to nginx (one request
#     each, ../shared/bench/idleconns.py), ΔVmRSS ÷ IDLE_N.
# Prints per-run figures and median ratios (a RATIO line).
# Needs: iperf3, haproxy, nginx, wrk, postgresql, python3, a release build
# (apt-get install -y iperf3 haproxy nginx-light wrk postgresql).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-target/release/switchyard}
REPS=${REPS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-5}
IDLE_N=${IDLE_N:-3000}
BENCH=${BENCH:-../shared/bench}
. benches/proxy/common.sh

iperf3 -s -p 15201 -D --logfile "$work/iperf.log" --pidfile "$work/iperf.pid"
sleep 0.5
pids+=("$(cat "$work/iperf.pid")")
bench_nginx_backend 15202
sed -i 's/worker_connections 4096/worker_connections 20000/' "$work/backend.conf"

# PostgreSQL on 127.0.0.1:15203 as the postgres user (it refuses to run as root).
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
chmod o+x "$work"
mkdir -p "$work/pg" && chown postgres "$work/pg" && chmod 700 "$work/pg"
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
as_pg "$pgbin/initdb" -D "$work/pg" --auth=trust -U postgres -N >/dev/null
as_pg taskset -c 0 "$pgbin/postgres" -D "$work/pg" -k "$work/pg" -h 127.0.0.1 -p 15203 \
  -c max_connections=50 -c shared_buffers=64MB -c fsync=off 2>"$work/pg.err" & pids+=($!)
for _ in $(seq 1 50); do pg_isready -q -h 127.0.0.1 -p 15203 && break; sleep 0.2; done
pgbench -i -q -s 4 -h 127.0.0.1 -p 15203 -U postgres postgres >/dev/null 2>&1

cat > "$work/sy.yaml" <<YAML
server: {threads: 1, pid_file: $work/sy.pid, upgrade_sock: $work/sy.sock, grace_period: 1s, shutdown_timeout: 1s}
log: {level: warn, access_log: "off"}
tcp_services:
  - {name: iperf, listen: 127.0.0.1:16201, pool: iperf}
  - {name: web, listen: 127.0.0.1:16202, pool: web}
  - {name: pg, listen: 127.0.0.1:16203, pool: pg}
pools:
  - {name: iperf, backends: [{address: 127.0.0.1:15201}], health_check: {kind: none}}
  - {name: web, backends: [{address: 127.0.0.1:15202}], health_check: {kind: none}}
  - {name: pg, backends: [{address: 127.0.0.1:15203}], health_check: {kind: none}}
YAML
cat > "$work/haproxy.cfg" <<CFG
global
  nbthread 1
  maxconn 8000
defaults
  mode tcp
  maxconn 8000
  timeout connect 3s
  timeout client 1h
  timeout server 1h
listen iperf
  bind 127.0.0.1:17201
  server s1 127.0.0.1:15201
listen web
  bind 127.0.0.1:17202
  server s1 127.0.0.1:15202
listen pg
  bind 127.0.0.1:17203
  server s1 127.0.0.1:15203
CFG

throughput() { # port -> MiB/s
  taskset -c 0 iperf3 -c 127.0.0.1 -p "$1" -t "$SECONDS_PER_RUN" -J 2>/dev/null \
    | python3 -c 'import json,sys; 
try: print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/8/1048576, 1))
except Exception: print("nan")'
}
conn_rate() { # port -> new sessions/s (one request each)
  taskset -c 0 wrk -t1 -c32 -d"${SECONDS_PER_RUN}s" -H 'Connection: close' "http://127.0.0.1:$1/" \
    | awk '/Requests\/sec/ {printf "%.0f\n", $2}'
}
pg_tps() { # port -> transactions/s
  taskset -c 0 pgbench -n -S -c 8 -j 2 -T "$SECONDS_PER_RUN" -h 127.0.0.1 -p "$1" -U postgres postgres 2>/dev/null \
    | awk '/^tps/ {printf "%.0f\n", $3; exit}'
}
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
idle_bytes() { # pid port -> bytes per idle session
  local before fifo holder line after
  before=$(rss_kb "$1")
  fifo="$work/idle.fifo"; rm -f "$fifo"; mkfifo "$fifo"
  ulimit -n "$(ulimit -Hn)"
  taskset -c 0 python3 "$BENCH/idleconns.py" 127.0.0.1 "$2" "$IDLE_N" --hold 120 --setup-timeout 100 >"$fifo" 2>/dev/null &
  holder=$!
  read -r line <"$fifo" || true
  sleep 1
  after=$(rss_kb "$1")
  kill "$holder" 2>/dev/null || true; wait "$holder" 2>/dev/null || true
  case "$line" in READY\ ok="$IDLE_N"*) echo $(( (after - before) * 1024 / IDLE_N ));; *) echo "nan";; esac
}

echo "rep target throughput_MiB_s conn_per_s pgbench_tps idle_bytes_per_session"
for rep in $(seq 1 "$REPS"); do
  echo "$rep direct - - $(pg_tps 15203) -"
  for target in switchyard haproxy; do
    if [ "$target" = switchyard ]; then
      (ulimit -n "$(ulimit -Hn)"; exec taskset -c 1 "$BIN" -c "$work/sy.yaml") 2>"$work/sy.err" & p=$!; base=16200
    else
      (ulimit -n "$(ulimit -Hn)"; exec taskset -c 1 haproxy -f "$work/haproxy.cfg" -db) 2>"$work/ha.err" & p=$!; base=17200
    fi
    sleep 1
    t=$(throughput $((base + 1))); r=$(conn_rate $((base + 2))); q=$(pg_tps $((base + 3)))
    i=$(idle_bytes "$p" $((base + 2)))
    echo "$rep $target $t $r $q $i"
    [ "$t" != nan ] || tail -5 "$work/sy.err" "$work/ha.err" >&2 2>/dev/null || true
    kill "$p"; wait "$p" 2>/dev/null || true
    sleep 1
  done
done | tee "$work/results.txt"
python3 - "$work/results.txt" <<'PY'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1]) if l[0].isdigit()]
by = {}
for rep, target, *vals in rows:
    by.setdefault(rep, {})[target] = [float(v) if v not in ("-", "nan") else None for v in vals]
def med(f):
    vals = [f(v) for v in by.values()]
    vals = [x for x in vals if x is not None]
    return statistics.median(vals) if vals else float("nan")
def ratio(i, a="switchyard", b="haproxy"):
    return med(lambda v: v[a][i] / v[b][i] if v[a][i] and v[b][i] else None)
sy_pg = med(lambda v: v["switchyard"][2] / v["direct"][2])
ha_pg = med(lambda v: v["haproxy"][2] / v["direct"][2])
print(f"pgbench -S -c 8: switchyard {sy_pg:.3f}x direct, haproxy {ha_pg:.3f}x direct")
print(f"RATIO switchyard_vs_haproxy_tcp_throughput={ratio(0):.3f} "
      f"switchyard_vs_haproxy_tcp_conn_rate={ratio(1):.3f} "
      f"switchyard_vs_haproxy_pgbench_tps={ratio(2):.3f} "
      f"switchyard_vs_haproxy_idle_bytes_per_session={ratio(3):.3f}")
PY
