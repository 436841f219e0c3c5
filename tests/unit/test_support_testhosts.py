"""lbcluster_support.testhosts: what needs no Docker engine (names, the certificate)."""

from __future__ import annotations

import ssl
from pathlib import Path

from lbcluster_support import testhosts


def test_the_host_image_tag_is_a_digest_of_its_inputs(tmp_path: Path) -> None:
    sources = tmp_path / "debian.sources"
    sources.write_text("Types: deb\nURIs: http://mirror.invalid/debian\n", encoding="utf-8")
    name = testhosts.host_image_name(sources)
    assert name == testhosts.host_image_name(sources)
    assert name.startswith("lbcluster-testhost:") and len(name.split(":")[1]) == 12
    sources.write_text("Types: deb\nURIs: http://other.invalid/debian\n", encoding="utf-8")
    assert testhosts.host_image_name(sources) != name


def test_the_registry_certificate_names_its_address(tmp_path: Path) -> None:
    cert, key = testhosts.self_signed_certificate("10.1.2.3", tmp_path)
    assert key.stat().st_mode & 0o077 == 0
    context = ssl.create_default_context(cafile=str(cert))
    assert len(context.get_ca_certs()) == 1
    context.load_cert_chain(cert, key)  # the key matches the certificate
