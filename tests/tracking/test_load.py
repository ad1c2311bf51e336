"""Many processes creating trials and reporting metrics at once, on both backends: the quick
version of bench/tracking_load.py (which prints the figures; here only correctness counts)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "tracking_load.py"


@pytest.mark.slow
def test_eight_processes_of_five_trials_lose_double_and_deadlock_nothing(pg_cluster, tmp_path):
    processes, trials, reports, names = 8, 5, 20, 4
    out = subprocess.run([sys.executable, str(BENCH), "--processes", str(processes), "--trials", str(trials),
                          "--reports", str(reports), "--names", str(names), "--postgresql", pg_cluster.url("postgres"),
                          "--workdir", str(tmp_path), "--json"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    figures = json.loads(out.stdout)
    assert sorted(figures) == ["postgresql", "sqlite"]
    for backend, f in figures.items():
        # check() counted the rows in the index: every one once, trial numbers 1..40, one attempt each
        assert f["problems"] == [], backend
        assert (f["rows"], f["trials"], f["failed_writes"]) == (processes * trials * reports * names, 40, 0), backend
        assert f["batch_writes"] >= processes * trials  # each trial's writer wrote at least once
