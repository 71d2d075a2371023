"""Strict JSON <-> frozen dataclasses, by type hints: the manifest's and the report's codec.

Decoding checks every value against its field's type and names the culprit by
its path (``manifest.shards[2].sha256: unknown field``): a missing or unknown
key, a wrong type, a tuple of the wrong length, a value outside a ``Literal``.
Types understood: dataclasses, ``tuple[X, ...]``, ``tuple[X, Y]``, ``X | None``,
``Literal[...]``, ``str``, ``int``, ``float``, ``bool``. A bool is never a
number and an int never a bool; an int is a float (PEP 484).

What a format needs beyond that, opt-in per field or class:

- ``field(metadata={"json": "recall@10"})``: the JSON key, if not the field's name;
- ``field(metadata=OMIT_NONE)``: the key is left out, rather than null, when the
  value is None, and may be absent when decoding;
- ``json_array: ClassVar[bool] = True`` on a dataclass: stored as a JSON array of
  its fields, in order (a record such as ``[nprobe, recall, ms]``).

Errors are the caller's ``FieldError`` subclass; one raised by a dataclass's
``__post_init__`` names a field of that class and is re-raised with the full path.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeVar

T = TypeVar("T")

OMIT_NONE: Final[Mapping[str, Any]] = types.MappingProxyType({"omit_none": True})


class FieldError(ValueError):
    """A JSON value does not match its type; ``field`` is the path of the culprit."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def loads(text: str | bytes) -> Any:
    """``json.loads`` held to RFC 8259: ``NaN``, ``Infinity`` and ``-Infinity`` are a
    ValueError, like any other text that is not JSON."""
    return json.loads(text, parse_constant=_not_json)


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON value")


def json_key(f: dataclasses.Field[Any]) -> str:
    return str(f.metadata.get("json", f.name))


def encode(value: Any) -> Any:
    """``value`` as JSON-able dicts, lists and scalars, in field order."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        pairs = [(f, getattr(value, f.name)) for f in dataclasses.fields(value)]
        if getattr(value, "json_array", False):
            return [encode(v) for _, v in pairs]
        return {
            json_key(f): encode(v)
            for f, v in pairs
            if v is not None or not f.metadata.get("omit_none")
        }
    if isinstance(value, tuple | list):
        return [encode(v) for v in value]
    return value


@dataclass(frozen=True)
class StrictDecoder:
    """Decodes JSON into typed values, raising ``error(path, reason)``.

    ``int_as_float``: an int in a float field becomes a float (True) or stays an
    int (False), so that a stored document re-encodes to the same bytes.
    """

    error: type[FieldError] = FieldError
    int_as_float: bool = True

    def decode(self, cls: type[T], data: Any, path: str) -> T:
        """``data`` as a ``cls`` (a dataclass), ``path`` naming its root."""
        return typing.cast(T, self.value(cls, data, path))

    def value(self, tp: Any, data: Any, path: str) -> Any:
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin is typing.Union or isinstance(tp, types.UnionType):
            if data is None and type(None) in args:
                return None
            (inner,) = [a for a in args if a is not type(None)]
            return self.value(inner, data, path)
        if origin is Literal:
            if data not in args:
                raise self.error(path, f"expected one of {list(args)}, got {data!r}")
            return data
        if origin is tuple:
            return self._tuple(args, data, path)
        if dataclasses.is_dataclass(tp):
            return self._dataclass(tp, data, path)
        if tp is float and isinstance(data, int | float) and not isinstance(data, bool):
            return float(data) if self.int_as_float else data
        if tp in (int, str, bool) and type(data) is tp:
            return data
        raise self.error(path, f"expected {getattr(tp, '__name__', tp)}, got {_kind(data)}")

    def _tuple(self, args: tuple[Any, ...], data: Any, path: str) -> tuple[Any, ...]:
        if not isinstance(data, list):
            raise self.error(path, f"expected a list, got {_kind(data)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(self.value(args[0], v, f"{path}[{i}]") for i, v in enumerate(data))
        if len(data) != len(args):
            raise self.error(path, f"expected {len(args)} items, got {len(data)}")
        pairs = enumerate(zip(args, data, strict=True))
        return tuple(self.value(a, v, f"{path}[{i}]") for i, (a, v) in pairs)

    def _dataclass(self, cls: Any, data: Any, path: str) -> Any:
        hints = typing.get_type_hints(cls)
        fields = dataclasses.fields(cls)
        if getattr(cls, "json_array", False):
            if not isinstance(data, list) or len(data) != len(fields):
                names = ", ".join(f.name for f in fields)
                got = f"{len(data)} items" if isinstance(data, list) else _kind(data)
                raise self.error(path, f"expected a list [{names}], got {got}")
            pairs = enumerate(zip(fields, data, strict=True))
            values = {f.name: self.value(hints[f.name], v, f"{path}[{i}]") for i, (f, v) in pairs}
        else:
            if not isinstance(data, dict):
                raise self.error(path, f"expected an object, got {_kind(data)}")
            by_key = {json_key(f): f for f in fields}
            unknown = sorted(set(data) - set(by_key))
            if unknown:
                raise self.error(f"{path}.{unknown[0]}", "unknown field")
            values = {}
            for key, f in by_key.items():
                if key not in data and not f.metadata.get("omit_none"):
                    raise self.error(f"{path}.{key}", "missing field")
                values[f.name] = self.value(hints[f.name], data.get(key), f"{path}.{key}")
        try:
            return cls(**values)
        except self.error as e:
            raise self.error(f"{path}.{e.field}", e.reason) from None


def _kind(data: Any) -> str:
    return "null" if data is None else type(data).__name__
