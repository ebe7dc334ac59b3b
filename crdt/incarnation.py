"""Incarnations: replica ids that change whenever a replica may have lost state.

A replica id names the writer of dots, counts and LWW timestamps. A replica that restarts
without its saved state (an empty Redis, an older snapshot, a Python process that lost its
file) and keeps its id mints ``(id, 1)``, ``(id, 2)``, ... again: the merges then drop
its new writes (a count that is lower than the one already seen, a dot already seen). So
every start without saved state takes a fresh id, ``<region>.<token>``: the region stays
readable, the random token makes the id new. The Redis store does this by itself, per object
(see :mod:`crdt.redis_store`); a pure-Python replica calls :func:`new_replica_id` when it
starts from scratch and saves the id with its state.
"""

from __future__ import annotations

import base64
import os

from crdt.dots import validate_replica
from crdt.errors import InvalidReplicaIdError

__all__ = ["MAX_REGION_LENGTH", "TOKEN_LENGTH", "new_replica_id", "new_token", "region_of"]

TOKEN_LENGTH = 10  # 50 random bits: unique among the incarnations one object ever sees
_ALPHABET = "0123456789abcdefghijklmnopqrstuv"
MAX_REGION_LENGTH = 64 - 1 - TOKEN_LENGTH


def validate_region(region: str) -> str:
    validate_replica(region)
    if len(region) > MAX_REGION_LENGTH:
        raise InvalidReplicaIdError(
            f"region id {region!r} is too long: at most {MAX_REGION_LENGTH} characters, so "
            "that '<region>.<token>' stays a valid 64-character replica id"
        )
    return region


def new_token() -> str:
    return base64.b32hexencode(os.urandom(7)).decode()[:TOKEN_LENGTH].lower()


def new_replica_id(region: str) -> str:
    """A replica id never used before: ``<region>.<10 random characters>``."""
    return f"{validate_region(region)}.{new_token()}"


def region_of(replica: str) -> str:
    """The region part of an incarnation id (the id itself if it has no token)."""
    head, dot, token = replica.rpartition(".")
    if dot and head and len(token) == TOKEN_LENGTH and set(token) <= set(_ALPHABET):
        return head
    return replica
