"""Fast checkpoints: snapshot + background writer, in-place verified restore, errors that surface."""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from ckpt_helpers import flip_byte, fresh_store

from unbroken.checkpoint.saving import statefile
from unbroken.checkpoint.io import writer
from unbroken.checkpoint import CheckpointStore, State
from unbroken.checkpoint.files import load, save
from unbroken.checkpoint.saving.saver import Saver
from unbroken.errors import BackgroundSaveError, CorruptCheckpoint, StateMismatch
from unbroken.storage import LocalStorage
from dtypes import TORCH_DTYPES



def restore_newest(root: Path, state: State, **kwargs) -> str:
    """Restore the newest committed checkpoint without verifying it first (the read verifies)."""
    store = fresh_store(root)
    manifest = store.list()[-1]
    statefile.restore(state, store.local_path(manifest.uuid), manifest, **kwargs)
    return manifest.uuid


def model_and_optimizer(seed: int, width: int = 64):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.ReLU(), torch.nn.Linear(width, 3))
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    model(torch.randn(5, width)).sum().backward()
    opt.step()
    return model, opt


def clone_tree(model, opt) -> dict:
    return {"model": {k: v.clone() for k, v in model.state_dict().items()},
            "opt": {i: {k: (v.clone() if torch.is_tensor(v) else v) for k, v in s.items()}
                    for i, s in opt.state_dict()["state"].items()}}


def assert_same_tree(model, opt, expected: dict) -> None:
    for k, v in model.state_dict().items():
        assert torch.equal(v, expected["model"][k]), k
    for i, s in opt.state_dict()["state"].items():
        for k, v in s.items():
            assert torch.equal(v, expected["opt"][i][k]) if torch.is_tensor(v) else v == expected["opt"][i][k]


# -- the snapshot is what gets saved ----------------------------------------------------------


def test_async_save_keeps_what_was_snapshotted_although_training_mutates_in_place(store, root):
    model, opt = model_and_optimizer(0)
    arr = np.arange(1000, dtype=np.float64)
    state = State(model=model, optimizer=opt, arr=arr, hist=[1, 2, {"a": [3]}], rng=False)
    expected = clone_tree(model, opt)
    expected_arr = arr.copy()
    saver = Saver(store)
    handle = saver.save(state, 7, {"note": "x"})
    # Training goes on at once: in-place updates of every tensor, array and plain value.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    for s in opt.state.values():
        s["exp_avg"].mul_(-3.0)
    arr += 5
    state.hist[2]["a"].append(4)
    state.hist.append(99)
    manifest = handle.wait()
    assert manifest.steps_completed == 7 and manifest.metadata == {"note": "x"}

    target_model, target_opt = model_and_optimizer(1)
    target = State(model=target_model, optimizer=target_opt, arr=np.zeros(1000), hist=None, rng=False)
    restore_newest(root, target)
    assert_same_tree(target_model, target_opt, expected)
    assert np.array_equal(target.arr, expected_arr)
    assert target.hist == [1, 2, {"a": [3]}]


def test_snapshot_buffer_is_reused_while_the_layout_fits(store):
    saver = Saver(store)
    state = State(w=torch.randn(256, 1024), rng=False)
    saver.save(state, 1).wait()
    first = saver._snapshots._buffer
    address = first.address()
    state.w.add_(1)
    saver.save(state, 2).wait()
    assert saver._snapshots._buffer is first and first.address() == address
    state.w = torch.randn(1024, 1024)  # 4x larger: a new buffer
    saver.save(state, 3).wait()
    assert saver._snapshots._buffer is not first and saver.buffer_bytes >= 4 << 20
    assert [m.steps_completed for m in store.list()] == [1, 2, 3]


