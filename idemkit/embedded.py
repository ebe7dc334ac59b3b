"""The embedded default store: fakeredis with Lua, for demos and unit tests. No server.

Not for production: state lives in one process and disappears with it.
"""

from __future__ import annotations

from typing import Any

from idemkit.errors import ConfigurationError

__all__ = ["embedded_redis", "embedded_sync_redis"]


def embedded_redis() -> Any:
    """A ``redis.asyncio``-compatible client backed by an in-process fakeredis server."""
    try:
        import fakeredis
    except ImportError:  # pragma: no cover - depends on the installed extras
        raise ConfigurationError(
            "the embedded store needs fakeredis: pip install 'idemkit[embedded]'"
        ) from None
    return fakeredis.FakeAsyncRedis()


def embedded_sync_redis() -> Any:
    """A blocking ``redis.Redis``-compatible client backed by fakeredis."""
    try:
        import fakeredis
    except ImportError:  # pragma: no cover
        raise ConfigurationError(
            "the embedded store needs fakeredis: pip install 'idemkit[embedded]'"
        ) from None
    return fakeredis.FakeRedis()
