"""ASGI type aliases (the subset idemkit needs)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["ASGIApp", "Message", "Observer", "Receive", "Scope", "Send"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
# Called with the name of each outcome ("executed", "replayed", "conflict", ...): the hook that
# metrics and tracing integrations attach to. Must not block.
Observer = Callable[[str], None]
