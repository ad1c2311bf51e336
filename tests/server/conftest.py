"""Fixtures of the dashboard tests: real homes made by real runs, a served dashboard, a browser.

* ``resumed_home`` (session): trial ``resumed/1`` ran under `unbroken run`, its child SIGKILLed
  at step 12 and again at step 22 (each after the checkpoint of step 10 / 20 committed), resumed
  each time and completed at step 30: three attempts, two restart markers; and ``other/1``, a
  short completed run.
* ``serve(home, ...)``: the dashboard on a free port in a thread (uvicorn), as `unbroken ui` runs it.
* ``browser`` (session): Debian's chromium driven by Playwright. Installed with
  scripts/chromium-up.sh when missing and we are root; otherwise the browser tests skip loudly,
  or fail when $CI is set (the pattern of tests/oshelpers.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator

import psutil
import pytest
import uvicorn
from procs import REPO, child_env
from waiting import wait_until

from unbroken.cli.main import main
from unbroken.server.app import create_app
from unbroken.server.config import ServerConfig
from unbroken.errors import TrackingError
from unbroken.tracking import Tracker

TRAINEE = Path(__file__).with_name("trainee.py")
CHROMIUM = Path("/usr/bin/chromium")


@dataclasses.dataclass
class Served:
    """A running dashboard: ``url(path)`` is an address on it; ``token`` its token."""

    home: Path
    base: str
    token: str
    config: ServerConfig

    def url(self, path: str = "/") -> str:
        return self.base + path


@contextlib.contextmanager
def serving(home: Path, host: str = "127.0.0.1", **settings) -> Iterator[Served]:
    """Serve ``home`` on ``host`` (any free port) until the block ends."""
    config = ServerConfig.build(home, host=host, port=0, **settings)
    server = uvicorn.Server(uvicorn.Config(create_app(config), host=host, port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started or not thread.is_alive(), timeout=30, what="the dashboard to start")
    assert server.started, "the dashboard did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield Served(home, f"http://{host}:{port}", config.token, config)
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="session")
def serve():
    """``serve(home, host="127.0.0.1", token=None, read_only=False)``: a context manager yielding :class:`Served`."""
    return serving


def raw_request(served: Served, path: str, method: str = "GET", headers: dict | None = None):
    """A raw request (no client-side normalisation of ``..``): ``(status, headers (lower-case names), body)``."""
    host, port = served.base.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request(method, path, headers=headers or {})
    res = conn.getresponse()
    body = res.read()
    conn.close()
    return res.status, {k.lower(): v for k, v in res.getheaders()}, body


@pytest.fixture(scope="session")
def request_raw():
    """``request_raw(served, path, method="GET", headers=None) -> (status, headers, body)``."""
    return raw_request


def unbroken_run(home: Path, name: str, control: Path, *trainee_args: str) -> subprocess.Popen:
    control.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "unbroken", "run", "--name", name, "--max-restarts", "5", "--backoff", "0", "--",
           sys.executable, "-u", str(TRAINEE), str(control), *trainee_args]
    return subprocess.Popen(cmd, env=child_env(home), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def committed_steps(home: Path, name: str) -> set[int]:
    """The steps of the committed checkpoints of trial ``name`` (none while its index is being created)."""
    try:
        with contextlib.closing(Tracker.open_readonly(home / "unbroken.db")) as tracker:
            return {c.steps_completed for c in tracker.checkpoints(tracker.trial(name).id) if c.state == "committed"}
    except TrackingError:  # no index yet, no schema yet, no such trial yet
        return set()


def reported_step(home: Path, name: str) -> int:
    """The step of the newest training/loss point of trial ``name`` in the index (0 when none)."""
    try:
        with contextlib.closing(Tracker.open_readonly(home / "unbroken.db")) as tracker:
            return tracker.latest_metrics(tracker.trial(name).id).get("training", {}).get("loss", (0, None))[0]
    except TrackingError:
        return 0


def kill_child_at(sup: subprocess.Popen, home: Path, name: str, control: Path, step: int, checkpoint: int) -> None:
    """Wait until the child holds at ``step`` with ``checkpoint`` committed and its points up to
    ``step`` in the index (metrics are flushed every second), then SIGKILL it."""
    wait_until(lambda: (control / f"held-{step}").exists() or sup.poll() is not None, timeout=120,
               what=f"the child to reach step {step}")
    assert sup.poll() is None, sup.stderr.read()
    wait_until(lambda: checkpoint in committed_steps(home, name), timeout=60, what=f"checkpoint {checkpoint}")
    wait_until(lambda: reported_step(home, name) >= step, timeout=60, what=f"the points up to step {step}")
    (child,) = psutil.Process(sup.pid).children()
    child.send_signal(signal.SIGKILL)
    child.wait(30)


@pytest.fixture(scope="session")
def resumed_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("ui") / "home"
    control = home.parent / "control"
    sup = unbroken_run(home, "resumed", control, "--steps", "30", "--hold", "12,22")
    kill_child_at(sup, home, "resumed", control, 12, 10)
    kill_child_at(sup, home, "resumed", control, 22, 20)
    _, err = sup.communicate(timeout=180)
    assert sup.returncode == 0, err
    other = unbroken_run(home, "other", control, "--steps", "6")
    _, err = other.communicate(timeout=180)
    assert other.returncode == 0, err
    return home


@pytest.fixture
def live_run(tmp_path) -> Iterator[tuple[Path, Path, subprocess.Popen]]:
    """``live/1`` running under `unbroken run`: 5 steps, then one point and one log line per tick file."""
    home, control = tmp_path / "home", tmp_path / "control"
    sup = unbroken_run(home, "live", control, "--steps", "5", "--tick")
    try:
        wait_until(lambda: 5 in committed_steps(home, "live") or sup.poll() is not None, timeout=120,
                   what="the live run to finish its steps")
        assert sup.poll() is None, sup.stderr.read()
        yield home, control, sup
    finally:
        (control / "stop").touch()
        try:
            sup.wait(60)
        except subprocess.TimeoutExpired:
            sup.kill()
            sup.wait()


@pytest.fixture(scope="session")
def cli_json():
    """``cli_json(home, *args)``: the JSON document of `unbroken ARGS --json` on ``home``."""
    from click.testing import CliRunner

    def run(home: Path, *args: str):
        result = CliRunner().invoke(main, [*args, "--json"], env={"UNBROKEN_HOME": str(home)}, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)
    return run


def _skip_or_fail(reason: str) -> None:
    message = (f"!!! BROWSER TESTS NOT RUN: {reason}. Run scripts/chromium-up.sh as root (Debian's chromium) "
               "and pip install playwright to cover the dashboard in a real browser.")
    if os.environ.get("CI"):
        pytest.fail(message + " CI is set, so this is a failure, not a skip.")
    pytest.skip(message)


@pytest.fixture(scope="session")
def browser():
    """A headless chromium (Playwright) for the session."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _skip_or_fail("playwright is not installed")
    if not CHROMIUM.exists():
        if os.geteuid() != 0:
            _skip_or_fail("/usr/bin/chromium is missing and installing it needs root")
        result = subprocess.run([str(REPO / "scripts" / "chromium-up.sh")], capture_output=True, text=True, timeout=900)
        if result.returncode != 0 or not CHROMIUM.exists():
            _skip_or_fail(f"scripts/chromium-up.sh failed: {result.stderr.strip()[-500:]}")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 1400})
    yield context.new_page()
    context.close()
