"""The README's "Using it" block, run verbatim in bash, on a data directory laid out as
``make demo`` leaves it (sample pictures indexed into ./demo-data). ``vsearch serve``
runs in the background as a user would in a second terminal; every other line must
exit 0, and the search must answer with hits. One liberty: the service's port
(8000 in the README) is a free one, so that the test cannot meet another server."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from vsearch.cli.service_process import free_port, http_json
from vsearch.sources.samples import write_sample_images

ROOT = Path(__file__).resolve().parents[1]


def readme_block(heading: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split(f"\n## {heading}\n", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None, f"no bash block under {heading}"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_using_it_works_verbatim(tmp_path: Path) -> None:
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parents[1])
    env = {k: v for k, v in os.environ.items() if not k.startswith("VSEARCH_")}
    write_sample_images(tmp_path / "demo-data" / "images", 48)
    subprocess.run([str(Path(sys.executable).with_name("vsearch")), "--data-dir", "demo-data",
                    "index", "demo-data/images"], cwd=tmp_path, env=env, check=True,
                   capture_output=True, timeout=600)  # fmt: skip

    port = free_port()
    env["VSEARCH_SERVICE_BIND"] = f"127.0.0.1:{port}"
    lines = [line.replace(":8000", f":{port}") for line in readme_block("Using it")]
    serve = next(i for i, line in enumerate(lines) if line.startswith("vsearch serve"))
    setup, after = lines[:serve], lines[serve + 1 :]
    # The lines before `vsearch serve` set the shell up (venv, data dir) and inspect; each
    # later line runs after them, as in the terminal where they were typed.
    script = "set -euo pipefail\n{\n" + "\n".join(setup) + "\n} >/dev/null\n"
    first = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=120)  # fmt: skip
    assert first.returncode == 0, first.stderr[-2000:]
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 - closed below
    server = subprocess.Popen(["bash", "-c", script + lines[serve]], cwd=tmp_path, env=env,
                              stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if http_json("GET", f"http://127.0.0.1:{port}/readyz", timeout=2)[0] == 200:
                    break
            except OSError:
                time.sleep(0.5)
        else:
            raise AssertionError("vsearch serve did not come up: " + log.name)
        for line in after:
            out = subprocess.run(["bash", "-c", script + line], cwd=tmp_path, env=env,
                                 capture_output=True, text=True, timeout=120)  # fmt: skip
            assert out.returncode == 0, (line, out.stdout[-2000:], out.stderr[-2000:])
            if line.startswith("curl"):
                hits = json.loads(out.stdout)["hits"]
                assert hits and hits[0]["metadata"]["key"] == "red-disc/00000.jpg", hits
                # The search page and the hits' thumbnails, made by `vsearch index`.
                base = f"http://127.0.0.1:{port}"
                for path, kind in (
                    ("/", "text/html"),
                    ("/static/app.js", "text/javascript"),
                    (f"/v1/items/{hits[0]['id']}/thumbnail", "image/webp"),
                ):
                    with urllib.request.urlopen(base + path, timeout=10) as resp:
                        assert resp.status == 200 and resp.headers["Content-Type"].startswith(kind)
    finally:
        server.terminate()
        server.wait(30)
        log.close()
