"""The HTTP contract, typed once: request bodies (what the handlers receive) and answers.

``service/api/openapi.py`` generates the document's schemas from these models. The
checks with the service's exact 400 messages are ``service.api.request_bodies``'s: each
request model runs them first, in a ``mode="before"`` validator (they raise ``ApiError``,
which pydantic lets through unchanged), and the model is built from the values they
return. The field types and bounds that follow are the document's, and hold for every
model a handler gets. Bounds that are runtime settings (``k`` at most ``max_k``, at most
``max_upsert_items`` items or ids) come in the validation context and are written into
the document per app.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from flask import Request
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SkipValidation,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from service.api.request_bodies import (
    MAX_DIM,
    MAX_NPROBE,
    MAX_TEXT_CHARS,
    MAX_URL_CHARS,
    check_ids,
    check_items,
    check_search,
    json_object,
    search_fields,
)
from vsearch.delta import MAX_ITEM_ID

_B64 = {"type": "string", "contentEncoding": "base64", "minLength": 1}
_B64_VECTOR = {**_B64, "description": "base64 of little-endian float32 values"}
_METADATA = WithJsonSchema({"type": ["object", "null"]})

ItemId = Annotated[int, Field(ge=0, le=MAX_ITEM_ID)]
Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS)]
Url = Annotated[str, Field(max_length=MAX_URL_CHARS), WithJsonSchema(
    {"type": "string", "format": "uri", "maxLength": MAX_URL_CHARS})]  # fmt: skip
# Base64 on the wire, the decoded bytes in the model (a multipart upload: the file's bytes).
Image = Annotated[bytes, WithJsonSchema(_B64)]
# A JSON list of numbers or base64 float32 on the wire, float32 values in the model.
Vector = Annotated[np.ndarray, WithJsonSchema({"oneOf": [
    {"type": "array", "items": {"type": "number"}, "minItems": 1, "maxItems": MAX_DIM},
    _B64_VECTOR,
]})]  # fmt: skip
VectorB64 = Annotated[np.ndarray, WithJsonSchema(_B64_VECTOR)]
# Stored and served back as sent (lone surrogates included): not validated again here.
Metadata = Annotated[dict[str, Any] | None, SkipValidation, _METADATA]

_REQUEST = ConfigDict(extra="forbid", strict=True, frozen=True, arbitrary_types_allowed=True)
_ALIASES = {"image_b64": "image", "vector_b64": "vector"}


def _given(model: BaseModel, names: tuple[str, ...]) -> tuple[str, Any]:
    """The one input ``model`` holds, as ``(kind, value)``: an alias read as its kind."""
    for name in names:
        value = getattr(model, name)
        if value is not None:
            return _ALIASES.get(name, name), value
    raise AssertionError("validated without an input")


class SearchOptions(BaseModel):
    """How to search: the options of JSON and multipart searches alike."""

    model_config = _REQUEST
    k: int = Field(10, ge=1)  # the maximum (and the default) are the app's: the document's
    # null is read as absent (the defaults), as the service always has
    nprobe: int | None = Field(None, ge=1, le=MAX_NPROBE)
    target_recall: float | None = Field(None, gt=0, le=1)
    exact: bool = False


_QUERIES = ("text", "image", "image_b64", "image_url", "vector", "vector_b64", "id")


class SearchRequest(SearchOptions):
    """Exactly one of text, image (image_b64), image_url, vector (vector_b64) or id;
    nprobe or target_recall, not both."""

    model_config = ConfigDict(json_schema_extra={"oneOf": [{"required": [n]} for n in _QUERIES]})
    text: Text | SkipJsonSchema[None] = None
    image: Image | SkipJsonSchema[None] = Field(None, description="the image file, base64")
    image_b64: Image | SkipJsonSchema[None] = Field(None, description="alias of image")
    image_url: Url | SkipJsonSchema[None] = None
    vector: Vector | SkipJsonSchema[None] = None
    vector_b64: VectorB64 | SkipJsonSchema[None] = Field(
        None, description="alias of vector given as base64"
    )
    id: ItemId | SkipJsonSchema[None] = Field(
        None, description="more like this stored item (excluded from the hits)"
    )

    @model_validator(mode="before")
    @classmethod
    def _checked(cls, data: Any, info: ValidationInfo) -> dict[str, Any]:
        limits = info.context or {}
        return check_search(data, max_k=limits["max_k"], default_k=limits["default_k"])

    @classmethod
    def read(cls, request: Request, *, max_k: int, default_k: int) -> SearchRequest:
        """The search a request sends (JSON or multipart); a 400 for anything else."""
        context = {"max_k": max_k, "default_k": default_k}
        return cls.model_validate(search_fields(request), context=context)

    @property
    def kind(self) -> str:
        """text | image | image_url | vector | id (aliases read as their kind)."""
        return _given(self, _QUERIES)[0]

    @property
    def value(self) -> Any:
        """str (text, image_url) | bytes (image) | np.ndarray (vector) | int (id)."""
        return _given(self, _QUERIES)[1]


class SearchForm(SearchOptions):
    # A multipart search as the document shows it: the image file and the options as form
    # fields. The handler reads it into a SearchRequest (which also takes the other queries).

    model_config = ConfigDict(extra="ignore")
    image: Annotated[bytes, WithJsonSchema({"type": "string", "format": "binary"})]


_SOURCES = ("vector", "vector_b64", "image", "image_b64", "image_url")


class Item(BaseModel):
    model_config = ConfigDict(
        **_REQUEST, json_schema_extra={"oneOf": [{"required": [n]} for n in _SOURCES]}
    )
    id: ItemId
    vector: Vector | SkipJsonSchema[None] = None
    vector_b64: VectorB64 | SkipJsonSchema[None] = None
    image: Image | SkipJsonSchema[None] = None
    image_b64: Image | SkipJsonSchema[None] = None
    image_url: Url | SkipJsonSchema[None] = None
    metadata: Metadata = None

    @property
    def kind(self) -> str:
        """vector | image | image_url (aliases read as their kind)."""
        return _given(self, _SOURCES)[0]

    @property
    def value(self) -> Any:
        return _given(self, _SOURCES)[1]


class UpsertRequest(BaseModel):
    model_config = _REQUEST
    items: list[Item] = Field(min_length=1)  # the maximum is the app's: the document's

    @model_validator(mode="before")
    @classmethod
    def _checked(cls, data: Any, info: ValidationInfo) -> dict[str, Any]:
        return {"items": check_items(data, (info.context or {})["max_items"])}

    @classmethod
    def read(cls, request: Request, *, max_items: int) -> UpsertRequest:
        return cls.model_validate(json_object(request), context={"max_items": max_items})


class DeleteRequest(BaseModel):
    model_config = _REQUEST
    ids: list[ItemId] = Field(min_length=1)  # the maximum is the app's: the document's

    @model_validator(mode="before")
    @classmethod
    def _checked(cls, data: Any, info: ValidationInfo) -> dict[str, Any]:
        return {"ids": check_ids(data, (info.context or {})["max_items"])}

    @classmethod
    def read(cls, request: Request, *, max_items: int) -> DeleteRequest:
        return cls.model_validate(json_object(request), context={"max_items": max_items})


# Answers. They generate the document's response schemas; handlers that build them per
# request say so. The search answer is written by orjson with stored metadata spliced in
# unparsed (search_api.answer): building a SearchResult per search would cost the hot path
# a model per hit, so SearchResult is the document's only.


class Hit(BaseModel):
    id: ItemId
    score: float | None = Field(description="inner product (ip) or squared L2")
    source: Literal["base", "delta"]
    metadata: Metadata


class SearchResult(BaseModel):
    hits: list[Hit]
    snapshot_id: str
    nprobe: int | None = None
    took_ms: float


class WriteResult(BaseModel):
    written: int
    entry_ids: list[Annotated[str, Field(pattern="^[0-9]+-[0-9]+$")]]
    last_id: str | None


class ErrorDetail(BaseModel):
    code: str
    message: str


class Error(BaseModel):
    """The body of every 4xx and 5xx answer."""

    error: ErrorDetail


class Recall(BaseModel):
    image_to_image_at_10: float | None = Field(alias="image_to_image@10")
    text_to_image_at_10: float | None = Field(alias="text_to_image@10")


class SnapshotInfo(BaseModel):
    snapshot_id: str
    created_at: str
    vectors: int
    recall: Recall
    thumbnails: int
    encoder: str


class EncoderAbility(BaseModel):
    """Which queries the encoder takes: images, and text only with a text tower (null:
    not known yet, while it loads)."""

    images: bool
    text: bool | None
    reason: str | None


class Info(BaseModel):
    """What the search page shows and needs; not_ready only while no snapshot serves."""

    snapshot: SnapshotInfo | None
    delta_upserts: int
    encoder: EncoderAbility
    max_k: int
    default_k: int
    not_ready: str | SkipJsonSchema[None] = None
