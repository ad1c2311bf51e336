"""Checkpoint save/restore benchmark against the hardware limits measured in the same run.

For each state size (GiB of random float32) and layout ("few large": 8 tensors; "many small":
a transformer-like mix of ~390 weights, biases and norms), and for each registered method
(``ckpt_methods``; unbroken's own join through ``unbroken_methods``), it measures:

- stall: how long one save call blocks the caller;
- durable save: until the files are fsynced, renamed into place and the parent fsynced;
- restore into preallocated tensors, with a cold page cache (sync; drop_caches) and warm;

and, in the same repetition, the limits they are compared with: a copy of the same tensors
into preallocated memory (numpy, one thread; torch ``copy_``), ``dd conv=fsync``,
``dd oflag=direct`` and 4 parallel ``oflag=direct`` writes of as many random bytes, and cold
``dd`` reads (``iflag=direct``, 4 parallel, buffered), each the best of two tries. Every cold
read, dd's and the methods' restores alike, starts right after an untimed read of the same
files and drop_caches (``bench_utils.cold_after_reading``: on virtual disks the time since the
bytes were last read changes a cold read by up to 4x). Ratios are taken per repetition against the limits of the same repetition, and the
median is reported (the machine is shared and noisy).

``--from-json results.json`` rewrites the reports of an earlier run without measuring.

Usage::

    python bench/checkpoint_bench.py [--sizes 1,4] [--reps 3] [--quick] [--out bench/results]
                                     [--workdir DIR] [--methods NAME,...] [--layouts ...]
                                     [--busy N] [--from-json PATH]

``--busy N`` (the loaded variant) runs N CPU-bound helper processes (a single-threaded matmul
loop each, like a training step's arithmetic) from before the first measurement until after
the last, so every figure of the run (limits included) is measured with the cores busy; the
reports say so, with the load average seen and the helpers' step rate.

Writes ``<out>/results.md``, ``<out>/results.json`` and ``<out>/checkpoint_bench.png``.
Needs root for drop_caches (otherwise "cold" is marked as not cold) and about 3x the largest
state in free disk space under the work directory.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from bench_utils import (
    DD_BLOCK_BYTES,
    BusyLoad,
    GiB,
    available_memory,
    check_free_space,
    cold_after_reading,
    dd,
    dd_parallel,
    drop_caches,
    machine_info,
    stripes,
    timed,
    write_random_file,
)
from ckpt_report import summarize, write_chart, write_report
from ckpt_methods import (
    CheckpointMethod,
    all_methods,
    dir_bytes,
    fsync_tree,
    remove_checkpoint,
    select,
    start_methods,
)

Shapes = dict[str, tuple[int, ...]]
LAYOUTS = ("few large", "many small")
#: Peak memory is about this many times the state (state, preallocated copy, a loaded or
#: staged copy, a shared-memory copy for the process writer), plus page cache.
MEMORY_FACTOR = 4.5


def log(msg: str) -> None:
    """Progress line on stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- states


def few_large_shapes(n_bytes: int, n_tensors: int = 8) -> Shapes:
    """``n_tensors`` equal 2-D tensors of 1024 columns."""
    rows = n_bytes // 4 // n_tensors // 1024
    return {f"block{i}.weight": (rows, 1024) for i in range(n_tensors)}


def _layer_shapes(i: int, d: int) -> Shapes:
    """One pre-norm transformer block of width ``d`` (12 tensors, about 12 d^2 elements)."""
    p = f"layers.{i}."
    return {
        p + "ln1.weight": (d,), p + "ln1.bias": (d,),
        p + "attn.qkv.weight": (3 * d, d), p + "attn.qkv.bias": (3 * d,),
        p + "attn.out.weight": (d, d), p + "attn.out.bias": (d,),
        p + "ln2.weight": (d,), p + "ln2.bias": (d,),
        p + "mlp.fc.weight": (4 * d, d), p + "mlp.fc.bias": (4 * d,),
        p + "mlp.proj.weight": (d, 4 * d), p + "mlp.proj.bias": (d,),
    }  # fmt: skip


