#!/usr/bin/env bash
# CPU per cached hit (SPEC §11, issue 18): Switchyard's HTTP cache against nginx
# proxy_cache hits, and against Switchyard's own uncached proxying, pinned like
# ../shared/bench/run.sh: the proxy under test alone on PROXY_CPU, wrk and the origin
# on LOAD_CPU. Each run counts the proxy's CPU ticks (utime+stime of its process tree)
# over a wrk run and divides by the requests wrk completed.
#
#   cargo build --release && benches/cache.sh            # REPS=3 DURATION=8 CONNS=64
#   QUICK=1 benches/cache.sh                              # 1 rep of 3 s: a smoke test
#
# Traffic stays on 127.0.0.1; every load run is bounded by wrk -d; every process it
# starts is stopped by PID on exit. Needs nginx (nginx-light), wrk, curl, taskset.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [[ "${QUICK:-0}" == 1 ]]; then : "${REPS:=1}" "${DURATION:=3}"; fi
REPS=${REPS:-3}
DURATION=${DURATION:-8}
CONNS=${CONNS:-64}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
BODY_BYTES=${BODY_BYTES:-16384}
BIN=${BIN:-$ROOT/target/release/switchyard}
ORIGIN_PORT=${ORIGIN_PORT:-9201}
NGINX_PORT=${NGINX_PORT:-8201}
SY_PORT=${SY_PORT:-8202}

die() { echo "cache.sh: $*" >&2; exit 1; }
for tool in nginx wrk curl taskset; do command -v "$tool" >/dev/null || die "missing $tool"; done
[[ -x "$BIN" ]] || die "no $BIN (cargo build --release)"
CLK_TCK=$(getconf CLK_TCK)
WORK=$(mktemp -d /tmp/cachebench.XXXXXX)
chmod 755 "$WORK"
mkdir -p "$WORK/www" "$WORK/nginx-cache" "$WORK/o" "$WORK/n"
head -c "$BODY_BYTES" /dev/zero | tr '\0' 'x' > "$WORK/www/obj"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -INT "$p" 2>/dev/null; done
  sleep 0.5
  for p in "${PIDS[@]}"; do pkill -KILL -P "$p" 2>/dev/null; kill -KILL "$p" 2>/dev/null; done
  rm -rf "$WORK"
}
trap cleanup EXIT

tree_pids() { local p=$1 c; [[ -d /proc/$p ]] || return 0; echo "$p"; for c in $(pgrep -P "$p"); do tree_pids "$c"; done; }
cpu_ticks() { local s=0 p v; for p in $(tree_pids "$1"); do v=$(sed 's/^.*) //' "/proc/$p/stat" | awk '{print $12+$13}'); s=$((s + ${v:-0})); done; echo "$s"; }
wait_http() { local i; for i in $(seq 100); do [[ $(curl -s -o /dev/null -m 1 -w '%{http_code}' "http://127.0.0.1:$1$2") == 200 ]] && return 0; sleep 0.1; done; return 1; }

# The origin: nginx on LOAD_CPU, one file for every path, fresh for an hour.
cat > "$WORK/o/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $WORK/o/nginx.pid; error_log $WORK/o/error.log warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$ORIGIN_PORT reuseport;
    location / { root $WORK/www; try_files /obj =404; add_header Cache-Control "max-age=3600"; } } }
CONF
taskset -c "$LOAD_CPU" nginx -c "$WORK/o/nginx.conf" -p "$WORK/o" & PIDS+=($!)

# nginx proxy_cache on PROXY_CPU: one worker, proxy_cache_lock as operators run it.
cat > "$WORK/n/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $WORK/n/nginx.pid; error_log $WORK/n/error.log warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  proxy_cache_path $WORK/nginx-cache levels=1:2 keys_zone=c:16m max_size=256m inactive=1h use_temp_path=off;
  upstream origin { server 127.0.0.1:$ORIGIN_PORT; keepalive 64; }
  server { listen 127.0.0.1:$NGINX_PORT reuseport;
    location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_cache c; proxy_cache_lock on; proxy_cache_valid 200 1h; add_header X-Cache \$upstream_cache_status; } } }
