"""Start the service on a published store and exercise it: the end of ``make demo``.

``demo_service(settings)`` starts the service — in-process (Flask test client)
or as a real gunicorn on a free loopback port — runs a query (an image when
one is given and the service has an encoder, else a vector), an upsert, a
search that finds the new item, a delete and a search that no longer does;
it reports each step through ``say`` and returns what came back.

``gunicorn_service(env)`` is the launcher the hot-swap test and the benchmarks
use too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from vsearch.config import Settings

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_json(
    method: str,
    url: str,
    body: Any = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 30,
) -> tuple[int, Any]:
    """(status, parsed JSON) of one request; HTTP errors are answers, not exceptions."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url,
        data=data,
        method=method,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


@contextlib.contextmanager
def gunicorn_service(
    env: Mapping[str, str],
    *,
    log_path: Path | None = None,
    ready_timeout: float = 120,
    app: str = "service.app:create_app()",
) -> Iterator[str]:
    """A gunicorn serving ``app`` (the service) on 127.0.0.1; yields its base URL.

    ``env`` holds VSEARCH_* settings; the bind address is chosen here. Waits for
    /readyz, stops the server (SIGTERM, then SIGKILL) on exit.
    """
    port = free_port()
    full_env = {**os.environ, **env, "VSEARCH_SERVICE_BIND": f"127.0.0.1:{port}"}
    exe = Path(sys.executable).with_name("gunicorn")
    cmd = [
        str(exe),
        "-c",
        "python:service.gunicorn_conf",
        "--access-logfile",
        "/dev/null",
        app,
    ]
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {proc.returncode} (log: {log_path})")
            with contextlib.suppress(OSError):
                if http_json("GET", f"{base}/readyz", timeout=2)[0] == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the service was not ready within {ready_timeout}s (log: {log_path})"
                )
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log_path:
            out.close()  # type: ignore[union-attr]


class _InProcess:
    """The same calls as over HTTP, through the Flask test client."""

    def __init__(self, settings: Settings) -> None:
        from service.app import create_app

        self.app = create_app(
            {"SETTINGS": settings, "LOAD_ON_START": "sync", "WATCH_INTERVAL_S": 0}
        )
        self.client = self.app.test_client()

    def __call__(
        self, method: str, path: str, body: Any = None, headers: Mapping[str, str] | None = None
    ) -> tuple[int, Any]:
        r = self.client.open(path, method=method, json=body, headers=dict(headers or {}))
        return r.status_code, r.get_json(silent=True)


def demo_service(
    settings: Settings | None = None,
    *,
    image: bytes | None = None,
    use_gunicorn: bool = False,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Start the service on ``settings.store`` and run the demo steps; see the module docstring."""
    settings = settings or Settings.load()
    if not settings.api_key:
        settings = dataclasses.replace(settings, api_key=secrets.token_hex(16))
    key = {"X-API-Key": settings.api_key}
    results: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        if use_gunicorn:
            env = {
                f"VSEARCH_{f.name.upper()}": str(getattr(settings, f.name))
                for f in dataclasses.fields(settings)
            }
            base = stack.enter_context(gunicorn_service(env))

            def call(
                method: str, path: str, body: Any = None, headers: Mapping[str, str] | None = None
            ) -> tuple[int, Any]:
                return http_json(method, base + path, body, headers)

            say(f"service: gunicorn at {base}")
        else:
            local = _InProcess(settings)
            stack.callback(lambda: local.app.extensions["vsearch"].close())
            call = local
            say("service: in-process (Flask test client)")
        status, ready = call("GET", "/readyz")
        if status != 200:
            raise RuntimeError(f"the service is not ready: {ready}")
        dim = int(call("GET", "/v1/manifest")[1]["encoder"]["dim"])
        say(f"ready: serving {ready['snapshot_id']} (dim {dim})")
        results["query"] = _first_query(call, image, dim, say)
        x = np.random.default_rng(7).standard_normal(dim).astype("float32")
        new_id = 2**62 + 12345
        status, body = call(
            "PUT",
            "/v1/items",
            {
                "items": [
                    {
                        "id": new_id,
                        "vector": x.tolist(),
                        "metadata": {"caption": "added by the demo"},
                    }
                ]
            },
            key,
        )
        results["upsert"] = body
        say(f"upsert {new_id}: HTTP {status}, log entry {body.get('last_id') if body else None}")
        status, body = call("POST", "/v1/search", {"vector": x.tolist(), "k": 3})
        results["after_upsert"] = body
        top = body["hits"][0] if status == 200 and body["hits"] else None
        say(f"search for it: top hit {top}")
        status, body = call("POST", "/v1/items/delete", {"ids": [new_id]}, key)
        results["delete"] = body
        say(f"delete {new_id}: HTTP {status}")
        status, body = call("POST", "/v1/search", {"vector": x.tolist(), "k": 3})
        results["after_delete"] = body
        gone = all(h["id"] != new_id for h in body["hits"])
        top_ids = [h["id"] for h in body["hits"]]
        say(f"search again: {'gone' if gone else 'STILL THERE'} (top {top_ids})")
        results["found_then_gone"] = bool(
            top and top["id"] == new_id and top["source"] == "delta" and gone
        )
    return results


def _first_query(
    call: Callable[..., tuple[int, Any]], image: bytes | None, dim: int, say: Callable[[str], None]
) -> Any:
    if image is not None:
        import base64

        payload = {"image": base64.b64encode(image).decode(), "k": 5}
        status, body = call("POST", "/v1/search", payload)
        if status == 200:
            say(f"image query: {_brief(body['hits'])} in {body['took_ms']} ms")
            return body
        reason = body["error"]["message"] if body and "error" in body else status
        say(f"image query not possible here ({reason}); using a vector")
    q = np.random.default_rng(3).standard_normal(dim).astype("float32")
    status, body = call("POST", "/v1/search", {"vector": q.tolist(), "k": 5})
    if status != 200:
        raise RuntimeError(f"vector query failed: HTTP {status} {body}")
    say(f"vector query: hits {_brief(body['hits'])} in {body['took_ms']} ms")
    return body


def _brief(hits: list[dict[str, Any]]) -> list[tuple[Any, float]]:
    """(item key, or id when the item has no key, and score) of each hit."""
    return [((h.get("metadata") or {}).get("key", h["id"]), round(h["score"], 3)) for h in hits]


def main(argv: list[str] | None = None) -> int:
    """``python -m service.demo_client [--gunicorn] [--image PATH]``; settings from VSEARCH_*."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--gunicorn", action="store_true", help="serve with a real gunicorn")
    parser.add_argument("--image", type=Path, help="an image file for the first query")
    args = parser.parse_args(argv)
    image = args.image.read_bytes() if args.image else None
    results = demo_service(image=image, use_gunicorn=args.gunicorn)
    print("service demo:", "OK" if results["found_then_gone"] else "FAILED")
    return 0 if results["found_then_gone"] else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
