"""DKIM signing benchmark: what signing a message costs next to the bare OpenSSL signature.

Distinct messages (own recipient, message id, subject and body, as in a personalised campaign)
of ~800 bytes (a one-time code) and ~8 KB (a receipt) are built with `MimeBuilder` first, so only
signing is timed. Printed, in µs per message, each from its fastest batch of 20 messages (the runs
take turns batch by batch, so that other load on a shared machine counts least and alike):

- `bare_us`: one signature with `cryptography` over data of the message's size: RSA-2048
  PKCS#1 v1.5 with SHA-256, Ed25519 (which hashes the data twice with SHA-512). `bare_us_32`:
  the same over 32 bytes, which is what DKIM's Ed25519-SHA256 actually signs (RFC 8463).
- `sign_us`: `DkimSigner.sign` with an RSA key, an Ed25519 key, and both; `ratio` divides it by
  the bare cost of the same signature(s) (goal <= 1.3). `ratio_32` uses `bare_us_32`.
- `dkimpy_us`: dkimpy's `dkim.sign` on the same messages (relaxed/relaxed), for comparison.

Run: `.venv/bin/python bench/dkim.py` (`--messages N`, `--rounds R`).
"""

from __future__ import annotations

import argparse
import base64
import importlib
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from tempfile import TemporaryDirectory
from types import ModuleType
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from streamapp.mail.dkim import DkimKey, DkimSigner, generate_key, load_keys
from streamapp.mail.mime import MimeBuilder

BATCH = 20
PARAGRAPH = "Tack för ditt köp hos oss \u2013 vi hoppas att du blir nöjd med varorna. "


def messages(count: int, large: bool) -> list[bytes]:
    """Personalised messages: ~800 bytes (short text, tiny HTML) or ~8 KB (a receipt)."""
    builder = MimeBuilder("news@example.com", "Butik Åsa", unsubscribe_mailto="unsubscribe@example.com")
    out = []
    for n in range(count):
        if large:
            text = f"Hej Åsa{n},\n\n" + (PARAGRAPH * 3 + "\n") * 6
            rows = "".join(f'<tr><td class="sku">SKU-{i}</td><td>{i * 10 + n} €</td></tr>' for i in range(80))
            html = f"<html><body><p>Hej Åsa{n},</p><p>{PARAGRAPH * 4}</p><table>{rows}</table></body></html>\n"
        else:
            text, html = f"Din kod: {n:06d}\n", f"<p>Din kod: <b>{n:06d}</b></p>\n"
        out.append(
            builder.build(
                message_id=f"01JD5Z3N8K{n:08d}",
                to=f"r{n}@example.org",
                subject=f"Åsa{n}, ditt kvitto \u2013 {n} €" if large else f"Din kod {n}",
                text=text,
                html=html,
                unsubscribe_url=f"https://mail.example.com/u/AbCdEfGhIjKlMnOpQrStUvWxYz0123456789{n}",
            )
        )
    return out


def best_us(runs: Mapping[str, tuple[Callable[[bytes], object], Sequence[bytes]]], rounds: int) -> dict[str, float]:
    """µs per item of each run, from its fastest batch of BATCH items. The runs take turns batch by
    batch, so load from other processes on the machine (which only ever slows a batch down) falls
    on all of them alike, and the fastest batches are the ones it did not touch."""
    best = dict.fromkeys(runs, float("inf"))
    for index in range(rounds):
        for name, (run, data) in runs.items():
            start = index * BATCH % max(1, len(data) - BATCH)
            batch = data[start : start + BATCH]
            started = time.perf_counter()
            for item in batch:
                run(item)
            best[name] = min(best[name], (time.perf_counter() - started) / len(batch))
    return {name: round(seconds * 1e6, 2) for name, seconds in best.items()}


def bare(rsa_key: rsa.RSAPrivateKey, ed_key: ed25519.Ed25519PrivateKey) -> dict[str, Callable[[bytes], object]]:
    pkcs1, sha256 = padding.PKCS1v15(), hashes.SHA256()
    return {"rsa": lambda data: rsa_key.sign(data, pkcs1, sha256), "ed25519": ed_key.sign}


