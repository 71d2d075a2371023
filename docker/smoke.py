"""The scenario of docker/smoke.sh, against a stack it has brought up: each phase timed,
a summary table at the end, exit 1 if any check failed.

Runs on the host with the project's virtualenv (boto3 for the upload); talks to the
stack only through its published ports and ``docker`` (exec into one replica, kill one).
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tarfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CIFAR = ROOT.parent / "shared" / "data" / "cifar10-test-000.tar"
DAG = "vsearch_build_index"
RUN_DATE = "2026-03-01T00:00:00Z"
SNAPSHOT = "20260301T000000Z"
# 32-px photos: 96 px is plenty (as tests/dags/test_local_airflow.py); 5,000 x 1280-d in
# 4 MiB makes the default spec OPQ+IVF+PQ with re-ranking, the shape large collections get.
CONF = {"nshards": 2, "memory_floor_mb": 4, "encoder": "efficientnet-lite0?image_size=96"}

rows: list[tuple[str, float, str, bool]] = []


def phase(name: str) -> Callable[[Callable[[], tuple[str, bool]]], None]:
    """Run the decorated function now as a timed phase; record (name, s, result, ok)."""

    def run(fn: Callable[[], tuple[str, bool]]) -> None:
        print(f"== {name}", flush=True)
        started = time.monotonic()
        try:
            result, ok = fn()
        except Exception as e:  # a phase that breaks is a failed row, the rest still run
            result, ok = f"{type(e).__name__}: {e}", False
        rows.append((name, time.monotonic() - started, result, ok))
        print(f"   {'ok' if ok else 'FAILED'} in {rows[-1][1]:.0f} s: {result}", flush=True)

    return run


def http(
    method: str,
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
    timeout: float = 30,
) -> tuple[int, Any, Any]:  # headers: case-insensitive (HAProxy sends them lowercase)
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            text = resp.read()
            return resp.status, json.loads(text or b"null"), resp.headers
    except urllib.error.HTTPError as e:
        text = e.read()
        try:
            return e.code, json.loads(text or b"null"), e.headers
        except ValueError:
            return e.code, text.decode(errors="replace"), e.headers


def docker(*args: str, check: bool = True) -> str:
    out = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=300)
    if check and out.returncode:
        raise RuntimeError(f"docker {' '.join(args)}: {out.stderr.strip()[-500:]}")
    return out.stdout.strip()


def in_replica(container: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One request to a replica's own port, from inside its container (python urllib)."""
    script = (
        "import json,sys,urllib.request as u\n"
        "m,p,b,k=sys.argv[1:5]\n"
        "r=u.Request('http://127.0.0.1:8000'+p,data=(b.encode() if b else None),method=m,"
        "headers={'Content-Type':'application/json','X-API-Key':k})\n"
        "try:\n  x=u.urlopen(r,timeout=30); print(x.status); print(x.read().decode())\n"
        "except u.HTTPError as e: print(e.code); print(e.read().decode())\n"
    )
    out = docker(
        "exec",
        container,
        "python",
        "-c",
        script,
        method,
        path,
        "" if body is None else json.dumps(body),
        API_KEY,
    )
    status, _, text = out.partition("\n")
    return int(status), json.loads(text or "null")


def multipart(photo: bytes) -> tuple[bytes, str]:
    boundary = "vsearch-smoke-boundary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
        f'filename="q.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
    ).encode()
    return body + photo + f"\r\n--{boundary}--\r\n".encode(), boundary


