"""docker-compose.yml, the image and the production configuration they run.

The compose file is validated against the Compose Specification's JSON schema
(vendored in deploy/compose/compose-spec.json, see deploy/compose/README.md),
then checked for what the schema cannot know: the Kafka version of
deploy/kafka/pom.xml, one drop folder and one set of secrets for both
workers, Mailpit as their SMTP relay, rule files that resolve inside the
Prometheus container, healthchecks. The production configuration
(config/production.toml) has the development configuration's databases,
imports, triggers and campaigns and none of its tokens, and passes
`streamapp check-config` as the image runs it, with mounted secrets.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import pytest
import yaml

from streamapp.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
SCHEMA = ROOT / "deploy" / "compose" / "compose-spec.json"
INIT_SECRETS = ROOT / "deploy" / "compose" / "init-secrets.sh"
DEV_CONFIG = ROOT / "config" / "streamapp.toml"
PRODUCTION_CONFIG = ROOT / "config" / "production.toml"
PROMETHEUS_CONFIG = ROOT / "config" / "prometheus.yml"
WORKERS = ("worker1", "worker2")
DATA_DIR = "/var/lib/streamapp"
#: The drop folder and its claims, one volume shared by the workers (config/production.toml drop_dir).
SHARED = "/srv/streamapp"

# The documented development tokens of config/streamapp.toml (SPEC §13).
DEV_DIGESTS = {
    "c91cbbedf8c712e8e2b7517ddeca8fe4fde839ebd8339e0b2001363002b37712",
    "a91e970ba6ba154be9a86febe073a511fc3bbd3c069dfb7d9a10e1acddb2bc8d",
}

_DEFAULTED = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::?-(?P<default>[^}]*))?\}")


def _defaults(value: str) -> str:
    """`${VAR:-default}` as compose reads it with VAR unset."""
    return _DEFAULTED.sub(lambda m: m.group("default") or "", value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return data


def _service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    service: dict[str, Any] = compose["services"][name]
    return service


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> source (host path or volume name) of the short-syntax volumes."""
    mounts: dict[str, str] = {}
    for entry in service.get("volumes", []):
        source, target, *_ = entry.split(":")
        mounts[target] = source
    return mounts


def _environment(service: dict[str, Any]) -> dict[str, str]:
    return {key: _defaults(str(value)) for key, value in service["environment"].items()}


# -- the schema ---------------------------------------------------------------


def test_compose_file_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors)


# -- what the schema cannot check -----------------------------------------------


def test_kafka_image_is_the_broker_version_of_the_pom(compose: dict[str, Any]) -> None:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    version = (
        ET.parse(ROOT / "deploy" / "kafka" / "pom.xml").getroot().findtext("m:properties/m:kafka.version", None, ns)
    )
    assert version, "no kafka.version in deploy/kafka/pom.xml"
    assert _defaults(_service(compose, "kafka")["image"]) == f"apache/kafka:{version}"


def test_workers_run_the_production_configuration_with_mailpit(compose: dict[str, Any]) -> None:
    assert _defaults(_service(compose, "mailpit")["image"]).startswith("axllent/mailpit:")
    for name in WORKERS:
        env = _environment(_service(compose, name))
        assert env["STREAMAPP_CONFIG"] == "/app/config/production.toml", name
        assert env["STREAMAPP_SMTP"] == "mailpit:1025", name
        assert env["STREAMAPP_DATA_DIR"] == DATA_DIR, name
        assert "mailpit" in _service(compose, name)["depends_on"], name


def test_workers_share_one_drop_folder_and_keep_their_own_data(compose: dict[str, Any]) -> None:
    mounts = {name: _mounts(_service(compose, name)) for name in WORKERS}
    shared = {m[SHARED] for m in mounts.values()}
    assert len(shared) == 1 and shared <= set(compose["volumes"]), f"one named volume at {SHARED}: {shared}"
    data = [m[DATA_DIR] for m in mounts.values()]
    assert len(set(data)) == len(WORKERS), f"each worker needs its own data volume: {data}"
    urls = {_environment(_service(compose, name))["STREAMAPP_ADVERTISED_URL"] for name in WORKERS}
    assert urls == {f"http://{name}:6066" for name in WORKERS}


