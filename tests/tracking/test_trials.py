"""join_trial: the one owner of "find or create the trial" (newest, numbered, fresh; hparams, command)."""

from __future__ import annotations

import multiprocessing

import pytest

from unbroken.errors import ConfigError, NotFound, TrialNotFound
from unbroken.tracking import Tracker, join_trial


def storage(number: int) -> str:
    return f"/store/trial-{number}"


def test_an_experiment_without_trials_gets_trial_1(tracker):
    trial = join_trial(tracker, "exp", hparams={"lr": 0.1}, command="python train.py", storage_of=storage)
    assert (trial.ref, trial.hparams, trial.command, trial.storage) == ("exp/1", {"lr": 0.1}, "python train.py",
                                                                        "/store/trial-1")


def test_without_number_or_fresh_the_newest_trial_is_resumed(tracker):
    tracker.create_trial("exp")
    newest = tracker.create_trial("exp", hparams={"lr": 0.1})
    assert join_trial(tracker, "exp").id == newest.id
    assert join_trial(tracker, "exp", hparams={"lr": 0.1}).id == newest.id
    assert len(tracker.trials("exp")) == 2


def test_fresh_starts_a_new_trial(tracker):
    tracker.create_trial("exp", hparams={"lr": 0.1})
    trial = join_trial(tracker, "exp", fresh=True, hparams={"lr": 0.5}, storage_of=storage)
    assert (trial.number, trial.hparams, trial.storage) == (2, {"lr": 0.5}, "/store/trial-2")
    assert join_trial(tracker, "new-exp", fresh=True).ref == "new-exp/1"


def test_a_numbered_trial_is_joined_or_created_if_it_is_the_next(tracker):
    first = tracker.create_trial("exp")
    tracker.create_trial("exp")
    assert join_trial(tracker, "exp", number=1).id == first.id
    created = join_trial(tracker, "exp", number=3, storage_of=storage)
    assert (created.number, created.storage) == (3, "/store/trial-3")
    with pytest.raises(TrialNotFound, match=r"exp/7 does not exist \(the next new one is exp/4\)"):
        join_trial(tracker, "exp", number=7)
    assert len(tracker.trials("exp")) == 3  # nothing created by the refusal
    assert join_trial(tracker, "other", number=1).ref == "other/1"
    with pytest.raises(TrialNotFound, match=r"other/3 does not exist \(the next new one is other/2\)"):
        join_trial(tracker, "other", number=3)


@pytest.mark.parametrize("number", [0, -1, "1", 1.0, True])
def test_bad_trial_numbers_are_config_errors(tracker, number):
    with pytest.raises(ConfigError):
        join_trial(tracker, "exp", number=number)


def test_number_and_fresh_together_are_refused(tracker):
    with pytest.raises(ConfigError, match="not both"):
        join_trial(tracker, "exp", number=1, fresh=True)


def test_other_hparams_are_refused_with_a_way_out(tracker):
    tracker.create_trial("exp", hparams={"lr": 0.1})
    with pytest.raises(ConfigError, match=r"trial exp/1 was started with hparams \{'lr': 0.1\}, not \{'lr': 0.2\}: "
                                          r"pass the same hparams.*fresh=True \(`unbroken run --fresh`\)"):
        join_trial(tracker, "exp", hparams={"lr": 0.2})
    with pytest.raises(ConfigError, match="was started with hparams"):
        join_trial(tracker, "exp", number=1, hparams={})
    assert tracker.trial("exp", 1).hparams == {"lr": 0.1}
    assert join_trial(tracker, "exp", hparams={"lr": 0.1}).number == 1  # the same ones resume it
    with pytest.raises(ConfigError, match="hparams must be JSON"):
        join_trial(tracker, "exp", hparams={"lr": float("nan")})


def test_a_trial_with_empty_hparams_adopts_the_given_ones(tracker):
    made_by_supervisor = tracker.create_trial("exp", command="unbroken run -- python train.py")
    trial = join_trial(tracker, "exp", number=1, hparams={"lr": 0.1, "layers": (1, 2)})
    assert trial.id == made_by_supervisor.id and trial.hparams == {"lr": 0.1, "layers": [1, 2]}
    assert tracker.trial("exp", 1).hparams == {"lr": 0.1, "layers": [1, 2]}
    assert join_trial(tracker, "exp", hparams={"layers": [1, 2], "lr": 0.1}).id == trial.id  # order, tuple/list


def test_the_command_is_stored_when_given(tracker):
    tracker.create_trial("exp", command="old")
    assert join_trial(tracker, "exp").command == "old"
    assert join_trial(tracker, "exp", command="new").command == "new"
    assert tracker.trial("exp", 1).command == "new"
    assert join_trial(tracker, "exp", number=2, command="second").command == "second"


def test_an_invalid_experiment_name_is_a_config_error(tracker):
    with pytest.raises(ConfigError):
        join_trial(tracker, "../escape")


def test_tracker_trial_raises_trial_not_found(tracker):
    tracker.create_trial("exp")
    for call in (lambda: tracker.trial("exp", 2), lambda: tracker.trial("nope"), lambda: tracker.trial_by_id(99)):
        with pytest.raises(TrialNotFound) as info:
            call()
        assert isinstance(info.value, NotFound) and isinstance(info.value, LookupError)


def _join_newest(url: str, results, start) -> None:
    tracker = Tracker(url)
    start.wait(30)
    results.put(join_trial(tracker, "race").number)
    tracker.close()


def test_processes_joining_at_once_share_one_new_trial(db_url, run_together):
    Tracker(db_url).close()
    results = multiprocessing.get_context("spawn").Queue()
    run_together(_join_newest, [(db_url, results)] * 4)
    assert sorted(results.get(timeout=10) for _ in range(4)) == [1, 1, 1, 1]
    with Tracker(db_url) as tracker:
        assert [t.number for t in tracker.trials("race")] == [1]
