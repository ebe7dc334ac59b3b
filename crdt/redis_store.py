"""Store CRDTs in Redis and merge into them in one round trip.

Counters, sets and registers are joined *inside* Redis by a Lua script (see
:mod:`crdt.redis_layout` for the layout and which types merge server-side); ORMap is merged
by optimistic check-and-set on a version field. Region-local writes (``increment``, ``add``,
``remove``, ``assign``) also run as scripts with this region as the replica, so any number
of processes can write through one store without coordinating or losing an update.

Every script that changes an object appends its name to the region's change stream
(``<prefix>log``) in the same atomic step; :mod:`crdt.sync` ships changes from it. The stream
is one key, so on Redis Cluster pass ``change_log=False`` (scripts then touch one slot) and
sync by full scans instead.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from typing import Any, Generic, NoReturn, TypeVar

import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from crdt.base import Crdt
from crdt.codec import check_element, pack
from crdt.dots import validate_replica
from crdt.errors import StoreConflictError, TimestampReuseError, TypeMismatchError
from crdt.gcounter import GCounter
from crdt.gset import GSet
from crdt.lwwregister import LWWRegister
from crdt.mvregister import MVRegister
from crdt.orset import ORSet
from crdt.pncounter import PNCounter
from crdt.redis_layout import SERVER_MERGED, merge_call, parse_hash
from crdt.twopset import TwoPSet
from idemkit.errors import ConfigurationError, StoreUnavailableError

__all__ = ["DEFAULT_PREFIX", "CrdtStore", "SyncCrdtStore", "load_script"]

DEFAULT_PREFIX = "crdt:"
_SCRIPTS = {
    "merge_fields": ("_prelude", "merge_fields"),
    "counter_incr": ("_prelude", "counter_incr"),
    "lww_merge": ("_prelude", "lww_merge"),
    "lww_assign": ("_prelude", "lww_assign"),
    "dots_merge": ("_prelude", "_dots", "dots_merge"),
    "dots_add": ("_prelude", "_dots", "dots_add"),
    "dots_remove": ("_prelude", "_dots", "dots_remove"),
    "cas": ("_prelude", "cas"),
}

T = TypeVar("T", bound=Crdt)
ClientT = TypeVar("ClientT")
Call = tuple[str, str, type[Crdt], list[Any]]  # script, object name, type, type-specific args


def load_script(name: str) -> str:
    """Source of a script: the shared prelude and helpers, then ``crdt/lua/<name>.lua``."""
    parts = _SCRIPTS[name]
    lua = resources.files("crdt").joinpath("lua")
    return "\n".join(lua.joinpath(f"{part}.lua").read_text("utf-8") for part in parts)


def _raise_for(exc: Exception, name: str) -> NoReturn:
    text = str(exc)
    if "CRDT_TYPE" in text:
        raise TypeMismatchError(f"Redis object {name!r}: {text}; use another name") from None
    if "CRDT_TSREUSE" in text:
        raise TimestampReuseError(f"Redis object {name!r}: {text}") from None
    raise StoreUnavailableError(f"Redis call for CRDT {name!r} failed: {exc}") from exc


def _as_bytes(raw: bytes | str) -> bytes:
    # Stored states are binary; a client built with decode_responses=True cannot read them.
    if isinstance(raw, str):
        raise ConfigurationError("CRDT stores need a Redis client with decode_responses=False")
    return raw


class _Base(Generic[ClientT]):
    def __init__(
        self,
        client: ClientT,
        *,
        region: str,
        prefix: str = DEFAULT_PREFIX,
        change_log: bool = True,
        log_maxlen: int = 100_000,
        cas_attempts: int = 100,
    ) -> None:
        self.region = validate_replica(region)
        if not prefix or "{" in prefix or "}" in prefix:
            raise ConfigurationError(f"prefix must be non-empty and without braces, got {prefix!r}")
        if log_maxlen < 1 or cas_attempts < 1:
            raise ConfigurationError("log_maxlen and cas_attempts must be positive")
        self.client = client
        self.prefix = prefix
        self.change_log = change_log
        self.log_maxlen = log_maxlen
        self.cas_attempts = cas_attempts
        register = client.register_script  # type: ignore[attr-defined]
        self._scripts = {name: register(load_script(name)) for name in _SCRIPTS}

    def key(self, name: str) -> str:
        """The object's HASH; the braces keep every script on one Cluster slot."""
        if not name or "{" in name or "}" in name:
            raise ConfigurationError(f"CRDT names are non-empty and brace-free, got {name!r}")
        return f"{self.prefix}{{{name}}}"

    @property
    def log_key(self) -> str:
        return f"{self.prefix}log"

    def _script_args(self, call: Call) -> tuple[Any, list[str], list[Any]]:
        script, name, kind, args = call
        keys = [self.key(name)] + ([self.log_key] if self.change_log else [])
        return self._scripts[script], keys, [kind.TYPE_TAG, name, self.log_maxlen, *args]

    # Builders shared by the async and sync stores: each returns one script call.

    def _merge_call(self, name: str, state: Crdt) -> Call:
        script, args = merge_call(state)
        return (script, name, type(state), args)

    def _increment_call(self, name: str, amount: int, kind: type[Crdt]) -> Call:
        if type(amount) is not int:
            raise ValueError(f"amount must be an int, got {amount!r}")
        if kind is GCounter:
            if amount < 0:
                raise ValueError("a GCounter only grows; use a PNCounter to decrement")
            field = self.region
        elif kind is PNCounter:
            field = ("p:" if amount >= 0 else "n:") + self.region
        else:
            raise TypeError(f"increment works on GCounter and PNCounter, not {kind.__name__}")
        return ("counter_incr", name, kind, [field, str(abs(amount))])

    def _add_call(self, name: str, element: Any, kind: type[Crdt]) -> Call:
        payload = pack(check_element(element))
        if kind is ORSet:
            return ("dots_add", name, kind, [self.region, payload, "add"])
        if kind in (GSet, TwoPSet):
            return ("merge_fields", name, kind, [b"a:" + payload, "1"])
        raise TypeError(f"add works on ORSet, GSet and TwoPSet, not {kind.__name__}")

    def _remove_call(self, name: str, element: Any, kind: type[Crdt]) -> Call:
        payload = pack(check_element(element))
        if kind is ORSet:
            return ("dots_remove", name, kind, [payload])
        if kind is TwoPSet:
            return ("merge_fields", name, kind, [b"r:" + payload, "1"])
        raise TypeError(f"remove works on ORSet and TwoPSet, not {kind.__name__}")

    def _assign_call(self, name: str, value: Any, kind: type[Crdt]) -> Call:
        payload = pack(value)
        if kind is LWWRegister:
            return ("lww_assign", name, kind, [self.region, payload])
        if kind is MVRegister:
            return ("dots_add", name, kind, [self.region, payload, "assign"])
        raise TypeError(f"assign works on LWWRegister and MVRegister, not {kind.__name__}")

    def _parse(self, name: str, kind: type[T], fields: dict[Any, Any]) -> T:
        tag = fields.get(b"#t")
        if tag is not None and int(tag) != kind.TYPE_TAG:
            raise TypeMismatchError(
                f"Redis object {name!r} holds type tag {int(tag)}, not a {kind.__name__}"
            )
        state = parse_hash(kind, fields)
        assert isinstance(state, kind)
        return state

    def _check_cas_kind(self, kind: type[Crdt]) -> None:
        if kind in SERVER_MERGED:
            raise TypeError(
                f"{kind.__name__} merges inside Redis; use merge()/increment()/add()/assign()"
            )


