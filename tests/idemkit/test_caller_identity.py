"""Caller identity: stored responses are scoped per caller, and a caller idemkit cannot identify
is refused rather than guessed (findings 13 to 16 of the decorator issue; survivor 2 of the
mutation-testing issue). Each test runs the middleware and the decorator modes of the shop."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, AuthenticationBackend, BaseUser, SimpleUser
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from idemkit import IdempotencyMiddleware, idempotent
from idemkit.scope import ANONYMOUS, credentials_caller, header_caller, user_caller
from tests.idemkit.shop import MODES, Shop, client

KEY = "8e03978e-40d5-43e8-bc93-6894a57f9324"


@pytest.fixture(params=MODES)
def shop(request: pytest.FixtureRequest) -> Shop:
    return Shop(request.param)


@pytest.mark.parametrize(
    "header",
    ["Authorization", "X-API-Key", "Api-Key", "X-Auth-Token", "X-Access-Token", "X-Api-Token"],
)
async def test_finding13_credential_headers_keep_callers_apart(
    shop: Shop, aredis: aioredis.Redis, header: str
) -> None:
    async with client(shop.app(store=aredis)) as c:
        alice = await c.post(
            "/payments", content=b"x", headers={"Idempotency-Key": KEY, header: "a"}
        )
        bob = await c.post("/payments", content=b"x", headers={"Idempotency-Key": KEY, header: "b"})
        again = await c.post(
            "/payments", content=b"x", headers={"Idempotency-Key": KEY, header: "a"}
        )
    assert shop.calls["pay"] == 2
    assert alice.json()["charge"] != bob.json()["charge"]
    assert "idempotent-replayed" not in bob.headers  # bob never sees alice's answer
    assert again.content == alice.content


async def test_finding13_cookies_without_credentials_warn_once_naming_caller(
    shop: Shop, aredis: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="idemkit")
    async with client(shop.app(store=aredis)) as c:
        for n in range(3):
            await c.post(
                "/payments",
                content=b"x",
                headers={"Idempotency-Key": f"k{n}", "Cookie": f"sessionid=s{n}"},
            )
    warnings = [r for r in caplog.records if "cookies" in r.getMessage()]
    assert len(warnings) == 1 and "caller=" in warnings[0].getMessage()


class SessionUser(BaseUser):
    def __init__(self, user_id: str, name: str) -> None:
        self.user_id = user_id
        self.name = name

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return self.name

    @property
    def identity(self) -> str:
        return self.user_id


class NamedOnly(BaseUser):
    """A user class that never implemented ``identity`` (BaseUser raises for it)."""

    def __init__(self, name: str) -> None:
        self.name = name

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return self.name


class HeaderBackend(AuthenticationBackend):
    """Authenticates ``X-Session`` (standing in for a session cookie) as a user object."""

    def __init__(self, users: dict[str, BaseUser]) -> None:
        self.users = users

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        session = conn.headers.get("x-session")
        if session is None:
            return None
        return AuthCredentials(["authenticated"]), self.users[session]


def authed_app(users: dict[str, BaseUser], store: Any, decorated: bool, **options: Any) -> Any:
    calls: list[str] = []

    async def pay(request: Request) -> Response:
        calls.append(request.user.display_name)
        return JSONResponse({"charge": len(calls), "user": request.user.display_name}, 201)

    endpoint = idempotent(store, **options)(pay) if decorated else pay
    middleware = [Middleware(AuthenticationMiddleware, backend=HeaderBackend(users))]
    if not decorated:
        middleware.append(Middleware(IdempotencyMiddleware, store=store, **options))
    app = Starlette(routes=[Route("/pay", endpoint, methods=["POST"])], middleware=middleware)
    app.state.calls = calls
    return app


@pytest.mark.parametrize("decorated", [False, True], ids=["middleware", "decorator"])
async def test_finding13_session_users_get_their_own_records(
    aredis: aioredis.Redis, decorated: bool
) -> None:
    users: dict[str, BaseUser] = {"s1": SessionUser("u1", "Ann"), "s2": SessionUser("u2", "Bob")}
    app = authed_app(users, aredis, decorated)
    async with client(app) as c:
        ann = await c.post("/pay", headers={"Idempotency-Key": KEY, "X-Session": "s1"})
        bob = await c.post("/pay", headers={"Idempotency-Key": KEY, "X-Session": "s2"})
    assert ann.json()["user"] == "Ann" and bob.json()["user"] == "Bob"
    assert app.state.calls == ["Ann", "Bob"]


@pytest.mark.parametrize("decorated", [False, True], ids=["middleware", "decorator"])
async def test_finding14_users_sharing_a_display_name_never_share_records(
    aredis: aioredis.Redis, decorated: bool, caplog: pytest.LogCaptureFixture
) -> None:
    users: dict[str, BaseUser] = {"s1": NamedOnly("Sam"), "s2": NamedOnly("Sam")}
    app = authed_app(users, aredis, decorated)
    async with client(app) as c:
        first = await c.post("/pay", headers={"Idempotency-Key": KEY, "X-Session": "s1"})
        second = await c.post("/pay", headers={"Idempotency-Key": KEY, "X-Session": "s2"})
    for response in (first, second):
        assert response.status_code == 500
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"] == "urn:idemkit:problem:caller-unidentified"
    assert app.state.calls == []  # nothing ran under a guessed identity


@pytest.mark.parametrize("decorated", [False, True], ids=["middleware", "decorator"])
async def test_finding15_a_user_without_identity_is_a_clear_answer_and_one_log_line(
    aredis: aioredis.Redis, decorated: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="idemkit")
    users: dict[str, BaseUser] = {"s1": NamedOnly("ann")}  # BaseUser.identity raises
    app = authed_app(users, aredis, decorated)
    async with client(app) as c:
        response = await c.post("/pay", headers={"Idempotency-Key": "k15", "X-Session": "s1"})
    assert response.status_code == 500
    doc = response.json()
    assert "NamedOnly" in doc["detail"] and "identity" in doc["detail"]
    lines = [r for r in caplog.records if "identify the caller" in r.getMessage()]
    assert len(lines) == 1 and lines[0].exc_info is None  # one line, no traceback dump


class TokenBackend(AuthenticationBackend):
    """Verifies bearer tokens (here: a table) and puts the token's principal in scope."""

    TOKENS = {"token-v1": "user-7", "token-v2": "user-7", "token-x": "user-8"}

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        token = conn.headers.get("authorization", "").removeprefix("Bearer ")
        principal = self.TOKENS.get(token)
        if principal is None:
            return None
        return AuthCredentials(["authenticated"]), SimpleUser(principal)


