"""Checkpoint methods compared by the benchmarks, behind one small interface, and their registry.

A *method* saves a flat ``dict[str, torch.Tensor]`` (CPU, contiguous) into a checkpoint
directory and restores it into preallocated tensors of the same names and shapes. Every
method commits the same way, so the comparison is about writing and reading, not about how
careful each one is: write into ``<dir>.partial``, fsync every file and the staging
directory, rename to ``<dir>``, fsync the parent (``commit_dir``).

The registry maps a display name to a zero-argument factory. ``all_methods()`` builds the
peers below and then lets ``unbroken_methods.register`` add unbroken's own methods.
"""

from __future__ import annotations

import os
import shutil
import time
import warnings
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch

State = Mapping[str, torch.Tensor]
Registry = dict[str, Callable[[], "CheckpointMethod"]]

STAGING_SUFFIX = ".partial"

# DCP warns on every call that it runs without a process group: that is what we ask for.
warnings.filterwarnings("ignore", message="torch.distributed is disabled")
warnings.filterwarnings("ignore", message=".*Detected an existing checkpoint.*")


# --------------------------------------------------------------------------- commit helpers


def staging_path(path: Path) -> Path:
    """The hidden-until-committed directory a save writes into."""
    return path.with_name(path.name + STAGING_SUFFIX)


def fsync_path(path: Path) -> None:
    """fsync a file or a directory by path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file under ``root``, then every directory, deepest first."""
    for dirpath, _dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            fsync_path(Path(dirpath, name))
        fsync_path(Path(dirpath))


def commit_dir(staging: Path, final: Path) -> None:
    """Make ``staging`` durable, then visible as ``final`` (rename + fsync of the parent)."""
    fsync_tree(staging)
    os.rename(staging, final)
    fsync_path(final.parent)


def remove_checkpoint(path: Path) -> None:
    """Delete a checkpoint and any staging directory left beside it."""
    for p in (path, staging_path(path)):
        shutil.rmtree(p, ignore_errors=True)


