"""Readers show a trial whose process was SIGKILLed (no supervisor recorded its end) as "lost",
and the resume point of every attempt that restored one."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import psutil
import pytest

from unbroken.tracking import Tracker


def rows_of(text: str, title: str) -> list[list[str]]:
    """The data rows (split on whitespace) of the table titled ``title`` in rich's output."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == title)
    rows = []
    for line in lines[start + 3:]:  # title, header, rule
        if not line.strip():
            break
        rows.append(line.split())
    return rows


@pytest.fixture
def killed(indexed):
    """A third attempt of exp/1 whose process is alive, then SIGKILLed; yields (kill, reap)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    tracker = Tracker(indexed.home / "unbroken.db")
    tracker.start_attempt(indexed.trial.id, pid=child.pid)  # start time read from the live process
    tracker.close()
    yield child
    child.kill()
    child.wait()


@pytest.mark.parametrize("reaped", [True, False], ids=["reaped", "zombie"])
def test_a_killed_trial_shows_as_lost(cli, indexed, killed, reaped):
    assert cli.json("show", "exp")["trial"]["status"] == "running"          # alive: running
    assert cli.json("show", "exp")["attempts"][-1]["state"] == "running"
    killed.send_signal(signal.SIGKILL)
    if reaped:
        killed.wait()
    else:  # not reaped: a zombie keeps its pid, but it is no live process
        assert _wait_for_zombie(killed.pid)
    data = cli.json("show", "exp")
    assert data["trial"]["status"] == "lost"
    assert (data["attempts"][-1]["state"], data["attempts"][-1]["end_reason"]) == ("lost", None)
    assert [a["state"] for a in data["attempts"]] == ["crashed", "completed", "lost"]
    assert cli.json("ls")["experiments"][0]["trials"][0]["status"] == "lost"
    ls_row = next(line.split() for line in cli("ls").stdout.splitlines() if line.startswith("exp/1"))
    assert ls_row[1] == "lost"
    text = cli("show", "exp").stdout
    assert "Trial exp/1: lost" in text
    assert rows_of(text, "Attempts")[-1][7] == "lost"   # #, date, time, duration, host, pid, exit, END
    assert Tracker(indexed.home / "unbroken.db").trial("exp").status == "running"  # readers never write


def _wait_for_zombie(pid: int, timeout: float = 10.0) -> bool:
    """Poll until ``pid`` is a zombie (killed, not reaped); False if it is not within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return True
        time.sleep(0.005)
    return False


def test_show_prints_the_resume_point_of_each_restoring_attempt(cli, indexed):
    tracker = Tracker(indexed.home / "unbroken.db")
    third = tracker.start_attempt(indexed.trial.id, pid=None)
    tracker.update_attempt(third.id, restored_uuid=indexed.manifests[2].uuid, restored_steps=8)
    tracker.end_attempt(third.id, "completed", exit_code=0)
    rows = rows_of(cli("show", "exp").stdout, "Attempts")
    restored = [row[8:10] if row[8] == "step" else row[8:9] for row in rows]
    assert restored == [["-"], ["step", "4"], ["step", "8"]]
    attempts = cli.json("show", "exp")["attempts"]
    assert [(a["restored_steps"], a["restored_uuid"]) for a in attempts] == [
        (None, None), (4, indexed.manifests[1].uuid), (8, indexed.manifests[2].uuid)]
