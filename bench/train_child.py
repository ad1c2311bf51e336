"""The training process of the recovery and ETTR benchmarks: prints timestamps, trains, checkpoints.

Runs under ``unbroken run`` (``--mode unbroken``: ``unbroken.init`` with a save policy, restore,
``run.steps``) or in a plain shell restart loop (``--mode baseline``: ``torch.save`` every N steps
to a temporary file renamed into place, ``torch.load`` at start, what people write by hand).
Every line it prints for the harness starts with ``BENCH `` followed by one JSON object:

- ``{"event": "start", "pid", "t_proc", "t_main", "t_torch", "t_imports"}``: Unix times of the
  process's creation (from /proc, 10 ms resolution; for a command started through unbroken's
  parent-death wrapper, the wrapper's fork), the first line of this script, after
  ``import torch``, after ``import unbroken``;
- ``{"event": "restored", "step", "t_built", "t_init", "t_restored"}``: the model built (before
  ``init()``), after ``init()``, after the restore;
- ``{"event": "step", "step", "t"}``: after each training step (``step`` = steps completed);
- ``{"event": "saved", "step", "t"}``: a checkpoint of ``step`` steps is committed (``--mode unbroken``
  with ``--wait-saves``, and the baseline, whose saves are synchronous).

The model is an MLP of ``--depth`` layers of ``--width``² with Adam (state = 3x the parameters).
"""

import time

T_MAIN = time.time()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

T_TORCH = time.time()


def emit(event: str, **fields: object) -> None:
    print("BENCH " + json.dumps({"event": event, **fields}), flush=True)


def process_start_time() -> float:
    """Unix time at which this process was created (its pid forked): its age from /proc (start
    time and uptime, both in 10 ms ticks) subtracted from now."""
    with open("/proc/self/stat") as f:
        ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    return time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))


def build(width: int, depth: int) -> tuple[nn.Module, torch.optim.Optimizer, object]:
    """The model (``depth`` linear layers with ReLU between them), Adam, and one training step."""
    torch.manual_seed(0)
    blocks = [block for _ in range(depth) for block in (nn.Linear(width, width), nn.ReLU())]
    model = nn.Sequential(*blocks[:-1])
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x, y = torch.randn(32, width), torch.randn(32, width)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()

    return model, opt, step


def policy(args: argparse.Namespace):
    import unbroken

    if args.policy == "auto":
        return unbroken.auto_interval(mtbf_hint=args.mtbf_hint, cost_hint=0.2, min_seconds=0.5, max_seconds=600)
    if args.policy == "seconds":
        return unbroken.every_seconds(args.save_seconds)
    return unbroken.every_steps(args.save_every)


def run_unbroken(args: argparse.Namespace, model: nn.Module, opt: torch.optim.Optimizer, step) -> None:
    import unbroken

    t_built = time.time()
    with unbroken.init(save=policy(args)) as run:
        t_init = time.time()
        state = unbroken.State(model=model, optimizer=opt, rng=False)
        start = run.restore(state)
        emit("restored", step=start, t_built=t_built, t_init=t_init, t_restored=time.time())
        latest = run.latest_checkpoint
        for index in run.steps(start, args.steps):
            step()
            emit("step", step=index + 1, t=time.time())
            if args.wait_saves and run.latest_checkpoint != latest:
                run.wait_for_saves()
                latest = run.latest_checkpoint
                emit("saved", step=index + 1, t=time.time())


def run_baseline(args: argparse.Namespace, model: nn.Module, opt: torch.optim.Optimizer, step) -> None:
    path = os.path.join(args.dir, "ckpt.pt")
    start = 0
    t_built = time.time()
    if os.path.exists(path):
        saved = torch.load(path, weights_only=True)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        start = saved["step"]
    emit("restored", step=start, t_built=t_built, t_init=t_built, t_restored=time.time())
    for index in range(start, args.steps):
        step()
        emit("step", step=index + 1, t=time.time())
        if (index + 1) % args.save_every == 0:
            tmp = path + ".tmp"
            with open(tmp, "wb") as f:
                torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": index + 1}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            emit("saved", step=index + 1, t=time.time())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=("unbroken", "baseline"), default="unbroken")
    p.add_argument("--policy", choices=("steps", "seconds", "auto"), default="steps")
    p.add_argument("--save-every", type=int, default=20, help="steps between saves (policy steps; baseline)")
    p.add_argument("--save-seconds", type=float, default=5.0, help="seconds between saves (policy seconds)")
    p.add_argument("--mtbf-hint", type=float, default=10.0, help="auto_interval's prior MTBF, seconds")
    p.add_argument("--wait-saves", action="store_true", help="report each committed save (waits for it)")
    p.add_argument("--steps", type=int, default=10**9)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--depth", type=int, default=8)
    p.add_argument("--dir", default=".", help="baseline: where ckpt.pt is kept")
    args = p.parse_args()
    if args.mode == "unbroken":
        import unbroken  # noqa: F401 - timed: the import is part of a restart
    emit("start", pid=os.getpid(), t_proc=process_start_time(), t_main=T_MAIN, t_torch=T_TORCH, t_imports=time.time())
    torch.set_num_threads(1)
    model, opt, step = build(args.width, args.depth)
    step()  # Adam's moments exist before the first restore, so they are restored in place
    (run_unbroken if args.mode == "unbroken" else run_baseline)(args, model, opt, step)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
