#!/usr/bin/env python3
"""Build the Debian package of mxsec (``make deb``): ``dist/mxsec_<version>-1_<arch>.deb``.

    .venv/bin/python scripts/build-deb.py [--out DIR]

Debian 12 ships older versions of several libraries mxsec needs (cryptography's X.509 verification, msgspec),
so the package carries its own Python environment, as dh-virtualenv packages do: ``/usr/lib/mxsec`` is a venv
on Debian's ``/usr/bin/python3``, holding mxsec (from its wheel, built here) and the distributions it needs
with every extra but the lab's, copied from this build's environment (nothing is downloaded). Around it:

- ``/usr/bin/mxsec`` (a link into the venv), man pages generated from the command line's own help;
- the systemd units of ``contrib/`` (daemon, serve-policy, the TLSRPT collector, follower, sender and its
  timer), rewritten for ``/usr/bin/mxsec``; ``/etc/mxsec/mxsec.toml`` (a conffile);
- a system user ``mxsec`` created by ``postinst`` (removed on purge), ``/usr/share/doc/mxsec`` with the docs,
  the copyright file and the changelog.

The package is put together with Debian's own tools: ``dpkg-deb`` (under ``fakeroot``, so every file belongs
to root) and checked with ``lintian`` when it is installed. Exit 0 and the path of the package on stdout.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.metadata as metadata
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PREFIX = "/usr/lib/mxsec"
EXTRAS = ("redis", "postgres", "reports", "tlsrpt", "acme")
UNITS = ("mxsec.service", "mxsec-serve-policy.service", "mxsec-tlsrpt-collect.service",
         "mxsec-tlsrpt-follow.service", "mxsec-tlsrpt-send.service", "mxsec-tlsrpt-send.timer")
MAINTAINER = "mxsec developers <mxsec@example.org>"


def fail(message: str) -> None:
    print(f"build-deb: {message}", file=sys.stderr)
    raise SystemExit(2)


def requirement_closure() -> list[metadata.Distribution]:
    """The distributions mxsec needs with EXTRAS, as installed in this environment."""
    from packaging.requirements import Requirement

    todo: list[tuple[str, tuple[str, ...]]] = [("mxsec", EXTRAS)]
    seen: dict[str, metadata.Distribution] = {}
    while todo:
        name, extras = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen and not extras:
            continue
        dist = metadata.distribution(name)
        if key != "mxsec":
            seen[key] = dist
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is not None and not any(
                    requirement.marker.evaluate({"extra": extra}) for extra in ("", *extras)):
                continue
            todo.append((requirement.name, tuple(requirement.extras)))
    return sorted(seen.values(), key=lambda d: d.metadata["Name"].lower())


def build_wheel(work: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(work / "wheel"), str(REPO)], check=True, cwd=work)
    (wheel,) = (work / "wheel").glob("mxsec-*.whl")
    return wheel


def make_venv(root: Path, wheel: Path) -> str:
    """The venv at ``root/usr/lib/mxsec``, made for its final place; returns its site-packages, relative."""
    venv = root / PREFIX.lstrip("/")
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(venv)], check=True)
    version = subprocess.run(["/usr/bin/python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    if version != "%d.%d" % sys.version_info[:2]:
        fail(f"this environment runs Python {sys.version_info[0]}.{sys.version_info[1]}, Debian's python3 is "
             f"{version}: the copied compiled modules would not load")
    site = venv / "lib" / f"python{version}" / "site-packages"
    here = Path(sysconfig.get_paths()["purelib"])
    for dist in requirement_closure():
        for file in dist.files or []:
            source = Path(dist.locate_file(file))
            if not source.is_file() or ".." in file.parts or "__pycache__" in file.parts:
                continue
            try:
                relative = source.relative_to(here)
            except ValueError:
                continue  # a script in bin/: not needed, mxsec calls the libraries
            target = site / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--no-deps",
                    "--no-index", "--no-compile", "-q", str(wheel)], check=True)
    # scripts name the interpreter by its build path: give them the final one
    for script in (venv / "bin").iterdir():
        if script.is_file() and not script.is_symlink():
            data = script.read_bytes()
            if data.startswith(b"#!") and str(venv).encode() in data.split(b"\n", 1)[0]:
                script.write_bytes(data.replace(str(venv).encode(), PREFIX.encode(), 1))
    for junk in ("Activate.ps1", "activate", "activate.csh", "activate.fish"):
        (venv / "bin" / junk).unlink(missing_ok=True)
    # PyYAML's optional C module embeds libyaml (lintian: embedded-library): the pure-Python parser does
    for module in site.glob("yaml/_yaml*.so"):
        module.unlink()
    # shared objects stripped as dh_strip does (Debian policy 10.1)
    objects = [str(p) for p in site.rglob("*.so*") if p.is_file()]
    if objects:
        subprocess.run(["strip", "--remove-section=.comment", "--remove-section=.note", "--strip-unneeded",
                        *objects], check=True)
    return str(site.relative_to(root))


def install_files(root: Path, version: str) -> None:
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/mxsec").symlink_to(f"{PREFIX}/bin/mxsec")
    units = root / "lib/systemd/system"
    units.mkdir(parents=True)
    for name in UNITS:
        text = (REPO / "contrib" / name).read_text().replace("/usr/local/bin/mxsec", "/usr/bin/mxsec")
        (units / name).write_text(text)
    (root / "etc/mxsec").mkdir(parents=True)
    shutil.copy2(REPO / "contrib/mxsec.toml", root / "etc/mxsec/mxsec.toml")
    doc = root / "usr/share/doc/mxsec"  # the units' Documentation= lines point here
    doc.mkdir(parents=True)
    for page in sorted((REPO / "docs").glob("*.md")):
        shutil.copy2(page, doc / page.name)
    shutil.copy2(REPO / "README.md", doc / "README.md")
    (doc / "exim").mkdir()
    for conf in sorted((REPO / "src/mxsec/exim").glob("*.conf")):
        shutil.copy2(conf, doc / "exim" / conf.name)
    (doc / "copyright").write_text(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
        "Upstream-Name: mxsec\n\nFiles: *\nCopyright: the mxsec developers\nLicense: MIT\n"
        " Permission is hereby granted, free of charge, to any person obtaining a copy of this software and\n"
        " associated documentation files, to deal in the Software without restriction, subject to including\n"
        " this notice in all copies. THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND.\n"
        "\nFiles: usr/lib/mxsec/lib/*\nCopyright: their authors (see each distribution's metadata)\n"
        "License: various-free\n The Python distributions mxsec runs on, each under its own free licence,\n"
        " recorded in its .dist-info directory.\n")
    changelog = (f"mxsec ({version}-1) unstable; urgency=medium\n\n  * Package built by scripts/build-deb.py.\n\n"
                 f" -- {MAINTAINER}  Thu, 03 Dec 2026 00:00:00 +0000\n")
    with gzip.GzipFile(doc / "changelog.Debian.gz", "wb", mtime=0, compresslevel=9) as fh:
        fh.write(changelog.encode())
    man = root / "usr/share/man/man1"
    man.mkdir(parents=True)
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1796256000"}
    subprocess.run([sys.executable, "-m", "mxsec.cli.manpages", str(man)], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    for page in sorted(man.glob("*.1")):
        with open(page, "rb") as src, gzip.GzipFile(f"{page}.gz", "wb", mtime=0, compresslevel=9) as dst:
            dst.write(src.read())
        page.unlink()


CONTROL = """Package: mxsec
Version: {version}-1
Architecture: {arch}
Maintainer: {maintainer}
Installed-Size: {size}
Depends: python3 (>= 3.11), python3 (<< 3.12), libc6 (>= 2.28), adduser
Recommends: postfix | exim4-daemon-heavy | mail-transport-agent
Section: mail
Priority: optional
Homepage: https://example.org/mxsec
Description: MTA-STS, DANE and TLS reporting for both ends of SMTP
 mxsec tells Postfix and Exim which TLS policy protects mail to a domain
 (MTA-STS, RFC 8461, with DANE for SMTP, RFC 7672, taking precedence),
 counts the TLS sessions of the mail server and sends daily TLS reports
 (RFC 8460), receives and summarises the reports other mail servers send,
 and checks and generates the records and policies a domain publishes.
