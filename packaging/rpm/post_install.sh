install -d -o switchyard -g switchyard -m 0750 /var/lib/switchyard /var/log/switchyard
chgrp switchyard /etc/switchyard/switchyard.yaml /etc/sysconfig/switchyard 2>/dev/null || true
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
    # $1 > 1: an upgrade; hand the sockets over without dropping a connection.
    if [ "$1" -gt 1 ] && systemctl is-active --quiet switchyard 2>/dev/null; then
        systemctl reload switchyard || true
    fi
fi
exit 0
