"""The recipients and history API against a real worker on the real broker."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.fixtures import TOKENS, Worker, WorkerPool, client, eventually, get_when

pytestmark = pytest.mark.integration


def test_upsert_then_get(worker: Worker) -> None:
    with client(worker) as api:
        body = {"email": "ann@example.com", "attributes": {"firstname": "Ann", "score": 7, "birthday": "1990-05-01"}}
        response = api.put("/api/v1/databases/members/recipients/C-1", json=body)
        assert response.status_code == 202, response.text
    recipient = get_when(worker, "/api/v1/databases/members/recipients/C-1")
    assert recipient["originalId"] == "C-1"
    assert recipient["email"] == "ann@example.com"
    assert recipient["attributes"] == {"firstname": "Ann", "score": 7, "birthday": "1990-05-01"}
    assert recipient["status"] == "active"
    assert recipient["softBounces"] == 0
    assert recipient["createdAt"] == recipient["updatedAt"]


def test_get_unknown_recipient_is_404(worker: Worker) -> None:
    with client(worker) as api:
        response = api.get("/api/v1/databases/members/recipients/nobody-here")
    assert response.status_code == 404
    assert "not found" in response.json()["error"]


def test_partial_update_keeps_other_fields(worker: Worker) -> None:
    path = "/api/v1/databases/members/recipients/C-2"
    with client(worker) as api:
        api.put(path, json={"email": "bo@example.com", "attributes": {"firstname": "Bo", "zipcode": "111 22"}})
        get_when(worker, path)
        assert api.put(path, json={"attributes": {"zipcode": "999 99"}}).status_code == 202
    recipient = get_when(worker, path, lambda r: r["attributes"].get("zipcode") == "999 99")
    assert recipient["email"] == "bo@example.com"
    assert recipient["attributes"] == {"firstname": "Bo", "zipcode": "999 99"}


def test_status_unsubscribed_is_not_undone_by_an_upsert_without_status(worker: Worker) -> None:
    path = "/api/v1/databases/members/recipients/C-3"
    with client(worker) as api:
        api.put(path, json={"email": "cy@example.com", "status": "unsubscribed"})
        get_when(worker, path, lambda r: r["status"] == "unsubscribed")
        api.put(path, json={"attributes": {"firstname": "Cy"}})
    recipient = get_when(worker, path, lambda r: r["attributes"].get("firstname") == "Cy")
    assert recipient["status"] == "unsubscribed"


@pytest.mark.parametrize("fmt", ["json", "ndjson"])
def test_batch_upsert_of_10000(worker: Worker, fmt: str) -> None:
    rows = [
        {"originalId": f"{fmt}-{i}", "email": f"user{i}@example.com", "attributes": {"score": i}} for i in range(10_000)
    ]
    if fmt == "json":
        content, ctype = json.dumps(rows).encode(), "application/json"
    else:
        content, ctype = "\n".join(json.dumps(r) for r in rows).encode(), "application/x-ndjson"
    with client(worker) as api:
        response = api.post("/api/v1/databases/members/recipients", content=content, headers={"Content-Type": ctype})
        assert response.status_code == 202, response.text
        assert response.json() == {"accepted": 10_000}
    for i in (0, 1, 4_999, 9_999):
        recipient = get_when(worker, f"/api/v1/databases/members/recipients/{fmt}-{i}")
        assert recipient["attributes"] == {"score": i}
        assert recipient["email"] == f"user{i}@example.com"


def test_batch_with_a_bad_row_accepts_nothing(worker: Worker) -> None:
    rows = [{"originalId": "ok-1"}, {"originalId": "bad-1", "email": "nope"}, {"originalId": ""}]
    with client(worker) as api:
        response = api.post("/api/v1/databases/members/recipients", json=rows)
        assert response.status_code == 422
        assert response.json()["details"] == [
            {"path": "/1/email", "message": "'nope' is not a valid e-mail address"},
            {"path": "/2/originalId", "message": "must not be empty"},
        ]
        api.put("/api/v1/databases/members/recipients/after-bad-batch", json={})
        get_when(worker, "/api/v1/databases/members/recipients/after-bad-batch")
        assert api.get("/api/v1/databases/members/recipients/ok-1").status_code == 404


def test_history_post_get_order_and_filter(worker: Worker) -> None:
    records = [
        {
            "originalId": "H-1",
            "type": "purchase",
            "sku": "A",
            "price": 10.0,
            "quantity": 2,
            "total": 20.0,
            "time": "2026-01-01T10:00:00+01:00",
        },
        {
            "originalId": "H-1",
            "type": "purchase",
            "sku": "B",
            "price": 5.0,
            "quantity": -1,
            "total": -5.0,
            "time": "2026-03-01T10:00:00+01:00",
            "fields": {"custom1": "store-7"},
        },
        {"originalId": "H-1", "type": "return", "sku": "A", "time": "2026-02-01T10:00:00"},
    ]
    with client(worker) as api:
        response = api.post("/api/v1/databases/members/history", json=records)
        assert response.status_code == 202, response.text
    history = get_when(worker, "/api/v1/databases/members/recipients/H-1/history", lambda h: len(h["records"]) == 3)
    assert [r["sku"] for r in history["records"]] == ["B", "A", "A"]
    assert [r["type"] for r in history["records"]] == ["purchase", "return", "purchase"]
    credit = history["records"][0]
    assert credit["quantity"] == -1 and credit["total"] == -5.0 and credit["fields"] == {"custom1": "store-7"}
    purchases = get_when(worker, "/api/v1/databases/members/recipients/H-1/history?type=purchase")
    assert [r["sku"] for r in purchases["records"]] == ["B", "A"]
    with client(worker) as api:
        assert api.get("/api/v1/databases/members/recipients/H-1/history?type=nonsense").status_code == 422


def test_history_takes_a_single_object_too(worker: Worker) -> None:
    """SPEC §8: one JSON object is a body of one record, its errors named at the body's own paths."""
    path = "/api/v1/databases/members/history"
    one = {"originalId": "H-2", "type": "visit", "sku": "/shoes", "time": "2026-04-01T10:00:00+02:00"}
    pretty = json.dumps({"originalId": "H-2", "type": "login", "time": "2026-04-02T10:00:00Z"}, indent=2)
    with client(worker) as api:
        assert api.post(path, json=one).json() == {"accepted": 1}
        answer = api.post(path, content=f"\n {pretty}\n", headers={"Content-Type": "application/json"})
        assert (answer.status_code, answer.json()) == (202, {"accepted": 1})
        bad = api.post(path, json={"originalId": "H-2", "type": "nonsense", "price": "x"})
        assert bad.status_code == 422
        assert [d["path"] for d in bad.json()["details"]] == ["/type", "/price"]
        assert api.post(path, json={"type": "visit"}).json()["details"] == [
            {"path": "/originalId", "message": "is required"}
        ]
        assert api.post(path, json="visit").status_code == 422  # neither an object nor an array
    history = get_when(worker, "/api/v1/databases/members/recipients/H-2/history", lambda h: len(h["records"]) == 2)
    assert [(r["type"], r["time"]) for r in history["records"]] == [
        ("login", "2026-04-02T10:00:00+00:00"),
        ("visit", "2026-04-01T08:00:00+00:00"),
    ]


