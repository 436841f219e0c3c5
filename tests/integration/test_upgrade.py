"""Upgrades under load: a new web app version, a new balancer, a bad version of either.

Each change is what an operator does: edit the code, re-run site.yml. The
edit is made in a copy of the project's sources (the play builds its images
from ``cluster_images_project_dir``), so the working tree stays as it is.
Users keep sending requests (keep-alive and Connection: close) through
127.0.0.1 the whole time; not one may fail. two_backends' teardown runs
site.yml with the project's own sources: a rollback, also rolling.
"""

from __future__ import annotations

import time
from pathlib import Path

from conftest import Containers, get_json, playbook, scale, up_servers

from lbcluster_support import project
from lbcluster_support.load import Load


def sources_with(tmp_path: Path, module: str, text: str) -> Path:
    """A copy of the images' inputs with ``text`` appended to src/lbcluster/``module``."""
    copy = project.copy_image_inputs(tmp_path / "project")
    path = copy / "src" / "lbcluster" / module
    path.write_text(path.read_text() + text)
    return copy


def deploy(sources: Path, *extra: str, fails: bool = False) -> str:
    """site.yml with the images built from ``sources``; the play's output. ``fails``:
    the play must fail (and it is the test's to say how)."""
    args = ["site.yml", "-e", f"cluster_images_project_dir={sources}", *extra]
    result = playbook(*args, check=not fails)
    output = result.stdout + result.stderr
    assert not fails or result.returncode != 0, f"the play did not fail: {output[-2000:]}"
    return output


def image_of(containers: Containers, name: str) -> str:
    return str(containers.client.containers.get(name).attrs["Config"]["Image"])


def assert_no_failure(load: Load) -> None:
    assert load.total > 200, f"too little load to prove anything: {load.figures()}"
    assert load.failed == 0, f"{load.failed} of {load.total} requests failed: {load.statuses}"


def test_a_new_web_app_version_rolls_without_a_failed_request(
    two_backends: Containers, tmp_path: Path
) -> None:
    before = {n: two_backends.client.containers.get(n).id for n in ("ha", "s1", "s2")}
    old_image = image_of(two_backends, "s1")
    sources = sources_with(tmp_path, "webapp.py", f"\n# version {time.time()}\n")
    with Load() as load:
        output = deploy(sources)
    assert_no_failure(load)
    # Both replaced, one at a time; the balancer untouched (the web app is not in its image).
    assert image_of(two_backends, "s1") == image_of(two_backends, "s2") != old_image
    assert two_backends.client.containers.get("ha").id == before["ha"]
    assert output.count("TASK [webapp : Start the new containers]") == 2, output[-3000:]
    assert up_servers() == {"s1", "s2"}
    assert two_backends.nodes() == {"s1", "s2"}
    names = {c.name for c in two_backends.client.containers.list(all=True)}
    assert names >= {"ha", "s1", "s2"} and not names & {"s1-surge", "ha-old"}, names
    # The same version again: nothing is replaced, nothing changes.
    ids = {n: two_backends.client.containers.get(n).id for n in ("s1", "s2")}
    output = deploy(sources)
    assert {n: two_backends.client.containers.get(n).id for n in ("s1", "s2")} == ids
    recap = output[output.rindex("PLAY RECAP") :]
    assert "changed=0" in recap, recap


def test_a_single_backend_is_replaced_behind_a_surge_backend(
    two_backends: Containers, tmp_path: Path
) -> None:
    scale(1)
    sources = sources_with(tmp_path, "webapp.py", f"\n# version {time.time()}\n")
    with Load() as load:
        output = deploy(sources, "-e", "webapp_count=1")
    assert_no_failure(load)
    assert "TASK [webapp : Start a surge backend" in output
    served = {c.name for c in two_backends.client.containers.list(all=True)}
    assert "s1-surge" not in served, "the surge backend is removed once s1 serves"
    assert up_servers() == {"s1"}
    assert get_json()["tag"] == "s1"


def test_a_new_balancer_takes_over_without_a_failed_request(
    two_backends: Containers, tmp_path: Path
) -> None:
    old = two_backends.client.containers.get("ha")
    backends = {n: two_backends.client.containers.get(n).id for n in ("s1", "s2")}
    sources = sources_with(tmp_path, "handler.py", f"\n# version {time.time()}\n")
    with Load() as load:
        output = deploy(sources)
    assert_no_failure(load)
    new = two_backends.client.containers.get("ha")
    assert new.id != old.id
    assert image_of(two_backends, "ha") != old.attrs["Config"]["Image"]
    assert "TASK [balancer : Wait until the new balancer serves]" in output
    names = {c.name for c in two_backends.client.containers.list(all=True)}
    assert "ha-old" not in names
    # The backends stayed; the new balancer's agent and handler follow them.
    assert {n: two_backends.client.containers.get(n).id for n in ("s1", "s2")} == backends
    assert up_servers() == {"s1", "s2"}
    alive = {m["name"] for m in two_backends.serf_members() if m["status"] == "alive"}
    assert alive == {"ha", "s1", "s2"}
    logs = new.logs().decode(errors="replace")
    assert "taking the listening sockets over from the running HAProxy" in logs


def test_a_web_app_version_that_never_serves_stops_the_rollout(
    two_backends: Containers, tmp_path: Path
) -> None:
    old_image = image_of(two_backends, "s2")
    sources = sources_with(tmp_path, "webapp.py", "\nraise SystemExit('broken on purpose')\n")
    with Load() as load:
        output = deploy(sources, "-e", "webapp_rolling_timeout=20", fails=True)
    assert_no_failure(load)
    assert "webapp: the rollout of lbcluster-webapp:" in output
    assert "stopped at s1" in output
    assert "s1's web app service: " in output, output[-3000:]  # up or down: it restarts
    assert "not UP in HAProxy: s1" in output or "not alive in Serf: s1" in output
    # Only the first batch was tried: s2 still runs the previous version and serves.
    assert image_of(two_backends, "s2") == old_image
    assert up_servers() == {"s2"}


def test_a_balancer_that_never_serves_is_undone_and_the_old_one_keeps_serving(
    two_backends: Containers, tmp_path: Path
) -> None:
    old = two_backends.client.containers.get("ha")
    sources = sources_with(tmp_path, "cli.py", "\nraise SystemExit('broken on purpose')\n")
    with Load() as load:
        output = deploy(sources, "-e", "balancer_handover_timeout=10", fails=True)
    assert_no_failure(load)
    assert "balancer: the new balancer (lbcluster-ha:" in output
    assert "did not take over" in output
    current = two_backends.client.containers.get("ha")
    assert current.id == old.id, "the old balancer has its name back"
    assert "ha-old" not in {c.name for c in two_backends.client.containers.list(all=True)}
    # Its handler runs again and follows the membership.
    assert two_backends.exec("ha", "s6-svstat", "-u", "/etc/s6/handler").strip() == "true"
    assert up_servers() == {"s1", "s2"}
