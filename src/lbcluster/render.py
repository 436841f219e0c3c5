"""Rendering haproxy.cfg from the Jinja2 template that Ansible uses too.

Ansible's ``template`` module renders with ``trim_blocks=True`` and keeps the
trailing newline; the environment here matches it so both produce the same
bytes from the same variables (``settings`` and ``servers``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .members import Member


class SettingsError(ValueError):
    """settings.json is missing, unreadable or not an object."""


class TemplateError(RuntimeError):
    """The template could not be rendered."""


def load_settings(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SettingsError(f"{path}: settings file not found") from None
    except (OSError, ValueError) as exc:
        raise SettingsError(f"{path}: unreadable settings: {exc}") from None
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def server_entries(backends: Iterable[Member]) -> list[dict[str, Any]]:
    """The ``servers`` variable of the template: plain dicts, sorted by name."""
    return [
        {"name": m.name, "address": m.address, "port": m.port, "endpoint": m.endpoint}
        for m in sorted(backends)
    ]


_compiled: dict[tuple[Path, int], Any] = {}


def _template(template: Path) -> Any:
    """The compiled template, compiled again only when the file changes."""
    import jinja2  # noqa: PLC0415 - imported late: the Runtime API fast path needs no Jinja2

    key = (template, template.stat().st_mtime_ns)
    if key not in _compiled:
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(template.parent)),
            trim_blocks=True,
            keep_trailing_newline=True,
            undefined=jinja2.StrictUndefined,
            autoescape=False,  # noqa: S701 - renders an HAProxy config, not HTML
        )
        _compiled.clear()
        _compiled[key] = env.get_template(template.name)
    return _compiled[key]


def render_config(template: Path, settings: Mapping[str, Any], backends: Iterable[Member]) -> str:
    import jinja2  # noqa: PLC0415

    try:
        return str(
            _template(template).render(settings=dict(settings), servers=server_entries(backends))
        )
    except FileNotFoundError:
        raise TemplateError(f"{template}: TemplateNotFound: no such file") from None
    except jinja2.TemplateError as exc:
        lineno = getattr(exc, "lineno", None)
        where = f"{template}:{lineno}" if lineno else str(template)
        raise TemplateError(f"{where}: {exc.__class__.__name__}: {exc}") from None
