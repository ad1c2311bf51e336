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
``dd`` reads (``iflag=direct``, 4 parallel, buffered; after drop_caches), each the best of two
tries. Ratios are taken per repetition against the limits of the same repetition, and the
median is reported (the machine is shared and noisy).

``--from-json results.json`` rewrites the reports of an earlier run without measuring.

Usage::

    python bench/checkpoint_bench.py [--sizes 1,4] [--reps 3] [--quick] [--out bench/results]
                                     [--workdir DIR] [--methods NAME,...] [--layouts ...]
                                     [--from-json PATH]

Writes ``<out>/results.md``, ``<out>/results.json`` and ``<out>/checkpoint_bench.png``.
Needs root for drop_caches (otherwise "cold" is marked as not cold) and about 3x the largest
state in free disk space under the work directory.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from bench_utils import (
    DD_BLOCK_BYTES,
    GiB,
    available_memory,
    check_free_space,
    dd,
    dd_parallel,
    drop_caches,
    fmt,
    machine_info,
    markdown_table,
    median,
    stripes,
    timed,
    write_random_file,
)
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
GB = 1e9
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
        ("dd read cold iflag=direct", drop_caches, [(*read, "iflag=direct")]),
        (f"dd read cold iflag=direct x{DD_WAYS} parallel", drop_caches, par_read),
        ("dd read cold buffered", drop_caches, [read]),
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
            drop_caches()
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
    }  # fmt: skip
    for rep in range(reps):
        log(f"{size:g} GiB {layout}: repetition {rep + 1}/{reps}: limits")
        for source in (disk_limits(workdir, src), memory_limits(state, like)):
            for key, seconds in source.items():
                entry["limits"][key].append(seconds)
        for name, method in methods.items():
            log(f"{size:g} GiB {layout}: repetition {rep + 1}/{reps}: {name}")
            entry["methods"][name].append(measure_method(method, state, like, workdir / "ckpt"))
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


# --------------------------------------------------------------------------- summary


def _per_rep(samples: list[dict], key: Callable[[dict], float | None]) -> list[float | None]:
    """``key`` of every successful sample (None for failed ones)."""
    return [None if "error" in s else key(s) for s in samples]


def _ratio(nums: list[float | None], dens: list[float | None], scale: float = 1.0) -> float | None:
    """Median over repetitions of scale * num / den."""
    return median([None if n is None or d is None else scale * n / d for n, d in zip(nums, dens)])


def _fastest(limits: dict[str, list[float]], *prefixes: str) -> list[float]:
    """Per repetition, the fastest of the limits whose names start with one of ``prefixes``."""
    chosen = [v for k, v in limits.items() if k.startswith(prefixes)]
    return [min(times) for times in zip(*chosen)]


def summarize(entry: dict) -> dict:
    """Medians of every figure, and ratios against the limits of the same repetition.

    stall_vs_copy: stall / (faster of the numpy and torch copies)  >= 1; 1 is the floor.
    save_vs_dd: save throughput / dd conv=fsync throughput (the brief's reference).
    save_vs_best_dd: save throughput / fastest dd write             <= ~1; 1 is the disk.
    cold_vs_dd: cold restore throughput / fastest cold dd read      <= ~1.
    warm_vs_dd: warm restore throughput / dd read from page cache.
    """
    lim = entry["limits"]
    # throughput ratio = (state_bytes / t) / (dd_bytes / t_dd) = scale * t_dd / t
    scale = entry["state_bytes"] / entry["dd_bytes"]
    memcpy = _fastest(lim, "numpy copy", "torch copy_")
    cold_read = _fastest(lim, "dd read cold")
    best_write = _fastest(lim, "dd write")
    out = {"limits": {k: median(v) for k, v in lim.items()}, "methods": {}, "restores": {}}
    for name, samples in entry["methods"].items():
        stall = _per_rep(samples, lambda s: s["stall_s"])
        save = _per_rep(samples, lambda s: s["save_s"])
        out["methods"][name] = {
            "stall_s": median(stall), "save_s": median(save),
            "bytes_written": median(_per_rep(samples, lambda s: s["bytes_written"])),
            "refsync_s": median(_per_rep(samples, lambda s: s.get("refsync_s"))),
            "stall_vs_copy": _ratio(stall, memcpy),
            "save_vs_dd": _ratio(lim["dd write conv=fsync"], save, scale),
            "save_vs_best_dd": _ratio(best_write, save, scale),
            "errors": sorted({s["error"] for s in samples if "error" in s}),
        }  # fmt: skip
        ok = [s for s in samples if "error" not in s]
        for variant in ok[0]["restore"] if ok else ():
            cold = _per_rep(samples, lambda s: s["restore"][variant]["cold_s"])
            warm = _per_rep(samples, lambda s: s["restore"][variant]["warm_s"])
            out["restores"][f"{name} → {variant}"] = {
                "cold_s": median(cold), "warm_s": median(warm),
                "cold_vs_dd": _ratio(cold_read, cold, scale),
                "warm_vs_dd": _ratio(lim["dd read warm (page cache)"], warm, scale),
            }  # fmt: skip
    return out


