"""`faust -A app replay --to-earliest | --to-datetime T [--topic T ...] [--keep-tables]`."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import click
from faust.cli import AppCommand, option

from app.cli import replay_offsets
from app.pipeline.faust_app import app, settings
from app.pipeline.kafka_clients import exits_on_kafka_failure
from app.pipeline.topics import RAW_BROKER_TICKS, RAW_EXTERNAL_DATA, RAW_HISTORICAL_TICKS
from app.tables.context import last_context
from app.tables.ticks import (
    historical_partition_state,
    historical_state,
    partition_state,
    symbol_state,
)

RAW_TOPICS = (RAW_BROKER_TICKS, RAW_HISTORICAL_TICKS, RAW_EXTERNAL_DATA)
# Each table is derived from exactly one raw topic; a replay of the topic clears them.
DERIVED_TABLES = {
    RAW_BROKER_TICKS: (symbol_state, partition_state),
    RAW_HISTORICAL_TICKS: (historical_state, historical_partition_state),
    RAW_EXTERNAL_DATA: (last_context,),
}


def derived_state() -> dict[str, replay_offsets.DerivedState]:
    """raw topic -> the changelog topics and local table names a replay of it clears."""
    return {
        topic: replay_offsets.DerivedState(
            [t.changelog_topic.get_topic_name() for t in tables], [t.name for t in tables]
        )
        for topic, tables in DERIVED_TABLES.items()
    }


def _parse_when(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise click.BadParameter(f"not an ISO 8601 time: {text!r}") from exc
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@app.command(
    option("--to-earliest", is_flag=True, help="Replay everything still in the raw topics."),
    option("--to-datetime", default=None, help="Replay from this time, e.g. 2026-01-01T00:00:00Z."),
    option("--topic", "topics", multiple=True, help="Raw topic to reset (default: all raw)."),
    option(
        "--keep-tables",
        is_flag=True,
        help="Keep table state (the replayed ticks will then mostly be rejected as duplicates).",
    ),
)
@exits_on_kafka_failure
async def replay(
    self: AppCommand,
    to_earliest: bool,
    to_datetime: str | None,
    topics: tuple[str, ...],
    keep_tables: bool,
) -> None:
    """Reset the workers' consumer group so that the next start re-processes raw input."""
    if to_earliest == (to_datetime is not None):
        raise click.UsageError("give exactly one of --to-earliest or --to-datetime")
    when = None if to_earliest else _parse_when(to_datetime or "")
    try:
        plans = await replay_offsets.replay(
            settings.kafka.bootstrap_servers,
            app.conf.id,
            topics or RAW_TOPICS,
            when,
            derived_state(),
            app.conf.datadir,
            table_dir=None if keep_tables else app.conf.tabledir,
        )
    except replay_offsets.ReplayRefused as exc:
        sys.stderr.write(f"replay refused: {exc}\n")
        raise SystemExit(1) from None
    for plan in plans:
        if plan.resumed:
            self.say(f"finished the interrupted replay of {', '.join(plan.topics)}")
        for tp, offset in sorted(plan.offsets.items()):
            self.say(f"{plan.group} {tp.topic}[{tp.partition}] -> offset {offset}")
        for topic in plan.deleted_topics:
            self.say(f"deleted changelog {topic}")
        for path in plan.deleted_files:
            self.say(f"deleted local table state {path}")
    self.say("replay ready: start the workers")
