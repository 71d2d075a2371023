"""Atomic publish of snapshots: immutable manifests and the CURRENT pointer.

Publishing is three steps, each safe to retry:

1. verify every object the manifest names (exists, size, sha256) — a snapshot
   naming a missing or corrupted object is refused before anything is written;
2. write ``manifests/{id}.json`` if absent (an identical one already there is a
   retry; a different one is a conflict: manifests are immutable);
3. move ``manifests/CURRENT`` by compare-and-swap against the etag read before.
   Of two concurrent publishers exactly one wins; the other gets PublishConflict.

CURRENT never moves to an older snapshot id unless forced (a backfill of an
old date records its manifest and leaves the newer snapshot live).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from vsearch.canonical_json import json_bytes
from vsearch.manifest import Manifest, ManifestError, check_snapshot_id
from vsearch.storage import ObjectNotFound, ObjectStore, PreconditionFailed

log = logging.getLogger(__name__)

MANIFESTS = "manifests/"
CURRENT_KEY = "manifests/CURRENT"


class PublishError(Exception):
    """Base class of publish errors."""


class VerificationError(PublishError):
    """Objects named by a manifest are missing or do not match their size or sha256."""

    def __init__(self, snapshot_id: str, problems: list[str]) -> None:
        super().__init__(f"snapshot {snapshot_id} refused: " + "; ".join(problems))
        self.problems = problems


class PublishConflict(PublishError):
    """Another writer won: CURRENT moved concurrently, or the manifest exists with other content."""


class SnapshotNotFound(PublishError, LookupError):
    """No manifest for that snapshot id (or no CURRENT yet)."""


@dataclass(frozen=True)
class Pointer:
    """The content of ``manifests/CURRENT``."""

    snapshot_id: str
    manifest: str
    manifest_sha256: str
    updated_at: str

    def to_json(self) -> bytes:
        return json_bytes(asdict(self))


@dataclass(frozen=True)
class PublishResult:
    snapshot_id: str  # the snapshot that was published or rolled back to
    current: str  # what CURRENT names afterwards
    moved: bool
    message: str


def manifest_key(snapshot_id: str) -> str:
    return f"{MANIFESTS}{check_snapshot_id(snapshot_id)}.json"


def verify_objects(store: ObjectStore, manifest: Manifest, *, checksums: bool = True) -> list[str]:
    """Problems with the objects ``manifest`` names; empty when all are present and intact."""
    problems = []
    for where, ref in manifest.objects():
        try:
            if checksums and manifest.checksummed(where):
                sha, size = store.sha256(ref.uri)
            else:
                sha, size = ref.sha256, store.head(ref.uri).size
        except ObjectNotFound:
            problems.append(f"{where} {ref.uri}: missing")
            continue
        if size != ref.bytes:
            problems.append(f"{where} {ref.uri}: {size} bytes, manifest says {ref.bytes}")
        elif sha != ref.sha256:
            problems.append(
                f"{where} {ref.uri}: sha256 {sha[:12]}…, manifest says {ref.sha256[:12]}…"
            )
    return problems


def read_pointer(store: ObjectStore) -> tuple[Pointer, str] | None:
    """CURRENT's content and etag, or None before the first publish."""
    try:
        data, info = store.get_with_info(CURRENT_KEY)
    except ObjectNotFound:
        return None
    try:
        return Pointer(**json.loads(data)), info.etag
    except (json.JSONDecodeError, TypeError) as e:
        raise PublishError(f"{CURRENT_KEY} in {store.url} is unreadable: {e}") from None


def read_manifest(store: ObjectStore, snapshot_id: str) -> Manifest:
    try:
        return Manifest.from_json(store.get(manifest_key(snapshot_id)))
    except ObjectNotFound:
        raise SnapshotNotFound(f"no snapshot {snapshot_id} in {store.url}") from None


def read_current(store: ObjectStore) -> Manifest | None:
    """The live manifest, checked against the checksum CURRENT recorded for it."""
    found = read_pointer(store)
    if found is None:
        return None
    pointer, _ = found
    data = store.get(pointer.manifest)
    if hashlib.sha256(data).hexdigest() != pointer.manifest_sha256:
        raise PublishError(f"{pointer.manifest} does not match the checksum in {CURRENT_KEY}")
    return Manifest.from_json(data)


