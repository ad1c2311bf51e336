"""Helpers of the sweep tests (imported as sweep.sweephelp): sweep files, drivers as real processes, rows."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from procs import child_env

from unbroken.errors import NotFound
from unbroken.sweep.state import SweepStore

HERE = Path(__file__).resolve().parent
TRAINEE = [sys.executable, "-u", str(HERE / "trainee.py")]


def write_sweep(folder: Path, **fields) -> Path:
    """A JSON sweep file (JSON is YAML too) with ``fields``."""
    path = folder / f"{fields['name']}.json"
    path.write_text(json.dumps({"restart_backoff": 0.05, **fields}))
    return path


def driver_cmd(sweep_file: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "unbroken", "sweep", "run", str(sweep_file), *extra, "--", *TRAINEE]


def start_driver(home: Path, sweep_file: Path, log: Path, **env: str) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(driver_cmd(sweep_file), env=child_env(home, **env), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def run_driver(home: Path, sweep_file: Path, timeout: float = 150, **env: str) -> subprocess.CompletedProcess:
    done = subprocess.run(driver_cmd(sweep_file), env=child_env(home, **env), capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def rows(home: Path, name: str):
    """The sweep's rows ({} while its driver has not recorded the sweep yet)."""
    store = SweepStore(str(home / "unbroken.db"))
    try:
        return store.trials(store.sweep(name).id)
    except NotFound:
        return {}
    finally:
        store.close()


def outcome(home: Path, name: str) -> dict:
    """What must not depend on kills: each trial's config, state, last iteration, results and message."""
    return {n: (r.config, r.state, r.iteration, r.message,
                {t: {k: v for k, v in res.items() if k != "time_total_s"} for t, res in r.results.items()})
            for n, r in rows(home, name).items()}


def kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
