"""Parsing of the ``Idempotency-Key`` request header.

The IETF draft makes the field an RFC 9651 Item whose value is a String (``"abc"``); Stripe and
most clients send a bare token (``abc``). Both are accepted and normalise to the same key.
A key is 1..255 visible ASCII characters (0x21-0x7E) after unquoting.
"""

from __future__ import annotations

from collections.abc import Sequence

from idemkit.errors import InvalidKeyError

__all__ = ["MAX_KEY_LENGTH", "key_from_headers", "parse_idempotency_key"]

MAX_KEY_LENGTH = 255
_VISIBLE = frozenset(range(0x21, 0x7F))


def parse_idempotency_key(raw: bytes | str) -> str:
    """Return the key carried by a header value, or raise :class:`InvalidKeyError`."""
    data = raw.encode("latin-1") if isinstance(raw, str) else raw
    data = data.strip(b" \t")
    if not data:
        raise InvalidKeyError("the Idempotency-Key header is empty; send 1 to 255 characters")
    key = _unquote(data) if data[:1] == b'"' else data
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidKeyError(
            f"the Idempotency-Key is {len(key)} characters long; at most {MAX_KEY_LENGTH} allowed"
        )
    if not key:
        raise InvalidKeyError("the Idempotency-Key is an empty string; send 1 to 255 characters")
    bad = next((b for b in key if b not in _VISIBLE), None)
    if bad is not None:
        raise InvalidKeyError(
            f"the Idempotency-Key contains the byte 0x{bad:02x}; only visible ASCII characters "
            "(0x21-0x7E) are allowed, e.g. a UUID"
        )
    return key.decode("ascii")


def key_from_headers(values: Sequence[bytes]) -> str | None:
    """The key of a request given all its ``Idempotency-Key`` values: None when there is none,
    :class:`InvalidKeyError` when there are several or the one is malformed."""
    if not values:
        return None
    if len(values) > 1:
        raise InvalidKeyError(
            "the request carries more than one Idempotency-Key header; send exactly one"
        )
    return parse_idempotency_key(values[0])


def _unquote(data: bytes) -> bytes:
    """Parse an RFC 9651 sf-string that must make up the whole value (no parameters)."""
    out = bytearray()
    i, end = 1, len(data)
    while i < end:
        c = data[i]
        if c == 0x5C:  # backslash: only \" and \\ are valid escapes
            if i + 1 >= end or data[i + 1] not in (0x22, 0x5C):
                raise InvalidKeyError(
                    "the Idempotency-Key string has an invalid escape; "
                    'only \\" and \\\\ are allowed'
                )
            out.append(data[i + 1])
            i += 2
            continue
        if c == 0x22:
            if i + 1 != end:
                raise InvalidKeyError(
                    "the Idempotency-Key has text after its closing quote; send a single quoted "
                    'string such as "8e03978e-40d5-43e8-bc93-6894a57f9324" without parameters'
                )
            return bytes(out)
        out.append(c)
        i += 1
    raise InvalidKeyError("the Idempotency-Key string has no closing quote")
