#!/usr/bin/env bash
# What a `scope: cluster` rate limit costs next to the same limit `scope: local`:
# Switchyard with switchyard-bench-limit-local.yaml and with …-limit-cluster.yaml (a
# token bucket that never refuses, keyed on the client IP, shared through a private
# redis-server), started in turn on the same machine: local, cluster, local, cluster…
# Per run: wrk -t1 -c$CONNS for $DURATION s after $WARMUP s of warm-up; the proxy's CPU
# (utime+stime of its process, all threads) per request and its requests/s, Redis's
# CPU per request (not counted in the proxy's) and Redis script calls per request.
# Prints each run and the median ratios cluster ÷ local (paired per repetition):
#   RATIO cluster_vs_local_cpu_per_req=… cluster_vs_local_rps=…
# The proxy is pinned to CPU $PROXY_CPU; wrk, the nginx backends and Redis to $LOAD_CPU.
# Needs: a release build, nginx, wrk, redis-server, redis-cli, taskset, curl
# (apt-get install -y nginx-light wrk redis-server util-linux curl).
# Traffic stays on 127.0.0.1; every process started here is stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-target/release/switchyard}
REPS=${REPS:-3}
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-2}
CONNS=${CONNS:-64}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
REDIS_PORT=16399 # as in switchyard-bench-limit-cluster.yaml
HZ=$(getconf CLK_TCK)
[[ -x $BIN ]] || { echo "limit-bench: no $BIN (cargo build --release)" >&2; exit 1; }
for tool in nginx wrk redis-server redis-cli taskset curl; do
  command -v "$tool" >/dev/null || { echo "limit-bench: missing $tool" >&2; exit 1; }
done

work=$(mktemp -d)
chmod 755 "$work"
pids=()
sy_pid=""
cleanup() {
  [[ -n $sy_pid ]] && kill "$sy_pid" 2>/dev/null
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12+$13}'; }
wait_200() {
  local i
  for i in $(seq 150); do
    [[ $(curl -s -o /dev/null -m 1 -w '%{http_code}' "http://127.0.0.1:$1/") == 200 ]] && return 0
    sleep 0.1
  done
  return 1
}
script_calls() {
  redis-cli -p "$REDIS_PORT" info commandstats | tr -d '\r' |
    awk -F'[:=,]' '$1=="cmdstat_evalsha"||$1=="cmdstat_eval" {s+=$3} END {print s+0}'
}

for port in 9001 9002 9003; do
  cat > "$work/be-$port.conf" <<EOF
worker_processes 1;
daemon off;
master_process off;
pid $work/be-$port.pid;
error_log $work/be-$port.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  client_body_temp_path $work/tmp-$port;
  proxy_temp_path $work/tmp-$port;
  fastcgi_temp_path $work/tmp-$port;
  uwsgi_temp_path $work/tmp-$port;
  scgi_temp_path $work/tmp-$port;
  server { listen 127.0.0.1:$port backlog=4096; location / { return 200 "ok"; } }
}
EOF
  taskset -c "$LOAD_CPU" nginx -c "$work/be-$port.conf" -p "$work" &
  pids+=($!)
done
taskset -c "$LOAD_CPU" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' \
  --appendonly no --dir "$work" > "$work/redis.log" 2>&1 &
redis_pid=$!
pids+=("$redis_pid")
for port in 9001 9002 9003; do wait_200 "$port" || { echo "backend $port did not start" >&2; exit 1; }; done
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

echo "date: $(date -Is); $(uname -srm), $(nproc) cpus; load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "binary: $BIN ($(stat -c %y "$BIN" | cut -d. -f1)); wrk -t1 -c$CONNS -d${DURATION}s"
printf 'rep\tmode\trps\tproxy_us_per_req\tredis_us_per_req\tredis_calls_per_1k_req\n'
results=()
for rep in $(seq "$REPS"); do
  for mode in local cluster; do
    taskset -c "$PROXY_CPU" "$BIN" -c "benches/proxy/switchyard-bench-limit-$mode.yaml" \
      > "$work/sy-$mode.log" 2>&1 &
    sy_pid=$!
    wait_200 8080 || { echo "switchyard ($mode) did not start: $(tail -5 "$work/sy-$mode.log")" >&2; exit 1; }
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${WARMUP}s" http://127.0.0.1:8080/ > /dev/null
    c0=$(ticks "$sy_pid"); r0=$(ticks "$redis_pid"); k0=$(script_calls)
    out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" http://127.0.0.1:8080/)
    c1=$(ticks "$sy_pid"); r1=$(ticks "$redis_pid"); k1=$(script_calls)
    kill -INT "$sy_pid"
    wait "$sy_pid" 2>/dev/null || true
    sy_pid=""
    requests=$(awk '/requests in/ {print $1}' <<<"$out")
    rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
    [[ -z $non2xx ]] || echo "WARNING: $mode rep $rep had $non2xx non-2xx answers" >&2
    line=$(awk -v m="$mode" -v rep="$rep" -v n="$requests" -v rps="$rps" -v hz="$HZ" \
      -v c="$((c1 - c0))" -v r="$((r1 - r0))" -v k="$((k1 - k0))" \
      'BEGIN { printf "%s\t%s\t%.0f\t%.2f\t%.2f\t%.2f", rep, m, rps, c*1e6/hz/n, r*1e6/hz/n, k*1000/n }')
    echo "$line"
    results+=("$line")
    sleep 1
  done
done

printf '%s\n' "${results[@]}" | awk -F'\t' '
  { rps[$1, $2] = $3; cpu[$1, $2] = $4; if ($1 > reps) reps = $1 }
  function median(a, n,   i, j, t) {
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  END {
    for (i = 1; i <= reps; i++) { c[i] = cpu[i, "cluster"] / cpu[i, "local"]; q[i] = rps[i, "cluster"] / rps[i, "local"] }
    printf "RATIO cluster_vs_local_cpu_per_req=%.3f cluster_vs_local_rps=%.3f\n", median(c, reps), median(q, reps)
  }'
