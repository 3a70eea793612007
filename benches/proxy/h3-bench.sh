#!/usr/bin/env bash
# HTTP/3 against HTTP/2 over TLS on the same Switchyard listener (`http3: true`), both
# proxying to one nginx backend (return 200). Switchyard: one thread pinned to CPU 1;
# the client (examples/h3_load.rs, the same program for both protocols: Debian's h2load
# has no QUIC) and the backend on CPU 0. Reports requests per second and Switchyard's
# CPU time per request (utime+stime from /proc over the run); interleaved repetitions,
# median ratios. Needs: nginx-light, a release build (cargo build --release --examples).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-$PWD/target/release/switchyard}
LOAD=${LOAD:-$PWD/target/release/examples/h3_load}
REPS=${REPS:-3}
N=${N:-60000}
CONNS=${CONNS:-16}
IN_FLIGHT=${IN_FLIGHT:-10}
. benches/proxy/common.sh
bench_cert
bench_nginx_backend 19321
cat > "$work/sy.yaml" <<YAML
server: {threads: 1, pid_file: $work/sy.pid, upgrade_sock: $work/sy.sock, grace_period: 1s, shutdown_timeout: 1s}
log: {level: warn, access_log: "off"}
listeners:
  - name: tls
    listen: 127.0.0.1:18743
    http3: true
    limits: {h2_max_concurrent_streams: 100}
    tls: {certificates: [{cert_file: $work/cert.pem, key_file: $work/key.pem}]}
pools: [{name: be, backends: [{address: 127.0.0.1:19321}], health_check: {kind: none}}]
routes: [{name: all, pool: be}]
YAML
taskset -c 1 "$BIN" -c "$work/sy.yaml" 2>"$work/sy.err" & sy=$!; pids+=($sy)
sleep 1.5
cpu_ticks() { awk '{print $14 + $15}' "/proc/$sy/stat"; }
tick=$(getconf CLK_TCK)
run() { # protocol -> "req/s cpu_us_per_req failed"
  local before after out
  before=$(cpu_ticks)
  out=$(taskset -c 0 "$LOAD" "$1" 127.0.0.1:18743 "$CONNS" "$IN_FLIGHT" "$N")
  after=$(cpu_ticks)
  echo "$out" | awk -v d=$((after - before)) -v t="$tick" '{printf "%s %.1f %s", $3, d / t * 1e6 / ($1 - $4), $4}'
}
run h3 >/dev/null; run h2 >/dev/null   # warm-up
echo "rep protocol req_per_s cpu_us_per_req failed"
for rep in $(seq 1 "$REPS"); do
  for p in h2 h3; do echo "$rep $p $(run $p)"; done
done | tee "$work/results.txt"
python3 - "$work/results.txt" <<'PY'
import sys, statistics
by = {}
for l in open(sys.argv[1]):
    f = l.split()
    if f and f[0].isdigit(): by.setdefault(f[0], {})[f[1]] = (float(f[2]), float(f[3]))
rps = statistics.median(v["h3"][0] / v["h2"][0] for v in by.values())
cpu = statistics.median(v["h3"][1] / v["h2"][1] for v in by.values())
print(f"RATIO h3_vs_h2_rps={rps:.3f} h3_vs_h2_cpu_per_request={cpu:.3f}")
PY
