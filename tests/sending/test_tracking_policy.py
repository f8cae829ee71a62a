"""What a message tracks (SPEC §8): `[tracking]`, `track` of its trigger or campaign, transactional defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamapp.core import clock
from streamapp.core.models import Priority, SendMessage
from streamapp.sending.tracking import TrackingPolicy
from streamapp.settings import ConfigError, Settings, load_settings
from tests.fixtures import config_text

MESSAGES = """
[smtp]
host = "127.0.0.1"
port = 2525
sender = "news@example.com"

[[triggers]]
name = "welcome"
database = "members"
template = "t"

[[triggers]]
name = "receipt"
database = "members"
template = "t"
transactional = true

[[triggers]]
name = "reset"
database = "members"
template = "t"
transactional = true
track = true

[[campaigns]]
name = "newsletter"
database = "members"
template = "t"

[[campaigns]]
name = "quiet"
database = "members"
template = "t"
track = false
"""


def settings(tmp_path: Path, extra: str = "") -> Settings:
    (tmp_path / "templates" / "t").mkdir(parents=True, exist_ok=True)
    (tmp_path / "templates" / "t" / "subject.txt").write_text("s")
    (tmp_path / "templates" / "t" / "body.html").write_text("<p>b</p>")
    config = tmp_path / "streamapp.toml"
    config.write_text(config_text("kafka://127.0.0.1:9", tmp_path / "data", 6066, "t", extra=MESSAGES + extra))
    return load_settings(config, environ={})


def message(name: str | None, priority: Priority) -> SendMessage:
    return SendMessage(messageId="0001" + "0" * 28, database="members", originalId="1", priority=priority,
                       template="t", name=name, enqueuedAt=clock.now_iso())  # fmt: skip


def test_defaults_track_campaigns_and_triggers_not_transactional_ones(tmp_path: Path) -> None:
    loaded = settings(tmp_path)
    assert (loaded.tracking.opens, loaded.tracking.clicks, loaded.tracking.machine_seconds) == (True, True, 60.0)
    policy = TrackingPolicy.of(loaded)
    assert policy.for_message(message("newsletter", "campaign")) == (True, True)
    assert policy.for_message(message("welcome", "transactional")) == (True, True)
    assert policy.for_message(message("welcome", "batch")) == (True, True)
    assert policy.for_message(message("receipt", "transactional")) == (False, False)  # transactional: off
    assert policy.for_message(message("reset", "transactional")) == (True, True)  # unless it says track = true
    assert policy.for_message(message("quiet", "campaign")) == (False, False)
    assert policy.for_message(message(None, "campaign")) == (False, False)  # enqueued before names existed
    assert policy.for_message(message("newsletter", "batch")) == (False, False)  # not a trigger of that name


def test_the_tracking_table_switches_each_off_for_all(tmp_path: Path) -> None:
    loaded = settings(tmp_path, "\n[tracking]\nopens = false\nmachine_seconds = 5\n")
    assert (loaded.tracking.opens, loaded.tracking.clicks, loaded.tracking.machine_seconds) == (False, True, 5.0)
    assert TrackingPolicy.of(loaded).for_message(message("newsletter", "campaign")) == (False, True)
    both_off = settings(tmp_path, "\n[tracking]\nopens = false\nclicks = false\n")
    assert TrackingPolicy.of(both_off).for_message(message("newsletter", "campaign")) == (False, False)


@pytest.mark.parametrize(
    ("extra", "place", "reason"),
    [
        ('\n[tracking]\nopens = "yes"\n', "tracking.opens", "expected true or false"),
        ("\n[tracking]\npixels = true\n", "tracking.pixels", "unknown key"),
        ("\n[tracking]\nmachine_seconds = -1\n", "tracking.machine_seconds", "must be 0 or more"),
        ("\n[[tracking]]\nopens = true\n", "tracking", "expected a table"),
    ],
)
def test_bad_tracking_settings_name_the_file_and_key(tmp_path: Path, extra: str, place: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings(tmp_path, extra)
    issues = [i for i in caught.value.issues if i.place == place]
    assert issues and reason in issues[0].message
    assert issues[0].file == str((tmp_path / "streamapp.toml").resolve())


def test_a_bad_track_key_names_its_trigger(tmp_path: Path) -> None:
    extra = '\n[[triggers]]\nname = "bad"\ndatabase = "members"\ntemplate = "t"\ntrack = "no"\n'
    with pytest.raises(ConfigError) as caught:
        settings(tmp_path, extra)
    assert [i.place for i in caught.value.issues] == ["triggers[3].track"]
