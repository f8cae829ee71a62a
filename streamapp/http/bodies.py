"""Reading request bodies within the limits: one JSON document, or a batch (a JSON array or NDJSON).

No request, however hostile, may block the event loop for more than 100 ms (SPEC §4). One msgspec
call over a 16 MiB body can: `[{},{},…]` builds 5 million dicts (1 s, 400 MB), and keeping every
error of 800,000 bad NDJSON lines took 6 s and 221 MB. So:

- a batch body is cut into its items first (NDJSON: its lines; a JSON array: a vectorized scan of
  its structure, `_Scanner`), and each item is decoded and validated on its own, so reading stops
  at item 10,001 (413) or at the 1,000th error (422) and never builds more than that;
- an item is decoded only when it has at most MAX_ITEM_BYTES and MAX_ITEM_VALUES, one JSON document
  at most MAX_DOCUMENT_VALUES: every msgspec call stays within milliseconds;
- the work runs in small steps on the event loop, which it gets back every SLICE_SECONDS
  (`_drive`). No thread: a thread would hold the GIL for as long as each msgspec call lasts anyway,
  and steps keep the bound independent of how the interpreter hands the GIL over.

Content encodings are refused (415) from the header, before a byte of the body is read; aiohttp's
own decompression is off (streamapp.http.server), so the size limit counts bytes as received.

A body must keep arriving (`chunks_within`): after BODY_GRACE_SECONDS, at least BODY_MIN_RATE bytes
a second on average, else 408 and the connection is closed, so a body trickled at 1 byte/s holds
no request slot, memory or spool file for long. Batch bodies go to the spool (`Spool`), whose files
together stay within a quota: a body that would pass it is 503 with Retry-After, and nothing of it
is kept.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Generator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, NamedTuple, TypeAlias, TypeVar, cast

import msgspec
import numpy as np
import numpy.typing as npt
from aiohttp import hdrs, web

from streamapp.core.validation import FieldError
from streamapp.http.errors import MAX_DETAILS, ApiError, unprocessable

T = TypeVar("T")
R = TypeVar("R")

NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl", "application/jsonlines")

#: Items of one batch body (SPEC §4); one more is a 413.
MAX_BATCH_ITEMS = 10_000
#: Bytes of one batch item: twice a stored row (SPEC §3, 512 KiB) leaves room for JSON escapes.
MAX_ITEM_BYTES = 1 << 20
#: Objects, arrays and members in one batch item (a recipient with 256 attributes has about 520).
MAX_ITEM_VALUES = 10_000
#: The same for a body that is one JSON document: msgspec builds 100,000 values in about 20 ms.
MAX_DOCUMENT_VALUES = 100_000
#: Work done on the event loop before it gets control back.
SLICE_SECONDS = 0.01
#: Bytes scanned in one step: a fraction of a millisecond, and a few MB of numpy arrays at most.
WINDOW = 64 * 1024
#: A body may take this long to start arriving...
BODY_GRACE_SECONDS = 10.0
#: ...and must then average at least this many bytes a second (1 GiB in 4.5 hours), else 408.
BODY_MIN_RATE = 64 * 1024
#: The spool holds at most this many maximal batch bodies (`max_batch_bytes`) at once.
SPOOL_QUOTA_BODIES = 4
#: Seconds a client refused by the full spool is told to wait.
SPOOL_RETRY_AFTER = 5

#: Validates one decoded item at its JSON path: the value to keep, or None and the errors.
Convert: TypeAlias = Callable[[Any, str], tuple[T | None, list[FieldError]]]

_WHITESPACE = frozenset(b" \t\n\r\f\v")
_QUOTE, _BACKSLASH, _COMMA, _NEWLINE = 0x22, 0x5C, 0x2C, 0x0A
#: `[` and `]` with bit 0x20 set are `{` and `}`; no other byte lands there.
_FOLD, _OPEN, _CLOSE = 0x20, 0x7B, 0x7D
_DECODE_ERRORS = (msgspec.DecodeError, RecursionError)
_OBJECT_START = re.compile(rb"[ \t\r\n]*+\{")


# -- reading -------------------------------------------------------------------------------------


def refuse_content_encoding(request: web.BaseRequest) -> None:
    """415 for a body sent with a Content-Encoding other than identity, from the header alone.

    aiohttp would inflate gzip, deflate, br or zstd while the body arrives, so 15.6 KB on the wire
    became 16 MB parsed; the check must come before anything reads the body (SPEC §4).
    """
    encoding = ", ".join(request.headers.getall(hdrs.CONTENT_ENCODING, ()))
    codings = {coding.strip().lower() for coding in encoding.split(",")} - {"", "identity"}
    if codings and request.body_exists:
        raise ApiError(
            415,
            f"Content-Encoding {encoding!r} is not accepted: send the body uncompressed",
            headers={"Accept-Encoding": "identity"},
        )


async def chunks_within(
    request: web.Request,
    limit: int,
    chunk_size: int = 1 << 16,
    *,
    grace: float = BODY_GRACE_SECONDS,
    min_rate: float = BODY_MIN_RATE,
) -> AsyncIterator[bytes]:
    """The body as it arrives; 413 as soon as it is known to exceed `limit` bytes (counted as received),
    408 once it arrives slower than `min_rate` bytes a second on average after `grace` seconds."""
    refuse_content_encoding(request)
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, f"body of {request.content_length} bytes exceeds the limit of {limit} bytes")
    loop = asyncio.get_running_loop()
    started, size = loop.time(), 0
    chunks = request.content.iter_chunked(chunk_size).__aiter__()
    while True:
        try:
            async with asyncio.timeout_at(started + grace + size / min_rate):
                chunk = await anext(chunks)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise _too_slow(size, loop.time() - started, min_rate) from None
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"body exceeds the limit of {limit} bytes")
        yield chunk


def _too_slow(size: int, seconds: float, min_rate: float) -> ApiError:
    return ApiError(
        408,
        f"the body arrived too slowly ({size:,} bytes in {seconds:.0f} s; at least {min_rate / 1024:,.0f} KiB/s "
        "is needed after the first seconds)",
        headers={"Connection": "close"},
    )


async def read_limited(request: web.Request, limit: int) -> bytes:
    """The raw body, or 413 once it is known to exceed `limit` bytes."""
    return b"".join([chunk async for chunk in chunks_within(request, limit)])


async def read_json(request: web.Request, limit: int) -> Any:
    """The body as one JSON document, decoded in steps that leave the event loop free (`parse_json`)."""
    return await _drive(_document_steps(await read_limited(request, limit)))


async def read_batch(
    request: web.Request,
    limit: int,
    convert: Convert[T],
    *,
    what: str,
    max_items: int = MAX_BATCH_ITEMS,
    max_errors: int = MAX_DETAILS,
    single: bool = False,
) -> list[T]:
    """A batch body (JSON array or NDJSON), every item converted, read in steps that leave the loop free.

    All or nothing: 413 at item `max_items + 1`, BatchRejected (422) with the errors found, and
    reading stops at the `max_errors`-th of them. `single`: an `application/json` body that is one
    object is one item too, its errors named at the body's own paths (`/type`, not `/0/type`).
    """
    data = await read_limited(request, limit)
    if single and request.content_type == "application/json" and _opens_object(data):
        return await _drive(_object_steps(data, convert, what))
    return await _drive(_batch_steps(data, request.content_type, convert, what, max_items, max_errors))


class Spool:
    """Batch bodies written to disk as they arrive (`<data_dir>/spool/`), together within `quota` bytes.

    A body holds its share of the quota from its first byte (or, with a Content-Length, all of it
    from the start) until its file is removed, after the batch was published.
    """

    def __init__(self, folder: Path, quota: int) -> None:
        self.folder = folder
        self.quota = quota
        self.used = 0

    def clear(self) -> None:
        """Remove bodies left by a previous run (never answered 202: their clients retry)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for stale in self.folder.iterdir():
            with suppress(OSError):
                stale.unlink()

    @asynccontextmanager
    async def body(self, request: web.Request, limit: int, **pace: float) -> AsyncIterator[Path]:
        """The body in a spool file, removed on exit; 413 past `limit` (`chunks_within`), 408 when too
        slow, 503 with Retry-After when the spool would pass its quota. `pace`: chunks_within's."""
        held = self._reserve(min(request.content_length or 0, limit))
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{uuid.uuid4().hex}.body"
        try:
            with path.open("wb") as f:
                size = 0
                async for chunk in chunks_within(request, limit, chunk_size=1 << 20, **pace):
                    size += len(chunk)
                    if size > held:
                        held += self._reserve(size - held)
                    f.write(chunk)
            yield path
        finally:
            path.unlink(missing_ok=True)
            self.used -= held

    def _reserve(self, size: int) -> int:
        if self.used + size > self.quota:
            raise ApiError(
                503,
                f"the spool for batch bodies is full ({self.used:,} of {self.quota:,} bytes held): retry later",
                headers={"Retry-After": str(SPOOL_RETRY_AFTER)},
            )
        self.used += size
        return size


