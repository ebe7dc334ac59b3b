"""The outbox table and the relay, on a real PostgreSQL, SQLite and Redis."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
import redis

from idemkit.errors import ConfigurationError, StaleTokenError
from idemkit.observe import Event
from idemkit.patterns import Relay, UnsupportedConnectionError, outbox, stream_name
from idemkit.testing import RedisServer


def _stream(client: redis.Redis, topic: str) -> list[dict[str, str]]:
    return [
        {k.decode(): v.decode() for k, v in fields.items()}
        for _, fields in client.xrange(stream_name(topic))
    ]


def _connectors(pg_dsn: str, sqlite_path: str) -> dict[str, Callable[[], Any]]:
    return {
        "postgres": lambda: psycopg.connect(pg_dsn),
        "sqlite": lambda: sqlite3.connect(sqlite_path, timeout=30),
    }


@pytest.fixture(params=["postgres", "sqlite"])
def connect(request: pytest.FixtureRequest, pg_dsn: str, sqlite_path: str) -> Callable[[], Any]:
    factory = _connectors(pg_dsn, sqlite_path)[request.param]
    conn = factory()
    outbox.setup(conn)
    conn.close()
    return factory


def test_setup_is_idempotent_and_concurrent(pg_dsn: str, lite: sqlite3.Connection) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with psycopg.connect(pg_dsn) as conn:
                outbox.setup(conn)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    outbox.setup(lite)
    outbox.setup(lite)
    assert lite.execute("SELECT count(*) FROM idemkit_outbox").fetchone() == (0,)


def test_add_is_part_of_the_callers_transaction(pg: psycopg.Connection) -> None:
    outbox.setup(pg)
    with pg.transaction():
        kept = outbox.add(pg, "orders", {"order": 1}, key="o1")
    with pytest.raises(RuntimeError), pg.transaction():
        outbox.add(pg, "orders", {"order": 2}, key="o2")
        raise RuntimeError("business rule failed")
    rows = pg.execute("SELECT event_id, topic, key, payload FROM idemkit_outbox").fetchall()
    assert rows == [(kept, "orders", "o1", '{"order":1}')]


async def test_add_on_an_async_connection(apg: psycopg.AsyncConnection) -> None:
    await outbox.setup(apg)
    async with apg.transaction():
        event = await outbox.add(apg, "orders", {"n": 1}, key="k")
    cur = await apg.execute("SELECT event_id FROM idemkit_outbox")
    assert await cur.fetchall() == [(event,)]


def test_add_refuses_unknown_connections_and_bad_names(lite: sqlite3.Connection) -> None:
    with pytest.raises(UnsupportedConnectionError):
        outbox.add(object(), "orders", {})  # type: ignore[call-overload]
    with pytest.raises(ConfigurationError):
        outbox.add(lite, "bad{topic}", {})
    with pytest.raises(ConfigurationError):
        outbox.setup(lite, table="drop table; --")


def test_relay_publishes_in_order_with_event_ids_and_marks(
    connect: Callable[[], Any], sync_redis: redis.Redis
) -> None:
    conn = connect()
    added: list[str] = []
    for i in range(25):
        added.append(outbox.add(conn, "orders", {"i": i}, key=f"k{i % 3}"))
        if i % 2:
            outbox.add(conn, "payments", {"i": i}, key="p")
    conn.commit()
    relay = Relay(connect, sync_redis, batch_size=10, lease_ms=2_000)
    relay.run(max_seconds=0.5)
    published = _stream(sync_redis, "orders")
    assert [m["event_id"] for m in published] == added
    assert [json.loads(m["payload"])["i"] for m in published] == list(range(25))
    assert len(_stream(sync_redis, "payments")) == 12
    assert conn.execute(
        "SELECT count(*) FROM idemkit_outbox WHERE published_at IS NULL"
    ).fetchone() == (0,)
    tokens = conn.execute("SELECT DISTINCT published_by FROM idemkit_outbox").fetchall()
    assert len(tokens) == 1 and tokens[0][0] > 0
    conn.close()


def test_only_one_relay_publishes(connect: Callable[[], Any], sync_redis: redis.Redis) -> None:
    conn = connect()
    for i in range(200):
        outbox.add(conn, "orders", {"i": i}, key="k")
    conn.commit()
    conn.close()
    events: list[Event] = []
    relays = [
        Relay(connect, sync_redis, batch_size=7, lease_ms=2_000, observer=events.append)
        for _ in range(3)
    ]
    threads = [threading.Thread(target=r.run, kwargs={"max_seconds": 1.5}) for r in relays]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    published = _stream(sync_redis, "orders")
    assert [json.loads(m["payload"])["i"] for m in published] == list(range(200))
    assert len({m["fence"] for m in published}) == 1
    # One relay published everything; others only took the lease when it stopped.
    assert sum(e.name == "outbox.publish" for e in events) == -(-200 // 7)


def test_a_relay_that_lost_its_lease_can_neither_publish_nor_mark(
    connect: Callable[[], Any], sync_redis: redis.Redis
) -> None:
    conn = connect()
    outbox.add(conn, "orders", {"i": 0}, key="k")
    conn.commit()
    old = Relay(connect, sync_redis, lease_ms=60_000)
    assert old._take_over(timeout=1)
    # The old relay's lease lapses (as if it was paused) and a new one takes over.
    sync_redis.delete(*old.lock.keys)
    new = Relay(connect, sync_redis, lease_ms=60_000)
    assert new._take_over(timeout=1)
    assert new.lock.token > old.lock.token
    # The old relay can no longer mark (its SQL fence row is gone)...
    with pytest.raises(StaleTokenError):
        old._mark(conn, old.lock.token, [1])
    # ...nor append once the new one has published to the stream.
    assert new.publish_once() == 1
    outbox.add(conn, "orders", {"i": 1}, key="k")
    conn.commit()
    with pytest.raises(StaleTokenError):
        old.publish_once()
    assert [m["fence"] for m in _stream(sync_redis, "orders")] == [str(new.lock.token)]
    unmarked = conn.execute("SELECT id FROM idemkit_outbox WHERE published_at IS NULL")
    assert len(unmarked.fetchall()) == 1
    old._lost(StaleTokenError("test", token=0, newest=0))
    old.close()
    new.close()
    conn.close()


def test_cleanup_deletes_only_old_published_rows(
    connect: Callable[[], Any], sync_redis: redis.Redis
) -> None:
    conn = connect()
    for i in range(5):
        outbox.add(conn, "orders", {"i": i}, key="k")
    conn.commit()
    relay = Relay(connect, sync_redis, retention_s=0.2)
    relay.run(max_seconds=0.3)
    outbox.add(conn, "orders", {"i": 99}, key="k")  # pending: never deleted
    conn.commit()
    time.sleep(0.3)
    assert relay.cleanup() == 5
    assert conn.execute("SELECT count(*) FROM idemkit_outbox").fetchone() == (1,)
    relay.close()
    conn.close()


def test_relay_backs_off_while_redis_is_down_and_resumes(
    pg_dsn: str, fresh_redis_server: RedisServer
) -> None:
    with psycopg.connect(pg_dsn) as conn:
        outbox.setup(conn)
        outbox.add(conn, "orders", {"i": 0}, key="k")
        conn.commit()
        client = redis.Redis.from_url(fresh_redis_server.url, socket_timeout=1)
        events: list[Event] = []
        relay = Relay(
            lambda: psycopg.connect(pg_dsn),
            client,
            lease_ms=1_000,
            backoff_max=0.2,
            observer=events.append,
        )
        stop = threading.Event()
        worker = threading.Thread(target=relay.run, args=(stop,))
        worker.start()
        try:
            deadline = time.monotonic() + 10
            while not any(e.name == "outbox.mark" for e in events):
                assert time.monotonic() < deadline
                time.sleep(0.02)
            fresh_redis_server.kill()
            outbox.add(conn, "orders", {"i": 1}, key="k")
            conn.commit()
            time.sleep(0.5)
            assert any(e.name == "outbox.error" for e in events)
            fresh_redis_server.restart()
            while len(_stream(client, "orders")) < 2:
                assert time.monotonic() < deadline + 10
                time.sleep(0.05)
        finally:
            stop.set()
            worker.join()
            client.close()
        with redis.Redis.from_url(fresh_redis_server.url) as check:
            payloads = [json.loads(m["payload"])["i"] for m in _stream(check, "orders")]
        assert payloads == [0, 1]


def test_a_relay_whose_lease_was_lost_takes_it_again_and_goes_on(
    pg_dsn: str, sync_redis: redis.Redis
) -> None:
    with psycopg.connect(pg_dsn) as conn:
        outbox.setup(conn)
        events: list[Event] = []
        relay = Relay(
            lambda: psycopg.connect(pg_dsn), sync_redis, lease_ms=300, observer=events.append
        )
        stop = threading.Event()
        worker = threading.Thread(target=relay.run, args=(stop,))
        worker.start()
        try:
            outbox.add(conn, "orders", {"i": 0}, key="k")
            conn.commit()
            deadline = time.monotonic() + 10
            while len(_stream(sync_redis, "orders")) < 1:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            sync_redis.delete(*relay.lock.keys)  # the lease is gone: the watchdog notices
            while not any(e.outcome == "lost" for e in events):
                assert time.monotonic() < deadline
                time.sleep(0.02)
            outbox.add(conn, "orders", {"i": 1}, key="k")
            conn.commit()
            while len(_stream(sync_redis, "orders")) < 2:
                assert time.monotonic() < deadline
                time.sleep(0.02)
        finally:
            stop.set()
            worker.join()
    assert [e.outcome for e in events if e.name == "outbox.lease"][:3] == [
        "acquired",
        "lost",
        "acquired",
    ]
