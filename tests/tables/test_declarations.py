"""Table declarations: raw bytes, co-partitioned with the source topics, RocksDB-backed, one changelog each."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamapp.kafka.app import new_faust_app
from streamapp.runtime import create_runtime
from streamapp.settings import load_settings
from streamapp.tables.batches import BATCHES
from streamapp.tables.idempotency import IDEMPOTENCY
from streamapp.tables.messages import MESSAGES
from streamapp.tables.recipients import HISTORY, RECIPIENTS
from tests.fixtures import config_text
from tests.sending.fixtures import smtp_extra, write_templates


@pytest.fixture
def settings(tmp_path: Path) -> object:
    write_templates(tmp_path)
    config = tmp_path / "streamapp.toml"
    text = config_text("kafka://127.0.0.1:1", tmp_path / "data", 1, "decl", partitions=6, extra=smtp_extra(2525))
    config.write_text(text)
    return load_settings(config, environ={})


def test_every_table_is_raw_bytes_co_partitioned_and_changelogged(settings: object) -> None:
    sa = create_runtime(settings)  # type: ignore[arg-type]
    assert sa.sending is not None
    stores = {s.name: s for s in (sa.recipients, sa.history, sa.batches, sa.sending.messages, sa.sending.idempotency)}
    assert set(stores) == {RECIPIENTS, HISTORY, BATCHES, MESSAGES, IDEMPOTENCY}
    for name, store in stores.items():
        table = store.table
        assert table.partitions == 6 == sa.recipient_commands.partitions, name
        assert table.key_type is bytes and table.value_type is bytes, name
        assert store.changelog == f"decl-{name}-changelog"
    assert all(topic.partitions == 6 for topic in sa.sending.topics.values())


def test_tables_live_in_rocksdb_under_the_data_dir(settings: object, tmp_path: Path) -> None:
    app = new_faust_app(settings)  # type: ignore[arg-type]
    assert str(app.conf.store) == "rocksdb:"
    assert Path(app.conf.datadir) == tmp_path / "data" / "state"
    assert app.conf.web_enabled is False  # Faust's web server (tables, router) is never started
