"""Item ids: a stable, non-negative int64 for every item key.

The scheme (version 1): the first 8 bytes of ``blake2b(key.encode("utf-8"),
digest_size=8, person=b"vsearch-id-v1")`` read as a big-endian unsigned integer,
with the top bit cleared so that the id fits a non-negative int64 (faiss ids are
int64; -1 means "no result" there). Nothing else goes in: the same key gives the
same id on every machine, in every run and in every snapshot, so the delta log
and the base snapshot agree on ids without a lookup table.

Keys are chosen by the sources and are unique within a snapshot
(``{shard}/{member}`` for tar shards, the relative path for directories, see
``docs/embedding.md``). With 63 random bits, the chance of any collision among
n keys is about n² / 2⁶⁴: 1e-4 for 50 million items. Collisions are still
detected, not assumed away: ``IdAllocator`` refuses a second key with an id it
has already given out, and the partition worker records that item as a failure
(reason ``id-collision``) instead of writing two items under one id.

    >>> item_id("cifar10-train-000/000000") == item_id("cifar10-train-000/000000")
    True
    >>> 0 <= item_id("x") < 2**63
    True
"""

from __future__ import annotations

import hashlib

ID_SCHEME = "blake2b-63/v1"
_PERSON = b"vsearch-id-v1"
_MASK = (1 << 63) - 1


def item_id(key: str) -> int:
    """The id of the item with this key; see the module docstring for the scheme."""
    if not key:
        raise ValueError("an item key must be a non-empty string")
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8, person=_PERSON).digest()
    return int.from_bytes(digest, "big") & _MASK


class IdCollision(ValueError):
    """Two different keys map to one id (or one key was given twice)."""

    def __init__(self, key: str, other: str, id_: int) -> None:
        reason = "duplicate-key" if key == other else "id-collision"
        super().__init__(f"{reason}: {key!r} has id {id_}, already taken by {other!r}")
        self.reason = reason
        self.key, self.other, self.id = key, other, id_


class IdAllocator:
    """Gives out ids for keys and refuses duplicates and collisions within one scope."""

    def __init__(self) -> None:
        self._keys: dict[int, str] = {}

    def allocate(self, key: str) -> int:
        """The id of ``key``; raises IdCollision if the id was already given to any key."""
        return self.claim(item_id(key), key)

    def claim(self, id_: int, key: str) -> int:
        """Give ``id_`` (chosen by the caller: precomputed ids) to ``key``, once."""
        other = self._keys.get(id_)
        if other is not None:
            raise IdCollision(key, other, id_)
        self._keys[id_] = key
        return id_

    def __len__(self) -> int:
        return len(self._keys)