def list_snapshots(store: ObjectStore) -> list[str]:
    """Ids of every published manifest, oldest first."""
    ids = []
    for info in store.list(MANIFESTS):
        name = info.key[len(MANIFESTS) :]
        if name.endswith(".json") and "/" not in name:
            ids.append(name[: -len(".json")])
    return sorted(ids)


def publish_snapshot(
    store: ObjectStore,
    manifest: Manifest,
    *,
    force: bool = False,
    checksums: bool = True,
) -> PublishResult:
    """Verify, record and make ``manifest`` live. See the module docstring."""
    sid = manifest.snapshot_id
    problems = verify_objects(store, manifest, checksums=checksums)
    if problems:
        raise VerificationError(sid, problems)
    manifest_sha = _write_manifest(store, manifest)

    found = read_pointer(store)
    etag = found[1] if found else None
    if found:
        current = found[0].snapshot_id
        if current == sid:
            return PublishResult(sid, sid, False, f"{sid} is already current")
        if current > sid and not force:
            log.info("recorded %s; CURRENT stays at newer %s", sid, current)
            return PublishResult(
                sid,
                current,
                False,
                f"recorded {sid}; CURRENT stays at newer {current} (force to move it back)",
            )
    _swap_pointer(store, sid, manifest_sha, etag)
    log.info("published %s (was %s)", sid, found[0].snapshot_id if found else None)
    return PublishResult(sid, sid, True, f"CURRENT -> {sid}")


def rollback(store: ObjectStore, to: str | None = None, *, checksums: bool = True) -> PublishResult:
    """Point CURRENT at ``to`` (default: the live snapshot's previous one), after verifying it."""
    found = read_pointer(store)
    if found is None:
        raise SnapshotNotFound(f"nothing is published in {store.url}: no {CURRENT_KEY}")
    pointer, etag = found
    target = to or _previous(store, pointer.snapshot_id)
    manifest = read_manifest(store, target)
    problems = verify_objects(store, manifest, checksums=checksums)
    if problems:
        raise VerificationError(target, problems)
    if target == pointer.snapshot_id:
        return PublishResult(target, target, False, f"{target} is already current")
    sha = _sha256(store.get(manifest_key(target)))
    _swap_pointer(store, target, sha, etag)
    log.info("rolled back %s -> %s", pointer.snapshot_id, target)
    return PublishResult(target, target, True, f"CURRENT -> {target} (was {pointer.snapshot_id})")


def _previous(store: ObjectStore, current: str) -> str:
    previous = read_manifest(store, current).previous_snapshot_id
    if previous is not None:
        return previous
    older = [s for s in list_snapshots(store) if s < current]
    if not older:
        raise SnapshotNotFound(f"{current} has no previous snapshot to roll back to")
    return older[-1]


def _write_manifest(store: ObjectStore, manifest: Manifest) -> str:
    key, data = manifest_key(manifest.snapshot_id), manifest.to_json()
    try:
        store.put_if_absent(key, data)
    except PreconditionFailed:
        existing = store.get(key)
        if existing != data:
            raise PublishConflict(_describe_difference(key, existing, manifest)) from None
    return _sha256(data)


def _describe_difference(key: str, existing: bytes, manifest: Manifest) -> str:
    try:
        old = Manifest.from_json(existing).to_dict()
        differing = [k for k, v in manifest.to_dict().items() if old.get(k) != v]
    except ManifestError:
        differing = ["(existing manifest unreadable)"]
    return (
        f"{key} already exists with different content ({', '.join(differing)}); "
        "manifests are immutable: publish under a new snapshot id"
    )


def _swap_pointer(store: ObjectStore, sid: str, manifest_sha: str, etag: str | None) -> None:
    pointer = Pointer(sid, manifest_key(sid), manifest_sha, datetime.now(UTC).isoformat())
    try:
        store.compare_and_swap(CURRENT_KEY, pointer.to_json(), etag)
    except PreconditionFailed:
        now = read_pointer(store)
        winner = now[0].snapshot_id if now else "nothing"
        raise PublishConflict(
            f"CURRENT moved to {winner} while {sid} was being published; "
            "re-run the publish to reconsider against the new CURRENT"
        ) from None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
