from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.photos import PhotoSnapshot, build_photo_snapshot
from tests.servers import apply_env, aws_test_credentials, moto_server, redis_server
from vsearch.storage import LocalStore, ObjectStore
from vsearch.storage.s3 import S3Store

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    apply_env(aws_test_credentials())
    with moto_server(tmp_path_factory.mktemp("moto")) as url:
        yield url


@pytest.fixture(scope="session")
def redis_addr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    with redis_server(tmp_path_factory.mktemp("redis")) as addr:
        yield addr


def make_s3_store(endpoint: str, **kwargs: object) -> S3Store:
    store = S3Store(f"test-{uuid.uuid4().hex[:12]}", "vs", endpoint_url=endpoint, **kwargs)  # type: ignore[arg-type]
    store.client.create_bucket(Bucket=store.bucket)
    return store


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    """The same suite runs against a local directory and S3 over HTTP (moto server)."""
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    return make_s3_store(request.getfixturevalue("s3_endpoint"))


@pytest.fixture(scope="session")
def photo_snapshot(tmp_path_factory: pytest.TempPathFactory) -> PhotoSnapshot:
    """256 COCO photos built into a published snapshot by the real stages (read-only)."""
    return build_photo_snapshot(tmp_path_factory.mktemp("photos"))
