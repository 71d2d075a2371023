"""Thumbnails: what they cost the embed stage, how big they are, how fast they are served.

In one run, on real photos (COCO 256, ~640x480) and tiny images (CIFAR-10, 32x32):

- **embed stage**: ``embed_partition`` end to end with thumbnails (the default) and
  without (``thumb_side=0``), alternating rounds, best kept; the ratio is the cost;
- **size**: bytes per thumbnail (mean, p95, max) and per item of a partition;
- **serving**: ``GET /v1/items/{id}/thumbnail`` through the real server on loopback
  (waitress, 1 worker), from the in-process LRU (warm) and with the LRU off (each
  request one ranged read of the pack: ``THUMBNAIL_CACHE_MB=0``), against the same
  server's ``GET /healthz`` (the HTTP floor), at concurrency 1 and 8.

    .venv/bin/python bench/thumbnail_bench.py --out bench/results/thumbnails.md
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.embed_throughput import load_items, machine  # noqa: E402
from vsearch.embedding.partitions import read_thumbnails  # noqa: E402
from vsearch.embedding.worker import embed_partition, fingerprint_items  # noqa: E402
from vsearch.encoders import load_encoder  # noqa: E402
from vsearch.storage import LocalStore  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


def embed_time(encoder: object, items: list, thumb_side: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        store = LocalStore(tmp)
        fingerprint = fingerprint_items(items)
        start = time.perf_counter()
        embed_partition(store, "20000101T000000Z", 0, items, encoder,  # type: ignore[arg-type]
                        input_fingerprint=fingerprint, thumb_side=thumb_side)  # fmt: skip
        return time.perf_counter() - start


def sizes(encoder: object, items: list) -> list[int]:
    with tempfile.TemporaryDirectory() as tmp:
        store = LocalStore(tmp)
        record = embed_partition(store, "20000101T000000Z", 0, items, encoder)  # type: ignore[arg-type]
        return sorted(len(t) for t in read_thumbnails(store, record).values())


def load(url: str, clients: int, seconds: float) -> float:
    """Requests per second of ``clients`` threads GETting ``url`` for ``seconds``."""
    done = [0] * clients
    stop = time.monotonic() + seconds

    def run(i: int) -> None:
        while time.monotonic() < stop:
            with urllib.request.urlopen(url, timeout=10) as r:
                r.read()
            done[i] += 1

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / seconds


def serving(store_root: Path, item: int, seconds: float, rounds: int) -> list[tuple[str, ...]]:
    from vsearch.cli.service_process import running_service

    rows = []
    best: dict[tuple[str, int], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        servers = {}
        for name, cache_mb in (("warm (LRU)", "32"), ("LRU off: ranged read", "0")):
            env = {
                "VSEARCH_STORE": str(store_root),
                "VSEARCH_DATA_DIR": f"{tmp}/{cache_mb}",
                "VSEARCH_THUMBNAIL_CACHE_MB": cache_mb,
                "VSEARCH_SERVICE_THREADS": "8",
            }
            servers[name] = running_service(env)
        bases = {name: ctx.__enter__() for name, ctx in servers.items()}
        try:
            for _ in range(rounds):
                for name, base in bases.items():
                    for c in (1, 8):
                        for what, path in (("thumbnail", f"/v1/items/{item}/thumbnail"),
                                           ("floor", "/healthz")):  # fmt: skip
                            qps = load(base + path, c, seconds)
                            key = (f"{name}|{what}", c)
                            best[key] = max(best.get(key, 0.0), qps)
        finally:
            for ctx in servers.values():
                ctx.__exit__(None, None, None)
    for name in bases:
        for c in (1, 8):
            thumb, floor = best[(f"{name}|thumbnail", c)], best[(f"{name}|floor", c)]
            rows.append((name, str(c), f"{thumb:.0f}", f"{floor:.0f}", f"{thumb / floor:.2f}x"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--coco", type=int, default=256)
    parser.add_argument("--cifar", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/thumbnails.md")
    args = parser.parse_args()

    encoder = load_encoder("efficientnet-lite0")
    embed_rows, size_rows = [], []
    sets = [("COCO 2017 (~640x480)", DATA / "coco256-000.tar", args.coco),
            ("CIFAR-10 (32x32)", DATA / "cifar10-test-000.tar", args.cifar)]  # fmt: skip
    for name, tar, n in sets:
        items = load_items(tar, n, 1)
        embed_time(encoder, items[:32], 160)  # warm-up
        with_t, without = float("inf"), float("inf")
        for _ in range(args.rounds):  # alternating, best of each
            without = min(without, embed_time(encoder, items, 0))
            with_t = min(with_t, embed_time(encoder, items, 160))
        embed_rows.append((name, str(len(items)), f"{len(items) / without:.1f}",
                           f"{len(items) / with_t:.1f}", f"{without / with_t:.2f}x",
                           f"{1e3 * (with_t - without) / len(items):+.1f}"))  # fmt: skip
        found = sizes(encoder, items)
        p95 = found[int(0.95 * (len(found) - 1))]
        size_rows.append((name, str(len(found)), f"{statistics.mean(found):.0f}", str(p95),
                          str(found[-1])))  # fmt: skip
        print(name, embed_rows[-1], size_rows[-1], file=sys.stderr)

    from tests.fixtures.photos import build_photo_snapshot

    with tempfile.TemporaryDirectory() as tmp:
        photos = build_photo_snapshot(Path(tmp))
        item = photos.id_of(next(iter(photos.photos)))
        serve_rows = serving(photos.store.root, item, args.seconds, args.rounds)

    def table(head: tuple[str, ...], rows: list) -> list[str]:
        return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
                *("| " + " | ".join(r) + " |" for r in rows)]  # fmt: skip

    embed_head = ("data", "images", "img/s without", "img/s with", "with / without",
                  "ms/img added")  # fmt: skip
    serve_head = ("cache", "clients", "thumbnail req/s", "/healthz req/s (floor)",
                  "thumbnail / floor")  # fmt: skip
    command = "python bench/thumbnail_bench.py " + " ".join(sys.argv[1:])
    report = [
        "# Thumbnails: embed-stage cost, size, serving",
        "",
        f"- command: `{command.strip()}`",
        f"- machine: {machine()}",
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; best of "
        f"{args.rounds} alternating rounds; EfficientNet-Lite0 on the CPU",
        "",
        "## The embed stage with and without thumbnails (`embed_partition`, end to end)",
        "",
        *table(embed_head, embed_rows),
        "",
        "## Thumbnail size (WebP, longest side 160 px)",
        "",
        *table(("data", "thumbnails", "mean bytes", "p95 bytes", "max bytes"), size_rows),
        "",
        "## Serving `GET /v1/items/{id}/thumbnail` (real server, loopback, local store)",
        "",
        *table(serve_head, serve_rows),
        "",
    ]
    text = "\n".join(report)
    print(text)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
