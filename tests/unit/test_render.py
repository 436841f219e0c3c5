"""lbcluster.render: settings.json and the haproxy.cfg template shared with Ansible."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from helpers import REPO, SETTINGS, TEMPLATE

from lbcluster.members import Member, make_member
from lbcluster.render import (
    SettingsError,
    TemplateError,
    load_settings,
    render_config,
    server_entries,
)


def backend(name: str, address: str, port: int = 3000) -> Member:
    return make_member(name, address, {"role": "backend", "port": str(port)})


def server_lines(config: str) -> list[str]:
    return [line for line in config.splitlines() if line.lstrip().startswith("server ")]


# --- load_settings ----------------------------------------------------------


def test_load_settings(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(SETTINGS, indent=2) + "\n")
    assert load_settings(path) == SETTINGS


def test_load_settings_missing_names_path(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "settings.json"
    with pytest.raises(SettingsError) as exc:
        load_settings(path)
    assert str(exc.value) == f"{path}: settings file not found"


@pytest.mark.parametrize("text", ["", "{", "{'a': 1}", "nan nan"])
def test_load_settings_bad_json_names_path(tmp_path: Path, text: str) -> None:
    path = tmp_path / "settings.json"
    path.write_text(text)
    with pytest.raises(SettingsError, match="unreadable settings") as exc:
        load_settings(path)
    assert str(exc.value).startswith(f"{path}: ")


def test_load_settings_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    path.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(SettingsError, match=re.escape(f"{path}: unreadable settings")):
        load_settings(path)


def test_load_settings_directory(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=re.escape(f"{tmp_path}: unreadable settings")):
        load_settings(tmp_path)


@pytest.mark.parametrize(
    ("text", "kind"), [("[]", "list"), ("42", "int"), ('"x"', "str"), ("null", "NoneType")]
)
def test_load_settings_not_an_object(tmp_path: Path, text: str, kind: str) -> None:
    path = tmp_path / "settings.json"
    path.write_text(text)
    with pytest.raises(SettingsError) as exc:
        load_settings(path)
    assert str(exc.value) == f"{path}: expected a JSON object, got {kind}"


# --- server_entries ---------------------------------------------------------


def test_server_entries_sorted_plain_dicts() -> None:
    entries = server_entries([backend("s2", "fd00::2", 81), backend("s1", "10.0.0.1")])
    assert entries == [
        {"name": "s1", "address": "10.0.0.1", "port": 3000, "endpoint": "10.0.0.1:3000"},
        {"name": "s2", "address": "fd00::2", "port": 81, "endpoint": "[fd00::2]:81"},
    ]


# --- render_config ----------------------------------------------------------


def test_render_zero_servers() -> None:
    config = render_config(TEMPLATE, SETTINGS, [])
    assert server_lines(config) == []
    assert "backend nodes\n" in config
    assert "    default_backend nodes\n" in config
    assert "    bind 127.0.0.1:8080\n" in config
    assert "    bind 127.0.0.1:1936\n" in config
    assert "    maxconn 4096\n" in config
    assert "    hard-stop-after 30s\n" in config
    assert "    log stdout format raw local0 info\n" in config
    assert (
        "    default-server check inter 500ms fastinter 250ms downinter 500ms rise 1 fall 2\n"
        in config
    )
    assert "cookie" not in config
    assert "userlist" not in config
    assert "http_auth" not in config
    assert "{{" not in config
    assert "{%" not in config
    assert "{#" not in config


def test_render_one_server() -> None:
    config = render_config(TEMPLATE, SETTINGS, [backend("s1", "172.18.0.3")])
    assert server_lines(config) == ["    server s1 172.18.0.3:3000"]


def test_render_many_servers_sorted_ipv6_bracketed() -> None:
    members = [backend(f"s{i}", f"10.0.0.{i}") for i in range(10, 0, -1)]
    members.append(backend("v6", "fd00::6", 8080))
    config = render_config(TEMPLATE, SETTINGS, members)
    expected = [f"    server {m.name} {m.endpoint}" for m in sorted(members)]
    assert server_lines(config) == expected
    assert "    server v6 [fd00::6]:8080" in expected
    # Server lines come right after default-server, each on its own line.
    lines = config.splitlines()
    start = next(i for i, line in enumerate(lines) if "default-server" in line) + 1
    assert lines[start : start + len(expected)] == expected
    assert lines[start + len(expected)] == ""


def test_render_sticky_sessions() -> None:
    settings = {**SETTINGS, "sticky_sessions": True}
    config = render_config(TEMPLATE, settings, [backend("s1", "10.0.0.1"), backend("s2", "::1")])
    assert "    cookie SERVERID insert indirect nocache\n" in config
    assert server_lines(config) == [
        "    server s1 10.0.0.1:3000 cookie s1",
        "    server s2 [::1]:3000 cookie s2",
    ]


HASH = "$6$rounds=5000$0123456789abcdef$" + "x" * 86


def test_render_stats_user_adds_userlist_with_the_hash() -> None:
    settings = {**SETTINGS, "stats_user": "admin", "stats_password_hash": HASH}
    config = render_config(TEMPLATE, settings, [])
    assert "    http-request auth realm lbcluster unless { http_auth(stats_users) }\n" in config
    assert config.endswith(f"\nuserlist stats_users\n    user admin password {HASH}\n")
    assert "insecure-password" not in config


def test_render_without_stats_user_ends_with_stats_section() -> None:
    config = render_config(TEMPLATE, SETTINGS, [])
    assert config.endswith("    stats show-node\n")
    assert not config.endswith("\n\n")


def test_render_trim_blocks_leaves_no_blank_block_lines() -> None:
    config = render_config(TEMPLATE, SETTINGS, [backend("s1", "10.0.0.1")])
    lines = config.splitlines()
    # Block tags ({% if %}, {% for %}) leave neither empty lines nor stray spaces.
    i = lines.index("    http-check send meth HEAD uri /")
    assert lines[i + 1].startswith("    default-server ")
    assert lines[i + 2] == "    server s1 10.0.0.1:3000"
    assert all(line == line.rstrip() for line in lines)
    # Exactly one blank line between sections, never two.
    assert "\n\n\n" not in config
    assert config.startswith("# Generated from templates/haproxy.cfg.j2")


FLAGS = ["sticky_sessions", "stats_user", "tls", "tls_redirect"]


@pytest.mark.parametrize("missing", sorted(set(SETTINGS) - {*FLAGS, "backend_networks"}))
def test_missing_setting_raises_template_error(missing: str) -> None:
    settings = {k: v for k, v in SETTINGS.items() if k != missing}
    if missing == "stats_password_hash":
        settings["stats_user"] = "admin"  # only used with a stats user
    with pytest.raises(TemplateError) as exc:
        render_config(TEMPLATE, settings, [backend("s1", "10.0.0.1")])
    message = str(exc.value)
    assert message.startswith(str(TEMPLATE))
    assert "UndefinedError" in message
    assert missing in message


@pytest.mark.parametrize("missing", FLAGS)
def test_missing_flag_setting_raises_template_error(missing: str) -> None:
    # Only tested for truth in the template, but StrictUndefined refuses that too.
    settings = {k: v for k, v in SETTINGS.items() if k != missing}
    with pytest.raises(TemplateError, match=re.escape(str(TEMPLATE))):
        render_config(TEMPLATE, settings, [])


def test_template_syntax_error_names_template_and_line(tmp_path: Path) -> None:
    template = tmp_path / "broken.j2"
    template.write_text("global\n    maxconn {{ settings.maxconn\n")
    with pytest.raises(TemplateError) as exc:
        render_config(template, SETTINGS, [])
    assert str(exc.value).startswith(f"{template}:2: TemplateSyntaxError")


def test_missing_template_names_it(tmp_path: Path) -> None:
    template = tmp_path / "absent.j2"
    with pytest.raises(TemplateError, match=re.escape(f"{template}: TemplateNotFound")):
        render_config(template, SETTINGS, [])


def test_render_is_not_html_escaped(tmp_path: Path) -> None:
    template = tmp_path / "t.j2"
    template.write_text("{{ settings.x }}")
    assert render_config(template, {"x": "<&>'\""}, []) == "<&>'\""


def test_render_keeps_trailing_newline_and_trims_blocks(tmp_path: Path) -> None:
    template = tmp_path / "t.j2"
    template.write_text("a\n{% if settings.x %}\nb\n{% endif %}\nc\n")
    assert render_config(template, {"x": True}, []) == "a\nb\nc\n"
    assert render_config(template, {"x": False}, []) == "a\nc\n"


# --- same bytes as Ansible's template module --------------------------------


@pytest.fixture(scope="module")
def ansible() -> Any:
    pytest.importorskip("ansible")
    from ansible.parsing.dataloader import DataLoader  # noqa: PLC0415
    from ansible.template import Templar, trust_as_template  # noqa: PLC0415

    loader = DataLoader()
    role = REPO / "roles" / "balancer"
    defaults = loader.load_from_file(str(role / "defaults/main.yml"), trusted_as_template=True)
    role_vars = loader.load_from_file(str(role / "vars/main.yml"), trusted_as_template=True)
    templar = Templar(loader=loader, variables={**defaults, **role_vars})

    class Ansible:
        def settings(self, **overrides: Any) -> dict[str, Any]:
            """__balancer_settings as the role computes it, through settings.json."""
            # What the role's tasks publish before: the subnets of its network,
            # the fingerprint of the certificate.
            facts = {
                "__balancer_network_subnets": ["172.18.0.0/16"],
                "__balancer_tls_sha256": SETTINGS["tls_certificate_sha256"],
            }
            sub = Templar(loader=loader, variables={**defaults, **role_vars, **facts, **overrides})
            data = sub.template(role_vars["__balancer_settings"])
            return json.loads(json.dumps(data))

        def render(self, settings: dict[str, Any], servers: list[dict[str, Any]]) -> str:
            """What ansible.builtin.template (trim_blocks, no lstrip, "\\n") produces."""
            data = trust_as_template(TEMPLATE.read_text(encoding="utf-8"))
            env = templar.copy_with_new_env(
                searchpath=[str(TEMPLATE.parent)],
                available_variables={"settings": settings, "servers": servers},
            )
            out = env.template(
                data,
                escape_backslashes=False,
                overrides={"trim_blocks": True, "lstrip_blocks": False, "newline_sequence": "\n"},
            )
            return str(out)

    return Ansible()


def test_settings_fixture_matches_the_role(ansible: Any) -> None:
    role_settings = ansible.settings()
    assert sorted(role_settings) == sorted(SETTINGS)
    assert isinstance(role_settings["sticky_sessions"], bool)
    assert isinstance(role_settings["maxconn"], int)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"balancer_sticky_sessions": True},
        {
            "balancer_stats_user": "admin",
            "balancer_stats_password": "0123456789",
            "balancer_stats_password_salt": "0123456789abcdef",
        },
        {"balancer_sticky_sessions": "yes", "balancer_maxconn": "100"},
        {"balancer_tls": False},
        {"balancer_tls": False, "balancer_tls_redirect": True},
        {"balancer_tls_redirect": True},
        {"balancer_tls_redirect": "yes", "balancer_https_port": "443"},
    ],
)
@pytest.mark.parametrize("count", [0, 1, 3])
def test_same_output_as_ansible_template(
    ansible: Any, overrides: dict[str, Any], count: int
) -> None:
    settings = ansible.settings(**overrides)
    members = [backend(f"s{i}", f"172.18.0.{i + 2}") for i in range(count)]
    if count > 1:
        members.append(backend("v6", "fd00::9", 8080))
    ours = render_config(TEMPLATE, settings, members)
    theirs = ansible.render(settings, server_entries(members))
    assert ours == theirs
    assert len(server_lines(ours)) == len(members)


def test_bootstrap_config_as_ansible_renders_it(ansible: Any) -> None:
    """The role renders with `servers: []`; the handler with no backends: same bytes."""
    settings = ansible.settings()
    assert render_config(TEMPLATE, settings, []) == ansible.render(settings, [])


# --- the stats password: only its hash reaches settings.json and haproxy.cfg --

STATS = {
    "balancer_stats_user": "admin",
    "balancer_stats_password": "correct-horse-battery",
    "balancer_stats_password_salt": "0123456789abcdef",
}


def test_the_role_hashes_the_stats_password(ansible: Any) -> None:
    passlib_hash = pytest.importorskip("passlib.hash")
    settings = ansible.settings(**STATS)
    hashed = settings["stats_password_hash"]
    # SHA-512 crypt(3) with the stored salt (5000 rounds is crypt's implicit default).
    assert hashed.startswith("$6$0123456789abcdef$")
    assert passlib_hash.sha512_crypt.verify("correct-horse-battery", hashed)
    assert not passlib_hash.sha512_crypt.verify("correct-horse-batterY", hashed)
    # Nothing the role writes carries the password in clear.
    config = ansible.render(settings, [])
    for written in (json.dumps(settings), config):
        assert "correct-horse-battery" not in written
    assert f"    user admin password {hashed}\n" in config
    assert "insecure-password" not in config


def test_the_stats_password_hash_is_the_same_on_every_run(ansible: Any) -> None:
    """Same password and salt, same hash: a re-run changes neither file (changed=0)."""
    first = ansible.settings(**STATS)["stats_password_hash"]
    assert ansible.settings(**STATS)["stats_password_hash"] == first
    other_salt = ansible.settings(**{**STATS, "balancer_stats_password_salt": "fedcba9876543210"})
    assert other_salt["stats_password_hash"] != first


def test_the_stats_password_rounds_are_the_hash_cost(ansible: Any) -> None:
    passlib_hash = pytest.importorskip("passlib.hash")
    hashed = ansible.settings(**STATS, balancer_stats_password_rounds=20000)["stats_password_hash"]
    assert hashed.startswith("$6$rounds=20000$0123456789abcdef$")
    assert passlib_hash.sha512_crypt.verify("correct-horse-battery", hashed)


def test_without_a_stats_user_there_is_no_hash(ansible: Any) -> None:
    """No user, no authentication: no salt needed, nothing hashed."""
    settings = ansible.settings(balancer_stats_user="", balancer_stats_password="")
    assert settings["stats_password_hash"] == ""
    assert "userlist" not in ansible.render(settings, [])


# --- HTTPS beside HTTP --------------------------------------------------------

PEM = "/etc/lbcluster/tls/server.pem"
REDIRECT = (
    "    http-request redirect location"
    " 'https://%[req.hdr(host),regsub(:[0-9]+$,)]{port}%[capture.req.uri]'"
    " code 301 if !{{ ssl_fc }} {{ req.hdr(host) -m found }}\n"
)


def frontend(config: str) -> list[str]:
    lines = config.splitlines()
    start = lines.index("frontend http")
    return lines[start : lines.index("", start)]


def test_render_https_beside_http() -> None:
    config = render_config(TEMPLATE, SETTINGS, [])
    assert frontend(config)[:5] == [
        "frontend http",
        "    bind 127.0.0.1:8080",
        f"    # HTTPS, HTTP/2 or HTTP/1.1 (ALPN). Certificate sha256 {'0123456789abcdef' * 4}:",
        "    # a new one changes this file, so the handler checks it and reloads.",
        f"    bind 127.0.0.1:8443 ssl crt {PEM} alpn h2,http/1.1",
    ]
    assert "    ssl-default-bind-options ssl-min-ver TLSv1.2 no-tls-tickets\n" in config
    assert "redirect" not in config
    # The backends learn the port and the scheme; a client cannot claim them.
    assert "    http-request set-header X-Forwarded-Port %[ssl_fc,iif(8443,8080)]\n" in config
    assert "    http-request set-header X-Forwarded-Proto %[ssl_fc,iif(https,http)]\n" in config


def test_render_without_tls_has_no_ssl_and_no_redirect() -> None:
    settings = {**SETTINGS, "tls": False, "tls_redirect": True}
    config = render_config(TEMPLATE, settings, [])
    assert "ssl" not in config.replace("ssl_fc", "")
    assert ":8443" not in config
    assert "redirect" not in config
    assert frontend(config)[:2] == ["frontend http", "    bind 127.0.0.1:8080"]
    assert "    http-request set-header X-Forwarded-Port 8080\n" in config
    assert "    http-request set-header X-Forwarded-Proto http\n" in config


@pytest.mark.parametrize("tls", [True, False])
def test_render_forwarded_headers_need_no_destination_fetch(tls: bool) -> None:
    """The port comes from the settings: dst_port costs getsockname() per connection."""
    config = render_config(TEMPLATE, {**SETTINGS, "tls": tls}, [])
    assert "%[dst" not in config
    assert config.count("X-Forwarded-Port") == 1


@pytest.mark.parametrize(("port", "shown"), [(8443, ":8443"), (443, ""), (10443, ":10443")])
def test_render_redirect_names_the_https_port(port: int, shown: str) -> None:
    settings = {**SETTINGS, "tls_redirect": True, "https_port": port}
    config = render_config(TEMPLATE, settings, [])
    assert REDIRECT.format(port=shown) in config
    # Before the headers are set: a redirect answers at once.
    assert config.index("redirect location") < config.index("X-Forwarded-Proto")


def test_a_new_certificate_changes_the_file() -> None:
    """The handler reloads only a changed file: the fingerprint makes a rotation one."""
    before = render_config(TEMPLATE, SETTINGS, [])
    after = render_config(TEMPLATE, {**SETTINGS, "tls_certificate_sha256": "f" * 64}, [])
    assert before != after
    assert [line for line in after.splitlines() if line not in before.splitlines()] == [
        f"    # HTTPS, HTTP/2 or HTTP/1.1 (ALPN). Certificate sha256 {'f' * 64}:"
    ]


def test_the_role_settings_of_tls(ansible: Any) -> None:
    settings = ansible.settings()
    assert (settings["tls"], settings["tls_redirect"]) == (True, False)
    assert (settings["https_address"], settings["https_port"]) == ("127.0.0.1", 8443)
    assert settings["tls_pem"] == PEM
    assert settings["tls_certificate_sha256"] == SETTINGS["tls_certificate_sha256"]
    redirect = ansible.settings(balancer_tls_redirect=True, balancer_https_port=443)
    assert (redirect["tls_redirect"], redirect["https_port"]) == (True, 443)
    off = ansible.settings(balancer_tls=False, balancer_tls_redirect=True)
    assert (off["tls"], off["tls_redirect"], off["tls_certificate_sha256"]) == (False, False, "")
