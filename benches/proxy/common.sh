# Shared set-up of the side-by-side proxy benches (sourced, not run): a work directory
# removed on exit with every process started through `pids`, a self-signed P-256
# certificate for bench.test, and a one-worker nginx backend answering 200 "ok".
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# $work/cert.pem and $work/key.pem.
bench_cert() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj /CN=bench.test \
    -addext subjectAltName=DNS:bench.test -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
}

# An nginx backend on 127.0.0.1:PORT pinned to CPU 0.
bench_nginx_backend() {
  cat > "$work/backend.conf" <<CONF
worker_processes 1; daemon off; pid $work/be.pid; error_log $work/be.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$1; location / { return 200 "ok"; } } }
CONF
  taskset -c 0 nginx -c "$work/backend.conf" -p "$work" & pids+=($!)
}
