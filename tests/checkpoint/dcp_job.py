"""A 2-rank FSDP2 (gloo, CPU) program for tests/checkpoint/test_dcp.py: DCP saves into unbroken checkpoints.

Under torchrun with 2 ranks it: trains a tiny FSDP2 model with Adam; saves checkpoint A (step 2) and
B (step 3) with ``unbroken.checkpoint.dcp.save``; loads B into a freshly initialised model and
optimizer; makes rank 1's write of a third save fail (nothing may be committed); corrupts one byte
of rank 1's data file of B, then loads B by name (must be refused on every rank) and the newest
(must skip B and load A); saves D with ``async_save``; asks rank 1 to stop and checks both ranks
agree (``should_stop``). Each rank writes what it saw to
``OUT/rank<r>.json``; rank 0 writes A's full tensors (gathered) to ``OUT/expected-a.pt``.
"""

import json
import os
import sys
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
from unbroken.checkpoint.dcp.writer import UnbrokenWriter


def make(mesh, seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    for module in (model[0], model[2], model):
        fully_shard(module, mesh=mesh)
    return model, torch.optim.Adam(model.parameters(), lr=1e-2)


def train(model, opt, steps: range) -> None:
    for step in steps:
        x = torch.randn(4, 8, generator=torch.Generator().manual_seed(step))
        model(x).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()


def state(model, opt) -> dict:
    msd, osd = get_state_dict(model, opt)
    return {"model": msd, "optim": osd}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def outcome(fn) -> list:
    """[error type, message] of ``fn()``, or ["ok", its result]."""
    try:
        return ["ok", fn()]
    except Exception as exc:  # noqa: BLE001 - reported to the test
        return [type(exc).__name__, str(exc)]


def main() -> None:
    dist.init_process_group("gloo")
    rank, out = dist.get_rank(), Path(os.environ["OUT"])
    mesh = init_device_mesh("cpu", (2,))
    model, opt = make(mesh, 0)
    seen = {}
    with unbroken.init("dcp", keep=unbroken.keep_all(), exit_on_preempt=False) as run:
        train(model, opt, range(2))
        seen["a"] = udcp.save(state(model, opt), run, 2, {"note": "a"})
        expected_a = full(state(model, opt))
        if rank == 0:
            torch.save(expected_a, out / "expected-a.pt")
        train(model, opt, range(2, 3))
        seen["b"] = udcp.save(state(model, opt), run, 3)
        expected_b = full(state(model, opt))

        fresh, fresh_opt = make(mesh, 1)
        target = state(fresh, fresh_opt)
        seen["before_equal"] = same(full(target), expected_b)
        seen["load_b"] = udcp.load(target, run, seen["b"])
        set_state_dict(fresh, fresh_opt, model_state_dict=target["model"], optim_state_dict=target["optim"])
        seen["roundtrip_b"] = same(full(state(fresh, fresh_opt)), expected_b)
        seen["latest"] = udcp.load(state(*make(mesh, 2)), run)

        real_write = UnbrokenWriter.write_data
        if rank == 1:
            def failing(self, plan, planner):
                raise OSError(28, "injected: no space left on device")
            UnbrokenWriter.write_data = failing
        seen["failed_save"] = outcome(lambda: udcp.save(state(model, opt), run, 4))
        UnbrokenWriter.write_data = real_write
        seen["after_failure"] = [m.uuid for m in run.checkpoint.list()]

        dist.barrier()
        if rank == 0:
            damaged = run.checkpoint.store.local_path(seen["b"]) / "__1_0.distcp"
            data = bytearray(damaged.read_bytes())
            data[len(data) // 2] ^= 0x01
            damaged.write_bytes(bytes(data))
        dist.barrier()
        seen["named_corrupt"] = outcome(lambda: udcp.load(state(*make(mesh, 3)), run, seen["b"]))
        fallback, fallback_opt = make(mesh, 4)
        target = state(fallback, fallback_opt)
        seen["newest_after_corruption"] = udcp.load(target, run)
        set_state_dict(fallback, fallback_opt, model_state_dict=target["model"], optim_state_dict=target["optim"])
        seen["fallback_equals_a"] = same(full(state(fallback, fallback_opt)), expected_a)

        side = dist.new_group(backend="gloo")
        future = udcp.async_save(state(model, opt), run, 5, process_group=side)
        seen["async"] = outcome(lambda: future.result(timeout=60))
        seen["final"] = [m.uuid for m in run.checkpoint.list()]

        seen["should_stop_before"] = udcp.should_stop(run)
        if rank == 1:
            run.preempt.request("test stop on rank 1")
        seen["should_stop"] = udcp.should_stop(run)
        seen["preempted"] = run.preempted
    (out / f"rank{rank}.json").write_text(json.dumps(seen))
    dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
