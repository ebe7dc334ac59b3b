"""Versioned msgpack encoding of stored responses and results.

A record is a msgpack array whose first element is the format version. Readers accept the
versions they know and raise :class:`~idemkit.errors.CodecError` for anything else, so a
format change never turns into a silently wrong replay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from idemkit.errors import CodecError

__all__ = [
    "FORMAT_VERSION",
    "StoredResponse",
    "decode_response",
    "decode_value",
    "encode_response",
    "encode_value",
    "is_value_record",
]

FORMAT_VERSION = 1
_KIND_RESPONSE = 1
_KIND_VALUE = 2


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """The part of an HTTP response that is replayed.

    ``body_omitted`` marks a response that was too large (or streamed past the cap) to store:
    the status and headers are known, the body is not.
    """

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    body_omitted: bool = False


def encode_response(response: StoredResponse) -> bytes:
    headers = [[name, value] for name, value in response.headers]
    packed: bytes = msgpack.packb(
        [
            FORMAT_VERSION,
            _KIND_RESPONSE,
            response.status,
            headers,
            response.body,
            response.body_omitted,
        ],
        use_bin_type=True,
    )
    return packed


def decode_response(data: bytes) -> StoredResponse:
    fields = _unpack(data, _KIND_RESPONSE)
    try:
        status, headers, body, omitted = fields
        return StoredResponse(
            status=int(status),
            headers=[(bytes(name), bytes(value)) for name, value in headers],
            body=bytes(body),
            body_omitted=bool(omitted),
        )
    except (TypeError, ValueError) as exc:
        raise CodecError(f"stored response has an invalid shape: {exc}") from None


def encode_value(value: Any) -> bytes:
    """Encode a function result; raises CodecError for values msgpack cannot represent."""
    try:
        packed: bytes = msgpack.packb([FORMAT_VERSION, _KIND_VALUE, value], use_bin_type=True)
        return packed
    except (TypeError, ValueError, OverflowError) as exc:
        raise CodecError(
            f"result of type {type(value).__name__} cannot be stored with msgpack ({exc}); "
            "return plain data (dict, list, str, bytes, int, float, bool, None)"
        ) from None


def decode_value(data: bytes) -> Any:
    (value,) = _unpack(data, _KIND_VALUE)
    return value


def is_value_record(data: bytes) -> bool:
    """True for records written by :func:`encode_value` (checks the header bytes only)."""
    # fixarray marker, then positive fixint version and kind
    return len(data) >= 3 and data[1] == FORMAT_VERSION and data[2] == _KIND_VALUE


def _unpack(data: bytes, kind: int) -> list[Any]:
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated classes for garbage
        raise CodecError(f"stored record is not valid msgpack: {exc}") from None
    if not isinstance(obj, list) or len(obj) < 2:
        raise CodecError("stored record is not an idemkit record")
    version, found_kind, *rest = obj
    if version != FORMAT_VERSION:
        raise CodecError(
            f"stored record has format version {version!r}, this idemkit reads {FORMAT_VERSION}; "
            "upgrade idemkit or let the old records expire"
        )
    if found_kind != kind:
        raise CodecError(f"stored record is of kind {found_kind!r}, expected {kind}")
    return rest
