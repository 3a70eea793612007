#!/usr/bin/env bash
# TCP proxying: Switchyard (a tcp_service) against HAProxy in TCP mode, same machine,
# same backend (iperf3 for throughput, a TCP echo for the connection rate), one worker
# thread each, interleaved repetitions. Prints per-run figures and median ratios.
# Needs: iperf3, haproxy, python3 (apt-get install -y iperf3 haproxy), a release build.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-target/release/switchyard}
REPS=${REPS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-5}
. benches/proxy/common.sh

iperf3 -s -p 15201 -D --logfile "$work/iperf.log" --pidfile "$work/iperf.pid"
sleep 0.5
pids+=("$(cat "$work/iperf.pid")")
python3 - 15202 <<'PY' &
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(1024)
def serve(c):
    try:
        while True:
            d = c.recv(65536)
            if not d: break
            c.sendall(d)
    finally: c.close()
while True:
    c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
PY
pids+=($!)

cat > "$work/sy.yaml" <<YAML
server: {threads: 1, pid_file: $work/sy.pid, upgrade_sock: $work/sy.sock, grace_period: 1s, shutdown_timeout: 1s}
log: {level: warn, access_log: "off"}
tcp_services:
  - {name: iperf, listen: 127.0.0.1:16201, pool: iperf}
  - {name: echo, listen: 127.0.0.1:16202, pool: echo}
pools:
  - {name: iperf, backends: [{address: 127.0.0.1:15201}], health_check: {kind: none}}
  - {name: echo, backends: [{address: 127.0.0.1:15202}], health_check: {kind: none}}
YAML
cat > "$work/haproxy.cfg" <<CFG
global
  nbthread 1
  maxconn 4000
defaults
  mode tcp
  timeout connect 3s
  timeout client 1h
  timeout server 1h
listen iperf
  bind 127.0.0.1:17201
  server s1 127.0.0.1:15201
listen echo
  bind 127.0.0.1:17202
  server s1 127.0.0.1:15202
CFG

conn_rate() { # port seconds -> connections/s (connect, 1 byte echo, close)
python3 - "$1" "$2" <<'PY'
import socket, sys, time
port, secs = int(sys.argv[1]), float(sys.argv[2])
end = time.time() + secs; n = 0
while time.time() < end:
    c = socket.create_connection(("127.0.0.1", port)); c.sendall(b"x"); c.recv(1); c.close(); n += 1
print(f"{n/secs:.0f}")
PY
}
throughput() { # port -> MiB/s
  iperf3 -c 127.0.0.1 -p "$1" -t "$SECONDS_PER_RUN" -J 2>/dev/null \
    | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/8/1048576, 1))'
}

echo "rep target throughput_MiB_s conn_per_s"
for rep in $(seq 1 "$REPS"); do
  for target in switchyard haproxy; do
    if [ "$target" = switchyard ]; then
      taskset -c 1 "$BIN" -c "$work/sy.yaml" 2>"$work/sy.err" & p=$!; port=16201; eport=16202
    else
      taskset -c 1 haproxy -f "$work/haproxy.cfg" -db 2>"$work/ha.err" & p=$!; port=17201; eport=17202
    fi
    sleep 1
    t=$(throughput "$port"); r=$(conn_rate "$eport" "$SECONDS_PER_RUN")
    echo "$rep $target $t $r"
    kill "$p"; wait "$p" 2>/dev/null || true
  done
done | tee "$work/results.txt"
python3 - "$work/results.txt" <<'PY'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1]) if l[0].isdigit()]
by = {}
for rep, t, tp, cr in rows: by.setdefault(rep, {})[t] = (float(tp), float(cr))
tp = statistics.median(v["switchyard"][0] / v["haproxy"][0] for v in by.values())
cr = statistics.median(v["switchyard"][1] / v["haproxy"][1] for v in by.values())
print(f"RATIO switchyard_vs_haproxy_tcp_throughput={tp:.3f} switchyard_vs_haproxy_tcp_conn_rate={cr:.3f}")
PY
