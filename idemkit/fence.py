"""Resource-side fences: refuse writes that carry an older fencing token.

A lock cannot stop a holder that was paused past its lease from writing; the resource can.
:class:`Fence` keeps a Redis hash per resource whose ``_fence`` field is the newest token
seen, and applies a write (``HSET`` of the given fields) only if the writer's token is at
least that, in one script and one round trip. Reads go through the fence too
(:meth:`Fence.read`), so a read-modify-write of an old holder is refused once a newer
holder has read. For SQL stores see :mod:`idemkit.sql_fence`.

Tokens are compared exactly at any size. The scripts never turn a token into a Lua number
(a double: 2^53 + 1 would equal 2^53, and past 2^63 the stored token turned negative);
they compare canonical decimal strings, by length and then digit by digit. So tokens from
other sources (nanosecond clocks, 64-bit sequence numbers) are fenced correctly too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Generic, TypeVar

import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from idemkit.errors import ConfigurationError, StaleTokenError, StoreUnavailableError
from idemkit.lease import load_script
from idemkit.lock import check_name
from idemkit.replication import SyncWaitingScript, WaitingScript, replica_ack

__all__ = ["FENCE_FIELD", "Fence", "SyncFence"]

FENCE_FIELD: Final = "_fence"
DEFAULT_FENCE_PREFIX: Final = "idemkit:fence:"

FieldValue = bytes | str | int | float


def _check_token(token: object) -> int:
    if isinstance(token, bool) or not isinstance(token, int) or token < 0:
        raise ConfigurationError(f"a fencing token is an int >= 0, got {token!r}")
    return token


def _write_args(token: int, fields: Mapping[str, FieldValue]) -> list[Any]:
    args: list[Any] = [_check_token(token)]
    for name, value in fields.items():
        if name == FENCE_FIELD:
            raise ConfigurationError(f"field {FENCE_FIELD!r} is reserved for the fence itself")
        args.extend((name, value))
    return args


def _stale(resource: str, token: int, newest: int) -> StaleTokenError:
    return StaleTokenError(
        f"fence {resource!r} refused token {token}: token {newest} is newer, so the lock "
        "behind this token was lost; stop and do not retry with it",
        token=token,
        newest=newest,
    )


def _parse_read(resource: str, token: int, reply: list[Any]) -> dict[str, bytes]:
    if int(reply[0]) == 0:
        raise _stale(resource, token, int(reply[1]))
    items = reply[2:]
    return {
        (k.decode() if isinstance(k, bytes) else str(k)): bytes(v)
        for k, v in zip(items[::2], items[1::2], strict=True)
    }


ClientT = TypeVar("ClientT")


class _Base(Generic[ClientT]):
    """``replicas=n`` makes writes and reads (which record their token) wait for ``n``
    replicas in the same round trip (see :mod:`idemkit.replication`), so a failover of the
    resource's Redis cannot forget the newest token a writer was told it holds."""

    def __init__(
        self,
        client: ClientT,
        *,
        prefix: str = DEFAULT_FENCE_PREFIX,
        replicas: int = 0,
        replica_timeout_ms: int = 100,
        replica_aof: bool = False,
    ) -> None:
        if not prefix or "{" in prefix or "}" in prefix:
            raise ConfigurationError(f"prefix must be non-empty and without braces, got {prefix!r}")
        self.client = client
        self.prefix = prefix
        self.replica_ack = replica_ack(replicas, replica_timeout_ms, replica_aof)
        self._write = self._script(load_script("fence_write"))
        self._read = self._script(load_script("fence_read"))

    def _script(self, source: str) -> Any:
        if self.replica_ack is None:
            return self.client.register_script(source)  # type: ignore[attr-defined]
        if isinstance(self.client, redis.Redis | redis.RedisCluster):
            return SyncWaitingScript(self.client, source, self.replica_ack)
        return WaitingScript(self.client, source, self.replica_ack)  # type: ignore[arg-type]

    def key(self, resource: str) -> str:
        """Redis key of the hash that holds ``resource`` and its newest token."""
        return f"{self.prefix}{{{check_name(resource, 'resource')}}}"


class Fence(_Base[aioredis.Redis | aioredis.RedisCluster]):
    """Fenced Redis hashes on ``redis.asyncio``; every method is one round trip."""

    async def write(self, resource: str, token: int, fields: Mapping[str, FieldValue]) -> None:
        """Set ``fields`` on ``resource`` if ``token`` is not older than the newest seen.

        Raises :class:`StaleTokenError` (nothing written) otherwise.
        """
        key, args = self.key(resource), _write_args(token, fields)
        try:
            reply = await self._write(keys=[key], args=args)
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"Redis fenced write failed: {exc}") from exc
        if int(reply[0]) == 0:
            raise _stale(resource, token, int(reply[1]))

    async def read(self, resource: str, token: int) -> dict[str, bytes]:
        """The fields of ``resource``, recording ``token`` as seen; raises if it is stale."""
        key = self.key(resource)
        try:
            reply = await self._read(keys=[key], args=[_check_token(token)])
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"Redis fenced read failed: {exc}") from exc
        return _parse_read(resource, token, reply)

    async def newest(self, resource: str) -> int:
        """The newest token ``resource`` has seen (0 if none)."""
        try:
            value = await self.client.hget(self.key(resource), FENCE_FIELD)
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"Redis read failed: {exc}") from exc
        return int(value or 0)


class SyncFence(_Base[redis.Redis | redis.RedisCluster]):
    """The blocking twin of :class:`Fence`."""

    def write(self, resource: str, token: int, fields: Mapping[str, FieldValue]) -> None:
        """See :meth:`Fence.write`."""
        key, args = self.key(resource), _write_args(token, fields)
        try:
            reply = self._write(keys=[key], args=args)
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"Redis fenced write failed: {exc}") from exc
        if int(reply[0]) == 0:
            raise _stale(resource, token, int(reply[1]))

    def read(self, resource: str, token: int) -> dict[str, bytes]:
        """See :meth:`Fence.read`."""
        key = self.key(resource)
        try:
            reply = self._read(keys=[key], args=[_check_token(token)])
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"Redis fenced read failed: {exc}") from exc
        return _parse_read(resource, token, reply)

    def newest(self, resource: str) -> int:
        """See :meth:`Fence.newest`."""
        try:
            value = self.client.hget(self.key(resource), FENCE_FIELD)
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"Redis read failed: {exc}") from exc
        return int(value or 0)