def dir_bytes(path: Path) -> int:
    """Total size of the files under ``path``."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def copy_into(like: State, loaded: Mapping[str, torch.Tensor]) -> None:
    """Copy loaded tensors into the preallocated ones (what ``load_state_dict`` does)."""
    for name, dst in like.items():
        dst.copy_(loaded[name])


# --------------------------------------------------------------------------- interface


class CheckpointMethod:
    """The contract every measured method implements.

    The harness times the calls itself; a method only does the work:

    - ``setup(workdir)``: once, before anything is timed (spawn helpers, warm up). Its
      duration is reported separately as a one-time cost.
    - ``prepare(state, path)``: once per state before its first save, untimed (reported as
      ``prepare_s``): what a job does once after building its model.
    - ``save(state, path)``: blocks the caller for exactly as long as training would be
      blocked (the *stall*). ``state`` may change as soon as it returns, so an asynchronous
      method must have taken its snapshot by then. At most one save is in flight: a save
      called while the previous one is pending first waits for it.
    - ``wait()``: returns when the last save is durable (fsynced) and visible at ``path``
      (renamed into place, parent fsynced). *Durable save time* = save + wait.
    - ``load(path, like_state, variant)``: fills the preallocated tensors of ``like_state``
      in place from the committed checkpoint at ``path``, using the restore ``variant``
      (one of ``restore_variants``; an empty tuple means "same files as another method,
      restore is measured there").
    - ``close()``: release helpers (after the last wait).
    """

    name = "abstract"
    restore_variants: tuple[str, ...] = ()

    def setup(self, workdir: Path) -> None:
        """One-time preparation; default: nothing."""

    def prepare(self, state: State, path: Path) -> None:
        """Once per state, untimed, before its first save: what a training job does once after
        building or restoring its model (e.g. get a reusable staging buffer ready); must
        return when that work is done. Default: nothing."""

    def save(self, state: State, path: Path) -> None:
        raise NotImplementedError

    def wait(self) -> None:
        """Default for synchronous methods: ``save`` already committed."""

    def load(self, path: Path, like_state: State, variant: str) -> None:
        raise NotImplementedError(f"{self.name} has no restore of its own")

    def close(self) -> None:
        """Default: nothing to release."""


class SyncDirMethod(CheckpointMethod):
    """A synchronous method: ``save`` writes into the staging directory and commits."""

    def save(self, state: State, path: Path) -> None:
        staging = staging_path(path)
        staging.mkdir(parents=True)
        self.write(state, staging)
        commit_dir(staging, path)

    def write(self, state: State, directory: Path) -> None:
        """Write the files of one checkpoint into ``directory`` (no fsync needed)."""
        raise NotImplementedError


class AsyncDirMethod(CheckpointMethod):
    """An asynchronous method: ``start`` snapshots and returns the writer's future; a
    committer thread joins it and commits in the background; ``wait`` joins the committer."""

    def __init__(self) -> None:
        self._committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-commit")
        self._pending: Future | None = None

    def save(self, state: State, path: Path) -> None:
        self.wait()
        staging = staging_path(path)
        staging.mkdir(parents=True)
        writer = self.start(state, staging)
        self._pending = self._committer.submit(self._finish, writer, staging, path)

    @staticmethod
    def _finish(writer: Future, staging: Path, final: Path) -> None:
        writer.result()
        commit_dir(staging, final)

    def wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def start(self, state: State, directory: Path) -> Future:
        """Snapshot ``state``, start writing it into ``directory``, return the future."""
        raise NotImplementedError

    def close(self) -> None:
        self.wait()
        self._committer.shutdown()


# --------------------------------------------------------------------------- peers


class TorchSave(SyncDirMethod):
    """``torch.save`` of the whole dict into one file; restored by ``torch.load``."""

    name = "torch.save"
    restore_variants = ("torch.load", "torch.load(mmap=True)")
    FILE = "state.pt"

    def write(self, state: State, directory: Path) -> None:
        torch.save(dict(state), directory / self.FILE)

    def load(self, path: Path, like_state: State, variant: str) -> None:
        mmap = variant.endswith("(mmap=True)")
        loaded = torch.load(path / self.FILE, map_location="cpu", weights_only=True, mmap=mmap)
        copy_into(like_state, loaded)


class SafetensorsSave(SyncDirMethod):
    """``safetensors.torch.save_file`` into one file; restored by ``load_file``."""

    name = "safetensors.save_file"
    restore_variants = ("safetensors.load_file",)
    FILE = "state.safetensors"

    def write(self, state: State, directory: Path) -> None:
        from safetensors.torch import save_file

        save_file(dict(state), str(directory / self.FILE))

    def load(self, path: Path, like_state: State, variant: str) -> None:
        from safetensors.torch import load_file

        copy_into(like_state, load_file(str(path / self.FILE)))


class DcpLoadMixin:
    """Restore of any DCP checkpoint: ``dcp.load`` in place into the preallocated tensors."""

    def load(self, path: Path, like_state: State, variant: str) -> None:
        import torch.distributed.checkpoint as dcp

        dcp.load(dict(like_state), checkpoint_id=str(path), no_dist=True)


class DcpSave(DcpLoadMixin, SyncDirMethod):
    """``torch.distributed.checkpoint.save`` in one process without a process group."""

    name = "dcp.save"
    restore_variants = ("dcp.load",)

    def write(self, state: State, directory: Path) -> None:
        import torch.distributed.checkpoint as dcp

        dcp.save(dict(state), checkpoint_id=str(directory), no_dist=True)


class DcpAsyncSave(DcpLoadMixin, AsyncDirMethod):
    """``dcp.async_save`` with its defaults: a synchronous copy to CPU, then a writer thread.

    Same files as ``dcp.save``, so its restore is measured there.
    """

    name = "dcp.async_save"

    def start(self, state: State, directory: Path) -> Future:
        import torch.distributed.checkpoint as dcp

        response = dcp.async_save(dict(state), checkpoint_id=str(directory), **self.save_options())
        return getattr(response, "upload_completion", response)  # AsyncSaveResponse or Future

    def save_options(self) -> dict[str, object]:
        """Extra keyword arguments of ``dcp.async_save``."""
        return {"no_dist": True}


class DcpAsyncSaveProcess(DcpAsyncSave):
    """``dcp.async_save`` with ``AsyncCheckpointerType.PROCESS``: the writer is a separate
    process (no GIL contention with training).

    It needs a process group: ``setup`` starts a gloo group of world size 1 through a
    ``file://`` store, then saves a tiny state once so the writer process is spawned before
    anything is timed (that start-up is reported as the one-time setup cost).
    """

    name = "dcp.async_save(process)"
    _store: Path | None = None

    def setup(self, workdir: Path) -> None:
        import torch.distributed as dist

        if not dist.is_initialized():
            os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
            self._store = workdir.resolve() / "gloo_store"
            self._store.unlink(missing_ok=True)
            dist.init_process_group("gloo", init_method=f"file://{self._store}", rank=0, world_size=1)
        probe = workdir / "dcp_process_warmup"
        remove_checkpoint(probe)
        self.save({"warmup": torch.zeros(16)}, probe)
        self.wait()
        remove_checkpoint(probe)

    def close(self) -> None:
        super().close()
        if self._store is not None:
            self._store.unlink(missing_ok=True)

    def save_options(self) -> dict[str, object]:
        from torch.distributed.checkpoint.state_dict_saver import AsyncCheckpointerType

        return {"async_checkpointer_type": AsyncCheckpointerType.PROCESS}


PEERS: tuple[type[CheckpointMethod], ...] = (
    TorchSave,
    SafetensorsSave,
    DcpSave,
    DcpAsyncSave,
    DcpAsyncSaveProcess,
)


def all_methods() -> tuple[Registry, str]:
    """The registry of every method, and a line saying whether unbroken's methods joined."""
    import unbroken_methods

    methods: Registry = {cls.name: cls for cls in PEERS}
    status = unbroken_methods.register(methods)
    return methods, status


def start_methods(registry: Registry, workdir: Path) -> tuple[dict[str, CheckpointMethod], dict[str, dict]]:
    """Instantiate and set up every method.

    Returns the usable methods, and per name ``{"setup_s": seconds}`` or
    ``{"setup_error": repr}`` (a method whose setup fails is left out, not fatal).
    """
    methods, report = {}, {}
    for name, factory in registry.items():
        try:
            method = factory()
            t0 = time.perf_counter()
            method.setup(workdir)
            report[name] = {"setup_s": time.perf_counter() - t0}
            methods[name] = method
        except Exception as exc:
            report[name] = {"setup_error": repr(exc)}
    return methods, report


def select(methods: Registry, wanted: str | None) -> Registry:
    """Keep the comma-separated names in ``wanted`` (all when None); reject unknown names."""
    if not wanted:
        return methods
    names = [n.strip() for n in wanted.split(",") if n.strip()]
    unknown = [n for n in names if n not in methods]
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; known: {list(methods)}")
    return {n: methods[n] for n in names}
