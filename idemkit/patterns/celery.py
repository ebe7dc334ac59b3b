"""Once-only Celery tasks: the idempotent consumer's guarantee for a task queue.

With ``acks_late=True`` a task message is acknowledged after the task returns, so a worker
killed mid-task (SIGKILL, OOM, a lost node) gets the message redelivered, and the task runs
again. :func:`once_only` makes its *effect* happen once anyway, through the same effects as
:class:`~idemkit.patterns.StreamConsumer`, keyed by the task id (which redelivery keeps)::

    effect = RedisEffect(redis.Redis.from_url(url))

    @app.task(acks_late=True)
    @once_only(effect)
    def add_points(pipe, user: str, points: int) -> None:
        pipe.hincrby("points", user, points)     # queued; applied once with the marker

The decorated function takes the effect's context first (a pipeline for
:class:`~idemkit.patterns.RedisEffect`, a connection for :class:`~idemkit.patterns.SqlEffect`,
an :class:`~idemkit.patterns.EffectContext` for :class:`~idemkit.patterns.LeasedEffect`);
callers pass only the remaining arguments. ``key(*args, **kwargs)`` replaces the task id as
the dedup id when the same business operation may be *sent* twice as two tasks.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from idemkit.errors import ConfigurationError
from idemkit.observe import Observer, Stopwatch, emit
from idemkit.patterns.effects import Effect

__all__ = ["once_only"]


def _task_id(fn: Callable[..., Any]) -> str:
    from celery import current_task

    request = getattr(current_task, "request", None)
    task_id = getattr(request, "id", None)
    if not task_id:
        raise ConfigurationError(
            f"{fn.__qualname__} ran outside a Celery task and has no key=: call it as a task "
            "or pass key=... to once_only"
        )
    return f"celery:{getattr(current_task, 'name', fn.__qualname__)}:{task_id}"


def once_only(
    effect: Effect[Any],
    *,
    key: Callable[..., str] | None = None,
    observer: Observer | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Apply the decorated task's effect once per task id (or per ``key(...)``).

    A duplicate returns the first run's stored result where the effect keeps one (Redis,
    leased) and None otherwise (SQL). Put it *under* ``@app.task(acks_late=True)``.
    Emits ``celery.apply`` events (outcome ``applied``, ``duplicate`` or ``busy``).
    """

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def task(*args: Any, **kwargs: Any) -> Any:
            dedup = key(*args, **kwargs) if key is not None else _task_id(fn)
            watch = Stopwatch()
            applied = effect.apply(dedup, lambda ctx: fn(ctx, *args, **kwargs))
            emit(observer, watch.event("celery.apply", applied.outcome, route=fn.__qualname__))
            if applied.outcome == "busy":
                from celery import current_task

                # Still running on another worker (a redelivery while it runs): try later.
                if current_task is not None and getattr(current_task, "request", None):
                    raise current_task.retry(countdown=1, max_retries=None)
            return applied.result

        # Celery checks call arguments against the signature: hide the context parameter.
        signature = inspect.signature(fn)
        params = list(signature.parameters.values())[1:]
        task.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        del task.__wrapped__
        return task

    return decorate
