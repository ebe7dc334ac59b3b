"""Fault tests on real processes: SIGSTOP past a lease, SIGKILL at exact points."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import psycopg
import pytest
import redis

from idemkit.patterns import outbox, stream_name
from idemkit.testing import free_port
from tests.patterns._proc import ROOT, Proc


def _wait(condition: object, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _add(dsn: str, count: int, start: int = 0) -> None:
    with psycopg.connect(dsn) as conn:
        for i in range(start, start + count):
            outbox.add(conn, "orders", {"i": i}, key=f"k{i % 2}")
        conn.commit()


def _marks(dsn: str) -> list[tuple[int, int | None]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT id, published_by FROM idemkit_outbox ORDER BY id").fetchall()


def test_relay_paused_past_its_lease_marks_nothing_after_the_takeover(
    pg_dsn: str, redis_url: str
) -> None:
    with psycopg.connect(pg_dsn) as conn:
        outbox.setup(conn)
    _add(pg_dsn, 6)
    client = redis.Redis.from_url(redis_url)
    with Proc(
        "relay",
        "--dsn",
        pg_dsn,
        "--redis",
        redis_url,
        "--lease-ms",
        "400",
        "--pause-at",
        "outbox.publish",
    ) as old:
        old_token = int(old.wait_for("event outbox.lease:acquired").split("token=")[1])
        # Stopped between appending its batch to the stream and marking it published.
        old.wait_for("fault outbox.publish")
        old.wait_stopped()
        assert all(by is None for _, by in _marks(pg_dsn))

        with Proc("relay", "--dsn", pg_dsn, "--redis", redis_url, "--lease-ms", "400") as new:
            new_token = int(new.wait_for("event outbox.lease:acquired", 10).split("token=")[1])
            assert new_token > old_token
            _wait(lambda: all(by == new_token for _, by in _marks(pg_dsn)), what="takeover marks")
            _add(pg_dsn, 4, start=6)
            _wait(lambda: len(_marks(pg_dsn)) == 10 and all(b for _, b in _marks(pg_dsn)))

            old.signal(signal.SIGCONT)
            old.wait_for("event outbox.lease:lost")
            _add(pg_dsn, 2, start=10)
            _wait(lambda: len(_marks(pg_dsn)) == 12 and all(b for _, b in _marks(pg_dsn)))
            time.sleep(0.3)  # give the old relay every chance to misbehave

    # Every row was marked by the new relay: the old one marked nothing, not even the batch
    # it had published before it was paused.
    assert {by for _, by in _marks(pg_dsn)} == {new_token}
    messages = [
        {k.decode(): v.decode() for k, v in fields.items()}
        for _, fields in client.xrange(stream_name("orders"))
    ]
    client.close()
    # The old relay appended its batch once, before the pause, and nothing after it.
    assert [m["fence"] for m in messages].count(str(old_token)) == 6
    assert messages[:6] == [m for m in messages if m["fence"] == str(old_token)]
    # Consumers deduplicating on event_id see every event once, in order per key.
    seen: dict[str, dict[str, str]] = {}
    for m in messages:
        seen.setdefault(m["event_id"], m)
    order = [json.loads(m["payload"])["i"] for m in seen.values()]
    assert sorted(order) == list(range(12))
    for key in ("k0", "k1"):
        per_key = [json.loads(m["payload"])["i"] for m in seen.values() if m["key"] == key]
        assert per_key == sorted(per_key)


@pytest.mark.parametrize("effect", ["redis", "sql", "leased"])
def test_consumer_killed_between_its_effect_and_its_ack_applies_the_effect_once(
    effect: str, pg_dsn: str, redis_url: str
) -> None:
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("CREATE TABLE effects (event_id TEXT PRIMARY KEY, n INT NOT NULL)")
        conn.commit()
    client = redis.Redis.from_url(redis_url)
    stream = stream_name("orders")
    events = [f"e{i}" for i in range(6)]
    for eid in [*events, "e2"]:  # and a re-published copy
        client.xadd(stream, {"event_id": eid, "key": "k", "payload": "{}"})
    common = ["--dsn", pg_dsn, "--redis", redis_url, "--effect", effect]

    with Proc("consumer", *common, "--kill-at", "consumer.apply:applied", "--skip", "2") as dying:
        dying.wait_for("fault consumer.apply:applied")
        assert dying.process.wait(10) == -signal.SIGKILL
    # Killed after applying its third message and before acknowledging it.
    assert client.xpending(stream, "model")["pending"] >= 1

    def effects() -> dict[str, int]:
        if effect == "sql":
            with psycopg.connect(pg_dsn) as conn:
                return dict(conn.execute("SELECT event_id, n FROM effects").fetchall())
        return {k.decode(): int(v) for k, v in client.hgetall("effects").items()}

    assert effects() == {"e0": 1, "e1": 1, "e2": 1}
    with Proc("consumer", *common, "--claim-idle-ms", "200") as successor:
        _wait(lambda: len(effects()) == 6 and client.xpending(stream, "model")["pending"] == 0)
        successor.wait_for("event consumer.apply:duplicate")  # the killed one's message
    client.close()
    assert effects() == {eid: 1 for eid in events}


@pytest.fixture
def shop_service(redis_url: str) -> Iterator[str]:
    """The saga's HTTP service (behind the idempotency middleware) in a uvicorn process."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "tests.patterns._saga_shop:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env={**os.environ, "IDEMKIT_SHOP_REDIS": redis_url},
    )
    import httpx

    def up() -> bool:
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=0.5)
        except httpx.TransportError:
            return False
        return True

    try:
        _wait(up, what="the shop service")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


