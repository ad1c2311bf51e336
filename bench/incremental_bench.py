"""Incremental saves on a half-frozen model: bytes written, stall and durable save, full vs incremental.

A state of ``--size`` GiB of float32 in two layouts (few large / many small tensors); half of the
tensors (by bytes) never change ("frozen"), the others change in place between saves, as an
optimizer step changes them. For each mode (``Saver(incremental=False/True)``) it saves
``--saves`` times asynchronously and reports, for the saves after the first (the first of a
fresh run is complete), the median bytes written per save, stall and durable save time, beside a
single-threaded copy of the state into preallocated memory (the stall's floor). A last row per
layout is the first save of a restarted process: a new store and saver, the newest incremental
checkpoint restored into a zeroed state, one optimizer step, one save.

    python bench/incremental_bench.py --size 1 --saves 4          # ~1 min on 2 cores
    python bench/incremental_bench.py --size 0.25 --saves 3       # quick

Timings on a shared machine are noisy (medians are reported; say so when quoting them); bytes
written are exact.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from unbroken.checkpoint import CheckpointStore, State  # noqa: E402
from unbroken.checkpoint.saving import statefile  # noqa: E402
from unbroken.checkpoint.saving.saver import Saver  # noqa: E402
from unbroken.storage import LocalStorage  # noqa: E402

LAYOUTS = {"few large": 8, "many small": 388}


def make_state(gib: float, count: int) -> tuple[dict[str, np.ndarray], set[str]]:
    """``count`` float32 tensors of ``gib`` GiB in all; the first half (by count) frozen."""
    per = int(gib * (1 << 30) / 4 / count)
    rng = np.random.default_rng(0)
    tensors = {f"t{i:03d}": rng.standard_normal(per, dtype=np.float32) for i in range(count)}
    return tensors, {f"t{i:03d}" for i in range(count // 2)}


def memcpy_s(tensors: dict[str, np.ndarray]) -> float:
    """Best of 3: one thread copying every tensor into preallocated memory."""
    out = {k: np.empty_like(v) for k, v in tensors.items()}
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for k, v in tensors.items():
            np.copyto(out[k], v)
        best = min(best, time.perf_counter() - t0)
    return best


def run_mode(tensors: dict, frozen: set[str], incremental: bool, saves: int, workdir: Path) -> dict:
    root = workdir / ("inc" if incremental else "full")
    saver = Saver(CheckpointStore(LocalStorage(root)), incremental=incremental)
    state = State(weights=tensors, rng=False)
    rows = []
    for step in range(saves):
        handle = saver.save(state, step + 1)
        handle.wait()
        rows.append({"stall_s": handle.stall_s, "save_s": handle.save_s, "bytes_written": handle.bytes_written,
                     "nbytes": handle.nbytes})
        for name, value in tensors.items():  # an optimizer step on the trainable half
            if name not in frozen:
                value += 1e-3
    saver.release_buffer()
    resumed = after_restart(root, tensors, frozen, saves + 1) if incremental else None
    shutil.rmtree(root, ignore_errors=True)
    later = rows[1:]
    return {"mode": "incremental" if incremental else "full",
            **{k: statistics.median(r[k] for r in later) for k in ("stall_s", "save_s", "bytes_written", "nbytes")},
            "first": rows[0], "after_restart": resumed}


def after_restart(root: Path, tensors: dict, frozen: set[str], step: int) -> dict:
    """The first save of a new process that restored the newest checkpoint in ``root``."""
    store = CheckpointStore(LocalStorage(root))
    newest = store.list()[-1]
    state = State(weights={k: np.zeros_like(v) for k, v in tensors.items()}, rng=False)
    statefile.restore(state, store.local_path(newest.uuid), newest)
    saver = Saver(store, incremental=True)
    saver.prepare(state, wait=True, restored=newest)
    for name, value in state.weights.items():
        if name not in frozen:
            value += 1e-3
    handle = saver.save(state, step)
    handle.wait()
    saver.release_buffer()
    return {"stall_s": handle.stall_s, "save_s": handle.save_s, "bytes_written": handle.bytes_written,
            "nbytes": handle.nbytes}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=float, default=1.0, help="GiB of state (default 1)")
    p.add_argument("--saves", type=int, default=4, help="saves per mode (default 4; the first is complete)")
    p.add_argument("--workdir", type=Path, help="scratch folder on the disk under test (default: a temp dir)")
    p.add_argument("--json", type=Path, help="write the results here too")
    args = p.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="unbroken-inc-", dir=args.workdir))
    results = []
    try:
        for layout, count in LAYOUTS.items():
            tensors, frozen = make_state(args.size, count)
            copy = memcpy_s(tensors)
            for incremental in (False, True):
                row = run_mode(tensors, frozen, incremental, args.saves, workdir)
                results.append({"layout": layout, "memcpy_s": copy, **row})
            del tensors
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print("| layout | mode | bytes written / save | of the state | stall (s) | stall / memcpy | durable save (s) |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(_row(r["layout"], r["mode"], r, r["memcpy_s"]))
        if r["after_restart"] is not None:
            print(_row(r["layout"], "incremental, first save after a restart", r["after_restart"], r["memcpy_s"]))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


def _row(layout: str, mode: str, r: dict, memcpy: float) -> str:
    return (f"| {layout} | {mode} | {r['bytes_written'] / 2**20:.0f} MiB | {r['bytes_written'] / r['nbytes']:.2f} | "
            f"{r['stall_s']:.3f} | {r['stall_s'] / memcpy:.1f} | {r['save_s']:.3f} |")


if __name__ == "__main__":
    main()