# -- parsing (synchronous: for callers off the loop, tests and small bodies) ------------------------


class BatchRejected(ApiError):
    """A batch body refused whole (422); `items` says how many items were read before stopping."""

    def __init__(self, error: str, details: list[FieldError], items: int) -> None:
        super().__init__(422, error, details)
        self.items = items


def parse_json(data: bytes) -> Any:
    """One JSON document; 422 when malformed or over MAX_DOCUMENT_VALUES.

    Bounded, but in one go: on the event loop, prefer `read_json` for bodies over ~100 KB.
    """
    return _run(_document_steps(data))


def parse_batch(
    data: bytes,
    content_type: str,
    convert: Convert[T],
    *,
    what: str = "items",
    max_items: int = MAX_BATCH_ITEMS,
    max_errors: int = MAX_DETAILS,
) -> list[T]:
    """What `read_batch` returns for a body already read, in one go."""
    return _run(_batch_steps(data, content_type, convert, what, max_items, max_errors))


def parse_items(data: bytes, content_type: str) -> list[Any]:
    """The items of a JSON array or NDJSON body, unvalidated (bounded as `parse_batch`)."""
    return [boxed[0] for boxed in parse_batch(data, content_type, _keep, what="items")]


def _keep(item: Any, path: str) -> tuple[tuple[Any], list[FieldError]]:
    return (item,), []  # boxed: a JSON null is an item, not a refusal


