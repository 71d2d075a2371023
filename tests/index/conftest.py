from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def one_faiss_thread() -> Iterator[None]:
    """One OpenMP thread: on a shared 2-core machine, spinning faiss threads that
    compete with other processes make training 10x slower, not faster."""
    from vsearch.index.structure import faiss_threads

    with faiss_threads(1):
        yield