def many_small_shapes(n_bytes: int, n_layers: int = 32, layer_share: float = 0.85) -> Shapes:
    """A model-like mix: ``n_layers`` transformer blocks (widest multiple of 64 that keeps
    them under ``layer_share`` of the bytes), final norm, positions, and a token embedding
    sized to fill the rest."""
    elems = n_bytes // 4
    d = 64
    while 12 * (d + 64) ** 2 * n_layers <= layer_share * elems:
        d += 64
    shapes: Shapes = {}
    for i in range(n_layers):
        shapes.update(_layer_shapes(i, d))
    shapes.update({"ln_f.weight": (d,), "ln_f.bias": (d,), "pos_embed": (2048, d)})
    used = sum(int(np.prod(s)) for s in shapes.values())
    shapes["tok_embed"] = ((elems - used) // d, d)
    return shapes


SHAPES: dict[str, Callable[[int], Shapes]] = {
    "few large": few_large_shapes,
    "many small": many_small_shapes,
}


#: Where the state's tensors live ("cpu" or "cuda"; set by --device).
DEVICE = "cpu"


def sync() -> None:
    """Wait for the device's queued work (copies to a CUDA tensor return before they are done)."""
    if DEVICE != "cpu":
        torch.cuda.synchronize()


def make_state(shapes: Shapes, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random normal float32 tensors (no NaN, so equality checks work; incompressible) on DEVICE."""
    gen = torch.Generator().manual_seed(seed)
    return {name: torch.randn(shape, generator=gen).to(DEVICE) for name, shape in shapes.items()}


def make_like(shapes: Shapes) -> dict[str, torch.Tensor]:
    """Preallocated, already faulted-in tensors to restore into, on DEVICE."""
    return {name: torch.empty(shape, device=DEVICE).zero_() for name, shape in shapes.items()}


def state_bytes(state: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in state.values())


def verify(like: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> None:
    """Raise if a restored tensor differs from the saved one."""
    for name, tensor in state.items():
        if not torch.equal(like[name], tensor):
            raise AssertionError(f"restored tensor {name!r} differs from the saved one")


def reset(like: dict[str, torch.Tensor]) -> None:
    """Zero the restore targets, so that a restore that writes nothing fails ``verify``."""
    for tensor in like.values():
        tensor.zero_()


# --------------------------------------------------------------------------- hardware limits


#: Every limit is the best of this many tries within a repetition: a limit is what the
#: hardware can do, and single dd runs on a shared machine vary by 2x or more.
LIMIT_TRIES = 2


def best_of(tries: int, prepare: Callable[[], object], run: Callable[[], float]) -> float:
    """Fastest of ``tries`` calls of ``run`` (each returning seconds), ``prepare`` untimed."""
    times = []
    for _ in range(tries):
        prepare()
        times.append(run())
    return min(times)


def memory_limits(state: dict[str, torch.Tensor], like: dict[str, torch.Tensor]) -> dict[str, float]:
    """Seconds to copy the state's bytes in memory: the floor of a snapshot (stall). On a GPU:
    device-to-host copies into preallocated pinned and pageable host memory."""
    pairs = [(state[name], like[name]) for name in state]
    if DEVICE != "cpu":
        return device_to_host_limits(pairs)
    copies = {
        "numpy copy (1 thread)": lambda: [np.copyto(d.numpy(), s.numpy()) for s, d in pairs],
        "torch copy_ (preallocated)": lambda: [d.copy_(s) for s, d in pairs],
        "torch clone (allocating)": lambda: [s.clone() for s, _ in pairs],
    }
    return {label: best_of(LIMIT_TRIES, gc.collect, lambda: timed(fn)) for label, fn in copies.items()}


#: dd processes of the parallel limits: one dd keeps one request in flight, which on a
#: virtual or NVMe disk measures latency more than bandwidth.
DD_WAYS = 4


def disk_limits(workdir: Path, src: Path) -> dict[str, float]:
    """Seconds for dd to write ``src``'s random bytes durably, and to read them back."""
    dst = workdir / "dd_dst.bin"
    parts = stripes(src.stat().st_size // DD_BLOCK_BYTES, DD_WAYS)

    def cache(path: Path) -> Callable[[], object]:
        """Preparation that leaves only ``path`` in the page cache (read untimed)."""
        return lambda: (drop_caches(), dd(f"if={path}", "of=/dev/null"))

    def cold(path: Path) -> Callable[[], object]:
        """Preparation of a cold read: the same state as a method's cold restore."""
        return lambda: cold_after_reading(path)

    def fresh_dst() -> None:
        dst.unlink(missing_ok=True)
        cache(src)()

    write, read = (f"if={src}", f"of={dst}"), (f"if={dst}", "of=/dev/null")
    par_write = [(*write, f"skip={a}", f"seek={a}", f"count={n}", "oflag=direct", "conv=notrunc,fsync") for a, n in parts]
    par_read = [(*read, f"skip={a}", f"count={n}", "iflag=direct") for a, n in parts]
    plan = [
        ("dd write conv=fsync", fresh_dst, [(*write, "conv=fsync")]),
        ("dd write oflag=direct", fresh_dst, [(*write, "conv=fsync", "oflag=direct")]),
        (f"dd write oflag=direct x{DD_WAYS} parallel", fresh_dst, par_write),
        ("dd read cold iflag=direct", cold(dst), [(*read, "iflag=direct")]),
        (f"dd read cold iflag=direct x{DD_WAYS} parallel", cold(dst), par_read),
        ("dd read cold buffered", cold(dst), [read]),
        ("dd read warm (page cache)", cache(dst), [read]),
    ]
    limits = {label: best_of(LIMIT_TRIES, prepare, lambda: dd_parallel(jobs)) for label, prepare, jobs in plan}
    dst.unlink()
    return limits


def device_to_host_limits(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
    """Seconds to copy the device tensors into preallocated host memory, pinned and pageable."""
    limits = {}
    for label, pinned in (("torch copy_ device->pinned host", True), ("torch copy_ device->pageable host", False)):
        hosts = [torch.empty(s.shape, dtype=s.dtype, pin_memory=pinned).zero_() for s, _ in pairs]

        def copy() -> None:
            for (s, _), h in zip(pairs, hosts):
                h.copy_(s, non_blocking=pinned)
            sync()

        limits[label] = best_of(LIMIT_TRIES, gc.collect, lambda: timed(copy))
    return limits


# --------------------------------------------------------------------------- methods


def measure_save(method: CheckpointMethod, state: dict[str, torch.Tensor], path: Path) -> dict:
    """Stall and durable save time of one save, from a clean page cache."""
    remove_checkpoint(path)
    drop_caches()
    sync()
    t0 = time.perf_counter()
    method.save(state, path)
    t1 = time.perf_counter()
    method.wait()
    t2 = time.perf_counter()
    # Durability check: a second fsync of a committed checkpoint finds nothing to write.
    refsync = timed(lambda: fsync_tree(path))
    return {"stall_s": t1 - t0, "save_s": t2 - t0, "refsync_s": refsync, "bytes_written": dir_bytes(path)}


def measure_restore(method: CheckpointMethod, path: Path, variant: str, like: dict, state: dict) -> dict:
    """Cold-cache then warm-cache restore time of one variant, each verified."""
    out = {}
    for label in ("cold_s", "warm_s"):
        reset(like)
        gc.collect()
        if label == "cold_s":
            cold_after_reading(path)  # the state of the dd cold reads (see cold_after_reading)
        out[label] = timed(lambda: (method.load(path, like, variant), sync()))
        verify(like, state)
    return out


def measure_method(method: CheckpointMethod, state: dict, like: dict, path: Path) -> dict:
    """One repetition for one method: save, then every restore variant; errors recorded."""
    try:
        sample = measure_save(method, state, path)
        sample["restore"] = {v: measure_restore(method, path, v, like, state) for v in method.restore_variants}
        return sample
    except Exception as exc:  # one failing peer must not stop the others
        log(f"  {method.name}: {exc!r}")
        return {"error": repr(exc)}
    finally:
        remove_checkpoint(path)
        gc.collect()


def prepare_method(method: CheckpointMethod, state: dict, path: Path) -> float | None:
    """Seconds of the method's one-time preparation for this state (None if it failed)."""
    try:
        return timed(lambda: method.prepare(state, path))
    except Exception as exc:  # the method's saves still run and report their own errors
        log(f"  {method.name}: prepare failed: {exc!r}")
        return None


# --------------------------------------------------------------------------- run


def run_layout(size: float, layout: str, reps: int, methods: dict, workdir: Path, src: Path) -> dict:
    """All repetitions of limits and methods for one state; each repetition interleaves them."""
    shapes = SHAPES[layout](int(size * GiB))
    log(f"{size:g} GiB {layout}: generating {len(shapes)} tensors")
    state, like = make_state(shapes), make_like(shapes)
    entry = {
        "size_gib": size, "layout": layout, "n_tensors": len(shapes),
        "state_bytes": state_bytes(state), "dd_bytes": src.stat().st_size,
        "limits": defaultdict(list), "methods": {name: [] for name in methods},
        "loadavg_1min": [os.getloadavg()[0]],
    }  # fmt: skip
    entry["prepare_s"] = {name: prepare_method(method, state, workdir / "ckpt") for name, method in methods.items()}
    for rep in range(reps):
        log(f"{size:g} GiB {layout}: repetition {rep + 1}/{reps}: limits")
        for source in (disk_limits(workdir, src), memory_limits(state, like)):
            for key, seconds in source.items():
                entry["limits"][key].append(seconds)
        for name, method in methods.items():
            log(f"{size:g} GiB {layout}: repetition {rep + 1}/{reps}: {name}")
            entry["methods"][name].append(measure_method(method, state, like, workdir / "ckpt"))
        entry["loadavg_1min"].append(os.getloadavg()[0])
    entry["limits"] = dict(entry["limits"])
    del state, like
    gc.collect()
    return entry


def run_size(size: float, args: argparse.Namespace, methods: dict, workdir: Path) -> list[dict]:
    """Both layouts of one size, sharing one random dd source file."""
    need = MEMORY_FACTOR * size * GiB
    if available_memory() < need:
        log(f"skipping {size:g} GiB: {available_memory() / GiB:.1f} GiB RAM available, ~{need / GiB:.1f} needed")
        return [{"size_gib": size, "skipped": "not enough RAM"}]
    src = workdir / "dd_src.bin"
    log(f"{size:g} GiB: writing the random dd source file")
    write_random_file(src, int(size * GiB) // DD_BLOCK_BYTES * DD_BLOCK_BYTES)
    try:
        return [run_layout(size, layout, args.reps, methods, workdir, src) for layout in args.layouts]
    finally:
        src.unlink(missing_ok=True)


# --------------------------------------------------------------------------- main


def cleanup_workdir(workdir: Path) -> None:
    """Remove what the benchmark leaves in the work directory, and the directory if empty."""
    remove_checkpoint(workdir / "ckpt")
    for name in ("dd_src.bin", "dd_dst.bin"):
        (workdir / name).unlink(missing_ok=True)
    try:
        workdir.rmdir()
    except OSError:
        pass


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="1,4", help="state sizes in GiB, comma-separated (default 1,4)")
    p.add_argument("--reps", type=int, default=3, help="repetitions; medians are reported (default 3)")
    p.add_argument("--quick", action="store_true", help="1 repetition, 1 GiB only")
    p.add_argument("--out", type=Path, default=Path("bench/results"), help="output folder")
    p.add_argument("--workdir", type=Path, help="scratch folder on the disk to test (default <out>/tmp)")
    p.add_argument("--methods", help="comma-separated method names (default: all registered)")
    p.add_argument("--layouts", default=",".join(LAYOUTS), help="comma-separated layouts")
    p.add_argument("--from-json", type=Path, help="only rewrite the reports of a results.json into --out")
    p.add_argument("--device", default="cpu", help="where the state lives: cpu (default) or cuda")
    p.add_argument("--busy", type=int, default=0, metavar="N",
                   help="loaded variant: N CPU-bound helper processes run beside every measurement")
    args = p.parse_args(argv)
    if args.busy < 0:
        p.error("--busy takes the number of busy helper processes (0 or more)")
    args.sizes = [1.0] if args.quick else [float(s) for s in args.sizes.split(",")]
    args.reps = 1 if args.quick else args.reps
    args.layouts = [s.strip() for s in args.layouts.split(",")]
    if unknown := set(args.layouts) - set(LAYOUTS):
        p.error(f"unknown layouts {sorted(unknown)}; known: {list(LAYOUTS)}")
    args.workdir = (args.workdir or args.out / "tmp").resolve()
    return args


def main(argv: list[str] | None = None) -> None:
    global DEVICE
    args = parse_args(argv)
    DEVICE = args.device
    if DEVICE != "cpu" and not torch.cuda.is_available():
        raise SystemExit(f"--device {DEVICE}: torch sees no CUDA device")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.from_json:
        write_outputs(args.out, json.loads(args.from_json.read_text()))
        return
    check_free_space(args.workdir, int(3 * max(args.sizes) * GiB) + GiB)
    cold_ok = drop_caches()
    if not cold_ok:
        log("drop_caches failed (not root?): cold restores will be reported as NOT cold")
    registry, unbroken_status = all_methods()
    log(unbroken_status)
    methods, setup = start_methods(select(registry, args.methods), args.workdir)
    for name, report in setup.items():
        if "setup_error" in report:
            log(f"setup of {name} failed, left out: {report['setup_error']}")
    data = {
        "command": " ".join(["python", *sys.argv]), "reps": args.reps, "device": DEVICE,
        "machine": machine_info(args.workdir), "cold_cache_ok": cold_ok,
        "unbroken_status": unbroken_status, "setup": setup, "runs": [], "busy": args.busy,
    }  # fmt: skip
    try:
        with BusyLoad(args.busy) as busy:
            for size in args.sizes:
                data["runs"] += run_size(size, args, methods, args.workdir)
                write_outputs(args.out, data)  # after every size, so a later failure loses less
        data["busy_steps_per_s"] = busy.steps_per_s
        write_outputs(args.out, data)
    finally:
        for method in methods.values():
            method.close()
        cleanup_workdir(args.workdir)


def write_outputs(out: Path, data: dict) -> None:
    """Summaries, then results.json, results.md and checkpoint_bench.png."""
    for entry in data["runs"]:
        if "methods" in entry:
            entry["summary"] = summarize(entry)
    (out / "results.json").write_text(json.dumps(data, indent=1))
    write_report(out, data)
    write_chart(out, data)
    log(f"wrote {out / 'results.md'}, results.json, checkpoint_bench.png")


if __name__ == "__main__":
    main()