# -- running steps -------------------------------------------------------------------------------


async def _drive(steps: Generator[None, None, R]) -> R:
    """Run `steps` on the event loop, handing it back every SLICE_SECONDS (each step takes ~1 ms)."""
    deadline = time.perf_counter() + SLICE_SECONDS
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return cast(R, done.value)
        if time.perf_counter() >= deadline:
            await asyncio.sleep(0)
            deadline = time.perf_counter() + SLICE_SECONDS


def _run(steps: Generator[None, None, R]) -> R:
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return cast(R, done.value)


# -- one JSON document ---------------------------------------------------------------------------


def _document_steps(data: bytes) -> Generator[None, None, Any]:
    if len(data) > MAX_DOCUMENT_VALUES:
        values = yield from _count_values(data, 0, len(data), MAX_DOCUMENT_VALUES)
        if values > MAX_DOCUMENT_VALUES:
            raise unprocessable([FieldError("/", _too_many(MAX_DOCUMENT_VALUES))], "body too complex")
    try:
        return msgspec.json.decode(data)
    except _DECODE_ERRORS as exc:
        raise unprocessable([FieldError("/", f"malformed JSON: {exc}")], "malformed JSON") from None


def _too_many(limit: int) -> str:
    return f"more than {limit:,} values (objects, arrays and their members)"


# -- batches -------------------------------------------------------------------------------------