async def test_finding16_a_refreshed_token_replays_with_a_stable_principal(
    aredis: aioredis.Redis,
) -> None:
    calls: list[str] = []

    async def pay(request: Request) -> Response:
        calls.append(request.user.display_name)
        return JSONResponse({"charge": len(calls)}, 201)

    caller = user_caller(lambda user: user.display_name)  # the verified principal
    app = Starlette(
        routes=[Route("/pay", pay, methods=["POST"])],
        middleware=[
            Middleware(AuthenticationMiddleware, backend=TokenBackend()),
            Middleware(IdempotencyMiddleware, store=aredis, caller=caller),
        ],
    )
    async with client(app) as c:
        first = await c.post(
            "/pay", headers={"Idempotency-Key": KEY, "Authorization": "Bearer token-v1"}
        )
        refreshed = await c.post(
            "/pay", headers={"Idempotency-Key": KEY, "Authorization": "Bearer token-v2"}
        )
        other = await c.post(
            "/pay", headers={"Idempotency-Key": KEY, "Authorization": "Bearer token-x"}
        )
    assert refreshed.headers["idempotent-replayed"] == "true" and refreshed.content == first.content
    assert "idempotent-replayed" not in other.headers
    assert calls == ["user-7", "user-8"]


def test_finding16_the_default_caller_is_the_raw_credential() -> None:
    """Documented behaviour: without a principal, a refreshed token is a new caller."""

    def scope(token: bytes) -> dict[str, Any]:
        return {"headers": [(b"authorization", b"Bearer " + token)]}

    assert credentials_caller(scope(b"v1")) != credentials_caller(scope(b"v2"))
    assert credentials_caller({"headers": [(b"cookie", b"s=1")]}) == ANONYMOUS


def test_header_caller_scopes_by_one_header() -> None:
    resolve = header_caller("X-Tenant-Id")
    assert resolve({"headers": [(b"x-tenant-id", b"acme")]}) == "X-Tenant-Id:acme"
    assert resolve({"headers": [(b"x-tenant-id", b"other")]}) != resolve(
        {"headers": [(b"x-tenant-id", b"acme")]}
    )
    assert resolve({"headers": []}) == ANONYMOUS


def test_an_authenticated_user_is_scoped_by_identity_not_credentials() -> None:
    user = SessionUser("u1", "Ann")
    a = credentials_caller({"user": user, "headers": [(b"authorization", b"one")]})
    b = credentials_caller({"user": user, "headers": [(b"authorization", b"two")]})
    assert a == b == "user:u1"
