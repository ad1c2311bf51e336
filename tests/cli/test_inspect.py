"""The inspection CLI: ls, show, checkpoints, logs, verify, export, rm, rm-experiment, gc.

Every command runs in-process with click's CliRunner on a home filled by real (tiny numpy)
trainings; see conftest.py. Human output is checked for its key content, --json for its exact
keys (the documented, stable shape), errors for one line on stderr and exit status 1.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from ckpt_helpers import flip_byte, fresh_store, save, truncate

import unbroken
from unbroken.checkpoint import State
from unbroken.cli import logs as logs_cmd
from unbroken.tracking import Tracker

TRIAL_KEYS = {"ref", "experiment", "number", "status", "message", "steps_completed", "progress", "attempts",
              "restarts", "latest_checkpoint_steps", "hparams", "command", "storage", "created_at", "updated_at"}
ATTEMPT_KEYS = {"number", "started_at", "ended_at", "duration_s", "host", "pid", "launcher", "exit_code", "signal",
                "end_reason", "message", "log_path", "restored_uuid", "restored_steps", "slurm_job_id",
                "slurm_array_task", "slurm_nodes", "slurm_restarts", "state"}
CHECKPOINT_KEYS = {"uuid", "steps_completed", "size_bytes", "created_at", "state", "reason", "files", "metadata"}
VERIFY_KEYS = {"uuid", "steps_completed", "size_bytes", "status", "reason"}
EXPORT_KEYS = {"uuid", "steps_completed", "source", "to", "format", "files", "size_bytes"}
GC_KEYS = {"trial", "kind", "name", "path", "reason"}
STEPS = [2, 4, 5, 6, 8, 9]


def assert_error(result, *fragments: str) -> str:
    """A clean failure: exit 1, no traceback, one line "Error: ..." on stderr holding ``fragments``."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# -- empty home ------------------------------------------------------------------------------------
def test_ls_on_empty_home_says_so_exits_0_and_creates_nothing(cli, home):
    result = cli("ls")
    assert result.exit_code == 0 and f"no runs yet in {home}" in result.stdout
    assert cli.json("ls") == {"home": str(home), "experiments": []}
    assert not (home / "unbroken.db").exists()


@pytest.mark.parametrize("args", [
    ["show", "exp"], ["checkpoints", "exp"], ["logs", "exp"], ["verify", "exp"],
    ["export", "exp", "--to", "out"], ["rm", "exp", "--all-checkpoints"], ["gc", "exp"], ["rm-experiment", "exp"],
])
def test_other_commands_on_empty_home_fail_cleanly(cli, home, args):
    assert_error(cli(*args), "no runs yet in", str(home))
    assert not (home / "unbroken.db").exists()


def test_gc_on_empty_home_has_nothing_to_clean(cli, home):
    result = cli("gc")
    assert result.exit_code == 0 and "nothing to clean" in result.stdout
    assert cli.json("gc") == {"dry_run": False, "removed": []}
    assert not (home / "unbroken.db").exists()


# -- ls ----------------------------------------------------------------------------------------------
def test_ls_table(cli, trained):
    result = cli("ls")
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines() if "/" in line.split()[0]}
    assert rows["exp/1"][:6] == ["exp/1", "completed", "9", "100%", "1", "step"]
    assert rows["exp/1"][6] == "9"
    assert rows["raw/1"][:3] == ["raw/1", "completed", "3"]
    assert rows["exp/1"][-1] == "ago)"  # updated: "YYYY-MM-DD HH:MM:SS (3s ago)"


def test_ls_json_shape(cli, trained, home):
    data = cli.json("ls")
    assert set(data) == {"home", "experiments"} and data["home"] == str(home)
    assert [e["name"] for e in data["experiments"]] == ["exp", "raw"]
    assert set(data["experiments"][0]) == {"name", "created_at", "trials"}
    trial = data["experiments"][0]["trials"][0]
    assert set(trial) == TRIAL_KEYS
    assert (trial["ref"], trial["status"], trial["steps_completed"]) == ("exp/1", "completed", 9)
    assert trial["progress"] == 1.0
    assert (trial["attempts"], trial["restarts"], trial["latest_checkpoint_steps"]) == (2, 1, 9)
    assert trial["hparams"] == {"lr": 0.1, "opt": {"name": "sgd"}}


