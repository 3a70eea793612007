#!/usr/bin/env bash
# Builds the .deb and .rpm from packaging/ metadata and checks them as an operator
# would: lintian, dpkg -i, the shipped configuration passes `switchyard -t` once
# SWITCHYARD_ADMIN_TOKEN is set, the system user and state directory exist, dpkg -r
# removes the binary but keeps an edited configuration, and the rpm lists the expected
# files with the configuration marked %config(noreplace), and both ship the Grafana
# dashboard and the Prometheus alert rules (SPEC §14). Needs root (dpkg -i).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-build-deps lintian rpm adduser
export PATH="$HOME/.cargo/bin:$PATH"
command -v cargo-deb >/dev/null || cargo install --locked --quiet cargo-deb
command -v cargo-generate-rpm >/dev/null || cargo install --locked --quiet cargo-generate-rpm

cargo build --release --quiet
cargo deb --no-build --quiet >/dev/null
cargo generate-rpm >/dev/null
tgt=${CARGO_TARGET_DIR:-target}
deb=$(ls -t "$tgt"/debian/switchyard_*.deb | head -n 1)
rpm=$(ls -t "$tgt"/generate-rpm/switchyard-*.rpm | head -n 1)

passed=0
check() { # check "what" command...
  local what=$1; shift
  if "$@"; then passed=$((passed + 1)); echo "ok: $what"; else echo "FAILED: $what"; echo "packaging: $passed passed, 1 failed"; exit 1; fi
}

check "lintian reports no errors" lintian --fail-on error "$deb"
dpkg --purge switchyard >/dev/null 2>&1 || true
check "dpkg -i installs" dpkg -i "$deb"
check "binary installed" test -x /usr/bin/switchyard
check "version" sh -c '/usr/bin/switchyard -V | grep "^switchyard " >/dev/null'
check "shipped config passes -t with the token set" \
  env SWITCHYARD_ADMIN_TOKEN=ci-token /usr/bin/switchyard -t -c /etc/switchyard/switchyard.yaml
check "shipped config fails -t without the token" \
  sh -c '! env -u SWITCHYARD_ADMIN_TOKEN /usr/bin/switchyard -t -c /etc/switchyard/switchyard.yaml 2>/dev/null'
check "system user exists" getent passwd switchyard
check "state directory exists" test -d /var/lib/switchyard
check "unit installed" sh -c 'test -f /lib/systemd/system/switchyard.service || test -f /usr/lib/systemd/system/switchyard.service'
check "Grafana dashboard installed" test -s /usr/share/switchyard/grafana/switchyard.json
check "alert rules installed" test -s /usr/share/switchyard/prometheus/switchyard-alerts.yaml
if command -v promtool >/dev/null; then
  check "installed alert rules pass promtool" promtool check rules /usr/share/switchyard/prometheus/switchyard-alerts.yaml
fi
check "config is a conffile" sh -c 'dpkg-query -W -f="\${Conffiles}" switchyard | grep -q /etc/switchyard/switchyard.yaml'
echo "# edited by the operator" >> /etc/switchyard/switchyard.yaml
check "dpkg -r removes" dpkg -r switchyard
check "binary gone" test ! -e /usr/bin/switchyard
check "edited config kept" grep -q "edited by the operator" /etc/switchyard/switchyard.yaml
check "purge" dpkg --purge switchyard
check "rpm lists the binary, config and unit" sh -c "rpm -qlp '$rpm' 2>/dev/null | grep -qx /usr/bin/switchyard && rpm -qlp '$rpm' 2>/dev/null | grep -qx /etc/switchyard/switchyard.yaml && rpm -qlp '$rpm' 2>/dev/null | grep -qx /usr/lib/systemd/system/switchyard.service"
check "rpm ships the Grafana dashboard and alert rules" sh -c "rpm -qlp '$rpm' 2>/dev/null | grep -qx /usr/share/switchyard/grafana/switchyard.json && rpm -qlp '$rpm' 2>/dev/null | grep -qx /usr/share/switchyard/prometheus/switchyard-alerts.yaml"
check "rpm config is %config(noreplace)" sh -c "rpm -qp --qf '[%{FILENAMES} %{FILEFLAGS:fflags}\n]' '$rpm' 2>/dev/null | grep -E '^/etc/switchyard/switchyard.yaml [a-z]*c[a-z]*n' >/dev/null"
echo "packaging: $passed passed, 0 failed"
