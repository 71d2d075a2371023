"""The scenario of docker/smoke.sh, against a stack it has brought up: each phase timed,
a summary table at the end, exit 1 if any check failed.

Runs on the host with the project's virtualenv (boto3 for the upload); talks to the
stack only through its published ports and ``docker`` (exec into one replica, kill one).

One file, longer than 300 lines: a scenario that reads top to bottom, the helpers, then
its phases in the order they run, then ``main``.
"""

from __future__ import annotations

import argparse
import functools
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
from dataclasses import dataclass, field
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

Row = tuple[str, float, str, bool]  # (phase, seconds, result, ok)


@dataclass(frozen=True)
class Stack:
    """The stack under test, as found before the first phase."""

    env: dict[str, str]  # the .env file smoke.sh wrote for compose
    airflow: str  # base URLs of the published ports
    proxy: str
    replicas: tuple[str, ...]  # container ids
    workers: tuple[str, ...]
    redis: str
    photos: tuple[tuple[str, bytes], ...]  # (key, jpeg) of the uploaded tar's items
    tar_bytes: bytes
    api_key: str


@dataclass
class Learned:
    """What one phase learns that later ones need."""

    token: str = ""  # the Airflow API's bearer token, from the login of the DAG phase
    dim: int | None = None  # the vectors' dimension, from a replica's manifest


def vector_dim(learned: Learned) -> int:
    if learned.dim is None:
        raise RuntimeError("no vector dimension: the upsert phase did not read the manifest")
    return learned.dim


def run_phase(name: str, fn: Callable[[], tuple[str, bool]]) -> Row:
    """Run ``fn`` as a timed phase, printing as it goes."""
    print(f"== {name}", flush=True)
    started = time.monotonic()
    try:
        result, ok = fn()
    except Exception as e:  # a phase that breaks is a failed row, the rest still run
        result, ok = f"{type(e).__name__}: {e}", False
    row = (name, time.monotonic() - started, result, ok)
    print(f"   {'ok' if ok else 'FAILED'} in {row[1]:.0f} s: {result}", flush=True)
    return row


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


def in_replica(
    api_key: str, container: str, method: str, path: str, body: Any = None
) -> tuple[int, Any]:
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
        api_key,
    )
    status, _, text = out.partition("\n")
    return int(status), json.loads(text or "null")


def airflow_api(
    stack: Stack, learned: Learned, method: str, path: str, body: Any = None
) -> tuple[int, Any]:
    status, answer, _ = http(
        method, stack.airflow + path, body, {"Authorization": f"Bearer {learned.token}"}
    )
    return status, answer


def wait_ready(stack: Stack, container: str) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if in_replica(stack.api_key, container, "GET", "/readyz")[0] == 200:
                return
        except RuntimeError:
            pass
        time.sleep(2)
    raise RuntimeError(f"{container[:12]} not ready")


def run_dag(
    stack: Stack,
    learned: Learned,
    run: Callable[[], tuple[int, Any]],
    wanted: Callable[[list[dict[str, Any]]], list[dict[str, Any]]],
    count: int,
    timeout: float,
) -> tuple[list[dict[str, Any]], str]:
    """Start DAG runs with ``run``; wait for the ``count`` runs ``wanted`` picks out."""
    status, made = run()
    if status not in (200, 201):
        raise RuntimeError(f"{status} {made}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, body = airflow_api(stack, learned, "GET", f"/api/v2/dags/{DAG}/dagRuns?limit=50")
        found = wanted(body["dag_runs"])
        failed = [r for r in found if r["state"] == "failed"]
        if failed:
            return found, f"failed: {[r['dag_run_id'] for r in failed]}"
        if len(found) == count and all(r["state"] == "success" for r in found):
            return found, "success"
        time.sleep(5)
    return wanted(body["dag_runs"]), "timed out"


def multipart(photo: bytes) -> tuple[bytes, str]:
    boundary = "vsearch-smoke-boundary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
        f'filename="q.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
    ).encode()
    return body + photo + f"\r\n--{boundary}--\r\n".encode(), boundary


