"""Configuration loading: defaults, environment overrides, every error with its place."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from streamapp.devtools.broker_tls import ensure_tls
from streamapp.settings import DEFAULT_HISTORY_TYPES, DEVELOPMENT_KEY, ConfigError, KafkaSecurity, load_settings

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
    many = "".join(f'[[history_types]]\nname = "t{i}"\n' for i in range(11))
    assert (
        "history_types: at most 20 history types in all, the 10 defaults included: 11 added make 21 (add at most 10)"
    ) in issues_of(write(tmp_path, many))
    dup = '[[history_types]]\nname = "a"\n[[history_types]]\nname = "a"\n'
    assert "history_types[1].name: history type 'a' is defined twice" in issues_of(write(tmp_path, dup))


def test_history_types_add_to_the_ten_defaults(tmp_path: Path) -> None:
    """SPEC §3: `[[history_types]]` adds to the defaults (listing one of them, as SPEC §2 does, is allowed)."""
    ten = "".join(f'[[history_types]]\nname = "t{i}"\n' for i in range(10))
    settings = load_settings(write(tmp_path, f'[[history_types]]\nname = "purchase"\n{ten}'), {})
    assert settings.history_types == DEFAULT_HISTORY_TYPES + tuple(f"t{i}" for i in range(10))
    assert DEFAULT_HISTORY_TYPES == (
        "purchase", "return", "visit", "view", "cart", "signup", "login", "download", "form", "custom"
    )  # fmt: skip


def test_engagement_types_are_reserved_in_the_configuration(tmp_path: Path) -> None:
    text = (
        '[[history_types]]\nname = "mail.sent"\n[[databases]]\nname = "members"\n'
        '[[imports]]\nname = "h"\ndatabase = "members"\nkind = "history"\nhistory_type = "mail.opened"\n'
    )
    path = write(tmp_path, text)
    reserved = "is reserved: streamapp records the mail.* engagement types itself"
    assert issues_of(path) == [f"history_types[0].name: 'mail.sent' {reserved}",
                               f"imports[0].history_type: 'mail.opened' {reserved}"]  # fmt: skip
    with pytest.raises(ConfigError) as info:
        load_settings(path, {})
    assert str(path) in str(info.value)  # the file is named with the key


def test_triggers_need_database_and_template(tmp_path: Path) -> None:
    text = '[[databases]]\nname = "members"\n[[triggers]]\nname = "welcome"\ndatabase = "other"\n'
    found = issues_of(write(tmp_path, text))
    assert any(f.startswith("triggers[0].database: unknown database 'other'") for f in found)
    assert any(f.startswith("triggers[0].template: template file") and "subject.txt" in f for f in found)


def _trigger_config(tmp_path: Path, properties: str) -> Path:
    folder = tmp_path / "templates" / "welcome"
    folder.mkdir(parents=True)
    (folder / "subject.txt").write_text("Hi", encoding="utf-8")
    (folder / "body.html").write_text("<p>Hi</p>", encoding="utf-8")
    text = '[[databases]]\nname = "members"\n[[triggers]]\nname = "welcome"\ndatabase = "members"\n'
    return write(tmp_path, text + properties)


def test_triggers_declare_typed_properties_required_or_optional(tmp_path: Path) -> None:
    settings = load_settings(_trigger_config(tmp_path, 'properties = { code = "string", amount = "float?" }\n'), {})
    declared = settings.triggers["welcome"].properties
    assert declared is not None
    assert (declared["code"].type, declared["code"].required) == ("string", True)
    assert (declared["amount"].type, declared["amount"].required) == ("float", False)


def test_undeclared_properties_stay_open(tmp_path: Path) -> None:
    assert load_settings(_trigger_config(tmp_path, ""), {}).triggers["welcome"].properties is None


def test_bad_property_declarations_are_named(tmp_path: Path) -> None:
    found = issues_of(_trigger_config(tmp_path, 'properties = { code = "text", "a-b" = "int", n = 3 }\n'))
    assert any(f.startswith("triggers[0].properties.code: expected one of string, int") for f in found)
    assert any(f.startswith("triggers[0].properties.a-b: a property name must be an identifier") for f in found)
    assert any(f.startswith("triggers[0].properties.n: expected one of") for f in found)


def test_retention_defaults_to_90_days_and_is_at_least_a_day(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, "[service]\n"), {}).service.retention == timedelta(days=90)
    assert load_settings(write(tmp_path, '[service]\nretention = "P7D"\n'), {}).service.retention == timedelta(days=7)
    found = issues_of(write(tmp_path, '[service]\nretention = "PT1H"\n'))
    assert any(f.startswith("service.retention:") for f in found)
    found = issues_of(write(tmp_path, '[service]\nretention = "90 days"\n'))
    assert any(f.startswith("service.retention:") for f in found)


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


# -- security defaults (SPEC §13) ----------------------------------------------------------------

DEV_TOKEN = "c91cbbedf8c712e8e2b7517ddeca8fe4fde839ebd8339e0b2001363002b37712"  # sha256("dev-token")
KEY_A, KEY_B = "a1" * 32, "b2" * 40
NOT_LOOPBACK = ["0.0.0.0", "::", "", "10.1.2.3", "192.168.0.7", "2001:db8::1", "stream-a.internal", "::ffff:127.0.0.1"]
LOOPBACK = ["127.0.0.1", "127.1.2.3", "::1", "localhost", "LocalHost."]


def keys_file(tmp_path: Path, *lines: str, name: str = "streamapp.keys") -> Path:
    path = tmp_path / name
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def service(web_host: str, *lines: str) -> str:
    return f'[service]\nweb_host = "{web_host}"\n' + "".join(f"{line}\n" for line in lines)


def dev_token(name: str = "dev") -> str:
    return f'[[tokens]]\nname = "{name}"\nsha256 = "{DEV_TOKEN}"\nscopes = ["admin"]\n'


@pytest.mark.parametrize("web_host", NOT_LOOPBACK)
def test_development_tokens_refuse_a_web_host_off_loopback(tmp_path: Path, web_host: str) -> None:
    keys = keys_file(tmp_path, KEY_A)
    found = issues_of(write(tmp_path, service(web_host, f'secret_file = "{keys}"') + dev_token()))
    assert found == [
        "tokens[0].sha256: the documented development token 'dev-token' only works on a loopback web_host "
        f"(service.web_host is {web_host!r})"
    ]


@pytest.mark.parametrize("web_host", LOOPBACK)
def test_development_tokens_and_key_work_on_loopback(tmp_path: Path, web_host: str) -> None:
    shipped = Path(__file__).parents[1] / "config" / "secrets" / "dev.keys"
    settings = load_settings(write(tmp_path, service(web_host, f'secret_file = "{shipped}"') + dev_token()), {})
    assert [t.sha256 for t in settings.tokens] == [DEV_TOKEN]
    assert settings.service.keys is not None and settings.service.keys.signing == DEVELOPMENT_KEY


def test_the_shipped_development_config_refuses_to_listen_on_every_interface() -> None:
    shipped = Path(__file__).parents[1] / "config"
    with pytest.raises(ConfigError) as info:
        load_settings(shipped / "streamapp.toml", {"STREAMAPP_WEB_HOST": "0.0.0.0"})
    found = [str(issue) for issue in info.value.issues]
    note = "(service.web_host is '0.0.0.0', set by STREAMAPP_WEB_HOST)"
    assert found == [
        f"{shipped / 'secrets' / 'dev.keys'}: line 10: the documented development key only works on loopback {note}",
        f"{shipped / 'streamapp.toml'}: tokens[0].sha256: the documented development token 'dev-token' only works "
        f"on a loopback web_host {note}",
        f"{shipped / 'streamapp.toml'}: tokens[1].sha256: the documented development token 'dev-readonly-token' "
        f"only works on a loopback web_host {note}",
    ]


def test_off_loopback_a_shared_secret_file_is_required(tmp_path: Path) -> None:
    assert issues_of(write(tmp_path, service("0.0.0.0"))) == [
        "service.secret_file: required when the API is not on loopback (service.web_host is '0.0.0.0'): "
        "every worker must use the same keys"
    ]
    assert load_settings(write(tmp_path, service("127.0.0.1")), {}).service.keys is None  # the per-data-dir key


def test_secret_file_keys_first_signs_all_verify(tmp_path: Path) -> None:
    path = keys_file(tmp_path, "# rotated 2026-06-01", "", f"  {KEY_B.upper()}  ", "# the previous key:", KEY_A)
    (tmp_path / "conf").mkdir()
    config = write(tmp_path / "conf", service("0.0.0.0", 'secret_file = "../streamapp.keys"'))
    settings = load_settings(config, {})
    assert settings.service.secret_file == path
    keys = settings.service.keys
    assert keys is not None
    assert keys.signing == bytes.fromhex(KEY_B) and keys.verifying == (bytes.fromhex(KEY_B), bytes.fromhex(KEY_A))
    assert KEY_A not in repr(settings) and "a1a1" not in repr(settings) and repr(keys) == "KeyRing(<2 key(s)>)"


def test_secret_file_errors_name_the_file_and_line_never_the_key(tmp_path: Path) -> None:
    short, not_hex = "ab" * 31, "zz" * 40
    path = keys_file(tmp_path, "# keys", short, KEY_A, not_hex, "ab" * 32 + "a")
    config = write(tmp_path, service("0.0.0.0", f'secret_file = "{path}"'))
    with pytest.raises(ConfigError) as info:
        load_settings(config, {})
    problem = "must be a key of at least 32 bytes in hex (`openssl rand -hex 32` makes one)"
    assert [str(i) for i in info.value.issues] == [f"{path}: line {n}: {problem}" for n in (2, 4, 5)]
    assert short not in str(info.value) and not_hex not in str(info.value)


def test_secret_file_that_is_missing_or_empty(tmp_path: Path) -> None:
    missing = tmp_path / "nope.keys"
    found = issues_of(write(tmp_path, service("0.0.0.0", f'secret_file = "{missing}"')))
    assert found == [f"service.secret_file: cannot read the key file {missing}: No such file or directory"]
    empty = keys_file(tmp_path, "# no key yet", "")
    found = issues_of(write(tmp_path, service("127.0.0.1", f'secret_file = "{empty}"')))
    assert found == [
        f"service.secret_file: the key file {empty} holds no key (one per line, in hex: `openssl rand -hex 32`)"
    ]


def test_a_raw_binary_key_file_is_refused_without_showing_it(tmp_path: Path) -> None:
    raw = tmp_path / "unsubscribe.key"
    raw.write_bytes(b"\xff\xfe" + b"\x00" * 30)  # what load_or_create_secret writes: 32 random bytes
    found = issues_of(write(tmp_path, service("0.0.0.0", f'secret_file = "{raw}"')))
    assert found == [f"service.secret_file: the key file {raw} is not text: write each key in hex, one per line"]


def test_secret_file_from_the_environment_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "gone.keys"
    found = issues_of(write(tmp_path, service("0.0.0.0")), {"STREAMAPP_SECRET_FILE": str(missing)})
    assert found == [
        f"service.secret_file: cannot read the key file {missing}: No such file or directory (set by STREAMAPP_SECRET_FILE)"
    ]
    keys_file(tmp_path, KEY_A)
    settings = load_settings(
        write(tmp_path, service("0.0.0.0")), {"STREAMAPP_SECRET_FILE": str(tmp_path / "streamapp.keys")}
    )
    assert settings.service.keys is not None and settings.service.keys.signing == bytes.fromhex(KEY_A)


def test_the_development_key_is_refused_off_loopback_wherever_it_is(tmp_path: Path) -> None:
    path = keys_file(tmp_path, KEY_A, DEVELOPMENT_KEY.hex())
    found = issues_of(write(tmp_path, service("10.0.0.5", f'secret_file = "{path}"')))
    assert found == ["line 2: the documented development key only works on loopback (service.web_host is '10.0.0.5')"]


def tokens_table(name: str, digest: str, scopes: str = '["send"]') -> str:
    return f'[[tokens]]\nname = "{name}"\nsha256 = "{digest}"\nscopes = {scopes}\n'


def test_tokens_file_adds_tokens_from_beside_the_config_or_the_environment(tmp_path: Path) -> None:
    (tmp_path / "tokens.toml").write_text(tokens_table("crm", "b" * 64) + tokens_table("shop", "c" * 64))
    config = write(tmp_path, service("127.0.0.1", 'tokens_file = "tokens.toml"') + tokens_table("ops", SHA))
    settings = load_settings(config, {})
    assert [t.name for t in settings.tokens] == ["ops", "crm", "shop"]
    assert settings.service.tokens_file == tmp_path / "tokens.toml"
    other = tmp_path / "other.toml"
    other.write_text(tokens_table("erp", "d" * 64))
    assert [t.name for t in load_settings(config, {"STREAMAPP_TOKENS_FILE": str(other)}).tokens] == ["ops", "erp"]


def test_tokens_file_errors_name_that_file(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(tokens_table("crm", "nothex", '["fly"]') + '[service]\nweb_host = "0.0.0.0"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, service("127.0.0.1", f'tokens_file = "{tokens}"')), {})
    found = [str(i) for i in info.value.issues]
    assert f"{tokens}: service: unknown table (a tokens file holds [[tokens]] only)" in found
    assert any(f.startswith(f"{tokens}: tokens[0].scopes: unknown scope 'fly'") for f in found)
    assert any(f.startswith(f"{tokens}: tokens[0].sha256: must be the 64 hex digits") for f in found)
    assert len(found) == 3, found
    missing = tmp_path / "missing.toml"
    found = issues_of(write(tmp_path, "[service]\n"), {"STREAMAPP_TOKENS_FILE": str(missing)})
    assert found == [
        f"service.tokens_file: cannot read the tokens file {missing}: No such file or directory "
        "(set by STREAMAPP_TOKENS_FILE)"
    ]


def test_a_development_token_smuggled_in_a_tokens_file_is_refused(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(dev_token())
    keys = keys_file(tmp_path, KEY_A)
    config = write(tmp_path, service("127.0.0.1", f'secret_file = "{keys}"', f'tokens_file = "{tokens}"'))
    with pytest.raises(ConfigError) as info:
        load_settings(config, {"STREAMAPP_WEB_HOST": "0.0.0.0"})
    assert [str(i) for i in info.value.issues] == [
        f"{tokens}: tokens[0].sha256: the documented development token 'dev-token' only works on a loopback "
        "web_host (service.web_host is '0.0.0.0', set by STREAMAPP_WEB_HOST)"
    ]


def test_token_names_and_digests_are_unique_across_files(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(tokens_table("crm", "c" * 64) + tokens_table("shop", SHA))
    text = service("127.0.0.1", f'tokens_file = "{tokens}"') + tokens_table("crm", SHA) + tokens_table("crm", "b" * 64)
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text), {})
    config = tmp_path / "streamapp.toml"
    assert [str(i) for i in info.value.issues] == [
        f"{config}: tokens[1].name: token name 'crm' is already used by tokens[0]",
        f"{tokens}: tokens[0].name: token name 'crm' is already used by tokens[0] in {config}",
        f"{tokens}: tokens[1].sha256: the same token as tokens[0] in {config}: give each client a token of its own",
    ]


def test_smtp_credentials_need_starttls(tmp_path: Path) -> None:
    smtp = '[smtp]\nhost = "relay"\nusername = "u"\npassword = "p"\n'
    assert issues_of(write(tmp_path, smtp)) == [
        "smtp.starttls: must be true when username/password are set: credentials are only sent over TLS"
    ]
    assert issues_of(write(tmp_path, smtp + "starttls = false\n"))[0].startswith("smtp.starttls: must be true")
    settings = load_settings(write(tmp_path, smtp + "starttls = true\n"), {})
    assert settings.smtp is not None and settings.smtp.starttls and settings.smtp.username == "u"
    assert issues_of(write(tmp_path, '[smtp]\nusername = "u"\nstarttls = true\n')) == [
        "smtp.password: required with smtp.username"
    ]
    assert (
        load_settings(write(tmp_path, '[smtp]\nhost = "relay"\n'), {}).smtp is not None
    )  # no credentials: no TLS needed


def test_smtp_pipelining_is_on_unless_switched_off(tmp_path: Path) -> None:
    on = load_settings(write(tmp_path, '[smtp]\nhost = "relay"\n'), {}).smtp
    off = load_settings(write(tmp_path, '[smtp]\nhost = "relay"\npipelining = false\n'), {}).smtp
    assert on is not None and on.pipelining and off is not None and not off.pipelining
    assert issues_of(write(tmp_path, '[smtp]\npipelining = "no"\n')) == [
        "smtp.pipelining: expected true or false, got a string"
    ]


# -- Kafka TLS and SASL ([service] kafka_*) ---------------------------------------------------------


def kafka_service(tmp_path: Path, *lines: str, broker: str = "kafka://kafka-1.internal:9093") -> Path:
    return write(tmp_path, f'[service]\nbroker = "{broker}"\n' + "".join(f"{line}\n" for line in lines))


def password_file(tmp_path: Path, text: str = "s3cret-pass\n", name: str = "kafka.password") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


SASL_SSL = ('kafka_security_protocol = "SASL_SSL"', 'kafka_username = "streamapp"')


def test_kafka_is_plaintext_by_default(tmp_path: Path) -> None:
    kafka = load_settings(kafka_service(tmp_path), {}).service.kafka
    assert kafka == KafkaSecurity() and not kafka.tls and not kafka.sasl


def test_kafka_sasl_ssl_reads_the_password_from_a_file_beside_the_config(tmp_path: Path) -> None:
    password_file(tmp_path)
    config = kafka_service(tmp_path, *SASL_SSL, 'kafka_password_file = "kafka.password"')
    settings = load_settings(config, {})
    kafka = settings.service.kafka
    assert (kafka.protocol, kafka.sasl_mechanism, kafka.username) == ("SASL_SSL", "SCRAM-SHA-512", "streamapp")
    assert kafka.password == "s3cret-pass" and kafka.password_file == tmp_path / "kafka.password"
    assert kafka.tls and kafka.sasl and kafka.check_hostname and kafka.ca_file is None  # the system CAs
    assert "s3cret" not in repr(settings)
    other = password_file(tmp_path, "from-the-environment\r\n", name="other.password")
    kafka = load_settings(config, {"STREAMAPP_KAFKA_PASSWORD_FILE": str(other)}).service.kafka
    assert kafka.password == "from-the-environment" and kafka.password_file == other


def test_kafka_sasl_needs_a_user_and_a_readable_non_empty_password_file(tmp_path: Path) -> None:
    assert issues_of(kafka_service(tmp_path, 'kafka_security_protocol = "SASL_SSL"')) == [
        "service.kafka_username: required with kafka_security_protocol 'SASL_SSL'",
        "service.kafka_password_file: required with kafka_security_protocol 'SASL_SSL' (the password, in a file)",
    ]
    missing = tmp_path / "missing.password"
    assert issues_of(kafka_service(tmp_path, *SASL_SSL), {"STREAMAPP_KAFKA_PASSWORD_FILE": str(missing)}) == [
        f"service.kafka_password_file: cannot read the password file {missing}: No such file or directory "
        "(set by STREAMAPP_KAFKA_PASSWORD_FILE)"
    ]
    empty = password_file(tmp_path, "\n")
    assert issues_of(kafka_service(tmp_path, *SASL_SSL, f'kafka_password_file = "{empty}"')) == [
        f"service.kafka_password_file: the password file {empty} is empty"
    ]


def test_kafka_credentials_only_travel_over_tls_off_loopback(tmp_path: Path) -> None:
    secret = password_file(tmp_path)
    plain_sasl = (
        'kafka_security_protocol = "SASL_PLAINTEXT"',
        'kafka_username = "u"',
        f'kafka_password_file = "{secret}"',
    )
    assert issues_of(kafka_service(tmp_path, *plain_sasl, broker="127.0.0.1:9092,kafka-2.internal:9092")) == [
        "service.kafka_security_protocol: must be 'SASL_SSL' for a broker off loopback (kafka-2.internal): "
        "credentials only go over TLS"
    ]
    config = kafka_service(tmp_path, *plain_sasl, broker="kafka://localhost:9092")
    assert load_settings(config, {}).service.kafka.protocol == "SASL_PLAINTEXT"  # SCRAM to a loopback broker
    assert issues_of(config, {"STREAMAPP_BROKER": "kafka://10.0.0.5:9092"}) == [
        "service.kafka_security_protocol: must be 'SASL_SSL' for a broker off loopback "
        "(10.0.0.5, set by STREAMAPP_BROKER): credentials only go over TLS"
    ]
    plain = kafka_service(tmp_path, *plain_sasl, 'kafka_sasl_mechanism = "PLAIN"', broker="127.0.0.1:9092")
    assert issues_of(plain) == [
        "service.kafka_security_protocol: must be 'SASL_SSL' with kafka_sasl_mechanism 'PLAIN': "
        "PLAIN sends the password as it is"
    ]
    tls_plain = kafka_service(
        tmp_path, *SASL_SSL, f'kafka_password_file = "{secret}"', 'kafka_sasl_mechanism = "PLAIN"'
    )
    assert load_settings(tls_plain, {}).service.kafka.sasl_mechanism == "PLAIN"


def test_kafka_keys_the_protocol_would_ignore_are_errors(tmp_path: Path) -> None:
    secret = password_file(tmp_path)
    assert issues_of(kafka_service(tmp_path, 'kafka_username = "u"', 'kafka_ca_file = "ca.pem"')) == [
        "service.kafka_username: only used with kafka_security_protocol SASL_PLAINTEXT or SASL_SSL, not 'PLAINTEXT'",
        "service.kafka_ca_file: only used with kafka_security_protocol SSL or SASL_SSL, not 'PLAINTEXT'",
    ]
    config = kafka_service(
        tmp_path,
        'kafka_security_protocol = "SASL_PLAINTEXT"',
        'kafka_username = "u"',
        f'kafka_password_file = "{secret}"',
        "kafka_check_hostname = false",
        broker="127.0.0.1:9092",
    )
    assert issues_of(config) == [
        "service.kafka_check_hostname: only used with kafka_security_protocol SSL or SASL_SSL, not 'SASL_PLAINTEXT'"
    ]
    assert issues_of(kafka_service(tmp_path, 'kafka_security_protocol = "TLS"', 'kafka_sasl_mechanism = "MD5"')) == [
        "service.kafka_security_protocol: must be one of 'PLAINTEXT', 'SSL', 'SASL_PLAINTEXT', 'SASL_SSL'",
        "service.kafka_sasl_mechanism: must be one of 'SCRAM-SHA-512', 'SCRAM-SHA-256', 'PLAIN'",
        "service.kafka_sasl_mechanism: only used with kafka_security_protocol SASL_PLAINTEXT or SASL_SSL, not 'TLS'",
    ]


def test_kafka_tls_files_are_loaded_at_check_time(tmp_path: Path) -> None:
    tls = ensure_tls(tmp_path / "tls", "127.0.0.1")
    cert, key = tmp_path / "tls" / "broker.pem", tmp_path / "tls" / "broker.key"
    ssl_lines = ('kafka_security_protocol = "SSL"', f'kafka_ca_file = "{tls.ca_file}"')
    kafka = load_settings(
        kafka_service(tmp_path, *ssl_lines, f'kafka_cert_file = "{cert}"', f'kafka_key_file = "{key}"'), {}
    )
    assert (kafka.service.kafka.cert_file, kafka.service.kafka.key_file) == (cert, key)
    assert issues_of(kafka_service(tmp_path, *ssl_lines, f'kafka_key_file = "{key}"')) == [
        "service.kafka_cert_file: required with kafka_key_file"
    ]
    not_pem = password_file(tmp_path, "not a certificate\n", name="ca.pem")
    found = issues_of(kafka_service(tmp_path, 'kafka_security_protocol = "SSL"', 'kafka_ca_file = "ca.pem"'))
    assert len(found) == 1 and found[0].startswith(f"service.kafka_ca_file: cannot load the CA file {not_pem}: "), found
    missing = tmp_path / "client.pem"
    assert issues_of(kafka_service(tmp_path, *ssl_lines, 'kafka_cert_file = "client.pem"')) == [
        f"service.kafka_cert_file: cannot load the certificate {missing}: No such file or directory"
    ]
    wrong_key = kafka_service(tmp_path, *ssl_lines, f'kafka_cert_file = "{cert}"', f'kafka_key_file = "{tls.ca_file}"')
    found = issues_of(wrong_key)
    assert len(found) == 1 and found[0].startswith(
        f"service.kafka_cert_file: cannot load the certificate {cert} and"
    ), found


SEGMENT_DATABASE = '[[databases]]\nname = "members"\n[databases.attributes]\nscore = "int"\n'


def test_segments_keep_name_database_and_the_raw_definition(tmp_path: Path) -> None:
    text = (
        SEGMENT_DATABASE
        + '[[segments]]\nname = "high"\ndatabase = "members"\n'
        + 'definition = { attribute = "score", op = "gte", value = 10 }\n'
        + '[[segments]]\nname = "recent"\ndatabase = "members"\n'
        + '[segments.definition]\nall = [{ history = "purchase", within = "P30D" }, { segment = "high" }]\n'
    )
    settings = load_settings(write(tmp_path, text), {})
    assert [(s.name, s.database) for s in settings.segments] == [("high", "members"), ("recent", "members")]
    assert settings.segments[0].definition == {"attribute": "score", "op": "gte", "value": 10}
    assert settings.segments[1].definition == {"all": [{"history": "purchase", "within": "P30D"}, {"segment": "high"}]}
    assert load_settings(write(tmp_path, "[service]\n"), {}).segments == ()


def test_segment_entries_are_checked_with_their_place(tmp_path: Path) -> None:
    text = (
        SEGMENT_DATABASE
        + '[[segments]]\nname = "a b"\ndatabase = "nowhere"\ndefinition = { segment = "x" }\ncolour = 1\n'
        + '[[segments]]\nname = "high"\ndatabase = "members"\n'
        + '[[segments]]\nname = "twice"\ndatabase = "members"\ndefinition = "score > 1"\n'
        + '[[segments]]\nname = "twice"\ndatabase = "members"\ndefinition = { segment = "high" }\n'
    )
    assert issues_of(write(tmp_path, text)) == [
        "segments[0].name: must match [A-Za-z0-9_-]{1,64}",
        "segments[0].database: unknown database 'nowhere' (defined: members)",
        "segments[0].colour: unknown key",
        "segments[1].definition: required key is missing",
        "segments[2].definition: expected a table, got a string",
        "segments[3].name: segment 'twice' of database 'members' is defined twice",
    ]


def test_the_same_segment_name_in_two_databases_is_fine(tmp_path: Path) -> None:
    text = (
        SEGMENT_DATABASE
        + '[[databases]]\nname = "other"\n'
        + "".join(
            f'[[segments]]\nname = "all"\ndatabase = "{db}"\ndefinition = {{ attribute = "status", op = "eq", value = "active" }}\n'
            for db in ("members", "other")
        )
    )
    assert [s.database for s in load_settings(write(tmp_path, text), {}).segments] == ["members", "other"]
