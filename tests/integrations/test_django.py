"""The Django middleware through Django's own request cycle, against a real redis-server:
Django's test client (WSGI handler) and async test client (ASGI handler), and real servers
(waitress for WSGI, uvicorn for ASGI) running the minimal project in ``django_site``.

Every behaviour runs through each of the four, with sync and async views: replay, 409, 422,
400, per-user scoping (two logged-in users, one key), what is stored and what releases.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.asgi import get_asgi_application
from django.core.wsgi import get_wsgi_application
from django.test import AsyncClient, Client

from idemkit.testing import RedisServer, free_port
from integrations.django import aclose_clients
from tests.integrations.django_site import USERS, views
from tests.integrations.servers import asgi_server, wsgi_server

KEY = "8e03978e-40d5-43e8-bc93-6894a57f9324"
TRANSPORTS = ("client", "async-client", "wsgi-server", "asgi-server")


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        import json

        return json.loads(self.body)


def configure(url: str, **extra: Any) -> None:
    settings.IDEMKIT = {"REDIS_URL": url, "REQUIRE_KEY": ["/required/*"], **extra}


class Transport:
    """Posts to the project as a given user (or anonymously); answers as ``Answer``."""

    asgi = False

    def post(
        self,
        path: str,
        body: bytes = b"",
        key: str | None = KEY,
        user: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        raise NotImplementedError

    def close(self) -> None:
        pass


class DjangoClient(Transport):
    def __init__(self) -> None:
        self.clients: dict[str | None, Client] = {}

    def client(self, user: str | None) -> Client:
        if user not in self.clients:
            client = Client(raise_request_exception=False)
            if user is not None:
                client.force_login(User.objects.get(username=user))
            self.clients[user] = client
        return self.clients[user]

    def post(
        self,
        path: str,
        body: bytes = b"",
        key: str | None = KEY,
        user: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        extra = dict(headers or {})
        if key is not None:
            extra["Idempotency-Key"] = key
        response = self.client(user).post(
            "/" + path, data=body, content_type="application/json", headers=extra
        )
        return Answer(response.status_code, _lower(response), _content(response))


class AsyncDjangoClient(Transport):
    asgi = True

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.clients: dict[str | None, AsyncClient] = {}

    def post(
        self,
        path: str,
        body: bytes = b"",
        key: str | None = KEY,
        user: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        return self.loop.run_until_complete(self._post(path, body, key, user, headers))

    async def _post(
        self,
        path: str,
        body: bytes,
        key: str | None,
        user: str | None,
        headers: dict[str, str] | None,
    ) -> Answer:
        client = self.clients.get(user)
        if client is None:
            client = self.clients[user] = AsyncClient(raise_request_exception=False)
            if user is not None:
                await client.aforce_login(await User.objects.aget(username=user))
        extra = dict(headers or {})
        if key is not None:
            extra["Idempotency-Key"] = key
        response = await client.post(
            "/" + path, data=body, content_type="application/json", headers=extra
        )
        if response.streaming:
            content = b"".join([chunk async for chunk in response.streaming_content])
        else:
            content = response.content
        return Answer(response.status_code, _lower(response), content)

    def close(self) -> None:
        self.loop.run_until_complete(aclose_clients())
        self.loop.close()


class ServerTransport(Transport):
    def __init__(self, url: str, asgi: bool) -> None:
        self.url = url
        self.asgi = asgi
        self.clients: dict[str | None, httpx.Client] = {}

    def client(self, user: str | None) -> httpx.Client:
        if user not in self.clients:
            client = httpx.Client(base_url=self.url, timeout=10)
            if user is not None:
                assert client.get(f"/login/{user}").status_code == 200
            self.clients[user] = client
        return self.clients[user]

    def post(
        self,
        path: str,
        body: bytes = b"",
        key: str | None = KEY,
        user: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        extra = {"Content-Type": "application/json", **(headers or {})}
        if key is not None:
            extra["Idempotency-Key"] = key
        response = self.client(user).post("/" + path, content=body, headers=extra)
        return Answer(response.status_code, dict(response.headers), response.content)

    def close(self) -> None:
        for client in self.clients.values():
            client.close()


def _lower(response: Any) -> dict[str, str]:
    headers = {k.lower(): v for k, v in response.items()}
    if response.cookies:  # the test clients keep them apart from the headers
        headers["set-cookie"] = "; ".join(c.OutputString() for c in response.cookies.values())
    return headers


def _content(response: Any) -> bytes:
    if getattr(response, "streaming", False):
        return b"".join(response.streaming_content)
    return bytes(response.content)


@pytest.fixture(scope="module")
def servers(redis_server: RedisServer, database: None) -> Iterator[dict[str, str]]:
    configure(redis_server.url)
    with (
        wsgi_server(get_wsgi_application()) as wsgi,
        asgi_server(get_asgi_application(), on_shutdown=aclose_clients) as asgi,
    ):
        yield {"wsgi-server": wsgi, "asgi-server": asgi}


@pytest.fixture(params=TRANSPORTS)
def http(
    request: pytest.FixtureRequest, redis_url: str, database: None, servers: dict[str, str]
) -> Iterator[Transport]:
    configure(redis_url)
    views.CALLS.clear()
    kind = request.param
    transport: Transport
    if kind == "client":
        transport = DjangoClient()
    elif kind == "async-client":
        transport = AsyncDjangoClient()
    else:
        transport = ServerTransport(servers[kind], asgi=kind == "asgi-server")
    yield transport
    transport.close()


def replayed(answer: Answer) -> bool:
    return answer.headers.get("idempotent-replayed") == "true"


def problem(answer: Answer, status: int) -> dict[str, Any]:
    assert answer.status == status, answer.body
    assert answer.headers["content-type"] == "application/problem+json"
    doc: dict[str, Any] = answer.json()
    assert doc["status"] == status and doc["type"].startswith("urn:idemkit:")
    return doc


# -- the behaviours, through every transport ---------------------------------------------------


@pytest.mark.parametrize("view", ["pay", "apay"])
def test_a_retry_gets_the_stored_response(http: Transport, view: str) -> None:
    first = http.post(view, b'{"amount": 10}', user="alice")
    second = http.post(view, b'{"amount": 10}', user="alice")
    assert first.status == second.status == 201
    assert first.body == second.body and first.json()["charge"] == 1
    assert not replayed(first) and replayed(second)
    assert second.headers["location"] == "/payments/1"
    assert second.headers["content-type"] == "application/json"
    assert "set-cookie" in first.headers and "receipt" not in second.headers.get("set-cookie", "")
    assert views.CALLS[view] == 1


@pytest.mark.parametrize("view", ["pay", "apay"])
def test_two_users_with_one_key_get_two_executions(http: Transport, view: str) -> None:
    alice = http.post(view, b"{}", user="alice")
    bob = http.post(view, b"{}", user="bob")
    alice_again = http.post(view, b"{}", user="alice")
    bob_again = http.post(view, b"{}", user="bob")
    assert views.CALLS[view] == 2
    assert alice.json()["user"] != bob.json()["user"]
    assert alice_again.body == alice.body and bob_again.body == bob.body
    assert replayed(alice_again) and replayed(bob_again)


def test_same_key_different_body_gets_422(http: Transport) -> None:
    http.post("pay", b'{"amount": 10}', user="alice")
    problem(http.post("pay", b'{"amount": 20}', user="alice"), 422)
    assert views.CALLS["pay"] == 1


def test_malformed_and_missing_keys_get_400(http: Transport) -> None:
    assert "0x20" in problem(http.post("pay", key='"a b"'), 400)["detail"]
    problem(http.post("required/pay", key=None), 400)
    assert http.post("pay", key=None).status == 201  # optional where not required
    assert views.CALLS["pay"] == 1


@pytest.mark.parametrize("view", ["slow", "aslow"])
def test_a_duplicate_while_the_first_runs_gets_409(http: Transport, view: str) -> None:
    if isinstance(http, AsyncDjangoClient):
        pytest.skip("the async test client runs one request at a time (see the asgi server)")
    results: list[Answer] = []
    first = threading.Thread(target=lambda: results.append(http.post(view, user="alice")))
    first.start()
    deadline = time.monotonic() + 5
    while views.CALLS[view] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    second = http.post(view, user="alice")
    first.join(10)
    assert int(problem(second, 409)["status"]) == 409 and int(second.headers["retry-after"]) >= 1
    assert results[0].status == 201
    assert views.CALLS[view] == 1


def test_an_unhandled_exception_releases_the_key(http: Transport) -> None:
    assert http.post("boom").status == 500
    second = http.post("boom")
    assert second.status == 500 and not replayed(second)
    assert views.CALLS["boom"] == 2


def test_a_returned_500_is_stored_and_503_releases(http: Transport) -> None:
    http.post("status/500")
    assert replayed(http.post("status/500"))
    http.post("status/503", key="other")
    assert not replayed(http.post("status/503", key="other"))
    assert views.CALLS["status"] == 3


def test_http404_is_a_response_and_is_stored(http: Transport) -> None:
    assert http.post("missing").status == 404
    assert replayed(http.post("missing"))
    assert views.CALLS["missing"] == 1


@pytest.mark.parametrize("view", ["stream", "astream"])
def test_a_streamed_response_is_replayed(http: Transport, view: str) -> None:
    if (view == "astream") != http.asgi:
        pytest.skip("Django serves an async stream from WSGI (a sync one from ASGI) with a warning")
    first = http.post(view)
    second = http.post(view)
    assert first.body == second.body == b"chunk0;chunk1;chunk2;"
    assert replayed(second) and views.CALLS[view] == 1


def test_a_file_response_is_captured_even_where_the_server_offers_a_file_wrapper(
    http: Transport,
) -> None:
    if http.asgi:
        pytest.skip("Django serves a FileResponse's file as a sync stream: a warning under ASGI")
    first = http.post("download")
    second = http.post("download")
    assert first.body == second.body == b"receipt-1" and replayed(second)
    assert views.CALLS["download"] == 1


def test_the_view_sees_the_fencing_token(http: Transport) -> None:
    token = http.post("token").json()["token"]
    assert isinstance(token, int) and token > 0


def test_drf_views_replay_and_scope_by_user(http: Transport) -> None:
    if isinstance(http, ServerTransport):  # over the network: DRF's basic authentication
        auth = {u: {"Authorization": _basic(u)} for u in USERS}
        alice = http.post("drf/orders", b'{"sku": 1}', headers=auth["alice"])
        again = http.post("drf/orders", b'{"sku": 1}', headers=auth["alice"])
        bob = http.post("drf/orders", b'{"sku": 1}', headers=auth["bob"])
    else:  # Django's session, seen by AuthenticationMiddleware
        alice = http.post("drf/orders", b'{"sku": 1}', user="alice")
        again = http.post("drf/orders", b'{"sku": 1}', user="alice")
        bob = http.post("drf/orders", b'{"sku": 1}', user="bob")
    assert alice.status == bob.status == 201 and alice.json()["data"] == {"sku": 1}
    assert replayed(again) and again.body == alice.body
    assert not replayed(bob) and bob.json()["user"] != alice.json()["user"]
    assert views.CALLS["drf"] == 2


def _basic(user: str) -> str:
    import base64

    return "Basic " + base64.b64encode(f"{user}:{user}-secret".encode()).decode()


# -- configuration and failure, through the test clients ---------------------------------------


@pytest.mark.parametrize("kind", ["client", "async-client"])
def test_an_unreachable_redis_fails_closed_with_503(kind: str, database: None) -> None:
    configure(f"redis://127.0.0.1:{free_port()}/0", OPTIONS={"store_timeout": 0.3})
    views.CALLS.clear()
    transport = DjangoClient() if kind == "client" else AsyncDjangoClient()
    try:
        answer = transport.post("pay")
        plain = transport.post("pay", key=None)
    finally:
        transport.close()
    problem(answer, 503)
    assert plain.status == 201 and views.CALLS["pay"] == 1


def test_the_middleware_must_follow_authentication(redis_url: str) -> None:
    from django.core.exceptions import ImproperlyConfigured
    from django.test import override_settings

    configure(redis_url)
    order = list(reversed(settings.MIDDLEWARE))
    with override_settings(MIDDLEWARE=order), pytest.raises(ImproperlyConfigured, match="after"):
        Client().post("/pay")


@pytest.mark.parametrize("kind", ["client", "async-client"])
def test_the_observer_sees_requests_with_their_route_and_store_operations(
    kind: str, redis_url: str, database: None
) -> None:
    events: list[Any] = []
    configure(redis_url, OBSERVER=events.append)
    transport = DjangoClient() if kind == "client" else AsyncDjangoClient()
    try:
        transport.post("pay", user="alice")
        transport.post("pay", user="alice")
    finally:
        transport.close()
    seen = [(e.name, e.attrs.get("op") or e.route, e.outcome) for e in events]
    assert seen == [
        ("idempotency.store", "claim", "ok"),
        ("idempotency.store", "complete", "ok"),
        ("idempotency.request", "pay", "executed"),
        ("idempotency.store", "claim", "ok"),
        ("idempotency.request", None, "replayed"),
    ]
