"""Deterministic JSON: the same value always gives the same bytes.

Run records, commit records and reports are rewritten by every retry; equal
bytes leave the object (and its etag) as it was, and a fingerprint of the
inputs tells a rerun that nothing changed. Keys are sorted; floats keep
Python's shortest round-trip form.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def json_bytes(value: Any) -> bytes:
    """A stored JSON object: indented, sorted keys, one trailing newline."""
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()


def json_line(value: Any) -> str:
    """One row of a ``.jsonl`` file, with its newline."""
    return json.dumps(value, sort_keys=True) + "\n"


def fingerprint(value: Any) -> str:
    """sha256 (hex) of ``value``'s JSON: names a set of small, JSON-able inputs."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()
