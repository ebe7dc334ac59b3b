"""Versioned, deterministic msgpack envelope shared by every CRDT type.

Bytes are the msgpack array ``[MAGIC, type_tag, schema_version, payload]`` (plus the delete
epoch as a fifth item once an object has been deleted) followed by its CRC-32 (4 bytes,
big-endian). Without the checksum a flipped byte inside a count would decode
to a plausible wrong number; with it, corruption is an error. Maps inside payloads are written
as sorted arrays so equal states give equal bytes (digests and "did it change?" checks rely on
that), and register values are made canonical the same way (dict keys sorted by their bytes).
Decoding anything else raises :class:`~crdt.errors.CrdtCodecError`.
"""

from __future__ import annotations

import zlib
from typing import Any

import msgpack

from crdt.errors import CrdtCodecError, UnsupportedValueError

__all__ = [
    "INT64_MAX",
    "MAGIC",
    "canonical_key",
    "check_element",
    "check_epoch",
    "normalize_value",
    "pack",
    "pack_envelope",
    "pack_value",
    "unpack",
    "unpack_envelope",
    "unpack_envelope_epoch",
]

MAGIC = 0xCD
INT64_MAX = 2**63 - 1
_INT64 = (-(2**63), INT64_MAX)


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


def pack_envelope(tag: int, version: int, payload: Any, epoch: int = 0) -> bytes:
    # Epoch 0 (never deleted) keeps the four-item shape, so older bytes stay valid.
    items = [MAGIC, tag, version, payload] + ([epoch] if epoch else [])
    body = pack(items)
    return body + zlib.crc32(body).to_bytes(4, "big")


def check_epoch(epoch: Any) -> int:
    if type(epoch) is not int or not 0 <= epoch <= INT64_MAX:
        raise CrdtCodecError(f"delete epoch must be an integer in [0, 2^63), got {epoch!r}")
    return epoch


def unpack_envelope(data: bytes) -> tuple[int, int, Any]:
    """``(type_tag, version, payload)``; see :func:`unpack_envelope_epoch` for the epoch."""
    tag, version, payload, _ = unpack_envelope_epoch(data)
    return tag, version, payload


def unpack_envelope_epoch(data: bytes) -> tuple[int, int, Any, int]:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CrdtCodecError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    body, checksum = data[:-4], data[-4:]
    if len(data) < 5 or zlib.crc32(body).to_bytes(4, "big") != checksum:
        raise CrdtCodecError(
            "crdt bytes fail their checksum: they are truncated, corrupt or not crdt bytes"
        )
    obj = unpack(body)
    if not isinstance(obj, list) or len(obj) not in (4, 5) or obj[0] != MAGIC:
        raise CrdtCodecError("bytes are not a crdt envelope (wrong magic or shape)")
    tag, version, payload = obj[1:4]
    if type(tag) is not int or type(version) is not int:
        raise CrdtCodecError("crdt envelope has a non-integer type tag or version")
    epoch = check_epoch(obj[4]) if len(obj) == 5 else 0
    if len(obj) == 5 and epoch == 0:
        raise CrdtCodecError("crdt envelope spells epoch 0 explicitly: not canonical bytes")
    return tag, version, payload, epoch


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
    """A register value as it reads back after a round trip, in canonical form.

    Tuples become lists, and dicts are rebuilt with their keys in byte order, so equal values
    always pack to equal bytes (a digest or a "same value?" check can trust the bytes).
    """
    return _canonical(unpack(pack(value)))


def _canonical(value: Any) -> Any:
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda kv: pack(kv[0]))
        return {k: _canonical(v) for k, v in items}
    return value


def pack_value(value: Any) -> bytes:
    """Canonical bytes of a register value (what Redis stores and compares)."""
    return pack(normalize_value(value))