# --------------------------------------------------------------------------- reports


def _limit_cell(entry: dict, key: str) -> str:
    """Seconds and throughput of one limit (dd moves dd_bytes, copies move the state)."""
    seconds = entry["summary"]["limits"][key]
    n_bytes = entry["dd_bytes"] if key.startswith("dd") else entry["state_bytes"]
    return "–" if seconds is None else f"{seconds:.3f} s ({n_bytes / seconds / GB:.2f} GB/s)"


def size_report(size: float, entries: list[dict], cold_ok: bool) -> str:
    """The markdown section of one state size."""
    if entries and "skipped" in entries[0]:
        return f"## {size:g} GiB\n\nSkipped: {entries[0]['skipped']}.\n"
    cold = "cold" if cold_ok else "cold (NOT cold: drop_caches failed)"
    parts = [f"## {size:g} GiB of float32"]
    layouts = [e["layout"] for e in entries]
    limit_rows = []
    for key in entries[0]["summary"]["limits"]:
        limit_rows.append([key] + [_limit_cell(e, key) for e in entries])
    desc = ", ".join(f"{e['layout']}: {e['n_tensors']} tensors, {e['state_bytes'] / GiB:.3f} GiB" for e in entries)
    parts += [f"### Hardware limits (median; {desc})", markdown_table(["limit", *layouts], limit_rows)]

    save_rows, restore_rows = [], []
    for e in entries:
        for name, m in e["summary"]["methods"].items():
            save_rows.append([
                name, e["layout"], fmt(m["stall_s"], 3), fmt(m["save_s"], 3),
                fmt(None if m["bytes_written"] is None else m["bytes_written"] / GiB, 3),
                fmt(m["stall_vs_copy"]), fmt(m["save_vs_dd"]), fmt(m.get("save_vs_best_dd")),
                fmt(m.get("refsync_s"), 3),
                "; ".join(m["errors"]) or "",
            ])  # fmt: skip
        for name, r in e["summary"]["restores"].items():
            restore_rows.append([
                name, e["layout"], fmt(r["cold_s"], 3), fmt(r["warm_s"], 3),
                fmt(r["cold_vs_dd"]), fmt(r["warm_vs_dd"]),
            ])  # fmt: skip
    parts += [
        "### Save",
        markdown_table(
            ["method", "layout", "stall s", "durable save s", "written GiB",
             "stall ÷ memcpy", "save tput ÷ dd fsync tput", "save tput ÷ best dd write tput",
             "re-fsync s", "errors"],
            save_rows,
        ),
        f"### Restore into preallocated tensors ({cold} and warm page cache)",
        markdown_table(
            ["save → restore", "layout", f"{cold} s", "warm s",
             f"{cold} tput ÷ dd cold read tput", "warm tput ÷ dd page-cache read tput"],
            restore_rows,
        ),
    ]  # fmt: skip
    return "\n\n".join(parts) + "\n"


