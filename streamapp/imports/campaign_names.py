"""Send-campaign file names: `<database>__<campaign>__<YYYYMMDDTHHMM>.csv` (SPEC §5).

The name says which database the rows update, which campaign they get and
when; the time is in `service.timezone`, and a past time means now. A name
that does not match, or names an unknown database or campaign, rejects the
file with a reason that states the expected pattern.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from streamapp.settings import Settings
from streamapp.tabular.csvreader import FileRejected

PATTERN = "<database>__<campaign>__<YYYYMMDDTHHMM>.csv"
_NAME = re.compile(
    r"^(?P<database>[A-Za-z0-9_-]{1,64}?)__(?P<campaign>[A-Za-z0-9_-]{1,64}?)__(?P<time>\d{8}T\d{4})\.csv$", re.I
)


@dataclass(frozen=True)
class CampaignDrop:
    database: str
    campaign: str
    send_at: datetime  # aware; never before the time the file was taken


def parse_campaign_name(name: str, settings: Settings, now: datetime) -> CampaignDrop:
    """Read a campaign file's name; raise FileRejected naming the expected pattern."""
    match = _NAME.match(name)
    if match is None:
        raise FileRejected(f"file name {name!r} does not match {PATTERN}")
    database, campaign = match["database"], match["campaign"]
    if database not in settings.databases:
        raise FileRejected(f"file name {name!r}: unknown database {database!r} (expected {PATTERN})")
    config = settings.campaigns.get(campaign)
    if config is None:
        raise FileRejected(f"file name {name!r}: unknown campaign {campaign!r} (expected {PATTERN})")
    if config.database != database:
        raise FileRejected(f"file name {name!r}: campaign {campaign!r} sends to database {config.database!r}")
    try:
        local = datetime.strptime(match["time"], "%Y%m%dT%H%M").replace(tzinfo=ZoneInfo(settings.service.timezone))
    except ValueError:
        raise FileRejected(f"file name {name!r}: {match['time']!r} is not a valid time (expected {PATTERN})") from None
    return CampaignDrop(database, campaign, max(local, now))
