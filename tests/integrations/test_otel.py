"""OpenTelemetry spans from idemkit's events, seen by OpenTelemetry's in-memory exporter."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio as aioredis
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from idemkit import FencedLock, idempotent
from idemkit.observe import Event
from integrations.otel import OpenTelemetryObserver
from tests.idemkit.shop import Shop, client

KEY = "8e03978e-40d5-43e8-bc93-6894a57f9324"


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def names(exporter: InMemorySpanExporter) -> list[str]:
    return [s.name for s in exporter.get_finished_spans()]


async def test_claim_complete_request_and_replay_spans(
    aredis: aioredis.Redis, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    observer = OpenTelemetryObserver(tracer_provider=provider)
    before = time.time_ns()
    async with client(Shop().app(store=aredis, observer=observer)) as c:
        await c.post("/payments", content=b"secret body", headers={"Idempotency-Key": KEY})
        await c.post("/payments", content=b"secret body", headers={"Idempotency-Key": KEY})
    after = time.time_ns()
    assert names(exporter) == [
        "idemkit.claim",
        "idemkit.complete",
        "idemkit.request",
        "idemkit.claim",
        "idemkit.replay",
    ]
    finished: tuple[ReadableSpan, ...] = exporter.get_finished_spans()
    request = finished[2]
    assert request.attributes is not None
    assert request.attributes["idemkit.outcome"] == "executed"
    assert request.attributes["http.route"] == "/payments"
    assert finished[0].attributes is not None and finished[0].attributes["idemkit.op"] == "claim"
    for span in finished:
        assert span.start_time is not None and span.end_time is not None
        assert before <= span.start_time <= span.end_time <= after
        values = " ".join(str(v) for v in (span.attributes or {}).values())
        assert KEY not in values and "secret" not in values
    # The request span covers its claim and its completion.
    assert request.start_time <= finished[0].start_time  # type: ignore[operator]
    assert finished[1].end_time <= request.end_time  # type: ignore[operator]


async def test_lock_acquire_span_and_parenting(
    aredis: aioredis.Redis, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    observer = OpenTelemetryObserver(tracer_provider=provider)
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("job") as job:
        async with FencedLock(aredis, "job-lock", observer=observer):
            pass
    finished = {s.name: s for s in exporter.get_finished_spans()}
    acquire = finished["idemkit.lock.acquire"]
    assert acquire.attributes is not None and acquire.attributes["idemkit.outcome"] == "acquired"
    assert acquire.parent is not None and acquire.parent.span_id == job.get_span_context().span_id
    assert "idemkit.lock.hold" in finished


def test_sync_calls_and_failures_have_spans(
    sync_redis: redis.Redis, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    observer = OpenTelemetryObserver(tracer_provider=provider, events={"idempotency.call"})

    @idempotent(sync_redis, key=lambda order: order, namespace="test.ship", observer=observer)
    def ship(order: str) -> str:
        return f"shipped {order}"

    ship("o-1")
    ship("o-1")
    observer(Event("idempotency.call", "store_failed", route="test.ship"))
    finished = exporter.get_finished_spans()
    assert [s.name for s in finished] == ["idemkit.call", "idemkit.replay", "idemkit.call"]
    assert finished[0].attributes is not None
    assert finished[0].attributes["idemkit.namespace"] == "test.ship"
    assert finished[2].status.status_code is StatusCode.ERROR