class _Piece(NamedTuple):
    """One item of a batch body: bytes `start:end` of the body, `where` to name it in an error."""

    ordinal: int
    where: str
    start: int
    end: int
    #: Reading cannot go on past this piece, for this reason (a broken array, an endless item).
    stop: str | None = None
    #: The reason to stop is malformed JSON.
    syntax: bool = True


Pieces: TypeAlias = Generator[_Piece | None, None, None]


@dataclass
class _Batch(Generic[T]):
    """What reading a batch body found so far: the converted items, or the errors (capped)."""

    data: bytes
    convert: Convert[T]
    max_items: int
    max_errors: int
    #: In an array, the cuts after a malformed item may be wrong; NDJSON lines stand alone.
    halt_when_malformed: bool
    values: list[T] = field(default_factory=list)
    errors: list[FieldError] = field(default_factory=list)
    items: int = 0
    malformed: bool = False
    halted: bool = False

    @property
    def done(self) -> bool:
        return self.halted or len(self.errors) >= self.max_errors

    def take(self, piece: _Piece) -> None:
        """Decode and convert one item; 413 when it is one too many."""
        if piece.stop is not None:  # not an item: where the body breaks
            self.halted = True
            self._refuse(piece, piece.stop, malformed=piece.syntax)
            return
        if self.items >= self.max_items:
            raise ApiError(413, f"over {self.max_items} items: the limit is {self.max_items} per request")
        self.items += 1
        ok, item = self._decode(piece)
        if not ok:
            return
        value, errors = self.convert(item, f"/{piece.ordinal}")
        if value is None:
            self._fail(errors or [FieldError(f"/{piece.ordinal}", "invalid item")])
        elif not self.errors:  # all or nothing: once refused, nothing more is kept
            self.values.append(value)

    def _decode(self, piece: _Piece) -> tuple[bool, Any]:
        size = piece.end - piece.start
        if size > MAX_ITEM_BYTES:
            return self._refuse(piece, f"item of {size:,} bytes exceeds the limit of {MAX_ITEM_BYTES:,}")
        if size > MAX_ITEM_VALUES:  # fewer bytes cannot hold more values
            values = _run(_count_values(self.data, piece.start, piece.end, MAX_ITEM_VALUES))
            if values > MAX_ITEM_VALUES:
                return self._refuse(piece, _too_many(MAX_ITEM_VALUES))
        try:
            return True, msgspec.json.decode(memoryview(self.data)[piece.start : piece.end])
        except _DECODE_ERRORS as exc:
            self.halted = self.halted or self.halt_when_malformed
            return self._refuse(piece, f"malformed JSON: {exc}", malformed=True)

    def _refuse(self, piece: _Piece, message: str, malformed: bool = False) -> tuple[bool, Any]:
        self.malformed = self.malformed or malformed
        self._fail([FieldError(piece.where, message)])
        return False, None

    def _fail(self, errors: list[FieldError]) -> None:
        self.values.clear()
        self.errors.extend(errors[: self.max_errors - len(self.errors)])


def _batch_steps(
    data: bytes, content_type: str, convert: Convert[T], what: str, max_items: int, max_errors: int
) -> Generator[None, None, list[T]]:
    first = yield from _skip_blank(data, 0)
    array = first < len(data) and data[first] == ord("[")
    ndjson = content_type in NDJSON_TYPES or (content_type != "application/json" and not array)
    if not ndjson and not array:
        raise unprocessable([FieldError("/", "must be a JSON array (or send NDJSON)")])
    batch = _Batch(data, convert, max_items, max_errors, halt_when_malformed=not ndjson)
    yield from _take_all(batch, _ndjson_pieces(data) if ndjson else _array_pieces(data, first))
    if batch.errors:
        raise BatchRejected(_title(batch, what, ndjson), batch.errors, batch.items)
    return batch.values


def _opens_object(data: bytes) -> bool:
    """The body's first character that is not JSON whitespace is `{` (a C scan, no copy of the body)."""
    return _OBJECT_START.match(data) is not None


