"""Many awaits bounded by one timeout, with one timer between them.

Every Redis call made for a request must end within ``store_timeout``. ``asyncio.timeout``
per call costs a timer handle, a heap insertion and a context manager each time: more CPU
than the round trip it guards, on the hot path. All of a store's calls share one timeout, so
their deadlines arrive in the order they were set: :class:`Deadlines` keeps them in a queue
and one timer, rescheduled only while calls are pending, cancels the tasks whose deadline has
passed (at most ``resolution`` late). A call that finishes in time costs an append and a
flag.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable
from typing import TypeVar

__all__ = ["Deadlines"]

T = TypeVar("T")


class _Entry:
    __slots__ = ("deadline", "done", "expired", "task")

    def __init__(self, task: asyncio.Task[object], deadline: float) -> None:
        self.task = task
        self.deadline = deadline
        self.done = False
        self.expired = False


class Deadlines:
    """Bound awaits to ``timeout`` seconds (raising ``TimeoutError``), one timer for all."""

    def __init__(self, timeout: float, *, resolution: float = 0.02) -> None:
        self.timeout = timeout
        self.resolution = min(resolution, timeout / 4)
        self._entries: deque[_Entry] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    async def run(self, awaitable: Awaitable[T]) -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - always inside a task under asyncio
            return await asyncio.wait_for(awaitable, self.timeout)
        if loop is not self._loop:  # a new event loop (tests, a restarted app): start over
            self._loop, self._timer = loop, None
            self._entries.clear()
        entry = _Entry(task, loop.time() + self.timeout)
        self._entries.append(entry)
        if self._timer is None:
            self._timer = loop.call_at(entry.deadline + self.resolution, self._expire)
        try:
            return await awaitable
        except asyncio.CancelledError:
            if entry.expired and task.uncancel() == 0:
                raise TimeoutError from None
            raise
        finally:
            entry.done = True

    def _expire(self) -> None:
        loop = self._loop
        assert loop is not None
        self._timer = None
        now = loop.time()
        entries = self._entries
        while entries and (entries[0].done or entries[0].deadline <= now):
            entry = entries.popleft()
            if not entry.done:
                entry.expired = True
                entry.task.cancel()
        if entries:
            self._timer = loop.call_at(
                max(entries[0].deadline, now + self.resolution), self._expire
            )
