"""Log lines that stay readable during an outage: one line per cause and interval, with a count.

When Redis is down every request fails the same way; a WARNING per request buries everything
else in the log and costs I/O exactly when the service is struggling. A :class:`RateLimitedLog`
writes the first occurrence of a cause at once, then at most one line per ``interval`` that
says how many were folded into it. Records carry structured fields (``extra=``): ``idemkit``
(the cause) and ``idemkit_count``, so log pipelines can aggregate without parsing text.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

__all__ = ["RateLimitedLog"]


class RateLimitedLog:
    """``log(level, cause, message)``: at most one record per cause per ``interval`` seconds."""

    def __init__(self, logger: logging.Logger, *, interval: float = 10.0) -> None:
        self.logger = logger
        self.interval = interval
        self._lock = threading.Lock()
        # cause -> [time of the last line written, occurrences folded since then]
        self._state: dict[str, list[float]] = {}

    def log(self, level: int, cause: str, message: str, **fields: Any) -> bool:
        """Write ``message`` now, or count it for the next line; True if a line was written."""
        now = time.monotonic()
        with self._lock:
            state = self._state.get(cause)
            if state is not None and now - state[0] < self.interval:
                state[1] += 1
                return False
            folded = 0 if state is None else int(state[1])
            self._state[cause] = [now, 0]
        if not self.logger.isEnabledFor(level):
            return True
        text = message if not folded else f"{message} ({folded} more since the last report)"
        extra = {"idemkit": cause, "idemkit_count": folded + 1, **fields}
        self.logger.log(level, "idemkit: %s", text, extra=extra)
        return True