def test_at_most_one_save_in_flight_and_the_wait_is_measured(store, monkeypatch):
    gate = threading.Event()
    real = writer.write_image

    def slow(*args):
        gate.wait(10)
        return real(*args)

    monkeypatch.setattr(writer, "write_image", slow)
    saver = Saver(store)
    state = State(w=torch.ones(1000), rng=False)
    first = saver.save(state, 1)
    assert saver.in_flight is first and not first.done()
    threading.Timer(0.3, gate.set).start()
    second = saver.save(state, 2)  # waits for the first
    assert first.done() and second.wait_s >= 0.2 and second.stall_s >= second.wait_s
    second.wait()
    assert [m.steps_completed for m in store.list()] == [1, 2]


# -- files of the fast path are plain safetensors ---------------------------------------------


@pytest.mark.parametrize("blocking", [True, False], ids=["sync", "async"])
@pytest.mark.parametrize("direct", ["1", "0"], ids=["direct-io", "buffered"])
def test_fast_path_files_load_with_the_safetensors_library(tmp_path, blocking, direct, monkeypatch):
    monkeypatch.setenv(writer.ENV_DIRECT_IO, direct)
    g = torch.Generator().manual_seed(3)
    tensors = {}
    for i, dtype in enumerate(TORCH_DTYPES):
        raw = torch.randint(0, 256, ((3 + i) * 5 * dtype.itemsize,), dtype=torch.uint8, generator=g)
        if dtype == torch.bool:
            raw = raw % 2
        tensors[f"t{i}"] = raw.view(dtype).reshape(3 + i, 5)
    tensors["big"] = torch.randn(3001, 1000)  # larger than a page, not a multiple of it
    tensors["bf16"] = torch.randn(257, 3).to(torch.bfloat16)
    arrays = {"np_f32": np.random.default_rng(0).standard_normal((7, 9)).astype(np.float32),
              "np_be": np.arange(11, dtype=">i8"), "np_bool": np.array([True, False, True])}
    handle = save({**tensors, **arrays}, tmp_path / "ck", blocking=blocking)
    handle.wait()
    path = tmp_path / "ck" / "tensors.safetensors"
    via_torch = safetensors.torch.load_file(str(path))
    for name, t in tensors.items():
        assert via_torch[name].dtype == t.dtype and torch.equal(via_torch[name].view(torch.uint8), t.view(torch.uint8))
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"format": "pt", "producer": "unbroken"}
    numpy_ok = {k: v for k, v in tensors.items() if v.dtype not in (torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2)}
    with safe_open(str(path), framework="np") as f:  # load_file("np") refuses files holding bf16/f8
        via_numpy = {k: f.get_tensor(k) for k in [*numpy_ok, *arrays]}
    for name, t in numpy_ok.items():
        assert via_numpy[name].tobytes() == t.contiguous().view(torch.uint8).numpy().tobytes(), name
    np.testing.assert_array_equal(via_numpy["np_be"], arrays["np_be"])
    assert via_numpy["np_be"].dtype == np.dtype("<i8")
    np.testing.assert_array_equal(via_numpy["np_f32"], arrays["np_f32"])
    np.testing.assert_array_equal(via_numpy["np_bool"], arrays["np_bool"])
    fresh_store(tmp_path).verify("ck", force=True)


def test_sync_and_async_write_identical_tensor_files(tmp_path):
    state = {"a": torch.randn(123, 45), "b": torch.arange(10, dtype=torch.int16), "c": np.ones(3, dtype=np.uint8)}
    save(state, tmp_path / "s", blocking=True)
    save(state, tmp_path / "a", blocking=False).wait()
    assert (tmp_path / "s" / "tensors.safetensors").read_bytes() == (tmp_path / "a" / "tensors.safetensors").read_bytes()
    assert (tmp_path / "s" / "state.json").read_bytes() == (tmp_path / "a" / "state.json").read_bytes()


def test_direct_io_refused_by_the_filesystem_falls_back_to_buffered(tmp_path, monkeypatch):
    real_open = os.open

    def no_direct(path, flags, *args):
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", no_direct)
    state = {"w": torch.randn(1000, 33)}
    save(state, tmp_path / "ck", blocking=False).wait()
    got = safetensors.torch.load_file(str(tmp_path / "ck" / "tensors.safetensors"))
    assert torch.equal(got["w"], state["w"])


