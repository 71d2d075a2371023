"""Precomputed vectors as one embedding partition: checked, given ids, committed.

The ``embed`` stage's other path (``vsearch.stages.embed``): a vector source's rows
(``.npy`` or Parquet) go in as they are. A non-finite vector, a negative id or an id
clash is a failure with a reason, as an undecodable image is for the worker. The
partition is committed with a fingerprint of its input and of the encoder that made
the vectors, so a rerun with the same input writes nothing.
"""

from __future__ import annotations

import logging

import numpy as np

from vsearch.canonical_json import fingerprint
from vsearch.embedding.admission import Admission
from vsearch.embedding.partitions import PartitionRecord, read_record, write_partition
from vsearch.ids import ID_SCHEME
from vsearch.manifest import EncoderInfo
from vsearch.sources import PartitionSpec, VectorSource
from vsearch.storage import ObjectStore

log = logging.getLogger(__name__)


def import_vectors(
    store: ObjectStore, snapshot_id: str, index: int, source: VectorSource, spec: PartitionSpec
) -> tuple[PartitionRecord, EncoderInfo]:
    """Check and write the rows of ``spec`` as partition ``index``; returns its commit record
    and the encoder identity the source names (for ``encoder.json``)."""
    info = source.encoder_info()
    encoder_id = f"{info.name}@{info.revision}#{info.model_id}"
    input_fingerprint = fingerprint(["vectors", source.fingerprint(spec), encoder_id])
    done = read_record(store, snapshot_id, index)
    if done is not None and done.input_fingerprint == input_fingerprint:
        return done, info
    rows = source.rows(spec)
    finite = np.isfinite(rows.xb).all(axis=1)
    admitted = Admission(index)
    keep = []
    for i, key in enumerate(rows.keys):
        given = None if rows.ids is None else int(rows.ids[i])
        reason = None if finite[i] else "non-finite vector"
        if reason is None and given is not None and given < 0:
            reason = "negative id"
        if admitted.admit(key, reason, given_id=given) >= 0:
            keep.append(i)
    meta = [{**rows.meta[i], "id": id_, "key": rows.keys[i]}
            for i, id_ in zip(keep, admitted.ids, strict=True)]  # fmt: skip
    record = write_partition(
        store, snapshot_id, index, np.ascontiguousarray(rows.xb[keep]), admitted.id_array(),
        meta, admitted.failures, input_fingerprint=input_fingerprint, encoder_id=encoder_id,
        stats={"items": len(rows.keys), "imported": len(keep), "id_scheme": ID_SCHEME
               if rows.ids is None else "given"},
    )  # fmt: skip
    log.info("%s partition %d: %d vectors imported, %d refused", snapshot_id, index, len(keep),
             len(admitted.failures))  # fmt: skip
    return record, info
