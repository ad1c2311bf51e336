"""TrialPaths and where a trial's checkpoints are."""

from __future__ import annotations

from pathlib import Path

import pytest

from unbroken.errors import ConfigError
from unbroken.paths import TrialPaths, trial_location


def test_the_layout_of_a_trial(tmp_path):
    paths = TrialPaths(tmp_path, "cifar", 2)
    assert paths.root == tmp_path / "experiments" / "cifar" / "trial-2"
    assert paths.checkpoints == paths.root / "checkpoints"
    assert paths.attempt_log(3) == paths.root / "logs" / "attempt-3.log"
    assert paths.writer_lock == paths.root / ".writer.lock"


def test_checkpoint_locations_under_a_storage_root(tmp_path):
    paths = TrialPaths(tmp_path, "cifar", 2)
    assert paths.checkpoint_location(None) == str(paths.checkpoints)
    assert paths.checkpoint_location("s3://bucket/runs/") == "s3://bucket/runs/experiments/cifar/trial-2/checkpoints"


def test_a_trial_on_an_object_store_stays_there_and_a_local_one_follows_the_home():
    url = "s3://b/p/experiments/x/trial-1/checkpoints"
    assert trial_location(url, "/home/new/experiments/x/trial-1/checkpoints", explicit=False, ref="x/1") == url
    assert trial_location("/old/home/x", "/new/home/x", explicit=False, ref="x/1") == "/new/home/x"
    assert trial_location(url, url + "/", explicit=True, ref="x/1") == url
    with pytest.raises(ConfigError, match="keeps its checkpoints in s3://b/p"):
        trial_location(url, "s3://other/experiments/x/trial-1/checkpoints", explicit=True, ref="x/1")


def test_bad_names_are_refused(tmp_path):
    with pytest.raises(ConfigError):
        TrialPaths(Path(tmp_path), "../up", 1)
