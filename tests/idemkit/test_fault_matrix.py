"""The fault matrix (tests/idemkit/fault_matrix.py) on real redis-server processes: for every
fault and every client setup, a keyed request gets its answer within ``store_timeout`` plus a
small margin, never a 500, and no request whose completion could still be written within its
lease runs twice. ``make fault-table`` writes what this measures into the README."""

from __future__ import annotations

import pytest

from tests.idemkit.fault_matrix import CLIENTS, FAULTS, STORE_TIMEOUT, matrix

MARGIN = 0.5


@pytest.mark.timeout(240)
@pytest.mark.parametrize("fault", list(FAULTS))
async def test_fault_matrix(fault: str) -> None:
    rows = await matrix([fault])
    assert {row.client for row in rows} == set(CLIENTS)
    for row in rows:
        where = f"{row.fault} / {row.client}: {row}"
        assert row.answer == 503, where
        assert row.seconds <= STORE_TIMEOUT + MARGIN, where
        if fault == "evicting":
            assert row.executions == 0, where  # refused before anything ran
            continue
        assert row.in_flight_status == 201, where  # the handler's own answer got out
        if fault == "restarted-empty":
            # The record itself was lost: the completion cannot be written, it is reported
            # as lost (not fenced), and only then may a retry run it again.
            assert "completion:lost" in row.events, where
            assert row.executions == 2, where
        else:
            assert row.retry == "replayed" and row.executions == 1, where
