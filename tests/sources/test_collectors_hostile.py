"""Hostile provider answers: each of the eight parsers and the polling loop (issue #15).

A parser returns observations or raises ParseError with a reason, for any bytes; the
collector keeps polling with a bounded wait, refuses bodies over 1 MB at the source and
never sleeps on an unbounded Retry-After or an overflowing backoff.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.core.errors import ParseError
from app.sources.collectors.base import (
    MAX_BODY_BYTES,
    MAX_RETRY_AFTER_S,
    REJECT_PAYLOAD_BYTES,
    parse_retry_after,
)
from app.sources.collectors.observation import (
    MAX_OBSERVATION_NS,
    MIN_OBSERVATION_NS,
    Observation,
    total_parser,
)
from app.sources.collectors.registry import PARSERS
from tests.sources.collectors.provider_server import (
    Answer,
    ProviderServer,
    start_provider_server,
)
from tests.sources.test_collectors_fetch import (
    CASES,
    IDS,
    Case,
    CollectingSink,
    env_for,
    make_collector,
)

CASE = {c.provider: c for c in CASES}
JSON_PROVIDERS = [c.provider for c in CASES if c.provider != "ecb"]
DEEP = ["[" * 100_000, '{"a":' * 100_000, "[" * 1000, '{"data":' + "[" * 5000]
HOSTILE_TEXT = [
    "Infinity",
    "-Infinity",
    "NaN",
    "1" + "0" * 400,
    "1" + "0" * 5000,
    "1e400",
    "-1",
    "0",
    "1e30",
    "99999999999999999999",
    '"Infinity"',
    '"1e400"',
    '"9999999999999999999999"',
    '"-5"',
    '"2262-04-12"',
    '"9999-12-31T23:59:59+14:00"',
    '"0001-01-01T00:00:00+05:00"',
    '"Europe/' + "x" * 5000 + '"',
    "[]",
    "{}",
    "null",
    "true",
    "[[1,2],[3]]",
    '"' + "x" * 3000 + '"',
    "[" * 3000 + "]" * 3000,
    '{"a":' * 2000 + "1" + "}" * 2000,
]


def check_result(parse: Any, body: bytes, series: str = "") -> list[Observation] | ParseError:
    """The totality property: observations (sane ones) or a ParseError with a reason."""
    try:
        out = parse(body, series)
    except ParseError as exc:
        assert exc.reason and isinstance(exc.reason, str)
        return exc
    assert isinstance(out, list)
    for obs in out:
        assert isinstance(obs, Observation)
        assert MIN_OBSERVATION_NS <= obs.observation_time_ns < MAX_OBSERVATION_NS
        assert type(obs.value) is float and not math.isinf(obs.value)
    return out


def is_number(node: Any) -> bool:
    """A JSON number, or a string providers use as one ("40", "1551157200")."""
    if isinstance(node, bool):
        return False
    if isinstance(node, int | float):
        return True
    try:
        float(node)
    except (TypeError, ValueError):
        return False
    return True


def nodes(doc: Any, path: tuple = ()) -> Iterator[tuple]:
    """Every path into a JSON document (dict keys and list indices)."""
    yield path
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from nodes(value, (*path, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            yield from nodes(value, (*path, i))


def replaced(doc: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    copy = json.loads(json.dumps(doc))
    target = copy
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return copy


def mutate(provider: str, index: int, hostile: str) -> bytes:
    """The provider's good fixture with one node replaced by a hostile JSON text."""
    doc = json.loads(CASE[provider].data)
    paths = list(nodes(doc))
    text = json.dumps(replaced(doc, paths[index % len(paths)], "__HOSTILE__"))
    return text.replace('"__HOSTILE__"', hostile).encode()


ECB = CASE["ecb"].data.decode()
ECB_HOSTILE = [
    ECB.replace('rate="1.0823"', 'rate="Infinity"'),
    ECB.replace('rate="1.0823"', 'rate="1' + "0" * 400 + '"'),
    ECB.replace('rate="1.0823"', 'rate="NaN"'),
    ECB.replace('time="', 'time="9999'),
    ECB.replace('time="', 'time="x'),
    ECB.replace('currency="USD"', 'currency=""'),
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;'
    '&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]><lolz>&lol2;</lolz>',
    '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>',
    "<a>" * 50_000 + "</a>" * 50_000,
    "<a>" * 50_000,
    "",
    "\xff\xfe",
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=15,
)
bodies = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=300),
    st.sampled_from(DEEP).map(str.encode),
    st.tuples(
        st.sampled_from(JSON_PROVIDERS), st.integers(0, 10_000), st.sampled_from(HOSTILE_TEXT)
    ).map(lambda t: mutate(*t)),
    st.tuples(st.sampled_from(JSON_PROVIDERS), st.integers(0, 10_000), json_values).map(
        lambda t: mutate(t[0], t[1], json.dumps(t[2]))
    ),
    st.sampled_from(ECB_HOSTILE).map(lambda s: s.encode("utf-8", "surrogateescape")),
    st.sampled_from([c.data for c in CASES]),
)


