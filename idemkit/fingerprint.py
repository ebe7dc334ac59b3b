"""Request fingerprints and record names.

A fingerprint identifies *what* a request asks for (method, path, query, body and, only where
configured, selected headers), so a key reused for a different request is detected. Record
names combine the caller's scope with the key, so two callers never share a record.
BLAKE2b is in the standard library, fast, and collision resistant, which matters because a
collision would replay a stored response to a different request.
"""

from __future__ import annotations

from collections.abc import Iterable
from hashlib import blake2b

__all__ = ["record_name", "request_fingerprint"]


def request_fingerprint(
    method: str,
    path: str,
    query: bytes,
    body: bytes,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> bytes:
    h = blake2b(digest_size=16)
    h.update(method.encode("ascii", "replace"))
    h.update(b"\0")
    h.update(path.encode("utf-8", "surrogateescape"))
    h.update(b"\0")
    h.update(query)
    h.update(b"\0")
    for name, value in headers:
        h.update(name)
        h.update(b":")
        h.update(value)
        h.update(b"\0")
    h.update(body)
    return h.digest()


def record_name(caller: str, key: str | bytes) -> str:
    """Hex digest naming the record of ``key`` for ``caller``; never the raw key (logs, keys).

    A text key and its UTF-8 bytes name the same record.
    """
    h = blake2b(digest_size=16)
    h.update(caller.encode("utf-8", "surrogateescape"))
    h.update(b"\0")
    h.update(key if isinstance(key, bytes) else key.encode("utf-8", "surrogateescape"))
    return h.hexdigest()