CONF
taskset -c "$PROXY_CPU" nginx -c "$WORK/n/nginx.conf" -p "$WORK/n" & NGINX_PID=$!; PIDS+=($NGINX_PID)

# Switchyard on PROXY_CPU: /c/ caches, /u/ proxies uncached (same process, same pool).
cat > "$WORK/switchyard.yaml" <<CONF
server:
  threads: 1
  pid_file: $WORK/sy.pid
  upgrade_sock: $WORK/sy.sock
log:
  level: warn
  access_log: "off"
cache:
  memory: 256MiB
  max_object: 8MiB
listeners:
  - name: web
    listen: 127.0.0.1:$SY_PORT
pools:
  - name: origin
    backends:
      - address: 127.0.0.1:$ORIGIN_PORT
routes:
  - name: cached
    path_prefix: /c/
    pool: origin
    cache: {}
  - name: uncached
    path_prefix: /u/
    pool: origin
CONF
taskset -c "$PROXY_CPU" "$BIN" -c "$WORK/switchyard.yaml" 2> "$WORK/sy.log" & SY_PID=$!; PIDS+=($SY_PID)

wait_http "$ORIGIN_PORT" /x || die "origin did not start"
wait_http "$NGINX_PORT" /c/obj || die "nginx did not start: $(cat "$WORK/n/error.log")"
wait_http "$SY_PORT" /c/obj || die "switchyard did not start: $(cat "$WORK/sy.log")"
for t in "$NGINX_PORT /c/obj" "$SY_PORT /c/obj"; do
  set -- $t
  xc=$(curl -s -o /dev/null -D - "http://127.0.0.1:$1$2" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-cache"{print $2}')
  [[ "$xc" == HIT ]] || die "127.0.0.1:$1$2 answers X-Cache: '$xc', not HIT"
done

# One measured run: prints "requests us_per_request".
measure() {
  local pid=$1 url=$2 before after out reqs
  before=$(cpu_ticks "$pid")
  out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" "$url")
  after=$(cpu_ticks "$pid")
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  grep -q 'Non-2xx' <<<"$out" && die "non-2xx answers from $url: $out"
  awk -v t=$((after - before)) -v r="$reqs" -v hz="$CLK_TCK" 'BEGIN { printf "%d %.2f\n", r, t * 1e6 / hz / r }'
}

echo "# $(date -u +%FT%TZ) body=${BODY_BYTES}B conns=$CONNS duration=${DURATION}s reps=$REPS proxy_cpu=$PROXY_CPU load_cpu=$LOAD_CPU"
echo "# $(nginx -v 2>&1), $("$BIN" --version 2>/dev/null || echo switchyard)"
printf '%-22s %4s %10s %10s %12s\n' target rep requests rps us_cpu/req
declare -A SUM
for rep in $(seq "$REPS"); do
  for t in "nginx-cache $NGINX_PID http://127.0.0.1:$NGINX_PORT/c/obj" \
           "switchyard-cache $SY_PID http://127.0.0.1:$SY_PORT/c/obj" \
           "switchyard-uncached $SY_PID http://127.0.0.1:$SY_PORT/u/obj"; do
    set -- $t
    read -r reqs us < <(measure "$2" "$3")
    printf '%-22s %4s %10s %10.0f %12s\n' "$1" "$rep" "$reqs" "$(awk -v r="$reqs" -v d="$DURATION" 'BEGIN{print r/d}')" "$us"
    SUM[$1]="${SUM[$1]:-} $us"
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
n=$(median <<<"${SUM[nginx-cache]}"); c=$(median <<<"${SUM[switchyard-cache]}"); u=$(median <<<"${SUM[switchyard-uncached]}")
echo "# median us CPU per request: nginx proxy_cache $n, switchyard cache $c, switchyard uncached $u"
awk -v n="$n" -v c="$c" -v u="$u" 'BEGIN { printf "# switchyard cache / nginx proxy_cache = %.2f (target <= 1.2); switchyard cache / switchyard uncached = %.2f (target <= 0.8)\n", c / n, c / u }'
