"""Where a verified restore's time goes: pass 1 (read + CRC32C) and pass 2 (fill from the page cache),
beside cold ``dd`` reads of the same file and safetensors, in the same repetitions.

Saves 1 GiB of float32 (``--layout few|many``) with ``unbroken.checkpoint.files``, then per
repetition (order shuffled; before each cold read the file is read untimed and the page cache dropped,
so every cold read starts in the same state): ``dd`` buffered and
``iflag=direct`` reads of the tensor file, ``files.load`` cold and warm with the time spent in
``read_pieces`` and ``fill`` (the reader's two passes), and ``safetensors.load_file`` + copy.
Medians and every value are printed; the machine is shared and noisy, so compare within a run.

    python bench/restore_breakdown.py [--layout few|many] [--reps 5] [--src DIR]   # root (drop_caches)

``--src`` imports unbroken from another checkout's ``src`` (a before/after comparison).
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench_utils import cold_after_reading, dd


def instrument(reader_module: object, spent: dict[str, float]) -> None:
    """Accumulate the seconds spent in the reader's two passes into ``spent``."""
    for name in ("read_pieces", "fill"):
        original = getattr(reader_module, name)

        def timed(*args, _original=original, _name=name, **kwargs):
            t0 = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                spent[_name] = spent.get(_name, 0.0) + time.perf_counter() - t0

        setattr(reader_module, name, timed)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layout", choices=("few", "many"), default="few")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--src", type=Path, default=Path(__file__).resolve().parent.parent / "src")
    p.add_argument("--workdir", type=Path, default=Path("bench/results"))
    args = p.parse_args(argv)
    sys.path.insert(0, str(args.src))
    from safetensors.torch import load_file
    from unbroken.checkpoint import files
    from unbroken.checkpoint.io import reader

    from checkpoint_bench import few_large_shapes, many_small_shapes

    shapes = (few_large_shapes if args.layout == "few" else many_small_shapes)(1 << 30)
    gen = torch.Generator().manual_seed(0)
    state = {k: torch.randn(s, generator=gen) for k, s in shapes.items()}
    like = {k: torch.zeros(s) for k, s in shapes.items()}
    args.workdir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="restore-", dir=args.workdir))
    path = work / "ckpt"
    files.save(state, path, blocking=True)
    tensors = path / "tensors.safetensors"
    spent: dict[str, float] = {}
    instrument(reader, spent)
    results: dict[str, list[float]] = {}

    def load(cold: bool) -> None:
        if cold:
            cold_after_reading(tensors)
        spent.clear()
        t0 = time.perf_counter()
        files.load(path, into=dict(like))
        label = "cold" if cold else "warm"
        results.setdefault(f"unbroken load {label}", []).append(time.perf_counter() - t0)
        for name, seconds in spent.items():
            results.setdefault(f"  {label}: {name}", []).append(seconds)

    def safetensors_cold() -> None:
        cold_after_reading(tensors)
        t0 = time.perf_counter()
        for k, v in load_file(str(tensors)).items():
            like[k].copy_(v)
        results.setdefault("safetensors.load_file cold", []).append(time.perf_counter() - t0)

    def dd_cold(*flags: str) -> None:
        cold_after_reading(tensors)
        results.setdefault(f"dd read cold {' '.join(flags) or 'buffered'}", []).append(
            dd(f"if={tensors}", "of=/dev/null", *flags))

    steps = [lambda: (load(True), load(False)), safetensors_cold, dd_cold, lambda: dd_cold("iflag=direct")]
    try:
        for rep in range(args.reps):
            random.Random(rep).shuffle(steps)
            for step in steps:
                step()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"unbroken from {files.__file__}; {args.layout}: {len(shapes)} tensors, {args.reps} repetitions")
    for name in sorted(results):
        values = results[name]
        print(f"{name:34s} median {statistics.median(values):.3f} s   all {' '.join(f'{v:.3f}' for v in values)}")


if __name__ == "__main__":
    main()
