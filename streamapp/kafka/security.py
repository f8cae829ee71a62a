"""TLS and SASL to the broker: one `[service] kafka_*` configuration, two client libraries.

The Faust app takes credentials objects (`broker_credentials`), which faust-streaming turns into
aiokafka options for its consumer and producer; the producers, admin clients and consumers we
create ourselves (imports, enqueue, topic creation, gap reads) take the same options directly.
Both are built here, from the same `KafkaSecurity`, so no client can be left plain by mistake.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import faust
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaConnectionError, KafkaError, SaslAuthenticationFailed
from aiokafka.helpers import create_ssl_context
from faust.types.auth import CredentialsT

from streamapp.settings import KafkaSecurity, Settings


def ssl_context(security: KafkaSecurity) -> ssl.SSLContext | None:
    """The client TLS context (CA file or the system CAs, optional client certificate); None without TLS."""
    if not security.tls:
        return None
    context: ssl.SSLContext = create_ssl_context(
        cafile=security.ca_file,
        certfile=security.cert_file,
        keyfile=security.key_file,
    )
    # Off, the chain is still verified against the CA: only the name in the certificate is not.
    context.check_hostname = security.check_hostname
    return context


def faust_credentials(security: KafkaSecurity) -> CredentialsT | None:
    """`broker_credentials` of the Faust app (faust's `credentials_to_aiokafka_auth` maps them)."""
    context = ssl_context(security)
    if security.sasl:
        return faust.SASLCredentials(
            username=security.username,
            password=security.password,
            ssl_context=context,
            mechanism=security.sasl_mechanism,
        )
    return faust.SSLCredentials(context) if context is not None else None


def client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for an aiokafka producer, consumer, client or admin client."""
    security = settings.service.kafka
    options: dict[str, Any] = {"security_protocol": security.protocol}
    context = ssl_context(security)
    if context is not None:
        options["ssl_context"] = context
    if security.sasl:
        options.update(
            sasl_mechanism=security.sasl_mechanism,
            sasl_plain_username=security.username,
            sasl_plain_password=security.password,
        )
    return options


#: How long the diagnosis waits for the broker: a TLS client at a plaintext port may get no answer at all.
CONNECT_TIMEOUT = 10.0


async def connect_problem(settings: Settings) -> str:
    """Why the first broker turns this client away, in the operator's terms (one connection, its own error).

    aiokafka reports a failed bootstrap as "Unable to bootstrap" and only logs the cause; a
    worker that cannot start should say which key to fix.
    """
    security = settings.service.kafka
    host, _, port = settings.service.broker.removeprefix("kafka://").split(",")[0].rpartition(":")
    where = f"the broker {host}:{port} ({security.protocol})"
    timeout_ms = int(CONNECT_TIMEOUT * 1000)
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            conn = await create_conn(host, int(port), request_timeout_ms=timeout_ms, **client_options(settings))
    except SaslAuthenticationFailed:
        return (
            f"{where} refused SASL authentication ({security.sasl_mechanism} as {security.username!r}): "
            "check service.kafka_username and service.kafka_password_file"
        )
    except ssl.SSLCertVerificationError as exc:
        return f"{where} has a TLS certificate not signed by a trusted CA ({exc.verify_message}): check kafka_ca_file"
    except ssl.SSLError as exc:
        return f"TLS with {where} failed ({exc.reason or exc}): does that listener speak {security.protocol}?"
    except TimeoutError:
        return f"{where} did not answer within {CONNECT_TIMEOUT:.0f} s: does that listener speak {security.protocol}?"
    except (KafkaConnectionError, ConnectionResetError):  # it hung up on the handshake: the protocols differ
        return f"{where} closed the connection: does that listener speak {security.protocol}?"
    except (OSError, KafkaError) as exc:
        return f"cannot connect to {where}: {exc}"
    conn.close()
    return f"{where} accepts connections but not requests: see the broker's log"