def test_ls_one_experiment_and_unknown_one(cli, trained):
    data = cli.json("ls", "raw")
    assert [e["name"] for e in data["experiments"]] == ["raw"]
    assert "exp/1" not in cli("ls", "raw").stdout
    assert_error(cli("ls", "nope"), "no experiment named 'nope'")


def test_ls_latest_checkpoint_ignores_corrupt_ones(cli, trained):
    trained.tracker().mark_checkpoint(trained.uuids[9], "corrupt", "test")
    assert cli.json("ls", "exp")["experiments"][0]["trials"][0]["latest_checkpoint_steps"] == 8


def test_home_option_overrides_the_environment(cli, trained, tmp_path):
    other = tmp_path / "other-home"
    assert cli.json("--home", other, "ls")["home"] == str(other.resolve())
    assert cli.json("--home", trained.home, "ls")["experiments"]


# -- show --------------------------------------------------------------------------------------------
def test_show_human(cli, trained):
    result = cli("show", "exp")
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "Trial exp/1: completed" in text and "2 attempt(s), 1 restart(s)" in text
    assert "opt.name" in text and "sgd" in text                      # hparams, flattened
    assert "step 5" in text                                          # attempt 2 restored step 5
    assert "4242_3 on node[01-02]" in text                           # Slurm column
    assert str(trained.logs[1]) in text                              # log path
    assert "validation" in text and "0.75" in text                   # latest metrics per group
    assert "0.111111" in text                                        # training loss at step 9


def test_show_json_shape(cli, trained):
    data = cli.json("show", "exp/1")
    assert set(data) == {"trial", "attempts", "metrics"}
    assert set(data["trial"]) == TRIAL_KEYS and data["trial"]["ref"] == "exp/1"
    assert [set(a) for a in data["attempts"]] == [ATTEMPT_KEYS, ATTEMPT_KEYS]
    first, second = data["attempts"]
    assert (first["number"], first["end_reason"], first["restored_steps"]) == (1, "completed", None)
    assert (second["restored_steps"], second["restored_uuid"]) == (5, trained.uuids[5])
    assert second["slurm_job_id"] == "4242" and second["log_path"] == str(trained.logs[1])
    assert second["duration_s"] >= 0 and second["pid"] == os.getpid()
    assert data["metrics"]["training"]["loss"] == {"steps_completed": 9, "value": pytest.approx(1 / 9),
                                                   "min": pytest.approx(1 / 9), "max": 1.0, "points": 9}
    assert data["metrics"]["validation"] == {"acc": {"steps_completed": 9, "value": 0.75, "min": 0.75,
                                                     "max": 0.75, "points": 2}}


def test_show_table_titles_stay_on_one_line_above_narrow_tables(cli, indexed):
    lines = [line.strip() for line in cli("show", "exp").stdout.splitlines()]
    assert "Hyperparameters" in lines and "Attempts" in lines and "Metrics" in lines


def test_show_crashed_attempt_and_signal(cli, home):
    with pytest.raises(ZeroDivisionError):
        with unbroken.init("boom", home=home):
            1 / 0
    tracker = Tracker(home / "unbroken.db")
    attempt = tracker.attempts(tracker.trial("boom").id)[0]
    tracker.end_attempt(attempt.id, "crashed", signal=9)
    text = cli("show", "boom").stdout
    assert "signal 9 (SIGKILL)" in text and "crashed: ZeroDivisionError" in text


@pytest.mark.parametrize("ref", ["a/b/c", "exp/0", "exp/x", "exp/", "/1"])
def test_bad_trial_syntax(cli, trained, ref):
    assert_error(cli("show", ref), f"invalid trial {ref!r}", "EXPERIMENT/NUMBER")


def test_invalid_experiment_name(cli, trained):
    assert_error(cli("show", "..evil"), "invalid experiment name")


def test_unknown_trial_and_experiment(cli, trained):
    assert_error(cli("show", "exp/7"), "no trial 'exp/7'")
    assert_error(cli("show", "nope"), "no experiment named 'nope'")
    assert_error(cli("checkpoints", "nope/2"), "no experiment named 'nope'")


