getent group switchyard >/dev/null || groupadd -r switchyard
getent passwd switchyard >/dev/null || \
    useradd -r -g switchyard -d /var/lib/switchyard -s /sbin/nologin \
        -c "Switchyard load balancer" switchyard
exit 0
