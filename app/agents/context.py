"""Raw provider answers -> `market-context-stream`, emitting only what changed.

Parsing happens here, not in the collector, so replaying `raw.external.data` reproduces
the context stream (receive time comes from the raw record, never the wall clock). An
answer that cannot be read goes to `market-data-rejects` with stage "context".
"""

from __future__ import annotations

import logging

from google.protobuf.message import DecodeError

from app.core.errors import ParseError
from app.core.reasons import INTERNAL_ERROR, MALFORMED_BATCH, STAGE_CONTEXT, UNENCODABLE
from app.ops.metrics import CONTEXT_OUT
from app.pipeline.faust_app import app
from app.pipeline.topics import market_context_stream, market_data_rejects, raw_external_data
from app.sources.collectors.observation import Observation
from app.sources.collectors.registry import observations_from_record
from app.tables.context import last_context
from app.wire import codec

log = logging.getLogger(__name__)


def encode_observation(obs: Observation, receive_time_ns: int) -> bytes:
    return codec.encode_market_context(
        provider=obs.provider,
        series=obs.series,
        value=obs.value,
        unit=obs.unit,
        observation_time_ns=obs.observation_time_ns,
        category=obs.category,
        attributes=dict(obs.attributes),
        receive_time_ns=receive_time_ns,
    )


@app.agent(raw_external_data)
async def normalise_context(stream):  # type: ignore[no-untyped-def]
    async for event in stream.events():
        raw_key = event.key or b""
        where = event.message
        lineage = (where.topic, where.partition, where.offset)
        try:
            batch = codec.decode_raw_batch(event.value)
        except (DecodeError, RecursionError, ValueError) as exc:
            record = codec.RawRecord(payload=event.value or b"")
            rejection = codec.encode_rejection(
                [MALFORMED_BATCH], str(exc), record, STAGE_CONTEXT, *lineage
            )
            await market_data_rejects.send(key=raw_key, value=rejection)
            continue
        for index, record in enumerate(batch.records):
            try:
                observations = observations_from_record(record, raw_key.decode(errors="replace"))
            except ParseError as exc:
                rejection = codec.encode_rejection(
                    [exc.reason], exc.detail, record, STAGE_CONTEXT, *lineage, index=index
                )
                await market_data_rejects.send(key=raw_key, value=rejection)
                continue
            except Exception as exc:  # a parser bug must not stop the stream: record it
                log.exception("internal error on %s record %d", raw_key, index)
                rejection = codec.encode_rejection(
                    [INTERNAL_ERROR], repr(exc)[:500], record, STAGE_CONTEXT, *lineage, index=index
                )
                await market_data_rejects.send(key=raw_key, value=rejection)
                continue
            for obs in observations:
                try:
                    fingerprint = obs.fingerprint()
                    value = encode_observation(obs, record.receive_time_ns)
                except Exception as exc:  # e.g. a time outside int64: rejected, not acked away
                    log.warning("unencodable observation %s of %s: %r", obs.key, raw_key, exc)
                    rejection = codec.encode_rejection(
                        [UNENCODABLE],
                        f"{obs.key}: {type(exc).__name__}: {exc}"[:500],
                        record,
                        STAGE_CONTEXT,
                        *lineage,
                        index=index,
                    )
                    await market_data_rejects.send(key=raw_key, value=rejection)
                    continue
                if last_context.get(obs.key) == fingerprint:
                    continue
                # Acknowledged before remembered: a crash in between repeats a value, never
                # loses one (context data is slow, so waiting for each ack costs nothing).
                delivered = await market_context_stream.send(key=obs.key.encode(), value=value)
                await delivered
                CONTEXT_OUT.labels(obs.provider).inc()
                last_context[obs.key] = fingerprint