# -- checkpoints -------------------------------------------------------------------------------------
def test_checkpoints_table(cli, trained):
    result = cli("checkpoints", "exp")
    assert result.exit_code == 0, result.output
    for steps, uuid in trained.uuids.items():
        line = next(line for line in result.stdout.splitlines() if uuid in line)
        assert line.split()[1] == str(steps) and "KiB" in line and "committed" in line and "ago" in line
    raw = cli("checkpoints", "raw").stdout
    assert "note=files, steps_completed=3" in raw  # metadata summary


def test_checkpoints_json_shape(cli, trained):
    data = cli.json("checkpoints", "exp/1")
    assert set(data) == {"trial", "location", "verified", "checkpoints"}
    assert data["trial"] == "exp/1" and data["location"] == str(trained.folder) and data["verified"] is False
    rows = data["checkpoints"]
    assert all(set(r) == CHECKPOINT_KEYS for r in rows)
    assert [r["steps_completed"] for r in rows] == STEPS
    assert {r["state"] for r in rows} == {"committed"} and rows[0]["files"] == 2
    assert rows[0]["size_bytes"] == fresh_store(trained.folder).manifest(rows[0]["uuid"]).size


def test_checkpoints_corrupt_is_found_by_verify_then_remembered(cli, trained):
    flip_byte(trained.checkpoint(6) / "tensors.safetensors")
    states = lambda data: {r["steps_completed"]: (r["state"], r["reason"]) for r in data["checkpoints"]}  # noqa: E731
    assert states(cli.json("checkpoints", "exp"))[6] == ("committed", None)  # files not re-read
    checked = cli.json("checkpoints", "exp", "--verify")
    assert checked["verified"] is True
    state, reason = states(checked)[6]
    assert state == "corrupt" and "tensors.safetensors fails its checksum" in reason
    assert states(cli.json("checkpoints", "exp"))[6][0] == "corrupt"  # the index remembers the mark
    assert trained.tracker().checkpoint(trained.uuids[6]).state == "corrupt"
    assert "corrupt: file tensors.safetensors fails its checksum" in cli("checkpoints", "exp").stdout


def test_checkpoints_storage_is_the_truth(cli, trained):
    # Written without the index: listed, "unverified". A folder without manifest: "corrupt".
    extra = save(fresh_store(trained.folder), State(x=np.ones(3)), 42)
    (trained.folder / "junk").mkdir()
    shutil.rmtree(trained.checkpoint(2))  # gone from storage: not listed although the index has it
    rows = {r["uuid"]: r for r in cli.json("checkpoints", "exp")["checkpoints"]}
    assert trained.uuids[2] not in rows
    assert rows[extra]["state"] == "unverified" and rows[extra]["steps_completed"] == 42
    assert rows["junk"]["state"] == "corrupt" and "no MANIFEST.json" in rows["junk"]["reason"]
    assert rows["junk"]["steps_completed"] is None and list(rows)[-1] == "junk"


def test_checkpoints_of_trial_without_any(cli, home):
    with unbroken.init("empty", home=home):
        pass
    assert "has no checkpoints" in cli("checkpoints", "empty").stdout
    assert cli.json("checkpoints", "empty")["checkpoints"] == []


# -- verify ------------------------------------------------------------------------------------------
def test_verify_trial_ok(cli, trained):
    result = cli("verify", "exp")
    assert result.exit_code == 0, result.output
    ok_lines = [line for line in result.stdout.splitlines() if line.startswith("OK ")]
    assert len(ok_lines) == len(STEPS) and all(uuid in result.stdout for uuid in trained.uuids.values())
    assert "all 6 checkpoint(s) of exp/1 verify" in result.stdout


def test_verify_corrupt_exits_1_names_it_and_marks_the_index(cli, trained):
    flip_byte(trained.checkpoint(8) / "tensors.safetensors")
    result = cli("verify", "exp")
    assert_error(result, "1 of 6 checkpoint(s) in exp/1 corrupt")
    line = next(line for line in result.stdout.splitlines() if line.startswith("CORRUPT"))
    assert trained.uuids[8] in line and "step 8" in line and "fails its checksum" in line
    record = trained.tracker().checkpoint(trained.uuids[8])
    assert record.state == "corrupt" and "fails its checksum" in record.message


