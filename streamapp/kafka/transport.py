"""Faust's aiokafka transport with a short fetch long-poll.

Faust hard-codes `fetch_max_wait_ms=1500`. aiokafka re-fetches a partition
only after its buffered records are consumed, and waits for the in-flight
long-poll first; once producers go quiet, every catch-up step then stalls up
to 1.5 s (measured: two 1.1 s pauses in a 300,000-row batch upsert). 100 ms
bounds that stall at the cost of more idle fetch requests.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers import aiokafka as driver

FETCH_MAX_WAIT_MS = 100


class ConsumerThread(driver.AIOKafkaConsumerThread):  # type: ignore[misc]
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read by AIOKafkaConsumer.start()
        return consumer


class Consumer(driver.Consumer):  # type: ignore[misc]
    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(driver.Transport):  # type: ignore[misc]
    Consumer = Consumer


def install(app: Any) -> None:
    """Use this transport for the app's consumer."""
    app.transport = Transport(app.conf.broker_consumer, app)