@pytest.mark.parametrize("provider", sorted(PARSERS))
@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=bodies, series=st.sampled_from(["", "DGS10", "^GSPC", "x" * 300]))
def test_each_parser_returns_observations_or_a_parse_error(
    provider: str, body: bytes, series: str
) -> None:
    check_result(PARSERS[provider], body, series)


# --- the named inputs of the issue, for every provider ---


@pytest.mark.parametrize("provider", JSON_PROVIDERS)
@pytest.mark.parametrize("hostile", HOSTILE_TEXT, ids=lambda h: h[:12])
def test_every_node_of_each_fixture_replaced_by_a_hostile_value(
    provider: str, hostile: str
) -> None:
    """Infinity, huge numbers, a list where an object is expected, deep nesting: anywhere."""
    doc = json.loads(CASE[provider].data)
    for index in range(len(list(nodes(doc)))):
        check_result(PARSERS[provider], mutate(provider, index, hostile), "DGS10")


@pytest.mark.parametrize("provider", JSON_PROVIDERS)
def test_every_object_replaced_by_a_list_is_a_parse_error_or_data(provider: str) -> None:
    doc = json.loads(CASE[provider].data)
    for path in nodes(doc):
        node = doc
        for step in path:
            node = node[step]
        if isinstance(node, dict):
            body = json.dumps(replaced(doc, path, list(node.values()))).encode()
            check_result(PARSERS[provider], body, "DGS10")
    assert isinstance(check_result(PARSERS[provider], b"[" + CASE[provider].data + b"]"), object)


@pytest.mark.parametrize("provider", ["yahoo", "coingecko", "feargreed", "exchangerate_api"])
def test_infinity_in_the_issue_providers_is_refused(provider: str) -> None:
    """The OverflowError of the issue: Infinity (token or string) where a number or time is."""
    doc = json.loads(CASE[provider].data)
    refused = 0
    for index, path in enumerate(nodes(doc)):
        node = doc
        for step in path:
            node = node[step]
        if is_number(node):
            for hostile in ("Infinity", '"Infinity"', "1e400", "1" + "0" * 400):
                result = check_result(PARSERS[provider], mutate(provider, index, hostile))
                refused += isinstance(result, ParseError)
    assert refused > 0


@pytest.mark.parametrize("provider", sorted(PARSERS))
@pytest.mark.parametrize("body", [*DEEP, "<a>" * 100_000], ids=lambda b: b[:6])
def test_deep_nesting_is_a_parse_error(provider: str, body: str) -> None:
    result = check_result(PARSERS[provider], body.encode())
    assert isinstance(result, ParseError)


def test_yahoo_time_infinity_was_an_overflow() -> None:
    """The exact shape of the issue: regularMarketTime Infinity / beyond int64."""
    for hostile in ("Infinity", "1e400", "99999999999999999999", '"1e400"', "1e30"):
        doc = CASE["yahoo"].data.decode().replace('"regularMarketTime": ', '"regularMarketTime": X')
        body = doc.replace("X", hostile + ', "_was": ', 1).encode()
        result = check_result(PARSERS["yahoo"], body)
        assert isinstance(result, ParseError), hostile


def test_total_parser_turns_an_unforeseen_exception_into_a_reject() -> None:
    @total_parser
    def careless(body: bytes, series: str) -> list[Observation]:
        return [{}.get("x").get("y")]  # AttributeError, as a list-for-object once was

    with pytest.raises(ParseError) as err:
        careless(b"{}", "")
    assert err.value.reason == "unreadable" and "AttributeError" in err.value.detail
    assert all(getattr(p, "__wrapped__", None) for p in PARSERS.values())  # all eight wrapped


def test_observation_outside_1900_2200_or_infinite_is_refused() -> None:
    with pytest.raises(ParseError, match="bad_time"):
        Observation("p", "s", 1.0, "u", 2**63, "fx")
    with pytest.raises(ParseError, match="bad_time"):
        Observation("p", "s", 1.0, "u", MAX_OBSERVATION_NS, "fx")
    with pytest.raises(ParseError, match="bad_value"):
        Observation("p", "s", math.inf, "u", 10, "fx")
    assert math.isnan(Observation("p", "s", math.nan, "u", 10, "calendar").value)


def test_retry_after_is_bounded() -> None:
    assert parse_retry_after("9" * 400) == MAX_RETRY_AFTER_S
    assert parse_retry_after("300000000000") == MAX_RETRY_AFTER_S
    assert parse_retry_after("3e11") is None  # not delta-seconds, not a date
    assert parse_retry_after("²") is None  # a digit to str.isdigit, not to float
    assert parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT") == MAX_RETRY_AFTER_S
    assert parse_retry_after("120") == 120.0


# --- through the HTTP path of every collector ---


@pytest.fixture
async def server() -> Iterator[ProviderServer]:
    async for srv in start_provider_server():
        yield srv


