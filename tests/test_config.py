from __future__ import annotations

import pytest

from vsearch.config import ConfigError, Settings
from vsearch.storage import LocalStore, open_store
from vsearch.storage.s3 import S3Store


def test_embedded_defaults_need_no_server(tmp_path: pytest.TempPathFactory) -> None:
    s = Settings.load(environ={}, data_dir=str(tmp_path))
    assert s.store == f"{tmp_path}/store"
    assert s.delta_log == f"sqlite:///{tmp_path}/delta.sqlite3"
    assert s.metadata_db == f"sqlite:///{tmp_path}/metadata.sqlite3"
    assert isinstance(open_store(settings=s), LocalStore)


def test_keyword_arguments_beat_environment() -> None:
    env = {"VSEARCH_STORE": "s3://from-env/p", "VSEARCH_S3_MAX_ATTEMPTS": "3"}
    s = Settings.load(environ=env)
    assert (s.store, s.s3_max_attempts) == ("s3://from-env/p", 3)
    assert Settings.load(environ=env, store="/tmp/kw").store == "/tmp/kw"


def test_s3_url_opens_an_s3_store_with_the_endpoint() -> None:
    s = Settings.load(
        environ={"VSEARCH_S3_ENDPOINT_URL": "http://127.0.0.1:9"}, store="s3://bucket/some/prefix"
    )
    store = open_store(settings=s)
    assert isinstance(store, S3Store)
    assert (store.bucket, store.prefix) == ("bucket", "some/prefix/")
    assert store.client.meta.endpoint_url == "http://127.0.0.1:9"


def test_bad_values_name_the_setting() -> None:
    with pytest.raises(ConfigError, match="VSEARCH_S3_MAX_ATTEMPTS"):
        Settings.load(environ={"VSEARCH_S3_MAX_ATTEMPTS": "many"})
    with pytest.raises(ConfigError, match=r"unknown setting.*colour"):
        Settings.load(environ={}, colour="blue")


def test_unsupported_store_url() -> None:
    with pytest.raises(Exception, match="unsupported store URL"):
        open_store("gs://bucket", Settings.load(environ={}))