def test_workers_mount_the_same_secrets(compose: dict[str, Any]) -> None:
    secrets = compose["secrets"]
    for name in WORKERS:
        service = _service(compose, name)
        assert sorted(service["secrets"]) == sorted(secrets), name
        env = _environment(service)
        assert env["STREAMAPP_TOKENS_FILE"] == "/run/secrets/streamapp_tokens"
        assert env["STREAMAPP_SECRET_FILE"] == "/run/secrets/streamapp_keys"
    files = {_defaults(secret["file"]) for secret in secrets.values()}
    assert files == {"./secrets/tokens.toml", "./secrets/streamapp.keys"}, (
        "the files deploy/compose/init-secrets.sh writes"
    )


def test_bind_mounted_files_exist(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for source in _mounts(service).values():
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name}: {source} does not exist"


def test_prometheus_finds_its_rule_files_and_alertmanager(compose: dict[str, Any]) -> None:
    service = _service(compose, "prometheus")
    mounts = _mounts(service)
    config_file = next(arg.split("=", 1)[1] for arg in service["command"] if arg.startswith("--config.file="))
    assert mounts[config_file] == "./config/prometheus.yml"
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    for rule_file in config["rule_files"]:
        in_container = PurePosixPath(config_file).parent / rule_file  # relative to the config's folder
        host = next(
            (
                ROOT / source / in_container.relative_to(target)
                for target, source in mounts.items()
                if in_container.is_relative_to(target) and source.startswith(".")
            ),
            None,
        )
        assert host is not None and host.is_file(), f"{rule_file}: {in_container} is not mounted from the repository"
        assert host.resolve() == (PROMETHEUS_CONFIG.parent / rule_file).resolve()
    targets = [
        t for manager in config["alerting"]["alertmanagers"] for s in manager["static_configs"] for t in s["targets"]
    ]
    for target in targets:
        host, _, port = target.partition(":")
        assert host in compose["services"], f"alertmanager target {target} is not a compose service"
        assert port == "9093"
    alertmanager = _service(compose, "alertmanager")
    assert "./config/prometheus/alertmanager.yml" in _mounts(alertmanager).values()


def test_every_service_has_a_healthcheck(compose: dict[str, Any]) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^HEALTHCHECK ", dockerfile, re.MULTILINE), "the workers' healthcheck is the image's"
    for name, service in compose["services"].items():
        if name not in WORKERS:
            assert service.get("healthcheck", {}).get("test"), f"{name}: no healthcheck"
        for dependency, condition in (service.get("depends_on") or {}).items():
            if condition.get("condition") == "service_healthy":
                assert dependency in WORKERS or "healthcheck" in _service(compose, dependency), (name, dependency)


# -- the image ------------------------------------------------------------------


def test_image_runs_the_production_configuration() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "STREAMAPP_CONFIG=/app/config/production.toml" in dockerfile
    assert 'ENTRYPOINT ["tini", "--", "streamapp"]' in dockerfile
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    for pattern in ("config/streamapp.toml", "config/secrets", "secrets", "deploy"):
        assert pattern in ignored, f".dockerignore lacks {pattern}"


# -- the production configuration ---------------------------------------------


def _toml(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text(encoding="utf-8"))


def test_production_configuration_has_no_tokens_and_the_dev_schemas() -> None:
    production, dev = _toml(PRODUCTION_CONFIG), _toml(DEV_CONFIG)
    assert "tokens" not in production, "tokens come from STREAMAPP_TOKENS_FILE"
    text = PRODUCTION_CONFIG.read_text(encoding="utf-8").lower()
    assert not [digest for digest in DEV_DIGESTS if digest in text]
    for table in ("databases", "history_types", "imports", "triggers", "campaigns"):
        assert production.get(table) == dev.get(table), f"[{table}] differs from {DEV_CONFIG.name}"
    assert production["service"]["web_host"] == "0.0.0.0"
    assert production["service"]["public_url"].startswith("https://")


