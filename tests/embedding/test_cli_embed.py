"""``vsearch fetch`` and ``vsearch embed`` end to end, through the real console entry point."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from tests.embedding.image_server import image_server
from vsearch.cli import main
from vsearch.embedding.partitions import list_partitions, read_partition
from vsearch.sources.samples import write_sample_images
from vsearch.storage import LocalStore

SNAP = "20260102T000000Z"


def test_embed_a_directory_then_rerun(tmp_path: Path, tiny_clip_dir: Path) -> None:
    write_sample_images(tmp_path / "photos", 10)
    store_dir = tmp_path / "store"
    args = ["--store", str(store_dir), "embed", str(tmp_path / "photos"), "--snapshot", SNAP,
            "--encoder", f"clip:{tiny_clip_dir}", "--batch-size", "4"]  # fmt: skip
    env = {"VSEARCH_PARTITION_SIZE": "6", "VSEARCH_DATA_DIR": str(tmp_path)}
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 0, result.output
    assert "part-00000: 6 embedded, 0 failed" in result.output
    assert "2 partition(s): 10 embedded, 0 failed" in result.output
    store = LocalStore(store_dir)
    assert list_partitions(store, SNAP) == [0, 1]
    etags = {i.key: i.etag for i in store.list("embeddings/")}
    again = CliRunner().invoke(main, args, env=env)
    assert again.exit_code == 0
    assert "part-00001: 4 embedded, 0 failed (already done)" in again.output
    assert {i.key: i.etag for i in store.list("embeddings/")} == etags


def test_fetch_then_embed_a_url_list(tmp_path: Path, tiny_clip_dir: Path) -> None:
    with image_server() as (base, _):
        with open(tmp_path / "list.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["url", "caption"])
            writer.writerows([[f"{base}/ok/{i}.jpg", f"image {i}"] for i in range(4)])
            writer.writerow([f"{base}/missing.jpg", "gone"])
        env = {"VSEARCH_DATA_DIR": str(tmp_path), "VSEARCH_FETCH_RETRIES": "0"}
        store_arg = ["--store", str(tmp_path / "store")]
        fetched = CliRunner().invoke(
            main, [*store_arg, "fetch", str(tmp_path / "list.csv")], env=env
        )
        assert fetched.exit_code == 0, fetched.output
        assert "images/list/00000.tar: 4 ok, 1 failed (http-404: 1)" in fetched.output
    # The server is gone: embedding reads the fetched shard, it does not download again.
    embedded = CliRunner().invoke(
        main,
        [*store_arg, "embed", str(tmp_path / "list.csv"), "--snapshot", SNAP,
         "--encoder", f"clip:{tiny_clip_dir}"],
        env=env,
    )  # fmt: skip
    assert embedded.exit_code == 0, embedded.output
    assert "part-00000: 4 embedded, 1 failed (fetch:http-404: 1)" in embedded.output
    _, _, meta = read_partition(LocalStore(tmp_path / "store"), SNAP, 0)
    assert [m["caption"] for m in meta] == [f"image {i}" for i in range(4)]


def test_errors_are_one_line_and_an_exit_code(tmp_path: Path) -> None:
    args = ["--store", str(tmp_path / "s"), "embed", str(tmp_path / "nope"), "--snapshot", SNAP]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 5 and "does the path exist" in result.output
    bad_snapshot = CliRunner().invoke(main, [*args[:3], str(tmp_path), "--snapshot", "yesterday"])
    assert bad_snapshot.exit_code == 5 and "invalid snapshot id" in bad_snapshot.output


def test_cli_and_stage_modules_import_without_torch() -> None:
    code = (
        "import sys, vsearch.cli.embed_commands, vsearch.embedding.worker, vsearch.sources, "
        "vsearch.encoders, vsearch.imaging; "
        "print(sorted(m for m in ('torch', 'transformers', 'faiss') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
