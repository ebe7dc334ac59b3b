"""Store CRDTs in Redis and merge into them in one round trip.

Counters, sets and registers are joined *inside* Redis by Lua scripts (see
:mod:`crdt.redis_layout` for the layout); ORMap is merged by optimistic check-and-set.
Region-local writes (``increment``, ``add``, ``remove``, ``assign``) run as scripts that
mint under this region's current *incarnation* of the object (``<region>.<token>``, see
:mod:`crdt.incarnation`): a new one whenever the server restarted (so also after a restore
from an older snapshot or a failover) or the object's data key was lost. Any number of
processes can write through one store without coordinating or losing an update.

``delete`` and ``expire`` converge across regions: a delete empties the object into the
next *epoch*, which wins over everything older wherever it arrives. A ``DEL`` of the data
key outside this API is noticed by the next script that touches the object and becomes
such a delete (reported as a ``crdt.outside_delete`` event), instead of being undone by
the next sync.

Every script that changes an object appends the change to its shard's stream in the same
atomic step; :mod:`crdt.sync` replays those entries in the other regions.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from typing import Any, Generic, NoReturn, TypeVar

import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from crdt.base import Crdt
from crdt.codec import check_element, pack, pack_value
from crdt.errors import (
    ClockDriftError,
    CrdtCodecError,
    DotReuseError,
    TimestampReuseError,
    TypeMismatchError,
)
from crdt.gcounter import GCounter
from crdt.gset import GSet
from crdt.hlc import DEFAULT_MAX_DRIFT_MS
from crdt.incarnation import new_token, validate_region
from crdt.lwwregister import LWWRegister
from crdt.mvregister import MVRegister
from crdt.object_merge import Plan, cas_plan, state_plan
from crdt.ormap import ORMap
from crdt.orset import ORSet
from crdt.pncounter import PNCounter
from crdt.redis_layout import (
    DEFAULT_SHARDS,
    Call,
    Layout,
    ObjectKeys,
    parse_read,
    parse_reply,
)
from crdt.twopset import TwoPSet
from idemkit.errors import ConfigurationError, StoreUnavailableError
from idemkit.observe import Event, Observer, Stopwatch, emit

__all__ = ["DEFAULT_PREFIX", "CrdtStore", "SyncCrdtStore", "load_script"]

DEFAULT_PREFIX = "crdt:"
_WRITES = {
    "merge_fields": ("_prelude", "merge_fields"),
    "counter_incr": ("_prelude", "counter_incr"),
    "lww_merge": ("_prelude", "lww_merge"),
    "lww_assign": ("_prelude", "lww_assign"),
    "dots_delta": ("_prelude", "_dots", "dots_delta"),
    "dots_add": ("_prelude", "_dots", "dots_add"),
    "dots_remove": ("_prelude", "_dots", "dots_remove"),
    "ctx_union": ("_prelude", "_dots", "ctx_union"),
    "cas": ("_prelude", "cas"),
    "touch": ("_prelude", "touch"),
    "delete": ("_prelude", "delete"),
    "expire": ("_prelude", "expire"),
}
_READS = {"read": ("read",), "scan": ("scan",), "probe": ("probe",)}
_SCRIPTS = {**_WRITES, **_READS}
_ERRORS: dict[str, Callable[[str], Exception]] = {
    "CRDT_TYPE": TypeMismatchError,
    "CRDT_TSREUSE": TimestampReuseError,
    "CRDT_DOTREUSE": DotReuseError,
    "CRDT_DRIFT": ClockDriftError,
    "CRDT_ARG": CrdtCodecError,
}

T = TypeVar("T", bound=Crdt)
ClientT = TypeVar("ClientT")


def load_script(name: str) -> str:
    """Source of a script: the shared prelude and helpers, then ``crdt/lua/<name>.lua``."""
    parts = _SCRIPTS[name]
    lua = resources.files("crdt").joinpath("lua")
    return "\n".join(lua.joinpath(f"{part}.lua").read_text("utf-8") for part in parts)


def _raise_for(exc: Exception, name: str) -> NoReturn:
    text = str(exc)
    for code, error in _ERRORS.items():
        if code in text:
            raise error(f"Redis object {name!r}: {text}") from None
    raise StoreUnavailableError(f"Redis call for CRDT {name!r} failed: {exc}") from exc


class _Base(Generic[ClientT]):
    def __init__(
        self,
        client: ClientT,
        *,
        region: str,
        prefix: str = DEFAULT_PREFIX,
        change_log: bool = True,
        log_maxlen: int = 10_000,
        shards: int = DEFAULT_SHARDS,
        chunk: int = 200,
        cas_attempts: int = 100,
        max_drift_ms: int = DEFAULT_MAX_DRIFT_MS,
        observer: Observer | None = None,
    ) -> None:
        self.region = validate_region(region)
        if not prefix or "{" in prefix or "}" in prefix:
            raise ConfigurationError(f"prefix must be non-empty and without braces, got {prefix!r}")
        for option, value, low in [
            ("log_maxlen", log_maxlen, 1),
            ("shards", shards, 1),
            ("chunk", chunk, 1),
            ("cas_attempts", cas_attempts, 1),
            ("max_drift_ms", max_drift_ms, 0),
        ]:
            if type(value) is not int or value < low:
                raise ConfigurationError(f"{option} must be an int >= {low}, got {value!r}")
        if chunk > 2000:
            raise ConfigurationError("chunk must be at most 2000 (script arguments per call)")
        self.client = client
        self.prefix = prefix
        self.change_log = change_log
        self.log_maxlen = log_maxlen
        self.layout = Layout(prefix, shards)
        self.chunk = chunk
        self.cas_attempts = cas_attempts
        self.max_drift_ms = max_drift_ms
        self.observer = observer
        register = client.register_script  # type: ignore[attr-defined]
        self._scripts = {name: register(load_script(name)) for name in _SCRIPTS}

    def keys(self, name: str) -> ObjectKeys:
        if not name or "{" in name or "}" in name:
            raise ConfigurationError(f"CRDT names are non-empty and brace-free, got {name!r}")
        return self.layout.keys(name)

    def key(self, name: str) -> str:
        """The object's data HASH (``<prefix>{<shard>}d:<name>``)."""
        return self.keys(name).data

    def _script_args(self, call: Call) -> tuple[Any, list[str], list[Any]]:
        keys = self.keys(call.name)
        script = self._scripts[call.script]
        if call.script in _WRITES:
            names = [keys.data, keys.context, keys.index] + ([keys.log] if self.change_log else [])
            argv = [call.tag, call.name, self.log_maxlen, call.epoch, call.deadline, call.options]
            argv += call.args
            return script, names, argv
        if call.script == "read":
            return script, [keys.data, keys.context, keys.index], [call.name]
        if call.script == "scan":
            scanned = keys.context if call.scan_context else keys.data
            return script, [keys.data, scanned], list(call.args)
        return script, [keys.data], list(call.args)

    def _noted(self, call: Call, raw: Any) -> None:
        if call.script not in _WRITES or self.observer is None:
            return
        note = parse_reply(raw).note
        if note in ("outside-delete", "expired"):
            name = "crdt.outside_delete" if note == "outside-delete" else "crdt.expired"
            attrs = {"region": self.region, "object": call.name}
            emit(self.observer, Event(name, "detected", attrs=attrs))

    def _merged(self, watch: Stopwatch, name: str, state: Crdt, changed: bool) -> None:
        attrs = {"region": self.region, "object": name, "type": type(state).__name__}
        outcome = "changed" if changed else "unchanged"
        emit(self.observer, watch.event("crdt.merge", outcome, attrs=attrs))

    # Builders shared by the async and blocking stores: each returns one script call.

    def _increment_call(self, name: str, amount: int, kind: type[Crdt]) -> Call:
        if type(amount) is not int:
            raise ValueError(f"amount must be an int, got {amount!r}")
        if kind is GCounter:
            if amount < 0:
                raise ValueError("a GCounter only grows; use a PNCounter to decrement")
            prefix = "p:"
        elif kind is PNCounter:
            prefix = "p:" if amount >= 0 else "n:"
        else:
            raise TypeError(f"increment works on GCounter and PNCounter, not {kind.__name__}")
        args = (self.region, new_token(), prefix, str(abs(amount)))
        return Call("counter_incr", name, str(kind.TYPE_TAG), args=args)

    def _add_call(self, name: str, element: Any, kind: type[Crdt]) -> Call:
        payload = pack(check_element(element))
        tag = str(kind.TYPE_TAG)
        if kind is ORSet:
            return Call("dots_add", name, tag, args=(self.region, new_token(), payload, "add"))
        if kind in (GSet, TwoPSet):
            return Call("merge_fields", name, tag, args=(b"a:" + payload, "1"))
        raise TypeError(f"add works on ORSet, GSet and TwoPSet, not {kind.__name__}")

    def _remove_call(self, name: str, element: Any, kind: type[Crdt]) -> Call:
        payload = pack(check_element(element))
        tag = str(kind.TYPE_TAG)
        if kind is ORSet:
            return Call("dots_remove", name, tag, args=(payload,))
        if kind is TwoPSet:
            return Call("merge_fields", name, tag, args=(b"r:" + payload, "1"))
        raise TypeError(f"remove works on ORSet and TwoPSet, not {kind.__name__}")

    def _assign_call(self, name: str, value: Any, kind: type[Crdt]) -> Call:
        payload = pack_value(value)
        tag = str(kind.TYPE_TAG)
        if kind is LWWRegister:
            args = (self.region, new_token(), payload, str(self.max_drift_ms))
            return Call("lww_assign", name, tag, args=args)
        if kind is MVRegister:
            return Call("dots_add", name, tag, args=(self.region, new_token(), payload, "assign"))
        raise TypeError(f"assign works on LWWRegister and MVRegister, not {kind.__name__}")

    def _delete_call(self, name: str, kind: type[Crdt] | None) -> Call:
        return Call("delete", name, "" if kind is None else str(kind.TYPE_TAG))

    def _expire_call(self, name: str, seconds: float, kind: type[Crdt] | None) -> Call:
        ttl = int(seconds * 1000)
        if ttl < 1:
            raise ValueError(f"expire needs a positive time to live, got {seconds!r} s")
        return Call("expire", name, "" if kind is None else str(kind.TYPE_TAG), args=(str(ttl),))

    def _parse(self, name: str, kind: type[T], raw: Any) -> T:
        try:
            state = parse_read(kind, raw)
        except TypeError as exc:
            raise TypeMismatchError(
                f"Redis object {name!r} holds type tag {exc.args[0]}, not a {kind.__name__}"
            ) from None
        assert isinstance(state, kind)
        return state

    def _state_plan(self, name: str, state: Crdt) -> Plan:
        self.keys(name)
        return state_plan(name, state, chunk=self.chunk, max_drift_ms=self.max_drift_ms)

    def _update_plan(
        self, name: str, kind: type[T], mutate: Callable[[T], Any], out: list[T]
    ) -> Plan:
        if kind is not ORMap:
            raise TypeError(
                f"{kind.__name__} merges inside Redis; use merge()/increment()/add()/assign()"
            )

        def transform(current: Crdt) -> None:
            assert isinstance(current, kind)
            mutate(current)
            out[:] = [current]

        return cas_plan(name, kind, transform, self.cas_attempts)


