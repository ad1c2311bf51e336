"""Sharded save from 2 ranks: unbroken's group save against dcp.save / dcp.async_save, in one run.

Each rank holds its own half of the state (``--gib`` in total, 4 large float32 tensors per rank, none
replicated) and saves it at the same moment as the other rank. Per method and repetition:

* stall: how long the training thread is blocked (the call's return), the slower rank;
* durable: until the checkpoint is committed on disk (files fsynced; for unbroken, the manifest
  written by rank 0 after every rank finished), the slower rank;

beside the limits of the same run: a single-threaded copy of one rank's bytes into preallocated
memory (the floor of an async stall) and both ranks writing their bytes with ``dd``-like fsynced
writes at once (the floor of a durable save); each limit the best of 3. Medians of ``--reps``.

    python bench/sharded_bench.py --gib 1 --reps 3 --workdir bench/results/tmp

It starts itself under ``torch.distributed.run`` (2 ranks, gloo). Rank 0 prints the table and
writes ``<out>/sharded.md`` and ``sharded.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

RANKS = 2
TENSORS_PER_RANK = 4


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gib", type=float, default=1.0, help="total state over both ranks")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("bench/results/tmp"))
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--rank-worker", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def launch(args: argparse.Namespace) -> int:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={RANKS}",
           __file__, "--rank-worker", "--gib", str(args.gib), "--reps", str(args.reps),
           "--workdir", str(args.workdir), "--out", str(args.out)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNBROKEN_")}
    return subprocess.call(cmd, env={**env, "OMP_NUM_THREADS": "1"})


class Rank:
    """This rank's state, folders and timing helpers (the slower rank's time is the figure)."""

    def __init__(self, args: argparse.Namespace):
        import torch  # noqa: PLC0415
        import torch.distributed as dist  # noqa: PLC0415
        self.torch, self.dist = torch, dist
        dist.init_process_group("gloo")
        self.rank = dist.get_rank()
        numel = int(args.gib * 2**30 / RANKS / 4 / TENSORS_PER_RANK)
        gen = torch.Generator().manual_seed(self.rank)
        self.tensors = {f"w{i}": torch.rand(numel, generator=gen) for i in range(TENSORS_PER_RANK)}
        self.nbytes = sum(t.numel() * 4 for t in self.tensors.values())
        self.workdir = args.workdir.resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.async_group = dist.new_group(backend="gloo")  # dcp.async_save's collectives run in its thread

    def slowest(self, seconds: float) -> float:
        box = [None] * RANKS
        self.dist.all_gather_object(box, seconds)
        return max(box)

    def timed(self, action) -> tuple[float, object]:
        self.dist.barrier()
        t0 = time.perf_counter()
        result = action()
        return time.perf_counter() - t0, result

    def fresh(self, name: str) -> Path:
        path = self.workdir / name
        if self.rank == 0:
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir(parents=True)
        self.dist.barrier()
        return path


def limits(r: Rank) -> dict[str, float]:
    """memcpy of one rank's bytes (single thread, preallocated) and both ranks writing theirs durably."""
    dst = {k: r.torch.empty_like(t) for k, t in r.tensors.items()}
    for k, t in r.tensors.items():
        dst[k].copy_(t)  # fault the pages in first
    copy_s = min(r.timed(lambda: [dst[k].copy_(t) for k, t in r.tensors.items()])[0] for _ in range(3))
    folder = r.fresh("dd")

    def write() -> None:
        with open(folder / f"rank{r.rank}.bin", "wb") as f:
            for t in r.tensors.values():
                f.write(memoryview(t.numpy()).cast("B"))
            f.flush()
            os.fsync(f.fileno())

    write_s = min(r.timed(write)[0] for _ in range(3))  # the best of 3, like the methods' medians of warm runs
    return {"memcpy": r.slowest(copy_s), "dd write (both ranks)": r.slowest(write_s)}


