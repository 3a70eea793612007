#!/usr/bin/env python3
"""Captures real PostgreSQL and MariaDB answers to the health checks' messages into
fuzz/corpus/{pg_greeting,mysql_greeting}/ (seeds; run once by hand, as root: the
servers run as `nobody` in a temporary directory on 127.0.0.1, and are stopped).

Usage: fuzz/capture-greetings.py
"""

import glob
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_nobody(cmd, **kw):
    return subprocess.Popen(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"] + cmd, **kw)


def recv_all(s, quiet=0.5, limit=5.0):
    """Everything the server sends until it is quiet for `quiet` seconds (bounded)."""
    s.settimeout(quiet)
    out = b""
    end = time.time() + limit
    while time.time() < end:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            break
        if not chunk:
            break
        out += chunk
    return out


def connect(port, tries=50):
    for _ in range(tries):
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=2)
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"no server on port {port}")


def save(target, name, data):
    with open(os.path.join(HERE, "corpus", target, name), "wb") as f:
        f.write(data)
    print(f"{target}/{name}: {len(data)} bytes")


def startup(user, database="postgres"):
    body = struct.pack(">I", 196608)
    for k, v in (("user", user), ("database", database), ("application_name", "switchyard-health")):
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack(">I", len(body) + 4) + body


def postgres(tmp):
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]
    data = os.path.join(tmp, "pg")
    os.makedirs(data)
    shutil.chown(tmp, "nobody")
    shutil.chown(data, "nobody")
    subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                    f"{bins}/initdb", "-D", data, "--auth=trust", "-U", "postgres", "-N"],
                   check=True, stdout=subprocess.DEVNULL, timeout=120)
    with open(os.path.join(data, "pg_hba.conf"), "a") as f:
        f.write("host all md5user 127.0.0.1/32 md5\nhost all scramuser 127.0.0.1/32 scram-sha-256\n")
    port = free_port()
    p = as_nobody([f"{bins}/postgres", "-D", data, "-p", str(port), "-k", tmp,
                   "-c", "listen_addresses=127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for name, user, db in (("trust-ok", "postgres", "postgres"),
                               ("no-role", "switchyard_health", "postgres"),
                               ("no-database", "postgres", "nosuchdb"),
                               ("md5", "md5user", "postgres"),
                               ("scram", "scramuser", "postgres")):
            with connect(port) as s:
                s.sendall(startup(user, db))
                save("pg_greeting", name, recv_all(s))
    finally:
        p.terminate()
        p.wait(timeout=30)


def mysql_packet(seq, payload):
    return struct.pack("<I", len(payload))[:3] + bytes([seq]) + payload


def handshake_response(user):
    caps = 0x1 | 0x200 | 0x8000
    r = struct.pack("<II", caps, 16 * 1024 * 1024) + bytes([33]) + b"\0" * 23
    return r + user.encode() + b"\0" + b"\0"


def mariadb(tmp):
    data = os.path.join(tmp, "my")
    os.makedirs(data)
    shutil.chown(data, "nobody")
    subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--user=nobody",
                    "--auth-root-authentication-method=normal"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=180)
    port = free_port()
    p = as_nobody(["mariadbd", "--no-defaults", f"--datadir={data}", f"--port={port}",
                   "--bind-address=127.0.0.1", f"--socket={tmp}/my.sock", "--skip-log-error"],
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for name, user in (("root", "root"), ("unknown-user", "switchyard_health")):
            with connect(port) as s:
                greeting = recv_all(s)
                seq = greeting[3] if len(greeting) > 3 else 0
                s.sendall(mysql_packet((seq + 1) & 0xFF, handshake_response(user)))
                save("mysql_greeting", name, greeting + recv_all(s))
                s.sendall(mysql_packet(0, b"\x01"))
    finally:
        p.terminate()
        p.wait(timeout=60)


def main():
    tmp = tempfile.mkdtemp(prefix="sy-greet-")
    os.chmod(tmp, 0o755)
    try:
        postgres(tmp)
        mariadb(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
