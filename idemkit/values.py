"""Python values as msgpack: canonical bytes for fingerprints, round trips for results.

msgpack carries None, bool, int (64-bit), float, str, bytes, lists and maps. Calls and
results hold more, so values outside that set travel as msgpack extension types:

==========  =====================================================================
ext code    Python value (payload)
==========  =====================================================================
1           tuple (a packed list): comes back as a tuple
2 / 3       set / frozenset (a packed list)
4 / 5 / 6   datetime / date / time (ISO 8601 text, the UTC offset included)
7           timedelta (days, seconds, microseconds)
8           Decimal (its text)
9           UUID (16 bytes)
10          int outside 64 bits (decimal text)
11          Enum member (class path, packed value)
12          dataclass instance (class path, packed fields)
13          pydantic model (class path, packed ``model_dump()``)
==========  =====================================================================

:func:`canonical` is for comparing calls: maps are ordered by their packed keys and sets by
their packed elements, so equal arguments give equal bytes whatever their order; a value of
any other type raises :class:`~idemkit.errors.CallArgumentError` naming where it was.

:class:`MsgpackSerializer` is the default serializer of results. On the way back, enum,
dataclass and pydantic classes are looked up by their path only among modules already
imported, and only classes of those three kinds are instantiated, so stored bytes cannot
make idemkit import modules or call arbitrary code.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import sys
import uuid
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, Final, Protocol

import msgpack

from idemkit.errors import CallArgumentError, CodecError

__all__ = ["MsgpackSerializer", "Serializer", "canonical"]

_TUPLE, _SET, _FROZENSET = 1, 2, 3
_DATETIME, _DATE, _TIME, _TIMEDELTA = 4, 5, 6, 7
_DECIMAL, _UUID, _BIGINT = 8, 9, 10
_ENUM, _DATACLASS, _PYDANTIC = 11, 12, 13
_CANONICAL_MAP = 14  # fingerprints only: a map whose pairs are sorted by their packed keys

_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**64 - 1


class Serializer(Protocol):
    """How results of ``@idempotent`` functions become bytes and back (``serializer=``)."""

    def dumps(self, value: Any) -> bytes:
        """Bytes for ``value``; raise ``TypeError`` or ``ValueError`` if it cannot be kept."""

    def loads(self, data: bytes) -> Any:
        """The value back from :meth:`dumps`' bytes."""


def _pack(value: Any, default: Callable[[Any], Any]) -> bytes:
    packed: bytes = msgpack.packb(value, default=default, use_bin_type=True, strict_types=True)
    return packed


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _is_pydantic(value: object) -> bool:
    return hasattr(type(value), "model_fields") and hasattr(value, "model_dump")


def _scalar_ext(value: Any) -> msgpack.ExtType | None:
    """Extension types whose payload does not depend on how nested values are packed."""
    if isinstance(value, int) and not isinstance(value, bool | enum.Enum):
        if _INT_MIN <= value <= _INT_MAX:
            return None
        return msgpack.ExtType(_BIGINT, str(value).encode())
    if isinstance(value, dt.datetime):
        return msgpack.ExtType(_DATETIME, value.isoformat().encode())
    if isinstance(value, dt.date):
        return msgpack.ExtType(_DATE, value.isoformat().encode())
    if isinstance(value, dt.time):
        return msgpack.ExtType(_TIME, value.isoformat().encode())
    if isinstance(value, dt.timedelta):
        payload = [value.days, value.seconds, value.microseconds]
        return msgpack.ExtType(_TIMEDELTA, msgpack.packb(payload))
    if isinstance(value, Decimal):
        return msgpack.ExtType(_DECIMAL, str(value).encode())
    if isinstance(value, uuid.UUID):
        return msgpack.ExtType(_UUID, value.bytes)
    return None


# -- canonical bytes (fingerprints) ------------------------------------------------------


def canonical(value: Any, where: str = "argument") -> bytes:
    """Deterministic bytes for ``value``; equal values give equal bytes."""
    return _pack(_canonical(value, where), _no_default(where))


def _no_default(where: str) -> Callable[[Any], Any]:
    def default(value: Any) -> Any:
        raise _unencodable(value, where)

    return default


def _unencodable(value: Any, where: str) -> CallArgumentError:
    return CallArgumentError(
        f"{where} is a {type(value).__name__}, which has no canonical encoding to compare "
        "calls by; pass plain data (str, bytes, numbers, bool, None, lists, tuples, dicts, "
        "sets, datetime, Decimal, UUID, enums, dataclasses, pydantic models), leave it out "
        "with exclude=..., or give the function a key that does not need it"
    )