def _image_streamapp(tmp_path: Path, config: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`streamapp ARGS` in the image's environment (the Dockerfile's ENV; compose adds the secrets)."""
    environ = {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(tmp_path),
        "STREAMAPP_CONFIG": str(config),
        "STREAMAPP_DATA_DIR": str(tmp_path / "data"),
        "STREAMAPP_WEB_HOST": "0.0.0.0",
        **env,
    }
    return subprocess.run(["streamapp", *args], cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=60)


def _init_secrets(tmp_path: Path) -> tuple[Path, str]:
    secrets = tmp_path / "secrets"
    made = subprocess.run(["sh", str(INIT_SECRETS), str(secrets)], capture_output=True, text=True, timeout=30)
    assert made.returncode == 0, made.stderr
    return secrets, made.stdout.strip().splitlines()[-1].strip()


def test_the_image_reads_the_mounted_tokens_and_shared_keys(tmp_path: Path) -> None:
    secrets, token = _init_secrets(tmp_path)
    tokens = _toml(secrets / "tokens.toml")["tokens"]
    assert [t["sha256"] for t in tokens] == [hashlib.sha256(token.encode()).hexdigest()]
    again = subprocess.run(["sh", str(INIT_SECRETS), str(secrets)], capture_output=True, text=True, timeout=30)
    assert again.returncode == 0 and again.stdout == "", "a second run changes nothing"

    env = {
        "STREAMAPP_TOKENS_FILE": str(secrets / "tokens.toml"),
        "STREAMAPP_SECRET_FILE": str(secrets / "streamapp.keys"),
        "STREAMAPP_SMTP": "mailpit:1025",
    }
    done = _image_streamapp(tmp_path, PRODUCTION_CONFIG, "check-config", **env)
    assert done.returncode == 0, done.stdout + done.stderr
    counts = "1 database(s), 1 token(s), 2 import(s), 2 trigger(s), 1 campaign(s), 0 journey(s)"
    assert f"OK ({counts})" in done.stdout, done.stdout
    settings = load_settings(PRODUCTION_CONFIG, {**env, "STREAMAPP_DATA_DIR": str(tmp_path / "data")})
    assert settings.service.keys is not None
    assert settings.service.keys.signing == bytes.fromhex((secrets / "streamapp.keys").read_text().strip())
    assert not (tmp_path / "data").exists(), "no per-worker key is created"


def test_the_image_refuses_development_secrets_off_loopback(tmp_path: Path) -> None:
    secrets, _ = _init_secrets(tmp_path)
    keys = {"STREAMAPP_SECRET_FILE": str(secrets / "streamapp.keys")}
    refused = _image_streamapp(tmp_path, DEV_CONFIG, "check-config")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "tokens[0].sha256: the documented development token 'dev-token' only works on a loopback" in refused.stderr
    assert "dev.keys: line " in refused.stderr and "development key" in refused.stderr
    dev_tokens = tmp_path / "tokens.toml"
    dev_tokens.write_text(f'[[tokens]]\nname = "dev"\nsha256 = "{min(DEV_DIGESTS)}"\nscopes = ["admin"]\n')
    smuggled = _image_streamapp(
        tmp_path, PRODUCTION_CONFIG, "check-config", STREAMAPP_TOKENS_FILE=str(dev_tokens), **keys
    )
    assert smuggled.returncode == 1, smuggled.stdout + smuggled.stderr
    assert f"{dev_tokens}: tokens[0].sha256: the documented development token" in smuggled.stderr
    keyless = _image_streamapp(tmp_path, PRODUCTION_CONFIG, "check-config")
    assert keyless.returncode == 1 and "service.secret_file: required" in keyless.stderr, keyless.stderr
    loopback = _image_streamapp(tmp_path, DEV_CONFIG, "check-config", STREAMAPP_WEB_HOST="127.0.0.1")
    assert loopback.returncode == 0, loopback.stdout + loopback.stderr
