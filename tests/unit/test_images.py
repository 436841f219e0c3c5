"""Each image's tag digests the modules its commands import, and no fewer.

roles/cluster_images/vars/main.yml lists, per image, the modules of
src/lbcluster whose change must give the image a new tag. The commands an
image runs are the console scripts its s6 services start (plus lbcluster-status,
which the operator runs in ha); the modules they need are the closure of
their imports. A module missing from a list would let a change ship in no image.
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "lbcluster"
IMAGES = ROOT / "roles" / "cluster_images" / "files" / "images"
# Commands an operator runs in an image, beyond those its services start.
OPERATOR_COMMANDS = {"ha": {"lbcluster-status"}, "webapp": set()}


def scripts() -> dict[str, str]:
    """Console script name -> module of src/lbcluster it runs."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {name: target.split(":")[0].split(".")[1] for name, target in project["scripts"].items()}


def commands_of(image: str) -> set[str]:
    """The project's console scripts that the image's s6 run scripts start."""
    found = set(OPERATOR_COMMANDS[image])
    for run in (IMAGES / image).rglob("run"):
        found |= set(re.findall(r"\blbcluster-[a-z]+\b", run.read_text()))
    return found


def imports_of(module: str) -> set[str]:
    """Modules of the package that one module imports (absolute or relative)."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            name = node.module or ""
            if node.level == 0 and not name.startswith("lbcluster"):
                continue
            name = name.removeprefix("lbcluster").lstrip(".")
            if name:
                found.add(name.split(".")[0])
            else:
                found |= {a.name for a in node.names if (PACKAGE / f"{a.name}.py").exists()}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("lbcluster.")}
    return found


def closure(roots: set[str]) -> set[str]:
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        module = stack.pop()
        if module not in seen:
            seen.add(module)
            stack.extend(imports_of(module))
    return seen


def listed(image: str) -> set[str]:
    path = ROOT / "roles" / "cluster_images" / "vars" / "main.yml"
    variables = yaml.safe_load(path.read_text())
    return set(variables[f"__cluster_images_{image}_modules"])


@pytest.mark.parametrize("image", ["ha", "webapp"])
def test_every_imported_module_is_listed(image: str) -> None:
    commands = commands_of(image)
    assert commands, f"no lbcluster command found in the {image} image's s6 services"
    needed = closure({scripts()[c] for c in commands} | {"__init__"})
    missing = needed - listed(image)
    assert not missing, (
        f"__cluster_images_{image}_modules lacks {sorted(missing)}: a change to them would not "
        f"give the {image} image a new tag"
    )


@pytest.mark.parametrize("image", ["ha", "webapp"])
def test_every_listed_module_exists(image: str) -> None:
    absent = {m for m in listed(image) if not (PACKAGE / f"{m}.py").exists()}
    assert not absent, f"__cluster_images_{image}_modules names modules that do not exist: {absent}"


def test_images_are_independent() -> None:
    """The point: the web app's code is not in ha's tag, nor the handler's in webapp's."""
    assert "webapp" not in listed("ha")
    assert "handler" not in listed("webapp")