@pytest.mark.parametrize("kind", ["mail.sent", "mail.opened", "mail.clicked", "mail.bounced", "mail.complained",
                                  "mail.unsubscribed", "mail.other"])  # fmt: skip
def test_clients_cannot_post_engagement_types(worker: Worker, kind: str) -> None:
    """SPEC §8: streamapp records mail.* itself; a client's is refused naming the field, in every body form."""
    path = "/api/v1/databases/members/history"
    reason = f"{kind!r} is reserved: streamapp records the mail.* engagement types itself"
    record = {"originalId": "E-1", "type": kind}
    ndjson = f"{json.dumps({'originalId': 'E-1'})}\n{json.dumps(record)}\n".encode()
    with client(worker) as api:
        single = api.post(path, json=record)
        array = api.post(path, json=[{"originalId": "E-1"}, record])
        lines = api.post(path, content=ndjson, headers={"Content-Type": "application/x-ndjson"})
        for answer, where in ((single, "/type"), (array, "/1/type"), (lines, "/1/type")):
            assert answer.status_code == 422, answer.text
            assert answer.json()["details"] == [{"path": where, "message": reason}]
        assert api.post(path, json=[{"originalId": "E-1", "sku": "after"}]).status_code == 202
    history = get_when(worker, "/api/v1/databases/members/recipients/E-1/history", lambda h: len(h["records"]) >= 1)
    assert {r["type"] for r in history["records"]} == {"purchase"}  # nothing of the refused bodies


