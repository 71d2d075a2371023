"""The one-shot scripts the stack runs at start, and the .env generator, run for real."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import uuid
from typing import Any

import boto3
import pytest

from tests.deploy import stack
from tests.deploy.test_commands import load_script
from vsearch.config import Settings


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    bucket = f"deploy-{uuid.uuid4().hex[:10]}"
    env = {
        "VSEARCH_STORE": f"s3://{bucket}/prod",
        "VSEARCH_S3_ENDPOINT_URL": s3_endpoint,
        "VSEARCH_S3_REGION": "us-east-1",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def bucket_exists(env: dict[str, str]) -> bool:
    client = boto3.client("s3", endpoint_url=env["VSEARCH_S3_ENDPOINT_URL"])
    names = {b["Name"] for b in client.list_buckets()["Buckets"]}
    return env["VSEARCH_STORE"].removeprefix("s3://").split("/")[0] in names


def test_store_init_creates_the_bucket_once_and_the_store_works(s3_env: dict[str, str]) -> None:
    store_init = load_script("store_init")
    assert not bucket_exists(s3_env)
    assert store_init.main(attempts=1) == 0
    assert bucket_exists(s3_env)
    assert store_init.main(attempts=1) == 0  # idempotent: a restarted stack runs it again
    from vsearch.storage import open_store

    store = open_store(settings=Settings.load())
    store.put("manifests/probe.json", b"{}")
    assert [o.key for o in store.list("manifests/")] == ["manifests/probe.json"]


def test_store_init_fails_when_the_store_cannot_be_reached(
    s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store_init = load_script("store_init")
    monkeypatch.setenv("VSEARCH_S3_ENDPOINT_URL", "http://127.0.0.1:9")  # discard port: refused
    monkeypatch.setenv("VSEARCH_S3_MAX_ATTEMPTS", "1")
    assert store_init.main(attempts=2, delay_s=0) == 1


def compose_init_env() -> dict[str, str]:
    services = stack.compose()["services"]
    return stack.environment(services["airflow-init"])


def test_the_store_connection_is_written_from_the_stacks_own_settings() -> None:
    airflow_init = load_script("airflow_init")
    env = compose_init_env()
    conn = airflow_init.store_connection(Settings.load(env), env)
    extra = json.loads(conn["extra"])
    assert conn["conn_type"] == "aws"
    assert conn["login"] == env["AWS_ACCESS_KEY_ID"]
    assert conn["password"] == env["AWS_SECRET_ACCESS_KEY"]
    # The amazon provider's own extra names, plus the store URL the vsearch hook reads.
    assert extra == {
        "store_url": env["VSEARCH_STORE"],
        "endpoint_url": env["VSEARCH_S3_ENDPOINT_URL"],
        "region_name": env["VSEARCH_S3_REGION"],
    }


def test_the_connection_leaves_keys_to_the_instance_role_when_none_are_given() -> None:
    airflow_init = load_script("airflow_init")
    settings = Settings.load({"VSEARCH_STORE": "s3://bucket/p"})
    conn = airflow_init.store_connection(settings, {})
    assert "login" not in conn and "password" not in conn
    assert json.loads(conn["extra"]) == {"store_url": "s3://bucket/p"}


def test_airflow_init_refuses_to_run_without_an_admin_password() -> None:
    airflow_init = load_script("airflow_init")
    env = {**compose_init_env(), "AIRFLOW_ADMIN_PASSWORD": ""}
    with pytest.raises(SystemExit, match="AIRFLOW_ADMIN_PASSWORD"):
        airflow_init.steps(env, "/tmp/c.json")
    with pytest.raises(SystemExit, match="AIRFLOW_GPU_POOL_SLOTS"):
        airflow_init.steps({**compose_init_env(), "AIRFLOW_GPU_POOL_SLOTS": "two"}, "/tmp/c")


def test_airflow_init_steps_run_in_order_and_stop_at_the_first_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    airflow_init = load_script("airflow_init")
    for key, value in compose_init_env().items():
        monkeypatch.setenv(key, value)
    ran: list[list[str]] = []
    files: list[Any] = []

    def fake_run(argv: list[str], check: bool) -> subprocess.CompletedProcess[str]:
        ran.append(argv)
        if argv[1:3] == ["connections", "import"]:
            with open(argv[3]) as f:
                files.append(json.load(f))
            return subprocess.CompletedProcess(argv, 1)
        return subprocess.CompletedProcess(argv, 0)

    monkeypatch.setattr(subprocess, "run", fake_run)  # the steps run the airflow CLI
    assert airflow_init.main() == 1
    assert [a[1:3] for a in ran] == [
        ["db", "migrate"],
        ["users", "create"],
        ["connections", "import"],
    ]
    assert list(files[0]) == [airflow_init.DEFAULT_CONN_ID]


def test_make_env_regenerates_every_secret_and_keeps_the_rest() -> None:
    script = stack.DOCKER / "scripts" / "make_env.py"
    outputs = [
        subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True)
        for _ in range(2)
    ]
    example = stack.parse_env_file()
    make_env = load_script("make_env")
    first, second = (stack.parse_env_file_text(o.stdout) for o in outputs)
    assert set(first) == set(example)
    for key, value in example.items():
        if key in make_env.SECRETS:
            assert first[key] != value and first[key] != second[key], key
            assert first[key] and "$" not in first[key], key
        else:
            assert first[key] == value, key
    from cryptography.fernet import Fernet

    Fernet(first["AIRFLOW_FERNET_KEY"].encode())  # a valid key, or this raises
    assert len(base64.urlsafe_b64decode(first["AIRFLOW_FERNET_KEY"])) == 32
    # And the stack resolves with it.
    stack.compose(first)


def test_the_example_fernet_key_is_valid() -> None:
    from cryptography.fernet import Fernet

    Fernet(stack.parse_env_file()["AIRFLOW_FERNET_KEY"].encode())
