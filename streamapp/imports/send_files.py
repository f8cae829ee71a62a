"""Send folders: `drop/triggers/<trigger>/` (batch transactional) and `drop/campaigns/` (SPEC §5).

They are watched, claimed and reported like import folders (the same watcher, job process and
report), with a built-in schema: UTF-8 CSV with a header row (`originalId`, `email`, attribute
names), delimiter sniffed. Each file is one batch (streamapp.sending.batches) whose id is
derived from the claim, so a file redone after a crash publishes the same message ids and the
ledger sends each once. A campaign file's name says database, campaign and time
(streamapp.imports.campaign_names).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from streamapp.core import clock
from streamapp.core.ids import new_batch_id
from streamapp.core.models import BatchInfo
from streamapp.core.validation import send_time_problem
from streamapp.imports.campaign_names import parse_campaign_name
from streamapp.imports.files import Claim
from streamapp.imports.report import ImportReport
from streamapp.kafka.publisher import Send
from streamapp.sending.batch_rows import read_rows
from streamapp.sending.batches import BatchSender, NothingAccepted, SendTarget, send_rows
from streamapp.settings import Settings
from streamapp.tabular.csvreader import FileRejected

#: A send file is taken once its size has not changed this long.
SETTLE_SECONDS = 2.0


@dataclass(frozen=True)
class SendFolder:
    """A watched send folder: `triggers/<trigger>` or `campaigns`, with the built-in schema of
    streamapp.sending.batch_rows (UTF-8 CSV, header row, delimiter sniffed)."""

    name: str  # the folder under drop/, also the name claims and reports carry
    kind: Literal["trigger", "campaign"]
    database: str  # the trigger's database; "" for campaigns (each file names its own)
    settle_seconds: float = SETTLE_SECONDS
    pattern: str = "*"
    encoding: str = "utf-8"
    mode: str = "upsert"

    @property
    def watch(self) -> str:
        return self.name


def send_drops(settings: Settings) -> list[SendFolder]:
    """One watched folder per trigger, and one for campaigns."""
    drops = [
        SendFolder(f"triggers/{name}", "trigger", trigger.database)
        for name, trigger in sorted(settings.triggers.items())
    ]
    if settings.campaigns:
        drops.append(SendFolder("campaigns", "campaign", ""))
    return drops


#: What a send file's rows get, and when (UTC ISO, None for now).
SendFileTarget = tuple[SendTarget, str | None]


def target_of(settings: Settings, folder: SendFolder, claim: Claim) -> SendFileTarget:
    """What the file's rows get, and when; FileRejected for a bad campaign file name."""
    if folder.kind == "trigger":
        return SendTarget.trigger(settings.triggers[folder.name.removeprefix("triggers/")]), None
    drop = parse_campaign_name(claim.original_name, settings, clock.parse_time(claim.claimed_at))
    if problem := send_time_problem(drop.send_at, clock.parse_time(claim.claimed_at)):
        raise FileRejected(f"the time in the file name {problem}")
    later = drop.send_at > clock.parse_time(claim.claimed_at)
    return SendTarget.campaign(settings.campaigns[drop.campaign]), clock.iso(drop.send_at) if later else None


def seen_key(content_digest: str, claim: Claim) -> str:
    """Send files are duplicates only with the same folder and name too: a list sent again to
    another trigger, or under another campaign or time, is a new send."""
    return hashlib.sha256(f"{claim.import_name}\0{claim.original_name}\0{content_digest}".encode()).hexdigest()


def claim_batch_id(claim: Claim, partitions: int) -> str:
    """The same batch id every time this claim is (re)done."""
    digest = int(hashlib.sha256(claim.id.encode()).hexdigest(), 16)
    return new_batch_id(digest % partitions, clock.parse_time(claim.claimed_at).timestamp(), tag=digest >> 224)


async def send_file(
    settings: Settings,
    file_target: SendFileTarget,
    claim: Claim,
    source: Path,
    report: ImportReport,
    send: Send,
    between_chunks: Callable[[], None] = lambda: None,
) -> BatchInfo:
    """Publish the file's rows as one batch (target_of says what they get); fills the report's counts.

    `source` names the claimed file as the job opened it (see nofollow.open_claimed).
    """
    target, send_time = file_target
    report.database = target.database
    db = settings.databases[target.database]
    batch_id = claim_batch_id(claim, settings.service.partitions)
    sender = BatchSender(
        settings, target, send, source=claim.original_name, send_time=send_time, batch_id=batch_id,
        created_at=claim.claimed_at,
    )  # fmt: skip
    rows = read_rows(source, "csv", db, settings.service.zone, claim.claimed_at, decoded=True, rules=target.rules)
    try:
        info = await send_rows(sender, rows, between_chunks)
    except NothingAccepted as exc:
        raise FileRejected(str(exc)) from None
    report.batchId, report.sendTime, report.ignoredColumns = info.batchId, info.sendTime, info.ignoredColumns
    report.applied, report.rowsRead = info.total, info.total + info.rejected
    report.reject_rows([(e.line or 0, e.reason) for e in info.errors])
    report.rejected += info.errorsNotListed
    report.rejectionsNotListed += info.errorsNotListed
    return info
