#!/usr/bin/env bash
# TLS termination: Switchyard against nginx on the same machine, both proxying to the same
# nginx backend (return 200), one worker each pinned to CPU 1, client on CPU 0.
# Measures full TLS handshakes per second (openssl s_time -new, TLS 1.3, P-256 cert) and
# HTTP/2 requests per second over TLS (h2load). Interleaved repetitions, median ratios.
# Needs: nginx-light, nghttp2-client (h2load), openssl, a release build.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-$PWD/target/release/switchyard}
REPS=${REPS:-3}
. benches/proxy/common.sh
bench_cert
bench_nginx_backend 19301
bench_proxies 19301 18443 19443
sleep 0.5
handshakes() { taskset -c 0 openssl s_time -connect "127.0.0.1:$1" -new -time 5 -tls1_3 2>/dev/null \
  | awk '/connections in [0-9.]+s/ {print $1/$4; exit}' | sed 's/s;//'; }
h2rps() { taskset -c 0 h2load -n 60000 -c 16 -m 10 "https://127.0.0.1:$1/" 2>/dev/null | awk '/^finished in/ {print $4; exit}'; }
echo "rep target handshakes_per_s h2_req_per_s"
for rep in $(seq 1 "$REPS"); do
  for target in switchyard nginx; do
    if [ "$target" = switchyard ]; then taskset -c 1 "$BIN" -c "$work/sy.yaml" 2>"$work/sy.err" & p=$!; port=18443
    else taskset -c 1 nginx -c "$work/nginx.conf" -p "$work" & p=$!; port=19443; fi
    sleep 1
    echo "$rep $target $(handshakes $port) $(h2rps $port)"
    kill "$p"; wait "$p" 2>/dev/null || true
  done
done | tee "$work/results.txt"
python3 - "$work/results.txt" <<'PY'
import sys, statistics
by = {}
for l in open(sys.argv[1]):
    f = l.split()
    if f and f[0].isdigit(): by.setdefault(f[0], {})[f[1]] = (float(f[2]), float(f[3]))
hs = statistics.median(v["switchyard"][0] / v["nginx"][0] for v in by.values())
h2 = statistics.median(v["switchyard"][1] / v["nginx"][1] for v in by.values())
print(f"RATIO switchyard_vs_nginx_tls_handshakes={hs:.3f} switchyard_vs_nginx_h2_rps={h2:.3f}")
PY
