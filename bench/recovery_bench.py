"""Recovery time: from SIGKILL of a training process under ``unbroken run`` to its first step after restore.

``unbroken run`` starts ``train_child.py`` (an MLP + Adam, saving every ``--save-every`` steps and
reporting each committed save). After a save is committed and a few more steps ran, the harness
SIGKILLs the training process, and the supervisor restarts it (``--backoff 0``). The restarted
child prints timestamps (see ``train_child.py``); the harness splits the recovery into:

- supervisor: kill -> the new process is forked (the supervisor notices the death, records the
  attempt, decides, spawns); unbroken's;
- interpreter start: fork -> the script's first line, less the start of a plain ``python -c``
  measured alone (that part is Python's), the rest is unbroken's parent-death wrapper;
- import torch (the user's), import unbroken (unbroken's);
- init: ``unbroken.init()`` (joins the trial, opens the index; unbroken's);
- restore: ``run.restore(state)``: find, lease, read, verify and load the newest checkpoint;
- first step: restored -> the first training step done (the user's code).

unbroken's overhead = supervisor + wrapper + import unbroken + init (restore reported beside it).
Repeated ``--kills`` times in one run; medians are reported (the machine is shared and noisy).

    python bench/recovery_bench.py [--kills 5] [--width 1024 --depth 8] [--out bench/results]

Writes ``<out>/recovery.md`` and ``<out>/recovery.json``.
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

from bench_utils import fmt, markdown_table
from child_events import Events, interpreter_start, unbroken_command

ROWS = [  # (label, key, whose)
    ("supervisor: kill -> new process forked", "supervisor", "unbroken"),
    ("interpreter start (plain `python -c`)", "python", "Python"),
    ("parent-death wrapper (rest of fork -> first line)", "wrapper", "unbroken"),
    ("import torch", "import_torch", "user"),
    ("import unbroken", "import_unbroken", "unbroken"),
    ("build the model, one step (Adam's moments)", "build", "user"),
    ("unbroken.init()", "init", "unbroken"),
    ("run.restore(state)", "restore", "unbroken (I/O)"),
    ("first training step", "first_step", "user"),
]


def one_recovery(events: Events, python_start: float) -> dict[str, float]:
    """Wait for a committed save and two more steps, kill, and time the restart's phases."""
    saved = events.next(lambda e: e["event"] == "saved")
    events.next(lambda e: e["event"] == "step" and e["step"] >= saved["step"] + 2)
    old_pid = events.child_pid
    t_kill = events.kill_child()
    start = events.next(lambda e: e["event"] == "start" and e["pid"] != old_pid)
    restored = events.next(lambda e: e["event"] == "restored")
    first = events.next(lambda e: e["event"] == "step")
    phases = {
        "supervisor": max(0.0, start["t_proc"] - t_kill),
        "python": python_start,
        "wrapper": max(0.0, start["t_main"] - max(start["t_proc"], t_kill) - python_start),
        "import_torch": start["t_torch"] - start["t_main"],
        "import_unbroken": start["t_imports"] - start["t_torch"],
        "build": restored["t_built"] - start["t_imports"],
        "init": restored["t_init"] - restored["t_built"],
        "restore": restored["t_restored"] - restored["t_init"],
        "first_step": first["t"] - restored["t_restored"],
    }
    phases["total"] = first["t"] - t_kill
    phases["resumed_at_step"] = restored["step"]
    return phases


def report(data: dict) -> str:
    rec = data["recoveries"]
    med = {key: statistics.median(r[key] for r in rec) for key in rec[0]}
    rows = [[label, whose, fmt(med[key], 3), " ".join(fmt(r[key], 3) for r in rec)] for label, key, whose in ROWS]
    ours = med["supervisor"] + med["wrapper"] + med["import_unbroken"] + med["init"]
    rows += [["**total: kill -> first step after restore**", "", fmt(med["total"], 3),
              " ".join(fmt(r["total"], 3) for r in rec)],
             ["**unbroken's overhead** (supervisor + wrapper + import + init)", "", f"**{ours:.3f}**", ""],
             ["unbroken's overhead + restore", "", fmt(ours + med["restore"], 3), ""]]
    return "\n\n".join([
        "# Recovery time after SIGKILL under `unbroken run`", f"`{data['command']}`",
        f"State: MLP {data['depth']} x {data['width']}² + Adam, {data['state_mib']:.0f} MiB checkpointed; "
        f"{len(rec)} kills; medians (single values vary with the machine's load; this one is shared).",
        markdown_table(["phase", "whose", "median s", "each kill s"], rows),
        "The child takes one step before the restore so that Adam's moments exist and are restored "
        "in place. `supervisor` is measured to the fork of the new process (10 ms resolution).",
    ]) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=5)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--depth", type=int, default=8, help="8 x 1024² + Adam = 96 MiB of state")
    p.add_argument("--save-every", type=int, default=10)
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="recovery-", dir=args.out))
    python_start = interpreter_start()
    child = ["--mode", "unbroken", "--save-every", str(args.save_every), "--wait-saves",
             "--width", str(args.width), "--depth", str(args.depth)]
    events = Events(unbroken_command(home, "recovery", child), log=home.parent / "recovery.log")
    try:
        recoveries = []
        for k in range(args.kills):
            recoveries.append(one_recovery(events, python_start))
            print(f"kill {k + 1}/{args.kills}: {recoveries[-1]['total']:.3f} s", file=sys.stderr, flush=True)
    finally:
        events.stop()
        shutil.rmtree(home, ignore_errors=True)
    state_mib = 3 * args.depth * (args.width * args.width + args.width) * 4 / 2**20
    data = {"command": " ".join(["python", *sys.argv]), "width": args.width, "depth": args.depth,
            "state_mib": state_mib, "python_start_s": python_start, "recoveries": recoveries,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %z")}
    (args.out / "recovery.json").write_text(json.dumps(data, indent=1))
    (args.out / "recovery.md").write_text(report(data))
    print(report(data))


if __name__ == "__main__":
    main()
