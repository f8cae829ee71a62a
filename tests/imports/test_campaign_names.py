"""Send-campaign file names: database, campaign and time from the name."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from streamapp.imports.campaign_names import parse_campaign_name
from streamapp.settings import Settings, load_settings
from streamapp.tabular.csvreader import FileRejected

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    for name in ("newsletter", "other"):
        folder = tmp_path / "templates" / name
        folder.mkdir(parents=True)
        (folder / "subject.txt").write_text("Hi")
        (folder / "body.html").write_text("<p>Hi</p>")
    config = tmp_path / "streamapp.toml"
    config.write_text(
        '[service]\ntimezone = "Europe/Stockholm"\n'
        '[[databases]]\nname = "members"\n[[databases]]\nname = "vip_club"\n'
        '[[campaigns]]\nname = "newsletter"\ndatabase = "members"\n'
        '[[campaigns]]\nname = "other"\ndatabase = "vip_club"\n'
    )
    return load_settings(config, {})


def test_future_time_is_read_in_the_service_time_zone(settings: Settings) -> None:
    drop = parse_campaign_name("members__newsletter__20261201T0800.csv", settings, NOW)
    assert (drop.database, drop.campaign) == ("members", "newsletter")
    assert drop.send_at == datetime(2026, 12, 1, 7, 0, tzinfo=UTC)


def test_past_time_means_now(settings: Settings) -> None:
    assert parse_campaign_name("members__newsletter__20200101T0000.csv", settings, NOW).send_at == NOW


def test_underscores_inside_names(settings: Settings) -> None:
    drop = parse_campaign_name("vip_club__other__20261201T0800.CSV", settings, NOW)
    assert (drop.database, drop.campaign) == ("vip_club", "other")


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("newsletter.csv", "does not match <database>__<campaign>__<YYYYMMDDTHHMM>.csv"),
        ("members__newsletter__2026-12-01.csv", "does not match <database>__<campaign>__<YYYYMMDDTHHMM>.csv"),
        (
            "nodb__newsletter__20261201T0800.csv",
            "unknown database 'nodb' (expected <database>__<campaign>__<YYYYMMDDTHHMM>.csv)",
        ),
        (
            "members__nope__20261201T0800.csv",
            "unknown campaign 'nope' (expected <database>__<campaign>__<YYYYMMDDTHHMM>.csv)",
        ),
        ("members__other__20261201T0800.csv", "campaign 'other' sends to database 'vip_club'"),
        ("members__newsletter__20261301T0800.csv", "'20261301T0800' is not a valid time"),
    ],
)
def test_bad_names_are_rejected_with_the_expected_pattern(settings: Settings, name: str, reason: str) -> None:
    with pytest.raises(FileRejected) as info:
        parse_campaign_name(name, settings, NOW)
    assert reason in str(info.value)
