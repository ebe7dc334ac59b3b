"""The shop's counters are CRDT counters (:mod:`crdt`), written in the same ``MULTI`` as the
change they count.

A counter that moves with a change must commit with it: the read model counts a sale in the
transaction that records the sale (and its dedup marker), the ``/counters`` route counts an
increment in the transaction that writes its ledger entry. So the CRDT increment is queued on
the caller's ``MULTI`` pipeline: crdt's own ``counter_incr`` script (``crdt/lua/``), called
with the arguments its header documents, on the object's keys (:class:`crdt.redis_layout.Layout`).
Values are read back through :class:`crdt.CrdtStore` like any CRDT, and the counters are
ready for :class:`crdt.RegionSyncer` between regions (region ``"shop"``).

The embedded store cannot run crdt's scripts (fakeredis has no ``INFO``, which they use to
notice a restarted server), so there the counters fall back to a plain hash: same numbers,
no CRDT. :attr:`Counters.kind` says which is in use.
"""

from __future__ import annotations

import inspect
from typing import Any, Final

from crdt import CrdtStore, GCounter, PNCounter, SyncCrdtStore
from crdt.base import Crdt
from crdt.incarnation import new_token
from crdt.redis_layout import DEFAULT_SHARDS, Layout
from crdt.redis_store import load_script

__all__ = ["PLAIN_COUNTERS", "PREFIX", "REGION", "Counters", "is_embedded"]

REGION: Final = "shop"
PREFIX: Final = "shop-crdt:"
PLAIN_COUNTERS: Final = "shop:plain-counters"  # the embedded fallback: hash name -> value
_LOG_MAXLEN: Final = 10_000  # crdt's default length of a shard's change stream


def is_embedded(client: Any) -> bool:
    """Whether ``client`` talks to the embedded store (fakeredis) rather than Redis."""
    return type(client).__module__.startswith("fakeredis")


class Counters:
    """Counters on ``client`` (sync or async; pipelines must be of the same kind)."""

    def __init__(self, client: Any, *, region: str = REGION, prefix: str = PREFIX) -> None:
        self.client = client
        self.region = region
        self.crdt = not is_embedded(client)
        self.kind = "crdt" if self.crdt else "plain (embedded store)"
        self.layout = Layout(prefix, DEFAULT_SHARDS)
        self._async = inspect.iscoroutinefunction(client.execute_command)
        # The stores check region and prefix, and read counters back.
        self.store: Any = (
            CrdtStore(client, region=region, prefix=prefix)
            if self._async
            else SyncCrdtStore(client, region=region, prefix=prefix)
        )
        self._incr = client.register_script(load_script("counter_incr"))

    def _script_call(self, name: str, amount: int, kind: type[Crdt]) -> dict[str, Any]:
        if kind is GCounter and amount < 0:
            raise ValueError("a GCounter only grows")
        keys = self.layout.keys(name)
        # crdt/lua/_prelude.lua ARGV[1..6]: type tag, name, log MAXLEN, epoch, deadline,
        # options ('' for a local write); counter_incr.lua ARGV[7..10]: region, a fresh
        # incarnation token, 'p:' or 'n:', the amount as a canonical decimal.
        args = [str(kind.TYPE_TAG), name, _LOG_MAXLEN, "", "", ""]
        args += [self.region, new_token(), "p:" if amount >= 0 else "n:", str(abs(amount))]
        return {"keys": [keys.data, keys.context, keys.index, keys.log], "args": args}

    def queue(self, pipe: Any, name: str, amount: int, kind: type[Crdt] = PNCounter) -> None:
        """Queue ``name += amount`` on a blocking ``MULTI`` pipeline."""
        if self.crdt:
            self._incr(client=pipe, **self._script_call(name, amount, kind))
        else:
            pipe.hincrby(PLAIN_COUNTERS, name, amount)

    async def aqueue(self, pipe: Any, name: str, amount: int, kind: type[Crdt] = PNCounter) -> None:
        """Queue ``name += amount`` on a ``redis.asyncio`` ``MULTI`` pipeline."""
        if self.crdt:
            await self._incr(client=pipe, **self._script_call(name, amount, kind))
        else:
            pipe.hincrby(PLAIN_COUNTERS, name, amount)

    async def values(self, names: list[str], kind: type[Crdt] = PNCounter) -> dict[str, int]:
        """Current values (async client)."""
        if not self.crdt:
            raw = await self.client.hmget(PLAIN_COUNTERS, names) if names else []
            return {n: int(v or 0) for n, v in zip(names, raw, strict=True)}
        return {n: (await self.store.load(n, kind)).value for n in names}
