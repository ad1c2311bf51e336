"""gather: each rank reports its shard durably; rank 0 collects every report or fails naming the rank (fake clock)."""

from __future__ import annotations

import pytest

from unbroken.checkpoint.format.manifest import FileEntry
from unbroken.checkpoint.store import gather
from unbroken.errors import CheckpointError


def entries(*paths: str) -> dict[str, FileEntry]:
    return {p: FileEntry(p, 10 + i, 100 + i) for i, p in enumerate(paths)}


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0  # every look at the clock is a second later
        return self.now


def test_collect_merges_every_ranks_entries_and_removes_the_reports(tmp_path):
    gather.report(tmp_path, 1, entries("rank-1/a"), needs_pickle=True)
    gather.report(tmp_path, 0, entries("rank-0/a", "replicated/b"))
    merged, any_pickle = gather.collect(tmp_path, 2, timeout=5)
    assert sorted(merged) == ["rank-0/a", "rank-1/a", "replicated/b"]
    assert merged["rank-1/a"] == FileEntry("rank-1/a", 10, 100)
    assert any_pickle is True
    assert not (tmp_path / gather.REPORTS_DIR).exists()  # the manifest never lists the reports


def test_a_rank_that_failed_is_named_and_nothing_is_committed(tmp_path):
    gather.report(tmp_path, 0, entries("rank-0/a"))
    gather.report(tmp_path, 1, None, error="OSError: No space left on device")
    with pytest.raises(CheckpointError, match=r"rank 1 could not write its shard: OSError: No space"):
        gather.collect(tmp_path, 2, timeout=5)


def test_a_rank_that_never_reports_times_out_naming_it(tmp_path):
    gather.report(tmp_path, 0, entries("rank-0/a"))
    with pytest.raises(CheckpointError, match=r"rank\(s\) \[1, 2\] did not finish .* within 10 s"):
        gather.collect(tmp_path, 3, timeout=10, poll=0, clock=FakeClock())


def test_an_unreadable_report_is_an_error_not_a_hang(tmp_path):
    folder = tmp_path / gather.REPORTS_DIR
    folder.mkdir()
    (folder / "rank-0.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable shard report"):
        gather.collect(tmp_path, 1, timeout=5)