def cifar_subset(n: int) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The first ``n`` CIFAR-10 test samples as a webdataset tar, and their (key, jpeg)."""
    out, photos, keys = io.BytesIO(), [], set()
    with tarfile.open(CIFAR) as src, tarfile.open(fileobj=out, mode="w") as dst:
        for member in src:
            key = member.name.rsplit(".", 1)[0]
            if key not in keys and len(keys) == n:
                break
            keys.add(key)
            data = src.extractfile(member).read()  # type: ignore[union-attr]
            dst.addfile(member, io.BytesIO(data))
            if member.name.endswith(".jpg"):
                photos.append((key, data))
    return out.getvalue(), photos


def main() -> int:
    global API_KEY
    parser = argparse.ArgumentParser()
    parser.add_argument("--env-file", type=Path, required=True)
    parser.add_argument("--project", required=True)
    parser.add_argument("--images", type=int, default=5000)
    args = parser.parse_args()
    env = dict(
        line.split("=", 1)
        for line in args.env_file.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    API_KEY = env["VSEARCH_API_KEY"]
    airflow = f"http://127.0.0.1:{env['AIRFLOW_PORT']}"
    proxy = f"http://127.0.0.1:{env['QUERY_PORT']}"
    replicas = docker(
        "ps",
        "-q",
        "--filter",
        f"label=com.docker.compose.project={args.project}",
        "--filter",
        "label=com.docker.compose.service=query",
    ).split()
    workers = docker(
        "ps",
        "-q",
        "--filter",
        f"label=com.docker.compose.project={args.project}",
        "--filter",
        "label=com.docker.compose.service=airflow-worker",
    ).split()
    redis = docker(
        "ps",
        "-q",
        "--filter",
        f"label=com.docker.compose.project={args.project}",
        "--filter",
        "label=com.docker.compose.service=redis",
    )
    tar_bytes, photos = cifar_subset(args.images)
    token: dict[str, str] = {}

    def api(method: str, path: str, body: Any = None) -> tuple[int, Any]:
        status, answer, _ = http(
            method, airflow + path, body, {"Authorization": f"Bearer {token.get('t', '')}"}
        )
        return status, answer

    def wait_ready(container: str) -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if in_replica(container, "GET", "/readyz")[0] == 200:
                    return
            except RuntimeError:
                pass
            time.sleep(2)
        raise RuntimeError(f"{container[:12]} not ready")

    @phase(f"upload {len(photos)} CIFAR-10 images to the store (S3 API, as one tar shard)")
    def _upload() -> tuple[str, bool]:
        import boto3

        s3 = boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{env['S3_PORT']}",
            aws_access_key_id=env["MINIO_ROOT_USER"],
            aws_secret_access_key=env["MINIO_ROOT_PASSWORD"],
            region_name="us-east-1",
        )
        key = f"{env.get('STORE_PREFIX', 'prod')}/images/cifar/00000.tar"
        s3.put_object(Bucket=env.get("STORE_BUCKET", "vsearch"), Key=key, Body=tar_bytes)
        return f"s3://{env.get('STORE_BUCKET', 'vsearch')}/{key}, {len(tar_bytes) >> 20} MiB", True

    def run_dag(
        conf: dict[str, Any],
        run: Callable[[], tuple[int, Any]],
        wanted: Callable[[list[dict[str, Any]]], list[dict[str, Any]]],
        count: int,
        timeout: float,
    ) -> tuple[list[dict[str, Any]], str]:
        status, made = run()
        if status not in (200, 201):
            raise RuntimeError(f"{status} {made}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            _, body = api("GET", f"/api/v2/dags/{DAG}/dagRuns?limit=50")
            found = wanted(body["dag_runs"])
            failed = [r for r in found if r["state"] == "failed"]
            if failed:
                return found, f"failed: {[r['dag_run_id'] for r in failed]}"
            if len(found) == count and all(r["state"] == "success" for r in found):
                return found, "success"
            time.sleep(5)
        return wanted(body["dag_runs"]), "timed out"

    @phase(f"vsearch_build_index through the REST API, CeleryExecutor ({args.images} images)")
    def _dag() -> tuple[str, bool]:
        status, body, _ = http(
            "POST",
            f"{airflow}/auth/token",
            {
                "username": env.get("AIRFLOW_ADMIN_USERNAME", "admin"),
                "password": env["AIRFLOW_ADMIN_PASSWORD"],
            },
        )
        if status not in (200, 201):
            raise RuntimeError(f"login: {status} {body}")
        token["t"] = body["access_token"]
        status, body = api("PATCH", f"/api/v2/dags/{DAG}", {"is_paused": False})
        if status != 200:
            raise RuntimeError(f"unpause: {status} {body}")
        conf = {**CONF, "sources": ["store:images/cifar/"]}
        runs, state = run_dag(
            conf,
            lambda: api(
                "POST", f"/api/v2/dags/{DAG}/dagRuns", {"logical_date": RUN_DATE, "conf": conf}
            ),
            lambda rs: [r for r in rs if r["logical_date"].startswith(RUN_DATE[:19])],
            1,
            1800,
        )
        hosts = set()
        if runs:
            _, tis = api(
                "GET", f"/api/v2/dags/{DAG}/dagRuns/{runs[0]['dag_run_id']}/taskInstances?limit=100"
            )
            hosts = {t.get("hostname") for t in tis["task_instances"] if t.get("hostname")}
        on_workers = bool(hosts) and all(
            any(w.startswith(h) or h.startswith(w[:12]) for w in workers) for h in hosts
        )
        return (
            f"run {state}; tasks ran on {sorted(hosts)} (celery worker containers: "
            f"{[w[:12] for w in workers]})",
            state == "success" and on_workers,
        )

    @phase("both replicas serve the published snapshot; searches through HAProxy")
    def _serve() -> tuple[str, bool]:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            ready = [in_replica(c, "GET", "/readyz") for c in replicas]
            if all(s == 200 and b.get("snapshot_id") == SNAPSHOT for s, b in ready):
                break
            time.sleep(3)
        else:
            raise RuntimeError(f"replicas not serving {SNAPSHOT}: {ready}")

        def search(sample: tuple[str, bytes]) -> tuple[str | None, bool]:
            key, photo = sample
            body, boundary = multipart(photo)
            status, found, headers = http(
                "POST",
                f"{proxy}/v1/search",
                raw=body,
                headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
            )
            if status != 200:
                return None, False
            # Keys of a tar shard's items: {shard name}/{member key} (docs/embedding.md).
            return headers.get("X-Vsearch-Replica"), found["hits"][0]["metadata"]["key"] == (
                f"00000/{key}"
            )

        # Four at a time: HAProxy balances by least connections, so one client alone
        # would always find the first replica idle.
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(search, photos[:40]))
        answered = {replica for replica, _ in answers if replica}
        first_ok = sum(ok for _, ok in answers)
        return (
            f"40 uploaded-image searches: {first_ok} found the photo itself first; answered "
            f"by {len(answered)} replicas",
            first_ok >= 38 and len(answered) == 2,
        )

    dim_box: dict[str, int] = {}

    @phase("upsert on one replica, found through the other")
    def _upsert() -> tuple[str, bool]:
        _, manifest = in_replica(replicas[0], "GET", "/v1/manifest")
        dim_box["d"] = manifest["encoder"]["dim"]
        x = np.random.default_rng(1).standard_normal(dim_box["d"]).astype("float32").tolist()
        status, written = in_replica(
            replicas[0],
            "PUT",
            "/v1/items",
            {"items": [{"id": 424242, "vector": x, "metadata": {"key": "smoke/upsert"}}]},
        )
        if status != 200:
            raise RuntimeError(f"upsert: {status} {written}")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status, found = in_replica(
                replicas[1], "POST", "/v1/search", {"vector": x, "k": 1, "exact": True}
            )
            if status == 200 and found["hits"] and found["hits"][0]["id"] == 424242:
                return f"written on {replicas[0][:12]}, found on {replicas[1][:12]}", True
            time.sleep(0.5)
        return f"not found on the other replica: {found}", False

    @phase("docker kill one query replica under load through HAProxy")
    def _kill() -> tuple[str, bool]:
        counts = {"ok": 0, "failed": 0}
        errors: list[str] = []
        stop = time.monotonic() + 25
        rng = np.random.default_rng(2)
        queries = rng.standard_normal((64, dim_box["d"])).astype("float32").tolist()
        lock = threading.Lock()

        def client(i: int) -> None:
            n = 0
            while time.monotonic() < stop:
                try:
                    status, _, _ = http(
                        "POST",
                        f"{proxy}/v1/search",
                        {"vector": queries[(i * 7 + n) % 64], "k": 10},
                        timeout=15,
                    )
                    ok = status == 200
                    err = f"HTTP {status}"
                except Exception as e:  # connection reset, timeout: a failed request
                    ok, err = False, type(e).__name__
                with lock:
                    counts["ok" if ok else "failed"] += 1
                    if not ok:
                        errors.append(err)
                n += 1

        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        time.sleep(8)
        docker("kill", replicas[0])
        for t in threads:
            t.join()
        docker("start", replicas[0])
        summary = f"{counts['ok']} ok, {counts['failed']} failed"
        if errors:
            summary += f" ({sorted(set(errors))})"
        return summary, counts["failed"] == 0 and counts["ok"] > 0

    @phase("Redis crash (kill -9) and restart: acknowledged upserts survive")
    def _redis() -> tuple[str, bool]:
        # Wait for the restarted replica, then write 100 items through the proxy.
        for c in replicas:
            wait_ready(c)
        rng = np.random.default_rng(3)
        xs = rng.standard_normal((100, dim_box["d"])).astype("float32")
        xs /= np.linalg.norm(xs, axis=1, keepdims=True)
        acked = []
        for i in range(0, 100, 10):
            items = [{"id": 900000 + j, "vector": xs[j].tolist()} for j in range(i, i + 10)]
            status, _, _ = http(
                "PUT", f"{proxy}/v1/items", {"items": items}, {"X-API-Key": API_KEY}
            )
            if status == 200:
                acked += [900000 + j for j in range(i, i + 10)]
        docker("kill", "--signal", "KILL", redis)
        docker("start", redis)
        time.sleep(3)
        docker("restart", *replicas)  # replicas rebuild their delta from the log
        for c in replicas:
            wait_ready(c)
        lost = []
        for item in acked:
            x = xs[item - 900000].tolist()
            status, found, _ = http(
                "POST", f"{proxy}/v1/search", {"vector": x, "k": 1, "exact": True}
            )
            if status != 200 or not found["hits"] or found["hits"][0]["id"] != item:
                lost.append(item)
        return (
            f"{len(acked)} acknowledged, {len(lost)} lost after the crash and a replay "
            "by both replicas",
            bool(acked) and not lost,
        )

    @phase("backfill of two dates (REST API), CURRENT stays on the newest")
    def _backfill() -> tuple[str, bool]:
        conf = {**CONF, "sources": ["store:images/cifar/"]}
        body = {
            "dag_id": DAG,
            "from_date": "2026-02-01T00:00:00Z",
            "to_date": "2026-02-02T00:00:00Z",
            "dag_run_conf": conf,
            "max_active_runs": 1,
        }
        runs, state = run_dag(
            conf,
            lambda: api("POST", "/api/v2/backfills", body),
            lambda rs: [r for r in rs if r["dag_run_id"].startswith("backfill__")],
            2,
            1800,
        )
        _, ready, _ = http("GET", f"{proxy}/readyz")
        live = ready.get("snapshot_id") if isinstance(ready, dict) else None
        return (
            f"{len(runs)} backfill runs {state}; live snapshot {live}",
            state == "success" and live == SNAPSHOT,
        )

    # Each phase ran when it was decorated, in order.
    print("\n| phase | seconds | result | |\n|---|---:|---|---|")
    for name, seconds, result, ok in rows:
        print(f"| {name} | {seconds:.0f} | {result} | {'ok' if ok else '**FAILED**'} |")
    return 0 if all(ok for *_, ok in rows) else 1


API_KEY = ""

if __name__ == "__main__":
    sys.exit(main())
