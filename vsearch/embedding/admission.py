"""Admitting a partition's items in order: each gets its id, or a failure with a reason.

What the embedding worker and the vector import share: an item refused upstream
(undecodable, non-finite, a negative id), a key given twice or two keys with one id
is recorded in the partition's failures file and never stops the partition.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from vsearch.ids import IdAllocator, IdCollision

log = logging.getLogger(__name__)


class Admission:
    """The ids and failures of one partition, in the order its items were admitted."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.ids: list[int] = []
        self.failures: list[dict[str, Any]] = []
        self._allocator = IdAllocator()

    def admit(self, key: str, reason: str | None = None, *, given_id: int | None = None) -> int:
        """The item's id, or -1 when it is refused (``reason``, or an id clash).

        Without ``given_id`` the id is derived from the key (``vsearch.ids.item_id``);
        a precomputed source gives its own.
        """
        if reason is None:
            try:
                if given_id is None:
                    id_ = self._allocator.allocate(key)
                else:
                    id_ = self._allocator.claim(given_id, key)
            except IdCollision as e:
                log.warning("partition %d: %s", self.index, e)
                reason = e.reason
        if reason is not None:
            self.failures.append({"key": key, "reason": reason})
            return -1
        self.ids.append(id_)
        return id_

    def id_array(self) -> np.ndarray:
        return np.asarray(self.ids, dtype=np.int64)