class CrdtStore(_Base[aioredis.Redis | aioredis.RedisCluster]):
    """CRDT storage on ``redis.asyncio``; ``region`` is this deployment's replica id."""

    async def execute(self, call: Call) -> Any:
        """Run one script call (see :class:`crdt.redis_layout.Call`); the raw reply."""
        script, keys, args = self._script_args(call)
        try:
            raw = await script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            _raise_for(exc, call.name)
        self._noted(call, raw)
        return raw

    async def drive(self, plan: Plan) -> bool:
        """Run a plan whose every step targets this store."""
        reply = None
        try:
            while True:
                _, call = plan.send(reply)
                reply = await self.execute(call)
        except StopIteration as stop:
            return bool(stop.value)

    async def load(self, name: str, kind: type[T]) -> T:
        return self._parse(name, kind, await self.execute(Call("read", name)))

    async def merge(self, name: str, state: Crdt) -> bool:
        """Join ``state`` (a full state or any delta) into Redis; whether it changed.

        One round trip for a delta or a small state; a large state goes in chunks of
        ``chunk`` dots or fields, so no single script blocks Redis for long.
        """
        watch = Stopwatch()
        changed = await self.drive(self._state_plan(name, state))
        self._merged(watch, name, state, changed)
        return changed

    async def increment(self, name: str, amount: int = 1, kind: type[Crdt] = PNCounter) -> int:
        """Add ``amount`` to this region's share; returns the current incarnation's count."""
        reply = parse_reply(await self.execute(self._increment_call(name, amount, kind)))
        return int(reply.result)

    async def add(self, name: str, element: Any, kind: type[Crdt] = ORSet) -> None:
        await self.execute(self._add_call(name, element, kind))

    async def remove(self, name: str, element: Any, kind: type[Crdt] = ORSet) -> bool:
        """Remove what this region holds of ``element``; False when it held nothing."""
        return bool(parse_reply(await self.execute(self._remove_call(name, element, kind))).result)

    async def assign(self, name: str, value: Any, kind: type[Crdt] = LWWRegister) -> None:
        await self.execute(self._assign_call(name, value, kind))

    async def delete(self, name: str, kind: type[Crdt] | None = None) -> int:
        """Delete ``name`` in every region (once synced); returns the new epoch.

        Writes that other regions made without having seen the delete are dropped when it
        reaches them; writes made after it are kept. Pass ``kind`` to refuse deleting an
        object of another type.
        """
        return int(parse_reply(await self.execute(self._delete_call(name, kind))).result)

    async def expire(self, name: str, seconds: float, kind: type[Crdt] | None = None) -> int:
        """Delete ``name`` everywhere once ``seconds`` have passed (server clock).

        The deadline travels with the object; it only moves later (the latest one set in
        any region wins). Returns the deadline in effect, in ms since the Unix epoch.
        """
        return int(parse_reply(await self.execute(self._expire_call(name, seconds, kind))).result)

    async def update(self, name: str, kind: type[T], mutate: Callable[[T], Any]) -> T:
        """Read, ``mutate`` in place, write back if nobody wrote meanwhile; else retry.

        For types stored by check-and-set (ORMap). Two round trips when uncontended.
        """
        out: list[T] = []
        await self.drive(self._update_plan(name, kind, mutate, out))
        return out[0] if out else await self.load(name, kind)


