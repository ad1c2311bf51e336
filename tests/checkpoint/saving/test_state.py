"""State: torch training objects, random generators and plain values come back bitwise."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from ckpt_helpers import fresh_store, restore, save

from unbroken.checkpoint import CheckpointStore, State
from unbroken.checkpoint.saving.state import capture_global_rng, restore_global_rng
from unbroken.errors import ConfigError, StateMismatch
from unbroken.storage import LocalStorage


@pytest.fixture
def store(tmp_path) -> CheckpointStore:
    return CheckpointStore(LocalStorage(tmp_path / "ckpts"))


def make_scaler():
    """A CPU GradScaler, or None where this torch cannot scale on the CPU."""
    try:
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, growth_interval=2)
        w = torch.nn.Parameter(torch.ones(2))
        opt = torch.optim.SGD([w], lr=0.1)
        scaler.scale((w * 2).sum()).backward()
        scaler.step(opt)
        scaler.update()
        return torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, growth_interval=2)
    except Exception:  # noqa: BLE001 - any failure means "not supported here"
        return None


def training_objects(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.01, betas=(0.8, 0.95))
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    return model, opt, sched, make_scaler()


def train_step(model, opt, sched, scaler, gen: torch.Generator) -> None:
    x = torch.randn(16, 4, generator=gen)
    y = torch.randn(16, 2, generator=gen)
    opt.zero_grad()
    loss = torch.nn.functional.mse_loss(model(x), y)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    else:
        loss.backward()
        opt.step()
    sched.step()


def assert_tree_bitwise(a, b, where="state"):
    assert type(a) is type(b) or (isinstance(a, dict) and isinstance(b, dict)), f"{where}: {type(a)} != {type(b)}"
    if isinstance(a, dict):
        assert list(a) == list(b), f"{where}: keys {list(a)} != {list(b)}"
        for k in a:
            assert_tree_bitwise(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_tree_bitwise(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert a.contiguous().reshape(-1).view(torch.uint8).tolist() == \
            b.contiguous().reshape(-1).view(torch.uint8).tolist(), where
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), where
    else:
        assert a == b, where


def full_state(seed: int) -> tuple[State, tuple]:
    model, opt, sched, scaler = training_objects(seed)
    data_gen = torch.Generator().manual_seed(seed)
    entries = dict(model=model, optimizer=opt, scheduler=sched, data_gen=data_gen,
                   py=random.Random(seed), npgen=np.random.default_rng(seed), rs=np.random.RandomState(seed),
                   epoch=0, name="init", history=[], best=(0.0, 0), arr=np.zeros(3), t=torch.zeros(2))
    if scaler is not None:
        entries["scaler"] = scaler
    return State(**entries), (model, opt, sched, scaler, data_gen)


def test_training_state_round_trips_bitwise(store, tmp_path):
    state, (model, opt, sched, scaler, gen) = full_state(1)
    for _ in range(5):
        train_step(model, opt, sched, scaler, gen)
    state.py.random(), state.npgen.random(3), state.rs.rand(2), torch.rand(2, generator=gen)
    state.epoch, state.name, state.history = 7, "after five", [1.5, float("nan"), -0.0]
    state.best = (0.25, 5)
    state.arr = np.arange(6, dtype=np.int16).reshape(2, 3)
    state.t = torch.linspace(0, 1, 5, dtype=torch.bfloat16)
    save(store, state, 5)

    other, (model2, opt2, sched2, scaler2, gen2) = full_state(99)
    restore(fresh_store(tmp_path / "ckpts"), other)

    assert_tree_bitwise(model2.state_dict(), model.state_dict(), "model")
    assert_tree_bitwise(opt2.state_dict(), opt.state_dict(), "optimizer")
    assert sched2.state_dict() == sched.state_dict()
    assert sched2.get_last_lr() == sched.get_last_lr()
    if scaler is not None:
        assert scaler2.state_dict() == scaler.state_dict() and scaler.get_scale() != 2.0 ** 10
    assert other.py.getstate() == state.py.getstate()
    assert other.npgen.bit_generator.state == state.npgen.bit_generator.state
    assert_tree_bitwise(list(other.rs.get_state()), list(state.rs.get_state()), "RandomState")
    assert torch.equal(gen2.get_state(), gen.get_state())
    assert other.epoch == 7 and other.name == "after five" and other.best == (0.25, 5)
    assert type(other.best) is tuple
    assert other.history[0] == 1.5 and np.isnan(other.history[1]) and str(other.history[2]) == "-0.0"
    assert_tree_bitwise(other.arr, state.arr, "arr")
    assert_tree_bitwise(other.t, state.t, "t")

    # Both continue identically: the next steps and the next draws are bitwise equal.
    for _ in range(3):
        train_step(model, opt, sched, scaler, gen)
        train_step(model2, opt2, sched2, scaler2, gen2)
    assert_tree_bitwise(model2.state_dict(), model.state_dict(), "model after 3 more steps")
    assert other.py.random() == state.py.random()
    assert other.npgen.random() == state.npgen.random()
    assert other.rs.rand() == state.rs.rand()


def test_grad_scaler_on_cpu(store, tmp_path):
    scaler = make_scaler()
    if scaler is None:
        pytest.skip("torch.amp.GradScaler('cpu') does not work with this torch")
    w = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([w], lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        scaler.scale((w * 3).sum()).backward()
        scaler.step(opt)
        scaler.update()
    save(store, State(scaler=scaler, rng=False), 3)
    other = torch.amp.GradScaler("cpu")
    restore(fresh_store(tmp_path / "ckpts"), State(scaler=other, rng=False))
    assert other.state_dict() == scaler.state_dict()
    assert other.get_scale() == scaler.get_scale() == 2.0 ** 11  # grew once (growth_interval=2)


def test_global_rng_is_captured_and_restored(store):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    save(store, State(x=1), 1)
    expected = (random.random(), np.random.rand(4).tolist(), torch.rand(4).tolist())
    restore(store, State(x=0))
    assert (random.random(), np.random.rand(4).tolist(), torch.rand(4).tolist()) == expected


def test_rng_false_leaves_the_global_rng_alone(store):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    save(store, State(x=1, rng=False), 1)
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    restore(store, State(x=0, rng=False))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) != first


def test_capture_and_restore_global_rng_directly():
    states = capture_global_rng()
    assert set(states) >= {"python", "numpy", "torch"}
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    restore_global_rng(states)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_plain_values_are_replaced_and_objects_loaded_in_place(store, tmp_path):
    model = torch.nn.Linear(2, 2)
    gen = np.random.default_rng(5)
    save(store, State(model=model, gen=gen, count=3, rng=False), 1)
    target_model, target_gen = torch.nn.Linear(2, 2), np.random.default_rng(6)
    target = State(model=target_model, gen=target_gen, count=0, rng=False)
    restore(fresh_store(tmp_path / "ckpts"), target)
    assert target.model is target_model and target.gen is target_gen  # the same objects, loaded
    assert torch.equal(target_model.weight, model.weight)
    assert target.count == 3 and target["count"] == 3


def test_strict_mismatch_raises_and_non_strict_loads_the_common_entries(store):
    save(store, State(a=1, b=2, rng=False), 1)
    target = State(a=0, c=0, rng=False)
    with pytest.raises(StateMismatch) as info:
        restore(store, target)
    assert "missing entries ['c']" in str(info.value) and "unexpected entries ['b']" in str(info.value)
    assert target.a == 0 and target.c == 0  # nothing loaded
    restore(store, target, strict=False)
    assert target.a == 1 and target.c == 0 and "b" not in target


def test_shape_mismatch_names_the_entry(store):
    save(store, State(model=torch.nn.Linear(3, 4), rng=False), 1)
    with pytest.raises(StateMismatch, match="'model'") as info:
        restore(store, State(model=torch.nn.Linear(3, 5), rng=False))
    assert "size mismatch" in str(info.value)


def test_kind_mismatch_names_the_entry(store):
    save(store, State(gen=random.Random(1), rng=False), 1)
    with pytest.raises(StateMismatch, match="'gen' was saved as python_random"):
        restore(store, State(gen=np.random.default_rng(1), rng=False))


@pytest.mark.parametrize("name", ["_private", "", "rng", "allow_pickle"])
def test_invalid_entry_names(name):
    state = State()
    with pytest.raises(ConfigError, match="invalid State entry name"):
        state[name] = 1


def test_mapping_and_attribute_access():
    state = State(a=1, rng=False)
    state.b = 2
    state["c"] = 3
    assert list(state) == ["a", "b", "c"] and len(state) == 3 and "b" in state and "z" not in state
    assert state.a == 1 and state["c"] == 3
    with pytest.raises(AttributeError, match="no entry 'z'"):
        _ = state.z
    with pytest.raises(KeyError):
        _ = state["z"]
    assert "rng=False" in repr(state) and "a=value" in repr(state)
    assert State().rng is True


NUMPY_ONLY = textwrap.dedent("""
    import sys
    BLOCK = {block}
    if BLOCK:
        sys.modules["torch"] = None  # any "import torch" now raises ImportError
    import json, random
    from pathlib import Path
    import numpy as np
    import unbroken
    from unbroken.checkpoint.saving import statefile
    from unbroken.checkpoint import CheckpointStore, State
    from unbroken.storage import LocalStorage

    store = CheckpointStore(LocalStorage(Path(sys.argv[1])))
    random.seed(4); np.random.seed(5)
    state = State(w=np.arange(12, dtype=np.float32).reshape(3, 4), gen=np.random.default_rng(1),
                  rs=np.random.RandomState(2), py=random.Random(3), step=10, scalar=np.float64(2.5))
    state.gen.random(5)
    tree, tensors, used_pickle = statefile.capture(state)
    pending = store.begin(10)
    written = statefile.write(pending.path, tree, tensors, used_pickle)
    pending.add_written(written.entries)
    m = store.commit(pending)
    expected = (random.random(), np.random.rand(), state.gen.random(), state.rs.rand(), state.py.random())

    target = State(w=np.zeros(1), gen=np.random.default_rng(9), rs=np.random.RandomState(9),
                   py=random.Random(9), step=0, scalar=None)
    newest = CheckpointStore(LocalStorage(Path(sys.argv[1]))).newest_good()
    statefile.restore(target, store.local_path(newest.uuid), newest)
    got = (random.random(), np.random.rand(), target.gen.random(), target.rs.rand(), target.py.random())
    assert got == expected, (got, expected)
    assert target.w.tobytes() == state.w.tobytes() and target.step == 10 and type(target.scalar) is np.float64
    assert '"torch"' not in (store.local_path(m.uuid) / "state.json").read_text()
    if BLOCK:
        assert sys.modules["torch"] is None
    else:
        assert "torch" not in sys.modules, "numpy-only checkpointing imported torch"
    print("NUMPY-ONLY OK")
""")


@pytest.mark.parametrize("block", [True, False], ids=["torch-blocked", "torch-importable"])
def test_numpy_only_state_never_imports_torch(tmp_path, block):
    result = subprocess.run([sys.executable, "-c", NUMPY_ONLY.format(block=block), str(tmp_path / "ckpts")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "NUMPY-ONLY OK" in result.stdout
