#!/usr/bin/env bash
# Instructions per HTTP/2-over-TLS request, counted by callgrind (repeatable on a noisy
# machine): Switchyard and nginx each terminate TLS, speak h2 to h2load and HTTP/1.1 to
# the same nginx backend. Each proxy runs under valgrind twice (N1 and N2 requests,
# h2load -c 4 -m 10 over fresh connections); instructions/request =
# (I(N2) - I(N1)) / (N2 - N1), so start-up, handshakes of the same count and shutdown
# cancel out. PROTO=h1: plaintext HTTP/1.1 instead (h2load --h1 -c 8, keep-alive), the
# workload of ../shared/bench/instructions.sh with one backend. With PROFILE=1 both
# runs of each target are kept (/tmp/PROTO-TARGET.N.callgrind) and
# benches/proxy/callgrind-diff.py prints each function's own instructions per request: build with `cargo build --profile profiling` and set
# BIN=target/profiling/switchyard for names. TARGETS may also name pingora-min (PROTO=h1;
# ../shared/bench/pingora-min built, or PINGORA_MIN_BIN).
# Needs: valgrind, nginx-light, nghttp2-client (h2load), openssl.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-$PWD/target/release/switchyard}
N1=${N1:-2000}; N2=${N2:-6000}
TARGETS=${TARGETS:-"switchyard nginx"}
. benches/proxy/common.sh
PROTO=${PROTO:-h2}
bench_nginx_backend 19311
if [ "$PROTO" = h1 ]; then
  PROXY_TLS=0 bench_proxies 19311 18453 19453 'master_process off;'
  scheme=http; load_opts=(--h1 -c 8)
else
  bench_cert
  bench_proxies 19311 18453 19453 'master_process off;'
  scheme=https; load_opts=(-c 4 -m 10)
fi
sleep 0.5
PMIN=${PINGORA_MIN_BIN:-$PWD/../shared/bench/pingora-min/target/release/pingora-min}
export PINGORA_THREADS=1
cmd_for() { case $1 in
  switchyard) echo "$BIN -c $work/sy.yaml" ;;
  nginx) echo "nginx -c $work/nginx.conf -p $work" ;;
  pingora-min) echo "$PMIN 127.0.0.1:18454 127.0.0.1:19311" ;;
esac; }
port_for() { case $1 in switchyard) echo 18453 ;; nginx) echo 19453 ;; pingora-min) echo 18454 ;; esac; }
measure() { # TARGET N -> total instructions
  local out="$work/cg.$1.$2" port; port=$(port_for "$1")
  valgrind --tool=callgrind --callgrind-out-file="$out" $(cmd_for "$1") >"$work/$1.$2.log" 2>&1 &
  local vp=$!
  for _ in $(seq 1 300); do curl -sk -o /dev/null "$scheme://127.0.0.1:$port/" && break; sleep 0.2; done
  h2load -n "$2" "${load_opts[@]}" "$scheme://127.0.0.1:$port/" >"$work/h2load.$1.$2" 2>&1 \
    || echo "WARN $1: h2load failed" >&2
  grep -q "$2 succeeded" "$work/h2load.$1.$2" || echo "WARN $1: not all $2 requests succeeded" >&2
  kill -INT "$vp"; wait "$vp" 2>/dev/null || true
  grep -E '^(summary|totals):' "$out" | head -1 | awk '{print $2}'
}
declare -A per
for t in $TARGETS; do
  a=$(measure "$t" "$N1"); b=$(measure "$t" "$N2")
  per[$t]=$(awk -v a="$a" -v b="$b" -v n1="$N1" -v n2="$N2" 'BEGIN{printf "%.0f", (b-a)/(n2-n1)}')
  echo "$t: ${per[$t]} instructions/request (I($N1)=$a, I($N2)=$b)"
done
for t in $TARGETS; do
  [ "${PROFILE:-0}" = 1 ] && [ -f "$work/cg.$t.$N2" ] || continue
  out=/tmp/$PROTO-$t
  cp "$work/cg.$t.$N1" "$out.$N1.callgrind"; cp "$work/cg.$t.$N2" "$out.$N2.callgrind"
  echo "== $t: own instructions per request by function (runs kept in $out.*.callgrind)"
  python3 benches/proxy/callgrind-diff.py "$out.$N1.callgrind" "$out.$N2.callgrind" "$N1" "$N2" --top 60 || true
done
for anchor in nginx pingora-min; do
  if [ -n "${per[switchyard]:-}" ] && [ -n "${per[$anchor]:-}" ]; then
    echo "RATIO switchyard_vs_${anchor//-/_}_${PROTO}_instr_per_req=$(awk -v x="${per[switchyard]}" -v y="${per[$anchor]}" 'BEGIN{printf "%.3f", x/y}')"
  fi
done
