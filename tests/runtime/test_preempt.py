import os
import signal

import pytest

from unbroken.errors import ConfigError
from unbroken.runtime.preempt import PreemptContext
from unbroken.signals import parse_signal


def test_parse_signal():
    assert parse_signal("USR2") is signal.SIGUSR2
    assert parse_signal("SIGTERM") is signal.SIGTERM
    assert parse_signal(10) is signal.SIGUSR1
    with pytest.raises(ConfigError, match="unknown signal"):
        parse_signal("NOPE")


def test_signal_only_sets_a_flag_and_handlers_are_restored():
    before = signal.getsignal(signal.SIGUSR2)
    ctx = PreemptContext()
    assert ctx.install()
    assert not ctx.should_preempt()
    os.kill(os.getpid(), signal.SIGUSR2)
    assert ctx.should_preempt() and ctx.reason == "signal SIGUSR2"
    ctx.uninstall()
    assert signal.getsignal(signal.SIGUSR2) == before


def test_second_sigint_interrupts():
    ctx = PreemptContext(["INT"])
    ctx.install()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        assert ctx.should_preempt()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        ctx.uninstall()


def test_extra_signal_is_added_to_term_and_int():
    assert PreemptContext(extra_signal="USR1").signals == (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


def test_the_supervisors_signal_reaches_the_run(home, monkeypatch):
    import unbroken

    monkeypatch.setenv("UNBROKEN_PREEMPT_SIGNAL", "USR1")
    with unbroken.init("sig", home=home) as run:
        assert signal.SIGUSR1 in run.preempt.signals


@pytest.mark.parametrize("name", ["KILL", "SIGSTOP", 9])
def test_uncatchable_signals_are_refused(name):
    with pytest.raises(ConfigError, match="cannot be caught"):
        parse_signal(name)


def test_handlers_are_installed_only_once_someone_asks():
    before = signal.getsignal(signal.SIGTERM)
    ctx = PreemptContext()
    try:
        assert signal.getsignal(signal.SIGTERM) == before and not ctx.armed
        assert not ctx.should_preempt()
        assert ctx.armed and signal.getsignal(signal.SIGTERM) != before
    finally:
        ctx.uninstall()
    assert signal.getsignal(signal.SIGTERM) == before
    assert not ctx.should_preempt() and signal.getsignal(signal.SIGTERM) == before  # closed: never again


def test_a_script_that_never_asks_still_dies_on_sigterm(tmp_path):
    """A Determined-style script that never calls should_preempt() must not swallow SIGTERM."""
    import subprocess
    import sys

    script = tmp_path / "never_asks.py"
    script.write_text(
        "import sys, time, unbroken\n"
        f"with unbroken.init('never', home={str(tmp_path / 'home')!r}) as run:\n"
        "    print('ready', flush=True)\n"
        "    time.sleep(60)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNBROKEN_")}
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == -signal.SIGTERM


def test_deadline_with_a_fake_clock():
    now = [1000.0]
    ctx = PreemptContext(deadline=1010.0, clock=lambda: now[0])
    try:
        assert not ctx.should_preempt() and ctx.reason is None
        now[0] = 1010.0
        assert ctx.should_preempt() and ctx.reason == "deadline"
    finally:
        ctx.uninstall()