class CrdtStore(_Base[aioredis.Redis | aioredis.RedisCluster]):
    """CRDT storage on ``redis.asyncio``; ``region`` is this deployment's replica id."""

    async def _run(self, call: Call) -> Any:
        script, keys, args = self._script_args(call)
        try:
            return await script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            _raise_for(exc, call[1])

    async def load(self, name: str, kind: type[T]) -> T:
        try:
            fields = await self.client.hgetall(self.key(name))
        except (RedisError, OSError) as exc:
            _raise_for(exc, name)
        return self._parse(name, kind, fields)

    async def merge(self, name: str, state: Crdt) -> bool:
        """Join ``state`` (a full state or a causally ready delta) into Redis.

        One round trip for script-merged types; returns whether the stored state grew.
        """
        if type(state) in SERVER_MERGED:
            return bool(await self._run(self._merge_call(name, state)))
        merged = await self.update(name, type(state), lambda current: current.__ior__(state))
        return merged is not None

    async def increment(self, name: str, amount: int = 1, kind: type[Crdt] = PNCounter) -> int:
        """Add ``amount`` to this region's share; returns that share (not the total)."""
        return int(await self._run(self._increment_call(name, amount, kind)))

    async def add(self, name: str, element: Any, kind: type[Crdt] = ORSet) -> None:
        await self._run(self._add_call(name, element, kind))

    async def remove(self, name: str, element: Any, kind: type[Crdt] = ORSet) -> bool:
        """Remove what this region holds of ``element``; False when it held nothing."""
        return bool(await self._run(self._remove_call(name, element, kind)))

    async def assign(self, name: str, value: Any, kind: type[Crdt] = LWWRegister) -> None:
        await self._run(self._assign_call(name, value, kind))

    async def update(self, name: str, kind: type[T], mutate: Callable[[T], Any]) -> T:
        """Read, ``mutate`` in place, write back if nobody wrote meanwhile; else retry.

        For types stored by check-and-set (ORMap). Two round trips when uncontended.
        """
        self._check_cas_kind(kind)
        key = self.key(name)
        for _ in range(self.cas_attempts):
            try:
                raw, version = await self.client.hmget(key, ["b", "ver"])
            except (RedisError, OSError) as exc:
                _raise_for(exc, name)
            state = kind() if raw is None else kind.from_bytes(_as_bytes(raw))
            before = state.copy()
            mutate(state)
            if raw is not None and state == before:
                return state  # nothing new: no write, no change-log entry (ends sync echoes)
            call = ("cas", name, kind, [version or b"0", state.to_bytes()])
            if await self._run(call):
                return state
        raise StoreConflictError(
            f"{self.cas_attempts} check-and-set attempts on {name!r} all lost the race"
        )


