# $1 = 0: removal (not upgrade)
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl --no-reload disable --now switchyard >/dev/null 2>&1 || true
fi
exit 0