def _object_steps(data: bytes, convert: Convert[T], what: str) -> Generator[None, None, list[T]]:
    """A body that is one JSON object, bounded as one document (`_document_steps`), converted as one item."""
    item = yield from _document_steps(data)
    value, errors = convert(item, "")
    if value is None:
        raise BatchRejected(f"invalid {what}: nothing was accepted", errors or [FieldError("/", "invalid item")], 1)
    return [value]


def _take_all(batch: _Batch[T], pieces: Pieces) -> Generator[None, None, None]:
    """Feed `batch` until the pieces end or it is done (errors full, or the body broken)."""
    for piece in pieces:
        if piece is not None:
            batch.take(piece)
            if batch.done:
                return
        yield


def _title(batch: _Batch[T], what: str, ndjson: bool) -> str:
    if batch.malformed:
        title = "malformed NDJSON" if ndjson else "malformed JSON"
    else:
        title = f"invalid {what}: nothing was accepted"
    if len(batch.errors) >= batch.max_errors:
        title += f" (reading stopped at item {batch.items:,}, after the first {batch.max_errors:,} errors)"
    return title


def _ndjson_pieces(data: bytes) -> Pieces:
    """Each non-blank line (split at LF; a CR before it is JSON whitespace); None when pausing."""
    pos, line, index, size = 0, 1, 0, len(data)
    while pos < size:
        if data[pos] in _WHITESPACE:  # rare in NDJSON: blank runs are skipped at numpy speed
            start, newlines = yield from _blank_run(data, pos, size)
            if start == size:
                return
            line += newlines
            pos = data.rfind(b"\n", pos, start) + 1 or pos
        end = data.find(b"\n", pos)
        end = size if end < 0 else end
        yield _Piece(index, f"line {line}", pos, end)
        index, line, pos = index + 1, line + 1, end + 1


def _array_pieces(data: bytes, bracket: int) -> Pieces:
    """The items of the JSON array opened at `bracket`, cut at its top-level commas; None when pausing.

    Only the cuts come from the scan: msgspec decodes each piece, so a body is accepted only if
    every piece is valid JSON, and then the cuts are those a JSON parser makes.
    """
    body = np.frombuffer(data, np.uint8)
    scanner, depth, start, index = _Scanner(), 0, bracket + 1, 0
    for offset in range(bracket + 1, len(data), WINDOW):
        window = body[offset : offset + WINDOW]
        where = scanner.structure(window)
        kinds = window[where]
        folded = kinds | _FOLD
        depth_after = depth + np.cumsum((folded == _OPEN).astype(np.int8) - (folded == _CLOSE), dtype=np.int32)
        closed = np.flatnonzero(depth_after < 0)
        stop = int(closed[0]) if closed.size else where.size
        cuts = where[:stop][(kinds[:stop] == _COMMA) & (depth_after[:stop] == 0)] + offset
        for cut in cuts.tolist():
            yield _Piece(index, f"/{index}", start, cut)
            index, start = index + 1, cut + 1
        if closed.size:
            yield from _array_end(data, index, start, offset + int(where[stop]))
            return
        if offset + window.size - start > MAX_ITEM_BYTES:  # finding its end would scan on and on
            yield _Piece(index, f"/{index}", start, start, f"item exceeds the limit of {MAX_ITEM_BYTES:,} bytes", False)
            return
        depth = int(depth_after[-1]) if depth_after.size else depth
        yield None
    yield _Piece(index, f"/{index}", start, len(data), "malformed JSON: the array is not closed")


def _array_end(data: bytes, index: int, start: int, end: int) -> Pieces:
    """The last item (none in `[ ]`), then whatever breaks the end of the array."""
    if data[end] != ord("]"):
        yield _Piece(index, f"/{index}", start, end, f"malformed JSON: {chr(data[end])!r} closes the array")
        return
    blank = yield from _skip_blank(data, start, end)
    if index > 0 or blank < end:
        yield _Piece(index, f"/{index}", start, end)
    after = yield from _skip_blank(data, end + 1)
    if after < len(data):
        yield _Piece(index + 1, "/", after, len(data), "malformed JSON: data after the array")


