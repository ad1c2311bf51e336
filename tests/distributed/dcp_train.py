"""A 2-rank FSDP2 training (gloo, CPU) that checkpoints through DCP into unbroken checkpoints and resumes.

Environment: STEPS (total), SLOW (seconds per step), STEP_FILE (each rank appends its steps), OUT (each
rank writes the full parameters and Adam moments at the end to OUT.rank<r>.pt). Saves after every step
(synchronously: a kill can land in a save), stops when the ranks agree (udcp.should_stop).
"""

import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

import unbroken
from unbroken.checkpoint import dcp as udcp
sys.path.append(str(Path(__file__).resolve().parents[1]))  # tests/, last: the shared helper, shadowing nothing
from dcp_tensors import full  # noqa: E402


def main() -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8))
    for module in (model[0], model[2], model):
        fully_shard(module, mesh=init_device_mesh("cpu", (2,)))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    total, slow = int(os.environ["STEPS"]), float(os.environ.get("SLOW", "0"))
    with unbroken.init("dcp-train", keep=unbroken.keep_latest(2)) as run:
        msd, osd = get_state_dict(model, opt)
        state = {"model": msd, "optim": osd, "step": torch.zeros((), dtype=torch.int64)}
        if udcp.load(state, run) is not None:
            set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
        for step in range(int(state["step"]), total):
            x = torch.randn(16, 32, generator=torch.Generator().manual_seed(step))
            model(x).pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
            with open(f"{os.environ['STEP_FILE']}.rank{rank}", "a") as f:
                f.write(f"{step + 1}\n")
            msd, osd = get_state_dict(model, opt)
            udcp.save({"model": msd, "optim": osd, "step": torch.tensor(step + 1)}, run, steps_completed=step + 1)
            if udcp.should_stop(run):
                break
            time.sleep(slow)
        msd, osd = get_state_dict(model, opt)
        final = full({"model": msd, "optim": osd})  # a collective: both ranks
        if not run.preempted:
            torch.save(final, f"{os.environ['OUT']}.rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
