"""The Celery app the Celery fault test runs in real workers (``celery -A ...``)."""

from __future__ import annotations

import os
import signal
import time

import redis
from celery import Celery

from idemkit.observe import Event
from idemkit.patterns import RedisEffect
from idemkit.patterns.celery import once_only

BROKER = os.environ.get("IDEMKIT_CELERY_BROKER", "redis://127.0.0.1:1/0")

app = Celery("idemkit_patterns_test", broker=BROKER)
app.conf.update(
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    # A killed worker's unacknowledged message becomes visible again after this long.
    broker_transport_options={"visibility_timeout": 1},
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
client = redis.Redis.from_url(BROKER)


def _kill_after_apply(event: Event) -> None:
    client.incr(f"test:{event.outcome}")
    # Die after the effect was applied and before the task returns (so before the ack),
    # once across all workers.
    if (
        os.environ.get("IDEMKIT_KILL_AFTER_APPLY")
        and event.outcome == "applied"
        and client.set("test:killed", 1, nx=True)
    ):
        os.kill(os.getpid(), signal.SIGKILL)


@app.task(name="bump", acks_late=True)
@once_only(RedisEffect(client), observer=_kill_after_apply)
def bump(pipe: object, event: str, hold: float = 0.0) -> str:
    client.incr("test:runs")
    client.set("test:running", event)
    time.sleep(hold)  # the test kills the worker in here: mid-task
    pipe.hincrby("test:effects", event, 1)  # type: ignore[attr-defined]
    return f"bumped {event}"
