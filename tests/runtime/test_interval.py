"""auto_interval: Young/Daly from measured save costs and the attempt history, with a fake clock."""

from __future__ import annotations

import math

import pytest

from unbroken.errors import ConfigError
from unbroken.runtime.interval import auto_interval, young_daly
from unbroken.runtime.policy import every_steps


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_young_daly():
    assert young_daly(2.0, 3600.0) == pytest.approx(120.0)
    assert young_daly(0.0, 3600.0) == 0.0


def test_the_hints_decide_before_anything_is_measured():
    clock = Clock()
    policy = auto_interval(mtbf_hint=7200, cost_hint=1.0, min_seconds=1, clock=clock)
    d = policy.decision()
    assert d.interval_s == pytest.approx(math.sqrt(2 * 1.0 * 7200)) and not d.cost_measured and d.failures == 0
    assert "Young/Daly" in d.log_line() and "hint" in d.log_line()


def test_measured_costs_replace_the_hint_by_their_median():
    clock = Clock()
    policy = auto_interval(mtbf_hint=3600, cost_hint=100.0, min_seconds=1, clock=clock)
    for cost in (2.0, 2.0, 50.0):  # one outlier does not move the median
        policy.observe_save(cost)
    d = policy.decision()
    assert d.cost_s == 2.0 and d.cost_measured
    assert d.interval_s == pytest.approx(120.0)


def test_failures_in_the_history_shorten_the_interval():
    clock = Clock()
    policy = auto_interval(mtbf_hint=24 * 3600, cost_hint=1.0, min_seconds=1, clock=clock)
    calm = policy.decision().interval_s
    policy.observe_history([(3600.0, True), (3600.0, True), (3600.0, True), (3600.0, False)])
    d = policy.decision()
    assert d.failures == 3 and d.exposure_s == pytest.approx(4 * 3600)
    assert d.mtbf_s == pytest.approx((4 * 3600 + 24 * 3600) / 4)
    assert d.interval_s < calm
    clock.now += 10 * 3600  # a long calm stretch in this attempt lengthens it again
    assert policy.decision().mtbf_s > d.mtbf_s


def test_clamps_and_the_save_time_bound():
    clock = Clock()
    policy = auto_interval(mtbf_hint=100, cost_hint=0.01, min_seconds=30, max_seconds=600, clock=clock)
    assert policy.decision().interval_s == 30 and policy.decision().bound == "min_seconds"
    policy.observe_save(0.01, save_s=45.0)  # the durable save takes longer than the optimum
    d = policy.decision()
    assert d.interval_s == 45.0 and d.bound == "save time" and "held at save time" in d.log_line()
    big = auto_interval(mtbf_hint=1e9, cost_hint=100.0, max_seconds=600, clock=clock)
    assert big.decision().interval_s == 600 and big.decision().bound == "max_seconds"


def test_due_follows_the_decision_and_combines():
    clock = Clock()
    policy = auto_interval(mtbf_hint=3600, cost_hint=2.0, min_seconds=1, clock=clock)  # 120 s
    assert not policy.due(5, 0, 119.0) and policy.due(5, 0, 120.0)
    assert not policy.due(5, 5, 1e6)  # nothing new since the last save
    assert (policy | every_steps(10)).due(10, 3, 1.0)


@pytest.mark.parametrize("kwargs", [{"mtbf_hint": 0}, {"cost_hint": -1}, {"min_seconds": math.inf},
                                    {"mtbf_hint": True}, {"min_seconds": 10, "max_seconds": 5}])
def test_bad_arguments(kwargs):
    with pytest.raises(ConfigError):
        auto_interval(**kwargs)
