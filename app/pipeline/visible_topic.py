"""faust.Topic that returns from `declare()` only once the topic is usable.

Kafka answers CreateTopics before every broker's metadata lists the new topic; a worker
that subscribes in that gap gets no partitions for it ("Ignoring missing topic") and
never consumes it until a restart. Faust creates the topics it declares (ours, and the
tables' changelogs) right before subscribing, so waiting here closes the gap.
"""

from __future__ import annotations

import asyncio
import time

import faust
from aiokafka.admin import AIOKafkaAdminClient

from app.pipeline.kafka_clients import kafka_options

VISIBLE_TIMEOUT_S = 30.0


class VisibleTopic(faust.Topic):
    async def declare(self) -> None:
        await super().declare()
        if self.app.conf.topic_allow_declare:
            await wait_visible(self._bootstrap(), list(self.topics))

    def _bootstrap(self) -> str:
        return ",".join(f"{url.host}:{url.port or 9092}" for url in self.app.conf.broker)


async def wait_visible(bootstrap: str, topics: list[str]) -> None:
    """Until every partition of `topics` has a leader in the cluster metadata."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **kafka_options())
    await admin.start()
    try:
        deadline = time.monotonic() + VISIBLE_TIMEOUT_S
        while True:
            metas = await admin.describe_topics(topics)
            ready = all(
                m["error_code"] == 0
                and m["partitions"]
                and all(p["leader"] >= 0 for p in m["partitions"])
                for m in metas
            )
            if ready:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics not visible after {VISIBLE_TIMEOUT_S}s: {topics}")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()