# -- restore: straight into the existing tensors, and all-or-nothing -------------------------


def test_restore_reads_into_the_existing_parameter_storage(store, root):
    model, opt = model_and_optimizer(0)
    plain_t, plain_a = torch.randn(33, 5), np.random.default_rng(2).standard_normal(77)
    saver = Saver(store)
    saver.save(State(model=model, optimizer=opt, t=plain_t, a=plain_a, rng=False), 3).wait()
    expected = clone_tree(model, opt)

    target_model, target_opt = model_and_optimizer(5)
    t, a = torch.zeros(33, 5), np.zeros(77)
    target = State(model=target_model, optimizer=target_opt, t=t, a=a, rng=False)
    params = {k: (v, v.data_ptr()) for k, v in target_model.state_dict(keep_vars=True).items()}
    moments = {(i, k): (v, v.data_ptr()) for i, s in target_opt.state.items() for k, v in s.items()}
    restore_newest(root, target)

    assert_same_tree(target_model, target_opt, expected)
    for k, (param, ptr) in params.items():
        now = target_model.state_dict(keep_vars=True)[k]
        assert now is param and now.data_ptr() == ptr, k
    for (i, k), (tensor, ptr) in moments.items():
        assert target_opt.state[i][k] is tensor and tensor.data_ptr() == ptr
    assert target.t is t and torch.equal(t, plain_t)  # plain values too: same object, filled in place
    assert target.a is a and np.array_equal(a, plain_a)


def test_tensors_that_do_not_fit_get_new_memory(store, root):
    saver = Saver(store)
    saver.save(State(t=torch.arange(6.0), a=np.arange(4, dtype=np.int32), r=np.arange(3.0), rng=False), 1).wait()
    small, wrong_dtype, readonly = torch.zeros(2), np.zeros(4, dtype=np.int64), np.zeros(3)
    readonly.flags.writeable = False
    target = State(t=small, a=wrong_dtype, r=readonly, rng=False)
    restore_newest(root, target)
    assert torch.equal(target.t, torch.arange(6.0)) and torch.equal(small, torch.zeros(2))
    assert target.a.dtype == np.int32 and np.array_equal(target.a, np.arange(4)) and not wrong_dtype.any()
    assert np.array_equal(target.r, np.arange(3.0)) and not readonly.any()


def test_tied_weights_are_restored_once_and_right(store, root):
    torch.manual_seed(0)
    emb = torch.nn.Embedding(50, 8)
    head = torch.nn.Linear(8, 50, bias=False)
    head.weight = emb.weight
    model = torch.nn.ModuleDict({"emb": emb, "head": head})
    Saver(store).save(State(model=model, rng=False), 1).wait()
    expected = emb.weight.detach().clone()
    torch.manual_seed(1)
    emb2 = torch.nn.Embedding(50, 8)
    head2 = torch.nn.Linear(8, 50, bias=False)
    head2.weight = emb2.weight
    target = State(model=torch.nn.ModuleDict({"emb": emb2, "head": head2}), rng=False)
    restore_newest(root, target)
    assert torch.equal(emb2.weight, expected) and head2.weight is emb2.weight


def big_state(seed: int, fresh_optimizer: bool = False) -> State:
    model, opt = model_and_optimizer(seed, width=512)  # ~1 MiB of parameters, 2 MiB of moments
    if fresh_optimizer:  # no moments yet: they are restored into new memory, not in place
        opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    return State(model=model, optimizer=opt, arr=np.random.default_rng(seed).standard_normal(300_000),
                 count=seed, rng=False)


def snapshot_of(state: State) -> dict:
    return {**clone_tree(state.model, state.optimizer), "arr": state.arr.copy(), "count": state.count}


def assert_state_is(state: State, snap: dict) -> None:
    assert_same_tree(state.model, state.optimizer, snap)
    assert np.array_equal(state.arr, snap["arr"]) and state.count == snap["count"]


