"""Training overhead of periodic checkpoints, per method, against the same loop without them.

A CPU training loop (an MLP of ``--depth`` square layers of ``--width`` + Adam) whose
checkpointed state (parameters and both Adam moments) is >= 1 GiB runs a fixed number of
steps, chosen once so that one run takes about ``--target-seconds``. Every run repeats the
same steps: a baseline without checkpoints, then one run per method, then the baseline again
(its spread is the noise floor). Saves follow one step-based schedule for every method: a save
after every ``save_every`` steps, ``save_every`` being ``--interval`` seconds of baseline steps
(or ``--save-every``), so each method saves at the same steps and the same number of times.
Async methods keep training while their writer runs, so their cost shows up both as blocked
time (the stall, plus waiting for the previous save) and as interference (a writer competing
for the same cores, or for the GIL).

Usage::

    python bench/training_overhead.py [--interval 30 | --save-every N] [--target-seconds 150] [--steps N]
                                      [--methods NAME,...] [--out bench/results] [--quick]

Writes ``<out>/training_overhead.md`` and ``<out>/training_overhead.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from bench_utils import GiB, check_free_space, fmt, machine_info, markdown_table, median, timed
from ckpt_methods import CheckpointMethod, all_methods, remove_checkpoint, select, start_methods

BASELINE = "no checkpoints"


def log(msg: str) -> None:
    """Progress line on stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the training job


def build_job(width: int, depth: int, batch: int) -> tuple[Callable[[], None], dict[str, torch.Tensor]]:
    """A training step closure, and the flat state a checkpoint saves (live references).

    One step is taken here so that Adam's moments exist before the state is collected.
    """
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.ReLU()]
    model = nn.Sequential(*layers[:-1])
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x, y = torch.randn(batch, width), torch.randn(batch, width)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()

    step()
    state = {f"model.{name}": p.detach() for name, p in model.named_parameters()}
    for i, p in enumerate(model.parameters()):
        for key, value in opt.state[p].items():
            state[f"optim.{i}.{key}"] = value
    return step, state


def warm_up_and_calibrate(step: Callable[[], None], warmup: int = 5, probe: int = 5) -> float:
    """Run ``warmup`` untimed steps (first steps are slow: page faults, allocator), then
    return the seconds of one step without checkpoints."""
    for _ in range(warmup):
        step()
    return timed(lambda: [step() for _ in range(probe)]) / probe


# --------------------------------------------------------------------------- one run


