"""A group's stop decision: agreed by every rank (ranks as threads of a fake group)."""

from __future__ import annotations

from threadgroup import ThreadGroup, on_every_rank

from unbroken.runtime.grouploop import GroupPreempt
from unbroken.runtime.preempt import PreemptContext


def preempts(size: int) -> list[GroupPreempt]:
    group = ThreadGroup(size)
    return [GroupPreempt(PreemptContext(signals=[]), group.rank(r)) for r in range(size)]


def test_a_stop_asked_of_one_rank_is_agreed_by_every_rank_at_the_same_call():
    ranks = preempts(3)
    assert on_every_rank(ranks, lambda r, p: p.agree()) == [False, False, False]
    ranks[2].request("signal SIGUSR2")
    assert on_every_rank(ranks, lambda r, p: p.agree()) == [True, True, True]
    assert all(p.should_preempt() and p.reason == "signal SIGUSR2 on rank 2" for p in ranks)


def test_the_decision_sticks_and_names_the_first_rank_that_asked():
    ranks = preempts(2)
    ranks[1].request("deadline")
    ranks[0].request("signal SIGTERM")
    on_every_rank(ranks, lambda r, p: p.agree())
    assert [p.reason for p in ranks] == ["signal SIGTERM on rank 0"] * 2
    assert on_every_rank(ranks, lambda r, p: p.agree()) == [True, True]


def test_one_process_agrees_with_itself_without_any_collective():
    preempt = PreemptContext(signals=[])
    assert preempt.agree() is False and preempt.own_request() is None
    preempt.request("deadline")
    assert preempt.agree() is True and preempt.settle([preempt.own_request()]) == "deadline"
