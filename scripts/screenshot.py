"""Screenshot of the HAProxy stats page with headless Chromium (Debian's chromium).

    python scripts/screenshot.py docs/stats.png [--expect s1,s2,s3,s4]

Exits non-zero when Chromium is missing or the page does not list every
expected backend.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

from lbcluster_support import statspage
from lbcluster_support.project import SECRETS

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]


def stats_url() -> str:
    return f"http://{statspage.USER}:{statspage.password(SECRETS)}@127.0.0.1:1936/"


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit("screenshot: Chromium not found (apt-get install chromium)")


def listed_servers(html: str, backend: str = "nodes") -> list[str]:
    """Server names of ``backend`` on the stats page."""
    return re.findall(rf'<a name="{backend}/([^"]+)"', html)


def capture(output: Path) -> list[str]:
    """Save the screenshot; return the servers the page lists."""
    binary, url = chromium(), stats_url()
    output.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [binary, *CHROMIUM_FLAGS, "--window-size=1400,620", f"--screenshot={output}", url],
        check=True,
        capture_output=True,
        timeout=120,
    )
    html = subprocess.run(
        [binary, *CHROMIUM_FLAGS, "--dump-dom", url],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    return [s for s in listed_servers(html) if s.upper() != "BACKEND"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("output", type=Path)
    parser.add_argument("--expect", default="", help="comma-separated backends that must be listed")
    args = parser.parse_args()
    servers = capture(args.output)
    print(f"screenshot: {args.output} lists {', '.join(servers) or 'no server'}")
    missing = sorted(set(filter(None, args.expect.split(","))) - set(servers))
    if missing:
        print(f"screenshot: missing from the stats page: {', '.join(missing)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
