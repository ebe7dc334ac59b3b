"""Versioned, deterministic msgpack envelope shared by every CRDT type.

Bytes are the msgpack array ``[MAGIC, type_tag, schema_version, payload]`` followed by its
CRC-32 (4 bytes, big-endian). Without the checksum a flipped byte inside a count would decode
to a plausible wrong number; with it, corruption is an error. Maps inside payloads are written
as sorted arrays so equal states give equal bytes (digests and "did it change?" checks rely on
that). Decoding anything else raises :class:`~crdt.errors.CrdtCodecError`.
"""

from __future__ import annotations

import zlib
from typing import Any

import msgpack

from crdt.errors import CrdtCodecError, UnsupportedValueError

__all__ = [
    "MAGIC",
    "canonical_key",
    "check_element",
    "normalize_value",
    "pack",
    "pack_envelope",
    "unpack",
    "unpack_envelope",
]

MAGIC = 0xCD
_INT64 = (-(2**63), 2**63 - 1)


def pack(obj: Any) -> bytes:
    try:
        data: bytes = msgpack.packb(obj, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise UnsupportedValueError(
            f"value cannot be encoded with msgpack ({exc}); use None, bool, int (64-bit), "
            "float, str, bytes, lists and dicts of those"
        ) from None
    return data


def unpack(data: bytes) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True)
    except Exception as exc:  # msgpack raises a zoo of exception types on garbage
        raise CrdtCodecError(f"not valid msgpack: {exc}") from None


def pack_envelope(tag: int, version: int, payload: Any) -> bytes:
    body = pack([MAGIC, tag, version, payload])
    return body + zlib.crc32(body).to_bytes(4, "big")


def unpack_envelope(data: bytes) -> tuple[int, int, Any]:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CrdtCodecError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    body, checksum = data[:-4], data[-4:]
    if len(data) < 5 or zlib.crc32(body).to_bytes(4, "big") != checksum:
        raise CrdtCodecError(
            "crdt bytes fail their checksum: they are truncated, corrupt or not crdt bytes"
        )
    obj = unpack(body)
    if not isinstance(obj, list) or len(obj) != 4 or obj[0] != MAGIC:
        raise CrdtCodecError("bytes are not a crdt envelope (wrong magic or shape)")
    _, tag, version, payload = obj
    if not isinstance(tag, int) or not isinstance(version, int):
        raise CrdtCodecError("crdt envelope has a non-integer type tag or version")
    return tag, version, payload


def check_element(element: Any) -> Any:
    """Set elements and map keys: str, bytes or 64-bit int (bool excluded: True == 1)."""
    if isinstance(element, str | bytes) or (
        type(element) is int and _INT64[0] <= element <= _INT64[1]
    ):
        return element
    raise UnsupportedValueError(
        f"set elements and map keys must be str, bytes or a 64-bit int, got {element!r}"
    )


def canonical_key(element: Any) -> bytes:
    """Sort key giving one order for mixed element types (their msgpack bytes)."""
    return pack(element)


def normalize_value(value: Any) -> Any:
    """A register value as it will read back after a round trip (tuples become lists)."""
    return unpack(pack(value))
