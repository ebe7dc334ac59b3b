from __future__ import annotations

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from integrations.prometheus import PrometheusObserver
from tests.idemkit.shop import Shop, client


async def test_outcomes_are_counted(aredis: aioredis.Redis) -> None:
    registry = CollectorRegistry()
    observer = PrometheusObserver(registry=registry)
    shop = Shop()
    async with client(shop.app(store=aredis, observer=observer)) as c:
        for _ in range(3):
            await c.post("/payments", content=b"x", headers={"Idempotency-Key": "p"})

    def value(outcome: str) -> float | None:
        return registry.get_sample_value("idemkit_requests_total", {"outcome": outcome})

    assert value("executed") == 1 and value("replayed") == 2
