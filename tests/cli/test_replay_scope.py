"""Which state a replay of each raw topic clears (no Kafka needed)."""

from __future__ import annotations

from pathlib import Path

from app.cli import replay_offsets
from app.cli.replay import DERIVED_TABLES, derived_state
from app.pipeline.faust_app import app
from app.tables.bridge import bridge_published

# Derived from market-data-stream, which a replay appends to and never rewinds.
NEVER_CLEARED = {bridge_published.name}


def test_every_table_belongs_to_exactly_one_raw_topic_or_is_never_cleared() -> None:
    app.discover()
    owners: dict[str, list[str]] = {}
    for topic, tables in DERIVED_TABLES.items():
        for table in tables:
            owners.setdefault(table.name, []).append(topic)
    assert all(len(topics) == 1 for topics in owners.values()), owners
    assert set(app.tables.keys()) == set(owners) | NEVER_CLEARED


def test_scope_per_topic() -> None:
    derived = derived_state()
    assert derived["raw.broker.ticks"].tables == [
        "symbol-state",
        "partition-state",
        "candle-history",
    ]
    assert derived["raw.historical.ticks"].tables == [
        "historical-symbol-state",
        "historical-partition-state",
    ]
    assert derived["raw.external.data"].tables == ["context-last-emitted"]
    assert derived["raw.external.data"].changelogs == [
        f"{app.conf.id}-context-last-emitted-changelog"
    ]


def test_table_files_match_whole_names_only(tmp_path: Path) -> None:
    for name in (
        "partition-state-0.db",
        "partition-state-backups",
        "historical-partition-state-0.db",
        "symbol-state-3.db",
        "partition-state-x.db",
    ):
        (tmp_path / name).mkdir()
    found = replay_offsets.table_files(tmp_path, ["partition-state"])
    assert [p.name for p in found] == ["partition-state-0.db", "partition-state-backups"]


def test_plan_round_trips_through_the_marker(tmp_path: Path) -> None:
    plan = replay_offsets.ReplayPlan(
        "g",
        ["raw.broker.ticks"],
        None,
        {replay_offsets.TopicPartition("raw.broker.ticks", 1): 7},
        ["g-symbol-state-changelog"],
        ["symbol-state"],
        str(tmp_path),
    )
    replay_offsets._write_marker(replay_offsets.marker_path(tmp_path), plan)
    again = replay_offsets.ReplayPlan.from_json(replay_offsets.marker_path(tmp_path).read_text())
    assert again.resumed and (again.offsets, again.changelogs, again.tables) == (
        plan.offsets,
        plan.changelogs,
        plan.tables,
    )
    try:
        replay_offsets.check_no_pending_replay(tmp_path)
    except replay_offsets.ReplayRefused as exc:
        assert "interrupted replay" in str(exc)
    else:
        raise AssertionError("a worker would start with a replay pending")
