"""Reading shard files into faiss in a child process that cannot allocate past the budget.

Shards are read memory-mapped (``faiss.IO_FLAG_MMAP_IFC``, see ``read_mapped``): the
codes faiss can use in place (inverted lists, flat and refine codes) stay in the file
and live in the page cache, shared by every process on the host that maps the same
file; what faiss copies out (quantizers, transforms, id maps) is private memory.

faiss allocates what the sizes inside a file say before it reads the data, so a file
of a few bytes can ask for gigabytes. ``read_shards_bounded`` therefore reads the
shards first in a child process whose address space is capped at the memory budget,
and measures what faiss allocated there; the loader (``service.snapshots.snapshot_loader``)
reads in the serving process only files that read there, within the budget — the
same verified bytes, so the same allocations.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.snapshots.refusal import SnapshotRefused

# Address space the bounded reader may use beyond the budget: allocator rounding, stacks.
READ_SLACK_BYTES = 64 << 20


@dataclass(frozen=True)
class ShardsRead:
    shapes: list[tuple[int, int]]  # (ntotal, d) of each shard
    heap_bytes: int  # what faiss allocated to hold them all: private, not the mapped files


def read_mapped(path: str | Path) -> Any:
    """One shard as the service holds it: codes mapped from the file, the rest in RAM."""
    import faiss

    return faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC)


def read_shards_bounded(paths: Sequence[Path], limit_bytes: int) -> ShardsRead:
    """Read every shard into faiss in a child process that cannot allocate more than
    ``limit_bytes`` (+ ``READ_SLACK_BYTES``) beyond mapping the files: refused if one
    does not read there.

    A child, not an rlimit here: RLIMIT_AS is per process, and this one serves requests
    from many threads. The child also contains what a crafted file can do beyond
    allocating (a crash is a refusal, not a dead worker). It costs a second read of
    the shards and the start of an interpreter (~0.2 s).
    """
    root = str(Path(__file__).resolve().parents[1])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])]),
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
    }
    total = sum(p.stat().st_size for p in paths)
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(limit_bytes + READ_SLACK_BYTES + total)]
        + [str(p) for p in paths],
        capture_output=True,
        text=True,
        env=env,
        timeout=120 + total / 20e6,  # a slow disk: a timeout is transient, retried
        check=False,
    )
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    done = lines[-1] if lines else {}
    reading = max((m["reading"] for m in lines if "reading" in m), default=None)
    where = f"shards[{reading}]" if reading is not None else "shards"
    if done.get("error") == "limit":  # permanent: the process's limits allow no cap
        raise SnapshotRefused(f"the shard reader cannot cap its address space: {done['message']}")
    if "error" in done:
        where = f"shards[{done['shard']}]"
        if done["error"] == "memory":
            hard = next((m["hard"] for m in lines if m.get("hard")), None)
            under = f", the hard address-space limit of {hard / 2**20:.0f} MiB" if hard else ""
            raise SnapshotRefused(
                f"{where}: reading it needs more memory than the budget allows "
                f"({limit_bytes / 2**20:.1f} MiB{under}; the file's headers ask for more)"
            )
        raise SnapshotRefused(f"{where}: unreadable index: {done['message']}")
    if proc.returncode < 0:  # killed by a signal: a crafted file crashed faiss
        raise SnapshotRefused(f"{where}: reading it crashed faiss (signal {-proc.returncode})")
    if proc.returncode != 0 or "shapes" not in done:  # the child itself failed: retried
        raise RuntimeError(f"the shard reader failed ({proc.returncode}): {proc.stderr[-500:]}")
    return ShardsRead([(int(n), int(d)) for n, d in done["shapes"]], int(done["heap_bytes"]))


# Runs in the child, which imports nothing of ours but this module (and service.snapshots.refusal).
_CHILD = "from service.snapshots.shard_reader import _read_shards_child; _read_shards_child()"


def _read_shards_child() -> None:  # pragma: no cover - runs in the child process
    import resource

    import faiss  # noqa: F401 - loaded (with its libraries) before the address space is capped

    limit, paths = int(sys.argv[1]), sys.argv[2:]
    base = _heap_in_use()
    vm = _vm_size()
    if vm is not None:  # the interpreter and libraries as loaded, the files mapped, the limit
        # The hard limit stays as inherited (under ``ulimit -v`` it cannot be raised):
        # the cap is the budget's or, when that is tighter, the hard limit.
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        capped = hard != resource.RLIM_INFINITY and hard < vm + limit
        try:
            resource.setrlimit(resource.RLIMIT_AS, (hard if capped else vm + limit, hard))
        except (ValueError, OSError) as e:
            print(json.dumps({"error": "limit", "message": str(e)}), flush=True)
            return
        print(json.dumps({"hard": hard if capped else None}), flush=True)
    indexes, shapes = [], []
    for j, path in enumerate(paths):
        print(json.dumps({"reading": j}), flush=True)
        try:
            index = read_mapped(path)
        except MemoryError:
            print(json.dumps({"shard": j, "error": "memory"}), flush=True)
            return
        except RuntimeError as e:
            print(json.dumps({"shard": j, "error": "unreadable", "message": str(e)}), flush=True)
            return
        indexes.append(index)
        shapes.append((int(index.ntotal), int(index.d)))
    print(json.dumps({"shapes": shapes, "heap_bytes": max(0, _heap_in_use() - base)}), flush=True)


def _vm_size() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


_MALLINFO2_FIELDS = (
    *("arena", "ordblks", "smblks", "hblks", "hblkhd"),
    *("usmblks", "fsmblks", "uordblks", "fordblks", "keepcost"),
)


def _heap_in_use() -> int:
    """Bytes malloc has handed out (glibc ``mallinfo2``), else the resident set size."""
    import ctypes

    class MallInfo2(ctypes.Structure):  # struct mallinfo2, field by field
        _fields_ = [(name, ctypes.c_size_t) for name in _MALLINFO2_FIELDS]

    try:
        mallinfo2 = ctypes.CDLL(None).mallinfo2
    except (AttributeError, OSError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    mallinfo2.restype = MallInfo2
    info = mallinfo2()
    return int(info.uordblks + info.hblkhd)  # in use in the arenas + mmapped chunks
