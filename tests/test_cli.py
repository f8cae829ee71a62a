"""The `streamapp` command's own behaviour: check-config and argument errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def streamapp(*args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STREAMAPP_CONFIG": str(config or ROOT / "config" / "streamapp.toml")}
    return subprocess.run(
        [sys.executable, "-m", "streamapp.cli", *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_check_config_accepts_the_shipped_config() -> None:
    run = streamapp("check-config")
    assert run.returncode == 0, run.stderr
    assert "OK (1 database(s), 2 token(s), 2 import(s)" in run.stdout


def test_check_config_lists_every_error_and_fails(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[service]\npartitions = -1\nweb_port = "x"\n[[databases]]\nname = "a b"\n')
    run = streamapp("check-config", config=config)
    assert run.returncode == 1
    lines = run.stderr.splitlines()
    assert f"{config}: service.partitions: must be greater than 0" in lines
    assert f"{config}: service.web_port: expected an integer, got a string" in lines
    assert f"{config}: databases[0].name: must match [A-Za-z0-9_-]{{1,64}}" in lines
    assert lines[-1] == f"3 error(s) in {config}"


def test_worker_refuses_to_start_on_an_invalid_config(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[service]\nbogus = 1\n")
    run = streamapp("worker", config=config)
    assert run.returncode == 2
    assert f"config error: {config}: service.bogus: unknown key" in run.stderr


def test_import_of_an_unknown_schema_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "x.csv"
    data.write_text("a\n")
    run = streamapp("import", str(data), "--import", "nope")
    assert run.returncode == 2
    assert (
        "unknown import 'nope' (configured: crm, shop-purchases, triggers/password-reset, triggers/welcome, campaigns)"
        in run.stderr
    )


TEMPLATE_CONFIG = """
[[databases]]
name = "members"
[databases.attributes]
firstname = "string"

[[triggers]]
name = "reset"
database = "members"
template = "reset"
properties = { link = "string" }
"""


def template_config(tmp_path: Path, body: str) -> Path:
    folder = tmp_path / "templates" / "reset"
    folder.mkdir(parents=True)
    (folder / "subject.txt").write_text("Hi {{ recipient.attributes.firstname | default('friend') }}")
    (folder / "body.html").write_text(body)
    config = tmp_path / "streamapp.toml"
    config.write_text(TEMPLATE_CONFIG)
    return config


def test_check_config_passes_templates_that_use_declared_names(tmp_path: Path) -> None:
    config = template_config(tmp_path, '<a href="{{ properties.link }}">{{ recipient.attributes.firstname }}</a>')
    run = streamapp("check-config", config=config)
    assert run.returncode == 0, run.stderr
    assert "OK (1 database(s)" in run.stdout


def test_check_config_names_file_line_and_name_of_every_unknown_name_in_a_template(tmp_path: Path) -> None:
    body = "<p>{{ recipient.attributes.frstname }}</p>\n<a href='{{ properties.lnk }}'>\n{{ firstname }}</a>\n"
    config = template_config(tmp_path, body)
    run = streamapp("check-config", config=config)
    assert run.returncode == 1
    file = (tmp_path / "templates" / "reset" / "body.html").resolve()
    assert run.stderr.splitlines() == [
        f"{file}: line 1: attribute 'frstname' is not declared by database 'members' (used by trigger 'reset')",
        f"{file}: line 2: property 'lnk' is not declared by trigger 'reset' (declared: link)",
        f"{file}: line 3: unknown variable 'firstname' (known: history, message, properties, recipient)",
        f"3 error(s) in {config}",
    ]


def test_worker_refuses_to_start_on_a_template_with_an_unknown_name(tmp_path: Path) -> None:
    config = template_config(tmp_path, "<p>\n{{ recipient.attributes.frstname }}</p>")
    run = streamapp("worker", config=config)
    assert run.returncode == 2
    file = (tmp_path / "templates" / "reset" / "body.html").resolve()
    assert f"config error: {file}: line 2: attribute 'frstname' is not declared by database 'members'" in run.stderr


def test_dkim_keygen_writes_a_private_key_and_prints_its_entry_and_dns_record(tmp_path: Path) -> None:
    from streamapp.mail.dkim import load_private_key, txt_record

    run = streamapp("dkim", "keygen", "--domain", "Example.COM", "--selector", "s2026", "--algorithm", "ed25519",
                    "--out-dir", str(tmp_path))  # fmt: skip
    assert run.returncode == 0, run.stderr
    pem = tmp_path / "example.com.s2026.pem"
    assert pem.stat().st_mode & 0o777 == 0o600
    assert f'[[dkim]]\ndomain = "example.com"\nselector = "s2026"\nprivate_key = "{pem}"' in run.stdout
    assert "s2026._domainkey.example.com. 3600 IN TXT (" in run.stdout
    assert txt_record(load_private_key(pem)) in run.stdout  # the record publishes this very key
    again = streamapp("dkim", "keygen", "--domain", "example.com", "--selector", "s2026", "--out-dir", str(tmp_path))
    assert again.returncode == 2 and "already exists" in again.stderr