def test_engagement_types_can_be_read(worker: Worker) -> None:
    with client(worker) as api:
        answer = api.get("/api/v1/databases/members/recipients/E-2/history?type=mail.sent")
        assert (answer.status_code, answer.json()) == (200, {"originalId": "E-2", "records": []})
        assert api.get("/api/v1/databases/members/recipients/E-2/history?type=mail.nonsense").status_code == 422
        document = api.get("/api/v1/openapi.json").json()
    schemas = document["components"]["schemas"]
    assert "mail.sent" in schemas["AnyHistoryType"]["enum"] and "mail.sent" not in schemas["HistoryType"]["enum"]


def test_configured_history_types_add_to_the_defaults(workers: WorkerPool) -> None:
    worker = workers.create(extra='[[history_types]]\nname = "booking"\n[[history_types]]\nname = "purchase"\n')
    path = "/api/v1/databases/members/history"
    with client(worker) as api:
        types = api.get("/api/v1/databases").json()["historyTypes"]
        assert types == ["purchase", "return", "visit", "view", "cart", "signup", "login", "download", "form",
                         "custom", "booking"]  # fmt: skip
        body = [{"originalId": "T-1", "type": "booking"}, {"originalId": "T-1", "type": "signup"}]
        assert api.post(path, json=body).status_code == 202
        refused = api.post(path, json={"originalId": "T-1", "type": "pageview"})
        assert refused.json()["details"][0]["message"].startswith("unknown history type (configured: purchase, ")
    history = get_when(worker, "/api/v1/databases/members/recipients/T-1/history", lambda h: len(h["records"]) == 2)
    assert sorted(r["type"] for r in history["records"]) == ["booking", "signup"]


def test_delete_erases_recipient_and_history(worker: Worker) -> None:
    base = "/api/v1/databases/members"
    with client(worker) as api:
        api.put(f"{base}/recipients/D-1", json={"email": "del@example.com"})
        api.post(f"{base}/history", json=[{"originalId": "D-1", "sku": "X"}])
        get_when(worker, f"{base}/recipients/D-1/history", lambda h: len(h["records"]) == 1)
        assert api.delete(f"{base}/recipients/D-1").status_code == 202
        eventually(lambda: api.get(f"{base}/recipients/D-1").status_code == 404)
        assert api.get(f"{base}/recipients/D-1/history").json()["records"] == []


@pytest.mark.parametrize(
    ("token", "method", "path", "status"),
    [
        (None, "GET", "/api/v1/databases/members/recipients/x", 401),
        ("unknown", "GET", "/api/v1/databases/members/recipients/x", 401),
        ("sender", "GET", "/api/v1/databases/members/recipients/x", 403),
        ("reader", "PUT", "/api/v1/databases/members/recipients/x", 403),
        ("reader", "DELETE", "/api/v1/databases/members/recipients/x", 403),
        ("reader", "POST", "/api/v1/databases/members/history", 403),
        ("other", "GET", "/api/v1/databases/members/recipients/x", 403),
        ("other", "PUT", "/api/v1/databases/members/recipients/x", 403),
        ("admin", "GET", "/api/v1/databases/nosuchdb/recipients/x", 404),
        ("other", "GET", "/api/v1/databases/other/recipients/x", 404),
        (None, "GET", "/api/v1/databases", 401),
        ("sender", "GET", "/api/v1/databases", 403),
    ],
)
def test_auth_matrix(worker: Worker, token: str | None, method: str, path: str, status: int) -> None:
    headers = {}
    if token == "unknown":
        headers["Authorization"] = "Bearer not-a-configured-token"
    elif token:
        headers["Authorization"] = f"Bearer {TOKENS[token]}"
    body = {} if method == "PUT" else ([] if method == "POST" else None)
    response = httpx.request(method, worker.url + path, headers=headers, json=body, timeout=10)
    assert response.status_code == status, response.text
    assert "error" in response.json()
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_token_restricted_to_a_database_sees_only_it(worker: Worker) -> None:
    with client(worker, "other") as api:
        names = [db["name"] for db in api.get("/api/v1/databases").json()["databases"]]
    assert names == ["other"]
    with client(worker) as api:
        schema = {db["name"]: db for db in api.get("/api/v1/databases").json()["databases"]}
    assert schema["members"]["attributes"]["score"] == "int"
    assert schema["other"]["autoCreateAttributes"] is True