def unbroken_saves(r: Rank, reps: int, asynchronous: bool) -> list[tuple[float, float]]:
    import unbroken  # noqa: PLC0415
    os.environ["UNBROKEN_HOME"] = str(r.fresh("unbroken-home"))
    rows = []
    with unbroken.init("sharded-bench", keep=unbroken.keep_latest(1), exit_on_preempt=False) as run:
        state = unbroken.State(**r.tensors, rng=False)
        run.restore(state)
        for step in range(1, reps + 2):  # the first save sizes the buffers: not counted
            r.dist.barrier()
            t0 = time.perf_counter()
            run.save(state, step, wait=not asynchronous)
            stall = time.perf_counter() - t0
            run.wait_for_saves()  # rank 0: until committed; the others: until their files are durable
            durable = time.perf_counter() - t0
            rows.append((r.slowest(stall), r.slowest(durable)))
    return rows[1:]


def dcp_saves(r: Rank, reps: int, asynchronous: bool) -> list[tuple[float, float]]:
    import torch.distributed.checkpoint as dcp  # noqa: PLC0415
    rows = []
    for rep in range(reps + 1):
        folder = r.fresh(f"dcp-{rep}")
        # each rank's tensors under its own keys: a sharded state with no replication, like unbroken's
        state = {f"rank{r.rank}.{k}": t for k, t in r.tensors.items()}
        if asynchronous:
            t0 = time.perf_counter()
            stall, future = r.timed(lambda: dcp.async_save(state, checkpoint_id=str(folder),
                                                           process_group=r.async_group))
            future.result()
            durable = time.perf_counter() - t0
        else:
            stall, _ = r.timed(lambda: dcp.save(state, checkpoint_id=str(folder)))
            durable = stall
        rows.append((r.slowest(stall), r.slowest(durable)))
        r.dist.barrier()
        if r.rank == 0:
            shutil.rmtree(folder, ignore_errors=True)
    return rows[1:]


def worker(args: argparse.Namespace) -> None:
    r = Rank(args)
    results = {"limits": limits(r), "methods": {}}
    for name, measure in (("unbroken sharded (sync)", lambda: unbroken_saves(r, args.reps, False)),
                          ("unbroken sharded (async)", lambda: unbroken_saves(r, args.reps, True)),
                          ("dcp.save", lambda: dcp_saves(r, args.reps, False)),
                          ("dcp.async_save", lambda: dcp_saves(r, args.reps, True))):
        rows = measure()
        results["methods"][name] = {"stall_s": statistics.median(s for s, _ in rows),
                                    "durable_s": statistics.median(d for _, d in rows), "reps": rows}
    if r.rank == 0:
        report(args, r, results)
        shutil.rmtree(r.workdir, ignore_errors=True)
    r.dist.destroy_process_group()


def report(args: argparse.Namespace, r: Rank, results: dict) -> None:
    lim = results["limits"]
    gib = 2 * r.nbytes / 2**30
    lines = [f"Sharded save, {RANKS} ranks (gloo, CPU), {gib:.2f} GiB in total, medians of {args.reps}",
             "", f"limits: memcpy of one rank's bytes {lim['memcpy']:.3f} s; both ranks writing durably "
             f"{lim['dd write (both ranks)']:.3f} s ({gib / lim['dd write (both ranks)']:.2f} GiB/s)", "",
             "| method | stall s | stall / memcpy | durable s | durable GiB/s | durable / dd write |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, m in results["methods"].items():
        lines.append(f"| {name} | {m['stall_s']:.3f} | {m['stall_s'] / lim['memcpy']:.1f}x | {m['durable_s']:.3f} | "
                     f"{gib / m['durable_s']:.2f} | {lim['dd write (both ranks)'] / m['durable_s']:.2f}x |")
    text = "\n".join(lines)
    print(text, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sharded.md").write_text(text + "\n")
    (args.out / "sharded.json").write_text(json.dumps(results, indent=1))


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.rank_worker:
        worker(args)
        return 0
    return launch(args)


if __name__ == "__main__":
    sys.exit(main())
