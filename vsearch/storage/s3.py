"""S3-compatible object store through boto3 (AWS, MinIO, moto's server).

Credentials come from boto3's usual chain (environment, profile, instance
role); the endpoint URL points it at MinIO or moto. Big objects go up in
parallel parts (multipart upload), which S3 makes visible only on completion,
so a partial object is never seen. Conditional writes use S3's own
``If-None-Match: *`` and ``If-Match: <etag>`` on PutObject.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

from vsearch.storage.object_store import (
    HashingReader,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    PreconditionFailed,
    StoreError,
    as_stream,
    check_key,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# A conditional write is one PutObject: its body must fit in memory. Manifests and
# the CURRENT pointer are a few KiB; nothing else is written conditionally.
MAX_CONDITIONAL_BYTES = 64 << 20
_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
_PRECONDITION = {"412", "PreconditionFailed", "409", "ConditionalRequestConflict"}


class _Body(io.RawIOBase):
    """botocore's StreamingBody as a plain binary stream."""

    def __init__(self, body: Any) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self._body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._body.close()
        super().close()


class S3Store(ObjectStore):
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        max_attempts: int = 8,
        multipart_threshold: int = 64 << 20,
        client: S3Client | None = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.url = f"s3://{bucket}/{self.prefix}"
        config = Config(
            retries={"max_attempts": max_attempts, "mode": "standard"},
            s3={"addressing_style": "path"} if endpoint_url else {},
        )
        self.client: S3Client = client or boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url or None, region_name=region or None, config=config
        )
        self._transfer = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=max(8 << 20, multipart_threshold // 4),
            max_concurrency=8,
        )

    def __repr__(self) -> str:
        return f"S3Store({self.url!r})"

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _error(self, e: ClientError, key: str) -> StoreError:
        code = str(e.response.get("Error", {}).get("Code", ""))
        status = str(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        if code in _NOT_FOUND or status == "404":
            return ObjectNotFound(f"no object at {key!r} in {self.url}")
        if code in _PRECONDITION or status in ("412", "409"):
            return PreconditionFailed(f"{key}: conditional write lost ({code or status})")
        return StoreError(f"{key}: S3 error {code or status}: {e}")

    def put(
        self,
        key: str,
        data: bytes | BinaryIO,
        *,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> ObjectInfo:
        full = self._key(key)
        if if_none_match or if_match is not None:
            body = data if isinstance(data, bytes) else data.read(MAX_CONDITIONAL_BYTES + 1)
            if len(body) > MAX_CONDITIONAL_BYTES:
                raise ValueError(
                    f"{key}: conditional writes take at most {MAX_CONDITIONAL_BYTES} bytes"
                )
            extra: dict[str, str] = {"IfNoneMatch": "*"} if if_none_match else {}
            if if_match is not None:
                extra["IfMatch"] = if_match
            try:
                resp = self.client.put_object(Bucket=self.bucket, Key=full, Body=body, **extra)  # type: ignore[arg-type]
            except ClientError as e:
                err = self._error(e, key)
                if isinstance(err, ObjectNotFound):  # If-Match on a missing key
                    err = PreconditionFailed(f"{key}: does not exist (If-Match {if_match})")
                raise err from e
            sha = hashlib.sha256(body).hexdigest()
            return ObjectInfo(key=key, size=len(body), etag=resp["ETag"], sha256=sha)
        reader = HashingReader(as_stream(data))
        try:
            self.client.upload_fileobj(
                cast(BinaryIO, reader), self.bucket, full, Config=self._transfer
            )
            etag = self.client.head_object(Bucket=self.bucket, Key=full)["ETag"]
        except ClientError as e:
            raise self._error(e, key) from e
        return ObjectInfo(key=key, size=reader.size, etag=etag, sha256=reader.sha.hexdigest())

    def open_with_info(self, key: str) -> tuple[BinaryIO, ObjectInfo]:
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as e:
            raise self._error(e, key) from e
        info = ObjectInfo(key=key, size=resp["ContentLength"], etag=resp["ETag"])
        return cast(BinaryIO, io.BufferedReader(_Body(resp["Body"]), 1 << 20)), info

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError(f"bad range: offset {offset}, length {length}")
        if length == 0:
            return b""
        span = f"bytes={offset}-{offset + length - 1}"
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=self._key(key), Range=span)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") == "InvalidRange":  # past the end
                return b""
            raise self._error(e, key) from e
        with resp["Body"] as body:
            return body.read()

    def head(self, key: str) -> ObjectInfo:
        try:
            resp = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as e:
            raise self._error(e, key) from e
        return ObjectInfo(key=key, size=resp["ContentLength"], etag=resp["ETag"])

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix + prefix
        )
        try:
            for page in pages:
                for obj in page.get("Contents", []):
                    yield ObjectInfo(
                        key=obj["Key"][len(self.prefix) :], size=obj["Size"], etag=obj["ETag"]
                    )
        except ClientError as e:
            raise self._error(e, prefix) from e

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as e:
            raise self._error(e, key) from e

    def download_file(self, key: str, path: str | Path) -> ObjectInfo:
        """s3transfer's ranged, parallel, retried download into a tmp file, then rename."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.part")
        try:
            self.client.download_file(self.bucket, self._key(key), str(tmp), Config=self._transfer)
        except ClientError as e:
            raise self._error(e, key) from e
        sha, size = hashlib.sha256(), 0
        with open(tmp, "rb") as f:
            while chunk := f.read(1 << 20):
                sha.update(chunk)
                size += len(chunk)
        tmp.replace(target)
        return ObjectInfo(key=key, size=size, etag="", sha256=sha.hexdigest())