@pytest.mark.parametrize(
    ("kill_at", "fail_confirm", "final"),
    [
        # Killed after the service charged the card and before the log recorded it.
        ("saga.action:ok", False, "completed"),
        # Confirm fails for good; killed after the refund and before the log recorded it.
        ("saga.compensation:ok", True, "compensated"),
    ],
)
def test_orchestrator_killed_mid_saga_is_resumed_by_another_and_ends_once(
    redis_url: str, shop_service: str, kill_at: str, fail_confirm: bool, final: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    common = ["--redis", redis_url, "--service", shop_service, "--lease-ms", "500"]
    flags = ["--fail-confirm"] if fail_confirm else []
    skip = "1" if kill_at == "saga.action:ok" else "0"
    with Proc(
        "saga", *common, "--saga-id", "o-1", *flags, "--kill-at", kill_at, "--skip", skip
    ) as first:
        first.wait_for(f"fault {kill_at}")
        assert first.process.wait(10) == -signal.SIGKILL
    assert client.get("svc:charge") == b"1"
    with Proc("recover", *common) as second:
        line = second.wait_for("outcome o-1")
    assert line.split()[-1] == final
    counts = {
        op: int(client.get(f"svc:{op}") or 0)
        for op in ("reserve", "charge", "confirm", "refund", "release")
    }
    client.close()
    # Every step's service call executed once, though the interrupted one was called twice.
    if final == "completed":
        assert counts == {"reserve": 1, "charge": 1, "confirm": 1, "refund": 0, "release": 0}
    else:
        assert counts == {"reserve": 1, "charge": 1, "confirm": 1, "refund": 1, "release": 1}


def _kill_orchestrator_at_random(redis_url: str, service: str, sagas: int, kills: int) -> None:
    client = redis.Redis.from_url(redis_url)
    common = ["--redis", redis_url, "--service", service, "--lease-ms", "300"]
    rng = random.Random(14)
    killed = 0
    for _ in range(kills + 20):
        with Proc("saga", *common, "--count", str(sagas)) as orchestrator:
            orchestrator.wait_for("ready")
            if killed < kills:
                time.sleep(rng.uniform(0.02, 0.2))
                orchestrator.signal(signal.SIGKILL)
                orchestrator.process.wait(10)
                if "all done" not in orchestrator.drain():
                    killed += 1
                    continue
            else:
                orchestrator.wait_for("all done", timeout=60)
            break
    assert killed >= min(kills, 2)  # mid-saga kills happened (the rest may have finished)
    outcomes = {}
    for i in range(sagas):
        fields = client.hgetall(f"idemkit:saga:{{o-{i}}}")
        outcomes[f"o-{i}"] = fields[b"status"].decode()
    per_order = {
        op: {k.decode(): int(v) for k, v in client.hgetall(f"svc:{op}:orders").items()}
        for op in ("reserve", "charge", "confirm", "refund", "release")
    }
    client.close()
    for i in range(sagas):
        order = f"o-{i}"
        expected = "compensated" if i % 3 == 2 else "completed"
        # Exactly one of the two final states, the right one, and every service call once.
        assert outcomes[order] == expected
        assert per_order["reserve"][order] == per_order["charge"][order] == 1
        assert per_order["confirm"][order] == 1
        undone = 1 if expected == "compensated" else 0
        assert per_order["refund"].get(order, 0) == per_order["release"].get(order, 0) == undone


def test_orchestrators_killed_at_random_moments_end_every_saga_once(
    redis_url: str, shop_service: str
) -> None:
    _kill_orchestrator_at_random(redis_url, shop_service, sagas=10, kills=4)


@pytest.mark.soak
def test_soak_orchestrators_killed_at_random_moments(redis_url: str, shop_service: str) -> None:
    _kill_orchestrator_at_random(redis_url, shop_service, sagas=60, kills=40)
