"""A 2-rank DDP training on gloo/CPU for the tests: deterministic, saves every step.

Environment: STEPS (total), OUT (final parameters of rank r are written to OUT.rank<r>.pt),
SLOW (seconds per step, so a test can signal it mid-run), STEP_FILE (each rank appends its steps),
OWN_MB (a per-rank buffer of that many MiB, changed every step, so each rank writes a shard of its own
that takes a while: a kill can land in the middle of it).
"""

import os
import time

import torch
import torch.distributed as dist

import unbroken


def main() -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(8, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    total, slow = int(os.environ.get("STEPS", "20")), float(os.environ.get("SLOW", "0"))
    with unbroken.init("ddp", save=unbroken.every_steps(int(os.environ.get("EVERY", "1")))) as run:
        own = torch.zeros(int(float(os.environ.get("OWN_MB", "0")) * 2**18))
        state = unbroken.State(model=model, optimizer=opt, own=own, replicated=("model", "optimizer"))
        start = run.restore(state)
        gen = torch.Generator().manual_seed(1000 + rank)
        for step in run.steps(start, total):
            gen.manual_seed(1000 * step + rank)
            x = torch.randn(16, 8, generator=gen)
            loss = model(x).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            own.add_(1.0)
            run.report(step + 1, loss=loss.item())
            if os.environ.get("STEP_FILE"):
                with open(f"{os.environ['STEP_FILE']}.rank{rank}", "a") as f:
                    f.write(f"{step + 1}\n")
            if slow:
                time.sleep(slow)
        if not run.preempted and os.environ.get("OUT"):
            final = {k: v.clone() for k, v in model.module.state_dict().items()}
            final.update({f"momentum.{i}": opt.state[p]["momentum_buffer"].clone() for i, p in enumerate(model.parameters())})
            final["own"] = own.clone()
            torch.save(final, f"{os.environ['OUT']}.rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
