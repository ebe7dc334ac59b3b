"""Retry-After parsing and the retry policy's rules, without I/O."""

from __future__ import annotations

import pytest

from idemkit.errors import ConfigurationError
from integrations.retry import RetryPolicy, parse_retry_after

NOW = 1445412480.0  # Wed, 21 Oct 2015 07:28:00 GMT


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 5 ", 5.0),
        ("0", 0.0),
        ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),  # IMF-fixdate, what servers must send
        ("Wednesday, 21-Oct-15 07:29:00 GMT", 60.0),  # RFC 850, obsolete but accepted
        ("Wed Oct 21 07:28:10 2015", 10.0),  # asctime, obsolete but accepted
        ("Wed, 21 Oct 2015 07:00:00 GMT", 0.0),  # in the past: at once
        (None, None),
        ("", None),
        ("soon", None),
        ("-5", None),
        ("1.5", None),
        ("²", None),  # a digit to str.isdigit, not to HTTP
    ],
)
def test_retry_after_forms(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == seconds


def test_policy_rules() -> None:
    policy = RetryPolicy(backoff=0.1, max_backoff=0.3)
    assert policy.applies_to("post") and not policy.applies_to("GET")
    assert policy.retryable(503, {}) and policy.retryable(409, {})
    assert not policy.retryable(500, {}) and not policy.retryable(422, {})
    assert not policy.retryable(503, {"idempotent-replayed": "true"})
    assert all(0 <= policy.delay(n) <= 0.3 for n in range(10))  # jittered, capped
    assert policy.delay(0, "9") == 9.0  # the server's word beats the cap
    with pytest.raises(ConfigurationError):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError):  # ConfigurationError is a ValueError
        RetryPolicy(deadline=0)
