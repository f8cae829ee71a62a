"""Two workers share the partitions and each answers GETs for keys the other owns."""

from __future__ import annotations

import pytest

from tests.fixtures import WorkerPool, client, eventually

pytestmark = pytest.mark.integration


def test_two_workers_answer_for_each_others_keys(workers: WorkerPool) -> None:
    first = workers.create(partitions=4)
    second = workers.create(partitions=4)
    ids = [f"two-{i}" for i in range(40)]
    with client(first) as api:
        rows = [{"originalId": i, "attributes": {"firstname": i}} for i in ids]
        assert api.post("/api/v1/databases/members/recipients", json=rows).status_code == 202

    def readable_from_both() -> bool:
        with client(first) as a, client(second) as b:
            for api in (a, b):
                for i in ids:
                    response = api.get(f"/api/v1/databases/members/recipients/{i}")
                    if response.status_code != 200:
                        return False
                    assert response.json()["attributes"] == {"firstname": i}
        return True

    eventually(readable_from_both, timeout=60)
    # Both workers own partitions (the work is shared) and each one's reads reach the other.
    for worker in (first, second):
        with client(worker) as api:
            served_by = {
                api.get(f"/api/v1/databases/members/recipients/{i}").headers["X-Streamapp-Served-By"] for i in ids
            }
        assert served_by == {first.url, second.url}


def test_a_fresh_worker_answers_reads_before_any_write(workers: WorkerPool) -> None:
    """Ownership comes from the assignment, not from producer metadata filled by earlier sends."""
    worker = workers.create(partitions=8)
    with client(worker) as api:
        assert api.get("/api/v1/databases/members/recipients/nobody").status_code == 404
        assert api.get("/api/v1/databases/members/recipients/nobody/history").json()["records"] == []
