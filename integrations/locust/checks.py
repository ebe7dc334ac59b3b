"""Server-side check hooks: for services that can count their own side effects.

A hook is any callable ``check(context, result)``. It runs once at the end of the run (on
the Locust master, or the only process), after the client-side checks; it gets what the
clients were told (:class:`~integrations.locust.operation.Ack` per acknowledged operation)
and records its findings in ``result`` (``result.checks[name] = summary``,
``result.fail(kind, message)``). It may add facts for the report to ``context.info``. A
hook that raises is itself a violation (``server-check-error``): a check that could not run
must not pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from integrations.locust.operation import Ack
from integrations.locust.verdict import Verification

__all__ = ["CheckContext", "ServerCheck", "run_checks"]


@dataclass
class CheckContext:
    host: str  # the service's base URL (Locust's --host)
    acks: Sequence[Ack]  # one per acknowledged operation, from every worker
    acks_dropped: int = 0  # acknowledgements beyond the kept maximum (counted only)
    info: dict[str, Any] = field(default_factory=dict)  # extra facts for the report


ServerCheck = Callable[[CheckContext, Verification], None]


def run_checks(checks: Iterable[ServerCheck], context: CheckContext, result: Verification) -> None:
    for check in checks:
        name = getattr(check, "__qualname__", repr(check))
        try:
            check(context, result)
        except Exception as exc:
            result.fail("server-check-error", f"{name}: {type(exc).__name__}: {exc}")
