"""What the httpx and requests clients retry, with the same key and body, and for how long.

Every case runs against both clients (httpx's sync transport and the requests adapter) over
real HTTP to a scripted server, so the two cannot drift apart.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from idemkit.observe import Event
from idemkit.testing import LossyProxy
from integrations.circuit_breaker import BreakerState, CircuitBreaker, CircuitOpenError
from integrations.httpx_client import SyncIdempotentTransport
from integrations.requests_client import idempotent_session
from integrations.retry import RetryPolicy
from tests.integrations.scripted_server import scripted_server

Answer = tuple[int, dict[str, str], bytes]
Send = Callable[..., tuple[int, dict[str, str]]]

OK: Answer = (201, {}, b"created")
BUSY: Answer = (503, {"retry-after": "0"}, b"busy")


class RecordingPolicy(RetryPolicy):
    """Records the waits the policy computes, and does not sleep them."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("backoff", 0.0)
        kwargs.setdefault("deadline", 10.0)
        super().__init__(**kwargs)
        self.waits: list[float] = []

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        self.waits.append(super().delay(attempt, retry_after))
        return 0.0


@pytest.fixture(params=["httpx", "requests"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def sender(kind: str, policy: RetryPolicy, breaker: CircuitBreaker | None = None) -> Send:
    """``send(method, url, body=..., headers=...) -> (status, headers)`` with one client."""

    def send(method: str, url: str, *, body: Any = None, **kwargs: Any) -> Any:
        if kind == "httpx":
            transport = SyncIdempotentTransport(policy=policy, breaker=breaker)
            with httpx.Client(transport=transport, timeout=5) as client:
                r = client.request(method, url, content=body, **kwargs)
                return r.status_code, dict(r.headers)
        with idempotent_session(policy, breaker=breaker) as session:
            s = session.request(method, url, data=body, timeout=5, **kwargs)
            return s.status_code, dict(s.headers)

    return send


def test_a_fresh_key_and_the_same_body_on_every_attempt(kind: str) -> None:
    answers = [BUSY, (504, {}, b""), (409, {"retry-after": "0"}, b""), (429, {}, b""), OK]
    with scripted_server(*answers) as srv:
        status, _ = sender(kind, RecordingPolicy())("POST", srv.url, body=b"order 1")
    assert status == 201 and len(srv.seen) == 5
    assert {s.headers["idempotency-key"] for s in srv.seen} == {
        srv.seen[0].headers["idempotency-key"]
    }
    assert len(srv.seen[0].headers["idempotency-key"]) == 36  # a UUID4
    assert {s.body for s in srv.seen} == {b"order 1"}


def test_each_request_gets_its_own_key_and_a_callers_key_is_kept(kind: str) -> None:
    with scripted_server(OK) as srv:
        send = sender(kind, RecordingPolicy())
        send("POST", srv.url, body=b"a")
        send("PATCH", srv.url, body=b"b")
        send("POST", srv.url, body=b"c", headers={"Idempotency-Key": "mine"})
    keys = [s.headers["idempotency-key"] for s in srv.seen]
    assert len(set(keys)) == 3 and keys[2] == "mine"


def test_a_streamed_body_is_resent_whole(kind: str) -> None:
    with scripted_server(BUSY, OK) as srv:
        status, _ = sender(kind, RecordingPolicy())("POST", srv.url, body=iter([b"ab", b"cd"]))
    assert status == 201 and [s.body for s in srv.seen] == [b"abcd", b"abcd"]


@pytest.mark.parametrize(
    "answer",
    [
        (500, {}, b"stored failure"),  # the handler ran: only the caller may decide to repeat
        (503, {"idempotent-replayed": "true"}, b""),  # a replay is the key's final answer
        (422, {}, b""),
        (400, {}, b""),
        (201, {}, b""),
    ],
)
def test_final_answers_are_not_retried(kind: str, answer: Answer) -> None:
    with scripted_server(answer, OK) as srv:
        status, _ = sender(kind, RecordingPolicy())("POST", srv.url, body=b"x")
    assert status == answer[0] and len(srv.seen) == 1


def test_other_methods_are_sent_once_without_a_key(kind: str) -> None:
    with scripted_server(BUSY, OK) as srv:
        status, _ = sender(kind, RecordingPolicy())("GET", srv.url)
        sender(kind, RecordingPolicy())("PUT", srv.url, body=b"x")
    assert status == 503 and len(srv.seen) == 2
    assert all("idempotency-key" not in s.headers for s in srv.seen)


def test_retry_after_in_seconds_is_honoured_exactly(kind: str) -> None:
    policy = RecordingPolicy(max_backoff=1.0)
    with scripted_server((503, {"retry-after": "7"}, b""), OK) as srv:
        assert sender(kind, policy)("POST", srv.url, body=b"x")[0] == 201
    assert policy.waits == [7.0]  # not cut to max_backoff: the server asked for 7 s


def test_retry_after_as_an_http_date_is_honoured(kind: str) -> None:
    policy = RecordingPolicy()
    in_3s = email.utils.formatdate(time.time() + 3, usegmt=True)
    past = "Wed, 21 Oct 2015 07:28:00 GMT"
    answers = [(503, {"retry-after": in_3s}, b""), (429, {"retry-after": past}, b""), OK]
    with scripted_server(*answers) as srv:
        assert sender(kind, policy)("POST", srv.url, body=b"x")[0] == 201
    assert 1.5 < policy.waits[0] <= 3.0 and policy.waits[1] == 0.0


def test_a_wait_past_the_deadline_returns_the_answer_instead(kind: str) -> None:
    policy = RetryPolicy(deadline=2.0)  # really waits: only the deadline keeps this short
    with scripted_server((503, {"retry-after": "30"}, b""), OK) as srv:
        assert sender(kind, policy)("POST", srv.url, body=b"x")[0] == 503
    assert len(srv.seen) == 1


def test_attempts_are_bounded(kind: str) -> None:
    with scripted_server(BUSY) as srv:
        status, _ = sender(kind, RecordingPolicy(attempts=3))("POST", srv.url, body=b"x")
    assert status == 503 and len(srv.seen) == 3


def test_a_lost_answer_is_retried_and_the_server_sees_one_key(kind: str) -> None:
    fates = iter(["drop", "drop", "pass"])
    with (
        scripted_server((200, {}, b"done")) as srv,
        LossyProxy(srv.port, decide=lambda _: next(fates)) as proxy,
    ):
        status, _ = sender(kind, RecordingPolicy())(
            "POST", f"http://127.0.0.1:{proxy.port}/", body=b"x"
        )
    assert status == 200 and proxy.stats.dropped == 2
    assert len(srv.seen) == 3 and len({s.headers["idempotency-key"] for s in srv.seen}) == 1


def test_a_lost_answer_on_the_last_attempt_raises(kind: str) -> None:
    with (
        scripted_server((200, {}, b"done")) as srv,
        LossyProxy(srv.port, drop_rate=1.0) as proxy,
        pytest.raises((httpx.TransportError, OSError)),
    ):
        sender(kind, RecordingPolicy(attempts=2))(
            "POST", f"http://127.0.0.1:{proxy.port}/", body=b"x"
        )
    assert len(srv.seen) == 2


def test_the_breaker_stops_the_client_from_hammering_and_lets_a_trial_through(
    kind: str,
) -> None:
    events: list[Event] = []
    breaker = CircuitBreaker(failure_threshold=3, cooldown=0.3, observer=events.append)
    send = sender(kind, RecordingPolicy(attempts=10), breaker)
    with scripted_server(BUSY, BUSY, BUSY, BUSY, OK) as srv:
        # Three failures in a row open the circuit: the retry loop stops there.
        assert send("POST", srv.url, body=b"x")[0] == 503
        assert len(srv.seen) == 3 and breaker.state is BreakerState.OPEN
        with pytest.raises(CircuitOpenError) as info:
            send("POST", srv.url, body=b"y")
        assert len(srv.seen) == 3 and 0 < info.value.retry_after <= 0.3  # nothing was sent
        time.sleep(0.35)
        assert breaker.state is BreakerState.HALF_OPEN
        # The trial fails (one more 503): open again, without a second attempt.
        assert send("POST", srv.url, body=b"z")[0] == 503
        assert len(srv.seen) == 4 and breaker.state is BreakerState.OPEN
        time.sleep(0.35)
        assert send("POST", srv.url, body=b"w")[0] == 201
        assert breaker.state is BreakerState.CLOSED
    assert [(e.attrs["previous"], e.outcome) for e in events] == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]
    assert all(e.name == "circuit.state" for e in events)
