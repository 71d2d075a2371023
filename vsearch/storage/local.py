"""A local directory as an object store: the embedded default.

Writes stream into ``.vsearch-tmp/`` under the root (same filesystem), are
fsynced, then renamed into place with ``os.replace`` — so a reader never sees a
partial object, even across a crash. Conditional writes hold a per-key
``flock`` while they check and rename; every write takes the same lock, so a
compare-and-swap cannot interleave with a plain put.

Etags are ``inode-mtime_ns-size``. Under the lock each write of a key gets an
mtime strictly greater than the one it replaces, so an etag never repeats for a
key (no ABA) even when the filesystem clock is coarse.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from vsearch.storage.object_store import (
    CHUNK,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    PreconditionFailed,
    as_stream,
    check_key,
)

_RESERVED = ".vsearch-"


def _etag(st: os.stat_result) -> str:
    return f"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"


class LocalStore(ObjectStore):
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.url = f"file://{self.root}"
        self._tmp = self.root / f"{_RESERVED}tmp"
        self._locks = self.root / f"{_RESERVED}locks"
        for d in (self.root, self._tmp, self._locks):
            d.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    @contextlib.contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        name = hashlib.sha1(key.encode()).hexdigest()
        with open(self._locks / f"{name}.lock", "a+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def put(
        self,
        key: str,
        data: bytes | BinaryIO,
        *,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> ObjectInfo:
        path = self._path(key)
        tmp = self._tmp / uuid.uuid4().hex
        sha, size = hashlib.sha256(), 0
        src = as_stream(data)
        try:
            with open(tmp, "wb") as dst:
                while chunk := src.read(CHUNK):
                    sha.update(chunk)
                    size += len(chunk)
                    dst.write(chunk)
                dst.flush()
                os.fsync(dst.fileno())
            with self._locked(key):
                try:
                    old: os.stat_result | None = os.stat(path)
                except FileNotFoundError:
                    old = None
                if if_none_match and old is not None:
                    raise PreconditionFailed(f"{key}: already exists")
                if if_match is not None and (old is None or _etag(old) != if_match):
                    raise PreconditionFailed(f"{key}: changed since etag {if_match}")
                if old is not None:
                    now = os.stat(tmp).st_mtime_ns
                    mtime = max(now, old.st_mtime_ns + 1)
                    os.utime(tmp, ns=(mtime, mtime))
                path.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, path)
                _fsync_dir(path.parent)
                st = os.stat(path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return ObjectInfo(key=key, size=size, etag=_etag(st), sha256=sha.hexdigest())

    def open_with_info(self, key: str) -> tuple[BinaryIO, ObjectInfo]:
        path = self._path(key)
        try:
            f = open(path, "rb")  # noqa: SIM115 - the caller closes it
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(f"no object at {key!r} in {self.url}") from None
        st = os.fstat(f.fileno())
        return f, ObjectInfo(key=key, size=st.st_size, etag=_etag(st))

    def head(self, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(f"no object at {key!r} in {self.url}") from None
        if not path.is_file():
            raise ObjectNotFound(f"no object at {key!r} in {self.url}")
        return ObjectInfo(key=key, size=st.st_size, etag=_etag(st))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        base = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        keys: list[str] = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if not d.startswith(_RESERVED)]
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                key = name if rel == "." else f"{rel}/{name}"
                if key.startswith(prefix) and not name.startswith(_RESERVED):
                    keys.append(key)
        for key in sorted(keys):
            with contextlib.suppress(ObjectNotFound):  # deleted while listing
                yield self.head(key)

    def delete(self, key: str) -> None:
        path = self._path(key)
        with self._locked(key):
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except IsADirectoryError:
                raise ObjectNotFound(f"no object at {key!r} in {self.url}") from None


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:  # pragma: no cover - platforms without directory fds
        if e.errno in (errno.EACCES, errno.EISDIR):
            return
        raise
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
