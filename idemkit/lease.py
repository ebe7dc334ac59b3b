"""The fenced lease store: the one mechanism under idempotency records and locks.

A *record* is one Redis hash. Claiming it grants a lease together with a fencing token that
is larger than every token granted for that record before; renewing, completing and
releasing act only while the caller's token is still the newest. Each operation is one Lua
script and one round trip (EVALSHA, loaded on first use). Record keys carry a hash tag, so
every script touches one Cluster slot.

The same scripts back :class:`LeaseStore` (``redis.asyncio``) and :class:`SyncLeaseStore`
(the blocking client), so sync callers never run an event loop in a thread.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final, Generic, TypeVar

import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from idemkit.errors import ConfigurationError, StoreUnavailableError
from idemkit.replication import ReplicaAck, SyncWaitingScript, WaitingScript, replica_ack

__all__ = [
    "BUSY",
    "CLAIMED",
    "COMPLETED",
    "MISMATCH",
    "Claim",
    "Completion",
    "LeaseStore",
    "SyncLeaseStore",
    "config_reply",
    "config_targets",
    "evicting_policy",
    "load_script",
]


class Completion(enum.Enum):
    """What :meth:`LeaseStore.complete` found; only :attr:`STORED` is true."""

    STORED = 1
    FENCED = 0  # a newer token was granted: the holder outlived its lease
    LOST = -1  # the record is gone or older than the grant (restart, failover, eviction)

    def __bool__(self) -> bool:
        return self is Completion.STORED


CLAIMED: Final = 0
COMPLETED: Final = 1
BUSY: Final = 2
MISMATCH: Final = 3

DEFAULT_PREFIX: Final = "idemkit:"


@dataclass(frozen=True, slots=True)
class Claim:
    """What a claim found.

    ``outcome`` is one of :data:`CLAIMED` (the caller now holds the lease with ``token``),
    :data:`COMPLETED` (``result`` holds the stored bytes), :data:`BUSY` (another holder's lease
    has ``retry_after_ms`` left) or :data:`MISMATCH` (the record belongs to a different
    fingerprint). ``slot`` is the index of the claimed record when several were offered to
    :meth:`LeaseStore.claim_owned` (semaphore slots).
    """

    outcome: int
    token: int = 0
    result: bytes | None = None
    retry_after_ms: int = 0
    slot: int = 0


def load_script(name: str) -> str:
    """Source of a Lua script shipped next to this module (``idemkit/lua/<name>.lua``), with
    each ``--!include NAME`` line replaced by ``lua/NAME.lua`` (Redis scripts cannot load
    code, so helpers shared by several scripts are pasted in before the script is sent)."""
    source = resources.files("idemkit").joinpath("lua", f"{name}.lua").read_text("utf-8")
    return _INCLUDE.sub(lambda m: load_script(m.group(1)), source)


_INCLUDE = re.compile(r"^--!include (\w+)$", re.M)


def _parse_claim(reply: list[Any]) -> Claim:
    outcome = int(reply[0])
    if outcome == CLAIMED:
        return Claim(CLAIMED, int(reply[1]), slot=int(reply[2]) if len(reply) > 2 else 0)
    if outcome == COMPLETED:
        return Claim(COMPLETED, int(reply[1]), result=bytes(reply[2]))
    if outcome == BUSY:
        return Claim(BUSY, int(reply[1]), retry_after_ms=int(reply[2]))
    return Claim(MISMATCH)


def _check_times(lease_ms: int, ttl_ms: int | None = None) -> None:
    if not isinstance(lease_ms, int) or lease_ms <= 0:
        raise ConfigurationError(
            f"lease must be a positive number of milliseconds, got {lease_ms!r}"
        )
    if ttl_ms is not None and ttl_ms < lease_ms:
        raise ConfigurationError(
            f"retention ({ttl_ms} ms) must be at least the lease ({lease_ms} ms)"
        )


ClientT = TypeVar("ClientT")


def _owned_args(
    keys: Sequence[str], owner: str, lease_ms: int, ttl_ms: int, floor: bytes
) -> list[Any]:
    _check_times(lease_ms, ttl_ms)
    if not keys:
        raise ConfigurationError("claim_owned needs at least one record key")
    if not owner:
        raise ConfigurationError("claim_owned needs a non-empty owner id")
    return [owner, lease_ms, ttl_ms, floor, b"o"]


def evicting_policy(config: Any) -> str | None:
    """The ``maxmemory-policy`` of a ``CONFIG GET`` reply if it lets Redis evict lease records
    (every policy but ``noeviction``: the records all carry a TTL, so ``volatile-*`` evicts
    them too), else None."""
    values = dict(config) if config else {}
    policy = values.get("maxmemory-policy", values.get(b"maxmemory-policy"))
    if isinstance(policy, bytes):
        policy = policy.decode()
    if not isinstance(policy, str) or policy == "noeviction":
        return None
    return policy


def config_targets(client: object) -> dict[str, Any]:
    """Keyword arguments that send ``CONFIG GET`` to every primary of a Cluster client (one
    evicting primary is one too many); none for other clients."""
    if isinstance(client, redis.RedisCluster | aioredis.RedisCluster):
        return {"target_nodes": client.PRIMARIES}
    return {}


def config_reply(config: Any) -> Any:
    """The reply of one node to a ``CONFIG GET``: the first evicting one of a Cluster's
    per-node replies (see :func:`config_targets`), else the reply as is."""
    # A Cluster client answers per node: any evicting node is one too many.
    if isinstance(config, dict) and config and all(isinstance(v, dict) for v in config.values()):
        for node_config in config.values():
            if evicting_policy(node_config):
                return node_config
        return next(iter(config.values()))
    return config


class _Base(Generic[ClientT]):
    """``replicas=n`` (with ``replica_timeout_ms``, ``replica_aof``) makes completions, lock
    grants and lease renewals wait for ``n`` replicas (``WAIT``, or ``WAITAOF`` with
    ``replica_aof=True``) in the same round trip before they are acknowledged; fewer in time
    raise :class:`~idemkit.errors.ReplicationTimeoutError` (see :mod:`idemkit.replication`).
    Idempotency claims and releases never wait: losing one in a failover costs a retry, not
    a duplicate."""

    def __init__(
        self,
        client: ClientT,
        *,
        prefix: str = DEFAULT_PREFIX,
        time_floor: bool = True,
        replicas: int = 0,
        replica_timeout_ms: int = 100,
        replica_aof: bool = False,
    ):
        if not prefix or "{" in prefix or "}" in prefix:
            raise ConfigurationError(f"prefix must be non-empty and without braces, got {prefix!r}")
        self.client = client
        self.prefix = prefix
        self._floor = b"1" if time_floor else b"0"
        self.replica_ack = replica_ack(replicas, replica_timeout_ms, replica_aof)
        claim, renew = load_script("lease_claim"), load_script("lease_renew")
        complete = load_script("lease_complete")
        self._claim = self._script(claim)
        self._renew = self._script(renew, self.replica_ack)
        self._complete = self._script(complete, self.replica_ack)
        self._release = self._script(load_script("lease_release"))
        # Owner-mode claims grant locks: they wait for replicas, plain claims do not.
        self._claim_owned = (
            self._claim if self.replica_ack is None else self._script(claim, self.replica_ack)
        )

    def _script(self, source: str, ack: ReplicaAck | None = None) -> Any:
        """How a script is run: the client's registered script (EVALSHA, loaded on first use),
        followed by a wait for replicas when ``ack`` is given. Subclasses change the transport
        here, e.g. auto-pipelining (idemkit/pipeline.py)."""
        if ack is not None:
            return self._waiting_script(source, ack)
        return self.client.register_script(source)  # type: ignore[attr-defined]

    def _waiting_script(self, source: str, ack: ReplicaAck) -> Any:
        raise NotImplementedError

    def record_key(self, name: str) -> str:
        """Redis key of the record called ``name``; the braces make it one Cluster slot."""
        return f"{self.prefix}{{{name}}}"


class LeaseStore(_Base[aioredis.Redis | aioredis.RedisCluster]):
    """Fenced leases on ``redis.asyncio`` (a ``Redis``, ``RedisCluster`` or Sentinel-managed
    client)."""

    def _waiting_script(self, source: str, ack: ReplicaAck) -> Any:
        return WaitingScript(self.client, source, ack)

    async def eviction_policy(self) -> str | None:
        """The server's evicting ``maxmemory-policy``, None if it keeps every record (or if
        ``CONFIG GET`` is not allowed, as on some managed services: nothing to check)."""
        try:
            config = await self.client.config_get("maxmemory-policy", **config_targets(self.client))
        except (RedisError, OSError, AttributeError, NotImplementedError):
            return None
        return evicting_policy(config_reply(config))

    async def claim(self, key: str, fingerprint: bytes | str, lease_ms: int, ttl_ms: int) -> Claim:
        _check_times(lease_ms, ttl_ms)
        try:
            reply = await self._claim(keys=[key], args=[fingerprint, lease_ms, ttl_ms, self._floor])
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"Redis claim failed: {exc}") from exc
        return _parse_claim(reply)

    async def renew(self, key: str, token: int, lease_ms: int) -> bool:
        _check_times(lease_ms)
        try:
            return bool(await self._renew(keys=[key], args=[token, lease_ms]))
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"Redis renew failed: {exc}") from exc

    async def complete(self, key: str, token: int, result: bytes, ttl_ms: int) -> Completion:
        try:
            return Completion(int(await self._complete(keys=[key], args=[token, result, ttl_ms])))
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"Redis complete failed: {exc}") from exc

    async def release(self, key: str, token: int) -> bool:
        try:
            return bool(await self._release(keys=[key], args=[token]))
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"Redis release failed: {exc}") from exc

    async def claim_owned(
        self, keys: Sequence[str], owner: str, lease_ms: int, ttl_ms: int
    ) -> Claim:
        """Claim the first free record of ``keys`` for one acquisition ``owner`` (locks).

        Owner mode of ``lua/lease_claim.lua``: a record the same owner already holds returns
        its token again (an acquire retried after a client timeout is idempotent); a record
        whose lease lapsed is claimed whoever held it. ``keys`` must share one hash tag.
        """
        args = _owned_args(keys, owner, lease_ms, ttl_ms, self._floor)
        try:
            reply = await self._claim_owned(keys=list(keys), args=args)
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"Redis claim failed: {exc}") from exc
        return _parse_claim(reply)

    async def release_and_signal(
        self, key: str, token: int, signal: str, *, signal_ms: int = 2_000, signal_cap: int = 1
    ) -> bool:
        """:meth:`release`, and push a wake-up onto the list ``signal`` (same hash tag) for
        waiters blocked in ``BLPOP``; at most ``signal_cap`` unclaimed wake-ups are kept."""
        try:
            return bool(
                await self._release(keys=[key, signal], args=[token, signal_ms, signal_cap])
            )
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"Redis release failed: {exc}") from exc


class SyncLeaseStore(_Base[redis.Redis | redis.RedisCluster]):
    """Fenced leases on the blocking ``redis`` client, for sync callers."""

    def _waiting_script(self, source: str, ack: ReplicaAck) -> Any:
        return SyncWaitingScript(self.client, source, ack)

    def eviction_policy(self) -> str | None:
        """See :meth:`LeaseStore.eviction_policy`."""
        try:
            config = self.client.config_get("maxmemory-policy", **config_targets(self.client))
        except (RedisError, OSError, AttributeError, NotImplementedError):
            return None
        return evicting_policy(config_reply(config))

    def claim(self, key: str, fingerprint: bytes | str, lease_ms: int, ttl_ms: int) -> Claim:
        _check_times(lease_ms, ttl_ms)
        try:
            reply = self._claim(keys=[key], args=[fingerprint, lease_ms, ttl_ms, self._floor])
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"Redis claim failed: {exc}") from exc
        return _parse_claim(reply)

    def renew(self, key: str, token: int, lease_ms: int) -> bool:
        _check_times(lease_ms)
        try:
            return bool(self._renew(keys=[key], args=[token, lease_ms]))
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"Redis renew failed: {exc}") from exc

    def complete(self, key: str, token: int, result: bytes, ttl_ms: int) -> Completion:
        try:
            return Completion(int(self._complete(keys=[key], args=[token, result, ttl_ms])))
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"Redis complete failed: {exc}") from exc

    def release(self, key: str, token: int) -> bool:
        try:
            return bool(self._release(keys=[key], args=[token]))
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"Redis release failed: {exc}") from exc

    def claim_owned(self, keys: Sequence[str], owner: str, lease_ms: int, ttl_ms: int) -> Claim:
        """Claim the first free record of ``keys`` for one acquisition ``owner`` (locks).

        Owner mode of ``lua/lease_claim.lua``: a record the same owner already holds returns
        its token again (an acquire retried after a client timeout is idempotent); a record
        whose lease lapsed is claimed whoever held it. ``keys`` must share one hash tag.
        """
        args = _owned_args(keys, owner, lease_ms, ttl_ms, self._floor)
        try:
            reply = self._claim_owned(keys=list(keys), args=args)
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"Redis claim failed: {exc}") from exc
        return _parse_claim(reply)

    def release_and_signal(
        self, key: str, token: int, signal: str, *, signal_ms: int = 2_000, signal_cap: int = 1
    ) -> bool:
        """:meth:`release`, and push a wake-up onto the list ``signal`` (same hash tag) for
        waiters blocked in ``BLPOP``; at most ``signal_cap`` unclaimed wake-ups are kept."""
        try:
            return bool(self._release(keys=[key, signal], args=[token, signal_ms, signal_cap]))
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"Redis release failed: {exc}") from exc
