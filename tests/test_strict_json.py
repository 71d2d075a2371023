"""The strict JSON <-> dataclass codec the manifest and the report share: every field
required, none unknown, types checked by hint, and errors that name the path."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import pytest

from vsearch.strict_json import OMIT_NONE, FieldError, StrictDecoder, encode


class DocError(FieldError):
    pass


@dataclass(frozen=True)
class Point:
    json_array: ClassVar[bool] = True
    nprobe: int
    recall: float


@dataclass(frozen=True)
class Part:
    name: str
    size: int

    def __post_init__(self) -> None:
        if self.size < 0:
            raise DocError("size", "must be >= 0")


@dataclass(frozen=True)
class Doc:
    kind: Literal["ip", "l2"]
    ratio: float
    flag: bool
    note: str | None
    pair: tuple[int, str]
    parts: tuple[Part, ...]
    points: tuple[Point, ...]
    at_10: float = field(metadata={"json": "recall@10"})
    extra: int | None = field(metadata=OMIT_NONE)


DOC: dict[str, Any] = {
    "kind": "ip",
    "ratio": 0.5,
    "flag": True,
    "note": None,
    "pair": [1, "a"],
    "parts": [{"name": "x", "size": 3}, {"name": "y", "size": 0}],
    "points": [[1, 0.25], [2, 1]],
    "recall@10": 0.9,
    "extra": 7,
}
STRICT = StrictDecoder(DocError)
AS_WRITTEN = StrictDecoder(DocError, int_as_float=False)


def edited(path: str, value: Any) -> dict[str, Any]:
    """DOC with ``path`` (``/``-separated) set to ``value``, or deleted for ``...``."""
    data = copy.deepcopy(DOC)
    *parents, last = [int(p) if p.isdigit() else p for p in path.split("/")]
    node: Any = data
    for p in parents:
        node = node[p]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return data


def test_decodes_by_type_hints_and_encodes_back() -> None:
    doc = STRICT.decode(Doc, DOC, "doc")
    assert doc.parts[1] == Part("y", 0) and doc.points[0] == Point(1, 0.25)
    assert doc.pair == (1, "a") and doc.at_10 == 0.9 and doc.note is None
    assert encode(doc) == {**DOC, "points": [[1, 0.25], [2, 1.0]]}


def test_an_int_in_a_float_field_is_a_float_or_stays_as_written() -> None:
    assert type(STRICT.decode(Doc, DOC, "doc").points[1].recall) is float
    kept = AS_WRITTEN.decode(Doc, DOC, "doc")
    assert type(kept.points[1].recall) is int and encode(kept) == DOC


def test_a_field_that_may_be_left_out() -> None:
    doc = STRICT.decode(Doc, edited("extra", ...), "doc")
    assert doc.extra is None and "extra" not in encode(doc)
    # note is optional but not OMIT_NONE: null is written, and the key is required.
    assert encode(doc)["note"] is None


@pytest.mark.parametrize(
    ("path", "value", "field", "reason"),
    [
        ("note", ..., "doc.note", "missing field"),
        ("recall@10", ..., "doc.recall@10", "missing field"),
        ("surprise", 1, "doc.surprise", "unknown field"),
        ("parts/1/colour", "red", "doc.parts[1].colour", "unknown field"),
        ("kind", "cosine", "doc.kind", "expected one of ['ip', 'l2'], got 'cosine'"),
        ("ratio", "0.5", "doc.ratio", "expected float, got str"),
        ("ratio", True, "doc.ratio", "expected float, got bool"),
        ("flag", 1, "doc.flag", "expected bool, got int"),
        ("parts/0/size", 3.0, "doc.parts[0].size", "expected int, got float"),
        ("parts/0/size", False, "doc.parts[0].size", "expected int, got bool"),
        ("note", 5, "doc.note", "expected str, got int"),
        ("extra", "7", "doc.extra", "expected int, got str"),
        ("pair", [1], "doc.pair", "expected 2 items, got 1"),
        ("pair", {"a": 1}, "doc.pair", "expected a list, got dict"),
        ("pair/1", 2, "doc.pair[1]", "expected str, got int"),
        ("parts", None, "doc.parts", "expected a list, got null"),
        ("parts/0", [], "doc.parts[0]", "expected an object, got list"),
        ("points/1", [1], "doc.points[1]", "expected a list [nprobe, recall], got 1 items"),
        ("points/1", {}, "doc.points[1]", "expected a list [nprobe, recall], got dict"),
        ("points/0/1", None, "doc.points[0][1]", "expected float, got null"),
        # Raised by Part.__post_init__ with its own field name: the path is prefixed.
        ("parts/1/size", -1, "doc.parts[1].size", "must be >= 0"),
    ],
)
def test_errors_name_the_path(path: str, value: Any, field: str, reason: str) -> None:
    with pytest.raises(DocError, match=f"^{re.escape(f'{field}: {reason}')}$") as e:
        STRICT.decode(Doc, edited(path, value), "doc")
    assert (e.value.field, e.value.reason) == (field, reason)


def test_the_root_must_be_an_object() -> None:
    with pytest.raises(DocError, match=r"^doc: expected an object, got list$"):
        STRICT.decode(Doc, [], "doc")


def test_the_default_error_class() -> None:
    with pytest.raises(FieldError, match=r"^doc\.surprise: unknown field$") as e:
        StrictDecoder().decode(Doc, edited("surprise", 1), "doc")
    assert type(e.value) is FieldError
