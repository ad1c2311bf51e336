"""A reader that goes away (`unbroken logs X | head`) ends every command quietly: status 0, nothing on
stderr. Real processes and real pipes: `python -m unbroken` is the `unbroken` command."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

BIG = 4 << 20  # far more than a pipe buffer holds: the writer is blocked when the reader leaves


def start(home, *args, stdout, stderr_file):
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNBROKEN_")}
    env["UNBROKEN_HOME"] = str(home)
    return subprocess.Popen([sys.executable, "-m", "unbroken", *args], stdout=stdout, stderr=stderr_file, env=env)


def test_logs_into_head_ends_quietly(indexed, tmp_path):
    line = b"a line of a long training log\n"
    indexed.paths.attempt_log(1).write_bytes(line * (BIG // len(line)))
    errors = tmp_path / "stderr"
    with open(errors, "wb") as err:
        proc = start(indexed.home, "logs", "exp", "-a", "1", stdout=subprocess.PIPE, stderr_file=err)
        assert proc.stdout.readline() == line      # the reader has read what it wanted ...
        proc.stdout.close()                         # ... and leaves, like `head -1`
        code = proc.wait(timeout=60)
    assert (code, errors.read_text()) == (0, "")


@pytest.mark.parametrize("args", [
    ["ls"], ["ls", "--json"], ["show", "exp"], ["show", "exp", "--json"], ["checkpoints", "exp"],
    ["logs", "exp"], ["metrics", "exp", "--csv"], ["metrics", "exp"], ["ls", "--help"],
])
def test_every_reading_command_ends_quietly_without_a_reader(indexed, tmp_path, args):
    read_end, write_end = os.pipe()
    os.close(read_end)                              # nobody will ever read: the first write fails
    errors = tmp_path / "stderr"
    with open(errors, "wb") as err:
        proc = start(indexed.home, *args, stdout=write_end, stderr_file=err)
        os.close(write_end)
        code = proc.wait(timeout=60)
    assert (code, errors.read_text()) == (0, "")


def test_errors_still_fail_when_stdout_is_gone(indexed, tmp_path):
    read_end, write_end = os.pipe()
    os.close(read_end)
    errors = tmp_path / "stderr"
    with open(errors, "wb") as err:
        proc = start(indexed.home, "show", "nope", stdout=write_end, stderr_file=err)
        os.close(write_end)
        code = proc.wait(timeout=60)
    assert code == 1 and errors.read_text().startswith("Error: no experiment named 'nope'")
