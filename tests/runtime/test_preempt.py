import os
import signal
import time

import pytest

from unbroken.errors import ConfigError
from unbroken.runtime.preempt import PreemptContext, parse_signal


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


def test_signal_from_environment(monkeypatch):
    monkeypatch.setenv("UNBROKEN_PREEMPT_SIGNAL", "USR1")
    assert signal.SIGUSR1 in PreemptContext().signals


def test_deadline(monkeypatch):
    monkeypatch.setenv("UNBROKEN_DEADLINE", str(time.time() + 3600))
    assert not PreemptContext().should_preempt()
    ctx = PreemptContext(deadline=time.time() - 1)
    assert ctx.should_preempt() and ctx.reason == "deadline"