def cifar_subset(n: int) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The first ``n`` CIFAR-10 test samples as a webdataset tar, and their (key, jpeg)."""
    out = io.BytesIO()
    photos: list[tuple[str, bytes]] = []
    keys: set[str] = set()
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


def compose_containers(project: str, service: str) -> str:
    """The ids of a compose service's running containers, one a line."""
    return docker(
        "ps",
        "-q",
        "--filter",
        f"label=com.docker.compose.project={project}",
        "--filter",
        f"label=com.docker.compose.service={service}",
    )


def find_stack(env_file: Path, project: str, images: int) -> Stack:
    env = dict(
        line.split("=", 1)
        for line in env_file.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    replicas = compose_containers(project, "query").split()
    workers = compose_containers(project, "airflow-worker").split()
    redis = compose_containers(project, "redis")
    tar_bytes, photos = cifar_subset(images)
    return Stack(
        env=env,
        airflow=f"http://127.0.0.1:{env['AIRFLOW_PORT']}",
        proxy=f"http://127.0.0.1:{env['QUERY_PORT']}",
        replicas=tuple(replicas),
        workers=tuple(workers),
        redis=redis,
        photos=tuple(photos),
        tar_bytes=tar_bytes,
        api_key=env["VSEARCH_API_KEY"],
    )


# The phases, in the order they run: each returns (result, ok).


def upload_images(stack: Stack, learned: Learned) -> tuple[str, bool]:
    import boto3

    env = stack.env
    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{env['S3_PORT']}",
        aws_access_key_id=env["MINIO_ROOT_USER"],
        aws_secret_access_key=env["MINIO_ROOT_PASSWORD"],
        region_name="us-east-1",
    )
    key = f"{env.get('STORE_PREFIX', 'prod')}/images/cifar/00000.tar"
    s3.put_object(Bucket=env.get("STORE_BUCKET", "vsearch"), Key=key, Body=stack.tar_bytes)
    return (
        f"s3://{env.get('STORE_BUCKET', 'vsearch')}/{key}, {len(stack.tar_bytes) >> 20} MiB",
        True,
    )


def build_index(stack: Stack, learned: Learned) -> tuple[str, bool]:
    status, body, _ = http(
        "POST",
        f"{stack.airflow}/auth/token",
        {
            "username": stack.env.get("AIRFLOW_ADMIN_USERNAME", "admin"),
            "password": stack.env["AIRFLOW_ADMIN_PASSWORD"],
        },
    )
    if status not in (200, 201):
        raise RuntimeError(f"login: {status} {body}")
    learned.token = body["access_token"]
    status, body = airflow_api(stack, learned, "PATCH", f"/api/v2/dags/{DAG}", {"is_paused": False})
    if status != 200:
        raise RuntimeError(f"unpause: {status} {body}")
    conf = {**CONF, "sources": ["store:images/cifar/"]}
    runs, state = run_dag(
        stack,
        learned,
        lambda: airflow_api(
            stack,
            learned,
            "POST",
            f"/api/v2/dags/{DAG}/dagRuns",
            {"logical_date": RUN_DATE, "conf": conf},
        ),
        lambda rs: [r for r in rs if r["logical_date"].startswith(RUN_DATE[:19])],
        1,
        1800,
    )
    hosts = set()
    if runs:
        _, tis = airflow_api(
            stack,
            learned,
            "GET",
            f"/api/v2/dags/{DAG}/dagRuns/{runs[0]['dag_run_id']}/taskInstances?limit=100",
        )
        hosts = {t.get("hostname") for t in tis["task_instances"] if t.get("hostname")}
    on_workers = bool(hosts) and all(
        any(w.startswith(h) or h.startswith(w[:12]) for w in stack.workers) for h in hosts
    )
    return (
        f"run {state}; tasks ran on {sorted(hosts)} (celery worker containers: "
        f"{[w[:12] for w in stack.workers]})",
        state == "success" and on_workers,
    )


