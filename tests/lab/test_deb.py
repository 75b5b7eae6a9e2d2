"""The Debian package (`make deb`, scripts/build-deb.py), built here and installed in a throw-away system.

The package is built offline from this environment, checked by lintian (no error), then installed with dpkg in
an overlay of the machine's own root file system inside a private mount namespace: the installation, the
`mxsec` user and everything the daemon writes vanish with the namespace, and the machine is untouched. There:
the units pass `systemd-analyze verify`, the man pages are found, the daemon runs from the installed files as
the `mxsec` user with the installed configuration and answers a real query against a fake world, and a purge
removes the user and the state directory.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mxsec.daemon.socketmap import encode
from mxsec.testing.daemonproc import free_port
from mxsec.testing.fakeworld import FakeWorld, PolicySpec, WorldThread, policy_text

REPO = Path(__file__).resolve().parents[2]
TOOLS = ("dpkg-deb", "fakeroot", "lintian", "systemd-analyze", "unshare", "chroot", "setpriv", "strip")
UNITS = ("mxsec.service", "mxsec-serve-policy.service", "mxsec-tlsrpt-collect.service",
         "mxsec-tlsrpt-follow.service", "mxsec-tlsrpt-send.service", "mxsec-tlsrpt-send.timer")


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    if os.geteuid() != 0:
        pytest.fail("the package test needs root (a mount namespace and chroot)")
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    assert not missing, f"missing {missing}: run scripts/install-system-deps.sh"
    out = tmp_path_factory.mktemp("deb")
    built = subprocess.run([sys.executable, str(REPO / "scripts/build-deb.py"), "--out", str(out)],
                           capture_output=True, text=True, timeout=600, check=False)
    assert built.returncode == 0, built.stderr[-3000:]
    return Path(built.stdout.strip().splitlines()[-1])


def test_lintian_finds_no_error(package):
    result = subprocess.run(["lintian", "--no-tag-display-limit", str(package)], capture_output=True, text=True,
                            timeout=600, check=False)
    errors = [line for line in result.stdout.splitlines() if line.startswith("E:")]
    assert errors == [], "\n".join(errors)


def test_the_package_holds_what_it_should(package):
    listing = subprocess.run(["dpkg-deb", "--contents", str(package)], capture_output=True, text=True,
                             check=True).stdout
    for path in ("./usr/bin/mxsec", "./etc/mxsec/mxsec.toml", "./usr/share/man/man1/mxsec.1.gz",
                 "./usr/share/man/man1/mxsec-daemon.1.gz", "./usr/share/doc/mxsec/copyright",
                 "./usr/share/doc/mxsec/exim/mxsec-routers.conf", "./usr/lib/mxsec/bin/python3",
                 "./usr/share/doc/mxsec/configuration.md",
                 *(f"./lib/systemd/system/{unit}" for unit in UNITS)):
        assert f" {path}" in listing, path
    for unit in UNITS:  # every Documentation= file:// link of the units is in the package
        for line in (REPO / "contrib" / unit).read_text().splitlines():
            if line.startswith("Documentation=file://"):
                assert f" .{line.removeprefix('Documentation=file://')}" in listing, (unit, line)
    info = subprocess.run(["dpkg-deb", "--field", str(package), "Package", "Depends"], capture_output=True,
                          text=True, check=True).stdout
    assert "Package: mxsec" in info and "python3 (>= 3.11)" in info


SCRIPT = r"""
set -e
O="$1"; DEB="$2"; CA="$3"; STOP="$4"; shift 4
mount -t tmpfs tmpfs "$O" && mkdir "$O/u" "$O/w" "$O/m"
mount -t overlay overlay -o lowerdir=/,upperdir="$O/u",workdir="$O/w" "$O/m"
for d in proc dev sys; do mount --rbind "/$d" "$O/m/$d"; done
mount -t tmpfs tmpfs "$O/m/tmp"; mount -t tmpfs tmpfs "$O/m/run"
cp "$DEB" "$O/m/tmp/mxsec.deb"
chroot "$O/m" dpkg -i /tmp/mxsec.deb >/dev/null
echo "== verify"
chroot "$O/m" systemd-analyze verify /lib/systemd/system/mxsec.service /lib/systemd/system/mxsec-serve-policy.service \
  /lib/systemd/system/mxsec-tlsrpt-collect.service /lib/systemd/system/mxsec-tlsrpt-follow.service \
  /lib/systemd/system/mxsec-tlsrpt-send.service /lib/systemd/system/mxsec-tlsrpt-send.timer
