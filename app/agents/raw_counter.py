"""Skeleton agent: counts raw broker records per symbol (replaced by the processing core)."""

from __future__ import annotations

from app.faust_app import app
from app.tables.raw_counts import raw_counts
from app.topics import raw_broker_ticks


@app.agent(raw_broker_ticks)
async def count_raw(stream):  # type: ignore[no-untyped-def]
    async for key, _value in stream.items():
        symbol = key.decode() if key else ""
        raw_counts[symbol] += 1
