"""A worker configured for a 3-broker cluster declares everything with 3 replicas and
produces with acks=all and idempotence (faust's own producer, which the sources share).

Run in a subprocess: the settings and the faust app are built once per process at import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = r"""
import asyncio, json
from app.pipeline.faust_app import app
from app.pipeline import topics
from app.tables import ticks  # noqa: F401 (registers the tables)

async def main():
    producer = app.producer._new_producer()
    return {
        "topics": {t.get_topic_name(): t.replicas or app.conf.topic_replication_factor
                   for t in topics.ALL_TOPICS},
        "changelogs": {name: table.changelog_topic.replicas or app.conf.topic_replication_factor
                       for name, table in app.tables.items()},
        "idempotent": producer._txn_manager is not None,
        "producer_acks": app.producer.acks,
    }

print(json.dumps(asyncio.run(main())))
"""


def probe(**env: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_cluster_settings_replicate_every_topic_and_changelog_three_times() -> None:
    got = probe(INGEST__KAFKA__REPLICATION_FACTOR="3")
    assert got["topics"] and set(got["topics"].values()) == {3}, got["topics"]
    assert got["changelogs"] and set(got["changelogs"].values()) == {3}, got["changelogs"]
    assert got["producer_acks"] == -1
    assert got["idempotent"] is True


def test_acks_one_producer_is_not_idempotent() -> None:
    """aiokafka refuses idempotence with acks=1: the adaptation must leave it off then."""
    got = probe(INGEST__KAFKA__PRODUCER_ACKS="1")
    assert got["producer_acks"] == 1
    assert got["idempotent"] is False
    assert set(got["topics"].values()) == {1}