echo "== user $(chroot "$O/m" getent passwd mxsec)"
echo "== man $(chroot "$O/m" man -w mxsec-reports)"
echo "== code $(chroot "$O/m" /usr/lib/mxsec/bin/python -c 'import mxsec; print(mxsec.__file__)')"
cp "$CA" "$O/m/etc/mxsec/world-ca.pem"
echo "== daemon"
chroot "$O/m" setpriv --reuid mxsec --regid mxsec --init-groups /usr/bin/mxsec daemon \
  --config /etc/mxsec/mxsec.toml --log-format json "$@" > "$O/daemon.log" 2>&1 &
pid=$!
echo "== started $pid"
# stay until the test writes "stop" (or 120 s pass), then show the log, purge and check the purge
for i in $(seq 1 1200); do
  [ -e "$STOP" ] && break
  [ -d "/proc/$pid" ] || { echo "== daemon exited"; cat "$O/daemon.log"; exit 1; }
  sleep 0.1
done
kill "$pid"; wait "$pid" || true
echo "== cache $(ls "$O/m/var/lib/mxsec")"
chroot "$O/m" dpkg -P mxsec >/dev/null 2>&1
echo "== purged user=$(chroot "$O/m" getent passwd mxsec || echo none) state=$(ls -d "$O/m/var/lib/mxsec" 2>/dev/null || echo none)"
"""


def test_installed_package_runs_the_daemon_as_its_user(package, tmp_path):
    world = FakeWorld(dns=("127.0.97.1", 0), https=("127.0.97.2", 443), state_dir=tmp_path / "world")
    world.add_domain("deb.test", txt=["v=STSv1; id=1"], mx=["mx.deb.test"],
                     policy=PolicySpec(body=policy_text(["mx.deb.test"])))
    script = tmp_path / "install.sh"
    script.write_text(SCRIPT)
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    port, metrics = free_port(), free_port()
    with WorldThread(world):
        host, dns_port = world.dns_address
        proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", str(script), str(overlay), str(package),
             str(world.ca_file), str(tmp_path / "stop"), "--listen", f"127.0.0.1:{port}", "--metrics-listen", f"127.0.0.1:{metrics}",
             "--nameserver", f"{host}:{dns_port}", "--ca-file", "/etc/mxsec/world-ca.pem",
             "--allow-address", "127.0.0.0/8"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            reply = None
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
                        conn.sendall(encode(b"postfix deb.test"))
                        data = b""
                        while b"," not in data[data.find(b":"):]:
                            chunk = conn.recv(4096)
                            if not chunk:
                                break
                            data += chunk
                        reply = data.partition(b":")[2][:-1].decode()
                    break
                except OSError:
                    time.sleep(0.2)
        finally:
            (tmp_path / "stop").touch()
            output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output[-3000:]
    assert reply == "OK secure match=mx.deb.test servername=hostname", output[-3000:]
    lines = dict(line[3:].split(" ", 1) for line in output.splitlines() if line.startswith("== ") and " " in line[3:])
    assert lines["user"].startswith("mxsec:") and lines["user"].endswith(":/var/lib/mxsec:/usr/sbin/nologin")
    assert lines["man"].endswith("/usr/share/man/man1/mxsec-reports.1.gz")
    assert lines["code"].startswith("/usr/lib/mxsec/lib/python3.11/site-packages/mxsec/")
    assert "cache.sqlite3" in lines["cache"]  # written by the daemon, as the mxsec user, where the config says
    assert lines["purged"] == "user=none state=none"
    assert subprocess.run(["getent", "passwd", "mxsec"], capture_output=True).returncode != 0  # host untouched