class SyncCrdtStore(_Base[redis.Redis | redis.RedisCluster]):
    """The same storage on the blocking ``redis`` client, for sync code and worker processes."""

    def _run(self, call: Call) -> Any:
        script, keys, args = self._script_args(call)
        try:
            return script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            _raise_for(exc, call[1])

    def load(self, name: str, kind: type[T]) -> T:
        try:
            fields = self.client.hgetall(self.key(name))
        except (RedisError, OSError) as exc:
            _raise_for(exc, name)
        return self._parse(name, kind, fields)

    def merge(self, name: str, state: Crdt) -> bool:
        if type(state) in SERVER_MERGED:
            return bool(self._run(self._merge_call(name, state)))
        self.update(name, type(state), lambda current: current.__ior__(state))
        return True

    def increment(self, name: str, amount: int = 1, kind: type[Crdt] = PNCounter) -> int:
        return int(self._run(self._increment_call(name, amount, kind)))

    def add(self, name: str, element: Any, kind: type[Crdt] = ORSet) -> None:
        self._run(self._add_call(name, element, kind))

    def remove(self, name: str, element: Any, kind: type[Crdt] = ORSet) -> bool:
        return bool(self._run(self._remove_call(name, element, kind)))

    def assign(self, name: str, value: Any, kind: type[Crdt] = LWWRegister) -> None:
        self._run(self._assign_call(name, value, kind))

    def update(self, name: str, kind: type[T], mutate: Callable[[T], Any]) -> T:
        self._check_cas_kind(kind)
        key = self.key(name)
        for _ in range(self.cas_attempts):
            try:
                raw, version = self.client.hmget(key, ["b", "ver"])
            except (RedisError, OSError) as exc:
                _raise_for(exc, name)
            state = kind() if raw is None else kind.from_bytes(_as_bytes(raw))
            before = state.copy()
            mutate(state)
            if raw is not None and state == before:
                return state
            if self._run(("cas", name, kind, [version or b"0", state.to_bytes()])):
                return state
        raise StoreConflictError(
            f"{self.cas_attempts} check-and-set attempts on {name!r} all lost the race"
        )