def measure(data: list[bytes], keys: dict[str, tuple[DkimKey, ...]], rounds: int) -> dict[str, Any]:
    rsa_key, ed_key = keys["rsa"][0].private_key, keys["ed25519"][0].private_key
    assert isinstance(rsa_key, rsa.RSAPrivateKey) and isinstance(ed_key, ed25519.Ed25519PrivateKey)
    signs = bare(rsa_key, ed_key)
    digests = [os.urandom(32) for _ in data]
    runs = {f"bare {alg}": (sign, data) for alg, sign in signs.items()}
    runs |= {f"bare_32 {alg}": (sign, digests) for alg, sign in signs.items()}
    runs |= {f"sign {name}": (DkimSigner(ks).sign, data) for name, ks in keys.items()}
    us = best_us(runs, rounds)
    bare_us = {alg: us[f"bare {alg}"] for alg in signs}
    bare_32 = {alg: us[f"bare_32 {alg}"] for alg in signs}
    for totals in (bare_us, bare_32):
        totals["both"] = round(totals["rsa"] + totals["ed25519"], 2)
    sign_us = {name: us[f"sign {name}"] for name in keys}
    return {
        "avg_message_bytes": sum(map(len, data)) // len(data),
        "bare_us": bare_us,
        "bare_us_32": bare_32,
        "sign_us": sign_us,
        "ratio": {name: round(sign_us[name] / bare_us[name], 3) for name in sign_us},
        "ratio_32": {name: round(sign_us[name] / bare_32[name], 3) for name in sign_us},
        "dkimpy_us": dkimpy_costs(data[: 3 * BATCH], keys),
    }


def import_dkimpy() -> ModuleType:
    """dkimpy's `dkim` package: this script's own folder, first on sys.path, would give this file."""
    here = Path(__file__).resolve().parent
    sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != here]
    return importlib.import_module("dkim")


def check(message: bytes, keys: tuple[DkimKey, ...]) -> None:
    """Time nothing that dkimpy would not verify."""
    dkimpy = import_dkimpy()
    records = {f"{key.dns_name}.".encode(): key.txt_record().encode() for key in keys}
    signed = DkimSigner(keys).sign(message)
    for index in range(len(keys)):
        if not dkimpy.DKIM(signed).verify(idx=index, dnsfunc=lambda name, timeout=5: records.get(name)):
            raise SystemExit(f"signature {index} does not verify")


def dkimpy_costs(data: list[bytes], keys: dict[str, tuple[DkimKey, ...]]) -> dict[str, float]:
    """dkimpy's own signer (pure-Python RSA; Ed25519 through PyNaCl) on a sample of the messages."""
    dkimpy = import_dkimpy()
    costs = {}
    for name in ("rsa", "ed25519"):
        key = keys[name][0]
        if name == "rsa":
            secret = key.private_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
            )
        else:
            raw = key.private_key.private_bytes(
                serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
            )
            secret = base64.b64encode(raw)
        algorithm = b"rsa-sha256" if name == "rsa" else b"ed25519-sha256"

        def sign(message: bytes, key: DkimKey = key, secret: bytes = secret, algorithm: bytes = algorithm) -> bytes:
            return bytes(
                dkimpy.sign(
                    message,
                    key.selector.encode(),
                    key.domain.encode(),
                    secret,
                    canonicalize=(b"relaxed", b"relaxed"),
                    signature_algorithm=algorithm,
                )
            )

        costs[name] = best_us({name: (sign, data)}, 3)[name]
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=2000, help="distinct messages of each size")
    parser.add_argument("--rounds", type=int, default=300, help="batches of 20 messages timed per run")
    args = parser.parse_args()
    with TemporaryDirectory() as folder:
        rsa_file = generate_key("example.com", "r2026", "rsa", out_dir=folder).key_path
        ed_file = generate_key("example.com", "e2026", "ed25519", out_dir=folder).key_path
        entries = [
            {"domain": "example.com", "selector": "r2026", "private_key": rsa_file.name},
            {"domain": "example.com", "selector": "e2026", "private_key": ed_file.name},
        ]
        rsa_key, ed_key = load_keys(entries, Path(folder))
    keys = {"rsa": (rsa_key,), "ed25519": (ed_key,), "both": (rsa_key, ed_key)}
    result: dict[str, Any] = {"messages": args.messages, "rounds": args.rounds}
    for size, large in (("small", False), ("large", True)):
        data = messages(args.messages, large)
        check(data[0], (rsa_key, ed_key))
        result[size] = measure(data, keys, args.rounds)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
