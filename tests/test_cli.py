"""The console script, run as a real subprocess: output and exit codes scripts rely on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.fixtures.snapshots import build_synthetic_snapshot
from vsearch.storage import LocalStore

VSEARCH = str(Path(sys.executable).with_name("vsearch"))


def run(
    *args: str, data_dir: Path, stdin: bytes | None = None, **env: str
) -> subprocess.CompletedProcess[bytes]:
    environ = {**os.environ, "VSEARCH_DATA_DIR": str(data_dir), **env}
    environ.pop("VSEARCH_STORE", None)
    return subprocess.run(
        [VSEARCH, *args], input=stdin, capture_output=True, env=environ, timeout=120
    )


def test_help_lists_the_commands(tmp_path: Path) -> None:
    out = run("--help", data_dir=tmp_path)
    assert out.returncode == 0
    for command in ("store", "manifest", "publish", "rollback", "embed", "build", "serve"):
        assert command in out.stdout.decode()


def test_publish_show_list_rollback(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    m1 = build_synthetic_snapshot(store, datetime(2026, 1, 1, tzinfo=UTC), n=100)
    m2 = build_synthetic_snapshot(
        store, datetime(2026, 1, 2, tzinfo=UTC), n=100, seed=1, previous=m1.snapshot_id
    )
    (tmp_path / "m1.json").write_bytes(m1.to_json())
    assert run("publish", str(tmp_path / "m1.json"), data_dir=tmp_path).returncode == 0
    out = run("publish", "-", data_dir=tmp_path, stdin=m2.to_json())
    assert out.returncode == 0 and b"CURRENT -> 20260102T000000Z" in out.stdout

    shown = run("manifest", "show", data_dir=tmp_path)
    assert json.loads(shown.stdout)["snapshot_id"] == m2.snapshot_id
    listed = run("manifest", "list", data_dir=tmp_path).stdout.decode().splitlines()
    assert listed[0].startswith("  20260101T000000Z") and listed[1].startswith("* 20260102T000000Z")

    assert run("rollback", data_dir=tmp_path).returncode == 0
    shown = run("manifest", "show", "current", data_dir=tmp_path)
    assert json.loads(shown.stdout)["snapshot_id"] == m1.snapshot_id

    keys = run("store", "ls", "manifests/", data_dir=tmp_path).stdout.decode().split()
    assert keys == [
        "manifests/20260101T000000Z.json",
        "manifests/20260102T000000Z.json",
        "manifests/CURRENT",
    ]
    cat = run("store", "cat", "manifests/CURRENT", data_dir=tmp_path)
    assert json.loads(cat.stdout)["snapshot_id"] == m1.snapshot_id


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("manifest", "show"), 3, "nothing is published"),
        (("manifest", "show", "20990101T000000Z"), 3, "no snapshot"),
        (("store", "cat", "nope"), 3, "no object"),
        (("store", "cat", "../etc/passwd"), 5, "invalid object key"),
        (("rollback",), 3, "nothing is published"),
        (("publish", "-"), 5, "not valid JSON"),
        (("frobnicate",), 2, "No such command"),
    ],
)
def test_errors_have_clear_messages_and_exit_codes(
    tmp_path: Path, args: tuple[str, ...], code: int, message: str
) -> None:
    out = run(*args, data_dir=tmp_path, stdin=b"{")
    assert out.returncode == code, out.stderr
    assert message in out.stderr.decode()
    assert b"Traceback" not in out.stderr


def test_refused_publish_exits_5_and_conflict_exits_4(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    m = build_synthetic_snapshot(store, datetime(2026, 1, 1, tzinfo=UTC), n=100)
    store.delete(m.shards[0].uri)
    out = run("publish", "-", data_dir=tmp_path, stdin=m.to_json())
    assert out.returncode == 5 and b"missing" in out.stderr

    m = build_synthetic_snapshot(store, datetime(2026, 1, 1, tzinfo=UTC), n=100)
    assert run("publish", "-", data_dir=tmp_path, stdin=m.to_json()).returncode == 0
    changed = json.loads(m.to_json())
    changed["delta_watermark"] = "9-0"
    out = run("publish", "-", data_dir=tmp_path, stdin=json.dumps(changed).encode())
    assert out.returncode == 4 and b"immutable" in out.stderr


def test_bad_setting_exits_5(tmp_path: Path) -> None:
    out = run("store", "ls", data_dir=tmp_path, VSEARCH_S3_MAX_ATTEMPTS="lots")
    assert out.returncode == 5 and b"VSEARCH_S3_MAX_ATTEMPTS" in out.stderr
