"""`faust -A app replay --to-earliest | --to-datetime T [--topic T ...] [--keep-tables]`."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import click
from faust.cli import AppCommand, option

from app.cli import replay_offsets
from app.cli.exits import failed, usage_error
from app.pipeline.faust_app import app, settings
from app.pipeline.kafka_clients import exits_on_kafka_failure
from app.pipeline.topics import RAW_BROKER_TICKS, RAW_EXTERNAL_DATA, RAW_HISTORICAL_TICKS
from app.tables.candles import candle_history
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
    RAW_BROKER_TICKS: (symbol_state, partition_state, candle_history),
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


def describe_plan(topics: tuple[str, ...], when: datetime | None, keep_tables: bool) -> str:
    """What a replay will reset and delete, before it does anything."""
    start = "the earliest offset" if when is None else f"the first offset at {when.isoformat()}"
    lines = [f"replay of group {app.conf.id}: reset {', '.join(topics)} to {start}"]
    if keep_tables:
        lines.append("  tables kept")
    else:
        state = derived_state()
        for topic in topics:
            for changelog in state[topic].changelogs:
                lines.append(f"  delete changelog topic {changelog}")
            for name in state[topic].tables:
                lines.append(f"  delete local table files {app.conf.tabledir}/{name}-*")
    return "\n".join(lines)


def _parse_when(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        usage_error(f"not an ISO 8601 time: {text!r}")
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
    option("--yes", "-y", "yes", is_flag=True, help="Do it without asking."),
    option("--dry-run", is_flag=True, help="Only print what would be reset and deleted."),
)
@exits_on_kafka_failure
async def replay(
    self: AppCommand,
    to_earliest: bool,
    to_datetime: str | None,
    topics: tuple[str, ...],
    keep_tables: bool,
    yes: bool,
    dry_run: bool,
) -> None:
    """Reset the workers' consumer group so that the next start re-processes raw input."""
    if to_earliest == (to_datetime is not None):
        usage_error("give exactly one of --to-earliest or --to-datetime")
    when = None if to_earliest else _parse_when(to_datetime or "")
    unknown = sorted(set(topics) - set(RAW_TOPICS))
    if unknown:
        usage_error(f"not a raw topic: {', '.join(unknown)} (raw: {', '.join(RAW_TOPICS)})")
    self.say(describe_plan(topics or RAW_TOPICS, when, keep_tables))
    if dry_run:
        return
    if not yes:
        if not sys.stdin.isatty():
            usage_error("no terminal to confirm on: add --yes (or --dry-run)")
        click.confirm("reset and delete the above?", abort=True)
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
        failed(f"replay refused: {exc}")
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
