"""An in-memory PartitionTransaction: the recipients agent's rules without RocksDB or Kafka.

For unit tests and benches of code written against the transaction interface (get, set, prefetch,
scan); it refuses what the changelog could not take, like the real store (tests/kafka/test_store.py).
"""

from __future__ import annotations

from collections.abc import Iterator

from streamapp.kafka.store import check_record


class MemoryTransaction:
    """The PartitionTransaction interface over a dict."""

    def __init__(self) -> None:
        self.rows: dict[bytes, bytes] = {}

    def prefetch(self, keys: list[bytes]) -> None:
        pass

    def get(self, key: bytes) -> bytes | None:
        return self.rows.get(key)

    def set(self, key: bytes, value: bytes | None) -> None:
        check_record("memory", key, value)
        if value is None:
            self.rows.pop(key, None)
        else:
            self.rows[key] = value

    def scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        yield from sorted((k, v) for k, v in self.rows.items() if k.startswith(prefix))
