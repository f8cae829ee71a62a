"""One message per originalId per batch: the keys a batch has seen, in bounded memory.

A batch has at most MAX_BATCH_ROWS rows (streamapp.core.validation), so the ids it has seen fit in
memory as 64-bit digests: 8 bytes a row (80 MB for ten million), where a Python set of strings would
take about 100 bytes a row. The digests are kept in sorted numpy runs that merge like a log-structured
tree (a run merges with the one before it while that is not larger), so a chunk is checked with one
`searchsorted` per run, O(log n) runs, and the merges cost O(n log n) over the whole batch.

The digest is Python's `hash` of the string (SipHash, salted per process: one batch is read by one
process). Two different ids of one batch share a digest with a probability of about n² / 2⁶⁵ (3 in a
million for ten million rows); the later one is then refused as a duplicate.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt


class SeenIds:
    """The ids of the rows taken so far; `take` keeps the first of each."""

    def __init__(self) -> None:
        self._runs: list[npt.NDArray[np.int64]] = []

    def __len__(self) -> int:
        return sum(run.size for run in self._runs)

    def take(self, ids: Sequence[str]) -> list[bool]:
        """Per id, whether it is new: seen neither before nor earlier in `ids`. The new ones are kept."""
        if not ids:
            return []
        digests = np.fromiter(map(hash, ids), dtype=np.int64, count=len(ids))
        unique, first = np.unique(digests, return_index=True)
        new = np.zeros(len(ids), dtype=bool)
        new[first] = True
        fresh = np.ones(unique.size, dtype=bool)
        for run in self._runs:
            at = np.minimum(np.searchsorted(run, unique), run.size - 1)
            fresh &= run[at] != unique
        new[first[~fresh]] = False
        self._add(unique[fresh])
        result: list[bool] = new.tolist()
        return result

    def _add(self, run: npt.NDArray[np.int64]) -> None:
        """Append a sorted run of new digests, merging while the last run is not larger."""
        if not run.size:
            return
        while self._runs and self._runs[-1].size <= run.size:
            # Disjoint sorted runs: timsort merges them in linear time.
            run = np.sort(np.concatenate((self._runs.pop(), run)), kind="stable")
        self._runs.append(run)