def _canonical(value: Any, where: str) -> Any:
    if value is None or isinstance(value, bool | float | str | bytes):
        return value
    ext = _scalar_ext(value)
    if ext is not None:
        return ext
    if isinstance(value, enum.Enum):
        inner = _pack(_canonical(value.value, where), _no_default(where))
        return msgpack.ExtType(_ENUM, _pack([_class_path(type(value)), inner], _no_default(where)))
    if isinstance(value, int):
        return int(value)
    if isinstance(value, list | tuple):
        items = [_canonical(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, list):
            return items
        return msgpack.ExtType(_TUPLE, _pack(items, _no_default(where)))
    if isinstance(value, set | frozenset):
        packed = sorted(canonical(v, f"{where} element") for v in value)
        code = _SET if isinstance(value, set) else _FROZENSET
        return msgpack.ExtType(code, b"".join(packed))
    if isinstance(value, Mapping):
        pairs = sorted(
            (canonical(k, f"{where} key"), canonical(v, f"{where}[{k!r}]"))
            for k, v in value.items()
        )
        return msgpack.ExtType(_CANONICAL_MAP, b"".join(_framed(k) + v for k, v in pairs))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        inner = canonical(fields, where)
        return msgpack.ExtType(_DATACLASS, _pack([_class_path(type(value)), inner], repr))
    if _is_pydantic(value):
        inner = canonical(value.model_dump(), where)
        return msgpack.ExtType(_PYDANTIC, _pack([_class_path(type(value)), inner], repr))
    raise _unencodable(value, where)


def _framed(packed: bytes) -> bytes:
    # msgpack values are self-delimiting, so concatenated pairs cannot be confused; the
    # length prefix only keeps that true for readers who do not parse msgpack.
    return len(packed).to_bytes(4, "big") + packed


# -- results -------------------------------------------------------------------------------


class MsgpackSerializer:
    """The default serializer of results: msgpack with the extension types above.

    Round trips keep types: a tuple comes back as a tuple, a set as a set, a dataclass as an
    instance of its class (built with its ``__init__``), a pydantic model through
    ``model_validate``. ``bytearray`` comes back as ``bytes`` and ``OrderedDict`` (any
    mapping) as ``dict``.
    """

    def dumps(self, value: Any) -> bytes:
        try:
            return _pack(value, self._default)
        except (TypeError, ValueError, OverflowError) as exc:
            raise TypeError(str(exc)) from None

    def _default(self, value: Any) -> Any:
        ext = _scalar_ext(value)
        if ext is not None:
            return ext
        if isinstance(value, enum.Enum):
            inner = _pack(value.value, self._default)
            return msgpack.ExtType(_ENUM, _pack([_class_path(type(value)), inner], self._default))
        if isinstance(value, tuple) and not hasattr(value, "_fields"):
            return msgpack.ExtType(_TUPLE, _pack(list(value), self._default))
        if isinstance(value, set | frozenset):
            code = _SET if isinstance(value, set) else _FROZENSET
            return msgpack.ExtType(code, _pack(list(value), self._default))
        if isinstance(value, bytearray | memoryview):
            return bytes(value)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value) if f.init}
            payload = [_class_path(type(value)), _pack(fields, self._default)]
            return msgpack.ExtType(_DATACLASS, _pack(payload, self._default))
        if _is_pydantic(value):
            payload = [_class_path(type(value)), _pack(value.model_dump(), self._default)]
            return msgpack.ExtType(_PYDANTIC, _pack(payload, self._default))
        if isinstance(value, Mapping):
            return dict(value)
        if isinstance(value, list):
            return list(value)
        if isinstance(value, str):
            return str(value)
        if isinstance(value, int):
            return int(value)
        if isinstance(value, float):
            return float(value)
        raise TypeError(f"cannot serialize an object of type {type(value).__name__}")

    def loads(self, data: bytes) -> Any:
        try:
            return msgpack.unpackb(
                data, raw=False, strict_map_key=False, ext_hook=self._ext, use_list=True
            )
        except CodecError:
            raise
        except Exception as exc:
            raise CodecError(f"stored result cannot be read: {exc}") from None

    def _ext(self, code: int, payload: bytes) -> Any:
        if code == _TUPLE:
            return tuple(self.loads(payload))
        if code in (_SET, _FROZENSET):
            items = self.loads(payload)
            return set(items) if code == _SET else frozenset(items)
        if code == _DATETIME:
            return dt.datetime.fromisoformat(payload.decode())
        if code == _DATE:
            return dt.date.fromisoformat(payload.decode())
        if code == _TIME:
            return dt.time.fromisoformat(payload.decode())
        if code == _TIMEDELTA:
            days, seconds, micros = msgpack.unpackb(payload)
            return dt.timedelta(days=days, seconds=seconds, microseconds=micros)
        if code == _DECIMAL:
            return Decimal(payload.decode())
        if code == _UUID:
            return uuid.UUID(bytes=payload)
        if code == _BIGINT:
            return int(payload.decode())
        if code in (_ENUM, _DATACLASS, _PYDANTIC):
            path, inner = msgpack.unpackb(payload, raw=False)
            cls = _known_class(path, code)
            value = self.loads(inner)
            if code == _ENUM:
                return cls(value)
            if code == _DATACLASS:
                return cls(**value)
            return cls.model_validate(value)
        raise CodecError(f"stored result holds an unknown extension type {code}")


def _known_class(path: str, code: int) -> Any:
    module_name, _, qualname = path.partition(":")
    module = sys.modules.get(module_name)
    if module is None:  # never import on behalf of stored bytes
        raise CodecError(
            f"stored result names a class of module {module_name}, which is not imported; "
            "import it before the call"
        )
    target: Any = module
    for part in qualname.split("."):
        target = getattr(target, part, None)
    ok = isinstance(target, type) and (
        (code == _ENUM and issubclass(target, enum.Enum))
        or (code == _DATACLASS and dataclasses.is_dataclass(target))
        or (code == _PYDANTIC and hasattr(target, "model_validate"))
    )
    if not ok:
        raise CodecError(f"stored result names {path}, which is not a class idemkit may build")
    return target