def search_by_photo(stack: Stack, sample: tuple[str, bytes]) -> tuple[str | None, bool]:
    """(the replica that answered, whether the photo itself came first)"""
    key, photo = sample
    body, boundary = multipart(photo)
    status, found, headers = http(
        "POST",
        f"{stack.proxy}/v1/search",
        raw=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    if status != 200:
        return None, False
    # Keys of a tar shard's items: {shard name}/{member key} (docs/embedding.md).
    return headers.get("X-Vsearch-Replica"), found["hits"][0]["metadata"]["key"] == (f"00000/{key}")


def serve_snapshot(stack: Stack, learned: Learned) -> tuple[str, bool]:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        ready = [in_replica(stack.api_key, c, "GET", "/readyz") for c in stack.replicas]
        if all(s == 200 and b.get("snapshot_id") == SNAPSHOT for s, b in ready):
            break
        time.sleep(3)
    else:
        raise RuntimeError(f"replicas not serving {SNAPSHOT}: {ready}")
    # Four at a time: HAProxy balances by least connections, so one client alone
    # would always find the first replica idle.
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(functools.partial(search_by_photo, stack), stack.photos[:40]))
    answered = {replica for replica, _ in answers if replica}
    first_ok = sum(ok for _, ok in answers)
    return (
        f"40 uploaded-image searches: {first_ok} found the photo itself first; answered "
        f"by {len(answered)} replicas",
        first_ok >= 38 and len(answered) == 2,
    )


def upsert_across_replicas(stack: Stack, learned: Learned) -> tuple[str, bool]:
    _, manifest = in_replica(stack.api_key, stack.replicas[0], "GET", "/v1/manifest")
    learned.dim = manifest["encoder"]["dim"]
    x = np.random.default_rng(1).standard_normal(vector_dim(learned)).astype("float32").tolist()
    status, written = in_replica(
        stack.api_key,
        stack.replicas[0],
        "PUT",
        "/v1/items",
        {"items": [{"id": 424242, "vector": x, "metadata": {"key": "smoke/upsert"}}]},
    )
    if status != 200:
        raise RuntimeError(f"upsert: {status} {written}")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status, found = in_replica(
            stack.api_key,
            stack.replicas[1],
            "POST",
            "/v1/search",
            {"vector": x, "k": 1, "exact": True},
        )
        if status == 200 and found["hits"] and found["hits"][0]["id"] == 424242:
            return f"written on {stack.replicas[0][:12]}, found on {stack.replicas[1][:12]}", True
        time.sleep(0.5)
    return f"not found on the other replica: {found}", False


@dataclass
class Tally:
    """The requests of the load clients, counted under a lock."""

    ok: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def search_until(stack: Stack, queries: list[Any], i: int, stop: float, tally: Tally) -> None:
    """Client ``i`` of the load: one search after another until ``stop``."""
    n = 0
    while time.monotonic() < stop:
        try:
            status, _, _ = http(
                "POST",
                f"{stack.proxy}/v1/search",
                {"vector": queries[(i * 7 + n) % 64], "k": 10},
                timeout=15,
            )
            ok = status == 200
            err = f"HTTP {status}"
        except Exception as e:  # connection reset, timeout: a failed request
            ok, err = False, type(e).__name__
        with tally.lock:
            if ok:
                tally.ok += 1
            else:
                tally.failed += 1
                tally.errors.append(err)
        n += 1


def kill_replica_under_load(stack: Stack, learned: Learned) -> tuple[str, bool]:
    tally = Tally()
    stop = time.monotonic() + 25
    rng = np.random.default_rng(2)
    queries = rng.standard_normal((64, vector_dim(learned))).astype("float32").tolist()
    threads = [
        threading.Thread(target=search_until, args=(stack, queries, i, stop, tally))
        for i in range(8)
    ]
    for t in threads:
        t.start()
    time.sleep(8)
    docker("kill", stack.replicas[0])
    for t in threads:
        t.join()
    docker("start", stack.replicas[0])
    summary = f"{tally.ok} ok, {tally.failed} failed"
    if tally.errors:
        summary += f" ({sorted(set(tally.errors))})"
    return summary, tally.failed == 0 and tally.ok > 0


