"""Hostile OANDA streams through the real client and a local HTTP server (issue #15).

The stream is any mix of good PRICE/HEARTBEAT lines and hostile ones, cut into arbitrary
chunks. Whatever arrives, the client keeps running, every good line becomes exactly one
record (in order), every heartbeat is counted, and every bad line is exactly one reject
with a reason and its bytes.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from app.core.errors import ParseError
from app.sources.brokers.oanda import MAX_LINE_BYTES, Heartbeat, OandaPriceStream, parse_oanda_line
from tests.sources.test_oanda_client import CollectingSink, broker, eventually

FIXTURE = Path(__file__).parent.parent / "fixtures" / "oanda" / "stream.jsonl"
FIXTURE_LINES = FIXTURE.read_bytes().splitlines()
PRICE = next(line for line in FIXTURE_LINES if b'"PRICE"' in line and b'"tradeable":true' in line)
HEARTBEAT = next(line for line in FIXTURE_LINES if b"HEARTBEAT" in line)

# The inputs named in issue #15 and their relatives: each must be one reject.
HOSTILE_LINES = [
    b"[" * 1000,  # RecursionError in _reject_key's json.loads before the fix
    b"[" * 60_000,
    b'{"a":' * 5000 + b"1" + b"}" * 5000,
    b'{"type":"PRICE","instrument":"EUR_USD","x":' + b"[" * 3000 + b"]" * 3000 + b"}",
    PRICE.replace(b'"liquidity":10000000', b'"liquidity":NaN', 1),
    PRICE.replace(b'"liquidity":10000000', b'"liquidity":Infinity', 1),
    PRICE.replace(b'"liquidity":10000000', b'"liquidity":1' + b"0" * 400, 1),
    PRICE.replace(b'"liquidity":10000000', b'"liquidity":1' + b"0" * 5000, 1),
    PRICE.replace(b'"liquidity":10000000', b'"liquidity":1e400', 1),
    PRICE.replace(b'"liquidity":10000000', b'"liquidity":1e300', 1),
    PRICE.replace(b'"liquidity":10000000', b'"liquidity":-1', 1),
    PRICE.replace(b'"1.19195"', b'"1' + b"9" * 400 + b'"', 1),
    PRICE.replace(b'"2017-09-24T22:20:39.888097022Z"', b'"9999-12-31T23:59:59.999999999Z"', 1),
    PRICE.replace(b'"2017-09-24T22:20:39.888097022Z"', b"1" + b"0" * 30, 1),
    PRICE.replace(b'"EUR_USD"', b'["EUR_USD"]', 1),
    PRICE.replace(b'"bids":[', b'"bids":{"a":[', 1).replace(b'],"asks"', b']},"asks"', 1),
    PRICE.replace(b"EUR_USD", b"EUR_\xff\xfeUSD", 1),  # invalid UTF-8 inside a string
    b"\xff\xfe\x00{",
    b"[1,2,3]",
    b'"PRICE"',
    b"null",
    b"NaN",
    b"{}",
    b'{"type":"PRICE"}',
    b"x" * (MAX_LINE_BYTES + 10),
    b" " * (MAX_LINE_BYTES + 10) + PRICE,  # its tail must not become a tick of its own
    b" " * (MAX_LINE_BYTES + 10),  # blanks, but no keep-alive: one reject
]

good_lines = st.sampled_from([PRICE, HEARTBEAT, *FIXTURE_LINES])
hostile_lines = st.one_of(
    st.sampled_from(HOSTILE_LINES),
    st.binary(max_size=300).map(lambda b: b.replace(b"\n", b"")),
    # a good line with a slice replaced by random bytes
    st.tuples(st.integers(0, len(PRICE)), st.integers(0, 40), st.binary(max_size=20)).map(
        lambda t: (PRICE[: t[0]] + t[2] + PRICE[t[0] + t[1] :]).replace(b"\n", b"")
    ),
)


@dataclass
class Expected:
    ticks: list[bytes]
    heartbeats: int
    bad: list[bytes]


def expected_of(lines: list[bytes]) -> Expected:
    """What the client must make of each whole line (the parser is the line oracle)."""
    out = Expected([], 0, [])
    for line in lines:
        if len(line) > MAX_LINE_BYTES:
            out.bad.append(line)
            continue
        if not line.strip():
            continue  # keep-alive newline
        try:
            item = parse_oanda_line(line, "fxcm", 0)
        except ParseError:
            out.bad.append(line)
            continue
        if isinstance(item, Heartbeat):
            out.heartbeats += 1
        else:
            out.ticks.append(line)
    return out


async def stream_through_client(
    chunks: list[bytes], pause: float = 0.0
) -> tuple[CollectingSink, OandaPriceStream]:
    """Serve `chunks` once (then 503s) and run the client until it has read them all.

    With `pause`, the server waits after each chunk so that the client reads the chunks
    one by one (without it, a fast server's chunks may arrive coalesced).
    """
    served = 0

    async def stream(request: web.Request) -> web.StreamResponse:
        nonlocal served
        served += 1
        if served > 1:
            return web.Response(status=503, text="gone")
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for chunk in chunks:
            await resp.write(chunk)
            if pause:
                await asyncio.sleep(pause)
        return resp

    app = web.Application()
    app.router.add_get("/v3/accounts/{account}/pricing/stream", stream)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    sink = CollectingSink()
    url = str(server.make_url("")).rstrip("/")
    client = OandaPriceStream("fxcm", broker(url), sink, environ={"TEST_TOKEN": "secret"})
    task = asyncio.create_task(client.run())
    try:
        # reconnects counts the end of the first stream: everything in it was handled
        await eventually(lambda: client.state.reconnects >= 1 or task.done(), timeout=20)
        assert not task.done(), "the client task ended"
    finally:
        await client.close()
        await asyncio.wait_for(task, 5)  # ends cleanly, no exception
        await server.close()
    return sink, client


def check(sink: CollectingSink, client: OandaPriceStream, lines: list[bytes]) -> None:
    want = expected_of(lines)
    assert [record.payload for _key, record in sink.records] == want.ticks
    assert client.state.heartbeats_total == want.heartbeats
    assert len(sink.rejects) == len(want.bad), [r.reasons for _k, r in sink.rejects]
    for (_key, rejection), line in zip(sink.rejects, want.bad, strict=True):
        assert rejection.reasons and all(rejection.reasons), "a reject without a reason"
        if len(line) > MAX_LINE_BYTES:
            assert list(rejection.reasons) == ["oversized_line"]
            assert line.startswith(rejection.record.payload)  # the part read, not more
        else:
            assert rejection.record.payload == line
    assert client.state.rejects_total == len(want.bad)


def cut(body: bytes, points: list[int]) -> list[bytes]:
    edges = sorted({0, len(body), *(p % (len(body) + 1) for p in points)})
    return [body[a:b] for a, b in itertools.pairwise(edges) if b > a]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    lines=st.lists(st.one_of(good_lines, good_lines, hostile_lines), min_size=1, max_size=25),
    points=st.lists(st.integers(0, 10**7), max_size=30),
    trailing_newline=st.booleans(),
)
@example(lines=[PRICE, b"[" * 1000, PRICE], points=[10, 500, 1001, 1400], trailing_newline=True)
def test_any_stream_in_any_chunks_keeps_the_client_running(
    lines: list[bytes], points: list[int], trailing_newline: bool
) -> None:
    body = b"\n".join(lines) + (b"\n" if trailing_newline else b"")
    sink, client = asyncio.run(stream_through_client(cut(body, points)))
    check(sink, client, lines)


async def test_issue_lines_between_good_ones_each_rejected_and_the_good_ones_arrive() -> None:
    """Every hostile line of the issue between two good ones, one chunk per 97 bytes."""
    lines = [PRICE]
    for hostile in HOSTILE_LINES:
        lines += [hostile, PRICE, HEARTBEAT]
    body = b"\n".join(lines) + b"\n"
    sink, client = await stream_through_client([body[i : i + 97] for i in range(0, len(body), 97)])
    check(sink, client, lines)
    assert len(sink.records) == len(HOSTILE_LINES) + 1
    assert len(sink.rejects) == len(HOSTILE_LINES)
    reasons = [r.reasons[0] for _k, r in sink.rejects]
    assert reasons[0] == "malformed_json"  # 1,000 "[": too deep for the JSON reader
    assert reasons.count("oversized_line") == 3
    assert {"bad_liquidity", "bad_time", "not_an_object", "bad_price"} <= set(reasons)


async def test_oversized_line_read_in_pieces_is_one_reject_and_its_tail_no_tick() -> None:
    """A line over the limit arrives in 8 KiB reads: rejected once when the limit is
    passed, and the rest of it (a valid PRICE after the padding) is not a tick."""
    long_line = b" " * (2 * MAX_LINE_BYTES) + PRICE  # passes the limit well before its end
    lines = [PRICE, long_line, HEARTBEAT, PRICE]
    body = b"\n".join(lines) + b"\n"
    chunks = [body[i : i + 4096] for i in range(0, len(body), 4096)]
    sink, client = await stream_through_client(chunks, pause=0.005)
    check(sink, client, lines)
    assert [list(r.reasons) for _k, r in sink.rejects] == [["oversized_line"]]
    assert len(sink.records) == 2


def test_parse_is_total_on_the_issue_lines() -> None:
    for line in HOSTILE_LINES:
        try:
            parse_oanda_line(line, "fxcm", 0)
        except ParseError as exc:
            assert exc.reason and exc.detail is not None
        else:
            raise AssertionError(f"accepted a hostile line: {line[:80]!r}")
