"""`unbroken ui`: the extra is named when missing; the command prints a URL with the token and serves it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request

from click.testing import CliRunner
from procs import child_env

from unbroken.cli.main import main


def test_missing_extra_is_named(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn -> ImportError
    result = CliRunner().invoke(main, ["ui"], env={"UNBROKEN_HOME": str(tmp_path)})
    assert result.exit_code == 1 and "pip install 'unbroken[ui]'" in result.output


def test_the_command_prints_its_url_and_serves(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "unbroken", "ui", "--port", "0"], env=child_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and "/?token=" in url
        base = url.split("/?")[0]
        with urllib.request.urlopen(base + "/api/experiments", timeout=30) as res:
            assert json.load(res) == {"home": str(tmp_path.resolve()), "experiments": []}
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
