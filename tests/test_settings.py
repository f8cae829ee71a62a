"""Configuration loading: defaults, environment overrides, every error with its place."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamapp.settings import DEFAULT_HISTORY_TYPES, ConfigError, load_settings

SHA = "a" * 64


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "streamapp.toml"
    path.write_text(text, encoding="utf-8")
    return path


def issues_of(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ or {})
    return [f"{i.place}: {i.message}" for i in info.value.issues]


def test_minimal_file_gets_defaults(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "[service]\n"), {})
    assert settings.service.broker == "kafka://127.0.0.1:9092"
    assert settings.service.partitions == 8
    assert settings.service.data_dir == (tmp_path / "../var").resolve()
    assert settings.history_types == DEFAULT_HISTORY_TYPES
    assert len(DEFAULT_HISTORY_TYPES) == 10
    assert settings.smtp is None


def test_environment_overrides_win(tmp_path: Path) -> None:
    path = write(tmp_path, '[service]\nbroker = "kafka://a:1"\nweb_port = 1\n')
    env = {
        "STREAMAPP_BROKER": "kafka://b:2",
        "STREAMAPP_WEB_PORT": "7000",
        "STREAMAPP_DATA_DIR": str(tmp_path / "d"),
        "STREAMAPP_SMTP": "mail.local:2526",
    }
    settings = load_settings(path, env)
    assert settings.service.broker == "kafka://b:2"
    assert settings.service.web_port == 7000
    assert settings.service.data_dir == tmp_path / "d"
    assert settings.smtp is not None and (settings.smtp.host, settings.smtp.port) == ("mail.local", 2526)


def test_every_error_is_reported_with_its_place(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[service]
partitions = 0
timezone = "Mars/Olympus"
colour = "blue"

[[tokens]]
name = "crm"
sha256 = "nothex"
scopes = ["recipients:read", "fly"]
databases = ["nope"]

[[databases]]
name = "members"
[databases.attributes]
score = "integer"
email = "string"

[[databases]]
name = "bad name!"
""",
    )
    found = issues_of(path)
    assert "service.partitions: must be greater than 0" in found
    assert "service.timezone: unknown time zone 'Mars/Olympus'" in found
    assert "service.colour: unknown key" in found
    assert any(f.startswith("tokens[0].sha256: must be the 64 hex digits") for f in found)
    assert any(f.startswith("tokens[0].scopes: unknown scope 'fly'") for f in found)
    assert any(f.startswith("tokens[0].databases: unknown database 'nope'") for f in found)
    assert any(f.startswith("databases[0].attributes.score: unknown type 'integer'") for f in found)
    assert "databases[0].attributes.email: is a recipient field, not an attribute name" in found
    assert any(f.startswith("databases[1].name: must match") for f in found)
    assert len(found) == 9, found


def test_error_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[servcie]\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, {})
    assert str(path) in str(info.value)
    assert "servcie: unknown table" in str(info.value)


def test_wrong_types_and_toml_syntax(tmp_path: Path) -> None:
    found = issues_of(write(tmp_path, '[service]\nweb_port = "80"\npartitions = true\n'))
    assert found == [
        "service.web_port: expected an integer, got a string",
        "service.partitions: expected an integer, got a boolean",
    ]
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[service\n"), {})


def test_history_types_limit_and_duplicates(tmp_path: Path) -> None:
    many = "".join(f'[[history_types]]\nname = "t{i}"\n' for i in range(21))
    assert "history_types: at most 20 history types, got 21" in issues_of(write(tmp_path, many))
    dup = '[[history_types]]\nname = "a"\n[[history_types]]\nname = "a"\n'
    assert "history_types[1].name: history type 'a' is defined twice" in issues_of(write(tmp_path, dup))


def test_triggers_need_database_and_template(tmp_path: Path) -> None:
    text = '[[databases]]\nname = "members"\n[[triggers]]\nname = "welcome"\ndatabase = "other"\n'
    found = issues_of(write(tmp_path, text))
    assert any(f.startswith("triggers[0].database: unknown database 'other'") for f in found)
    assert any(f.startswith("triggers[0].template: template file") and "subject.txt" in f for f in found)


def test_environment_errors_are_named(tmp_path: Path) -> None:
    found = issues_of(write(tmp_path, ""), {"STREAMAPP_WEB_PORT": "x", "STREAMAPP_SMTP": "nohost"})
    assert "STREAMAPP_WEB_PORT: must be an integer" in found
    assert "STREAMAPP_SMTP: must be host:port" in found


def test_shipped_config_is_valid() -> None:
    settings = load_settings(Path(__file__).parents[1] / "config" / "streamapp.toml", {})
    assert "members" in settings.databases


def test_imports_cannot_take_the_send_folders(tmp_path: Path) -> None:
    text = """
[[databases]]
name = "members"
[[imports]]
name = "campaigns"
database = "members"
identity = "id"
[[imports]]
name = "crm"
database = "members"
identity = "id"
watch = "triggers/welcome"
"""
    found = issues_of(write(tmp_path, text))
    assert "imports[0].name: 'campaigns' is reserved for the send folder drop/campaigns/" in found
    assert any(f.startswith("imports[1].watch: drop/triggers/ is reserved") for f in found)


def test_batch_body_limit_is_a_service_setting(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "[service]\nmax_batch_bytes = 5000\n"), {})
    assert settings.service.max_batch_bytes == 5000 and settings.service.max_body_bytes == 16 * 1024 * 1024
    assert issues_of(write(tmp_path, "[service]\nmax_batch_bytes = 0\n"))[0].startswith("service.max_batch_bytes")
