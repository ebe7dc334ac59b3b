"""``IdempotentUser``: a Locust user that drives the user's own routes like a careful client.

Subclass it, list the service's mutating routes, run ``locust -f``::

    class Client(IdempotentUser):
        routes = [Route("POST", "/payments", body=new_payment)]

Each route becomes a task weighted by ``Route.weight``; a task runs one operation through
:class:`~integrations.locust.flow.Flow` (fresh key, retries, the stories of the ``mix``) and
records it in the run's tally. Own ``@task`` methods may call :meth:`IdempotentUser.operate`,
and :meth:`IdempotentUser.concurrently` for operations that race each other.
Requests go through ``self.client``'s connection pool, headers, cookies and auth, but are
reported to Locust by the kit, with their real response times, and only when they are real
requests (see :mod:`integrations.locust.flow`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

# Locust first: importing it monkey-patches sockets and ssl for gevent, which must happen
# before requests (urllib3) builds its SSL context, or a script that imports this module
# before Locust dies in a RecursionError.
from locust import HttpUser, between

# isort: split
import gevent
import requests

from integrations.locust import plugin
from integrations.locust.answers import DISCONNECTED, TIMEOUT, Answer, AnswerRules
from integrations.locust.checks import ServerCheck
from integrations.locust.flow import Flow, Sent
from integrations.locust.operation import Operation
from integrations.locust.retry import RetryPolicy
from integrations.locust.route import Mix, Plan, Prepared, Route

__all__ = ["IdempotencyFailure", "IdempotentUser"]


class IdempotencyFailure(Exception):
    """How a failed attempt is reported to Locust; its repr is the short reason."""

    def __repr__(self) -> str:
        return str(self.args[0]) if self.args else "failure"


def _route_task(route: Route) -> Callable[[IdempotentUser], None]:
    def task(user: IdempotentUser) -> None:
        user.operate(route)

    task.__name__ = task.__qualname__ = route.label
    task._idem_route = True  # type: ignore[attr-defined]
    return task


class IdempotentUser(HttpUser):
    """Runs the ``routes`` of a service as retrying, idempotent operations."""

    abstract = True
    wait_time = between(0.01, 0.2)

    routes: ClassVar[Sequence[Route]] = ()
    retry: ClassVar[RetryPolicy] = RetryPolicy()
    mix: ClassVar[Mix] = Mix()
    rules: ClassVar[AnswerRules] = AnswerRules()
    server_checks: ClassVar[Sequence[ServerCheck]] = ()
    key_header: ClassVar[str] = "Idempotency-Key"
    idemkit_user: ClassVar[bool] = True  # marks the kit's users for the end-of-run verdict

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "routes" not in cls.__dict__:
            return
        for route in cls.routes:
            if not isinstance(route, Route):
                raise TypeError(f"{cls.__name__}.routes must hold Route objects, got {route!r}")
        own = [t for t in cls.tasks if not getattr(t, "_idem_route", False)]
        cls.tasks = own + [_route_task(r) for r in cls.routes for _ in range(r.weight)]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self.idem_rng = random.Random()
        self._kit = plugin.kit_state(self.environment)
        self._transport = _LocustTransport(self)

    def operate(
        self, route: Route, *, plan: Plan | None = None, request: Prepared | None = None
    ) -> Operation:
        """Run one operation on ``route`` (stories drawn from the mix unless ``plan`` is
        given), record it, and return it."""
        flow = Flow(
            route,
            self._transport,
            policy=self.retry,
            mix=self.mix,
            rules=self.rules,
            rng=self.idem_rng,
            key_header=self.key_header,
        )
        op = flow.run(plan, request)
        self._kit.tally.record(op)
        return op

    def concurrently(self, *jobs: Callable[[], object]) -> None:
        """Run ``jobs`` (e.g. several :meth:`operate` calls) at the same time and wait for
        them, bounded by the retry policy's time budget; none outlives this call."""

        def run(job: Callable[[], object]) -> Callable[[], None]:
            def call() -> None:
                job()

            return call

        budget = self.retry.max_seconds + self.retry.timeout + self.mix.late_delay + 1.0
        self._transport.together([run(job) for job in jobs], budget)


class _LocustTransport:
    """Sends through the user's session without Locust's own reporting; reports itself."""

    def __init__(self, user: IdempotentUser) -> None:
        self.user = user

    def send(
        self, method: str, path: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> Sent:
        session = self.user.client
        url = session.base_url + path
        started = time.time()
        t0 = time.perf_counter()
        try:
            # Prepared and sent with requests' own Session methods, not HttpSession.request:
            # the kit decides what is reported, and an abandoned attempt is not reported at
            # all. The session's headers, cookies, auth and connection pool still apply.
            prepared = requests.Session.prepare_request(
                session, requests.Request(method, url, data=body or None, headers=dict(headers))
            )
            settings = session.merge_environment_settings(url, {}, None, None, None)
            response = session.send(prepared, timeout=timeout, allow_redirects=False, **settings)
            content = response.content
        except requests.Timeout:
            return Sent(Answer(0, {}, error=TIMEOUT), time.perf_counter() - t0, started)
        except requests.RequestException:
            return Sent(Answer(0, {}, error=DISCONNECTED), time.perf_counter() - t0, started)
        elapsed = time.perf_counter() - t0
        names = {k.lower(): v for k, v in response.headers.items()}
        return Sent(Answer(response.status_code, names, content), elapsed, started, response)

    def report(self, method: str, name: str, sent: Sent, failure: str | None) -> None:
        self.user.environment.events.request.fire(
            request_type=method,
            name=name,
            response_time=sent.elapsed * 1000,
            response_length=len(sent.answer.body),
            exception=None if failure is None else IdempotencyFailure(failure),
            context=self.user.context(),
            response=sent.response,
            url=None if sent.response is None else sent.response.url,
            start_time=sent.started,
        )

    def sleep(self, seconds: float) -> None:
        gevent.sleep(seconds)

    def together(self, jobs: Sequence[Callable[[], None]], timeout: float) -> None:
        greenlets = [gevent.spawn(job) for job in jobs]
        try:
            gevent.joinall(greenlets, timeout=timeout, raise_error=True)
        finally:
            # Also when this user is being stopped: no attempt may outlive its operation.
            gevent.killall(greenlets, block=True, timeout=1.0)

    def now(self) -> float:
        return time.monotonic()
