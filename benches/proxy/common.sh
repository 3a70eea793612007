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

# $work/nginx.conf and $work/sy.yaml: nginx (on NGINX_PORT) and Switchyard (on SY_PORT)
# proxying to the backend on 127.0.0.1:BACKEND_PORT, each terminating TLS with the bench
# certificate (h2 by ALPN), or with PROXY_TLS=0 plaintext HTTP/1.1. Extra main-context
# nginx directives may follow.
bench_proxies() { # BACKEND_PORT SY_PORT NGINX_PORT [nginx directives]
  local ng_tls="" sy_tls=""
  if [ "${PROXY_TLS:-1}" = 1 ]; then
    ng_tls=" ssl http2; ssl_certificate $work/cert.pem; ssl_certificate_key $work/key.pem"
    sy_tls=", tls: {certificates: [{cert_file: $work/cert.pem, key_file: $work/key.pem}]}"
  fi
  cat > "$work/nginx.conf" <<CONF
worker_processes 1; daemon off; ${4:-} pid $work/ng.pid; error_log $work/ng.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000; ssl_protocols TLSv1.2 TLSv1.3;
  upstream be { server 127.0.0.1:$1; keepalive 128; }
  server { listen 127.0.0.1:$3$ng_tls;
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
CONF
  cat > "$work/sy.yaml" <<YAML
server: {threads: 1, pid_file: $work/sy.pid, upgrade_sock: $work/sy.sock, grace_period: 1s, shutdown_timeout: 1s}
log: {level: warn, access_log: "off"}
listeners:
  - {name: edge, listen: 127.0.0.1:$2$sy_tls}
pools: [{name: be, backends: [{address: 127.0.0.1:$1}], health_check: {kind: none}}]
routes: [{name: all, pool: be}]
YAML
}