class Rotation:
    """Numbered checkpoint paths; keeps the two newest (the committed one and the next)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.count = 0

    def path(self, index: int) -> Path:
        return self.workdir / f"ckpt-{index:04d}"

    def next_path(self) -> Path:
        self.count += 1
        return self.path(self.count)

    def prune(self) -> None:
        """Delete every checkpoint older than the previous one (committed by now)."""
        for index in range(1, self.count - 1):
            remove_checkpoint(self.path(index))

    def clear(self) -> None:
        for index in range(1, self.count + 1):
            remove_checkpoint(self.path(index))


def run_loop(
    step: Callable[[], None],
    steps: int,
    state: dict[str, torch.Tensor],
    method: CheckpointMethod | None,
    workdir: Path,
    save_every: int,
) -> dict[str, float]:
    """Train ``steps`` steps, saving after every ``save_every`` steps when a method is given.

    Blocked time counts save calls (which first wait for the previous save), pruning of old
    checkpoints, and the final wait for the last save: the run is over only when its last
    checkpoint is durable.
    """
    rotation = Rotation(workdir)
    blocked, saves, step_times = 0.0, 0, []
    t_start = time.perf_counter()
    try:
        for index in range(steps):
            step_times.append(timed(step))
            if method is not None and (index + 1) % save_every == 0:
                t0 = time.perf_counter()
                method.save(state, rotation.next_path())
                rotation.prune()
                blocked += time.perf_counter() - t0
                saves += 1
        if method is not None:
            blocked += timed(method.wait)
        wall = time.perf_counter() - t_start
    finally:
        rotation.clear()
    return {"wall_s": wall, "checkpoints": saves, "blocked_s": blocked, "median_step_s": median(step_times)}


# --------------------------------------------------------------------------- report


def overheads(runs: dict[str, dict], baselines: list[float], steps: int) -> list[list[str]]:
    """Table rows per run.

    Two estimates of the overhead, because the machine's speed drifts between runs:
    against the mean of the baseline runs, and within the run itself (wall time over
    ``steps`` x the run's median step time: drift-free, but it also counts the run's own
    slow steps, which the baseline rows show as the noise floor).
    """
    base = sum(baselines) / len(baselines)
    rows = []
    for name, r in runs.items():
        ideal = steps * r["median_step_s"]
        excess = r["wall_s"] - ideal
        rows.append([
            name, fmt(r["wall_s"], 1), fmt(r["median_step_s"], 3), str(r["checkpoints"]),
            fmt(r["blocked_s"], 2), fmt(r["blocked_s"] / r["checkpoints"] if r["checkpoints"] else None, 2),
            fmt(100 * (r["wall_s"] - base) / base, 1), fmt(100 * excess / ideal, 1),
            fmt(excess - r["blocked_s"], 1),
        ])  # fmt: skip
    return rows


def write_report(out: Path, data: dict) -> None:
    """training_overhead.md from the collected data."""
    b = data["baselines_s"]
    noise = 100 * (max(b) - min(b)) / (sum(b) / len(b))
    header = ["run", "wall s", "median step s", "checkpoints", "blocked s", "blocked s per checkpoint",
              "overhead % vs baseline runs", "overhead % in-run", "interference s (in-run excess − blocked)"]  # fmt: skip
    text = "\n\n".join([
        "# Training overhead of periodic checkpoints",
        f"`{data['command']}`",
        markdown_table(["", ""], list(data["machine"].items())),
        f"Job: MLP {data['config']['depth']} x {data['config']['width']}² + Adam, batch "
        f"{data['config']['batch']}; checkpointed state {data['state_bytes'] / GiB:.3f} GiB in "
        f"{data['n_tensors']} tensors; {data['steps']} steps per run; a save after every {data['save_every']} steps (about "
        f"{data['save_every'] * data['step_s']:.1f} s of baseline training; the same steps for every method); "
        "2 most recent checkpoints kept.",
        f"Baseline runs (first and last): {', '.join(f'{v:.1f} s' for v in b)}; their spread, "
        f"{noise:.1f} %, is the noise floor of the 'vs baseline runs' column.",
        markdown_table(header, overheads(data["runs"], b, data["steps"])),
        "blocked = time inside save calls (incl. waiting for the previous save), pruning, and "
        "the final wait. overhead % vs baseline runs = wall over the mean baseline wall. "
        "overhead % in-run = wall over (steps x this run's median step time): immune to drift "
        "between runs; the baseline rows give its noise floor. interference = in-run excess "
        "not spent blocked: slower steps while a background writer competes for the cores or "
        "the GIL (plus noise).",
        data["unbroken_status"],
        "Failed runs: " + ("; ".join(f"{n}: {e}" for n, e in data["errors"].items()) or "none"),
        "Setup (one-time, not in the runs): "
        + ", ".join(f"{n}: {fmt(r.get('setup_s'), 2)} s" if "setup_s" in r else f"{n}: {r['setup_error']}"
                    for n, r in data["setup"].items()),
    ])  # fmt: skip
    (out / "training_overhead.md").write_text(text + "\n")


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--interval", type=float, default=30.0, help="seconds of baseline training between saves")
    p.add_argument("--save-every", type=int, help="steps between saves (default: --interval / the step time)")
    p.add_argument("--target-seconds", type=float, default=150.0, help="wall time of a baseline run")
    p.add_argument("--steps", type=int, help="steps per run (default: calibrated to --target-seconds)")
    p.add_argument("--width", type=int, default=4096)
    p.add_argument("--depth", type=int, default=6, help="layers; 6 x 4096² + Adam = 1.13 GiB of state")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--methods", help="comma-separated method names (default: all registered)")
    p.add_argument("--quick", action="store_true", help="60 s runs, a save every 15 s")
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    p.add_argument("--workdir", type=Path, help="scratch folder (default <out>/tmp)")
    args = p.parse_args(argv)
    if args.quick:
        args.target_seconds, args.interval = 60.0, 15.0
    args.workdir = (args.workdir or args.out / "tmp").resolve()
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    step, state = build_job(args.width, args.depth, args.batch)
    n_bytes = sum(t.numel() * t.element_size() for t in state.values())
    check_free_space(args.workdir, 3 * n_bytes + GiB)
    registry, unbroken_status = all_methods()
    log(unbroken_status)
    methods, setup = start_methods(select(registry, args.methods), args.workdir)
    step_s = warm_up_and_calibrate(step)
    steps = args.steps or max(1, round(args.target_seconds / step_s))
    save_every = args.save_every or max(1, round(args.interval / step_s))
    log(f"state {n_bytes / GiB:.3f} GiB in {len(state)} tensors; {steps} steps per run; a save every {save_every} steps")

    order: list[tuple[str, CheckpointMethod | None]] = [(BASELINE, None), *methods.items(), (BASELINE, None)]
    runs, baselines, errors = {}, [], {}
    try:
        for name, method in order:
            log(f"run: {name}")
            try:
                result = run_loop(step, steps, state, method, args.workdir, save_every)
            except Exception as exc:  # one failing method must not stop the others
                log(f"  {name} failed: {exc!r}")
                errors[name] = repr(exc)
                continue
            log(f"  {result}")
            if method is None:
                baselines.append(result["wall_s"])
                name = f"{BASELINE} ({len(baselines)})"
            runs[name] = result
    finally:
        for method in methods.values():
            method.close()
        try:
            args.workdir.rmdir()
        except OSError:
            pass
    data = {
        "command": " ".join(["python", *sys.argv]), "machine": machine_info(args.workdir),
        "config": {k: v for k, v in vars(args).items() if k in ("interval", "width", "depth", "batch")},
        "state_bytes": n_bytes, "n_tensors": len(state), "steps": steps, "save_every": save_every, "step_s": step_s,
        "unbroken_status": unbroken_status, "setup": setup, "runs": runs, "baselines_s": baselines, "errors": errors,
    }  # fmt: skip
    (args.out / "training_overhead.json").write_text(json.dumps(data, indent=1))
    write_report(args.out, data)
    log(f"wrote {args.out / 'training_overhead.md'}")


if __name__ == "__main__":
    main()
