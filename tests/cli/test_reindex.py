"""`unbroken reindex`: the index's checkpoint rows rebuilt from storage (the truth), and trials
found on disk but lost by the index put back with their numbers."""

from __future__ import annotations

import shutil

import pytest

from unbroken.paths import TrialPaths
from unbroken.tracking import Tracker

ROW_KEYS = {"trial", "recreated", "added", "marked_deleted", "unchanged", "steps_completed"}


def states(home, ref: str) -> dict[str, str]:
    experiment, number = ref.split("/")
    with Tracker(home / "unbroken.db") as tracker:
        trial = tracker.trial(experiment, int(number))
        return {c.uuid: c.state for c in tracker.checkpoints(trial.id)}


def wipe_index(home) -> None:
    for name in ("unbroken.db", "unbroken.db-wal", "unbroken.db-shm"):
        (home / name).unlink(missing_ok=True)


def test_reindex_marks_gone_checkpoints_deleted_and_adds_unknown_ones(cli, indexed, checkpoint_into):
    gone, kept = indexed.manifests[2], indexed.manifests[:2]
    shutil.rmtree(indexed.paths.checkpoints / gone.uuid)               # deleted behind the index's back
    new = checkpoint_into(indexed.paths.checkpoints, 6)                         # committed, never indexed
    data = cli.json("reindex", "exp/1")
    assert set(data) == {"home", "rebuilt_index", "trials"} and data["rebuilt_index"] is False
    assert data["trials"] == [{"trial": "exp/1", "recreated": False, "added": 1, "marked_deleted": 1,
                               "unchanged": 2, "steps_completed": 6}]
    assert states(indexed.home, "exp/1") == {kept[0].uuid: "committed", kept[1].uuid: "committed",
                                             new.uuid: "committed", gone.uuid: "deleted"}
    assert cli.json("ls")["experiments"][0]["trials"][0]["latest_checkpoint_steps"] == 6


def test_reindex_twice_changes_nothing_the_second_time(cli, indexed, checkpoint_into):
    checkpoint_into(indexed.paths.checkpoints, 9)
    assert cli.json("reindex")["trials"][0]["added"] == 1
    result = cli("reindex", "--all")
    assert result.exit_code == 0, result.output
    assert "reindexed 1 trial(s): the index already matched storage" in result.stdout


def test_a_wiped_index_gets_its_trials_back_with_their_numbers(cli, indexed, checkpoint_into):
    other = [checkpoint_into(TrialPaths(indexed.home, "other", n).checkpoints, 10 * n) for n in (1, 2)]
    wipe_index(indexed.home)
    data = cli.json("reindex")
    assert [r["trial"] for r in data["trials"]] == ["exp/1", "other/1", "other/2"]
    assert all(set(r) == ROW_KEYS and r["recreated"] for r in data["trials"])
    assert [(r["added"], r["steps_completed"]) for r in data["trials"]] == [(3, 8), (1, 10), (1, 20)]
    listed = cli.json("ls")["experiments"]
    assert {t["ref"]: t["latest_checkpoint_steps"] for e in listed for t in e["trials"]} == {
        "exp/1": 8, "other/1": 10, "other/2": 20}
    assert set(states(indexed.home, "other/2")) == {other[1].uuid}
    assert "re-created by `unbroken reindex`" in cli.json("show", "other/2")["trial"]["message"]


def test_a_trial_folder_below_a_gap_is_recreated_in_order(cli, indexed, checkpoint_into):
    checkpoint_into(TrialPaths(indexed.home, "gap", 3).checkpoints, 5)
    data = cli.json("reindex", "gap")
    assert [r["trial"] for r in data["trials"]] == ["gap/3"]
    assert [t["number"] for t in cli.json("ls", "gap")["experiments"][0]["trials"]] == [1, 2, 3]
    assert cli.json("show", "gap/3")["trial"]["steps_completed"] == 5


def test_a_corrupt_index_is_moved_aside_and_rebuilt(cli, indexed):
    (indexed.home / "unbroken.db").write_bytes(b"this is not a database" * 100)
    result = cli("reindex", "--json")
    assert result.exit_code == 0, result.output
    assert "corrupt" in result.stderr and "moved it to" in result.stderr
    assert list(indexed.home.glob("unbroken.db.corrupt-*"))
    assert cli.json("ls")["experiments"][0]["trials"][0]["ref"] == "exp/1"


def test_reindex_an_experiment_only_touches_its_trials(cli, indexed, checkpoint_into):
    checkpoint_into(TrialPaths(indexed.home, "other", 1).checkpoints, 1)
    assert [r["trial"] for r in cli.json("reindex", "exp")["trials"]] == ["exp/1"]
    assert [e["name"] for e in cli.json("ls")["experiments"]] == ["exp"]


def test_reindex_human_output(cli, indexed):
    shutil.rmtree(indexed.paths.checkpoints / indexed.manifests[0].uuid)
    text = cli("reindex", "exp/1").stdout
    assert text.splitlines()[0].split() == ["TRIAL", "ADDED", "MARKED", "DELETED", "UNCHANGED", "STEPS", "NOTE"]
    assert text.splitlines()[2].split() == ["exp/1", "0", "1", "2", "8"]
    assert "reindexed 1 trial(s): 1 change(s)" in text


@pytest.mark.parametrize("args, fragment", [
    (["exp/4"], "nothing to reindex for 'exp/4'"),
    (["exp", "--all"], "either TARGET or --all"),
    (["bad/name/x"], "invalid trial"),
])
def test_reindex_errors(cli, indexed, args, fragment):
    result = cli("reindex", *args)
    assert result.exit_code == 1 and result.stderr.startswith("Error: ") and fragment in result.stderr, result.output


def test_reindex_of_an_empty_home(cli, home):
    result = cli("reindex")
    assert result.exit_code == 1 and "no runs yet" in result.stderr
    assert not (home / "unbroken.db").exists()
