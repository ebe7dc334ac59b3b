"""How a careful client retries: same key, same body, bounded attempts and time.

A retry waits at least what ``Retry-After`` asks (delta-seconds or an HTTP-date, RFC 9110
section 10.2.3) and otherwise backs off exponentially with full jitter, so clients that
failed together do not come back together. No wait ever runs past the operation's time
budget: when the next attempt could not start in time, the client gives up.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from idemkit.errors import ConfigurationError

__all__ = ["DEFAULT_RETRY_STATUSES", "RetryPolicy", "parse_retry_after"]

# 409: the first attempt is still in flight; 429 and 503: the service asks to come back
# later. A 500 is final: the service answered, and retrying it could run it again.
DEFAULT_RETRY_STATUSES: frozenset[int] = frozenset({409, 429, 503})


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value, or None when absent or unreadable.

    ``now`` (epoch seconds, default the current time) anchors an HTTP-date; a date in the
    past means "now" (0 seconds).
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        return float(int(text))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a zone-less one is read as such
        return None
    seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds) if math.isfinite(seconds) else None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When and how often one logical operation is attempted again.

    ``timeout`` is each attempt's client timeout (connect and read); ``max_attempts`` and
    ``max_seconds`` bound the whole operation. ``statuses`` are answers that mean "try the
    same request again"; timeouts and dropped connections are always retried.
    """

    timeout: float = 5.0
    max_attempts: int = 10
    max_seconds: float = 20.0
    backoff: float = 0.05
    max_backoff: float = 5.0
    statuses: frozenset[int] = field(default=DEFAULT_RETRY_STATUSES)

    def __post_init__(self) -> None:
        if not (self.timeout > 0 and self.max_seconds > 0):
            raise ConfigurationError("RetryPolicy: timeout and max_seconds must be positive")
        if self.max_attempts < 1:
            raise ConfigurationError("RetryPolicy: max_attempts must be at least 1")
        if self.backoff < 0 or self.max_backoff < self.backoff:
            raise ConfigurationError("RetryPolicy: need 0 <= backoff <= max_backoff")
        object.__setattr__(self, "statuses", frozenset(_statuses(self.statuses)))

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 0).

        ``Retry-After`` is a floor, not a suggestion: the wait is at least that long, plus
        up to 10 % jitter. It is capped by ``max_backoff`` only when the server did not ask.
        """
        if retry_after is not None:
            return retry_after * rng.uniform(1.0, 1.1)
        ceiling = min(self.max_backoff, self.backoff * 2 ** min(attempt, 30))
        return rng.uniform(self.backoff / 2, max(ceiling, self.backoff / 2))


def _statuses(values: Iterable[int]) -> Iterable[int]:
    for value in values:
        if not isinstance(value, int) or not 100 <= value <= 599:
            raise ConfigurationError(f"RetryPolicy: statuses must be HTTP statuses, got {value!r}")
        yield value
