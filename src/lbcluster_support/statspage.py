"""The stats page seen from outside the balancer, as an operator's tools see it.

The integration tests, the benchmark, the screenshot script and the molecule
verifier all read it the same way: the password the ``cluster_secrets`` role
generated, HTTP basic auth, the CSV export (parsed as the handler parses
HAProxy's ``show stat``, with :mod:`lbcluster.haproxy`). Nothing in the
containers reads it, so it is not in the images.
"""

from __future__ import annotations

import base64
import urllib.request
from pathlib import Path

from lbcluster.haproxy import parse_stat_csv, server_rows

USER = "admin"
PASSWORD_FILE = "stats-password"  # noqa: S105 (a file name, not a password)
URL = "http://127.0.0.1:1936"


def password(secrets_dir: Path) -> str:
    """The stats password the ``cluster_secrets`` role generated under ``secrets_dir``."""
    path = secrets_dir / PASSWORD_FILE
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path}: no stats password; `make up` (the cluster_secrets role) generates it"
        ) from None


def authorization(secret: str, user: str = USER) -> str:
    """The value of an ``Authorization`` header for basic auth."""
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


def server_states(
    authorization_header: str, url: str = URL, backend: str = "nodes", timeout: float = 5
) -> dict[str, str]:
    """Server name -> status (``UP``, ``DOWN``, ``MAINT``…) of ``backend``, from ``/;csv``.

    Raises :class:`OSError` (``urllib.error.HTTPError`` included) when the
    page cannot be read.
    """
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"stats page URL {url!r}: expected http:// or https://")
    request = urllib.request.Request(url.rstrip("/") + "/;csv")  # noqa: S310 (checked above)
    request.add_header("Authorization", authorization_header)
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (checked above)
        text = response.read().decode()
    return {row["svname"]: row["status"] for row in server_rows(parse_stat_csv(text), backend)}
