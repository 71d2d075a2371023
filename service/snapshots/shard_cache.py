"""The replica's shard cache: verified local copies of a snapshot's objects.

Content-addressed (``{cache}/{sha256}.index``, tmp file then rename), shared by the
worker processes of a replica and pruned to the shards of the snapshots still served.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

from service.snapshots.refusal import SnapshotRefused
from vsearch.storage import ObjectStore
from vsearch.storage.object_store import InvalidKey, ObjectNotFound, StoreError

log = logging.getLogger(__name__)


def fetch_shard(
    store: ObjectStore, cache: Path, uri: str, sha256: str, size: int, where: str
) -> tuple[Path, str | None]:
    """The cached, verified local copy of an object (downloaded when missing or bad), and a
    warning when the cache is reused although the store's copy no longer matches.

    Serving the cached copy then is intended: its bytes are exactly those the manifest
    names (sha256-checked), and a rollback must not depend on the store. But other
    replicas, without this cache, would refuse the snapshot, so it is reported. The
    check is cheap when nothing changed: the store's etag is compared with the one
    recorded when the copy was verified (``{sha256}.etags``); only an object rewritten
    since is hashed again.
    """
    path = cache / f"{sha256}.index"
    if path.exists() and _file_sha256(path) == (sha256, size):
        return path, _check_store_copy(store, path, uri, sha256, size, where)
    try:
        etag = store.head(uri).etag  # before the download: a later rewrite shows as changed
        info = store.download_file(uri, path)
    except (ObjectNotFound, InvalidKey) as e:
        raise SnapshotRefused(f"{where} {uri}: not in the store ({e})") from None
    if (info.sha256, info.size) != (sha256, size):
        path.unlink(missing_ok=True)
        raise SnapshotRefused(
            f"{where} {uri}: sha256 {str(info.sha256)[:12]}… ({info.size} bytes), "
            f"manifest says {sha256[:12]}… ({size} bytes)"
        )
    _record_etag(path, uri, etag)
    return path, None


def _check_store_copy(
    store: ObjectStore, path: Path, uri: str, sha256: str, size: int, where: str
) -> str | None:
    """Why the store's copy of a cached object differs from the manifest; None if it does not."""
    served = "serving the verified cached copy; replicas without it will refuse this snapshot"
    try:
        head = store.head(uri)
        if head.size != size:
            problem = f"the store's copy has {head.size} bytes, manifest says {size}"
        elif _etags(path).get(uri) == head.etag:
            return None
        elif (found := store.sha256(uri)) != (sha256, size):
            problem = f"the store's copy has sha256 {found[0][:12]}…, manifest says {sha256[:12]}…"
        else:
            _record_etag(path, uri, head.etag)
            return None
    except ObjectNotFound:
        problem = "the store has no copy"
    except (StoreError, OSError) as e:  # the store is down: nothing to say about its copy
        log.warning("%s %s: cannot check the store's copy: %s", where, uri, e)
        return None
    warning = f"{where} {uri}: {problem}; {served}"
    log.warning("%s", warning)
    return warning


def _etags(path: Path) -> dict[str, str]:
    try:
        found = json.loads(path.with_suffix(".etags").read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _record_etag(path: Path, uri: str, etag: str) -> None:
    if not etag:
        return
    etags = {**_etags(path), uri: etag}
    tmp = path.with_suffix(".etags.tmp")
    tmp.write_text(json.dumps(etags))
    tmp.replace(path.with_suffix(".etags"))


def prune_shard_cache(cache: Path, keep: set[str]) -> None:
    """Delete cached shards (and their id lookups) whose sha256 is not in ``keep``,
    sparing any just written. A worker still mapping a deleted file keeps its pages."""
    for path in cache.iterdir():
        if path.name.split(".", 1)[0] in keep:
            continue
        try:  # another worker of this replica may be pruning the same cache
            if path.stat().st_mtime < time.time() - 1:
                path.unlink(missing_ok=True)
        except FileNotFoundError:
            continue


def _file_sha256(path: Path) -> tuple[str, int]:
    sha, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
            size += len(chunk)
    return sha.hexdigest(), size
