"""unbroken.checkpoint.dcp: torch.distributed.checkpoint state dicts in unbroken checkpoints.

One 2-rank FSDP2 job (tests/checkpoint/dcp_job.py, gloo on CPU) saves, loads, fails a save and
corrupts a file; the tests below check what each rank saw and what is on disk, then restore its
checkpoint with 1 rank. The single-process tests craft hostile checkpoints (foreign pickle, paths
out of the folder) and check they are refused.
"""

from __future__ import annotations

import fractions
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from integrations.inthelp import require
from procs import child_env

require("torch", "torch")

import torch  # noqa: E402

import unbroken  # noqa: E402
from unbroken.checkpoint import dcp as udcp  # noqa: E402
from unbroken.errors import (CheckpointError, ConfigError, CorruptCheckpoint, CorruptCheckpointWarning,  # noqa: E402
                             PickleNotAllowed, UnsafePathError)
from unbroken.tracking import Tracker  # noqa: E402

JOB = Path(__file__).with_name("dcp_job.py")


def checkpoints_dir(home: Path, name: str = "dcp") -> Path:
    return home / "experiments" / name / "trial-1" / "checkpoints"


def manifest(home: Path, uuid: str, name: str = "dcp") -> dict:
    return json.loads((checkpoints_dir(home, name) / uuid / "MANIFEST.json").read_text())


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """Run the 2-rank job once: (home, out folder, [rank 0's json, rank 1's json], stderr)."""
    if not torch.distributed.is_available():
        pytest.skip("SKIPPED LOUDLY: this torch has no torch.distributed")
    root = tmp_path_factory.mktemp("dcp")
    home, out = root / "home", root / "out"
    out.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(JOB)]
    done = subprocess.run(cmd, env=child_env(home, OUT=str(out), OMP_NUM_THREADS="1"), capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-4000:]
    seen = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    return home, out, seen, done.stderr


slow = pytest.mark.slow  # the tests that use the 2-rank job


@slow
def test_an_fsdp2_state_dict_round_trips_bitwise_through_a_committed_checkpoint(job):
    home, _out, seen, _err = job
    for rank in seen:
        assert rank["before_equal"] is False  # the fresh model really differed before the load
        assert rank["load_b"] == rank["b"] and rank["roundtrip_b"] is True
        assert rank["latest"] == rank["b"]
    assert seen[0]["a"] == seen[1]["a"]
    body = manifest(home, seen[0]["a"])
    assert sorted(f["path"] for f in body["files"]) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    assert body["steps_completed"] == 2 and body["metadata"]["note"] == "a"


@slow
def test_a_rank_failing_during_the_write_commits_nothing_and_keeps_earlier_checkpoints(job):
    home, _out, seen, _err = job
    for rank in seen:
        kind, message = rank["failed_save"]
        assert kind == "CheckpointError"
        assert "was not committed" in message and "rank 1" in message and "injected" in message
        assert rank["after_failure"] == [rank["a"], rank["b"]]
    left = sorted(p.name for p in checkpoints_dir(home).iterdir())
    assert not [name for name in left if name.startswith(".tmp-")], left  # the staged files were discarded
    assert len([name for name in left if not name.startswith(".")]) == 3  # A, B and the async one


@slow
def test_a_corrupt_byte_in_one_ranks_file_is_refused_on_every_rank_and_the_newest_load_falls_back(job):
    _home, _out, seen, err = job
    for rank in seen:
        kind, message = rank["named_corrupt"]
        assert kind == "CorruptCheckpoint" and "__1_0.distcp fails its checksum" in message
        assert rank["newest_after_corruption"] == rank["a"]
        assert rank["fallback_equals_a"] is True
    assert f"skipping corrupt checkpoint {seen[0]['b']}" in err


@slow
def test_async_save_commits_a_checkpoint_every_rank_agrees_on(job):
    _home, _out, seen, _err = job
    assert seen[0]["async"][0] == "ok" and seen[0]["async"] == seen[1]["async"]
    assert seen[0]["final"][-1] == seen[0]["async"][1]


