"""The lossy proxy itself: latency without throttling, dropped answers, injected errors."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import redis

from idemkit.testing import LossyProxy, RedisServer


class _Counting(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[bytes] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        self.seen.append(body)
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[ThreadingHTTPServer]:
    _Counting.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Counting)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_drop_lets_the_server_work_and_inject_does_not_reach_it(
    http_server: ThreadingHTTPServer,
) -> None:
    fates = iter(["drop", "inject", "pass", "pass"])
    with (
        LossyProxy(http_server.server_address[1], decide=lambda _: next(fates)) as proxy,
        httpx.Client(base_url=f"http://127.0.0.1:{proxy.port}") as client,
    ):
        with pytest.raises(httpx.RemoteProtocolError):
            client.post("/", content=b"one")
        assert _Counting.seen == [b"one"]  # the server did the work; the answer was lost
        injected = client.post("/", content=b"two")
        assert injected.status_code == 503 and injected.headers["retry-after"] == "0"
        assert _Counting.seen == [b"one"]
        assert client.post("/", content=b"three").content == b"three"
        assert client.post("/", content=b"four").content == b"four"  # same connection
    assert _Counting.seen == [b"one", b"three", b"four"]
    assert (proxy.stats.dropped, proxy.stats.injected, proxy.stats.exchanges) == (1, 1, 4)


def test_random_fates_follow_the_rates(http_server: ThreadingHTTPServer) -> None:
    with LossyProxy(http_server.server_address[1], drop_rate=0.3, inject_rate=0.2, seed=7) as p:
        outcomes = {"ok": 0, "503": 0, "lost": 0}
        with httpx.Client(base_url=f"http://127.0.0.1:{p.port}") as client:
            for i in range(100):
                try:
                    response = client.post("/", content=str(i).encode())
                except httpx.TransportError:
                    outcomes["lost"] += 1
                    continue
                outcomes["ok" if response.status_code == 200 else "503"] += 1
    assert (p.stats.dropped, p.stats.injected) == (outcomes["lost"], outcomes["503"])
    assert 15 <= outcomes["lost"] <= 45 and 8 <= outcomes["503"] <= 35
    assert len(_Counting.seen) == outcomes["ok"] + outcomes["lost"]


def test_reply_delay_is_latency_not_throttling(redis_server: RedisServer) -> None:
    with LossyProxy(redis_server.port, reply_delay=0.1) as proxy:
        client = redis.Redis(port=proxy.port)
        try:
            started = time.monotonic()
            assert client.ping()
            assert time.monotonic() - started >= 0.1
            pipe = client.pipeline(transaction=False)
            for i in range(50):
                pipe.echo(str(i))
            started = time.monotonic()
            assert pipe.execute() == [str(i).encode() for i in range(50)]
            assert time.monotonic() - started < 0.5  # one delayed round trip, in order
        finally:
            client.close()
