"""Embedding throughput: end to end (JPEG bytes -> vectors in the store) vs the model alone.

For each data set, in the same run and with the same batch size:

- ``model only``: the encoder's forward pass on already decoded, resized uint8
  batches (``encode_pixels``), the ceiling the stage can reach;
- ``decode only``: the decode workers alone (JPEG -> resized uint8), for finding
  the bottleneck;
- ``end to end``: ``vsearch.embedding.worker.embed_partition`` from JPEG bytes in memory to a
  committed partition in a local store (decode workers, model, fingerprint,
  atomic writes).

The ratio end-to-end / model-only is the figure of merit (goal >= 0.8).

    .venv/bin/python bench/embed_throughput.py                 # CPU: EfficientNet-Lite0
    .venv/bin/python bench/embed_throughput.py --gpu-clip      # GPU: ViT-B/32 CLIP, random
                                                               # weights, fp16, CUDA
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vsearch.embedding.worker import default_workers, embed_partition, fingerprint_items  # noqa: E402
from vsearch.encoders import PixelEncoder, load_encoder  # noqa: E402
from vsearch.imaging import decode_image  # noqa: E402
from vsearch.sources import Item, open_source  # noqa: E402
from vsearch.storage import LocalStore  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


def load_items(tar: Path, limit: int, repeat: int) -> list[Item]:
    source = open_source(str(tar))
    items: list[Item] = []
    for spec in source.partitions():
        for item in source.items(spec):
            if len(items) >= limit:
                break
            items.append(item)
    # Repeats get their own keys (ids), as distinct items would.
    return [
        Item(f"{item.key}#{r}", item.data, item.caption, item.metadata)
        for r in range(repeat)
        for item in items
    ]


def decode_all(items: list[Item], encoder: PixelEncoder, workers: int) -> tuple[list[Any], float]:
    def one(item: Item) -> Any:
        return encoder.preprocess(decode_image(item.data, min_side=encoder.min_side))

    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        pixels = list(pool.map(one, items, chunksize=16))
    return pixels, time.perf_counter() - start


def model_only(encoder: PixelEncoder, pixels: list[Any], batch_size: int) -> tuple[float, float]:
    import torch

    batches = [np.stack(pixels[i : i + batch_size]) for i in range(0, len(pixels), batch_size)]
    cuda = encoder.device.startswith("cuda")
    if cuda:  # the same pinned host batches the stage copies from
        batches = [torch.from_numpy(b).pin_memory() for b in batches]
    encoder.encode_pixels(batches[0])  # warm-up: kernels, allocator
    if cuda:
        torch.cuda.synchronize()
    start, cpu = time.perf_counter(), time.process_time()
    for batch in batches:
        encoder.encode_pixels(batch)  # returns host numpy: includes the device sync
    return time.perf_counter() - start, time.process_time() - cpu


def end_to_end(
    encoder: PixelEncoder, items: list[Item], batch_size: int, workers: int
) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        store = LocalStore(tmp)
        embed_partition(store, "20000101T000000Z-warmup", 0, items[:batch_size], encoder,
                        batch_size=batch_size, num_workers=workers)  # fmt: skip
        # Production passes the source's fingerprint (an etag, or the shard's sha256,
        # computed once before embedding); leave that hashing out of the timing here.
        fingerprint = fingerprint_items(items)
        start, cpu = time.perf_counter(), time.process_time()
        record = embed_partition(store, "20000101T000000Z", 0, items, encoder,
                                 batch_size=batch_size, num_workers=workers,
                                 input_fingerprint=fingerprint)  # fmt: skip
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        assert record.count == len(items), record.stats
    return elapsed, cpu


def save_random_clip_b32(folder: Path) -> None:
    """The ViT-B/32 CLIP architecture with random weights, saved like a hub checkpoint."""
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer.from_pretrained(folder, model_max_length=77)
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"vocab_size": len(tokens), "eos_token_id": tokenizer.eos_token_id,
                     "bos_token_id": tokenizer.bos_token_id},
        vision_config={"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                       "num_attention_heads": 12, "image_size": 224, "patch_size": 32},
        projection_dim=512,
    )  # fmt: skip
    CLIPModel(config).save_pretrained(folder)
    CLIPProcessor(image_processor=CLIPImageProcessorPil(), tokenizer=tokenizer).save_pretrained(
        folder
    )


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores visible, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), {gpu}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--encoder", default="efficientnet-lite0")
    parser.add_argument("--gpu-clip", action="store_true", help="ViT-B/32 CLIP, fp16, CUDA")
    parser.add_argument("--device", help="override (e.g. --gpu-clip --device cpu: a smoke run)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--workers", type=int, nargs="+", help="decode threads to try (default: the stage's own)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; best kept")
    parser.add_argument("--coco", type=int, default=256, help="COCO photos (max 256)")
    parser.add_argument("--cifar", type=int, default=2000, help="CIFAR-10 test images")
    parser.add_argument("--repeat", type=int, default=1, help="pass over the images N times")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/embed_throughput.md")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as model_dir:
        if args.gpu_clip:
            save_random_clip_b32(Path(model_dir))
            device = args.device or "cuda"
            dtype = "fp16" if device.startswith("cuda") else "fp32"
            spec, label = f"clip:{model_dir}?dtype={dtype}", f"CLIP ViT-B/32 (random) {dtype}"
        else:
            spec, device, label = args.encoder, args.device, args.encoder
        encoder = load_encoder(spec, device=device)
        assert isinstance(encoder, PixelEncoder)
        worker_counts = args.workers or [default_workers()]
        sets = [("COCO 2017 (~640x480)", args.data / "coco256-000.tar", args.coco),
                ("CIFAR-10 (32x32)", args.data / "cifar10-test-000.tar", args.cifar)]  # fmt: skip
        rows = []
        for name, tar, limit in sets:
            if limit <= 0:
                continue
            items = load_items(tar, limit, args.repeat)
            n = len(items)
            pixels, t_decode = decode_all(items, encoder, max(worker_counts))
            # Alternate the measurements so that load from elsewhere hits both alike;
            # keep each one's best round (the least disturbed).
            inf = (float("inf"), float("inf"))
            t_model, t_e2e = inf, dict.fromkeys(worker_counts, inf)
            for _ in range(args.rounds):
                t_model = min(t_model, model_only(encoder, pixels, args.batch_size))
                for w in worker_counts:
                    t_e2e[w] = min(t_e2e[w], end_to_end(encoder, items, args.batch_size, w))
            for w in worker_counts:
                (wall_m, cpu_m), (wall_e, cpu_e) = t_model, t_e2e[w]
                rows.append((name, n, w, n / t_decode, n / wall_m, n / wall_e, wall_m / wall_e,
                             1e3 * cpu_m / n, 1e3 * cpu_e / n, cpu_m / cpu_e))  # fmt: skip
                print(f"{name} workers={w}: model {n / wall_m:.1f}/s, e2e {n / wall_e:.1f}/s",
                      file=sys.stderr)  # fmt: skip

    command = "python bench/embed_throughput.py " + " ".join(sys.argv[1:])
    header = ("| data | images | decode threads | decode only img/s | model only img/s "
              "| end to end img/s | **e2e / model** | model CPU ms/img | e2e CPU ms/img "
              "| e2e / model by CPU time |\n"
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")  # fmt: skip
    lines = [
        f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.0f} | {r[4]:.1f} | {r[5]:.1f} | **{r[6]:.2f}x** "
        f"| {r[7]:.1f} | {r[8]:.1f} | {r[9]:.2f}x |"
        for r in rows
    ]
    report = "\n".join(
        [
            f"### {label}, batch {args.batch_size}, {getattr(encoder, 'device', 'cpu')}",
            "",
            f"- command: `{command.strip()}`",
            f"- machine: {machine()}",
            f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; "
            f"best of {args.rounds} alternating rounds",
            "",
            header,
            *lines,
            "",
        ]
    )
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as f:
        f.write(report + "\n")


if __name__ == "__main__":
    main()