@slow
def test_a_stop_requested_on_one_rank_is_agreed_by_every_rank(job):
    _home, _out, seen, _err = job
    for rank in seen:
        assert rank["should_stop_before"] is False
        assert rank["should_stop"] is True and rank["preempted"] is True


def test_should_stop_in_one_process_answers_the_runs_stop_request(home):
    with unbroken.init("stop", home=home, exit_on_preempt=False) as run:
        assert udcp.should_stop(run) is False
        run.preempt.request("test")
        assert udcp.should_stop(run) is True


def nested(flat: dict[str, torch.Tensor], fill=torch.zeros_like) -> dict:
    """{"a/b/c": t} -> {"a": {"b": {"c": fill(t)}}}; optimizer state keys ("state/0.weight/step") keep their dots."""
    out: dict = {}
    for key, value in flat.items():
        *parents, leaf = key.split("/")
        node = out
        for part in parents:
            node = node.setdefault(int(part) if part.isdigit() else part, {})
        node[leaf] = fill(value)
    return out


@slow
def test_one_rank_restores_what_two_ranks_saved_and_refuses_the_corrupt_one(job, home):
    job_home, out, seen, _err = job
    expected = torch.load(out / "expected-a.pt")
    target = nested(expected)
    with unbroken.init("dcp", home=job_home) as run:
        assert run.distributed.size == 1
        assert udcp.load(target, run, seen[0]["a"]) == seen[0]["a"]
        with pytest.raises(CorruptCheckpoint, match="__1_0.distcp fails its checksum"):
            udcp.load(nested(expected), run, seen[0]["b"])
    loaded = {key: value for key, value in _flat(target).items()}
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        path = f"{prefix}/{key}" if prefix else str(key)
        out.update(_flat(value, path) if isinstance(value, dict) else {path: value})
    return out


# -- one process: hostile checkpoints ------------------------------------------------------------

def plain_state() -> dict:
    return {"model": {"w": torch.arange(12.0).reshape(3, 4), "b": torch.tensor([1, 2], dtype=torch.int64)},
            "extra": {"epoch": 3, "lr": 0.25, "name": "x"}}


def forge(run, source: str, edit) -> str:
    """A new committed checkpoint with ``source``'s files, its DCP metadata passed through ``edit``
    (checksums valid: the commit computes them, so only the reader's own checks can refuse it)."""
    folder = run.checkpoint.store.local_path(source)
    metadata = pickle.loads((folder / ".metadata").read_bytes())  # noqa: S301 - the test's own file
    with run.checkpoint.store_path({"steps_completed": 99}) as (path, uuid):
        for item in folder.iterdir():
            if item.name not in ("MANIFEST.json", ".metadata"):
                (path / item.name).write_bytes(item.read_bytes())
        (path / ".metadata").write_bytes(edit(metadata))
    return uuid


def test_one_process_round_trip_keeps_tensors_values_and_metadata(home):
    with unbroken.init("single", home=home) as run:
        assert udcp.load(plain_state(), run) is None  # nothing yet: state untouched
        uuid = udcp.save(plain_state(), run, 7, {"epoch": 3})
        target = {"model": {"w": torch.zeros(3, 4), "b": torch.zeros(2, dtype=torch.int64)},
                  "extra": {"epoch": 0, "lr": 0.0, "name": ""}}
        assert udcp.load(target, run) == uuid
        assert run.checkpoint.get_metadata(uuid)["epoch"] == 3
        assert run.checkpoint.latest_checkpoint == uuid
    assert torch.equal(target["model"]["w"], plain_state()["model"]["w"])
    assert torch.equal(target["model"]["b"], plain_state()["model"]["b"])
    assert target["extra"] == plain_state()["extra"]


