"""An idempotent Redis Streams consumer: each message's effect is applied once.

:class:`StreamConsumer` reads a stream through a consumer group (``XREADGROUP``), applies
each message through an :class:`~idemkit.patterns.effects.Effect` keyed by
``"<group>:<event_id>"`` (the outbox event id, so a relay's re-publish is a duplicate too),
then acknowledges it (``XACK``). A crash after the effect and before the ack redelivers the
message and the effect reports a duplicate: it is acknowledged without running again.

* Messages pending on a consumer that died (or was paused) for ``claim_idle_ms`` are
  taken over with ``XAUTOCLAIM``; so are this consumer's own failed messages, which makes
  ``claim_idle_ms`` the retry delay.
* A message delivered ``max_deliveries`` times without success (including deliveries that
  killed the consumer) goes to the dead-letter stream ``<stream>:dead`` with its error and
  is acknowledged: it stops blocking the group and is never silently dropped.

Events: ``consumer.apply`` (outcome ``applied``, ``duplicate``, ``busy`` or ``error``; the
ack follows), ``consumer.claim``, ``consumer.dead_letter``.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

import redis
from redis.exceptions import RedisError, ResponseError

from idemkit.errors import ConfigurationError, StoreUnavailableError
from idemkit.observe import Event, Observer, Stopwatch, emit
from idemkit.patterns.effects import Effect

__all__ = ["Message", "StreamConsumer"]

log = logging.getLogger("idemkit.patterns.consumer")

CtxT = TypeVar("CtxT")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True, slots=True)
class Message:
    """One stream entry. ``event_id`` is the outbox event id (the stream id otherwise)."""

    stream: str
    id: str
    fields: dict[str, str]
    deliveries: int = 1

    @property
    def event_id(self) -> str:
        return self.fields.get("event_id") or self.id

    @property
    def key(self) -> str | None:
        return self.fields.get("key")

    @property
    def payload(self) -> Any:
        """The outbox payload, JSON-decoded (None if the entry has none)."""
        raw = self.fields.get("payload")
        return None if raw is None else json.loads(raw)


Handler = Callable[[Message, CtxT], Any]


class StreamConsumer(Generic[CtxT]):
    """One consumer of ``group`` on ``stream``; see the module docstring.

    ``handler(message, ctx)`` does the work, where ``ctx`` is what ``effect`` hands out (a
    pipeline, a SQL connection, an :class:`~idemkit.patterns.effects.EffectContext`).
    """

    def __init__(
        self,
        client: redis.Redis | redis.RedisCluster,
        stream: str,
        group: str,
        handler: Handler[CtxT],
        effect: Effect[CtxT],
        *,
        consumer: str | None = None,
        batch_size: int = 10,
        block_ms: int = 1_000,
        claim_idle_ms: int = 30_000,
        max_deliveries: int = 5,
        dead_letter: str | None = None,
        start_id: str = "0",
        observer: Observer | None = None,
    ) -> None:
        if max_deliveries < 1 or batch_size < 1 or claim_idle_ms < 1 or block_ms < 1:
            raise ConfigurationError(
                "max_deliveries, batch_size, claim_idle_ms and block_ms must be >= 1"
            )
        self.client = client
        self.stream = stream
        self.group = group
        self.handler = handler
        self.effect = effect
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.max_deliveries = max_deliveries
        self.dead_letter = dead_letter or f"{stream}:dead"
        self.start_id = start_id
        self.observer = observer
        self._group_ready = False
        self._next_claim = 0.0

    def dedup_id(self, message: Message) -> str:
        return f"{self.group}:{message.event_id}"

    def ensure_group(self) -> None:
        """Create the consumer group (and the stream) if missing."""
        try:
            self.client.xgroup_create(self.stream, self.group, id=self.start_id, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    # -- reading ------------------------------------------------------------------------------

    def _messages(self, entries: Any, deliveries: dict[str, int] | None = None) -> list[Message]:
        out = []
        for entry_id, fields in entries or []:
            if fields is None:
                continue  # trimmed away while pending
            mid = _text(entry_id)
            out.append(
                Message(
                    self.stream,
                    mid,
                    {_text(k): _text(v) for k, v in fields.items()},
                    (deliveries or {}).get(mid, 1),
                )
            )
        return out

    def claim_stale(self) -> list[Message]:
        """Take over messages idle for ``claim_idle_ms`` (a dead consumer's, or our own
        failed ones), with their delivery counts."""
        claimed: list[Message] = []
        cursor = "0-0"
        for _ in range(10):  # bounded sweep per call
            reply = self.client.xautoclaim(
                self.stream,
                self.group,
                self.consumer,
                min_idle_time=self.claim_idle_ms,
                start_id=cursor,
                count=self.batch_size,
            )
            cursor = _text(reply[0])
            entries = reply[1]
            if entries:
                ids = [_text(e[0]) for e in entries]
                pending = self.client.xpending_range(
                    self.stream,
                    self.group,
                    min=ids[0],
                    max=ids[-1],
                    count=len(ids) * 4 + 16,
                    consumername=self.consumer,
                )
                counts = {
                    _text(p["message_id"]): int(p["times_delivered"])
                    for p in cast(list[dict[str, Any]], pending)
                }
                claimed.extend(self._messages(entries, counts))
            if cursor == "0-0" or len(claimed) >= self.batch_size:
                break
        if claimed:
            emit(self.observer, Event("consumer.claim", "ok", attrs={"count": len(claimed)}))
        return claimed

    def read_new(self, block_ms: int | None = None) -> list[Message]:
        reply: Any = self.client.xreadgroup(
            self.group,
            self.consumer,
            {self.stream: ">"},
            count=self.batch_size,
            block=self.block_ms if block_ms is None else block_ms,
        )
        if not reply:
            return []
        return self._messages(reply[0][1])

    # -- handling -----------------------------------------------------------------------------

    def _dead_letter(self, message: Message, error: str) -> None:
        fields = {
            **message.fields,
            "original_id": message.id,
            "deliveries": str(message.deliveries),
            "error": error[:1000],
        }
        with self.client.pipeline(transaction=True) as pipe:
            pipe.xadd(self.dead_letter, fields)  # type: ignore[arg-type]
            pipe.xack(self.stream, self.group, message.id)
            pipe.execute()
        log.warning(
            "idemkit: message %s of %s dead-lettered after %d deliveries",
            message.id,
            self.stream,
            message.deliveries,
        )
        emit(
            self.observer,
            Event("consumer.dead_letter", "ok", attrs={"deliveries": message.deliveries}),
        )

    def handle(self, message: Message) -> str:
        """Apply one message and acknowledge it; the outcome."""
        if message.deliveries > self.max_deliveries:
            # It was delivered that often without an ack: it keeps killing its consumers.
            self._dead_letter(message, "delivered too often without an ack (consumer died?)")
            return "dead"
        watch = Stopwatch()
        try:
            applied = self.effect.apply(
                self.dedup_id(message), lambda ctx: self.handler(message, ctx)
            )
        except (StoreUnavailableError, RedisError, OSError):
            raise
        except Exception as exc:
            emit(self.observer, watch.event("consumer.apply", "error"))
            log.warning(
                "idemkit: handler failed on %s (delivery %d): %r",
                message.id,
                message.deliveries,
                exc,
            )
            if message.deliveries >= self.max_deliveries:
                self._dead_letter(message, repr(exc))
                return "dead"
            return "error"  # stays pending: retried after claim_idle_ms
        # Fault tests stop the process on this event: the effect is done, the ack is not.
        emit(self.observer, watch.event("consumer.apply", applied.outcome))
        if applied.outcome == "busy":
            return "busy"
        self.client.xack(self.stream, self.group, message.id)
        return applied.outcome

    def poll_once(self, block_ms: int | None = None) -> int:
        """Claim stale messages (at most every ``claim_idle_ms / 2``), read new ones, handle
        them all; the number handled."""
        if not self._group_ready:
            self.ensure_group()
        messages: list[Message] = []
        now = time.monotonic()
        if now >= self._next_claim:
            self._next_claim = now + self.claim_idle_ms / 2000
            messages = self.claim_stale()
        if not messages:
            messages = self.read_new(block_ms)
        for message in messages:
            self.handle(message)
        return len(messages)

    def run(self, stop: threading.Event | None = None, *, max_seconds: float | None = None) -> None:
        """Consume until ``stop`` is set; Redis errors back off and retry."""
        stop = stop or threading.Event()
        end = None if max_seconds is None else time.monotonic() + max_seconds
        backoff = 0.05
        while not stop.is_set() and (end is None or time.monotonic() < end):
            try:
                self.poll_once(min(self.block_ms, self.claim_idle_ms))
                backoff = 0.05
            except (StoreUnavailableError, RedisError, OSError) as exc:
                log.warning("idemkit: consumer error, backing off %.2fs: %s", backoff, exc)
                emit(self.observer, Event("consumer.error", type(exc).__name__))
                stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
