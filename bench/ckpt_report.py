"""Reports of ``checkpoint_bench.py``: medians and ratios per repetition, markdown, chart.

Pure functions of the collected data (``results.json``), so ``--from-json`` rewrites the
reports of an earlier run without measuring.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench_utils import GiB, fmt, markdown_table, median

GB = 1e9


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


def load_line(data: dict) -> str:
    """What ran beside the measurements: the loaded variant's helpers, and the load average seen."""
    busy = data.get("busy", 0)
    seen = [v for e in data["runs"] for v in e.get("loadavg_1min", [])]
    load = f"1-minute load average during the measurements {min(seen):.1f}–{max(seen):.1f} " if seen else ""
    cores = data["machine"].get("cores", "?")
    if not busy:
        return f"Unloaded run (no helper processes; {load}on {cores} cores)."
    rates = data.get("busy_steps_per_s") or []
    rate = f"; their matmul steps per second: {', '.join(f'{r:.0f}' for r in rates)}" if rates else ""
    return (f"**Loaded variant**: {busy} CPU-bound helper process(es) (a single-threaded matmul loop each) "
            f"ran beside every measurement, limits included ({load}on {cores} cores{rate}). "
            f"The `busy` column says so in every row.")


def size_report(size: float, entries: list[dict], cold_ok: bool, busy: int = 0) -> str:
    """The markdown section of one state size (``busy``: helper processes beside it, a column)."""
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
                name, e["layout"], busy, fmt(m["stall_s"], 3), fmt(m["save_s"], 3),
                fmt(None if m["bytes_written"] is None else m["bytes_written"] / GiB, 3),
                fmt(m["stall_vs_copy"]), fmt(m["save_vs_dd"]), fmt(m.get("save_vs_best_dd")),
                fmt(m.get("refsync_s"), 3),
                "; ".join(m["errors"]) or "",
            ])  # fmt: skip
        for name, r in e["summary"]["restores"].items():
            restore_rows.append([
                name, e["layout"], busy, fmt(r["cold_s"], 3), fmt(r["warm_s"], 3),
                fmt(r["cold_vs_dd"]), fmt(r["warm_vs_dd"]),
            ])  # fmt: skip
    prepared = [f"{n} {s:.2f} s ({e['layout']})" for e in entries for n, s in e.get("prepare_s", {}).items()
                if s is not None and s >= 0.01]
    parts += [
        "### Save",
        "One-time preparation before the first save (untimed in the stall): " + (", ".join(prepared) or "none") + ".",
        markdown_table(
            ["method", "layout", "busy", "stall s", "durable save s", "written GiB",
             "stall ÷ memcpy", "save tput ÷ dd fsync tput", "save tput ÷ best dd write tput",
             "re-fsync s", "errors"],
            save_rows,
        ),
        f"### Restore into preallocated tensors ({cold} and warm page cache)",
        markdown_table(
            ["save → restore", "layout", "busy", f"{cold} s", "warm s",
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
- **first save**: each method's `prepare` runs once per state before its first repetition,
  untimed, as a training job would after building its model (unbroken async: its snapshot
  buffer allocated and faulted in, what `unbroken.init` does after a restore); its time is
  listed above the Save table. Every repetition's save, the first included, is in the medians.
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
  (untimed). **cold**: after an untimed read of the same files, then
  `sync; echo 3 > /proc/sys/vm/drop_caches` (the dd cold reads likewise: on this virtual disk
  the time since the bytes were last read changes a cold read by up to 4x). Cold restore is
  compared with the fastest cold dd read (`iflag=direct`, 4 parallel `iflag=direct`, buffered).
- Every limit is the best of 2 tries within a repetition (single dd runs on this shared
  machine vary 2x or more). Ratios are computed per repetition against the limits of the
  same repetition, then the median is taken (so a ratio need not equal the ratio of the
  medians shown).
- `dcp.async_save` (both executors) writes the same files as `dcp.save`; their restore is the
  `dcp.save → dcp.load` row.
- **busy**: the number of CPU-bound helper processes that ran beside the measurement
  (`--busy N`, the loaded variant; 0: none of ours, other users' work may still run). `dcp.async_save(process)` needs a process group (gloo, world
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
    sections = [size_report(size, entries, data["cold_cache_ok"], data.get("busy", 0)) for size, entries in by_size.items()]
    cold_line = "" if data["cold_cache_ok"] else "\n**drop_caches failed: 'cold' restores are NOT cold.**\n"
    text = "\n".join([
        "# Checkpoint benchmark", "", f"`{data['command']}` — {data['reps']} repetition(s), medians; tensors on {data.get('device', 'cpu')}.",
        load_line(data), "", cold_line, "## Machine", "", machine, "", NOTES, "### Methods", "", setup, "",
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