@pytest.mark.parametrize("fresh_optimizer", [False, True], ids=["all-in-place", "some-in-new-memory"])
@pytest.mark.parametrize("where", [0.05, 0.5, 0.97, -1])
def test_a_corrupt_file_leaves_the_state_untouched(store, root, where, fresh_optimizer, monkeypatch):
    # Small read chunks: the corrupt byte is found long after the earlier chunks were read.
    from unbroken.checkpoint.io import reader
    monkeypatch.setattr(reader, "READ_CHUNK", 64 << 10)
    Saver(store).save(big_state(0), 10).wait()
    newest = store.list()[-1]
    path = root / newest.uuid / "tensors.safetensors"
    size = path.stat().st_size
    flip_byte(path, int(size * where) if where >= 0 else -1)
    target = big_state(1, fresh_optimizer)
    before = snapshot_of(target)
    ptrs = [p.data_ptr() for p in target.model.parameters()]
    with pytest.raises(CorruptCheckpoint, match="checksum"):
        restore_newest(root, target)
    assert_state_is(target, before)
    assert [p.data_ptr() for p in target.model.parameters()] == ptrs


def test_a_state_that_does_not_fit_is_refused_before_any_byte_is_read_into_it(store, root):
    Saver(store).save(big_state(0), 10).wait()
    target = big_state(1)
    target.extra = 1  # the checkpoint has no entry "extra": strict restore refuses after reading
    before = snapshot_of(target)
    with pytest.raises(StateMismatch):
        restore_newest(root, target)
    assert_state_is(target, before)


def test_async_restore_round_trip_through_the_files_api(tmp_path):
    like = {"a": torch.zeros(100, 10), "b": torch.zeros(7, dtype=torch.bfloat16)}
    src = {"a": torch.randn(100, 10), "b": torch.randn(7).to(torch.bfloat16)}
    save(src, tmp_path / "ck", blocking=False).wait()
    ptr = like["a"].data_ptr()
    into = dict(like)
    load(tmp_path / "ck", into=into)
    assert like["a"].data_ptr() == ptr and torch.equal(like["a"], src["a"]) and torch.equal(like["b"], src["b"])


# -- background failures are raised, never lost -----------------------------------------------


def failing_write(errno_: int):
    def write_image(*args):
        raise OSError(errno_, os.strerror(errno_))
    return write_image


def test_a_background_failure_is_raised_at_the_next_save_and_commits_nothing(store, root, monkeypatch):
    saver = Saver(store)
    state = State(w=torch.arange(10.0), rng=False)
    good = saver.save(state, 1).wait()
    monkeypatch.setattr(writer, "write_image", failing_write(errno.ENOSPC))
    failed = saver.save(state, 2)  # returns: the failure happens in the background
    while not failed.done():
        time.sleep(0.01)
    monkeypatch.undo()
    with pytest.raises(BackgroundSaveError, match=failed.uuid) as info:
        saver.save(state, 3)
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == errno.ENOSPC
    assert [m.uuid for m in store.list()] == [good.uuid]  # nothing of step 2 (nor 3) is visible
    assert not [p for p in root.iterdir() if p.name.startswith(".tmp-")]  # the staging dir is gone
    saver.check()  # raised once: the caller may go on
    assert saver.save(state, 3).wait().steps_completed == 3
    target = State(w=torch.zeros(10), rng=False)
    restore_newest(root, target)
    assert torch.equal(target.w, torch.arange(10.0))


def test_a_background_failure_is_raised_by_wait(store, monkeypatch):
    saver = Saver(store)
    monkeypatch.setattr(writer, "write_image", failing_write(errno.EIO))
    saver.save(State(w=torch.ones(3), rng=False), 1)
    with pytest.raises(BackgroundSaveError, match="steps_completed=1"):
        saver.wait()
    saver.wait()  # reported once
    assert store.list() == []


# -- the writer leaves the GIL to training ----------------------------------------------------