def redis_crash(stack: Stack, learned: Learned) -> tuple[str, bool]:
    # Wait for the restarted replica, then write 100 items through the proxy.
    for c in stack.replicas:
        wait_ready(stack, c)
    rng = np.random.default_rng(3)
    xs = rng.standard_normal((100, vector_dim(learned))).astype("float32")
    xs /= np.linalg.norm(xs, axis=1, keepdims=True)
    acked = []
    for i in range(0, 100, 10):
        items = [{"id": 900000 + j, "vector": xs[j].tolist()} for j in range(i, i + 10)]
        status, _, _ = http(
            "PUT", f"{stack.proxy}/v1/items", {"items": items}, {"X-API-Key": stack.api_key}
        )
        if status == 200:
            acked += [900000 + j for j in range(i, i + 10)]
    docker("kill", "--signal", "KILL", stack.redis)
    docker("start", stack.redis)
    time.sleep(3)
    docker("restart", *stack.replicas)  # replicas rebuild their delta from the log
    for c in stack.replicas:
        wait_ready(stack, c)
    lost = []
    for item in acked:
        x = xs[item - 900000].tolist()
        status, found, _ = http(
            "POST", f"{stack.proxy}/v1/search", {"vector": x, "k": 1, "exact": True}
        )
        if status != 200 or not found["hits"] or found["hits"][0]["id"] != item:
            lost.append(item)
    return (
        f"{len(acked)} acknowledged, {len(lost)} lost after the crash and a replay "
        "by both replicas",
        bool(acked) and not lost,
    )


def backfill_two_dates(stack: Stack, learned: Learned) -> tuple[str, bool]:
    conf = {**CONF, "sources": ["store:images/cifar/"]}
    body = {
        "dag_id": DAG,
        "from_date": "2026-02-01T00:00:00Z",
        "to_date": "2026-02-02T00:00:00Z",
        "dag_run_conf": conf,
        "max_active_runs": 1,
    }
    runs, state = run_dag(
        stack,
        learned,
        lambda: airflow_api(stack, learned, "POST", "/api/v2/backfills", body),
        lambda rs: [r for r in rs if r["dag_run_id"].startswith("backfill__")],
        2,
        1800,
    )
    _, ready, _ = http("GET", f"{stack.proxy}/readyz")
    live = ready.get("snapshot_id") if isinstance(ready, dict) else None
    return (
        f"{len(runs)} backfill runs {state}; live snapshot {live}",
        state == "success" and live == SNAPSHOT,
    )


def print_summary(rows: list[Row]) -> None:
    print("\n| phase | seconds | result | |\n|---|---:|---|---|")
    for name, seconds, result, ok in rows:
        print(f"| {name} | {seconds:.0f} | {result} | {'ok' if ok else '**FAILED**'} |")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--env-file", type=Path, required=True)
    parser.add_argument("--project", required=True)
    parser.add_argument("--images", type=int, default=5000)
    args = parser.parse_args()
    stack = find_stack(args.env_file, args.project, args.images)
    phases: list[tuple[str, Callable[[Stack, Learned], tuple[str, bool]]]] = [
        (
            f"upload {len(stack.photos)} CIFAR-10 images to the store (S3 API, as one tar shard)",
            upload_images,
        ),
        (
            f"vsearch_build_index through the REST API, CeleryExecutor ({args.images} images)",
            build_index,
        ),
        ("both replicas serve the published snapshot; searches through HAProxy", serve_snapshot),
        ("upsert on one replica, found through the other", upsert_across_replicas),
        ("docker kill one query replica under load through HAProxy", kill_replica_under_load),
        ("Redis crash (kill -9) and restart: acknowledged upserts survive", redis_crash),
        ("backfill of two dates (REST API), CURRENT stays on the newest", backfill_two_dates),
    ]
    learned = Learned()
    rows = [run_phase(name, functools.partial(fn, stack, learned)) for name, fn in phases]
    print_summary(rows)
    return 0 if all(ok for *_, ok in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
