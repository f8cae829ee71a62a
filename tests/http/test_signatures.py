"""Requests between workers are signed: a client cannot pass for a worker by setting a header.

The signer is tested directly; the middleware against a real worker over loopback: a forged or
stale `X-Streamapp-Forwarded` is a 401, a signed request (with a body, replayed to the handler
after the signature check read it) is served. Real forwards between two workers are exercised
by tests/http/test_forwarding.py and tests/http/test_worker_down.py.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from streamapp.http.signatures import FORWARDED, FRESHNESS, RequestSigner, forwarding_keys
from streamapp.settings import KeyRing, load_settings
from tests.fixtures import TOKENS, Worker, WorkerPool, config_text
from tests.mail.fixtures import Peers, peers_module  # noqa: F401
from tests.sending.fixtures import smtp_extra, write_templates

OLD, NEW = b"o" * 32, b"n" * 32
PATH = "/api/v1/triggers/news/messages?x=1"
HEADERS = {"Authorization": "Bearer abc", "Content-Type": "application/json", "Idempotency-Key": "k1"}
BODY = b'{"originalId": "a"}'


def test_a_signature_verifies_with_any_key_of_the_ring_and_only_for_its_request() -> None:
    now = 1_800_000_000.0
    signed = RequestSigner(KeyRing.of([OLD])).sign("POST", PATH, HEADERS, BODY, now=now)
    rotated = RequestSigner(KeyRing.of([NEW, OLD]))  # the new key signs, the old one still verifies
    assert rotated.verifies(signed, "POST", PATH, HEADERS, BODY, now=now + 1)
    assert not RequestSigner(KeyRing.of([NEW])).verifies(signed, "POST", PATH, HEADERS, BODY, now=now)
    # A worker that already signs with the new key is still understood by one that has only the old one.
    ahead = rotated.sign("POST", PATH, HEADERS, BODY, now=now)
    assert RequestSigner(KeyRing.of([OLD])).verifies(ahead, "POST", PATH, HEADERS, BODY, now=now)
    assert not RequestSigner(KeyRing.of([b"x" * 32])).verifies(ahead, "POST", PATH, HEADERS, BODY, now=now)
    for method, path, headers, body in [
        ("GET", PATH, HEADERS, BODY),
        ("POST", "/api/v1/triggers/other/messages?x=1", HEADERS, BODY),
        ("POST", PATH, {**HEADERS, "Idempotency-Key": "k2"}, BODY),
        ("POST", PATH, {**HEADERS, "Authorization": "Bearer other"}, BODY),
        ("POST", PATH, HEADERS, BODY + b" "),
    ]:
        assert not rotated.verifies(signed, method, path, headers, body, now=now)


def test_a_stale_or_malformed_signature_is_refused() -> None:
    signer = RequestSigner(KeyRing.of([OLD]))
    now = 1_800_000_000.0
    signed = signer.sign("GET", PATH, {}, b"", now=now)
    assert signer.verifies(signed, "GET", PATH, {}, b"", now=now + FRESHNESS)
    assert not signer.verifies(signed, "GET", PATH, {}, b"", now=now + FRESHNESS + 1)
    assert not signer.verifies(signed, "GET", PATH, {}, b"", now=now - FRESHNESS - 1)  # signed "in the future"
    for value in ("1", "", "t=1800000000", signed + "0", signed.upper(), "t=x,s=" + "0" * 64):
        assert not signer.verifies(value, "GET", PATH, {}, b"", now=now)


def test_workers_without_a_secret_file_share_a_key_that_other_services_do_not(tmp_path: Path) -> None:
    def ring(service_id: str, name: str) -> KeyRing:
        config = tmp_path / f"{name}.toml"
        config.write_text(config_text("kafka://127.0.0.1:9", tmp_path / name, 1, service_id))
        return forwarding_keys(load_settings(config, environ={}))

    assert ring("svc", "a").signing == ring("svc", "b").signing != ring("other", "c").signing


@pytest.fixture(scope="module")
def sending_worker(kafka: str, tmp_path_factory: pytest.TempPathFactory, peers_module: Peers) -> Iterator[Worker]:  # noqa: F811
    """One sending worker (it owns every partition) for the module."""
    base = tmp_path_factory.mktemp("signed")
    write_templates(base)
    sink, _ = peers_module.streamapp_sink()
    pool = WorkerPool(kafka, base)
    worker = pool.create(extra=smtp_extra(sink.port))
    yield worker
    pool.stop_all()


def signer_of(worker: Worker) -> RequestSigner:
    return RequestSigner(forwarding_keys(load_settings(worker.config, environ={})))


def admin(**extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS['admin']}", **extra}


@pytest.mark.integration
def test_a_client_setting_the_forwarded_header_is_refused(sending_worker: Worker) -> None:
    path = "/api/v1/databases/members/recipients/nobody"
    for forged in ("1", "t=1800000000,s=" + "0" * 64):
        response = httpx.get(sending_worker.url + path, headers=admin(**{FORWARDED: forged}))
        assert response.status_code == 401, response.text
        assert response.json() == {"error": "forwarded request without a valid worker signature"}
    assert httpx.get(sending_worker.url + path, headers=admin()).status_code == 404  # the same request, unforwarded


@pytest.mark.integration
def test_a_signed_request_is_served_and_a_stale_one_refused(sending_worker: Worker) -> None:
    signer = signer_of(sending_worker)
    path = "/api/v1/databases/members/recipients/nobody"
    fresh = signer.sign("GET", path, admin(), b"")
    stale = signer.sign("GET", path, admin(), b"", now=time.time() - FRESHNESS - 5)
    assert httpx.get(sending_worker.url + path, headers=admin(**{FORWARDED: fresh})).status_code == 404
    assert httpx.get(sending_worker.url + path, headers=admin(**{FORWARDED: stale})).status_code == 401


@pytest.mark.integration
def test_a_signed_body_reaches_the_handler_and_an_altered_one_does_not(sending_worker: Worker) -> None:
    signer = signer_of(sending_worker)
    path = "/api/v1/triggers/news/messages"
    body = f'{{"originalId": "sig-{uuid.uuid4().hex[:6]}", "email": "sig@example.com"}}'.encode()
    headers = admin(**{"Content-Type": "application/json", "Idempotency-Key": uuid.uuid4().hex})
    signed = signer.sign("POST", path, headers, body)
    altered = httpx.post(sending_worker.url + path, content=body.replace(b"sig@", b"evil@"),
                         headers={**headers, FORWARDED: signed})  # fmt: skip
    assert altered.status_code == 401
    accepted = httpx.post(sending_worker.url + path, content=body, headers={**headers, FORWARDED: signed})
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["messageId"]