@pytest.mark.slow
def test_background_write_does_not_starve_a_python_training_loop(tmp_path):
    """A pure-Python loop keeps most of its speed while a 256 MiB save is written and checksummed.

    A writer that held the GIL (a Python-level copy or checksum loop, or a C call that keeps
    it) would cut the loop's rate to about half or less for the whole write. The best of three
    tries is taken, because the machines this runs on are shared.
    """
    def spin(seconds: float) -> float:
        n, end = 0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            n += 1
        return n / seconds

    state = State(w=torch.randn(64 << 20), rng=False)
    saver = Saver(CheckpointStore(LocalStorage(tmp_path / "c")))
    saver.save(state, 0).wait()  # the buffer exists: the next saves measure the write only
    ratios = []
    for attempt in range(1, 4):
        baseline = spin(0.3)
        handle = saver.save(state, attempt)
        rates = []
        while not handle.done():
            rates.append(spin(0.02))
        handle.wait()
        if rates:
            ratios.append(float(np.median(rates)) / max(baseline, spin(0.3)))
        if ratios and max(ratios) > 0.6:
            break
    print(f"spin loop while writing: {[round(r, 2) for r in ratios]} of idle")
    assert ratios, "every save finished before the loop could measure anything"
    assert max(ratios) > 0.6, ratios


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (pinned snapshot buffer)")
def test_cuda_tensors_are_snapshotted_into_pinned_memory(store, root):
    model = torch.nn.Linear(64, 64).cuda()
    saver = Saver(store)
    expected = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    handle = saver.save(State(model=model, rng=False), 1)
    with torch.no_grad():
        model.weight.add_(1)  # on the device, right after save() returned
    handle.wait()
    assert saver._snapshots._buffer.pinned
    target = torch.nn.Linear(64, 64).cuda()
    restore_newest(root, State(model=target, rng=False))
    for k, v in target.state_dict().items():
        assert torch.equal(v.cpu(), expected[k])


@pytest.mark.parametrize("chunk", [4096, 3 * 4096, 1 << 20])
@pytest.mark.parametrize("direct", ["1", "0"], ids=["direct-io", "buffered"])
def test_both_writers_give_the_reference_bytes_across_chunk_boundaries(tmp_path, monkeypatch, chunk, direct):
    """Sync (streamed through bounce buffers) and async (snapshot image) writers, many chunks each."""
    from unbroken.checkpoint.format import arrays
    from unbroken.checkpoint.format import tensorfile
    from unbroken.checkpoint.io.snapshot import Snapshotter, plan
    monkeypatch.setattr(writer, "CHUNK", chunk)
    monkeypatch.setenv(writer.ENV_DIRECT_IO, direct)
    rng = np.random.default_rng(5)
    tensors = {f"t{i}": torch.from_numpy(rng.standard_normal(int(n)).astype(np.float32))
               for i, n in enumerate(rng.integers(0, 5000, 12))}
    tensors["odd"] = torch.arange(7, dtype=torch.int8)
    tensors["transposed"] = torch.randn(30, 20).T  # not contiguous
    header_bytes, header = plan(tensors)
    reference = tmp_path / "reference"
    tensorfile.write(reference, header_bytes, header, {k: arrays.host_bytes(v) for k, v in tensors.items()})
    expected = reference.read_bytes()
    tree = {"format": "unbroken-state", "version": 1, "entries": {}, "rng": None}
    (tmp_path / "sync").mkdir()
    written = statefile.write(tmp_path / "sync", tree, tensors, False)
    assert (tmp_path / "sync" / "tensors.safetensors").read_bytes() == expected
    (tmp_path / "async").mkdir()
    snapshot = Snapshotter().take(tree, tensors, False)
    written_async = statefile.write_snapshot(tmp_path / "async", snapshot)
    assert (tmp_path / "async" / "tensors.safetensors").read_bytes() == expected
    import crc32c
    assert written.entries["tensors.safetensors"].crc32c == f"{crc32c.crc32c(expected):08x}"
    assert written_async.entries == written.entries