def test_verify_json_shape_and_truncation(cli, trained):
    truncate(trained.checkpoint(4) / "state.json")
    data = cli.json("verify", "exp", code=1)
    assert set(data) == {"target", "location", "ok", "checkpoints"}
    assert data["ok"] is False and data["target"] == "exp/1" and data["location"] == str(trained.folder)
    assert all(set(r) == VERIFY_KEYS for r in data["checkpoints"])
    bad = [r for r in data["checkpoints"] if r["status"] == "corrupt"]
    assert [r["uuid"] for r in bad] == [trained.uuids[4]] and "truncated" in bad[0]["reason"]


def test_verify_one_uuid_and_a_missing_one(cli, trained):
    data = cli.json("verify", "exp", "--uuid", trained.uuids[5])
    assert [r["uuid"] for r in data["checkpoints"]] == [trained.uuids[5]] and data["ok"] is True
    assert_error(cli("verify", "exp", "--uuid", "no-such-uuid"), "no checkpoint no-such-uuid")


def test_verify_clears_a_mark_that_no_longer_holds(cli, trained):
    trained.tracker().mark_checkpoint(trained.uuids[5], "corrupt", "a transient read error")
    assert cli("verify", "exp").exit_code == 0
    assert trained.tracker().checkpoint(trained.uuids[5]).state == "committed"


def test_verify_paths_need_no_database(cli, trained, tmp_path, monkeypatch):
    copy = tmp_path / "copied-trial"
    shutil.copytree(trained.folder.parent, copy)
    empty_home = tmp_path / "empty-home"
    monkeypatch.setenv("UNBROKEN_HOME", str(empty_home))
    flip_byte(copy / "checkpoints" / trained.uuids[9] / "state.json")
    for path in (copy, copy / "checkpoints"):  # a trial folder, a checkpoints folder
        data = cli.json("verify", path, code=1)
        assert {r["uuid"]: r["status"] for r in data["checkpoints"]}[trained.uuids[9]] == "corrupt"
        assert sum(r["status"] == "ok" for r in data["checkpoints"]) == 5
    single = cli("verify", copy / "checkpoints" / trained.uuids[8])
    assert single.exit_code == 0 and single.stdout.startswith("OK ")
    assert_error(cli("verify", copy / "checkpoints" / trained.uuids[9]), "1 of 1")
    assert not empty_home.exists()


def test_verify_and_export_draw_a_progress_bar_on_a_terminal(cli, trained, tmp_path, monkeypatch):
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich then treats stderr as a terminal
    total = sum(fresh_store(trained.folder).manifest(u).size for u in trained.uuids.values())
    result = cli("verify", "exp")
    assert result.exit_code == 0 and "verifying exp/1" in result.stderr
    assert f"{total / 1024:.1f}/{total / 1024:.1f} KiB" in result.stderr  # the bar reached the end
    assert "\x1b" not in result.stdout  # the bar stays off stdout
    exported = cli("export", "exp", "--to", tmp_path / "out")
    assert exported.exit_code == 0 and f"exporting {trained.uuids[9]}" in exported.stderr


def test_verify_an_empty_folder_is_an_error(cli, home, tmp_path):
    (tmp_path / "nothing").mkdir()
    assert_error(cli("verify", tmp_path / "nothing"), "no checkpoints in")


def test_verify_neither_folder_nor_trial(cli, trained):
    assert_error(cli("verify", "no/such/folder"), "neither a folder nor a trial")


# -- export ------------------------------------------------------------------------------------------
def test_export_newest_to_a_folder(cli, trained, tmp_path):
    dest = tmp_path / "out"
    data = cli.json("export", "exp", "--to", dest)
    assert set(data) == EXPORT_KEYS
    assert (data["uuid"], data["steps_completed"], data["format"]) == (trained.uuids[9], 9, "directory")
    assert sorted(data["files"]) == ["MANIFEST.json", "state.json", "tensors.safetensors"]
    for name in data["files"]:
        assert (dest / name).read_bytes() == (trained.checkpoint(9) / name).read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left
    again = cli("verify", dest)  # the copy is a self-describing checkpoint folder
    assert again.exit_code == 0 and trained.uuids[9] in again.stdout