@pytest.fixture
async def session() -> Iterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as sess:
        yield sess


@pytest.mark.parametrize("case", CASES, ids=IDS)
async def test_body_over_1mb_is_refused_at_the_source_and_polling_goes_on(
    case: Case, server: ProviderServer, session: aiohttp.ClientSession
) -> None:
    huge = case.data + b" " * (MAX_BODY_BYTES + 1 - len(case.data) + 5000)
    server.serve(case.path, Answer(huge), Answer(case.data))
    collector, sink = make_collector(case, server, session, env_for(case))
    assert await collector.poll_once() == 1.0  # backoff_initial_s
    assert not sink.raw_records
    [(_key, rejection)] = sink.rejections
    assert list(rejection.reasons) == ["body_too_large"] and rejection.stage == "source"
    assert len(rejection.record.payload) == REJECT_PAYLOAD_BYTES
    assert huge.startswith(rejection.record.payload)
    assert collector.health.last_error_reason == "body_too_large"
    assert await collector.poll_once() == 60.0 and len(sink.raw_records) == 1


@pytest.mark.parametrize("retry_after", ["9" * 400, "300000000000", "3e11"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
async def test_huge_retry_after_is_capped_and_health_still_renders(
    case: Case, retry_after: str, server: ProviderServer, session: aiohttp.ClientSession
) -> None:
    server.serve(case.path, Answer(b"slow down", 429, {"Retry-After": retry_after}, "text/plain"))
    collector, _sink = make_collector(case, server, session, env_for(case))
    delay = await collector.poll_once()
    assert 1.0 <= delay <= MAX_RETRY_AFTER_S
    collector.health.next_poll = time.time() + delay  # what run() sets
    state = collector.health.as_json()  # fromtimestamp(now + 3e11) raised before the cap
    assert state["status"] == "rate_limited" and state["next_poll"]


@pytest.mark.parametrize("case", CASES[:1], ids=IDS[:1])
async def test_backoff_after_1100_failures_is_the_cap_not_an_overflow(
    case: Case, server: ProviderServer, session: aiohttp.ClientSession
) -> None:
    server.serve(case.path, Answer(b"down", 503, {}, "text/plain"))
    collector, _sink = make_collector(case, server, session, env_for(case))
    collector.health.consecutive_failures = 1100
    assert await collector.poll_once() == 30.0  # backoff_max_s
    assert collector.health.consecutive_failures == 1101


class FailingSink(CollectingSink):
    async def raw(self, key: str, record: Any) -> None:
        raise ConnectionError("kafka unreachable")


@pytest.mark.parametrize("case", CASES[:2], ids=IDS[:2])
async def test_failed_raw_write_fails_the_poll_and_is_retried(
    case: Case, server: ProviderServer, session: aiohttp.ClientSession
) -> None:
    server.serve(case.path, Answer(case.data))
    collector, _sink = make_collector(case, server, session, env_for(case))
    collector.sink = FailingSink()
    assert await collector.poll_once() == 1.0  # backoff, not the interval
    assert collector.health.raw_write_failures == 1 and collector.health.records == 0
    assert collector.health.last_error_reason == "raw_write_failed"
    assert collector.health.problem()
    collector.sink = working = CollectingSink()
    assert await collector.poll_once() == 60.0  # the next poll writes the answer
    assert len(working.raw_records) == 1 and collector.health.consecutive_failures == 0


# --- random bodies end to end through two collectors' HTTP fetch ---


async def poll_bodies(provider: str, answers: list[Answer]) -> None:
    case = CASE[provider]
    async for srv in start_provider_server():
        srv.serve(case.path, *answers)
        async with aiohttp.ClientSession() as sess:
            collector, sink = make_collector(case, srv, sess, env_for(case))
            for _ in answers:
                delay = await collector.poll_once()
                assert isinstance(delay, float) and 1.0 <= delay <= MAX_RETRY_AFTER_S
                collector.health.as_json()
            for _key, record in sink.raw_records:
                assert len(record.payload) <= MAX_BODY_BYTES
                check_result(PARSERS[provider], record.payload)
            for _key, rejection in sink.rejections:
                assert rejection.reasons and rejection.reasons[0]
            assert len(sink.raw_records) + len(sink.rejections) == len(answers)


answers = st.builds(
    Answer,
    bodies,
    st.sampled_from([200, 200, 200, 404, 429, 500, 503]),
    st.fixed_dictionaries(
        {},
        optional={
            "Retry-After": st.sampled_from(["9" * 400, "3e11", "120", "-5", "x", "²"])
            | st.text(st.characters(codec="ascii", exclude_categories=["Cc"]), max_size=20)
        },
    ),
)


@pytest.mark.parametrize("provider", ["coingecko", "yahoo"])
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(served=st.lists(answers, min_size=1, max_size=4))
def test_random_answers_through_the_http_fetch(provider: str, served: list[Answer]) -> None:
    asyncio.run(poll_bodies(provider, served))
