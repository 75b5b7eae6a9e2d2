"""Regenerate docs/img/reports-dashboard.png: a month of sample reports in the dashboard, in headless Chromium.

    .venv/bin/python scripts/docs-screenshot.py [--out docs/img/reports-dashboard.png]

Writes the sample month of mxsec.testing.sample_reports (ending on a fixed day, so the picture does not
change between runs), ingests it with `mxsec reports ingest`, starts `mxsec reports serve` on 127.0.0.1 and
photographs the overview with Debian's /usr/bin/chromium through Playwright. Everything stays on loopback.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import date
from pathlib import Path

from mxsec.testing.sample_reports import write_samples

MXSEC = str(Path(sys.executable).with_name("mxsec"))
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/img/reports-dashboard.png")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mxsec-shot-") as tmp:
        work = Path(tmp)
        files = write_samples(work / "reports", days=30, end=date(2026, 11, 23))
        db = f"sqlite:///{work}/reports.sqlite3"
        subprocess.run([MXSEC, "reports", "ingest", "-q", "--db", db, *map(str, files)], check=True, timeout=120)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = subprocess.Popen([MXSEC, "reports", "serve", "--db", db, "--listen", f"127.0.0.1:{port}"])
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(100):
                try:
                    urllib.request.urlopen(base + "/healthz", timeout=1).read()
                    break
                except OSError:
                    time.sleep(0.1)
            from playwright.sync_api import sync_playwright

            with sync_playwright() as playwright:
                browser = playwright.chromium.launch_persistent_context(
                    str(work / "profile"), executable_path="/usr/bin/chromium", args=FLAGS, headless=True,
                    viewport={"width": 1280, "height": 900},
                )
                page = browser.new_page()
                page.goto(base + "/?since=2026-10-25&until=2026-11-23")
                page.wait_for_function("window.mxsecCharts !== undefined")
                page.wait_for_timeout(800)  # chart animations
                page.screenshot(path=args.out, full_page=True)
                browser.close()
        finally:
            server.terminate()
            server.wait(15)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
