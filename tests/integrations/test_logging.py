"""Structured log records from idemkit's events (``extra=`` fields) and their JSON form."""

from __future__ import annotations

import json
import logging

import pytest
import redis.asyncio as aioredis

from idemkit.observe import Event
from integrations.logging import JsonFormatter, LoggingObserver
from tests.idemkit.shop import Shop, client

KEY = "8e03978e-40d5-43e8-bc93-6894a57f9324"


async def test_each_request_is_a_record_with_fields(
    aredis: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="idemkit.events")
    observer = LoggingObserver()
    async with client(Shop().app(store=aredis, observer=observer)) as c:
        await c.post("/payments", content=b"card 4242", headers={"Idempotency-Key": KEY})
        await c.post("/payments", content=b"card 4242", headers={"Idempotency-Key": KEY})
    requests = [r for r in caplog.records if getattr(r, "idemkit", None) == "idempotency.request"]
    assert [r.idemkit_outcome for r in requests] == ["executed", "replayed"]  # type: ignore[attr-defined]
    assert requests[0].idemkit_route == "/payments"  # type: ignore[attr-defined]
    assert requests[0].idemkit_duration_ms > 0  # type: ignore[attr-defined]
    stores = [r for r in caplog.records if getattr(r, "idemkit", None) == "idempotency.store"]
    assert [r.idemkit_op for r in stores] == ["claim", "complete", "claim"]  # type: ignore[attr-defined]
    for record in caplog.records:
        text = record.getMessage() + json.dumps(vars(record), default=str)
        assert KEY not in text and "4242" not in text


def test_failures_are_warnings_and_json_lines_carry_the_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="idemkit.events")
    observer = LoggingObserver(level=logging.INFO)
    observer(Event("idempotency.store", "unavailable", duration=1.0, attrs={"op": "claim"}))
    observer(Event("lock.acquire", "acquired", duration=0.002, attrs={"kind": "lock"}))
    failed, acquired = caplog.records
    assert failed.levelno == logging.WARNING and acquired.levelno == logging.INFO
    line = json.loads(JsonFormatter().format(failed))
    assert line["idemkit"] == "idempotency.store" and line["idemkit_op"] == "claim"
    assert line["idemkit_outcome"] == "unavailable" and line["idemkit_duration_ms"] == 1000.0
    assert line["level"] == "WARNING" and "unavailable" in line["message"]


def test_core_log_lines_carry_the_same_field(caplog: pytest.LogCaptureFixture) -> None:
    from idemkit.ratelog import RateLimitedLog

    caplog.set_level(logging.WARNING, logger="idemkit")
    RateLimitedLog(logging.getLogger("idemkit")).log(logging.WARNING, "unavailable", "store down")
    line = json.loads(JsonFormatter().format(caplog.records[-1]))
    assert line["idemkit"] == "unavailable" and line["idemkit_count"] == 1