def test_prepare_reserves_the_snapshot_buffer_that_the_first_save_uses(store):
    saver = Saver(store)
    state = State(w=torch.randn(300, 1000), n=1, rng=False)
    saver.prepare(state)
    saver._snapshots._collect_reserved()
    reserved = saver._snapshots._reserved
    assert reserved is not None and reserved.capacity >= 1_200_000
    saver.save(state, 1).wait()
    assert saver._snapshots._buffer is reserved


def test_overlapping_targets_are_read_in_place_once_and_every_value_is_right(store, root):
    Saver(store).save(State(a=np.arange(100.0), b=np.arange(100.0) + 1000, c=np.arange(10.0), rng=False), 1).wait()
    base = np.zeros(150)
    a, b, c = base[:100], base[50:150], np.zeros(10)  # a and b share 50 elements
    target = State(a=a, b=b, c=c, rng=False)
    restore_newest(root, target)
    assert target.c is c and np.array_equal(c, np.arange(10.0))
    assert np.array_equal(target.a, np.arange(100.0)) and np.array_equal(target.b, np.arange(100.0) + 1000)
    assert (target.a is a) != (target.b is b)  # exactly one of the two aliases was filled in place


def test_host_tensors_are_snapshotted_without_torch_copies(monkeypatch):
    """Host tensors are copied by one numpy copy each in the caller's thread: torch's copy_
    splits every copy among its intra-op threads, which on busy cores wait to be scheduled
    (the snapshot of 388 tensors took 15x a memcpy). Only what is not a plain host block (a
    transposed view here) still goes through ``arrays.copy_into``."""
    from unbroken.checkpoint.format import arrays
    from unbroken.checkpoint.io import snapshot as snapshot_mod
    converted = []
    original = arrays.copy_into
    monkeypatch.setattr(snapshot_mod.arrays, "copy_into", lambda value, dst: converted.append(value) or original(value, dst))
    tensors = {"w": torch.nn.Parameter(torch.randn(64, 33)), "bf16": torch.randn(5, 7).to(torch.bfloat16),
               "i8": torch.arange(-5, 6, dtype=torch.int8), "flag": torch.tensor([True, False]),
               "np": np.arange(9, dtype=np.float64), "t": torch.randn(6, 4).T}
    snap = snapshot_mod.Snapshotter().take({}, tensors, False)
    assert len(converted) == 1 and converted[0] is tensors["t"]
    for entry in snap.header.entries:
        a, b = snap.header.data_start + entry.begin, snap.header.data_start + entry.end
        value = tensors[entry.name]
        expected = value.tobytes() if isinstance(value, np.ndarray) else value.detach().contiguous().view(torch.uint8).numpy().tobytes()
        assert snap.image.array[a:b].tobytes() == expected, entry.name


def test_files_prepare_readies_the_buffer_the_first_async_save_uses(tmp_path):
    from unbroken.checkpoint import files

    state = {"w": np.arange(1 << 16, dtype=np.float32)}
    files.prepare(state, tmp_path / "a")
    saver = files._saver_for(tmp_path)
    ready = saver.buffer_bytes
    assert ready >= state["w"].nbytes  # allocated and faulted in before any save
    files.save(state, tmp_path / "a", blocking=False).wait()
    assert saver.buffer_bytes == ready  # the save used that buffer, no new one
    files.release(tmp_path / "a")


def test_every_saver_a_loop_may_hold_prepares_after_naming_the_restored_checkpoint(store):
    from threadgroup import ThreadGroup

    from unbroken.checkpoint.saving.sharded import ShardedSaver

    state = State(w=np.zeros(1 << 16), rng=False)
    manifest = Saver(store).save(state, 1).wait()
    for saver in (Saver(store, incremental=True), ShardedSaver(store, ThreadGroup(1).rank(0))):
        saver.prepare(state, restored=manifest)  # the loop's call (StateLoop._prepare_saves)
        snapshots = saver._snapshots if isinstance(saver, Saver) else saver._snapshots["own"]
        snapshots.wait_reserved()
        assert snapshots._reserved is not None and snapshots._reserved.capacity >= 8 << 16
