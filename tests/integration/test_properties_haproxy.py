"""Property test against the real HAProxy: whatever Serf reports, the handler's
rendering either contains exactly the valid alive backends and passes
`haproxy -c` in the ha container, or the member is refused."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Any

from conftest import Containers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lbcluster.members import alive_backends
from lbcluster.render import render_config
from lbcluster.serfrpc import decode_members

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from test_properties import serf_items  # the unit tests' strategy

TEMPLATE = Path(__file__).resolve().parents[2] / "templates" / "haproxy.cfg.j2"


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.lists(serf_items(), max_size=8))
def test_rendered_configs_pass_haproxy_check(cluster: Containers, items: list[Any]) -> None:
    live_settings = json.loads(cluster.read("ha", "/etc/lbcluster/settings.json"))
    parsed = decode_members(items)
    accepted = alive_backends(parsed.members).members
    config = render_config(TEMPLATE, live_settings, accepted)
    servers = [line.split()[1] for line in config.splitlines() if line.startswith("    server ")]
    assert servers == sorted(m.name for m in accepted)
    encoded = base64.b64encode(config.encode()).decode()
    result = cluster.client.containers.get("ha").exec_run(
        ["sh", "-c", 'echo "$CFG" | base64 -d > /tmp/prop.cfg && haproxy -c -q -f /tmp/prop.cfg'],
        environment={"CFG": encoded},
    )
    assert result.exit_code == 0, result.output.decode(errors="replace") + config
