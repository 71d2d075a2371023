"""Encoders: images (and, where the model has a text tower, texts) to vectors.

The protocol is in ``vsearch.encoders.base``; ``load_encoder`` (added with the
embedding stage) builds one from a spec string.
"""

from vsearch.encoders.base import Encoder, EncoderUnavailable, TextNotSupported

__all__ = ["Encoder", "EncoderUnavailable", "TextNotSupported"]