# -- scanning ------------------------------------------------------------------------------------


class _Scanner:
    """Where the structure of JSON text is, outside strings, one window at a time (numpy, ~4 ms/MiB).

    A quote opens or closes a string unless an odd run of backslashes precedes it; `[ { ] } ,`
    outside strings are the structure. Invalid JSON gives wrong answers, never an exception: the
    pieces cut from them are then refused by msgspec.
    """

    def __init__(self) -> None:
        self.in_string = False
        #: The previous window ended in an odd run of backslashes: this one's first byte is escaped.
        self.escape_first = False

    def structure(self, window: npt.NDArray[np.uint8]) -> npt.NDArray[np.intp]:
        """Positions in `window` of `[ { ] } ,` outside strings."""
        quoted = window == _QUOTE
        escaped = self._escaped(window)
        if escaped.size:
            quoted[escaped] = False
        quotes = np.flatnonzero(quoted)
        folded = window | _FOLD
        candidates = np.flatnonzero((folded == _OPEN) | (folded == _CLOSE) | (window == _COMMA))
        outside = (np.searchsorted(quotes, candidates) + self.in_string) % 2 == 0
        self.in_string = bool((quotes.size + self.in_string) % 2)
        found: npt.NDArray[np.intp] = candidates[outside]
        return found

    def _escaped(self, window: npt.NDArray[np.uint8]) -> npt.NDArray[np.intp]:
        """Positions of the bytes that follow an odd run of backslashes (runs may span windows)."""
        slashes = np.flatnonzero(window == _BACKSLASH)
        continued = self.escape_first and slashes.size > 0 and slashes[0] == 0
        first = np.array([0] if self.escape_first and not continued else [], dtype=np.intp)
        if not slashes.size:
            self.escape_first = False
            return first
        breaks = np.flatnonzero(np.diff(slashes) != 1) + 1
        starts, ends = slashes[np.r_[0, breaks]], slashes[np.r_[breaks - 1, slashes.size - 1]]
        lengths = ends - starts + 1 + (np.arange(starts.size) == 0) * continued
        after = ends[lengths % 2 == 1] + 1
        self.escape_first = bool(after.size and after[-1] == window.size)
        escaped: npt.NDArray[np.intp] = np.concatenate([first, after[after < window.size]])
        return escaped


def _count_values(data: bytes, start: int, end: int, limit: int) -> Generator[None, None, int]:
    """Opening brackets and commas outside strings in `start:end` (values and members), counted to past `limit`."""
    body, scanner, count = np.frombuffer(data, np.uint8), _Scanner(), 0
    for offset in range(start, end, WINDOW):
        window = body[offset : min(offset + WINDOW, end)]
        count += int(np.count_nonzero((window[scanner.structure(window)] | _FOLD) != _CLOSE))
        if count > limit:
            break
        yield
    return count


def _skip_blank(data: bytes, start: int, end: int | None = None) -> Generator[None, None, int]:
    """The first position at or after `start` that is not whitespace (`end` if none)."""
    found, _ = yield from _blank_run(data, start, len(data) if end is None else end)
    return found


def _blank_run(data: bytes, start: int, end: int) -> Generator[None, None, tuple[int, int]]:
    """The first non-whitespace position in `start:end` (or `end`) and the line feeds before it, a window per step."""
    if start < end and data[start] not in _WHITESPACE:
        return start, 0
    body, newlines = np.frombuffer(data, np.uint8), 0
    for offset in range(start, end, WINDOW):
        window = body[offset : min(offset + WINDOW, end)]
        found = np.flatnonzero((window > 32) | (window < 9) | ((window > 13) & (window < 32)))
        blank = window[: found[0]] if found.size else window
        newlines += int(np.count_nonzero(blank == _NEWLINE))
        if found.size:
            return offset + int(found[0]), newlines
        yield
    return end, newlines