NOTES = """\
How to read this:
- **stall**: time one save call blocks the caller; for synchronous methods it equals the
  durable save. **stall ÷ memcpy**: stall over the faster of two copies of the same tensors
  into preallocated memory (numpy `copyto`, one thread; torch `copy_`): the floor of a
  snapshot; 1.0 is the floor. "torch clone
  (allocating)" shows what a snapshot into freshly allocated memory pays (page faults).
- **durable save**: until every file and the staging directory are fsynced, the directory is
  renamed into place and the parent fsynced (the same commit for every method).
  **save tput ÷ dd fsync tput**: fraction of `dd bs=16M conv=fsync` throughput of random
  bytes. That dd writes everything, then flushes, one 16 MiB request at a time, so a writer
  that overlaps writing and flushing, or uses O_DIRECT with several requests in flight, can
  beat it (ratio > 1). **save tput ÷ best dd write tput** compares with the fastest of
  `conv=fsync`, `oflag=direct` and 4 parallel `oflag=direct` dd processes (the disk).
  **re-fsync**: a second fsync of every file after the save reported durable (untimed in
  the save): near zero when the method really wrote everything out; "–" where not recorded.
- **restore**: load and copy into preallocated tensors of the same names (what
  `load_state_dict` does; `dcp.load` fills them in place); every restore is verified
  (untimed). **cold**: after `sync; echo 3 > /proc/sys/vm/drop_caches`. Cold restore is
  compared with the fastest cold dd read (`iflag=direct`, 4 parallel `iflag=direct`, buffered).
- Every limit is the best of 2 tries within a repetition (single dd runs on this shared
  machine vary 2x or more). Ratios are computed per repetition against the limits of the
  same repetition, then the median is taken (so a ratio need not equal the ratio of the
  medians shown).
- `dcp.async_save` (both executors) writes the same files as `dcp.save`; their restore is the
  `dcp.save → dcp.load` row. `dcp.async_save(process)` needs a process group (gloo, world
  size 1, `file://` store); its writer process is spawned once during setup (see below).
"""


def write_report(out: Path, data: dict) -> None:
    """results.md from the collected data."""
    machine = markdown_table(["", ""], list(data["machine"].items()))
    setup = markdown_table(
        ["method", "one-time setup"],
        [[n, fmt(r.get("setup_s"), 3) + " s" if "setup_s" in r else r["setup_error"]] for n, r in data["setup"].items()],
    )
    by_size: dict[float, list[dict]] = defaultdict(list)
    for entry in data["runs"]:
        by_size[entry["size_gib"]].append(entry)
    sections = [size_report(size, entries, data["cold_cache_ok"]) for size, entries in by_size.items()]
    cold_line = "" if data["cold_cache_ok"] else "\n**drop_caches failed: 'cold' restores are NOT cold.**\n"
    text = "\n".join([
        "# Checkpoint benchmark", "", f"`{data['command']}` — {data['reps']} repetition(s), medians; tensors on {data.get('device', 'cpu')}.",
        cold_line, "## Machine", "", machine, "", NOTES, "### Methods", "", setup, "",
        data["unbroken_status"], "", *sections,
    ])  # fmt: skip
    (out / "results.md").write_text(text)


def write_chart(out: Path, data: dict) -> None:
    """checkpoint_bench.png: the three ratios per method, layout and size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = [e for e in data["runs"] if "summary" in e]
    sizes = sorted({e["size_gib"] for e in entries})
    if not sizes:
        return
    panels = [
        ("stall ÷ memcpy (lower is better; 1 = floor)", "methods", "stall_vs_copy"),
        ("save tput ÷ fastest dd write tput (higher is better)", "methods", "save_vs_best_dd"),
        ("cold restore tput ÷ cold dd read tput (higher is better)", "restores", "cold_vs_dd"),
    ]
    fig, axes = plt.subplots(len(sizes), 3, figsize=(18, 5 * len(sizes)), squeeze=False)
    for row, size in enumerate(sizes):
        group = [e for e in entries if e["size_gib"] == size]
        for col, (title, section, key) in enumerate(panels):
            ax = axes[row][col]
            names = list(group[0]["summary"][section])
            width = 0.8 / len(group)
            for i, e in enumerate(group):
                values = [e["summary"][section].get(n, {}).get(key) or 0.0 for n in names]
                ax.bar(np.arange(len(names)) + i * width, values, width, label=e["layout"])
            ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
            ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=30, ha="right", fontsize=8)
            ax.set_title(f"{size:g} GiB: {title}", fontsize=9)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "checkpoint_bench.png", dpi=110)
    plt.close(fig)


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
    args = p.parse_args(argv)
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
        "unbroken_status": unbroken_status, "setup": setup, "runs": [],
    }  # fmt: skip
    try:
        for size in args.sizes:
            data["runs"] += run_size(size, args, methods, args.workdir)
            write_outputs(args.out, data)  # after every size, so a later failure loses less
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
