"""Acceptance: Determined core-API programs (managed and detached), with only the import changed,
run under `unbroken run`, are SIGKILLed, resume from their newest checkpoint, and finish with the
result of an uninterrupted run; their metrics are in `unbroken show`."""

from __future__ import annotations

import signal
import subprocess

import pytest
import yaml

from unbroken import EXIT_PREEMPTED
from unbroken.compat.determined import load_experiment_config

from unbroken.checkpoint import CheckpointStore
from unbroken.storage import LocalStorage

from compat.compathelp import committed, kill_child_after, program, show, supervise
from procs import child_env
from waiting import wait_until

pytestmark = pytest.mark.slow

CONFIG = {"name": "core api stage 3", "entrypoint": "python3 det_managed.py",
          "hyperparameters": {"increment_by": {"type": "const", "val": 3}},
          "searcher": {"name": "single", "metric": "x", "max_length": {"batches": 60}}, "max_restarts": 2}


def test_managed_trial_from_a_determined_config_survives_sigkill(tmp_path):
    home, out = tmp_path / "home", tmp_path / "out.log"
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(CONFIG))
    plan = load_experiment_config(tmp_path / "exp.yaml")  # for the name it gives the trial
    sup = supervise(home, ["--config", str(tmp_path / "exp.yaml")], program("det_managed.py"), out)
    kill_child_after(sup, home, plan.name, 2, out)
    assert sup.wait(timeout=120) == 0, out.read_text()
    assert "final x=180" in out.read_text()  # 60 batches of +3, as without the kill

    doc = show(home, plan.name)
    assert doc["trial"]["hparams"] == {"increment_by": 3} and doc["trial"]["status"] == "completed"
    assert [a["end_reason"] for a in doc["attempts"]] == ["crashed", "completed"]
    assert doc["attempts"][1]["restored_steps"] >= 10
    metrics = doc["metrics"]
    assert metrics["training"]["x"]["value"] == 180 and metrics["validation"]["x"]["value"] == 180
    assert metrics["searcher"]["searcher_metric"]["value"] == 180
    assert doc["trial"]["progress"] == 1.0


def test_detached_core_v2_trial_survives_sigkill_under_unbroken_run(tmp_path):
    home, out = tmp_path / "home", tmp_path / "out.log"
    sup = supervise(home, ["--name", "detached", "--max-restarts", "2"], program("det_detached.py", "80"), out)
    kill_child_after(sup, home, "detached", 2, out)
    assert sup.wait(timeout=120) == 0, out.read_text()
    assert "final x=160" in out.read_text()
    doc = show(home, "detached")
    assert doc["metrics"]["training"]["x"]["value"] == 160 and doc["trial"]["hparams"] == {"increment_by": 2}
    assert [a["end_reason"] for a in doc["attempts"]] == ["crashed", "completed"]


def test_detached_trial_stopped_by_sigterm_resumes_by_its_external_ids(tmp_path):
    home = tmp_path / "home"
    proc = subprocess.Popen(program("det_detached.py", "400"), env=child_env(home), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    wait_until(lambda: committed(home, "detached-demo") >= 1 or proc.poll() is not None, timeout=60,
               what="the first checkpoint")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_PREEMPTED, err
    assert "final" not in out
    again = subprocess.run(program("det_detached.py", "400"), env=child_env(home), capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 0, again.stderr
    assert "final x=800" in again.stdout and "resumed from checkpoint" in again.stderr
    assert show(home, "detached-demo")["trial"]["number"] == 1  # the same trial, not a new one


def test_distributed_trial_stores_one_checkpoint_from_every_rank_and_stops_together(tmp_path):
    config = {**CONFIG, "name": "det-ddp", "searcher": {**CONFIG["searcher"], "max_length": {"batches": 40}}}
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(config))
    home, out = tmp_path / "home", tmp_path / "out.log"
    run_args = ["--config", str(tmp_path / "exp.yaml"), "--nproc-per-node", "2"]
    sup = supervise(home, run_args, program("det_distributed.py"), out)
    wait_until(lambda: committed(home, "det-ddp") >= 2 or sup.poll() is not None, timeout=90, what="2 checkpoints")
    sup.send_signal(signal.SIGTERM)
    assert sup.wait(timeout=90) == EXIT_PREEMPTED, out.read_text()
    stopped_at = show(home, "det-ddp")["trial"]["latest_checkpoint_steps"]
    assert 10 <= stopped_at < 40
    out = tmp_path / "out-2.log"
    sup = supervise(home, run_args, program("det_distributed.py"), out)
    assert sup.wait(timeout=120) == 0, out.read_text()
    text = out.read_text()
    assert "rank 0 final x=120" in text and "rank 1 final x=240" in text  # 40 batches of +3 and +6
    doc = show(home, "det-ddp")
    assert [a["end_reason"] for a in doc["attempts"]] == ["preempted", "completed"], text  # one per group run
    assert doc["attempts"][1]["restored_steps"] == stopped_at
    assert doc["metrics"]["training"]["x"]["value"] == 360
    for manifest in checkpoints(home, "det-ddp"):
        assert {f.path for f in manifest.files} == {"state-rank0", "state-rank1"}


def checkpoints(home, name):
    return CheckpointStore(LocalStorage(home / "experiments" / name / "trial-1" / "checkpoints")).list()
