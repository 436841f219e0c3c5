#!/usr/bin/python
"""Ansible module: check a TLS server certificate the way its clients will."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: tls_certificate_check
short_description: Check a TLS server certificate, its key and (optionally) its CA
description:
  - Reads a PEM certificate (the server's first, then any intermediates) and
    its private key, and reports what would make HAProxy or its clients
    refuse them, as a list of problems (empty when all is well).
  - With O(ca), verifies the chain to that CA for each of O(names) as a TLS
    client does (signature, validity period, subjectAltName, the CA's name
    constraints, key usages), with the C(cryptography) library's verifier.
    Without it, only checks that the subjectAltNames cover O(names).
  - Never changes anything. Runs where the files are (the controller).
options:
  certificate:
    description: PEM file with the server's certificate first, then its intermediates.
    type: path
    required: true
  key:
    description: PEM file with the certificate's private key, unencrypted.
    type: path
    required: true
  ca:
    description: PEM file of the CA the chain must lead to; empty, no chain check.
    type: path
    default: ""
  names:
    description: DNS names or IP addresses the certificate must be valid for.
    type: list
    elements: str
    default: []
requirements:
  - cryptography >= 43 (installed with ansible-core)
author:
  - lbcluster maintainers
"""

EXAMPLES = r"""
- name: Check the balancer's certificate
  tls_certificate_check:
    certificate: inventory/local/.secrets/tls-server.crt
    key: inventory/local/.secrets/tls-server.key
    ca: inventory/local/.secrets/tls-ca.crt
    names: [localhost, 127.0.0.1, ha]
  register: tls
  delegate_to: localhost
"""

RETURN = r"""
problems:
  description: What is wrong, one sentence each; empty when nothing is.
  returned: always
  type: list
  elements: str
sha256:
  description: SHA-256 fingerprint (hex) of the server's certificate.
  returned: always
  type: str
not_after:
  description: When the server's certificate expires (ISO 8601, UTC).
  returned: always
  type: str
subject_alt_names:
  description: The names of the server's certificate (C(DNS:...), C(IP:...)).
  returned: always
  type: list
  elements: str
"""

import datetime
import hashlib
import ipaddress
import re

from ansible.module_utils.basic import AnsibleModule

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
except ImportError:  # reported by main()
    x509 = None


def load_certificates(path):
    with open(path, "rb") as fh:
        data = fh.read()
    try:
        chain = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise ValueError(f"{path}: not a PEM certificate ({exc})") from None
    return chain


def load_key(path):
    with open(path, "rb") as fh:
        data = fh.read()
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ValueError(f"{path}: the key is encrypted; HAProxy needs it unencrypted") from None
    except ValueError as exc:
        raise ValueError(f"{path}: not a PEM private key ({exc})") from None


def general_name(name):
    """The subjectAltName entry a client looks for when it connects to ``name``."""
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def describe(entry):
    if isinstance(entry, x509.IPAddress):
        return f"IP:{entry.value}"
    return f"DNS:{entry.value}"


def subject_alt_names(cert):
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [describe(e) for e in ext.value if isinstance(e, (x509.DNSName, x509.IPAddress))]


def reason(exc):
    """The verifier's reason, without its prefix and the certificate it names."""
    text = re.sub(r"^validation failed: (candidates exhausted: )?", "", str(exc))
    return re.sub(r" \(encountered processing <Certificate.*\)$", "", text)


def public_der(key):
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def check(chain, key, ca=None, names=(), now=None):
    """The problems of ``chain`` (server first) with ``key`` under ``ca`` for ``names``."""
    now = now or datetime.datetime.now(datetime.UTC)
    leaf = chain[0]
    found = []
    if public_der(leaf.public_key()) != public_der(key.public_key()):
        found.append("the key is not the certificate's")
    if now > leaf.not_valid_after_utc:
        found.append(f"the certificate expired on {leaf.not_valid_after_utc.isoformat()}")
    elif now < leaf.not_valid_before_utc:
        found.append(f"the certificate is valid only from {leaf.not_valid_before_utc.isoformat()}")
    if ca is not None:
        builder = PolicyBuilder().store(Store(ca)).time(now)
        refused = {}  # reason -> names, in order
        for name in names:
            try:
                builder.build_server_verifier(general_name(name)).verify(leaf, chain[1:])
            except VerificationError as exc:
                refused.setdefault(reason(exc), []).append(name)
        found += [f"not valid for {', '.join(n)} under the CA: {r}" for r, n in refused.items()]
    else:
        sans = subject_alt_names(leaf)
        missing = [n for n in names if describe(general_name(n)) not in sans]
        if missing:
            found.append(f"the certificate does not cover {', '.join(missing)}")
    return found


def main():
    module = AnsibleModule(
        argument_spec={
            "certificate": {"type": "path", "required": True},
            "key": {"type": "path", "required": True, "no_log": False},
            "ca": {"type": "path", "default": ""},
            "names": {"type": "list", "elements": "str", "default": []},
        },
        supports_check_mode=True,
    )
    if x509 is None:
        module.fail_json(msg="tls_certificate_check needs the Python library cryptography >= 43")
    params = module.params
    try:
        chain = load_certificates(params["certificate"])
        key = load_key(params["key"])
        ca = load_certificates(params["ca"]) if params["ca"] else None
    except (OSError, ValueError) as exc:
        module.fail_json(msg=str(exc))
    leaf = chain[0]
    fingerprint = hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest()
    module.exit_json(
        changed=False,
        problems=check(chain, key, ca, params["names"]),
        sha256=fingerprint,
        not_after=leaf.not_valid_after_utc.isoformat(),
        subject_alt_names=subject_alt_names(leaf),
    )


if __name__ == "__main__":
    main()
