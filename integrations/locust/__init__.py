"""A Locust kit that load-tests a service for exactly-once behaviour (extra ``loadtest``).

A locustfile of a dozen lines (see README, "Load tests")::

    from integrations.locust import IdempotentUser, Route

    class Client(IdempotentUser):
        routes = [Route("POST", "/payments", body=lambda: {"amount": 100})]

``locust -f that.py --host http://my-service --headless -u 20 -r 20 -t 30s`` then exits
non-zero with a report when a key was executed twice or answered differently;
``--idem-report PATH`` writes the Markdown report with its latency plot.

Only :class:`IdempotentUser` needs Locust (and with it gevent's monkey patching): it is
imported on first use, so the verifier, the report and the value types here can be used
from any process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from integrations.locust.answers import Answer, AnswerRules
from integrations.locust.checks import CheckContext, ServerCheck
from integrations.locust.operation import Ack, Operation
from integrations.locust.report import write_report
from integrations.locust.retry import RetryPolicy, parse_retry_after
from integrations.locust.route import Mix, Plan, Route
from integrations.locust.verdict import Verification

if TYPE_CHECKING:
    from integrations.locust.user import IdempotentUser

__all__ = [
    "Ack",
    "Answer",
    "AnswerRules",
    "CheckContext",
    "IdempotentUser",
    "Mix",
    "Operation",
    "Plan",
    "RetryPolicy",
    "Route",
    "ServerCheck",
    "Verification",
    "parse_retry_after",
    "write_report",
]


def __getattr__(name: str) -> Any:
    if name == "IdempotentUser":
        from integrations.locust.user import IdempotentUser

        return IdempotentUser
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
