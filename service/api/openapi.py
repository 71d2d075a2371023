"""The OpenAPI 3.1 document of the service, served at ``/openapi.json``.

Written by hand next to the handlers (service/api/request_bodies.py holds the same bounds);
the test suite fuzzes the live app from this document with schemathesis.
"""

from __future__ import annotations

from typing import Any

from service.api.request_bodies import MAX_DIM, MAX_NPROBE, MAX_TEXT_CHARS, MAX_URL_CHARS
from vsearch.delta import MAX_ITEM_ID

_ID = {"type": "integer", "minimum": 0, "maximum": MAX_ITEM_ID}
_B64 = {"type": "string", "contentEncoding": "base64", "minLength": 1}


def _vector(dim: int | None) -> dict[str, Any]:
    """A vector as a JSON list or base64 float32; exactly ``dim`` values once a snapshot serves."""
    lo, hi = (dim, dim) if dim else (1, MAX_DIM)
    b64: dict[str, Any] = {**_B64, "description": "base64 of little-endian float32 values"}
    if dim:
        b64["minLength"] = b64["maxLength"] = 4 * -(-(dim * 4) // 3)
    return {
        "oneOf": [
            {"type": "array", "items": {"type": "number"}, "minItems": lo, "maxItems": hi},
            b64,
        ]
    }


_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _json(schema_ref: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": schema_ref}}},
    }


def openapi_document(*, max_k: int, max_items: int, dim: int | None = None) -> dict[str, Any]:
    """The document; ``dim``: the served snapshot's dimension, when there is one."""
    vector = _vector(dim)
    query_options = {
        "text": {"type": "string", "minLength": 1, "maxLength": MAX_TEXT_CHARS},
        "image": {**_B64, "description": "the image file, base64"},
        "image_b64": {**_B64, "description": "alias of image"},
        "image_url": {"type": "string", "format": "uri", "maxLength": MAX_URL_CHARS},
        "vector": vector,
        "vector_b64": {**vector["oneOf"][1], "description": "alias of vector given as base64"},
        "id": {**_ID, "description": "more like this stored item (excluded from the hits)"},
    }
    knobs = {
        "k": {"type": "integer", "minimum": 1, "maximum": max_k, "default": 10},
        # null is read as absent (the defaults), as the service always has
        "nprobe": {"type": ["integer", "null"], "minimum": 1, "maximum": MAX_NPROBE},
        "target_recall": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 1},
        "exact": {"type": "boolean", "default": False},
    }
    search_request = {
        "type": "object",
        "description": "Exactly one of text, image (image_b64), image_url, vector (vector_b64) "
        "or id; nprobe or target_recall, not both.",
        "additionalProperties": False,
        "properties": {**query_options, **knobs},
        "oneOf": [{"required": [name]} for name in query_options],
    }
    hit = {
        "type": "object",
        "required": ["id", "score", "source", "metadata"],
        "properties": {
            "id": _ID,
            "score": {
                "type": ["number", "null"],
                "description": "inner product (ip) or squared L2",
            },
            "source": {"enum": ["base", "delta"]},
            "metadata": {"type": ["object", "null"]},
        },
    }
    item = {
        "type": "object",
        "additionalProperties": False,
        "required": ["id"],
        "properties": {
            "id": _ID,
            "vector": vector,
            "vector_b64": vector["oneOf"][1],
            "image": _B64,
            "image_b64": _B64,
            "image_url": query_options["image_url"],
            "metadata": {"type": ["object", "null"]},
        },
        "oneOf": [
            {"required": [n]} for n in ("vector", "vector_b64", "image", "image_b64", "image_url")
        ],
    }
    bad_input = {
        "400": _error("invalid input"),
        "404": _error("the id is not stored"),
        "413": _error("the body is too large"),
        "501": _error("a feature this build lacks (image decoding)"),
        "503": _error("no snapshot served yet, or a dependency is down"),
    }
    writes = {
        "200": _json("#/components/schemas/WriteResult", "appended to the delta log"),
        "400": _error("invalid input"),
        "401": _error("missing or wrong API key"),
        "403": _error("writes are disabled"),
        "413": _error("the body is too large"),
        "501": _error("a feature this build lacks (image decoding)"),
        "503": _error("no snapshot served yet, or the delta log is down"),
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "vsearch query service", "version": "1"},
        "paths": {
            "/v1/search": {
                "post": {
                    "summary": "Search the live snapshot plus the delta",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/SearchRequest"}
                            },
                            "multipart/form-data": {
                                "schema": {
                                    "type": "object",
                                    "required": ["image"],
                                    "properties": {
                                        "image": {"type": "string", "format": "binary"},
                                        **knobs,
                                    },
                                }
                            },
                        },
                    },
                    "responses": {
                        "200": _json("#/components/schemas/SearchResult", "the top k hits"),
                        **bad_input,
                    },
                }
            },
            "/v1/items": {
                "put": {
                    "summary": "Upsert items into the delta",
                    "security": [{"apiKey": []}],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["items"],
                                    "properties": {
                                        "items": {
                                            "type": "array",
                                            "minItems": 1,
                                            "maxItems": max_items,
                                            "items": item,
                                        }
                                    },
                                }
                            }
                        },
                    },
                    "responses": writes,
                }
            },
            "/v1/items/delete": {
                "post": {
                    "summary": "Delete items (hides base copies)",
                    "security": [{"apiKey": []}],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["ids"],
                                    "properties": {
                                        "ids": {
                                            "type": "array",
                                            "minItems": 1,
                                            "maxItems": max_items,
                                            "items": _ID,
                                        }
                                    },
                                }
                            }
                        },
                    },
                    "responses": writes,
                }
            },
            "/v1/manifest": {
                "get": {
                    "summary": "The manifest of the live snapshot (docs/contracts.md); without "
                    "the API key, lineage.sources entries read <redacted>",
                    "security": [{}, {"apiKey": []}],
                    "responses": {
                        "200": {
                            "description": "the manifest",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        "401": _error("a wrong API key"),
                        "503": _error("not ready"),
                    },
                }
            },
            "/v1/items/{id}/thumbnail": {
                "get": {
                    "summary": "The item's thumbnail (base or delta, as search sees it); "
                    "ETag and Cache-Control, 304 on If-None-Match",
                    "parameters": [
                        {
                            "name": "id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                            "description": "the item id, an integer in [0, 2**63)",
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "the thumbnail (WebP, longest side 160 px)",
                            "content": {
                                "image/webp": {"schema": {"type": "string", "format": "binary"}},
                                "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                            },
                        },
                        "304": {"description": "not modified (If-None-Match)"},
                        "400": _error("not an item id"),
                        "404": _error("unknown or deleted item, or one without a thumbnail"),
                        "503": _error("not ready, or the store or delta log is unreachable"),
                    },
                }
            },
            "/v1/info": {
                "get": {
                    "summary": "What the search page shows: the live snapshot (id, vectors, "
                    "recall@10, thumbnails), live upserts, the encoder (images? text?), limits",
                    "responses": {
                        "200": {
                            "description": "the service's state",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
            "/": {
                "get": {
                    "summary": "The search page (HTML)",
                    "responses": {
                        "200": {
                            "description": "the page",
                            "content": {"text/html": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness",
                    "responses": {
                        "200": {
                            "description": "alive",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Readiness; says why a snapshot was refused",
                    "responses": {
                        "200": {
                            "description": "serving",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        "503": {
                            "description": "not serving yet",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {
                        "200": {
                            "description": "text exposition format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
            "schemas": {
                "Error": _ERROR,
                "SearchRequest": search_request,
                "SearchResult": {
                    "type": "object",
                    "required": ["hits", "snapshot_id", "took_ms"],
                    "properties": {
                        "hits": {"type": "array", "items": hit},
                        "snapshot_id": {"type": "string"},
                        "nprobe": {"type": ["integer", "null"]},
                        "took_ms": {"type": "number"},
                    },
                },
                "WriteResult": {
                    "type": "object",
                    "required": ["written", "entry_ids", "last_id"],
                    "properties": {
                        "written": {"type": "integer"},
                        "entry_ids": {
                            "type": "array",
                            "items": {"type": "string", "pattern": "^[0-9]+-[0-9]+$"},
                        },
                        "last_id": {"type": ["string", "null"]},
                    },
                },
            },
        },
    }