@pytest.mark.parametrize(
    ("body", "path", "message"),
    [
        ({"email": "a@"}, "/email", "'a@' is not a valid e-mail address"),
        ({"email": 5}, "/email", "must be a string or null"),
        ({"attributes": {"score": "many"}}, "/attributes/score", "must be an integer"),
        ({"attributes": {"ratio": "x"}}, "/attributes/ratio", "must be a number"),
        ({"attributes": {"vip": "yes"}}, "/attributes/vip", "must be true or false"),
        ({"attributes": {"birthday": "1 May"}}, "/attributes/birthday", "must be an ISO 8601 date (YYYY-MM-DD)"),
        (
            {"attributes": {"lastSeen": "soon"}},
            "/attributes/lastSeen",
            "must be an ISO 8601 date-time (e.g. 2026-11-27T08:00:00+01:00)",
        ),
        ({"attributes": {"shoesize": "42"}}, "/attributes/shoesize", "unknown attribute of database 'members'"),
        ({"attributes": []}, "/attributes", "must be an object"),
        ({"status": "gone"}, "/status", "must be one of active, inactive, unsubscribed, bounced"),
        ({"nickname": "x"}, "/nickname", "unknown field"),
        ([1, 2], "/", "must be a JSON object"),
    ],
)
def test_422_details_name_each_bad_field(worker: Worker, body: Any, path: str, message: str) -> None:
    with client(worker) as api:
        response = api.put("/api/v1/databases/members/recipients/V-1", json=body)
    assert response.status_code == 422
    assert response.json()["details"] == [{"path": path, "message": message}]


def test_422_for_bad_original_id_in_path_and_batch(worker: Worker) -> None:
    with client(worker) as api:
        long_id = "x" * 257
        response = api.put(f"/api/v1/databases/members/recipients/{long_id}", json={})
        assert response.status_code == 422
        assert response.json()["details"] == [{"path": "/originalId", "message": "must be at most 256 characters"}]
        response = api.post("/api/v1/databases/members/recipients", json=[{"email": "a@example.com"}])
        assert response.json()["details"][0] == {"path": "/0/originalId", "message": "is required"}


def test_malformed_json_and_ndjson(worker: Worker) -> None:
    with client(worker) as api:
        response = api.put(
            "/api/v1/databases/members/recipients/M-1",
            content=b'{"email": ',
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 422
        assert response.json()["error"] == "malformed JSON"
        assert response.json()["details"][0]["path"] == "/"
        response = api.post(
            "/api/v1/databases/members/recipients",
            content=b'{"originalId": "a"}\n{oops}\n',
            headers={"Content-Type": "application/x-ndjson"},
        )
        assert response.status_code == 422
        assert response.json()["details"][0]["path"] == "line 2"


def test_413_for_oversized_body_and_too_many_items(worker: Worker) -> None:
    with client(worker) as api:
        huge = b"[" + b" " * (17 * 1024 * 1024) + b"]"
        response = api.post(
            "/api/v1/databases/members/recipients", content=huge, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 413
        assert "exceeds the limit" in response.json()["error"]
        rows = [{"originalId": f"too-many-{i}"} for i in range(10_001)]
        response = api.post("/api/v1/databases/members/recipients", json=rows)
        assert response.status_code == 413
        assert "10000" in response.json()["error"]


def test_health_metrics_and_openapi(worker: Worker) -> None:
    assert httpx.get(f"{worker.url}/healthz").status_code == 200
    with client(worker) as api:
        api.get("/api/v1/databases/members/recipients/some-secret-id")
    metrics = httpx.get(f"{worker.url}/metrics").text
    route = "/api/v1/databases/{db}/recipients/{originalId}"
    assert f'streamapp_http_requests_total{{code="404",method="GET",route="{route}"}}' in metrics
    assert "streamapp_http_request_duration_seconds_bucket" in metrics
    assert "some-secret-id" not in metrics
    assert "streamapp_faust_messages_received" in metrics
    document = httpx.get(f"{worker.url}/api/v1/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    assert set(document["paths"]) >= {
        "/healthz",
        "/metrics",
        "/api/v1/databases",
        "/api/v1/databases/{db}/recipients",
        "/api/v1/databases/{db}/recipients/{originalId}",
        "/api/v1/databases/{db}/history",
        "/api/v1/databases/{db}/recipients/{originalId}/history",
    }
    put = document["paths"]["/api/v1/databases/{db}/recipients/{originalId}"]["put"]
    assert {"202", "401", "403", "404", "413", "422"} <= set(put["responses"])


def test_faust_builtin_web_routes_are_not_served(worker: Worker) -> None:
    for path in ("/router/", "/table/recipients/", "/graph/", "/stats/", "/"):
        assert httpx.get(worker.url + path).status_code == 404, path
