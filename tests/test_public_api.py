"""The public surface changes only on purpose."""

from __future__ import annotations

import idemkit


def test_idemkit_all_is_sorted_and_importable() -> None:
    assert idemkit.__all__ == sorted(idemkit.__all__)
    for name in idemkit.__all__:
        assert getattr(idemkit, name) is not None


def test_core_names_are_public() -> None:
    assert {"IdempotencyMiddleware", "idempotent", "LeaseStore", "IdemkitError"} <= set(
        idemkit.__all__
    )


def test_crdt_all_is_sorted_and_importable() -> None:
    import crdt

    assert crdt.__all__ == sorted(crdt.__all__)
    assert {"CrdtStore", "ORSet", "PNCounter", "RegionSyncer"} <= set(crdt.__all__)
    for name in crdt.__all__:
        assert getattr(crdt, name) is not None
