"""Hypothesis: no Idempotency-Key header value produces a 500; rejections are problem+json."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from idemkit.keys import parse_idempotency_key
from idemkit.testing import RedisServer
from tests.idemkit.shop import Shop, post_scope

header_values = st.one_of(
    st.binary(max_size=300),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300).map(
        lambda s: s.encode()
    ),
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=260).map(
        lambda s: b'"' + s.replace("\\", "\\\\").replace('"', '\\"').encode() + b'"'
    ),
)


async def call(
    app: Any, headers: list[tuple[bytes, bytes]]
) -> tuple[int, dict[bytes, bytes], bytes]:
    scope = post_scope("/payments", headers)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"x", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = sent[0]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], dict(start["headers"]), body


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=header_values)
def test_any_header_value_gets_a_clear_answer(redis_server: RedisServer, value: bytes) -> None:
    async def run() -> None:
        redis_client = aioredis.Redis.from_url(redis_server.url)
        shop = Shop()
        status, headers, body = await call(
            shop.app(store=redis_client), [(b"idempotency-key", value)]
        )
        await redis_client.aclose()
        assert status in (201, 400), status  # 201: a first execution or a replay
        if status == 400:
            assert headers[b"content-type"] == b"application/problem+json"
            assert json.loads(body)["detail"]
            assert shop.calls["pay"] == 0

    asyncio.run(run())


@given(
    key=st.text(
        alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=255
    )
)
def test_quoted_and_bare_forms_parse_to_the_same_key(key: str) -> None:
    quoted = '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'
    assert parse_idempotency_key(quoted) == key
    if not key.startswith('"'):
        assert parse_idempotency_key(key) == key
