"""``python -m idemkit.patterns``: the relay and consumer as their own processes."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time

import redis

from idemkit.patterns import outbox, stream_name
from tests.patterns._proc import ROOT


def _run(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "idemkit.patterns", *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_relay_and_consumer_processes_carry_an_event_and_stop_on_sigterm(
    sqlite_path: str, sync_redis: redis.Redis, redis_url: str
) -> None:
    with sqlite3.connect(sqlite_path) as db:
        outbox.setup(db)
        outbox.add(db, "orders", {"status": "paid"}, key="o-1")
    relay = _run("relay", "--db", f"sqlite:///{sqlite_path}", "--redis", redis_url)
    consumer = _run(
        "consume",
        "--redis",
        redis_url,
        "--topic",
        "orders",
        "--group",
        "sales",
        "--handler",
        "tests.patterns.test_cli:count_sale",
    )
    try:
        deadline = time.monotonic() + 20
        while sync_redis.hget("sales", "paid") != b"1":
            assert time.monotonic() < deadline, "the event did not arrive"
            time.sleep(0.05)
    finally:
        for process in (relay, consumer):
            process.send_signal(signal.SIGTERM)
            assert process.wait(10) == 0, process.stderr.read() if process.stderr else ""
            if process.stderr:
                process.stderr.close()
    assert sync_redis.xlen(stream_name("orders")) == 1
    with sqlite3.connect(sqlite_path) as db:
        assert db.execute("SELECT published_at IS NOT NULL FROM idemkit_outbox").fetchall() == [
            (1,)
        ]


def count_sale(message: object, pipe: redis.client.Pipeline) -> None:
    pipe.hincrby("sales", message.payload["status"], 1)  # type: ignore[attr-defined]
