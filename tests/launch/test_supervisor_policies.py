"""The Supervisor's I/O shell with a fake clock and fake children: no processes, no real sleeps.

Each fake child follows a plan: it exits with ``code`` after ``runs`` (fake) seconds, answers a
forwarded signal by exiting with ``on_signal`` (or ignores it when None), and ``events`` fire at
given times of its life (e.g. a signal reaching the supervisor).
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import subprocess
from typing import Callable

import pytest

from unbroken.envvars import LaunchEnv
from unbroken.errors import LaunchError, TrialBusy
from unbroken.launch.environment import Environment
from unbroken.launch.restart import exponential_backoff, max_failures
from unbroken.launch.slurm import JobInfo, SlurmEnvironment
from unbroken.launch.supervisor import RunConfig, Supervisor
from unbroken.paths import TrialPaths
from unbroken.storage.locks import WriterLease
from unbroken.tracking import Tracker

START = 1_700_000_000.0


class FakeClock:
    """Wall and monotonic time that move only when someone sleeps or a fake child runs."""

    def __init__(self):
        self.wall, self.mono, self.sleeps = START, 0.0, []

    def time(self):
        return self.wall

    def monotonic(self):
        return self.mono

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.advance(seconds)

    def advance(self, seconds):
        self.wall += seconds
        self.mono += seconds


@dataclasses.dataclass
class Plan:
    code: int = 0
    runs: float = 1.0
    on_signal: int | None = 75
    events: list[tuple[float, Callable]] = dataclasses.field(default_factory=list)


class FakeChild:
    def __init__(self, clock: FakeClock, pid: int, plan: Plan, supervisor):
        self.clock, self.pid, self.plan, self.sup = clock, pid, plan, supervisor
        self.born, self.exit_at, self.code = clock.mono, clock.mono + plan.runs, plan.code
        self.events, self.signals, self.killed = sorted(plan.events, key=lambda e: e[0]), [], False

    def wait(self, timeout):
        end = min(self.clock.mono + timeout, self.exit_at)
        while self.events and self.born + self.events[0][0] <= end:
            at, action = self.events.pop(0)
            self.clock.advance(max(0.0, self.born + at - self.clock.mono))
            action(self.sup)
            end = min(end, self.exit_at)
        self.clock.advance(max(0.0, end - self.clock.mono))
        return self.code if self.clock.mono >= self.exit_at else None

    def send_signal(self, sig):
        self.signals.append(sig)
        if self.plan.on_signal is not None:
            self.exit_at, self.code = self.clock.mono, self.plan.on_signal

    def kill_group(self):
        if self.clock.mono < self.exit_at:
            self.killed, self.exit_at, self.code = True, self.clock.mono, -signal.SIGKILL


class FakeSpawner:
    def __init__(self, clock: FakeClock, plans: list[Plan]):
        self.clock, self.plans, self.envs, self.children, self.supervisor = clock, list(plans), [], [], None

    def __call__(self, argv, env, tee):
        self.envs.append(env)
        child = FakeChild(self.clock, 4_000_000 + len(self.children), self.plans.pop(0), self.supervisor)
        self.children.append(child)
        return child


def deliver(signum):
    return lambda sup: sup._on_signal(signum, None)


def supervise(home, plans, environment=None, **config):
    clock = FakeClock()
    spawner = FakeSpawner(clock, plans)
    config.setdefault("wait", exponential_backoff(1, 4))
    sup = Supervisor(RunConfig(command=["python", "train.py"], home=home, **config), environment,
                     clock=clock, spawn=spawner)
    spawner.supervisor = sup
    return sup, clock, spawner


def recorded(home, name="train"):
    tracker = Tracker(home / "unbroken.db")
    try:
        trial = tracker.trial(name)
        return trial, tracker.attempts(trial.id)
    finally:
        tracker.close()


def test_crashes_back_off_then_give_up_after_exactly_n_restarts(home, capfd):
    sup, clock, spawner = supervise(home, [Plan(code=3)] * 4, stop=max_failures(3))
    assert sup.run() == 1
    assert sum(clock.sleeps) == pytest.approx(1 + 2 + 4) and max(clock.sleeps) <= 0.1  # slices: stops are seen
    err = capfd.readouterr().err
    assert [f"restarting in {d} s" in err for d in (1, 2, 4, 8)] == [True, True, True, False]
    trial, attempts = recorded(home)
    assert trial.status == "failed" and "max_failures(3)" in trial.message
    assert [(a.end_reason, a.exit_code) for a in attempts] == [("crashed", 3)] * 4
    assert all(a.ended_at is not None for a in attempts)
    assert [a.pid for a in attempts] == [c.pid for c in spawner.children]


def test_long_attempts_count_as_progress_with_reset_after(home):
    plans = [Plan(code=1, runs=10.0)] * 5 + [Plan(code=0)]
    sup, clock, _ = supervise(home, plans, stop=max_failures(1), reset_after=10.0)
    assert sup.run() == 0
    assert sum(clock.sleeps) == pytest.approx(5.0)  # each crash is the first since progress: 1 s
    trial, attempts = recorded(home)
    assert trial.status == "completed" and [a.end_reason for a in attempts] == ["crashed"] * 5 + ["completed"]


def test_stop_signal_is_forwarded_and_the_trial_is_preempted(home):
    sup, clock, spawner = supervise(home, [Plan(runs=100, events=[(2.0, deliver(signal.SIGTERM))])])
    assert sup.run() == 75
    assert spawner.children[0].signals == [signal.SIGTERM]
    trial, attempts = recorded(home)
    assert trial.status == "preempted" and trial.message == "stopped: signal SIGTERM"
    assert attempts[0].end_reason == "preempted" and attempts[0].exit_code == 75


def test_hangup_is_forwarded_as_term(home):
    sup, _, spawner = supervise(home, [Plan(runs=100, events=[(1.0, deliver(signal.SIGHUP))])])
    assert sup.run() == 75 and spawner.children[0].signals == [signal.SIGTERM]


def test_command_ignoring_the_stop_is_killed_after_the_grace(home, capfd):
    sup, clock, spawner = supervise(home, [Plan(runs=1e6, on_signal=None, events=[(3.0, deliver(signal.SIGTERM))])],
                                    grace=20)
    assert sup.run() == 75
    assert spawner.children[0].killed and clock.mono == pytest.approx(23.0, abs=0.3)
    _, attempts = recorded(home)
    assert attempts[0].end_reason == "preempted" and attempts[0].signal == signal.SIGKILL
    assert "did not stop within 20 s" in capfd.readouterr().err


def test_second_interrupt_kills_and_cancels(home):
    events = [(1.0, deliver(signal.SIGINT)), (2.0, deliver(signal.SIGINT))]
    sup, clock, spawner = supervise(home, [Plan(runs=1e6, on_signal=None, events=events)], grace=600)
    assert sup.run() == 130
    assert spawner.children[0].killed and clock.mono == pytest.approx(2.0, abs=0.3)
    trial, attempts = recorded(home)
    assert trial.status == "cancelled" and attempts[0].end_reason == "cancelled"


def test_stop_while_waiting_to_restart_cancels(home):
    plans = [Plan(code=1, runs=1.0, events=[(1.0, lambda sup: None)])]
    sup, clock, _ = supervise(home, plans, wait=exponential_backoff(30, 30))
    clock_sleep = clock.sleep

    def sleep(seconds):  # the signal arrives 5 s into the 30 s backoff
        clock_sleep(seconds)
        if sum(clock.sleeps) >= 5 and sup._stop_reason is None:
            sup._on_signal(signal.SIGTERM, None)
    clock.sleep = sleep
    assert sup.run() == 130
    assert sum(clock.sleeps) == pytest.approx(5.0, abs=0.11)
    assert recorded(home)[0].status == "cancelled"


def test_time_limit_sets_the_child_deadline_and_is_told_from_a_preemption(home):
    sup, clock, spawner = supervise(home, [Plan(code=75, runs=91.0)], time_limit=100, margin=10)
    assert sup.run() == 75
    env = LaunchEnv.from_env(spawner.envs[0])
    assert env.deadline == pytest.approx(START + 90, abs=0.001)
    trial, attempts = recorded(home)
    assert attempts[0].end_reason == "timed_out" and trial.status == "preempted"
    assert "time limit" in trial.message

    sup, clock, _ = supervise(home, [Plan(code=75, runs=30.0)], time_limit=100, margin=10)
    assert sup.run() == 75
    assert recorded(home)[1][-1].end_reason == "preempted"  # its own stop request, long before the limit


def test_child_gets_the_launch_environment_and_no_stale_variables(home, monkeypatch):
    monkeypatch.setenv("UNBROKEN_DEADLINE", "12345")  # from an outer supervisor: must not leak
    monkeypatch.setenv("OTHER_VARIABLE", "kept")
    sup, _, spawner = supervise(home, [Plan()], preempt_signal="USR1")
    assert sup.run() == 0
    env = spawner.envs[0]
    _, attempts = recorded(home)
    assert LaunchEnv.from_env(env) == LaunchEnv(home=home.resolve(), experiment="train", trial=1,
                                                attempt_id=attempts[0].id, preempt_signal="SIGUSR1",
                                                db=f"sqlite:///{home.resolve()}/unbroken.db")  # resolved once, here
    assert "UNBROKEN_DEADLINE" not in env and env["OTHER_VARIABLE"] == "kept"
    assert LaunchEnv.from_env(env).supervised


def test_unstartable_command_ends_its_attempt_and_fails_the_trial(home):
    def spawn(argv, env, tee):
        raise LaunchError("cannot start 'python': No such file or directory")
    sup = Supervisor(RunConfig(command=["python", "train.py"], home=home), clock=FakeClock(), spawn=spawn)
    with pytest.raises(LaunchError):
        sup.run()
    trial, attempts = recorded(home)
    assert trial.status == "failed" and attempts[0].end_reason == "crashed"
    assert "cannot start" in attempts[0].message


class Requeueable(Environment):
    def __init__(self, requeues, max_requeues=None):
        self.count, self.max_requeues, self.calls = requeues, max_requeues, []

    def requeues(self):
        return self.count

    def requeue(self, reason, log, wait_for_kill):
        self.calls.append((reason, wait_for_kill(30.0)))


def test_preemption_requeues_while_requeues_are_left(home):
    env = Requeueable(requeues=1, max_requeues=2)
    sup, clock, _ = supervise(home, [Plan(runs=100, events=[(2.0, deliver(signal.SIGUSR2))])], env)
    assert sup.run() == 75
    assert env.calls == [("signal SIGUSR2", False)]  # no kill came: the bounded wait ran out
    assert clock.mono == pytest.approx(32.0, abs=0.2)

    env = Requeueable(requeues=2, max_requeues=2)
    sup, _, _ = supervise(home, [Plan(runs=100, events=[(2.0, deliver(signal.SIGUSR2))])], env)
    assert sup.run() == 75 and env.calls == []
    assert "--max-requeues 2" in recorded(home)[0].message


def answering(returncode=0, stderr=""):
    """A fake Slurm client: records each call in ``.calls`` and answers with ``returncode``."""
    def tool(args):
        tool.calls.append(args)
        return subprocess.CompletedProcess(args, returncode, "", stderr)
    tool.calls = []
    return tool


def test_slurm_requeue_returns_when_slurm_signals_the_job():
    tool, said, waits = answering(), [], []
    env = SlurmEnvironment(JobInfo("5", "4", "1", None, 0), runner=tool, kill_wait=42)

    def wait_for_kill(timeout):
        waits.append(timeout)
        return True
    env.requeue("signal SIGUSR2", said.append, wait_for_kill)
    assert tool.calls == [["scontrol", "requeue", "4_1"]] and waits == [42]
    assert said == ["unbroken: checkpoint committed; requeueing Slurm job 4_1 (signal SIGUSR2)"]

    refused, said = answering(1, "Requested operation is presently disabled"), []
    SlurmEnvironment(JobInfo("5", None, None, None, 0), runner=refused).requeue("x", said.append, wait_for_kill)
    assert waits == [42] and "--no-requeue" in said[-1]  # no wait after a refused requeue


def test_live_trial_is_refused_naming_the_holder_or_waited_for(home):
    holder = WriterLease(TrialPaths(home.resolve(), "train", 1).writer_lock, "trial train/1")
    sup, _, spawner = supervise(home, [Plan()])
    holder.acquire()
    try:
        with pytest.raises(TrialBusy, match=f"pid {os.getpid()} on host"):
            sup.run()
        sup, clock, spawner = supervise(home, [Plan()], wait_for_trial=5.0)
        with pytest.raises(TrialBusy, match="waited 5 s"):
            sup.run()
        assert clock.mono == pytest.approx(5.0, abs=0.1) and spawner.children == []
    finally:
        holder.release()
    sup, _, _ = supervise(home, [Plan()], wait_for_trial=math.inf)
    assert sup.run() == 0
    assert not sup.lease.held


def test_next_supervisor_marks_gone_attempts_lost(home):
    sup, _, _ = supervise(home, [Plan()])
    tracker = Tracker(home / "unbroken.db")
    dead = tracker.start_attempt(sup.trial.id, pid=4_100_000, pid_start=1.0)  # no such process
    tracker.close()
    assert sup.run() == 0
    _, attempts = recorded(home)
    assert [a.end_reason for a in attempts] == ["lost", "completed"] and attempts[0].id == dead.id


def test_stop_during_start_reaches_the_child_once(home):
    # before the child exists (inside spawn): passed on once it does
    sup, _, spawner = supervise(home, [Plan(runs=100)])
    spawn = spawner.__call__

    def spawn_with_signal(argv, env, tee):
        sup._on_signal(signal.SIGTERM, None)
        return spawn(argv, env, tee)
    sup._spawn = spawn_with_signal
    assert sup.run() == 75 and spawner.children[0].signals == [signal.SIGTERM]

    # after the child exists, while its pid is being recorded: forwarded by the handler only
    sup, _, spawner = supervise(home, [Plan(runs=100)])
    update = sup.tracker.update_attempt

    def update_with_signal(attempt_id, **fields):
        if "pid" in fields:
            sup._on_signal(signal.SIGTERM, None)
        return update(attempt_id, **fields)
    sup.tracker.update_attempt = update_with_signal
    assert sup.run() == 75 and spawner.children[0].signals == [signal.SIGTERM]



@pytest.mark.parametrize("plan, status", [(Plan(code=0), 0), (Plan(code=75), 75)])
def test_a_full_index_never_changes_the_outcome_or_the_exit_status(home, plan, status):
    from unbroken.errors import IndexWarning, TrackingError

    def full(*args, **kwargs):
        raise TrackingError("tracking database: database or disk is full")

    sup, _, _ = supervise(home, [plan])
    sup.tracker.end_attempt = sup.tracker.update_trial = sup.tracker.update_attempt = full  # full from the start
    with pytest.warns(IndexWarning, match="database or disk is full"):
        assert sup.run() == status


def test_spot_notice_is_a_stop_forwarded_as_the_preempt_signal(home, capfd):
    from unbroken.launch.spot import SpotNotice
    notice = SpotNotice("aws", "terminate", START + 100)
    sup, clock, spawner = supervise(home, [Plan(runs=1e6, events=[(5.0, lambda s: s._on_notice(notice))])])
    assert sup.run() == 75
    assert spawner.children[0].signals == [signal.SIGUSR2] and clock.mono < 5.5  # acted on within a poll
    trial, attempts = recorded(home)
    assert attempts[0].end_reason == "preempted" and "spot notice (aws: terminate" in trial.message
    assert sup._deadline() == START + 100  # children started after it stop by its time
    assert "asking the command to save and stop" in capfd.readouterr().err


def test_allocations_without_progress_stop_the_requeues(home, capfd):
    class Requeueing(Environment):
        max_requeues = None
        requeued = 0

        def requeues(self):
            return 4

        def requeue(self, reason, log, wait_for_kill):
            Requeueing.requeued += 1

    codes = []
    for _ in range(2):  # two allocations in a row that commit no checkpoint
        sup, _, _ = supervise(home, [Plan(code=75, runs=5.0)], Requeueing(), max_stalled=2)
        codes.append(sup.run())
    assert codes == [75, 3] and Requeueing.requeued == 1
    trial, attempts = recorded(home)
    assert trial.status == "failed" and trial.message.startswith("no progress: 2 allocations in a row committed no "
                                                                 "checkpoint (--max-requeues-without-progress 2)")
    assert [a.end_reason for a in attempts] == ["preempted"] * 2
