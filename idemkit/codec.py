"""Versioned msgpack encoding of stored responses and function results.

A record is a msgpack array whose first element is the format version. Readers accept the
versions they know and raise :class:`~idemkit.errors.CodecError` for anything else, so a
format change never turns into a silently wrong replay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from idemkit.errors import CodecError, ResultNotStoredError
from idemkit.values import Serializer

__all__ = [
    "FORMAT_VERSION",
    "StoredResponse",
    "StoredResult",
    "decode_response",
    "decode_result",
    "encode_response",
    "encode_result",
    "pack_result",
    "unpack_result",
]

FORMAT_VERSION = 1
_KIND_RESPONSE = 1
# 2 was a result packed inline (0.1); results are now the serializer's bytes (kind 3)
_KIND_RESULT = 3
_KIND_UNSTORED = 4


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


@dataclass(frozen=True, slots=True)
class StoredResult:
    """The stored outcome of an idempotent function call: the serializer's bytes of its
    result, or the name of the result's type when it could not be serialized."""

    payload: bytes | None
    unstored_type: str | None = None


def encode_result(result: StoredResult) -> bytes:
    if result.payload is not None:
        fields: list[Any] = [FORMAT_VERSION, _KIND_RESULT, result.payload]
    else:
        fields = [FORMAT_VERSION, _KIND_UNSTORED, result.unstored_type or "?"]
    packed: bytes = msgpack.packb(fields, use_bin_type=True)
    return packed


def decode_result(data: bytes) -> StoredResult:
    kind = data[2] if len(data) >= 3 else None
    if kind == _KIND_UNSTORED:
        (type_name,) = _unpack(data, _KIND_UNSTORED)
        return StoredResult(None, str(type_name))
    (payload,) = _unpack(data, _KIND_RESULT)
    if not isinstance(payload, bytes):
        raise CodecError("stored result has an invalid shape")
    return StoredResult(payload)


def pack_result(value: Any, serializer: Serializer) -> tuple[bytes, bool]:
    """The record of a returned value and whether its value was kept: the serializer's bytes
    (checked to read back), else a record naming the value's type. Never raises."""
    try:
        payload = serializer.dumps(value)
        serializer.loads(payload)
    except Exception:
        return encode_result(StoredResult(None, type(value).__name__)), False
    return encode_result(StoredResult(payload)), True


def unpack_result(data: bytes, serializer: Serializer, what: str) -> Any:
    """The value back from :func:`pack_result`; :class:`ResultNotStoredError` if it was not
    kept (``what`` names the operation in the message)."""
    stored = decode_result(data)
    if stored.payload is None:
        type_name = stored.unstored_type or "?"
        raise ResultNotStoredError(
            f"{what} already ran for this key, but its result (a {type_name}) could not be "
            "stored, so it cannot be returned again; it is not run twice. Return data the "
            "serializer can store, or pass serializer=...",
            type_name=type_name,
        )
    return serializer.loads(stored.payload)


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
