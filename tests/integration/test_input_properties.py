"""Whatever a client sends (issue 11): hypothesis writes raw HTTP requests (bodies, headers, paths,
queries; hostile and careless) to the real server; none is answered 5xx, none slowly.

Requests go over a raw socket, so any byte can be sent (aiohttp's client refuses many). The bound
asserted is generous for a loaded 2-core machine; the figures measured are printed with ``-s``
and kept in DESIGN.md."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# Refused before any I/O: the target is 50 ms, asserted of the median (a few ms here); any one
# answer gets room for a loaded 2-core machine (one took 0.28 s while other suites ran).
REFUSED_WITHIN_SECONDS = 0.5
REFUSED_MEDIAN_SECONDS = 0.05
ANSWERED_WITHIN_SECONDS = 2.0  # anything else: a real read or flush on a shared machine
# Statuses given before the request reaches the database or a wallet.
REFUSED_UNREAD = frozenset({400, 405, 408, 413, 415, 431})

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
number_texts = st.one_of(
    st.integers(-(10**30), 10**30).map(str),
    st.decimals(allow_nan=False, allow_infinity=False).map(str),
    st.builds(lambda m, e: f"{m}e{e}", st.integers(-9, 99), st.integers(-(10**7), 10**7)),
    st.from_regex(r"[0-9\u0660-\u0669\uff10-\uff19_+. -]{1,8}", fullmatch=True),
    st.sampled_from(["1e300000", "1e999999", "1E+999990", "-0", "0.001", "1_000", "NaN", "Infinity"]),
)
amounts = st.one_of(number_texts, number_texts.map(json.dumps))  # a JSON number or a string
keys = st.sampled_from(["amount", "toWalletId", "currency", "reason", "dailyWithdrawalLimit", "x"])
bodies = st.one_of(
    st.builds(lambda a: f'{{"amount": {a}}}'.encode(), amounts),
    st.builds(lambda a, b: f'{{"amount": {a}, "amount": {b}}}'.encode(), amounts, amounts),
    st.builds(lambda a: f'{{"toWalletId": "w-prop-to", "amount": {a}}}'.encode(), amounts),
    st.builds(lambda a: f'{{"dailyWithdrawalLimit": {a}}}'.encode(), amounts),
    st.dictionaries(keys, json_values, max_size=3).map(lambda d: json.dumps(d).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.integers(1, 6000).map(lambda n: b"[" * n + b"]" * n),
    st.binary(max_size=64),
    st.just(b""),
)
media_types = st.one_of(
    st.sampled_from(
        [
            None,
            "application/json",
            "application/json; charset=utf-8",
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/json; charset=latin-1",
        ]
    ),
    st.text(max_size=30),
)
header_values = st.one_of(
    st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.binary(max_size=40),
    st.sampled_from([b"\xff\xfe\x80", b"k" * 256, b"ok-key", b" spaced ", b"gzip", b"br"]),
).map(lambda v: v.replace(b"\r", b"").replace(b"\n", b""))
header_names = st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,20}", fullmatch=True)
segments = st.one_of(
    st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True),
    st.text(min_size=1, max_size=70).map(lambda t: quote(t.encode("utf-8", "surrogatepass"), safe="")),
    st.sampled_from(["urn:uuid:00000000-0000-0000-0000-000000000000", "%ff%fe", "a" * 65]),
)
queries = st.one_of(
    st.just(""),
    st.builds(
        lambda name, value: f"?{name}={quote(value.encode('utf-8', 'surrogatepass'), safe='')}",
        st.sampled_from(["limit", "offset", "walletId"]),
        st.one_of(st.text(max_size=12), st.integers(-(2**70), 2**70).map(str)),
    ),
)
ROUTES = [
    ("POST", "/v1/wallet/{}/deposit"),
    ("POST", "/v1/wallet/{}/withdraw"),
    ("POST", "/v1/wallet/{}/transfer"),
    ("POST", "/v1/wallet/{}/freeze"),
    ("PUT", "/v1/wallet/{}/limits"),
    ("GET", "/v1/wallet/{}"),
    ("GET", "/v1/wallet/{}/history"),
    ("GET", "/v1/transfers/{}"),
    ("GET", "/v1/fraud/alerts"),
    ("DELETE", "/v1/wallet/{}"),
]
requests = st.fixed_dictionaries(
    {
        "route": st.sampled_from(ROUTES),
        "segment": segments,
        "query": queries,
        "body": bodies,
        "content_type": media_types,
        "request_id": st.none() | header_values,
        "encoding": st.none() | header_values,
        "other": st.none()
        | st.tuples(st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,20}", fullmatch=True), header_values),
    }
)


def _raw(spec: dict[str, Any]) -> bytes:
    method, template = spec["route"]
    target = template.format(spec["segment"]) + spec["query"]
    lines = [f"{method} {target} HTTP/1.1".encode(), b"Host: test", b"Connection: close"]
    body: bytes = spec["body"]
    if method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}".encode())
    else:
        body = b""
    if spec["content_type"] is not None:
        lines.append(
            b"Content-Type: " + spec["content_type"].encode("utf-8", "surrogatepass").replace(b"\r", b"")
        )
    if spec["request_id"] is not None:
        lines.append(b"X-Request-ID: " + spec["request_id"])
    if spec["encoding"] is not None:
        lines.append(b"Content-Encoding: " + spec["encoding"])
    if spec["other"] is not None:
        lines.append(spec["other"][0].encode() + b": " + spec["other"][1])
    return b"\r\n".join(lines).replace(b"\n\n", b"\n") + b"\r\n\r\n" + body


async def _send(port: int, request: bytes) -> tuple[int, bytes, float]:
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    elapsed = time.perf_counter() - started
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body, elapsed


@pytest.fixture(scope="module")
def timings() -> Any:
    measured: dict[str, list[float]] = {"refused": [], "answered": []}
    yield measured
    if sum(map(len, measured.values())) < 200:
        return  # the test stopped early (it failed): nothing more to say
    # Not vacuous: most requests were refused by validation, some went through (an auth layer
    # in front would refuse them all: send a credential, or build the app with auth off).
    assert len(measured["refused"]) > 50 and measured["answered"], {k: len(v) for k, v in measured.items()}
    assert sorted(measured["refused"])[len(measured["refused"]) // 2] < REFUSED_MEDIAN_SECONDS
    for kind, values in measured.items():
        if values:
            values.sort()
            p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
            print(
                f"\n{kind}: {len(values)} answers, p50 {values[len(values) // 2] * 1000:.1f} ms, "
                f"p99 {p99 * 1000:.1f} ms, max {values[-1] * 1000:.1f} ms"
            )


@settings(
    max_examples=250,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(spec=requests)
async def test_no_request_is_answered_5xx_or_slowly(client, timings, spec):
    request = _raw(spec)
    status, body, elapsed = await _send(client.server.port, request)
    assert status < 500, (request[:300], status, body[:300])
    if status >= 400:
        error = json.loads(body)
        assert set(error) == {"statusCode", "error", "message", "timestamp", "path", "requestId"}, body
        assert error["statusCode"] == status
    kind, bound = (
        ("refused", REFUSED_WITHIN_SECONDS)
        if status in REFUSED_UNREAD
        else ("answered", ANSWERED_WITHIN_SECONDS)
    )
    if elapsed >= bound:
        # Slow once may be the machine (other suites, a GC pass); slow twice is the request.
        elapsed = min(elapsed, (await _send(client.server.port, request))[2])
    timings[kind].append(elapsed)
    assert elapsed < bound, (request[:300], status, elapsed)
