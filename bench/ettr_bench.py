"""ETTR (effective training time ratio) under random SIGKILLs: unbroken's policies against a hand-written loop.

Each configuration trains ``train_child.py`` (an MLP + Adam) for ``--seconds`` of wall time while
the harness SIGKILLs the training process at random times: gaps drawn from an exponential
distribution of mean ``--mtbf`` seconds (seeded: every configuration gets the same kill times,
measured from its own start). Configurations:

- ``unbroken, every N steps``: ``unbroken run`` (``--backoff 0``) with ``every_steps(N)``;
- ``unbroken, auto_interval``: the same with ``unbroken.auto_interval(mtbf_hint=--mtbf)`` (Young/Daly
  from the measured save cost and the failures of the trial's history);
- ``torch.save + shell loop``: ``torch.save`` every N steps (temp file, fsync, rename) and
  ``while ! python train.py; do :; done``, what people write by hand.

ETTR = steps in the model at the end / steps an undisturbed run makes in the same wall time: the
share of the wall time that went into training steps the final model keeps. The undisturbed run
(``reference``: the same script, no checkpoints, no kills) runs before and after the others and
their mean is used, so a machine that gets slower or faster during the benchmark moves every
configuration alike. The table also gives the older figure (final step x the fastest median step
time / wall time), which counts every slow step on a shared machine as lost. Scaled down:
real MTBFs are hours and restarts cost the same seconds, so absolute ETTRs here are far below
production ones; the comparison between configurations is the point. One run per configuration,
on a shared, noisy machine: differences of a few points are noise.

    python bench/ettr_bench.py [--seconds 40] [--mtbf 8] [--seed 0] [--save-every 100] [--out bench/results]

Writes ``<out>/ettr.md`` and ``<out>/ettr.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_utils import fmt, markdown_table
from child_events import Events, child_command, unbroken_command


#: The configuration without checkpoints or kills; it runs first and last.
REFERENCE = "reference: no checkpoints, no kills"


def kill_times(seconds: float, mtbf: float, seed: int) -> list[float]:
    """Seconds after the start at which to kill: exponential gaps of mean ``mtbf``."""
    rng = np.random.default_rng(seed)
    out, t = [], 0.0
    while True:
        t += float(rng.exponential(mtbf))
        if t >= seconds:
            return out
        out.append(t)


def training_pid(top: int) -> int | None:
    """The newest child process of ``top`` (the supervisor or the shell loop): the training process."""
    children: list[int] = []
    for task in os.listdir(f"/proc/{top}/task"):
        try:
            children += [int(p) for p in open(f"/proc/{top}/task/{task}/children").read().split()]
        except OSError:
            continue
    return max(children) if children else None


def commands(args: argparse.Namespace, work: Path) -> dict[str, list[str]]:
    size = ["--width", str(args.width), "--depth", str(args.depth)]
    every = ["--save-every", str(args.save_every)]
    loop = shlex.join(child_command("--mode", "baseline", "--dir", str(work / "baseline"), *every, *size))
    (work / "baseline").mkdir(parents=True)
    reference = shlex.join(child_command("--mode", "baseline", "--dir", str(work / "reference"),
                                         "--save-every", str(10**15), *size))
    (work / "reference").mkdir(parents=True)
    return {
        REFERENCE: ["bash", "-c", reference],
        f"unbroken, every {args.save_every} steps": unbroken_command(work / "fixed", "ettr", ["--policy", "steps", *every, *size]),
        "unbroken, auto_interval": unbroken_command(work / "auto", "ettr", ["--policy", "auto", "--mtbf-hint",
                                                                           str(args.mtbf), *size]),
        f"torch.save every {args.save_every} steps + shell loop": ["bash", "-c", f"until {loop}; do :; done"],
    }


def run_config(argv: list[str], seconds: float, kills: list[float], log: Path) -> dict:
    """Run one configuration for ``seconds``, killing at ``kills``; return its figures."""
    events = Events(argv, log=log)
    t0 = time.monotonic()
    done = 0
    try:
        for at in [*kills, seconds]:
            time.sleep(max(0.0, at - (time.monotonic() - t0)))
            if at < seconds and (pid := training_pid(events.proc.pid)) is not None:
                try:
                    os.kill(pid, signal.SIGKILL)
                    done += 1
                except ProcessLookupError:
                    pass
        wall = time.monotonic() - t0
        seen = events.drain()
    finally:
        events.stop()
    steps = [e for e in seen if e["event"] == "step"]
    gaps = [b["t"] - a["t"] for a, b in zip(steps, steps[1:]) if b["step"] == a["step"] + 1]
    step_s = statistics.median(gaps) if gaps else None
    final = steps[-1]["step"] if steps else 0
    starts = sum(1 for e in seen if e["event"] == "start")
    return {"wall_s": wall, "kills": done, "starts": starts, "final_step": final,
            "steps_run": len(steps), "step_s": step_s}


def add_ettr(results: dict[str, dict], references: list[dict]) -> tuple[list[float], float | None]:
    """ETTR of every configuration (``results`` in the order they ran, between the reference runs)
    against the undisturbed steps per second at its place in that order -- linear between the
    reference run before and the one after, so a steady drift of the machine's speed moves every
    configuration alike -- and the older figure against one step time (the fastest median: the
    same code runs in each). Returns ``(reference steps per second, fastest median step time)``."""
    rates = [r["final_step"] / r["wall_s"] for r in references if r["wall_s"] > 0]
    medians = [r["step_s"] for r in [*results.values(), *references] if r["step_s"]]
    fastest = min(medians) if medians else None
    slots = len(results) + 1
    for place, r in enumerate(results.values(), start=1):
        rate = rates[0] + (rates[-1] - rates[0]) * place / slots if rates else None
        r["reference_rate"] = rate
        r["ettr"] = r["final_step"] / (rate * r["wall_s"]) if rate else 0.0
        r["ettr_median"] = r["final_step"] * fastest / r["wall_s"] if fastest else 0.0
    return rates, fastest


def report(data: dict) -> str:
    rows = [[name, fmt(r["ettr"], 3), fmt(r["ettr_median"], 3), str(r["final_step"]), str(r["steps_run"]),
             fmt(r["step_s"], 4), str(r["kills"]), str(r["starts"]), fmt(r["wall_s"], 1)]
            for name, r in data["results"].items()]
    rows += [[f"{REFERENCE} ({when})", "1", "", str(r["final_step"]), str(r["steps_run"]), fmt(r["step_s"], 4),
              "0", "1", fmt(r["wall_s"], 1)] for when, r in zip(("first", "last"), data["references"])]
    return "\n\n".join([
        "# ETTR under random SIGKILLs", f"`{data['command']}`",
        f"MLP {data['depth']} x {data['width']}² + Adam ({data['state_mib']:.0f} MiB of state); "
        f"kills at exponential gaps of mean {data['mtbf']:g} s (seed {data['seed']}, the same times for every "
        f"configuration); {data['seconds']:g} s per configuration; one run each (noisy machine: a few "
        "points of ETTR are noise).",
        markdown_table(["configuration", "ETTR", "ETTR (median step)", "final step", "steps run (incl. redone)",
                        "step s (median)", "kills", "process starts", "wall s"], rows),
        f"ETTR = final step / (undisturbed steps per second x wall time); the undisturbed rate is "
        f"linear between the reference runs before and after ({' and '.join(fmt(x, 2) for x in data['reference_rates'])} "
        "steps/s), by the configuration's place in the order they ran (the order of the table). "
        f"ETTR (median step) = final step x the fastest median step time ({fmt(data['step_s'], 4)} s) / wall "
        "time. Steps run beyond the final step were lost to kills and redone.",
    ]) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=40.0, help="wall time per configuration")
    p.add_argument("--mtbf", type=float, default=8.0, help="mean seconds between kills")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=100, help="steps between saves (fixed interval, baseline)")
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--depth", type=int, default=8)
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ettr-", dir=args.out))
    kills = kill_times(args.seconds, args.mtbf, args.seed)
    results, references = {}, []
    try:
        configs = commands(args, work)
        order = [REFERENCE, *(name for name in configs if name != REFERENCE), REFERENCE]
        for number, name in enumerate(order):
            reference = name == REFERENCE
            print(f"{name}: {0 if reference else len(kills)} kills in {args.seconds:g} s", file=sys.stderr, flush=True)
            figures = run_config(configs[name], args.seconds, [] if reference else kills,
                                 args.out / f"ettr-{number}.log")
            print(f"  {figures}", file=sys.stderr, flush=True)
            if reference:
                references.append(figures)
            else:
                results[name] = figures
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rates, step_s = add_ettr(results, references)
    data = {"step_s": step_s, "reference_rates": rates, "references": references,
            "command": " ".join(["python", *sys.argv]), "seconds": args.seconds, "mtbf": args.mtbf,
            "seed": args.seed, "width": args.width, "depth": args.depth,
            "state_mib": 3 * args.depth * (args.width ** 2 + args.width) * 4 / 2**20, "results": results}
    (args.out / "ettr.json").write_text(json.dumps(data, indent=1))
    (args.out / "ettr.md").write_text(report(data))
    print(report(data))


if __name__ == "__main__":
    main()
