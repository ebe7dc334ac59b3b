"""Once-only Celery tasks with real workers on a throwaway Redis broker, killed mid-task."""

from __future__ import annotations

import inspect
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import redis
from redis.client import Pipeline

from idemkit.errors import ConfigurationError
from idemkit.patterns import RedisEffect
from idemkit.patterns.celery import once_only
from idemkit.testing import RedisServer
from tests.patterns._proc import ROOT


@pytest.fixture
def broker() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def _worker(url: str, *, kill_after_apply: bool = False) -> subprocess.Popen[bytes]:
    env = {**os.environ, "IDEMKIT_CELERY_BROKER": url}
    if kill_after_apply:
        env["IDEMKIT_KILL_AFTER_APPLY"] = "1"
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tests.patterns._celery_app",
            "worker",
            "--pool=solo",
            "--concurrency=1",
            "--without-heartbeat",
            "--without-mingle",
            "--without-gossip",
            "--loglevel=ERROR",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait(condition: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _send(url: str, *args: object) -> None:
    from tests.patterns._celery_app import app

    app.conf.broker_url = url
    with app.connection_for_write() as conn:
        app.send_task("bump", args=list(args), connection=conn)


@pytest.mark.parametrize("kill", ["mid-task", "after-effect-before-ack"])
def test_a_task_killed_mid_flight_applies_its_effect_once(broker: RedisServer, kill: str) -> None:
    client = redis.Redis.from_url(broker.url)
    first = _worker(broker.url, kill_after_apply=kill == "after-effect-before-ack")
    second: subprocess.Popen[bytes] | None = None
    try:
        _send(broker.url, "order-1", 3.0 if kill == "mid-task" else 0.0)
        if kill == "mid-task":
            _wait(lambda: client.get("test:running") == b"order-1")
            first.send_signal(signal.SIGKILL)
        assert first.wait(30) == -signal.SIGKILL
        applied_before = 0 if kill == "mid-task" else 1
        assert int(client.hget("test:effects", "order-1") or 0) == applied_before
        # The message was never acknowledged: once its visibility timeout (1 s) has passed,
        # the next worker restores it at start-up and runs the task again.
        time.sleep(1.2)
        second = _worker(broker.url)
        outcome = b"test:applied" if kill == "mid-task" else b"test:duplicate"
        _wait(lambda: client.get(outcome) == b"1")
        time.sleep(0.3)
        assert client.hgetall("test:effects") == {b"order-1": b"1"}  # the effect: once
        # The body ran twice when killed mid-task, once when killed after its effect.
        assert int(client.get("test:runs") or 0) == (2 if kill == "mid-task" else 1)
    finally:
        for worker in (first, second):
            if worker is not None and worker.poll() is None:
                worker.kill()
                worker.wait()
        client.close()


def test_once_only_hides_the_context_and_dedups_by_key(sync_redis: redis.Redis) -> None:
    @once_only(RedisEffect(sync_redis), key=lambda user, points: f"{user}:{points}")
    def add(pipe: Pipeline, user: str, points: int) -> int:
        pipe.hincrby("points", user, points)
        return points

    assert add("ann", 5) == 5
    assert add("ann", 5) == 5  # a duplicate: the stored result, no second effect
    assert sync_redis.hget("points", "ann") == b"5"
    assert list(inspect.signature(add).parameters) == ["user", "points"]
    with pytest.raises(ConfigurationError):
        once_only(RedisEffect(sync_redis))(lambda pipe: None)()