def test_export_tensors_to_safetensors(cli, trained, tmp_path):
    from safetensors.numpy import load_file
    dest = tmp_path / "model.safetensors"
    result = cli("export", "exp/1", "--uuid", trained.uuids[6], "--to", dest)
    assert result.exit_code == 0 and "verified" in result.stdout and trained.uuids[6] in result.stdout
    assert np.array_equal(load_file(dest)["w"], np.full(4, 6.0, dtype=np.float32))
    data = cli.json("export", "exp", "--to", tmp_path / "newest.safetensors")
    assert data["format"] == "safetensors" and data["files"] == ["tensors.safetensors"]
    assert data["size_bytes"] == (tmp_path / "newest.safetensors").stat().st_size


def test_export_from_a_checkpoint_folder(cli, trained, tmp_path):
    from safetensors.numpy import load_file
    dest = tmp_path / "w.safetensors"
    assert cli("export", trained.checkpoint(4), "--to", dest).exit_code == 0
    assert load_file(dest)["w"][0] == 4.0


def test_export_skips_a_corrupt_newest_and_marks_it(cli, trained, tmp_path):
    flip_byte(trained.checkpoint(9) / "tensors.safetensors")
    result = cli("export", "exp", "--to", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert f"skipping corrupt checkpoint {trained.uuids[9]}" in result.stderr
    assert trained.uuids[8] in result.stdout
    assert trained.tracker().checkpoint(trained.uuids[9]).state == "corrupt"


def test_export_of_a_named_corrupt_checkpoint_fails_and_leaves_nothing(cli, trained, tmp_path):
    flip_byte(trained.checkpoint(9) / "tensors.safetensors")
    for dest in (tmp_path / "out", tmp_path / "t.safetensors"):
        assert_error(cli("export", "exp", "--uuid", trained.uuids[9], "--to", dest), "fails its checksum")
    assert list(tmp_path.iterdir()) == [trained.home]


def test_export_non_state_checkpoint(cli, trained, tmp_path):
    assert_error(cli("export", "raw", "--to", tmp_path / "x.safetensors"), "holds no State tensors", "--to DIR")
    assert cli("export", "raw", "--to", tmp_path / "files").exit_code == 0
    assert (tmp_path / "files" / "weights.bin").read_bytes() == b"\x01" * 5000


def test_export_refuses_to_overwrite(cli, trained, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    (tmp_path / "t.safetensors").write_text("mine")
    assert_error(cli("export", "exp", "--to", tmp_path / "full"), "not an empty folder")
    assert_error(cli("export", "exp", "--to", tmp_path / "t.safetensors"), "exists already")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    (tmp_path / "empty").mkdir()
    assert cli("export", "exp", "--to", tmp_path / "empty").exit_code == 0  # an empty folder is fine


# -- logs --------------------------------------------------------------------------------------------
def test_logs_of_every_attempt(cli, trained):
    result = cli("logs", "exp")
    assert result.exit_code == 0, result.output
    assert result.stdout == (f"==> attempt 1: {trained.logs[0]} <==\nhello from attempt 1\nline two\n"
                             f"==> attempt 2: {trained.logs[1]} <==\nhello from attempt 2\nline two\n")


def test_logs_of_one_attempt(cli, trained):
    result = cli("logs", "exp", "--attempt", "2")
    assert result.exit_code == 0 and result.stdout == "hello from attempt 2\nline two\n"
    assert_error(cli("logs", "exp", "-a", "5"), "has no attempt 5")


def test_logs_missing_files(cli, trained):
    trained.logs[0].unlink()
    result = cli("logs", "exp")
    assert result.exit_code == 0 and "hello from attempt 2" in result.stdout
    assert "attempt 1: no log at" in result.stderr
    assert_error(cli("logs", "raw"), "has no attempt logs")


def test_logs_default_path_when_the_index_has_none(cli, trained):
    tracker = trained.tracker()
    tracker.update_attempt(tracker.attempts(trained.trial_id)[0].id, log_path=None)
    assert cli("logs", "exp", "-a", "1").stdout == "hello from attempt 1\nline two\n"


def test_logs_follow_until_the_attempt_ends(cli, trained, monkeypatch):
    monkeypatch.setattr(logs_cmd, "FOLLOW_INTERVAL", 0.02)
    tracker = trained.tracker()
    log = trained.logs[1].parent / "attempt-3.log"
    attempt = tracker.start_attempt(trained.trial_id, pid=os.getpid(), log_path=str(log))

    def training():
        time.sleep(0.2)
        with open(log, "a") as f:
            for i in range(5):
                f.write(f"step {i}\n")
                f.flush()
                time.sleep(0.05)
        tracker.end_attempt(attempt.id, "preempted", exit_code=75)

    writer = threading.Thread(target=training)
    writer.start()
    result = cli("logs", "exp", "--follow")
    writer.join()
    assert result.exit_code == 0, result.output
    assert result.stdout == "".join(f"step {i}\n" for i in range(5))
    assert "attempt 3 ended: preempted" in result.stderr


def test_logs_follow_stops_when_the_process_is_gone(cli, trained, monkeypatch):
    monkeypatch.setattr(logs_cmd, "FOLLOW_INTERVAL", 0.02)
    tracker = trained.tracker()
    log = trained.logs[1].parent / "attempt-3.log"
    log.write_text("last words\n")
    tracker.start_attempt(trained.trial_id, pid=dead_pid(), log_path=str(log))
    result = cli("logs", "exp", "-f")
    assert result.exit_code == 0 and result.stdout == "last words\n"
    assert "its process is gone" in result.stderr


# -- rm ----------------------------------------------------------------------------------------------
def test_rm_one_checkpoint(cli, trained):
    data = cli.json("rm", "exp", "--uuid", trained.uuids[4])
    assert data == {"trial": "exp/1", "deleted": [trained.uuids[4]]}
    assert not trained.checkpoint(4).exists() and trained.checkpoint(5).exists()
    assert trained.tracker().checkpoint(trained.uuids[4]).state == "deleted"
    assert trained.uuids[4] not in cli("checkpoints", "exp").stdout


def test_rm_unknown_uuid_deletes_nothing(cli, trained):
    assert_error(cli("rm", "exp", "--uuid", trained.uuids[2], "--uuid", "nope"), "no checkpoint nope")
    assert trained.checkpoint(2).exists()
    assert_error(cli("rm", "exp"), "--uuid UUID", "--all-checkpoints")


def test_rm_all_checkpoints_asks_first(cli, trained):
    declined = cli("rm", "exp", "--all-checkpoints", input="n\n")
    assert declined.exit_code == 1 and "Delete all 6 checkpoint(s) of trial exp/1?" in declined.stderr
    assert all(trained.checkpoint(s).exists() for s in STEPS)
    result = cli("rm", "exp", "--all-checkpoints", input="y\n")
    assert result.exit_code == 0 and "deleted 6 checkpoint(s)" in result.stdout
    assert [p.name for p in trained.folder.iterdir() if not p.name.startswith(".")] == []  # .leases may stay
    assert cli.json("rm", "raw", "--all-checkpoints", "--yes")["deleted"]  # --yes: no question


# -- rm-experiment -----------------------------------------------------------------------------------
def test_rm_experiment_asks_then_deletes_index_and_folder(cli, trained):
    folder = trained.home / "experiments" / "exp"
    declined = cli("rm-experiment", "exp", input="n\n")
    assert declined.exit_code == 1 and "1 trial(s) in the index and the folder" in declined.stderr
    assert folder.exists() and trained.tracker().trial("exp")
    result = cli("rm-experiment", "exp", input="y\n")
    assert result.exit_code == 0 and "deleted experiment exp" in result.stdout
    assert not folder.exists()
    assert [e["name"] for e in cli.json("ls")["experiments"]] == ["raw"]
    assert_error(cli("show", "exp"), "no experiment named 'exp'")


def test_rm_experiment_json_and_errors(cli, trained):
    data = cli.json("rm-experiment", "raw", "--yes")
    assert data == {"experiment": "raw", "trials": 1, "folder": str(trained.home / "experiments" / "raw")}
    assert_error(cli("rm-experiment", "raw", "--yes"), "no experiment named 'raw'")
    assert_error(cli("rm-experiment", "..", "--yes"), "invalid experiment name")
    assert (trained.home / "experiments" / "exp").exists()


def test_rm_experiment_of_a_folder_the_index_lost(cli, trained):
    orphan = trained.home / "experiments" / "orphan" / "trial-1"
    orphan.mkdir(parents=True)
    data = cli.json("rm-experiment", "orphan", "--yes")
    assert data["trials"] == 0 and not orphan.parent.exists()


# -- gc ----------------------------------------------------------------------------------------------
@pytest.fixture
def litter(trained):
    """A dead writer's staging folder, a live one's, a folder without manifest, a corrupt
    checkpoint marked in the index, and a good one marked corrupt by mistake."""
    host = socket.gethostname()
    dead = trained.folder / f".tmp-{trained.uuids[2]}x-{host}-{dead_pid()}"
    live = trained.folder / f".tmp-abc-{host}-{os.getpid()}"
    for folder in (dead, live, trained.folder / "junk"):
        folder.mkdir()
    flip_byte(trained.checkpoint(4) / "tensors.safetensors")
    tracker = trained.tracker()
    tracker.mark_checkpoint(trained.uuids[4], "corrupt", "checksum")
    tracker.mark_checkpoint(trained.uuids[5], "corrupt", "a transient read error")
    return {"dead": dead, "live": live}


def test_gc_dry_run_lists_only(cli, trained, litter):
    data = cli.json("gc", "--corrupt", "--dry-run")
    assert data["dry_run"] is True and all(set(r) == GC_KEYS for r in data["removed"])
    assert sorted((r["kind"], r["name"]) for r in data["removed"]) == sorted(
        [("staging", litter["dead"].name), ("corrupt", "junk"), ("corrupt", trained.uuids[4])])
    assert litter["dead"].exists() and (trained.folder / "junk").exists() and trained.checkpoint(4).exists()
    human = cli("gc", "exp", "--corrupt", "--dry-run").stdout
    assert "would remove staging" in human and "would remove 3 item(s)" in human


def test_gc_removes_stale_staging_and_corrupt_checkpoints(cli, trained, litter):
    staging_only = cli.json("gc", "exp")
    assert [r["name"] for r in staging_only["removed"]] == [litter["dead"].name]
    assert not litter["dead"].exists() and litter["live"].exists()
    result = cli("gc", "--corrupt")
    assert result.exit_code == 0 and "removed 2 item(s)" in result.stdout
    assert not (trained.folder / "junk").exists() and not trained.checkpoint(4).exists()
    assert trained.checkpoint(5).exists()  # its mark did not hold: kept, and the mark cleared
    tracker = trained.tracker()
    assert tracker.checkpoint(trained.uuids[4]).state == "deleted"
    assert tracker.checkpoint(trained.uuids[5]).state == "committed"


def test_gc_works_without_a_database(cli, trained, litter):
    (trained.home / "unbroken.db").unlink()
    for suffix in ("-wal", "-shm"):
        (trained.home / f"unbroken.db{suffix}").unlink(missing_ok=True)
    data = cli.json("gc", "--corrupt")
    assert {r["name"] for r in data["removed"]} == {litter["dead"].name, "junk"}  # no index, no marks
    assert not (trained.home / "unbroken.db").exists()


def test_gc_keeps_checkpoints_of_a_newer_format(cli, trained):
    newer = trained.folder / "from-the-future"
    newer.mkdir()
    (newer / "MANIFEST.json").write_text('{"format": "unbroken-checkpoint", "format_version": 99}')
    assert cli.json("gc", "--corrupt")["removed"] == []
    assert newer.exists()


# -- help and imports --------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["ls", "show", "metrics", "checkpoints", "verify", "export", "rm", "rm-experiment",
                                     "gc", "reindex"])
def test_help_documents_the_json_shape(cli, command):
    result = cli(command, "--help")
    assert result.exit_code == 0 and "--json prints" in result.stdout


def test_the_group_lists_every_command(cli):
    text = cli("--help").stdout
    for command in ("ls", "show", "metrics", "checkpoints", "logs", "verify", "export", "rm", "rm-experiment", "gc",
                    "reindex"):
        assert f"  {command} " in text


def test_import_unbroken_stays_light():
    code = "import sys, unbroken; print(sorted(m for m in ('click', 'rich', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