"""

POSTINST = """#!/bin/sh
set -e
if [ "$1" = configure ]; then
    if ! getent passwd mxsec >/dev/null; then
        adduser --system --group --home /var/lib/mxsec --no-create-home --quiet mxsec
    fi
    install -d -o mxsec -g mxsec -m 0750 /var/lib/mxsec
    chown root:mxsec /etc/mxsec/mxsec.toml
    chmod 0640 /etc/mxsec/mxsec.toml
fi
if [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null || true
fi
exit 0
"""

POSTRM = """#!/bin/sh
set -e
if [ "$1" = purge ]; then
    rm -rf /var/lib/mxsec
    if getent passwd mxsec >/dev/null; then
        deluser --system --quiet mxsec || true
    fi
fi
if [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null || true
fi
exit 0
"""


def control_files(root: Path, version: str) -> None:
    debian = root / "DEBIAN"
    debian.mkdir()
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True).stdout.strip()
    size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file() and not f.is_symlink()) // 1024
    (debian / "control").write_text(CONTROL.format(version=version, arch=arch, maintainer=MAINTAINER, size=size))
    (debian / "conffiles").write_text("/etc/mxsec/mxsec.toml\n")
    for name, text in (("postinst", POSTINST), ("postrm", POSTRM)):
        (debian / name).write_text(text)
        (debian / name).chmod(0o755)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(REPO / "dist"), help="directory for the package (default dist/)")
    args = parser.parse_args()
    for tool in ("dpkg-deb", "fakeroot", "dpkg", "strip"):
        if shutil.which(tool) is None:
            fail(f"{tool} is missing (Debian: apt-get install dpkg-dev fakeroot binutils)")
    if not os.access("/usr/bin/python3", os.X_OK):
        fail("/usr/bin/python3 is missing (Debian: apt-get install python3 python3-venv)")
    version = metadata.version("mxsec")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mxsec-deb-") as tmp:
        work = Path(tmp)
        root = work / "root"
        root.mkdir()
        wheel = build_wheel(work)
        make_venv(root, wheel)
        install_files(root, version)
        for path in root.rglob("*"):  # Debian policy: 0755 directories and executables, 0644 other files
            if path.is_symlink():
                continue
            if path.is_dir():
                path.chmod(0o755)
            elif ".so" in path.suffixes:
                path.chmod(0o644)  # shared objects are not run (lintian: shared-library-is-executable)
            else:
                path.chmod(0o755 if path.stat().st_mode & 0o111 else 0o644)
        control_files(root, version)
        arch = (root / "DEBIAN/control").read_text().split("Architecture: ")[1].split("\n")[0]
        package = out / f"mxsec_{version}-1_{arch}.deb"
        subprocess.run(["fakeroot", "dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(root), str(package)],
                       check=True, stdout=subprocess.DEVNULL)
    print(package)
    return 0


if __name__ == "__main__":
    sys.exit(main())