def test_metadata_with_foreign_pickle_is_refused_without_running_it(home, tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return os.mkdir, (str(marker),)

    with unbroken.init("evil", home=home) as run:
        source = udcp.save(plain_state(), run, 1)
        uuid = forge(run, source, lambda _metadata: pickle.dumps(Evil()))
        with pytest.raises(PickleNotAllowed, match="posix.mkdir|os.mkdir"):
            udcp.load(plain_state(), run, uuid)
    assert not marker.exists()


def test_metadata_naming_a_file_outside_the_checkpoint_or_the_manifest_is_refused(home):
    def relocate(path: str):
        def edit(metadata):
            for index, info in metadata.storage_data.items():
                metadata.storage_data[index] = type(info)(path, info.offset, info.length)
            return pickle.dumps(metadata)
        return edit

    with unbroken.init("paths", home=home) as run:
        source = udcp.save(plain_state(), run, 1)
        for path, error in (("../../outside.distcp", UnsafePathError), ("/etc/passwd", UnsafePathError),
                            ("not-listed.distcp", CorruptCheckpoint)):
            uuid = forge(run, source, relocate(path))
            with pytest.raises(error):
                udcp.load(plain_state(), run, uuid)


def test_a_value_that_needs_pickle_loads_only_with_allow_pickle(home):
    with unbroken.init("values", home=home) as run:
        uuid = udcp.save({"w": torch.ones(3), "extra": {"ratio": fractions.Fraction(1, 3)}}, run, 1)
        target = {"w": torch.zeros(3), "extra": {"ratio": None}}
        with pytest.raises(PickleNotAllowed, match="ratio"):
            udcp.load(target, run, uuid)
        assert target["extra"]["ratio"] is None and not target["w"].any()  # refused before any byte landed
        udcp.load(target, run, uuid, allow_pickle=True)
    assert target["extra"]["ratio"] == fractions.Fraction(1, 3) and target["w"].eq(1).all()


def test_commits_are_indexed_and_retention_applies(home):
    with unbroken.init("kept", home=home, keep=unbroken.keep_latest(1)) as run:
        uuids = [udcp.save(plain_state(), run, step) for step in (1, 2, 3)]
        assert [m.uuid for m in run.checkpoint.list()] == uuids[-1:]
        trial_id = run.info.trial_id
    rows = {r.uuid: r.state for r in Tracker(home / "unbroken.db").checkpoints(trial_id)}
    assert rows == {uuids[0]: "deleted", uuids[1]: "deleted", uuids[2]: "committed"}


def test_a_checkpoint_not_written_by_dcp_is_refused_by_name_and_skipped_as_newest(home):
    with unbroken.init("mixed", home=home) as run:
        dcp_uuid = udcp.save(plain_state(), run, 1)
        with run.checkpoint.store_path({"steps_completed": 2}) as (path, other):
            (path / "weights.bin").write_bytes(b"\0" * 16)
        with pytest.raises(CheckpointError, match="not written by torch.distributed.checkpoint"):
            udcp.load(plain_state(), run, other)
        assert udcp.load(plain_state(), run) == dcp_uuid


def test_a_corrupt_newest_checkpoint_is_skipped_with_a_warning(home):
    with unbroken.init("skip", home=home) as run:
        good = udcp.save(plain_state(), run, 1)
        bad = udcp.save(plain_state(), run, 2)
        data_file = run.checkpoint.store.local_path(bad) / "__0_0.distcp"
        data = bytearray(data_file.read_bytes())
        data[len(data) // 2] ^= 0x01
        data_file.write_bytes(bytes(data))
        target = plain_state()
        target["model"]["w"].zero_()
        with pytest.warns(CorruptCheckpointWarning, match=f"skipping corrupt checkpoint {bad}"):
            assert udcp.load(target, run) == good
    assert torch.equal(target["model"]["w"], plain_state()["model"]["w"])


def test_a_bad_request_writes_nothing(home):
    with unbroken.init("bad", home=home) as run:
        with pytest.raises(ConfigError):
            udcp.save(plain_state(), run, -1)
        with pytest.raises(ConfigError):
            udcp.save(plain_state(), run, 1, {"x": object()})
        assert run.checkpoint.list() == []
