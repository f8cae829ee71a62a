"""The event-loop lag probe behind `streamapp_event_loop_lag_seconds` (SPEC §7).

A task sleeps INTERVAL_SECONDS again and again and records how late it woke: whatever held the
loop (a parse, a GC pause, a slow callback) shows as lag. SPEC §4 bounds it to 100 ms per request.
Twenty wake-ups a second cost microseconds each. It runs in every worker: the API server, which
every worker runs, starts it (streamapp.http.server).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from streamapp import metrics

#: Short enough that a block of 100 ms cannot hide between two wake-ups, long enough to cost nothing.
INTERVAL_SECONDS = 0.05


async def probe_loop_lag(
    observe: Callable[[float], None] = metrics.EVENT_LOOP_LAG.observe, interval: float = INTERVAL_SECONDS
) -> None:
    """Forever: sleep `interval`, then observe how much later than due the loop woke this task."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + interval
        await asyncio.sleep(interval)
        observe(max(0.0, loop.time() - due))
