"""library/tls_certificate_check: a certificate checked the way its clients check it."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from helpers import load_library_module

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402

patch_module_args = pytest.importorskip("ansible.module_utils.testing").patch_module_args

NOW = datetime.datetime(2026, 11, 23, 12, 0, tzinfo=datetime.UTC)
DAY = datetime.timedelta(days=1)
NAMES = ["localhost", "127.0.0.1", "ha", "192.168.42.42"]


@pytest.fixture(scope="module")
def check() -> ModuleType:
    return load_library_module("tls_certificate_check")


def general(name: str) -> Any:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def network(name: str) -> Any:
    try:
        return x509.IPAddress(ipaddress.ip_network(name))
    except ValueError:
        return x509.DNSName(name)


class Pki:
    """A CA like the cluster_secrets role's (name constraints) and what it signs."""

    def __init__(self, permitted: list[str]) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lbcluster CA")])
        subtrees = [network(n if not n[0].isdigit() else f"{n}/32") for n in permitted]
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - DAY)
            .not_valid_after(NOW + 3650 * DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .add_extension(x509.NameConstraints(subtrees, None), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )

    def server(self, names: list[str], days: int = 825, key: Any = None) -> tuple[Any, Any]:
        key = key or ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - DAY)
            .not_valid_after(NOW + days * DAY)
            .add_extension(x509.SubjectAlternativeName([general(n) for n in names]), False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
            .sign(self.key, hashes.SHA256())
        )
        return cert, key


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write(tmp_path: Path, name: str, *items: Any) -> str:
    data = b""
    for item in items:
        if isinstance(item, x509.Certificate):
            data += item.public_bytes(serialization.Encoding.PEM)
        else:
            data += item.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_a_good_certificate_has_no_problem(check: ModuleType) -> None:
    pki = Pki(NAMES)
    cert, key = pki.server(NAMES)
    assert check.check([cert], key, [pki.cert], NAMES, now=NOW) == []
    assert check.check([cert], key, None, NAMES, now=NOW) == []
    assert check.subject_alt_names(cert) == [
        "DNS:localhost",
        "IP:127.0.0.1",
        "DNS:ha",
        "IP:192.168.42.42",
    ]


def test_a_key_that_is_not_the_certificates(check: ModuleType) -> None:
    pki = Pki(NAMES)
    cert, _ = pki.server(NAMES)
    other = ec.generate_private_key(ec.SECP256R1())
    assert check.check([cert], other, [pki.cert], NAMES, now=NOW) == [
        "the key is not the certificate's"
    ]


def test_an_expired_certificate(check: ModuleType) -> None:
    pki = Pki(NAMES)
    cert, key = pki.server(NAMES, days=30)
    later = NOW + 31 * DAY
    found = check.check([cert], key, None, [], now=later)
    assert found == [f"the certificate expired on {(NOW + 30 * DAY).isoformat()}"]
    # Under the CA, the verifier says so too, for every name.
    found = check.check([cert], key, [pki.cert], ["ha"], now=later)
    assert found[0].startswith("the certificate expired on")
    assert found[1].startswith("not valid for ha under the CA: ")


def test_a_name_the_certificate_does_not_cover(check: ModuleType) -> None:
    pki = Pki([*NAMES, "lb.example"])
    cert, key = pki.server(NAMES)
    found = check.check([cert], key, [pki.cert], [*NAMES, "lb.example"], now=NOW)
    # The verifier's own words follow (cryptography 51 adds " for lb.example").
    assert len(found) == 1
    assert found[0].startswith(
        "not valid for lb.example under the CA: leaf certificate has no matching subjectAltName"
    )
    assert check.check([cert], key, None, ["lb.example", "10.0.0.1"], now=NOW) == [
        "the certificate does not cover lb.example, 10.0.0.1"
    ]


def test_a_name_the_ca_may_not_sign_for(check: ModuleType) -> None:
    """A new server certificate for a new name, under the old CA: clients refuse it."""
    pki = Pki(NAMES)
    cert, key = pki.server([*NAMES, "lb.example"])
    found = check.check([cert], key, [pki.cert], [*NAMES, "lb.example"], now=NOW)
    assert len(found) == 1
    assert found[0].startswith("not valid for localhost, 127.0.0.1, ha, 192.168.42.42, lb.example")
    assert "name constraints" in found[0]


def test_another_cas_certificate(check: ModuleType) -> None:
    cert, key = Pki(NAMES).server(NAMES)
    found = check.check([cert], key, [Pki(NAMES).cert], ["ha"], now=NOW)
    assert len(found) == 1
    assert found[0].startswith("not valid for ha under the CA: ")


def run(check: ModuleType, args: dict[str, Any], capsys: Any) -> tuple[int, Any]:
    with patch_module_args(args), pytest.raises(SystemExit) as exc:
        check.main()
    return int(exc.value.code or 0), json.loads(capsys.readouterr().out)


def test_module_reports_problems_and_the_fingerprint(
    check: ModuleType, tmp_path: Path, capsys: Any
) -> None:
    pki = Pki(NAMES)
    cert, key = pki.server(NAMES)
    args = {
        "certificate": write(tmp_path, "server.crt", cert),
        "key": write(tmp_path, "server.key", key),
        "ca": write(tmp_path, "ca.crt", pki.cert),
        "names": ["ha", "lb.example"],
    }
    code, result = run(check, args, capsys)
    assert code == 0
    assert result["changed"] is False
    assert len(result["problems"]) == 1
    assert result["problems"][0].startswith("not valid for lb.example under the CA")
    der = cert.public_bytes(serialization.Encoding.DER)
    assert result["sha256"] == sha256(der)
    assert result["not_after"] == cert.not_valid_after_utc.isoformat()
    assert "DNS:ha" in result["subject_alt_names"]


def test_module_reads_a_chain_server_first(check: ModuleType, tmp_path: Path, capsys: Any) -> None:
    pki = Pki(NAMES)
    cert, key = pki.server(NAMES)
    args = {
        "certificate": write(tmp_path, "chain.pem", cert, pki.cert),
        "key": write(tmp_path, "server.key", key),
    }
    code, result = run(check, args, capsys)
    assert (code, result["problems"]) == (0, [])
    assert result["sha256"] == sha256(cert.public_bytes(serialization.Encoding.DER))


def test_module_refuses_an_encrypted_key(check: ModuleType, tmp_path: Path, capsys: Any) -> None:
    cert, key = Pki(NAMES).server(NAMES)
    encrypted = tmp_path / "server.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    args = {"certificate": write(tmp_path, "server.crt", cert), "key": str(encrypted)}
    code, result = run(check, args, capsys)
    assert code == 1
    assert result["msg"] == f"{encrypted}: the key is encrypted; HAProxy needs it unencrypted"


@pytest.mark.parametrize("which", ["certificate", "key"])
def test_module_names_a_file_that_is_not_pem(
    check: ModuleType, tmp_path: Path, capsys: Any, which: str
) -> None:
    cert, key = Pki(NAMES).server(NAMES)
    args = {
        "certificate": write(tmp_path, "server.crt", cert),
        "key": write(tmp_path, "server.key", key),
    }
    Path(args[which]).write_text("not a PEM file\n")
    code, result = run(check, args, capsys)
    assert code == 1
    assert result["msg"].startswith(f"{args[which]}: not a PEM ")


def test_module_names_a_missing_file(check: ModuleType, tmp_path: Path, capsys: Any) -> None:
    code, result = run(
        check, {"certificate": str(tmp_path / "nope.crt"), "key": str(tmp_path / "k")}, capsys
    )
    assert code == 1
    assert "nope.crt" in result["msg"]