class SyncCrdtStore(_Base[redis.Redis | redis.RedisCluster]):
    """The same storage on the blocking ``redis`` client, for sync code and worker processes."""

    def execute(self, call: Call) -> Any:
        script, keys, args = self._script_args(call)
        try:
            raw = script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            _raise_for(exc, call.name)
        self._noted(call, raw)
        return raw

    def drive(self, plan: Plan) -> bool:
        reply = None
        try:
            while True:
                _, call = plan.send(reply)
                reply = self.execute(call)
        except StopIteration as stop:
            return bool(stop.value)

    def load(self, name: str, kind: type[T]) -> T:
        return self._parse(name, kind, self.execute(Call("read", name)))

    def merge(self, name: str, state: Crdt) -> bool:
        watch = Stopwatch()
        changed = self.drive(self._state_plan(name, state))
        self._merged(watch, name, state, changed)
        return changed

    def increment(self, name: str, amount: int = 1, kind: type[Crdt] = PNCounter) -> int:
        return int(parse_reply(self.execute(self._increment_call(name, amount, kind))).result)

    def add(self, name: str, element: Any, kind: type[Crdt] = ORSet) -> None:
        self.execute(self._add_call(name, element, kind))

    def remove(self, name: str, element: Any, kind: type[Crdt] = ORSet) -> bool:
        return bool(parse_reply(self.execute(self._remove_call(name, element, kind))).result)

    def assign(self, name: str, value: Any, kind: type[Crdt] = LWWRegister) -> None:
        self.execute(self._assign_call(name, value, kind))

    def delete(self, name: str, kind: type[Crdt] | None = None) -> int:
        return int(parse_reply(self.execute(self._delete_call(name, kind))).result)

    def expire(self, name: str, seconds: float, kind: type[Crdt] | None = None) -> int:
        return int(parse_reply(self.execute(self._expire_call(name, seconds, kind))).result)

    def update(self, name: str, kind: type[T], mutate: Callable[[T], Any]) -> T:
        out: list[T] = []
        self.drive(self._update_plan(name, kind, mutate, out))
        return out[0] if out else self.load(name, kind)
